//! Failures of the token source, classified for status reasons and retry decisions.

use std::fmt;

pub use crate::policy::FailureKind;

/// Status reasons and labels of token-source failures; the class itself is the retry
/// policy's [`FailureKind`], so a retry plugin decides on exactly what the controller saw.
impl FailureKind {
    /// The status condition reason for this kind, e.g. `ECRThrottled`.
    pub fn reason(self) -> &'static str {
        match self {
            FailureKind::Throttled => "ECRThrottled",
            FailureKind::AccessDenied => "ECRAccessDenied",
            FailureKind::Network => "ECRUnreachable",
            FailureKind::ServerError => "ECRServerError",
            FailureKind::InvalidResponse => "ECRInvalidResponse",
            FailureKind::Other => "ECRRequestFailed",
        }
    }

    /// A short lowercase label for metrics and logs, e.g. `throttled`.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Throttled => "throttled",
            FailureKind::AccessDenied => "access_denied",
            FailureKind::Network => "network",
            FailureKind::ServerError => "server_error",
            FailureKind::InvalidResponse => "invalid_response",
            FailureKind::Other => "other",
        }
    }
}

impl fmt::Display for FailureKind {
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
    pub kind: FailureKind,
    /// Registry ID (account) asked for.
    pub registry_id: String,
    /// Region asked in.
    pub region: String,
    /// What went wrong, from the SDK's error chain.
    pub message: String,
}
