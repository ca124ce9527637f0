//! An ECR stand-in with faults: a thin HTTP proxy in front of moto that the real
//! aws-sdk-ecr client talks to (endpoint override), so that tests of backoff, throttling
//! and expiry run the SDK's own error parsing and retry classification.
//!
//! moto always answers `GetAuthorizationToken` with the token `AWS:<registryId>-auth-token`
//! and an `expiresAt` of 2015-01-01, and never fails. The stand-in forwards to moto and
//! can instead
//! - rewrite the answer into a realistic one ([`Mode::Realistic`]: a token unique per
//!   call, `expiresAt` = now + lifetime),
//! - answer as ECR does when it fails ([`Fault`]), over ECR's `awsJson1_1` protocol
//!   (<https://smithy.io/2.0/aws/protocols/aws-json-1_1-protocol.html>): status, a body
//!   `{"__type": <code>, "message": …}` and the `x-amzn-ErrorType` / `x-amzn-RequestId`
//!   headers. aws-sdk-ecr reads the code from `x-amzn-ErrorType` first, then from
//!   `code` / `__type` in the body, cutting a `:…` suffix and a `…#` prefix
//!   (`json_errors::parse_error_metadata`), so both spellings below classify the same.
//!
//! It is as strict as ECR where the operator's code could depend on leniency: it
//! requires `POST /`, `Content-Type: application/x-amz-json-1.1`, a SigV4
//! `Authorization` header scoped to the `ecr` service, a JSON object body and
//! 12-digit `registryIds` (1 to 10), and answers a violation with ECR's error
//! ([GetAuthorizationToken](https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html),
//! [common errors](https://docs.aws.amazon.com/AmazonECR/latest/APIReference/CommonErrors.html)).
//! The signature itself is not verified. Other operations are forwarded to moto
//! unchanged and not counted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::moto::Moto;

/// The `X-Amz-Target` of `GetAuthorizationToken`.
pub const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
/// The content type of ECR's `awsJson1_1` protocol.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The access key of [`EcrStandIn::sdk_config`]'s static credentials.
pub const ACCESS_KEY_ID: &str = "AKIASTANDINTEST00001";
/// The secret key of [`EcrStandIn::sdk_config`]'s static credentials.
pub const SECRET_ACCESS_KEY: &str = "standin-secret-access-key-never-logged";
/// The message of [`Fault::AccessDenied`], as IAM words it.
pub const ACCESS_DENIED_MESSAGE: &str = "User: arn:aws:iam::123456789012:user/ci is not \
    authorized to perform: ecr:GetAuthorizationToken on resource: * because no \
    identity-based policy allows the ecr:GetAuthorizationToken action";
/// The `authorizationToken` inside the [`Fault::Garbage`] body (base64 of
/// `AWS:garbage-password`), for leak checks.
pub const GARBAGE_TOKEN: &str = "QVdTOmdhcmJhZ2UtcGFzc3dvcmQ=";

/// The suffix real AWS puts after the code in `x-amzn-ErrorType` for errors raised by its
/// request-handling framework (authentication, throttling).
const CORAL_SUFFIX: &str = ":http://internal.amazon.com/coral/com.amazon.coral.service/";

/// How the stand-in answers `GetAuthorizationToken` when no [`EcrStandIn::fail_next`]
/// fault is pending.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// moto's answer unchanged (token `AWS:<registryId>-auth-token`, expired in 2015).
    Pass,
    /// moto's answer with a token unique per call, base64 of
    /// `AWS:<registryId>-auth-token-<n>` (`n` counts from 1 over the stand-in's life),
    /// and `expiresAt` = now + `lifetime`.
    Realistic {
        /// How long from now the token is said to live (ECR: 12 hours).
        lifetime: SignedDuration,
    },
    /// Every request fails with this fault.
    Fail(Fault),
}

/// A failure, answered as ECR answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `AccessDeniedException`: the principal may not call
    /// `ecr:GetAuthorizationToken`.
    AccessDenied,
    /// HTTP 400 `ThrottlingException`, "Rate exceeded".
    Throttling,
    /// HTTP 500 `ServerException`, ECR's modelled server-side error.
    ServerError,
    /// No answer until [`EcrStandIn::release_hung`] (then moto's answer, shaped by a
    /// `Realistic` mode) or until the client gives up.
    Hang,
    /// HTTP 200 with a truncated JSON body (it contains [`GARBAGE_TOKEN`]).
    Garbage,
    /// HTTP 400 `ExpiredTokenException`: temporary credentials past their expiry.
    ExpiredCredentials,
    /// HTTP 400 `UnrecognizedClientException`: an access key AWS does not know.
    UnrecognizedClient,
}

