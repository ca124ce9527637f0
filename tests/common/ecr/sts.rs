//! STS in front of moto: `AssumeRole` and `AssumeRoleWithWebIdentity` over STS's
//! `awsQuery` protocol (<https://smithy.io/2.0/aws/protocols/aws-query-protocol.html>: a
//! form-encoded `POST /` with `Action` and `Version=2011-06-15`, XML answers).
//!
//! moto serves both. It routes a signed request by the service of its SigV4 scope, and an
//! unsigned one (aws-sdk-sts sends `AssumeRoleWithWebIdentity` unsigned) by the `Action`
//! of a form body (`moto_server/werkzeug_app.py`: `UNSIGNED_ACTIONS`; it needs the
//! `application/x-www-form-urlencoded` content type and a `Content-Length`, both forwarded
//! unchanged), so both reach its STS backend. moto checks neither signatures nor web
//! identity tokens and issues fresh credentials per call (`ASIA…` keys, an hour).
//!
//! The stand-in checks what STS checks before that
//! ([AssumeRole](https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html),
//! [AssumeRoleWithWebIdentity](https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html)):
//! `AssumeRole` signed for `sts`; `RoleArn` an IAM role ARN; `RoleSessionName` 2–64 of
//! `[\w+=,.@-]`; `ExternalId` 2–1224 of `[\w+=,.@:/-]`; `WebIdentityToken` 4–20000
//! characters; `DurationSeconds` 900–43200. A violation is answered in STS's XML error
//! shape (`ValidationError`, `MissingAuthenticationToken`), like an injected
//! [`StsFault`]. Every call is recorded ([`StsCall`]) with the credentials moto issued.

use std::collections::{HashMap, VecDeque};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::Response;
use jiff::{SignedDuration, Timestamp};

use super::Shared;
use super::protocol::{self, Scope, request_id};

/// What [`StsFault::AccessDenied`] says, as STS words it.
pub const STS_ACCESS_DENIED_MESSAGE: &str = "User: arn:aws:iam::123456789012:user/ci is not \
    authorized to perform: sts:AssumeRole on resource: the role";

/// One STS call as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsCall {
    /// `AssumeRole` or `AssumeRoleWithWebIdentity`.
    pub action: String,
    /// `RoleArn`.
    pub role_arn: Option<String>,
    /// `ExternalId`.
    pub external_id: Option<String>,
    /// `RoleSessionName`.
    pub role_session_name: Option<String>,
    /// `WebIdentityToken`.
    pub web_identity_token: Option<String>,
    /// `DurationSeconds`.
    pub duration_seconds: Option<String>,
    /// The SigV4 scope of the signature; `None` for an unsigned call.
    pub signed: Option<Scope>,
    /// `ok`, a [`StsFault::label`], `Rejected` (broke one of STS's rules) or
    /// `moto <status>`.
    pub outcome: String,
    /// What moto issued (as answered, after [`super::EcrStandIn::set_sts_credential_lifetime`]).
    pub issued: Option<IssuedCredentials>,
}

/// Credentials STS answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// `Expiration` as answered.
    pub expiration: Timestamp,
}

/// An STS failure, answered in STS's XML error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsFault {
    /// HTTP 403 `AccessDenied`: the trust policy does not let the caller assume the role.
    AccessDenied,
    /// HTTP 400 `Throttling`, "Rate exceeded".
    Throttling,
    /// HTTP 400 `ExpiredToken`: the caller's own session token expired.
    ExpiredToken,
    /// HTTP 400 `InvalidIdentityToken`: the web identity token was refused.
    InvalidIdentityToken,
}

impl StsFault {
    /// The label [`StsCall::outcome`] records, e.g. `AccessDenied`.
    pub fn label(self) -> &'static str {
        match self {
            StsFault::AccessDenied => "AccessDenied",
            StsFault::Throttling => "Throttling",
            StsFault::ExpiredToken => "ExpiredToken",
            StsFault::InvalidIdentityToken => "InvalidIdentityToken",
        }
    }

    fn answer(self) -> Response {
        match self {
            StsFault::AccessDenied => xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                STS_ACCESS_DENIED_MESSAGE,
            ),
            StsFault::Throttling => {
                xml_error(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded")
            }
            StsFault::ExpiredToken => xml_error(
                StatusCode::BAD_REQUEST,
                "ExpiredToken",
                "The security token included in the request is expired",
            ),
            StsFault::InvalidIdentityToken => xml_error(
                StatusCode::BAD_REQUEST,
                "InvalidIdentityToken",
                "Couldn't retrieve verification key from your identity provider",
            ),
        }
    }
}

/// The STS part of the stand-in's state.
#[derive(Debug, Default)]
pub(super) struct StsState {
    pub calls: Vec<StsCall>,
    pub pending: VecDeque<StsFault>,
    pub lifetime: Option<SignedDuration>,
}

const ACTIONS: [&str; 2] = ["AssumeRole", "AssumeRoleWithWebIdentity"];

/// Whether a request without `X-Amz-Target` is one of the STS calls stood in for.
pub(super) fn is_sts(headers: &HeaderMap, body: &[u8]) -> bool {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    form && parse_form(body)
        .get("Action")
        .is_some_and(|a| ACTIONS.contains(&a.as_str()))
}

