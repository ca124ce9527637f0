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
//! The signature itself is not verified, but the access key ID that signed each call is
//! recorded ([`EcrStandIn::signers`]), so a test can tell whose credentials asked.
//! Other ECR operations are forwarded to moto unchanged and not counted.
//!
//! It also stands in for STS ([`sts`]: `AssumeRole` and `AssumeRoleWithWebIdentity`
//! forwarded to moto, recorded, with injectable faults) and for ECR Public ([`public`]:
//! moto has none; answered here), so that one endpoint override serves every service the
//! token source calls.

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
use protocol::{aws_error, check_sigv4, plain, request_id};

mod protocol;
mod public;
mod sts;

#[allow(unused_imports)]
pub use public::{PUBLIC_TARGET, PublicCall};
#[allow(unused_imports)]
pub use sts::{IssuedCredentials, STS_ACCESS_DENIED_MESSAGE, StsCall, StsFault};

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
    /// The access key ID of each `GetAuthorizationToken` request's signature, in order.
    signers: Vec<Option<String>>,
    /// Tokens handed out in `Realistic` mode so far.
    issued: u64,
    /// STS: calls seen, faults pending, and the lifetime given to issued credentials.
    sts: sts::StsState,
    /// ECR Public: calls seen, faults pending, and the lifetime of its tokens.
    public: public::PublicState,
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
                signers: Vec::new(),
                issued: 0,
                sts: sts::StsState::default(),
                public: public::PublicState::default(),
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

    /// The access key ID that signed each `GetAuthorizationToken` request (ECR, private
    /// registries), in order; `None` for an unsigned one.
    pub fn signers(&self) -> Vec<Option<String>> {
        self.shared.lock().signers.clone()
    }

    /// The STS calls (`AssumeRole`, `AssumeRoleWithWebIdentity`) seen so far, in order.
    pub fn sts_calls(&self) -> Vec<StsCall> {
        self.shared.lock().sts.calls.clone()
    }

    /// The next `n` STS calls fail with `fault` (before reaching moto).
    pub fn fail_next_sts(&self, n: u32, fault: StsFault) {
        self.shared
            .lock()
            .sts
            .pending
            .extend(std::iter::repeat_n(fault, n as usize));
    }

    /// Credentials issued by STS from now on expire `lifetime` from now (rewritten in
    /// moto's answer; moto gives an hour, or the requested `DurationSeconds`). `None`:
    /// moto's expiry.
    pub fn set_sts_credential_lifetime(&self, lifetime: Option<SignedDuration>) {
        self.shared.lock().sts.lifetime = lifetime;
    }

    /// The ECR Public `GetAuthorizationToken` calls seen so far, in order.
    pub fn public_calls(&self) -> Vec<PublicCall> {
        self.shared.lock().public.calls.clone()
    }

    /// The next `n` ECR Public `GetAuthorizationToken` calls fail with `fault`
    /// ([`Fault::Hang`] and [`Fault::Garbage`] are answered as a server error).
    pub fn fail_next_public(&self, n: u32, fault: Fault) {
        self.shared
            .lock()
            .public
            .pending
            .extend(std::iter::repeat_n(fault, n as usize));
    }

    /// ECR Public tokens handed out from now on expire `lifetime` from now (default: 12
    /// hours, as ECR Public's).
    pub fn set_public_lifetime(&self, lifetime: SignedDuration) {
        self.shared.lock().public.lifetime = Some(lifetime);
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

    /// Sends the request to moto: its status, headers and body, or a 502 answer.
    async fn moto(
        &self,
        method: Method,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Response> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}/", self.upstream));
        for (name, value) in headers.iter().filter(|(n, _)| *n != header::HOST) {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| plain(StatusCode::BAD_GATEWAY, format!("bad request to moto: {e}")))?;
        let answer = self
            .http
            .request(request)
            .await
            .map_err(|e| plain(StatusCode::BAD_GATEWAY, format!("moto unreachable: {e}")))?;
        let (parts, body) = answer.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| plain(StatusCode::BAD_GATEWAY, format!("moto's body: {e}")))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// Forwards to moto unchanged.
    async fn pass_through(&self, method: Method, headers: HeaderMap, body: Bytes) -> Response {
        match self.moto(method, &headers, body).await {
            Ok((status, headers, body)) => relay(status, &headers, body),
            Err(response) => response,
        }
    }

    /// Forwards `GetAuthorizationToken` to moto; shapes the answer when the mode is
    /// `Realistic`.
    async fn forward(&self, method: Method, headers: HeaderMap, body: Bytes) -> Response {
        let (status, headers, body) = match self.moto(method, &headers, body).await {
            Ok(answer) => answer,
            Err(response) => return response,
        };
        let lifetime = match self.lock().mode {
            Mode::Realistic { lifetime } if status.is_success() => Some(lifetime),
            _ => None,
        };
        let body = match lifetime {
            Some(lifetime) => match self.realistic(&body, lifetime) {
                Ok(b) => b,
                Err(e) => return plain(StatusCode::BAD_GATEWAY, e),
            },
            None => body,
        };
        relay(status, &headers, body)
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

/// An answer with moto's status, headers (but the framing ones) and `body`.
fn relay(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in headers.iter().filter(|(n, _)| {
        *n != header::CONTENT_LENGTH && *n != header::TRANSFER_ENCODING && *n != header::CONNECTION
    }) {
        response.headers_mut().append(name, value.clone());
    }
    response
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
    if target.is_some_and(|t| t.starts_with(public::SERVICE_PREFIX)) {
        return public::handle(&shared, &parts, &body);
    }
    if target.is_none() && sts::is_sts(&parts.headers, &body) {
        return sts::handle(&shared, parts, body).await;
    }
    if target != Some(TARGET) {
        return shared.pass_through(parts.method, parts.headers, body).await;
    }
    let signer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(protocol::scope)
        .map(|s| s.access_key_id);
    shared.lock().signers.push(signer);
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