impl Fault {
    /// The label [`EcrStandIn::outcomes`] records, e.g. `AccessDenied`.
    pub fn label(self) -> &'static str {
        match self {
            Fault::AccessDenied => "AccessDenied",
            Fault::Throttling => "Throttling",
            Fault::ServerError => "ServerError",
            Fault::Hang => "Hang",
            Fault::Garbage => "Garbage",
            Fault::ExpiredCredentials => "ExpiredCredentials",
            Fault::UnrecognizedClient => "UnrecognizedClient",
        }
    }
}

/// The ECR stand-in, listening on 127.0.0.1; stops on drop.
pub struct EcrStandIn {
    /// `http://127.0.0.1:<port>`, the endpoint to give the SDK.
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: String,
    http: Client<HttpConnector, Full<Bytes>>,
    state: Mutex<Recorded>,
    /// Bumped by `release_hung`; hung requests wait for a change.
    released: watch::Sender<u64>,
}

struct Recorded {
    mode: Mode,
    pending: VecDeque<Fault>,
    times: Vec<Instant>,
    outcomes: Vec<&'static str>,
    /// Tokens handed out in `Realistic` mode so far.
    issued: u64,
}

/// What to do with one counted request, decided under the lock.
enum Plan {
    Forward,
    Fail(Fault),
    Hang(watch::Receiver<u64>),
}

impl EcrStandIn {
    /// Starts the stand-in on 127.0.0.1 (a free port), forwarding to `upstream`, in
    /// [`Mode::Pass`].
    pub async fn start(upstream: &Moto) -> Self {
        let (released, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            upstream: upstream.url(),
            http: Client::builder(TokioExecutor::new()).build_http(),
            state: Mutex::new(Recorded {
                mode: Mode::Pass,
                pending: VecDeque::new(),
                times: Vec::new(),
                outcomes: Vec::new(),
                issued: 0,
            }),
            released,
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the ECR stand-in");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("ECR stand-in serves");
        });
        Self {
            url: format!("http://{addr}"),
            shared,
            server,
        }
    }

    /// Sets how following requests are answered (pending [`fail_next`](Self::fail_next)
    /// faults come first).
    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock().mode = mode;
    }

    /// The next `n` `GetAuthorizationToken` requests fail with `fault`; then the mode
    /// applies again. Adds to faults already pending.
    pub fn fail_next(&self, n: u32, fault: Fault) {
        self.shared
            .lock()
            .pending
            .extend(std::iter::repeat_n(fault, n as usize));
    }

    /// `GetAuthorizationToken` requests received so far (rejected and hung ones included).
    pub fn requests(&self) -> u32 {
        self.shared.lock().times.len() as u32
    }

    /// When each `GetAuthorizationToken` request arrived, in order.
    pub fn request_times(&self) -> Vec<Instant> {
        self.shared.lock().times.clone()
    }

    /// Per request, in order: `ok`, a [`Fault::label`], or `Rejected` (the request broke
    /// one of ECR's rules).
    pub fn outcomes(&self) -> Vec<&'static str> {
        self.shared.lock().outcomes.clone()
    }

    /// Answers every request held by [`Fault::Hang`] so far.
    pub fn release_hung(&self) {
        self.shared.released.send_modify(|n| *n += 1);
    }

    /// An SDK configuration pointed at the stand-in: static test credentials
    /// ([`ACCESS_KEY_ID`]), region `us-east-1`, the standard retry mode with
    /// `max_attempts` (the first attempt included), and `attempt_timeout` per attempt.
    pub async fn sdk_config(
        &self,
        max_attempts: u32,
        attempt_timeout: Duration,
    ) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
                None,
                None,
                "ecr-standin",
            ))
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .load()
            .await
    }
}

