//! Tokens for ECR Public (`public.ecr.aws`) from the `ecr-public` API
//! ([GetAuthorizationToken](https://docs.aws.amazon.com/AmazonECRPublic/latest/APIReference/API_GetAuthorizationToken.html)),
//! which exists only in `us-east-1`
//! ([endpoints](https://docs.aws.amazon.com/general/latest/gr/ecr-public.html)).
//!
//! The endpoint is the SDK's own (`api.ecr-public.us-east-1.amazonaws.com`), or the
//! override `AWS_ENDPOINT_URL_ECR_PUBLIC` / `AWS_ENDPOINT_URL`. ECR Public has no FIPS
//! endpoint, so FIPS is never asked for here (even with `AWS_USE_FIPS_ENDPOINT=true`).

use aws_config::{Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_ecrpublic::config::IdentityCache;
use tracing::Instrument as _;

use super::sdk_error::Failure;
use super::{AuthorizationToken, token};

/// The only region serving the `ecr-public` API.
pub const ECR_PUBLIC_REGION: &str = "us-east-1";

/// The ECR Public client configuration: the shared configuration (credentials, retries,
/// timeouts, endpoint override) in [`ECR_PUBLIC_REGION`], without FIPS.
pub(super) fn client_config(sdk_config: &SdkConfig) -> aws_sdk_ecrpublic::Config {
    aws_sdk_ecrpublic::config::Builder::from(sdk_config)
        .region(Region::from_static(ECR_PUBLIC_REGION))
        .use_fips(false)
        .build()
}

/// `GetAuthorizationToken` of ECR Public, signed with `credentials` when given (an
/// assumed role's) or else the client's own, in an `ecr_public.get_authorization_token`
/// span (`outcome`).
///
/// # Errors
/// A [`Failure`] classified like ECR's;
/// [`FailureKind::InvalidResponse`](super::FailureKind::InvalidResponse) for an answer
/// without a usable token or expiry.
pub(super) async fn authorization_token(
    client: &aws_sdk_ecrpublic::Client,
    credentials: Option<&Credentials>,
) -> Result<AuthorizationToken, Failure> {
    let span = tracing::info_span!(
        "ecr_public.get_authorization_token",
        region = ECR_PUBLIC_REGION,
        outcome = tracing::field::Empty
    );
    let call = client.get_authorization_token();
    let result = match credentials {
        Some(credentials) => {
            call.customize()
                .config_override(
                    aws_sdk_ecrpublic::config::Builder::default()
                        .credentials_provider(credentials.clone())
                        .identity_cache(IdentityCache::no_cache()),
                )
                .send()
                .instrument(span.clone())
                .await
        }
        None => call.send().instrument(span.clone()).await,
    };
    let outcome = match result {
        Ok(output) => {
            let data = output.authorization_data();
            token::from_answer(
                data.and_then(|d| d.authorization_token()),
                data.and_then(|d| d.expires_at()),
                None,
            )
        }
        Err(err) => Err(Failure::from_sdk(&err)),
    };
    span.record(
        "outcome",
        match &outcome {
            Ok(_) => "success",
            Err(f) => f.kind.label(),
        },
    );
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_config::BehaviorVersion;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_sdk_ecrpublic::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_ecrpublic::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_smithy_runtime_api::box_error::BoxError;

    use super::*;
    use crate::ecr::FailureKind;

    /// Records the URI and `Authorization` of the request about to be sent, then stops it.
    #[derive(Debug, Clone, Default)]
    struct Capture(Arc<Mutex<Option<(String, String)>>>);

    impl Intercept for Capture {
        fn name(&self) -> &'static str {
            "Capture"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let request = context.request();
            let authorization = request.headers().get("authorization").unwrap_or_default();
            *self.0.lock().unwrap() = Some((request.uri().to_string(), authorization.to_string()));
            Err("captured; not sent".into())
        }
    }

    /// What a client built by [`client_config`] of `shared` sends: URI and
    /// `Authorization`.
    async fn sent_by(shared: &SdkConfig) -> (String, String) {
        let capture = Capture::default();
        let client = aws_sdk_ecrpublic::Client::from_conf(client_config(shared));
        let result = client
            .get_authorization_token()
            .customize()
            .interceptor(capture.clone())
            .send()
            .await;
        assert!(result.is_err(), "the interceptor stops the request");
        let sent = capture.0.lock().unwrap().clone();
        sent.expect("the request reached the transmit stage")
    }

    fn shared(endpoint_url: Option<&str>) -> SdkConfig {
        let mut builder = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .use_fips(true)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST", "secret", None, None, "tests",
            )));
        builder.set_endpoint_url(endpoint_url.map(str::to_string));
        builder.build()
    }

    /// us-east-1 and no FIPS whatever the shared configuration says; signed for
    /// `ecr-public` in us-east-1.
    #[tokio::test]
    async fn the_endpoint_is_us_east_1_without_fips() {
        let (uri, authorization) = sent_by(&shared(None)).await;
        assert_eq!(
            uri.trim_end_matches('/'),
            "https://api.ecr-public.us-east-1.amazonaws.com"
        );
        assert!(
            authorization.contains("/us-east-1/ecr-public/aws4_request"),
            "{authorization}"
        );
    }

    #[tokio::test]
    async fn an_endpoint_override_wins() {
        let (uri, _) = sent_by(&shared(Some("http://127.0.0.1:9"))).await;
        assert_eq!(uri.trim_end_matches('/'), "http://127.0.0.1:9");
    }

    #[test]
    fn no_answer_data_is_an_invalid_response() {
        let e = token::from_answer(None, None, None).unwrap_err();
        assert_eq!(e.kind, FailureKind::InvalidResponse);
    }
}
