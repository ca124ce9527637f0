//! Short-lived ServiceAccount tokens for web identity
//! ([TokenRequest API](https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/):
//! `POST /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token`), the way the kubelet
//! projects them into IRSA pods: audience `sts.amazonaws.com`, ten minutes.
//!
//! The operator needs `create` on `serviceaccounts/token` (config/rbac/role.yaml).

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use secrecy::SecretString;
use tracing::Instrument as _;

use super::FailureKind;
use super::sdk_error::Failure;

/// The audience of the ServiceAccount tokens exchanged with STS (`spec.audiences`), as
/// IRSA's EKS Pod Identity Webhook projects them and IAM OIDC providers expect them.
pub const WEB_IDENTITY_AUDIENCE: &str = "sts.amazonaws.com";

/// How long a requested ServiceAccount token lives (`spec.expirationSeconds`), in
/// seconds: the API server's minimum (10 minutes). It only has to outlive one
/// `AssumeRoleWithWebIdentity` call; the role's credentials live on their own.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;

/// Requests a token of ServiceAccount `namespace/name` with audience
/// [`WEB_IDENTITY_AUDIENCE`], in a `k8s.write` span (`kind` `ServiceAccount/token`,
/// `namespace`, `name`, `verb` `create`, `outcome`: `success` or the HTTP status).
///
/// # Errors
/// A [`Failure`] whose message starts with `requesting a token of ServiceAccount
/// <namespace>/<name>`: [`FailureKind::Other`] when the ServiceAccount does not exist,
/// [`FailureKind::AccessDenied`] for 401/403 (RBAC), [`FailureKind::Throttled`] for 429,
/// [`FailureKind::ServerError`] for 5xx, [`FailureKind::Network`] when the API server
/// cannot be reached, [`FailureKind::InvalidResponse`] for an answer without a token.
/// Never the token.
pub(super) async fn token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<SecretString, Failure> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![WEB_IDENTITY_AUDIENCE.to_string()],
            expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let span = tracing::info_span!(
        "k8s.write",
        kind = "ServiceAccount/token",
        namespace,
        name,
        verb = "create",
        outcome = tracing::field::Empty
    );
    let result = api
        .create_token_request(name, &PostParams::default(), &request)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(_) => "success".to_string(),
        Err(kube::Error::Api(status)) => status.code.to_string(),
        Err(_) => "transport_error".to_string(),
    };
    span.record("outcome", outcome.as_str());
    let context = format!("requesting a token of ServiceAccount {namespace}/{name}");
    let answer = result.map_err(|e| failure(&e).context(&context))?;
    match answer.status.map(|s| s.token) {
        Some(token) if !token.is_empty() => Ok(SecretString::from(token)),
        _ => Err(Failure::new(
            FailureKind::InvalidResponse,
            "the API server answered without status.token",
        )
        .context(&context)),
    }
}

/// The class and words of a failed TokenRequest: the API's status and message, never a
/// body (a body the client could not decode may hold the token).
fn failure(error: &kube::Error) -> Failure {
    match error {
        kube::Error::Api(s) => {
            let kind = match s.code {
                401 | 403 => FailureKind::AccessDenied,
                429 => FailureKind::Throttled,
                500..=599 => FailureKind::ServerError,
                _ => FailureKind::Other,
            };
            Failure::new(kind, format!("{} ({} {})", s.message, s.code, s.reason))
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            Failure::new(FailureKind::Network, error.to_string())
        }
        kube::Error::SerdeError(_) => Failure::new(
            FailureKind::InvalidResponse,
            "the API server's answer could not be decoded",
        ),
        other => Failure::new(FailureKind::Other, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure(message, reason).with_code(code),
        ))
    }

    #[test]
    fn api_errors_are_classified_by_status() {
        for (code, reason, kind) in [
            (404, "NotFound", FailureKind::Other),
            (403, "Forbidden", FailureKind::AccessDenied),
            (401, "Unauthorized", FailureKind::AccessDenied),
            (429, "TooManyRequests", FailureKind::Throttled),
            (503, "ServiceUnavailable", FailureKind::ServerError),
            (422, "Invalid", FailureKind::Other),
        ] {
            let f = failure(&api_error(
                code,
                reason,
                "serviceaccounts \"builder\" not found",
            ));
            assert_eq!(f.kind, kind, "{code}");
            assert_eq!(
                f.message,
                format!("serviceaccounts \"builder\" not found ({code} {reason})")
            );
        }
    }

    #[test]
    fn an_undecodable_answer_is_not_quoted() {
        let serde = serde_json::from_str::<u32>("\"eyJhbGciOi.secret-jwt\"").unwrap_err();
        assert!(
            serde.to_string().contains("secret-jwt"),
            "serde quotes its input"
        );
        let f = failure(&kube::Error::SerdeError(serde));
        assert_eq!(f.kind, FailureKind::InvalidResponse);
        assert!(!f.message.contains("secret-jwt"), "{}", f.message);
    }
}