/// Checks, records, fails or forwards one STS call.
pub(super) async fn handle(shared: &Shared, parts: Parts, body: Bytes) -> Response {
    let form = parse_form(&body);
    let get = |k: &str| form.get(k).cloned();
    let signed = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(protocol::scope);
    let mut call = StsCall {
        action: get("Action").unwrap_or_default(),
        role_arn: get("RoleArn"),
        external_id: get("ExternalId"),
        role_session_name: get("RoleSessionName"),
        web_identity_token: get("WebIdentityToken"),
        duration_seconds: get("DurationSeconds"),
        signed,
        outcome: String::new(),
        issued: None,
    };
    let record = |call: StsCall| shared.lock().sts.calls.push(call);
    if let Some((status, code, message)) = violation(&parts, &call, &form) {
        call.outcome = "Rejected".into();
        record(call);
        return xml_error(status, code, &message);
    }
    let fault = shared.lock().sts.pending.pop_front();
    if let Some(fault) = fault {
        call.outcome = fault.label().into();
        record(call);
        return fault.answer();
    }
    let (status, headers, body) = match shared.moto(parts.method, &parts.headers, body).await {
        Ok(answer) => answer,
        Err(response) => {
            call.outcome = "moto unreachable".into();
            record(call);
            return response;
        }
    };
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        let lifetime = shared.lock().sts.lifetime;
        if let Some(lifetime) = lifetime
            && let Some(old) = tag(&text, "Expiration")
        {
            let at = Timestamp::from_second((Timestamp::now() + lifetime).as_second())
                .expect("a time in range");
            text = text.replacen(
                &format!("<Expiration>{old}</Expiration>"),
                &format!("<Expiration>{at}</Expiration>"),
                1,
            );
        }
        call.issued = issued(&text);
        call.outcome = "ok".into();
    } else {
        call.outcome = format!("moto {}", status.as_u16());
    }
    record(call);
    super::relay(status, &headers, Bytes::from(text))
}

/// The credentials in an STS answer.
fn issued(xml: &str) -> Option<IssuedCredentials> {
    Some(IssuedCredentials {
        access_key_id: tag(xml, "AccessKeyId")?.to_string(),
        secret_access_key: tag(xml, "SecretAccessKey")?.to_string(),
        session_token: tag(xml, "SessionToken")?.to_string(),
        expiration: tag(xml, "Expiration")?.parse().ok()?,
    })
}

/// The text of the first `<name>…</name>` element.
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..end])
}

/// The first rule of STS's the call breaks, as (status, code, message).
fn violation(
    parts: &Parts,
    call: &StsCall,
    form: &HashMap<String, String>,
) -> Option<(StatusCode, &'static str, String)> {
    let bad = StatusCode::BAD_REQUEST;
    let invalid = |m: String| Some((bad, "ValidationError", m));
    if parts.method != axum::http::Method::POST || parts.uri.path() != "/" {
        return Some((
            StatusCode::NOT_FOUND,
            "InvalidAction",
            "only POST / is served".into(),
        ));
    }
    if form.get("Version").map(String::as_str) != Some("2011-06-15") {
        return Some((
            bad,
            "InvalidAction",
            format!(
                "Could not find operation {} for version {:?}",
                call.action,
                form.get("Version")
            ),
        ));
    }
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match (authorization, call.action.as_str()) {
        (None, "AssumeRole") => {
            return Some((
                StatusCode::FORBIDDEN,
                "MissingAuthenticationToken",
                "Request is missing Authentication Token".into(),
            ));
        }
        (None, _) => {}
        (Some(authorization), _) => {
            let date = parts
                .headers
                .get("x-amz-date")
                .and_then(|v| v.to_str().ok());
            if let Err(message) = protocol::check_sigv4(authorization, date) {
                return Some((bad, "IncompleteSignature", message));
            }
            if call.signed.as_ref().map(|s| s.service.as_str()) != Some("sts") {
                return Some((
                    StatusCode::FORBIDDEN,
                    "SignatureDoesNotMatch",
                    "Credential should be scoped to correct service: 'sts'.".into(),
                ));
            }
        }
    }
    let role_arn = call.role_arn.as_deref().unwrap_or_default();
    if !is_role_arn(role_arn) {
        return invalid(format!(
            "1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy \
             constraint: Member must be a role ARN"
        ));
    }
    let allowed = |s: &str, extra: &str| {
        s.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || "+=,.@-".contains(c) || extra.contains(c)
        })
    };
    let session = call.role_session_name.as_deref().unwrap_or_default();
    if !(2..=64).contains(&session.len()) || !allowed(session, "") {
        return invalid(format!(
            "1 validation error detected: Value '{session}' at 'roleSessionName' failed to \
             satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        ));
    }
    if let Some(external_id) = &call.external_id
        && (!(2..=1224).contains(&external_id.len()) || !allowed(external_id, ":/"))
    {
        return invalid(
            "1 validation error detected: Value at 'externalId' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [\\w+=,.@:\\/-]*"
                .into(),
        );
    }
    if call.action == "AssumeRoleWithWebIdentity" {
        let token = call.web_identity_token.as_deref().unwrap_or_default();
        if !(4..=20000).contains(&token.len()) {
            return invalid(
                "1 validation error detected: Value at 'webIdentityToken' failed to satisfy \
                 constraint: Member must have length greater than or equal to 4"
                    .into(),
            );
        }
    }
    if let Some(d) = &call.duration_seconds
        && !d.parse::<u32>().is_ok_and(|d| (900..=43200).contains(&d))
    {
        return invalid(format!(
            "1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy \
             constraint: Member must have value between 900 and 43200"
        ));
    }
    None
}

/// `arn:<partition>:iam::<12 digits>:role/<name>`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty())
        && (20..=2048).contains(&arn.len())
}

/// An STS error answer
/// (<https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html>).
fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let id = request_id();
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    \
         <Type>{kind}</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
         <RequestId>{}</RequestId>\n</ErrorResponse>\n",
        escape(message),
        id.to_str().unwrap_or_default()
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    headers.insert("x-amzn-requestid", id);
    response
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An `application/x-www-form-urlencoded` body as a map (last value wins).
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding of a form component (`+` is a space).
fn decode(s: &str) -> String {
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
