//! [`TokenSource`] backed by aws-sdk-ecr.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use jiff::Timestamp;

use super::{
    AuthorizationToken, EcrError, FailureKind, TokenRequest, TokenSource,
    decode_authorization_token,
};

/// Gets tokens with `GetAuthorizationToken`, one SDK client per region, sharing the
/// credentials loaded once from the SDK's default chain.
pub struct AwsTokenSource {
    sdk_config: SdkConfig,
    clients: Mutex<HashMap<String, aws_sdk_ecr::Client>>,
}

impl AwsTokenSource {
    /// Loads the shared AWS configuration from the environment: credentials chain, and
    /// the endpoint override in `AWS_ENDPOINT_URL_ECR` / `AWS_ENDPOINT_URL`. Each call
    /// gets a 5 s attempt timeout and a 20 s overall timeout, on top of the SDK's
    /// standard retries.
    pub async fn from_env() -> Self {
        let timeouts = TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(20))
            .build();
        let sdk_config = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        Self::new(sdk_config)
    }

    /// Uses an already loaded SDK configuration (tests point it at a stand-in).
    pub fn new(sdk_config: SdkConfig) -> Self {
        Self {
            sdk_config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, region: &str) -> aws_sdk_ecr::Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let conf = aws_sdk_ecr::config::Builder::from(&self.sdk_config)
                    .region(Region::new(region.to_string()))
                    .build();
                aws_sdk_ecr::Client::from_conf(conf)
            })
            .clone()
    }
}

#[async_trait]
impl TokenSource for AwsTokenSource {
    #[tracing::instrument(
        name = "ecr.get_authorization_token",
        skip_all,
        fields(region = %request.region, registry_id = %request.registry_id, outcome)
    )]
    async fn authorization_token(
        &self,
        request: &TokenRequest,
    ) -> Result<AuthorizationToken, EcrError> {
        let fail = |kind, message: String| EcrError {
            kind,
            registry_id: request.registry_id.clone(),
            region: request.region.clone(),
            message,
        };
        // `registryIds` is deprecated (a token works for every registry the principal may
        // read), but naming the registry keeps the call explicit about which account we
        // expect, and stand-ins use it to shape the answer.
        #[allow(deprecated)]
        let result = self
            .client(&request.region)
            .get_authorization_token()
            .registry_ids(&request.registry_id)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                let kind = classify(&err);
                tracing::Span::current().record("outcome", kind.label());
                return Err(fail(kind, DisplayErrorContext(&err).to_string()));
            }
        };
        let invalid = |message: &str| {
            tracing::Span::current().record("outcome", FailureKind::InvalidResponse.label());
            fail(FailureKind::InvalidResponse, message.to_string())
        };
        let data = output
            .authorization_data()
            .first()
            .ok_or_else(|| invalid("the response has no authorizationData"))?;
        let encoded = data
            .authorization_token()
            .ok_or_else(|| invalid("the response has no authorizationToken"))?;
        let (username, password) = decode_authorization_token(encoded).map_err(|m| invalid(&m))?;
        let expires = data
            .expires_at()
            .ok_or_else(|| invalid("the response has no expiresAt"))?;
        let expires_at = Timestamp::new(expires.secs(), expires.subsec_nanos() as i32)
            .map_err(|_| invalid("expiresAt is out of range"))?;
        tracing::Span::current().record("outcome", "success");
        Ok(AuthorizationToken {
            username,
            password,
            expires_at,
            proxy_endpoint: data.proxy_endpoint().map(str::to_string),
        })
    }
}

/// Sorts an SDK error into an [`FailureKind`], from the error code first and the HTTP
/// status second.
fn classify<E>(err: &SdkError<E, HttpResponse>) -> FailureKind
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match err {
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
        | "IncompleteSignature" => FailureKind::AccessDenied,
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
