//! The ServiceAccount `token` subresource (TokenRequest API,
//! `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`), checked like the real
//! API server (`pkg/registry/core/serviceaccount/storage/token.go` and
//! `ValidateTokenRequest`): the body must be an `authentication.k8s.io/v1` `TokenRequest`
//! (apiVersion and kind default when absent), `metadata.name`/`namespace` must match the
//! URL when given, `spec.audiences` must be strings (empty: the API server's own
//! audience), `spec.expirationSeconds` (default 3600) at least 600 and at most 2^32; the
//! ServiceAccount must exist (404 otherwise). The answer, 201, carries `status.token`: a
//! JWT-shaped string whose payload names the ServiceAccount and audiences (tests can read
//! it with [`decode_token_claims`]; nothing verifies its made-up signature), and
//! `status.expirationTimestamp`. Each successful request is recorded
//! ([`crate::StandIn::token_requests`]).

use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::StandIn;
use crate::error::ApiError;
use crate::validation::FieldError;

/// The `iss` of the tokens, and the audience given when a request names none.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// `ExpirationSeconds` when a request gives none (the v1 default).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// A token handed out by the `token` subresource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequestRecord {
    /// When it was asked for.
    pub at: Instant,
    /// Namespace of the ServiceAccount.
    pub namespace: String,
    /// Name of the ServiceAccount.
    pub service_account: String,
    /// `spec.audiences` as requested (empty: none given).
    pub audiences: Vec<String>,
    /// `spec.expirationSeconds` as requested, if given.
    pub expiration_seconds: Option<i64>,
    /// The token answered.
    pub token: String,
}

/// The claims of a token made by the stand-in (`sub`, `aud`, `exp`, `kubernetes.io`…),
/// or `None` for anything else.
pub fn decode_token_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A TokenRequest for ServiceAccount `namespace/name` with `body`: the answered
/// TokenRequest (status 201), or the error the real API server gives.
pub(crate) fn create(
    standin: &StandIn,
    namespace: &str,
    name: &str,
    body: &[u8],
    at: Instant,
) -> Result<Value, ApiError> {
    let undecodable = |why: &str| {
        ApiError::bad_request(format!(
            "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: {why}"
        ))
    };
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| undecodable(&e.to_string()))?
    };
    if !request.is_object() {
        return Err(undecodable(
            "json: cannot unmarshal into Go value of type authentication.TokenRequest",
        ));
    }
    match request.get("apiVersion").and_then(Value::as_str) {
        None | Some("") | Some("authentication.k8s.io/v1") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({other}) does not match the expected API version (authentication.k8s.io/v1)"
            )));
        }
    }
    match request.get("kind").and_then(Value::as_str) {
        None | Some("") | Some("TokenRequest") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({other}) does not match the expected kind (TokenRequest)"
            )));
        }
    }
    let invalid = |errs: &[FieldError]| {
        ApiError::invalid_kind(
            "TokenRequest.authentication.k8s.io",
            "authentication.k8s.io",
            "TokenRequest",
            name,
            errs,
        )
    };
    let meta = |key: &str| {
        request
            .pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_str)
    };
    if let Some(given) = meta("name").filter(|n| !n.is_empty() && *n != name) {
        return Err(invalid(&[FieldError::invalid(
            "metadata.name",
            given,
            "must match the service account name if specified",
        )]));
    }
    if let Some(given) = meta("namespace").filter(|n| !n.is_empty() && *n != namespace) {
        return Err(invalid(&[FieldError::invalid(
            "metadata.namespace",
            given,
            "must match the service account namespace if specified",
        )]));
    }
    let spec = request.get("spec").cloned().unwrap_or(json!({}));
    let audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                undecodable(
                    "json: cannot unmarshal into Go struct field TokenRequestSpec.spec.audiences of type string",
                )
            })?,
        Some(_) => {
            return Err(undecodable(
                "json: cannot unmarshal into Go struct field TokenRequestSpec.spec.audiences of type []string",
            ));
        }
    };
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            undecodable(
                "json: cannot unmarshal into Go struct field TokenRequestSpec.spec.expirationSeconds of type int64",
            )
        })?),
    };
    let seconds = expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if seconds < 600 {
        return Err(invalid(&[FieldError::invalid_plain(
            "spec.expirationSeconds",
            seconds,
            "may not specify a duration less than 10 minutes",
        )]));
    }
    if seconds > 1 << 32 {
        return Err(invalid(&[FieldError::invalid_plain(
            "spec.expirationSeconds",
            seconds,
            "may not specify a duration larger than 2^32 seconds",
        )]));
    }
    let sa = standin
        .get("v1/serviceaccounts", Some(namespace), name)
        .ok_or_else(|| {
            let rt = standin
                .resource_types()
                .into_iter()
                .find(|t| t.gvr() == "v1/serviceaccounts")
                .expect("ServiceAccounts are a built-in type");
            ApiError::not_found(&rt, name)
        })?;
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let token_audiences = if audiences.is_empty() {
        vec![ISSUER.to_string()]
    } else {
        audiences.clone()
    };
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::seconds(seconds);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({"alg": "RS256", "kid": "kube-standin"});
    let claims = json!({
        "aud": token_audiences,
        "exp": expires.timestamp(),
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "iss": ISSUER,
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid},
        },
    });
    let token = format!(
        "{}.{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string()),
        b64.encode(uuid::Uuid::new_v4().as_bytes())
    );
    crate::faults::lock(&standin.inner.token_requests).push(TokenRequestRecord {
        at,
        namespace: namespace.to_string(),
        service_account: name.to_string(),
        audiences,
        expiration_seconds,
        token: token.clone(),
    });
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        // The request's own metadata, as the real handler copies the request.
        "metadata": answered_metadata(&request),
        "spec": {"audiences": token_audiences, "expirationSeconds": seconds},
        "status": {
            "token": token,
            "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    }))
}

/// The metadata of the answer: the request's, with the `creationTimestamp: null` Go
/// writes for a zero time.
fn answered_metadata(request: &Value) -> Value {
    let mut meta = request.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert("creationTimestamp".into(), Value::Null);
    } else {
        meta = json!({"creationTimestamp": null});
    }
    meta
}