impl Drop for EcrStandIn {
    fn drop(&mut self) {
        self.release_hung();
        self.server.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a `GetAuthorizationToken` request and decides its answer.
    fn plan(&self, rejected: bool) -> Plan {
        let mut state = self.lock();
        state.times.push(Instant::now());
        if rejected {
            state.outcomes.push("Rejected");
            return Plan::Forward;
        }
        let fault = match state.pending.pop_front() {
            Some(fault) => Some(fault),
            None => match state.mode {
                Mode::Fail(fault) => Some(fault),
                Mode::Pass | Mode::Realistic { .. } => None,
            },
        };
        state.outcomes.push(fault.map(Fault::label).unwrap_or("ok"));
        match fault {
            None => Plan::Forward,
            // Subscribed under the lock: a release after this point reaches it.
            Some(Fault::Hang) => Plan::Hang(self.released.subscribe()),
            Some(fault) => Plan::Fail(fault),
        }
    }

    /// Forwards to moto; shapes the answer when the mode is `Realistic`.
    async fn forward(&self, method: Method, headers: HeaderMap, body: Bytes) -> Response {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}/", self.upstream));
        for (name, value) in headers.iter().filter(|(n, _)| *n != header::HOST) {
            request = request.header(name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("bad request to moto: {e}")),
        };
        let answer = match self.http.request(request).await {
            Ok(a) => a,
            Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("moto unreachable: {e}")),
        };
        let (parts, body) = answer.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("moto's body: {e}")),
        };
        let lifetime = match self.lock().mode {
            Mode::Realistic { lifetime } if parts.status.is_success() => Some(lifetime),
            _ => None,
        };
        let body = match lifetime {
            Some(lifetime) => match self.realistic(&body, lifetime) {
                Ok(b) => b,
                Err(e) => return plain(StatusCode::BAD_GATEWAY, e),
            },
            None => body,
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = parts.status;
        for (name, value) in parts.headers.iter().filter(|(n, _)| {
            *n != header::CONTENT_LENGTH
                && *n != header::TRANSFER_ENCODING
                && *n != header::CONNECTION
        }) {
            response.headers_mut().append(name, value.clone());
        }
        response
    }

    /// moto's `GetAuthorizationToken` answer with unique tokens and a live expiry.
    fn realistic(&self, body: &[u8], lifetime: SignedDuration) -> Result<Bytes, String> {
        let mut answer: Value =
            serde_json::from_slice(body).map_err(|e| format!("moto's answer is not JSON: {e}"))?;
        let expires_at = (Timestamp::now() + lifetime).as_millisecond() as f64 / 1000.0;
        let entries = answer["authorizationData"]
            .as_array_mut()
            .ok_or("moto's answer has no authorizationData")?;
        let b64 = base64::engine::general_purpose::STANDARD;
        for entry in entries {
            let token = entry["authorizationToken"]
                .as_str()
                .and_then(|t| b64.decode(t).ok())
                .and_then(|t| String::from_utf8(t).ok())
                .ok_or("moto's authorizationToken is not base64 text")?;
            let n = {
                let mut state = self.lock();
                state.issued += 1;
                state.issued
            };
            entry["authorizationToken"] = json!(b64.encode(format!("{token}-{n}")));
            entry["expiresAt"] = json!(expires_at);
        }
        serde_json::to_vec(&answer)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    if target != Some(TARGET) {
        return shared.forward(parts.method, parts.headers, body).await;
    }
    if let Some((status, code, message)) =
        violation(&parts.method, parts.uri.path(), &parts.headers, &body)
    {
        shared.plan(true);
        return aws_error(status, code, &message);
    }
    match shared.plan(false) {
        Plan::Forward => shared.forward(parts.method, parts.headers, body).await,
        Plan::Fail(fault) => fault_response(fault),
        Plan::Hang(mut released) => {
            // Err only when the stand-in is gone; answer either way.
            let _ = released.changed().await;
            shared.forward(parts.method, parts.headers, body).await
        }
    }
}

