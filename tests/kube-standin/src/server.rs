//! HTTP front-end: path routing, verbs, discovery.

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::StandIn;
use crate::error::{ApiError, MAX_REQUEST_BODY_BYTES, StatusDetails};
use crate::faults::{FaultAction, FaultHit, FaultRequest, Verb, lock};
use crate::handlers::{self, Answer, Call};
use crate::partial;
use crate::requests::RequestRecord;
use crate::resource::ResourceType;
use crate::store::Sub;

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
    /// The ServiceAccount `token` subresource (TokenRequest API), handled by
    /// [`crate::token`] rather than the store.
    token: bool,
}

/// The gvr of ServiceAccounts, the one type with a `token` subresource.
const SERVICE_ACCOUNTS: &str = "v1/serviceaccounts";

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
    let (name, sub, token) = match tail {
        [] => (None, Sub::Main, false),
        [name] => (Some(name.to_string()), Sub::Main, false),
        [name, "status"] if rt.has_status_subresource => {
            (Some(name.to_string()), Sub::Status, false)
        }
        [name, "token"] if rt.gvr() == SERVICE_ACCOUNTS && namespace.is_some() => {
            (Some(name.to_string()), Sub::Main, true)
        }
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
        token,
    }))
}

async fn handle(State(ctx): State<ServerCtx>, req: Request) -> Response {
    let arrived = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let content_type = header_str(&req, header::CONTENT_TYPE);
    let accept = header_str(&req, header::ACCEPT);
    let body = axum::body::to_bytes(req.into_body(), 64 * MAX_REQUEST_BODY_BYTES).await;
    let latency = ctx.standin.faults().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let query = parse_query(uri.query());
    let resp = match route(&ctx.standin, uri.path()) {
        Err(e) => error_response(&e),
        Ok(Route::Resource(r)) => {
            let req = HttpRequest {
                method: &method,
                query: &query,
                content_type: &content_type,
                accept: &accept,
                body: body.as_ref().ok(),
                arrived,
            };
            resource(&ctx, r, req).await
        }
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

fn header_str(req: &Request, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The HTTP side of a resource request.
struct HttpRequest<'a> {
    method: &'a Method,
    query: &'a HashMap<String, String>,
    content_type: &'a str,
    accept: &'a str,
    /// `None` when the body could not be read (too large for the transport).
    body: Option<&'a Bytes>,
    arrived: Instant,
}

/// The plain-text answer of API Priority and Fairness (and of the
/// max-in-flight filter) when it rejects a request.
const APF_REJECTION: &str = "Too many requests, please try again later.\n";

/// A resource request: verb, counters, faults, limits, execution, the
/// request log.
async fn resource(ctx: &ServerCtx, r: ResourceReq, req: HttpRequest<'_>) -> Response {
    let is_watch = matches!(
        req.query.get("watch").map(String::as_str),
        Some("true" | "1")
    );
    let verb = match (req.method, &r.name) {
        // The token subresource only creates.
        (&Method::POST, Some(_)) if r.token => Verb::Create,
        _ if r.token => {
            return error_response(&ApiError::new(
                405,
                format!(
                    "the server does not allow this method on the requested resource ({})",
                    req.method
                ),
            ));
        }
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
                    "the server does not allow this method on the requested resource ({})",
                    req.method
                ),
            ));
        }
    };
    let gvr = r.rt.gvr();
    let subresource = if r.token {
        Some("token")
    } else {
        (r.sub == Sub::Status).then_some("status")
    };
    let body_name = || {
        req.body
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .and_then(|b| {
                b.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    };
    let mut record_name = r.name.clone().or_else(|| {
        if verb == Verb::Create && !r.token {
            body_name()
        } else {
            None
        }
    });
    lock(&ctx.standin.inner.counts).record(verb, &gvr, subresource);
    let hit = ctx.standin.faults().check(&FaultRequest {
        verb,
        gvr: &gvr,
        subresource,
        namespace: r.namespace.as_deref(),
        name: record_name.as_deref(),
    });
    let fail_with = |code: u16, hit: &FaultHit| {
        let mut resp = if hit.plain_text {
            text_response(code, APF_REJECTION)
        } else {
            let message = format!("injected fault: {} {}", verb.as_str(), gvr);
            let e = match hit.retry_after {
                Some(secs) if code == 429 => ApiError::too_many_requests(message, Some(secs)),
                Some(secs) => {
                    let mut e = ApiError::new(code, message);
                    e.details = Some(Box::new(StatusDetails {
                        retry_after_seconds: Some(secs),
                        ..StatusDetails::default()
                    }));
                    e
                }
                None => ApiError::new(code, message),
            };
            error_response(&e)
        };
        if let Some(secs) = hit.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    };
    let mut resp = match &hit {
        Some(
            h @ FaultHit {
                action: FaultAction::Fail(code),
                ..
            },
        ) => fail_with(*code, h),
        _ if r.token => token_request(ctx, &r, &req),
        _ => {
            let outcome = run(ctx, &r, verb, &req);
            if verb == Verb::Create
                && let Some(name) = outcome.created_name
            {
                record_name = Some(name);
            }
            outcome.response
        }
    };
    if let Some(h) = &hit {
        if h.action == FaultAction::Garble && verb != Verb::Watch {
            resp = garble(resp).await;
        }
        if !h.delay.is_zero() {
            tokio::time::sleep(h.delay).await;
        }
    }
    lock(&ctx.standin.inner.requests).push(RequestRecord {
        at: req.arrived,
        verb,
        gvr,
        subresource: subresource.map(str::to_string),
        namespace: r.namespace.clone(),
        name: record_name,
        status: resp.status().as_u16(),
    });
    resp
}

/// A TokenRequest of a ServiceAccount ([`crate::token`]).
fn token_request(ctx: &ServerCtx, r: &ResourceReq, req: &HttpRequest<'_>) -> Response {
    let body = match req.body {
        Some(b) if b.len() <= MAX_REQUEST_BODY_BYTES => b,
        _ => return error_response(&ApiError::body_too_large()),
    };
    let namespace = r.namespace.as_deref().unwrap_or_default();
    let name = r.name.as_deref().unwrap_or_default();
    match crate::token::create(&ctx.standin, namespace, name, body, req.arrived) {
        Ok(answer) => json_response(201, &answer),
        Err(e) => error_response(&e),
    }
}

/// A response and, for a successful create, the created object's name.
struct Outcome {
    response: Response,
    created_name: Option<String>,
}

/// Limits, content negotiation and execution of a request.
fn run(ctx: &ServerCtx, r: &ResourceReq, verb: Verb, req: &HttpRequest<'_>) -> Outcome {
    let fail = |e: ApiError| Outcome {
        response: error_response(&e),
        created_name: None,
    };
    let body = match req.body {
        Some(b) if b.len() <= MAX_REQUEST_BODY_BYTES => b.clone(),
        Some(_) | None if verb.is_write() => return fail(ApiError::body_too_large()),
        _ => Bytes::new(),
    };
    let shape = match partial::negotiate(req.accept) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let call = Call {
        rt: &r.rt,
        namespace: r.namespace.as_deref(),
        name: r.name.as_deref(),
        sub: r.sub,
        verb,
        query: req.query,
        content_type: req.content_type,
        body: &body,
        shape: &shape,
    };
    match handlers::execute(&ctx.standin, &ctx.shutdown, &call) {
        Err(e) => fail(e),
        Ok(Answer::Json(code, value)) => Outcome {
            created_name: (code == 201)
                .then(|| value.pointer("/metadata/name").and_then(Value::as_str))
                .flatten()
                .map(str::to_string),
            response: json_response(code, &value),
        },
        Ok(Answer::Watch(stream)) => {
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Outcome {
                response: resp,
                created_name: None,
            }
        }
    }
}

/// Cut the last byte off a response body: still the object's text, no
/// longer decodable JSON.
async fn garble(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let mut bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    bytes.pop();
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

fn text_response(code: u16, text: &str) -> Response {
    let mut resp = Response::new(Body::from(text.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
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
                if t.gvr() == SERVICE_ACCOUNTS {
                    resources.push(json!({"name": "serviceaccounts/token", "singularName": "",
                        "namespaced": true, "group": "authentication.k8s.io", "version": "v1",
                        "kind": "TokenRequest", "verbs": ["create"]}));
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
