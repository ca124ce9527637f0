//! Failures of the token source, classified for status reasons and retry decisions.

use std::fmt;

/// Broad class of a token-source failure. It picks the status condition reason and is
/// what a retry policy decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// ECR throttled the call (`ThrottlingException`, HTTP 429).
    Throttled,
    /// Credentials are missing, invalid, expired or not allowed `ecr:GetAuthorizationToken`.
    AccessDenied,
    /// The call did not get an answer: connection refused, DNS, TLS, timeout.
    Network,
    /// ECR answered with a server error (HTTP 5xx, `ServerException`).
    ServerError,
    /// ECR answered but the answer could not be used (bad base64, missing fields).
    InvalidResponse,
    /// Anything else (bad request, SDK misconfiguration).
    Other,
}

impl ErrorKind {
    /// The status condition reason for this kind, e.g. `ECRThrottled`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "ECRThrottled",
            ErrorKind::AccessDenied => "ECRAccessDenied",
            ErrorKind::Network => "ECRUnreachable",
            ErrorKind::ServerError => "ECRServerError",
            ErrorKind::InvalidResponse => "ECRInvalidResponse",
            ErrorKind::Other => "ECRRequestFailed",
        }
    }

    /// A short lowercase label for metrics and logs, e.g. `throttled`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::Network => "network",
            ErrorKind::ServerError => "server_error",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A token-source failure. The message says which registry and region, and why; it never
/// contains a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get an ECR authorization token for registry {registry_id} in {region}: {message}")]
pub struct EcrError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// Registry ID (account) asked for.
    pub registry_id: String,
    /// Region asked in.
    pub region: String,
    /// What went wrong, from the SDK's error chain.
    pub message: String,
}
