//! HTTP front-end: path routing, verbs, discovery.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::StandIn;
use crate::error::ApiError;
use crate::faults::{Verb, lock};
use crate::patch::PatchKind;
use crate::resource::ResourceType;
use crate::selectors::Selector;
use crate::store::{DeleteOpts, Sub};
use crate::watch::{WatchFilter, WatchOptions};

#[derive(Clone)]
pub(crate) struct ServerCtx {
    pub standin: StandIn,
    pub shutdown: watch::Receiver<bool>,
}

pub(crate) fn router(ctx: ServerCtx) -> Router {
    Router::new().fallback(handle).with_state(ctx)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

/// A resource request after path parsing.
struct ResourceReq {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Sub,
}

enum Route {
    Version,
    ApiRoot,
    ApisRoot,
    GroupVersion(String, String),
    Resource(ResourceReq),
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(
        404,
        format!("the server could not find the requested resource ({path})"),
    )
}

fn route(standin: &StandIn, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::ApiRoot),
        ["apis"] => return Ok(Route::ApisRoot),
        ["api", v] => return Ok(Route::GroupVersion(String::new(), v.to_string())),
        ["apis", g, v] => return Ok(Route::GroupVersion(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found_path(path)),
    };
    let lookup = |plural: &str| {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        standin.with_store(|s| s.type_by_gvr(&format!("{api_version}/{plural}")))
    };
    let (rt, namespace, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] if lookup(plural).is_some_and(|t| t.namespaced) => {
            (lookup(plural).expect("checked"), Some(ns.to_string()), tail)
        }
        [plural, tail @ ..] => {
            let rt = lookup(plural).ok_or_else(|| not_found_path(path))?;
            (rt, None, tail)
        }
        [] => return Err(not_found_path(path)),
    };
    let (name, sub) = match tail {
        [] => (None, Sub::Main),
        [name] => (Some(name.to_string()), Sub::Main),
        [name, "status"] if rt.has_status_subresource => (Some(name.to_string()), Sub::Status),
        _ => return Err(not_found_path(path)),
    };
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found_path(path));
    }
    if !rt.namespaced && namespace.is_some() {
        return Err(not_found_path(path));
    }
    Ok(Route::Resource(ResourceReq {
        rt,
        namespace,
        name,
        sub,
    }))
}

async fn handle(State(ctx): State<ServerCtx>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    let latency = ctx.standin.faults().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let query = parse_query(uri.query());
    let resp = match route(&ctx.standin, uri.path()) {
        Err(e) => error_response(&e),
        Ok(Route::Resource(r)) => resource(&ctx, &method, r, &query, &content_type, &body),
        Ok(other) if method == Method::GET => discovery(&ctx.standin, other),
        Ok(_) => error_response(&ApiError::new(
            405,
            format!("the server does not allow this method on the requested resource ({method})"),
        )),
    };
    if ctx
        .standin
        .inner
        .verbose
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        eprintln!("kube-standin: {method} {uri} -> {}", resp.status().as_u16());
    }
    resp
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice::<Value>(body))
        .map_err(|e| ApiError::bad_request(format!("the request body could not be decoded: {e}")))
}