/// The first rule of ECR's that the request breaks, as (status, code, message).
fn violation(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<(StatusCode, &'static str, String)> {
    let bad = StatusCode::BAD_REQUEST;
    if method != Method::POST || path != "/" {
        return Some((
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("{method} {path} is not an operation"),
        ));
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text("content-type") != Some(CONTENT_TYPE) {
        return Some((
            bad,
            "SerializationException",
            format!("Content-Type must be {CONTENT_TYPE}"),
        ));
    }
    let Some(authorization) = text("authorization") else {
        return Some((
            bad,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".into(),
        ));
    };
    if let Err(message) = check_sigv4(authorization, text("x-amz-date")) {
        return Some((bad, "IncompleteSignatureException", message));
    }
    if let Some(scope_service) = authorization
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').nth(3))
        && scope_service != "ecr"
    {
        return Some((
            bad,
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to correct service: 'ecr', not '{scope_service}'."
            ),
        ));
    }
    let Ok(Value::Object(input)) = serde_json::from_slice::<Value>(body) else {
        return Some((
            bad,
            "SerializationException",
            "Start of structure or map found where not expected.".into(),
        ));
    };
    if let Some(ids) = input.get("registryIds") {
        let valid = ids.as_array().is_some_and(|ids| {
            (1..=10).contains(&ids.len())
                && ids.iter().all(|id| {
                    id.as_str()
                        .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()))
                })
        });
        if !valid {
            return Some((
                bad,
                "InvalidParameterException",
                "Invalid parameter at 'registryIds' failed to satisfy constraint: 'Member must \
                 have length between 1 and 10 and each member must satisfy regular expression \
                 pattern: [0-9]{12}'"
                    .into(),
            ));
        }
    }
    None
}

/// Checks the shape of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<key>/<yyyymmdd>/<region>/<service>/aws4_request,
/// SignedHeaders=…, Signature=<hex>`, and that `X-Amz-Date` is there.
fn check_sigv4(authorization: &str, date: Option<&str>) -> Result<(), String> {
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization header requires the AWS4-HMAC-SHA256 algorithm")?;
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name))
            .ok_or(format!(
                "Authorization header requires '{}' parameter.",
                name.trim_end_matches('=')
            ))
    };
    let credential = field("Credential=")?;
    field("SignedHeaders=")?;
    let signature = field("Signature=")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let scope_ok = scope.len() == 5
        && !scope[0].is_empty()
        && scope[1].len() == 8
        && scope[1].bytes().all(|b| b.is_ascii_digit())
        && !scope[2].is_empty()
        && scope[4] == "aws4_request";
    if !scope_ok {
        return Err(format!("Credential scope is malformed: {credential:?}"));
    }
    if signature.is_empty() || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("Signature must be hex".into());
    }
    if date.is_none() {
        return Err(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .into(),
        );
    }
    Ok(())
}

fn fault_response(fault: Fault) -> Response {
    let bad = StatusCode::BAD_REQUEST;
    match fault {
        Fault::AccessDenied => aws_error(bad, "AccessDeniedException", ACCESS_DENIED_MESSAGE),
        Fault::Throttling => aws_error(bad, "ThrottlingException", "Rate exceeded"),
        Fault::ServerError => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            "We encountered an internal error. Please try again.",
        ),
        Fault::ExpiredCredentials => aws_error(
            bad,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        Fault::UnrecognizedClient => aws_error(
            bad,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        Fault::Garbage => {
            let body = format!(
                "{{\"authorizationData\": [{{\"authorizationToken\": \"{GARBAGE_TOKEN}\", \"expiresAt\": 17"
            );
            let mut response = Response::new(Body::from(body));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            headers.insert("x-amzn-requestid", request_id());
            response
        }
        // Answered in `handle`, after the release.
        Fault::Hang => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unreachable: hang".into(),
        ),
    }
}

/// An `awsJson1_1` error answer as AWS sends it.
fn aws_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"__type": code, "message": message}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert("x-amzn-requestid", request_id());
    // ECR's modelled errors (ServerException, InvalidParameterException) carry the bare
    // code; the framework's (auth, throttling, validation) the code and its namespace URL.
    let error_type = match code {
        "ServerException" | "InvalidParameterException" => code.to_string(),
        _ => format!("{code}{CORAL_SUFFIX}"),
    };
    if let Ok(value) = HeaderValue::from_str(&error_type) {
        headers.insert("x-amzn-errortype", value);
    }
    response
}

/// A fresh request ID in AWS's UUID form.
fn request_id() -> HeaderValue {
    let n: u128 = rand::random();
    let hex = format!("{n:032x}");
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn plain(status: StatusCode, message: String) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
}
