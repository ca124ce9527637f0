//! What the AWS stand-ins share: SigV4 header checks, the `awsJson1_1` error shape, request
//! IDs.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::CONTENT_TYPE;

/// The suffix real AWS puts after the code in `x-amzn-ErrorType` for errors raised by its
/// request-handling framework (authentication, throttling).
const CORAL_SUFFIX: &str = ":http://internal.amazon.com/coral/com.amazon.coral.service/";

/// The credential scope of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The access key ID that signed.
    pub access_key_id: String,
    /// The scope's region, e.g. `us-east-1`.
    pub region: String,
    /// The scope's service, e.g. `ecr`, `ecr-public`, `sts`.
    pub service: String,
}

/// The credential scope of a well-formed SigV4 `Authorization` header (see
/// [`check_sigv4`]), or `None`.
pub fn scope(authorization: &str) -> Option<Scope> {
    let credential = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")?
        .split(',')
        .map(str::trim)
        .find_map(|f| f.strip_prefix("Credential="))?;
    let parts: Vec<&str> = credential.split('/').collect();
    (parts.len() == 5).then(|| Scope {
        access_key_id: parts[0].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
    })
}

/// Checks the shape of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<key>/<yyyymmdd>/<region>/<service>/aws4_request,
/// SignedHeaders=…, Signature=<hex>`, and that `X-Amz-Date` is there.
pub fn check_sigv4(authorization: &str, date: Option<&str>) -> Result<(), String> {
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

/// An `awsJson1_1` error answer as AWS sends it.
pub fn aws_error(status: StatusCode, code: &str, message: &str) -> Response {
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
pub fn request_id() -> HeaderValue {
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

pub fn plain(status: StatusCode, message: String) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
}