fn resource(
    ctx: &ServerCtx,
    method: &Method,
    r: ResourceReq,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &Bytes,
) -> Response {
    let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (method, &r.name) {
        (&Method::GET, None) if is_watch => Verb::Watch,
        (&Method::GET, None) => Verb::List,
        (&Method::GET, Some(_)) => Verb::Get,
        (&Method::POST, None) => Verb::Create,
        (&Method::PUT, Some(_)) => Verb::Update,
        (&Method::PATCH, Some(_)) => Verb::Patch,
        (&Method::DELETE, _) => Verb::Delete,
        _ => {
            return error_response(&ApiError::new(
                405,
                format!(
                    "the server does not allow this method on the requested resource ({method})"
                ),
            ));
        }
    };
    let gvr = r.rt.gvr();
    let subresource = (r.sub == Sub::Status).then_some("status");
    let body_name = || {
        serde_json::from_slice::<Value>(body).ok().and_then(|b| {
            b.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    };
    let fault_name = r.name.clone().or_else(|| {
        if verb == Verb::Create {
            body_name()
        } else {
            None
        }
    });
    lock(&ctx.standin.inner.counts).record(verb, &gvr, subresource);
    if let Some(code) = ctx
        .standin
        .faults()
        .check(verb, &gvr, subresource, fault_name.as_deref())
    {
        let e = ApiError::new(code, format!("injected fault: {} {}", verb.as_str(), gvr));
        return error_response(&e);
    }
    let standin = &ctx.standin;
    let ns = r.namespace.as_deref();
    let selector = || {
        Selector::parse(
            query.get("labelSelector").map(String::as_str),
            query.get("fieldSelector").map(String::as_str),
        )
        .map_err(ApiError::bad_request)
    };
    let result: Result<Response, ApiError> = (|| match verb {
        Verb::Watch => {
            let filter = WatchFilter {
                rt: r.rt.clone(),
                namespace: if r.rt.namespaced {
                    r.namespace.clone()
                } else {
                    None
                },
                selector: selector()?,
            };
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .unwrap_or(290);
            let opts = WatchOptions {
                resource_version: query.get("resourceVersion").cloned(),
                send_initial_events: query.get("sendInitialEvents").map(String::as_str)
                    == Some("true"),
                bookmarks: query.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
                timeout: Duration::from_secs(timeout),
            };
            let stream = crate::watch::start(
                standin.inner.clone(),
                filter,
                opts,
                Some(ctx.shutdown.clone()),
            )?;
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        Verb::List => {
            let sel = selector()?;
            let (items, rv) = standin.with_store(|s| (s.list(&r.rt, ns, &sel), s.current_rv()));
            Ok(json_response(200, &list_page(&r.rt, items, rv, query)?))
        }
        Verb::Get => {
            let name = r.name.as_deref().unwrap_or_default();
            let obj = standin
                .with_store(|s| s.get(&r.rt, ns, name).cloned())
                .ok_or_else(|| ApiError::not_found(&r.rt, name))?;
            Ok(json_response(200, &obj))
        }
        Verb::Create => {
            let obj = parse_body(body)?;
            let created = standin.with_store_mut(|s| s.create(&r.rt, ns, obj))?;
            Ok(json_response(201, &created))
        }
        Verb::Update => {
            let obj = parse_body(body)?;
            let name = r.name.as_deref().unwrap_or_default();
            // Like the real server, custom resources cannot be updated unconditionally.
            let has_rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|rv| !rv.is_empty());
            if !has_rv && !r.rt.supports_strategic_merge() {
                return Err(ApiError::invalid(
                    &r.rt,
                    name,
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            let updated = standin.with_store_mut(|s| s.update(&r.rt, ns, name, obj, r.sub))?;
            Ok(json_response(200, &updated))
        }
        Verb::Patch => {
            let kind = PatchKind::from_content_type(content_type).ok_or_else(|| {
                ApiError::new(
                    415,
                    format!("the body of the request was in an unknown format ({content_type})"),
                )
            })?;
            let patch = parse_body(body)?;
            let name = r.name.as_deref().unwrap_or_default();
            let manager = query.get("fieldManager").map(String::as_str);
            let (obj, created) = standin
                .with_store_mut(|s| s.patch(&r.rt, ns, name, kind, &patch, manager, r.sub))?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        Verb::Delete => {
            let b = parse_body(body).unwrap_or(json!({}));
            let opts =
                DeleteOpts::from_body(&b, query.get("propagationPolicy").map(String::as_str));
            match &r.name {
                Some(name) => {
                    if r.sub == Sub::Status {
                        return Err(ApiError::new(
                            405,
                            "the server does not allow this method on the requested resource",
                        ));
                    }
                    let obj = standin.with_store_mut(|s| s.delete(&r.rt, ns, name, &opts))?;
                    Ok(json_response(200, &obj))
                }
                None => {
                    let sel = selector()?;
                    let (items, rv) = standin.with_store_mut(|s| {
                        (s.delete_collection(&r.rt, ns, &sel, &opts), s.current_rv())
                    });
                    Ok(json_response(
                        200,
                        &list_page(&r.rt, items, rv, &HashMap::new())?,
                    ))
                }
            }
        }
    })();
    result.unwrap_or_else(|e| error_response(&e))
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
        let (lns, lname) = key(items.last().expect("limit > 0"));
        metadata["continue"] = json!(format!("{list_rv}|{lns}|{lname}"));
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

fn discovery(standin: &StandIn, route: Route) -> Response {
    let types: Vec<ResourceType> = standin.with_store(|s| s.types().cloned().collect());
    match route {
        Route::Version => json_response(
            200,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-standin", "gitCommit": "",
                "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z", "goVersion": "none",
                "compiler": "rustc", "platform": "linux/amd64",
            }),
        ),
        Route::ApiRoot => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        Route::ApisRoot => {
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for t in types.iter().filter(|t| !t.group.is_empty()) {
                match groups.iter_mut().find(|(g, _)| *g == t.group) {
                    Some((_, vs)) if !vs.contains(&t.version) => vs.push(t.version.clone()),
                    Some(_) => {}
                    None => groups.push((t.group.clone(), vec![t.version.clone()])),
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        Route::GroupVersion(g, v) => {
            let selected: Vec<&ResourceType> = types
                .iter()
                .filter(|t| t.group == g && t.version == v)
                .collect();
            if selected.is_empty() {
                return error_response(&not_found_path(&format!("{g}/{v}")));
            }
            let verbs = json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ]);
            let mut resources = Vec::new();
            for t in selected {
                resources.push(
                    json!({"name": t.plural, "singularName": t.kind.to_lowercase(),
                    "namespaced": t.namespaced, "kind": t.kind, "verbs": verbs}),
                );
                if t.has_status_subresource {
                    resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "",
                        "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
                }
            }
            let gv = if g.is_empty() { v } else { format!("{g}/{v}") };
            json_response(
                200,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
            )
        }
        Route::Resource(_) => unreachable!("resource routes are handled elsewhere"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query(Some(
            "&watch=true&labelSelector=app%3Dweb%2Ctier+in+%28a%29&x",
        ));
        assert_eq!(q["watch"], "true");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["x"], "");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
