//! A stand-in container registry answering the
//! [API version check](https://distribution.github.io/distribution/spec/api/#api-version-check)
//! `GET /v2/` the way ECR and ECR Public do, for the credential check (`spec.verify`).
//!
//! Several registries behind one address: the `Host` header names the registry, and only
//! ECR hosts are served (`<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`,
//! `public.ecr.aws`); others get 404. Only `GET` and `HEAD` of `/v2/` are served (other
//! paths 404, other methods 405).
//!
//! - Private ECR: `Authorization: Basic base64(AWS:<password>)` with a password a
//!   `GetAuthorizationToken` of the host's region issued → 200 with
//!   `Docker-Distribution-API-Version: registry/2.0`; anything else → 401 with
//!   `WWW-Authenticate: Basic realm="https://<host>/",service="ecr.amazonaws.com"` and an
//!   `UNAUTHORIZED` error body, as ECR answers.
//! - ECR Public: `Authorization: Bearer base64(AWS:<password>)` with a password issued for
//!   ECR Public → 200; no credentials → 401 with a `Bearer` challenge; `Basic`, or a token
//!   it never issued → 400 `DENIED` "Your Authorization Token is invalid." (ECR Public
//!   answers 400, not 401, to bad credentials).
//!
//! Which passwords were issued is asked of a closure (e.g. [`issued_by`] reading
//! [`ScriptedTokens`]'s record). Every request is recorded by host and status, never with
//! its credentials.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use ecr_token_refresh::ecr::RegistryKind;

use super::tokens::ScriptedTokens;

/// Whether `password` was issued for registry `host`.
pub type Issued = dyn Fn(&str, &str) -> bool + Send + Sync;

/// One request as the stand-in saw it (never its credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The `Host` header.
    pub host: String,
    pub method: String,
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// Whether an `Authorization` header came with it.
    pub authorized: bool,
}

struct Shared {
    issued: Box<Issued>,
    seen: Mutex<Vec<Seen>>,
}

pub struct Registry {
    /// `http://127.0.0.1:<port>`: the base URL for `verify.endpoint`.
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A password is valid for a private host when ECR issued it in the host's region (a
/// token opens every registry its principal may read there), and for `public.ecr.aws` when
/// ECR Public issued it.
pub fn issued_by(tokens: Arc<ScriptedTokens>) -> impl Fn(&str, &str) -> bool + Send + Sync {
    move |host, password| {
        let public = host == "public.ecr.aws";
        let region = host.split('.').nth(3).unwrap_or_default().to_string();
        tokens.issued.lock().unwrap().iter().any(|(request, pw)| {
            pw == password
                && match request.kind {
                    RegistryKind::Public => public,
                    RegistryKind::Private => !public && request.region == region,
                }
        })
    }
}

impl Registry {
    pub async fn start(issued: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> Self {
        let shared = Arc::new(Shared {
            issued: Box::new(issued),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the registry stand-in");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("registry stand-in serves");
        });
        Self {
            url: format!("http://{addr}"),
            shared,
            server,
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The statuses answered for `host`, in order.
    pub fn statuses(&self, host: &str) -> Vec<u16> {
        self.seen()
            .into_iter()
            .filter(|s| s.host == host)
            .map(|s| s.status)
            .collect()
    }
}

fn is_ecr_host(host: &str) -> bool {
    if host == "public.ecr.aws" {
        return true;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let suffix_ok = matches!(
        labels.get(4..).unwrap_or_default(),
        ["amazonaws", "com"] | ["amazonaws", "com", "cn"]
    );
    labels.len() >= 6
        && labels[0].len() == 12
        && labels[0].bytes().all(|b| b.is_ascii_digit())
        && labels[1] == "dkr"
        && matches!(labels[2], "ecr" | "ecr-fips")
        && !labels[3].is_empty()
        && suffix_ok
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: &str) -> Response {
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

/// The password of `Authorization: <scheme> base64(AWS:<password>)`, if that is what came.
fn login(headers: &HeaderMap, scheme: &str) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix(scheme)?.strip_prefix(' ')?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (user == "AWS").then(|| password.to_string())
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let response = answer(&shared, &host, &method, &path, &headers);
    shared.seen.lock().unwrap().push(Seen {
        host,
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
        authorized: headers.contains_key(header::AUTHORIZATION),
    });
    response
}

fn answer(
    shared: &Shared,
    host: &str,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let api_version = || {
        (
            "Docker-Distribution-API-Version",
            "registry/2.0".to_string(),
        )
    };
    if !is_ecr_host(host) {
        return reply(
            StatusCode::NOT_FOUND,
            &[],
            r#"{"errors":[{"code":"NOT_FOUND"}]}"#,
        );
    }
    if path != "/v2/" {
        return reply(
            StatusCode::NOT_FOUND,
            &[api_version()],
            r#"{"errors":[{"code":"NOT_FOUND","message":"not served by this stand-in"}]}"#,
        );
    }
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &[("Allow", "GET, HEAD".to_string())],
            r#"{"errors":[{"code":"UNSUPPORTED"}]}"#,
        );
    }
    if host == "public.ecr.aws" {
        let denied = || {
            reply(
                StatusCode::BAD_REQUEST,
                &[],
                r#"{"errors":[{"code":"DENIED","message":"Your Authorization Token is invalid."}]}"#,
            )
        };
        if !headers.contains_key(header::AUTHORIZATION) {
            return reply(
                StatusCode::UNAUTHORIZED,
                &[(
                    "WWW-Authenticate",
                    r#"Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="aws""#
                        .to_string(),
                )],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
        return match login(headers, "Bearer") {
            Some(pw) if (shared.issued)(host, &pw) => reply(StatusCode::OK, &[api_version()], "{}"),
            _ => denied(),
        };
    }
    match login(headers, "Basic") {
        Some(pw) if (shared.issued)(host, &pw) => reply(StatusCode::OK, &[api_version()], "{}"),
        _ => reply(
            StatusCode::UNAUTHORIZED,
            &[
                api_version(),
                (
                    "WWW-Authenticate",
                    format!(r#"Basic realm="https://{host}/",service="ecr.amazonaws.com""#),
                ),
            ],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"Not Authorized"}]}"#,
        ),
    }
}
