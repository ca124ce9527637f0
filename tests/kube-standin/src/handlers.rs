//! The verbs of a resource request, executed against the store. HTTP
//! concerns (faults, delays, the request log, body limits) stay in
//! [`crate::server`]; this module turns a parsed request into an answer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::StandIn;
use crate::error::{self, ApiError};
use crate::faults::Verb;
use crate::partial::{self, Shape};
use crate::patch::PatchKind;
use crate::resource::ResourceType;
use crate::selectors::Selector;
use crate::store::{DeleteOpts, Deleted, Sub};
use crate::watch::{WatchFilter, WatchOptions};

/// A watch body.
pub(crate) type WatchStream = Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

/// The answer to a resource request.
pub(crate) enum Answer {
    /// A JSON body with this status code.
    Json(u16, Value),
    /// A watch stream (status 200).
    Watch(WatchStream),
}

/// A parsed resource request.
pub(crate) struct Call<'a> {
    pub rt: &'a ResourceType,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub sub: Sub,
    pub verb: Verb,
    pub query: &'a HashMap<String, String>,
    pub content_type: &'a str,
    pub body: &'a Bytes,
    pub shape: &'a Shape,
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice::<Value>(body))
        .map_err(|e| ApiError::bad_request(format!("the request body could not be decoded: {e}")))
}

/// The Go type the real server names in 406 messages (`*v1.Secret`,
/// `*unstructured.Unstructured` for custom resources), with `suffix`
/// (`List`) appended.
fn go_type(rt: &ResourceType, suffix: &str) -> String {
    if rt.is_builtin() {
        format!("*{}.{}{suffix}", rt.version, rt.kind)
    } else {
        format!("*unstructured.Unstructured{suffix}")
    }
}

impl Call<'_> {
    fn selector(&self) -> Result<Selector, ApiError> {
        Selector::parse(
            self.query.get("labelSelector").map(String::as_str),
            self.query.get("fieldSelector").map(String::as_str),
        )
        .and_then(|s| s.restrict_to(self.rt))
        .map_err(ApiError::bad_request)
    }

    fn object(&self, code: u16, obj: Value) -> Result<Answer, ApiError> {
        Ok(Answer::Json(
            code,
            partial::shape_object(self.shape, obj, &go_type(self.rt, ""))?,
        ))
    }

    fn list(&self, list: Value) -> Result<Answer, ApiError> {
        Ok(Answer::Json(
            200,
            partial::shape_list(self.shape, list, &go_type(self.rt, "List"))?,
        ))
    }
}

/// Execute a call.
pub(crate) fn execute(
    standin: &StandIn,
    shutdown: &watch::Receiver<bool>,
    call: &Call<'_>,
) -> Result<Answer, ApiError> {
    let rt = call.rt;
    let ns = call.namespace;
    match call.verb {
        Verb::Watch => {
            let filter = WatchFilter {
                rt: rt.clone(),
                namespace: if rt.namespaced {
                    ns.map(str::to_string)
                } else {
                    None
                },
                selector: call.selector()?,
                shape: call.shape.clone(),
            };
            let timeout = call
                .query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .unwrap_or(290);
            let opts = WatchOptions {
                resource_version: call.query.get("resourceVersion").cloned(),
                send_initial_events: call.query.get("sendInitialEvents").map(String::as_str)
                    == Some("true"),
                bookmarks: call.query.get("allowWatchBookmarks").map(String::as_str)
                    == Some("true"),
                timeout: Duration::from_secs(timeout),
            };
            let stream =
                crate::watch::start(standin.inner.clone(), filter, opts, Some(shutdown.clone()))?;
            Ok(Answer::Watch(Box::pin(stream)))
        }
        Verb::List => {
            let sel = call.selector()?;
            let (items, rv) = standin.with_store(|s| (s.list(rt, ns, &sel), s.current_rv()));
            call.list(list_page(rt, items, rv, call.query)?)
        }
        Verb::Get => {
            let name = call.name.unwrap_or_default();
            let obj = standin
                .with_store(|s| s.get(rt, ns, name).cloned())
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            call.object(200, obj)
        }
        Verb::Create => {
            let obj = parse_body(call.body)?;
            let created = standin.with_store_mut(|s| s.create(rt, ns, obj))?;
            call.object(201, created)
        }
        Verb::Update => {
            let obj = parse_body(call.body)?;
            let name = call.name.unwrap_or_default();
            let updated = standin.with_store_mut(|s| s.update(rt, ns, name, obj, call.sub))?;
            call.object(200, updated)
        }
        Verb::Patch => {
            let kind = PatchKind::from_content_type(call.content_type).ok_or_else(|| {
                ApiError::new(
                    415,
                    format!(
                        "the body of the request was in an unknown format ({})",
                        call.content_type
                    ),
                )
            })?;
            let patch = parse_body(call.body)?;
            let name = call.name.unwrap_or_default();
            let manager = call.query.get("fieldManager").map(String::as_str);
            let (obj, created) = standin
                .with_store_mut(|s| s.patch(rt, ns, name, kind, &patch, manager, call.sub))?;
            call.object(if created { 201 } else { 200 }, obj)
        }
        Verb::Delete => delete(standin, call),
    }
}

fn delete(standin: &StandIn, call: &Call<'_>) -> Result<Answer, ApiError> {
    let rt = call.rt;
    let b = parse_body(call.body).unwrap_or(json!({}));
    let opts = DeleteOpts::from_body(&b, call.query.get("propagationPolicy").map(String::as_str));
    let Some(name) = call.name else {
        let sel = call.selector()?;
        let (items, rv) = standin.with_store_mut(|s| {
            s.delete_collection(rt, call.namespace, &sel, &opts)
                .map(|items| (items, s.current_rv()))
        })?;
        return call.list(list_page(rt, items, rv, &HashMap::new())?);
    };
    if call.sub == Sub::Status {
        return Err(ApiError::new(
            405,
            "the server does not allow this method on the requested resource",
        ));
    }
    match standin.with_store_mut(|s| s.delete(rt, call.namespace, name, &opts))? {
        Deleted::Pending(obj) => call.object(200, obj),
        Deleted::Removed(obj) if rt.returns_deleted_object() => call.object(200, obj),
        Deleted::Removed(obj) => {
            let uid = obj
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Ok(Answer::Json(200, error::delete_success(rt, name, uid)))
        }
    }
}

/// Build a `<Kind>List`, honouring `limit`/`continue` (pages are cut from the
/// current state; the list resourceVersion of the first page is carried over).
fn list_page(
    rt: &ResourceType,
    items: Vec<Value>,
    rv: u64,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (mut list_rv, mut start_after) = (rv, None::<(String, String)>);
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let mut parts = token.splitn(3, '|');
        let (Some(trv), Some(tns), Some(tname)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ApiError::bad_request("invalid continue token"));
        };
        list_rv = trv
            .parse()
            .map_err(|_| ApiError::bad_request("invalid continue token"))?;
        start_after = Some((tns.to_string(), tname.to_string()));
    }
    let key = |o: &Value| {
        (
            o.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    let mut items: Vec<Value> = match &start_after {
        Some(after) => items.into_iter().filter(|o| key(o) > *after).collect(),
        None => items,
    };
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(limit) = limit
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        if let Some(last) = items.last() {
            let (lns, lname) = key(last);
            metadata["continue"] = json!(format!("{list_rv}|{lns}|{lname}"));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    Ok(json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}
