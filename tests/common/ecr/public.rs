//! ECR Public's `GetAuthorizationToken`, which moto does not serve, answered here over its
//! `awsJson1_1` protocol
//! ([GetAuthorizationToken](https://docs.aws.amazon.com/AmazonECRPublic/latest/APIReference/API_GetAuthorizationToken.html)):
//! `X-Amz-Target: SpencerFrontendService.GetAuthorizationToken`, a SigV4 signature scoped
//! to `ecr-public` in `us-east-1` (the only region serving it), a JSON object body. The
//! answer is `{"authorizationData": {"authorizationToken": base64("AWS:<unique>"),
//! "expiresAt": <epoch seconds>}}` (one object, not a list as private ECR's). A broken
//! rule or another `SpencerFrontendService` operation is answered with the error AWS
//! gives; every call is recorded ([`PublicCall`]).

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::Response;
use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::protocol::{self, aws_error, request_id};
use super::{CONTENT_TYPE, Fault, Shared, fault_response};

/// The `X-Amz-Target` prefix of the `ecr-public` API.
pub(super) const SERVICE_PREFIX: &str = "SpencerFrontendService.";
/// The `X-Amz-Target` of ECR Public's `GetAuthorizationToken`.
pub const PUBLIC_TARGET: &str = "SpencerFrontendService.GetAuthorizationToken";

/// One ECR Public `GetAuthorizationToken` call as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicCall {
    /// The access key ID that signed it, if signed.
    pub access_key_id: Option<String>,
    /// `ok`, a [`Fault::label`] or `Rejected` (broke one of the API's rules).
    pub outcome: &'static str,
    /// The password handed out (after `AWS:`), for `ok` calls.
    pub password: Option<String>,
    /// The `expiresAt` handed out, for `ok` calls.
    pub expires_at: Option<Timestamp>,
}

/// The ECR Public part of the stand-in's state.
#[derive(Debug, Default)]
pub(super) struct PublicState {
    pub calls: Vec<PublicCall>,
    pub pending: VecDeque<Fault>,
    /// How long tokens live; `None`: 12 hours.
    pub lifetime: Option<SignedDuration>,
}

/// Checks, records and answers one `SpencerFrontendService` request.
pub(super) fn handle(shared: &Shared, parts: &Parts, body: &Bytes) -> Response {
    let access_key_id = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(protocol::scope)
        .map(|s| s.access_key_id);
    let mut call = PublicCall {
        access_key_id,
        outcome: "Rejected",
        password: None,
        expires_at: None,
    };
    let mut state = shared.lock();
    if let Some((status, code, message)) = violation(parts, body) {
        state.public.calls.push(call);
        return aws_error(status, code, &message);
    }
    if let Some(fault) = state.public.pending.pop_front() {
        call.outcome = fault.label();
        state.public.calls.push(call);
        return match fault {
            Fault::Hang | Fault::Garbage => aws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServerException",
                "We encountered an internal error. Please try again.",
            ),
            fault => fault_response(fault),
        };
    }
    let n = state.public.calls.len() + 1;
    let password = format!("public-token-{n}-{}", rand::random::<u64>());
    let lifetime = state
        .public
        .lifetime
        .unwrap_or(SignedDuration::from_hours(12));
    let expires_at =
        Timestamp::from_second((Timestamp::now() + lifetime).as_second()).expect("in range");
    call.outcome = "ok";
    call.password = Some(password.clone());
    call.expires_at = Some(expires_at);
    state.public.calls.push(call);
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    let answer = json!({"authorizationData": {
        "authorizationToken": token,
        "expiresAt": expires_at.as_second(),
    }});
    let mut response = Response::new(Body::from(answer.to_string()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert("x-amzn-requestid", request_id());
    response
}

/// The first rule of ECR Public's that the request breaks, as (status, code, message).
fn violation(parts: &Parts, body: &[u8]) -> Option<(StatusCode, &'static str, String)> {
    let bad = StatusCode::BAD_REQUEST;
    let text = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let target = text("x-amz-target").unwrap_or_default();
    if parts.method != Method::POST || parts.uri.path() != "/" || target != PUBLIC_TARGET {
        return Some((
            bad,
            "UnknownOperationException",
            format!(
                "{} {} {target} is not an operation",
                parts.method,
                parts.uri.path()
            ),
        ));
    }
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
    if let Err(message) = protocol::check_sigv4(authorization, text("x-amz-date")) {
        return Some((bad, "IncompleteSignatureException", message));
    }
    let scope = protocol::scope(authorization)?;
    if scope.service != "ecr-public" {
        return Some((
            bad,
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to correct service: 'ecr-public', not '{}'.",
                scope.service
            ),
        ));
    }
    if scope.region != "us-east-1" {
        return Some((
            bad,
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid region, not '{}'.",
                scope.region
            ),
        ));
    }
    if !matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_))) {
        return Some((
            bad,
            "SerializationException",
            "Start of structure or map found where not expected.".into(),
        ));
    }
    None
}
