//! Sorting AWS SDK errors (aws-sdk-ecr, aws-sdk-ecrpublic, aws-sdk-sts: one smithy
//! runtime) into a [`FailureKind`] and describing them without leaking a body.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::operation::RequestId;
use aws_smithy_runtime_api::http::Response as HttpResponse;

use super::FailureKind;

/// A failed step of getting a token (an STS call, a ServiceAccount token, an ECR call):
/// its class and a message naming what failed, never a credential or token. The token
/// source turns it into an [`EcrError`](super::EcrError) naming the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// The class of failure.
    pub kind: FailureKind,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` saying `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// An SDK error, classified by [`classify`] and described by [`describe`].
    pub fn from_sdk<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        Self::new(classify(err), describe(err))
    }

    /// The same failure with `context` (e.g. `assuming role <arn>`) in front of its message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        Self {
            message: format!("{context}: {}", self.message),
            ..self
        }
    }
}

/// What went wrong, for status conditions, events and logs: the error code and message
/// the service (ECR, ECR Public, STS) sent (with the HTTP status and request ID), or else the chain of causes.
///
/// Built from `Display` and error metadata only: the SDK's `Debug` of a service error (which
/// `DisplayErrorContext` appends) holds the raw HTTP response, and the body of a 200 the
/// SDK could not parse carries the token.
pub(super) fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let SdkError::ServiceError(s) = err else {
        return causes(err);
    };
    let mut what = match (s.err().code(), s.err().message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        (None, _) => causes(err),
    };
    what.push_str(&format!(" (HTTP {}", s.raw().status().as_u16()));
    if let Some(id) = err.request_id() {
        what.push_str(&format!(", request ID {id}"));
    }
    what.push(')');
    what
}

/// The `Display` of an error and of each of its sources, joined by `: `, repeats skipped.
pub(super) fn causes(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Sorts an SDK error into an [`FailureKind`], from the error code first and the HTTP
/// status second.
///
/// A 2xx answer whose body the SDK cannot parse reaches us as a `ServiceError` without
/// a code (aws-sdk-ecr wraps the parse failure as an unhandled operation error, not a
/// `ResponseError`): that is an [`FailureKind::InvalidResponse`].
pub(super) fn classify<E>(err: &SdkError<E, HttpResponse>) -> FailureKind
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match err {
        SdkError::ServiceError(s) if s.raw().status().is_success() => FailureKind::InvalidResponse,
        SdkError::TimeoutError(_) => FailureKind::Network,
        SdkError::DispatchFailure(d) => {
            if caused_by_credentials(err) {
                FailureKind::AccessDenied
            } else if d.is_io() || d.is_timeout() {
                FailureKind::Network
            } else {
                FailureKind::Other
            }
        }
        SdkError::ResponseError(_) => FailureKind::InvalidResponse,
        SdkError::ServiceError(s) => {
            let by_code = s.err().code().map(kind_from_code);
            let status = s.raw().status().as_u16();
            by_code.flatten().unwrap_or(match status {
                429 => FailureKind::Throttled,
                401 | 403 => FailureKind::AccessDenied,
                500..=599 => FailureKind::ServerError,
                _ => FailureKind::Other,
            })
        }
        _ if caused_by_credentials(err) => FailureKind::AccessDenied,
        _ => FailureKind::Other,
    }
}

fn kind_from_code(code: &str) -> Option<FailureKind> {
    Some(match code {
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => FailureKind::Throttled,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "MissingAuthenticationToken"
        | "IncompleteSignature"
        // STS (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html#API_AssumeRoleWithWebIdentity_Errors):
        // the role's trust policy or the identity provider refused the token, or STS is
        // not activated in the region.
        | "InvalidIdentityToken"
        | "IDPRejectedClaim"
        | "RegionDisabledException" => FailureKind::AccessDenied,
        // STS could not reach the identity provider (its OIDC discovery or keys): worth
        // retrying, like a server error.
        "IDPCommunicationError" => FailureKind::ServerError,
        "ServerException" | "InternalFailure" | "InternalServerError" | "ServiceUnavailable" => {
            FailureKind::ServerError
        }
        _ => return None,
    })
}

fn caused_by_credentials(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SDK service error with this status and body, as the SDK would build it.
    fn service_error(
        status: u16,
        body: &str,
        err: aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError,
    ) -> SdkError<
        aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError,
        HttpResponse,
    > {
        let status = status.try_into().expect("status code");
        let raw = HttpResponse::new(status, aws_smithy_types::body::SdkBody::from(body));
        SdkError::service_error(err, raw)
    }

    #[test]
    fn an_unparsable_200_is_an_invalid_response_and_its_body_stays_out_of_the_message() {
        use aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError;
        let token = "QVdTOnNlY3JldC1wYXNzd29yZA==";
        let body = format!(r#"{{"authorizationData": [{{"authorizationToken": "{token}", "exp"#);
        let err = service_error(
            200,
            &body,
            GetAuthorizationTokenError::unhandled("failed to parse JSON: unexpected end of stream"),
        );
        assert_eq!(classify(&err), FailureKind::InvalidResponse);
        let message = describe(&err);
        assert!(!message.contains(token), "{message}");
        assert!(message.contains("unexpected end of stream"), "{message}");
        assert!(message.contains("HTTP 200"), "{message}");
    }

    #[test]
    fn a_service_error_is_described_by_its_code_and_message() {
        use aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError;
        use aws_smithy_types::error::ErrorMetadata;
        let meta = ErrorMetadata::builder()
            .code("ThrottlingException")
            .message("Rate exceeded")
            .build();
        let err = service_error(
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            GetAuthorizationTokenError::generic(meta),
        );
        assert_eq!(classify(&err), FailureKind::Throttled);
        assert_eq!(
            describe(&err),
            "ThrottlingException: Rate exceeded (HTTP 400)"
        );
    }
}
