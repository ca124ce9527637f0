//! [`TokenSource`] backed by the AWS SDK: aws-sdk-ecr for private registries,
//! aws-sdk-ecrpublic for ECR Public, aws-sdk-sts for the identities of
//! [`Identity::Role`] and [`Identity::WebIdentity`], and the Kubernetes TokenRequest API
//! for the ServiceAccount tokens of the latter.
//!
//! One ECR client per (region, FIPS) pair, at most [`MAX_CLIENTS`] of them, the least
//! recently used evicted first (the same for STS clients). Each client resolves its
//! endpoint with the SDK's own ECR endpoint rules ([`DefaultResolver`]); see [ECR endpoints
//! and quotas](https://docs.aws.amazon.com/general/latest/gr/ecr.html) for the hosts. A
//! call as an assumed role uses the client of its region with the role's temporary
//! credentials for that one call.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_ecr::config::IdentityCache;
use aws_sdk_ecr::config::endpoint::{DefaultResolver, EndpointFuture, Params, ResolveEndpoint};
use tracing::Instrument as _;

use super::lru::Lru;
use super::sdk_error::Failure;
use super::sts::{AssumedRole, DEFAULT_SESSION_NAME, StsClients};
use super::{
    AuthorizationToken, EcrError, FailureKind, Identity, RegistryKind, TokenRequest, TokenSource,
    public, service_account, token,
};
use crate::api::registry::is_region;
use crate::metrics::Metrics;

/// How many SDK clients an [`AwsTokenSource`] keeps at most per service (ECR, STS); the
/// least recently used one is dropped (and rebuilt on its next use) beyond that.
pub const MAX_CLIENTS: usize = 32;

/// Gets tokens with `GetAuthorizationToken` (ECR, or ECR Public for
/// [`RegistryKind::Public`]) as the request's [`Identity`]:
/// - [`Identity::Operator`]: the credentials loaded from the SDK's default chain;
/// - [`Identity::Role`]: STS `AssumeRole` with those credentials (`ExternalId` when set,
///   `RoleSessionName` default [`DEFAULT_SESSION_NAME`]), then ECR with the role's
///   temporary credentials;
/// - [`Identity::WebIdentity`]: a token of the ServiceAccount from the Kubernetes
///   TokenRequest API (needs [`with_kube_client`](Self::with_kube_client)), exchanged with
///   STS `AssumeRoleWithWebIdentity`, then ECR as the role.
///
/// STS is asked in the token request's region (`us-east-1` for ECR Public). The token's
/// `expires_at` is the earlier of ECR's `expiresAt` and the role credentials' expiry.
///
/// Only syntactically valid region names (`us-east-1`, `us-gov-west-1`, `cn-north-1`)
/// get a client, and at most [`MAX_CLIENTS`] clients are kept per service, so that
/// resource specs cannot grow the process without bound.
pub struct AwsTokenSource {
    sdk_config: SdkConfig,
    clients: Mutex<Lru<ClientKey, aws_sdk_ecr::Client>>,
    public: OnceLock<aws_sdk_ecrpublic::Client>,
    sts: StsClients,
    kube: Option<kube::Client>,
    metrics: Option<Arc<Metrics>>,
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
            sts: StsClients::new(sdk_config.clone()),
            sdk_config,
            clients: Mutex::new(Lru::new(MAX_CLIENTS)),
            public: OnceLock::new(),
            kube: None,
            metrics: None,
        }
    }

    /// Requests ServiceAccount tokens for [`Identity::WebIdentity`] through `client` (the
    /// operator needs `create` on `serviceaccounts/token`). Without it, web identity
    /// requests fail with [`FailureKind::Other`].
    #[must_use]
    pub fn with_kube_client(mut self, client: kube::Client) -> Self {
        self.kube = Some(client);
        self
    }

    /// Counts STS calls in `metrics` (`ecr_token_refresh_sts_calls_total`, by operation
    /// and outcome).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The client for `key`, built on first use (or again after eviction).
    fn client(&self, key: &ClientKey) -> aws_sdk_ecr::Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .get_or_insert_with(key, || {
                aws_sdk_ecr::Client::from_conf(client_config(&self.sdk_config, key))
            })
            .clone()
    }

    /// The ECR Public client, built on first use.
    fn public_client(&self) -> &aws_sdk_ecrpublic::Client {
        self.public.get_or_init(|| {
            aws_sdk_ecrpublic::Client::from_conf(public::client_config(&self.sdk_config))
        })
    }

    #[cfg(test)]
    fn client_keys(&self) -> Vec<ClientKey> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.keys().cloned().collect()
    }
}

/// What an SDK client is specific to: its region, and whether it talks to the FIPS
/// endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ClientKey {
    /// An AWS region name, checked with [`is_region`].
    pub region: String,
    /// Use the FIPS endpoint (`ecr-fips.<region>.amazonaws.com`).
    pub fips: bool,
}

impl ClientKey {
    /// The key for a request: FIPS when the request asks for it or the shared
    /// configuration asks for it everywhere (`AWS_USE_FIPS_ENDPOINT=true`).
    ///
    /// # Errors
    /// A message naming the region when it is not an AWS region name such as
    /// `us-east-1`; no client is made for it.
    fn for_request(request: &TokenRequest, sdk_config: &SdkConfig) -> Result<Self, String> {
        if request.kind == RegistryKind::Public {
            // The ecr-public API, and STS for it, in its only region; no FIPS endpoint.
            return Ok(Self {
                region: public::ECR_PUBLIC_REGION.to_string(),
                fips: false,
            });
        }
        if !is_region(&request.region) {
            return Err(format!(
                "{:?} is not an AWS region name such as us-east-1; ECR was not called",
                request.region
            ));
        }
        Ok(Self {
            region: request.region.clone(),
            fips: request.fips || sdk_config.use_fips() == Some(true),
        })
    }
}

/// The ECR client configuration for one key: the shared configuration (credentials,
/// retries, timeouts, endpoint override) with the key's region and FIPS setting, and an
/// endpoint resolver that asks the SDK's ECR rules for [`endpoint_params`] of the key.
fn client_config(sdk_config: &SdkConfig, key: &ClientKey) -> aws_sdk_ecr::Config {
    aws_sdk_ecr::config::Builder::from(sdk_config)
        .region(Region::new(key.region.clone()))
        .use_fips(key.fips)
        .endpoint_resolver(KeyResolver {
            key: key.clone(),
            rules: DefaultResolver::new(),
        })
        .build()
}

/// The parameters the SDK's ECR endpoint rules get for `key`.
///
/// `endpoint_override` is the configured endpoint URL (`AWS_ENDPOINT_URL_ECR`,
/// `AWS_ENDPOINT_URL`, `endpoint_url` in the profile or set in code), if any. It wins over
/// FIPS: the ECR rules refuse the pair ("Invalid Configuration: FIPS and custom endpoint
/// are not supported"), while an override means "send it there", so FIPS is left out.
/// `dual_stack` passes through (`AWS_USE_DUALSTACK_ENDPOINT`).
///
/// # Errors
/// [`aws_sdk_ecr::config::endpoint::InvalidParams`] when the region is not a valid host
/// label (never for a region that passed [`is_region`]).
fn endpoint_params(
    key: &ClientKey,
    endpoint_override: Option<&str>,
    dual_stack: bool,
) -> Result<Params, aws_sdk_ecr::config::endpoint::InvalidParams> {
    Params::builder()
        .region(key.region.clone())
        .use_fips(key.fips && endpoint_override.is_none())
        .use_dual_stack(dual_stack)
        .set_endpoint(endpoint_override.map(str::to_string))
        .build()
}

/// Resolves the endpoint of one client with the SDK's ECR rules, from
/// [`endpoint_params`] of its key and the endpoint override the SDK found.
#[derive(Debug)]
struct KeyResolver {
    key: ClientKey,
    rules: DefaultResolver,
}

impl ResolveEndpoint for KeyResolver {
    fn resolve_endpoint<'a>(&'a self, params: &'a Params) -> EndpointFuture<'a> {
        match endpoint_params(
            &self.key,
            params.endpoint(),
            params.use_dual_stack().unwrap_or(false),
        ) {
            Ok(own) => EndpointFuture::new(async move { self.rules.resolve_endpoint(&own).await }),
            Err(e) => EndpointFuture::ready(Err(e.into())),
        }
    }
}

#[async_trait]
impl TokenSource for AwsTokenSource {
    /// Spans, as children of the caller's: `sts.assume_role` or
    /// `sts.assume_role_with_web_identity` (and a `k8s.write` of the ServiceAccount token)
    /// when the identity asks for them, then `ecr.get_authorization_token` or
    /// `ecr_public.get_authorization_token`.
    async fn authorization_token(
        &self,
        request: &TokenRequest,
    ) -> Result<AuthorizationToken, EcrError> {
        let fail = |f: Failure| EcrError {
            kind: f.kind,
            registry_id: request.registry_id.clone(),
            region: request.region.clone(),
            message: f.message,
        };
        let key = match ClientKey::for_request(request, &self.sdk_config) {
            Ok(key) => key,
            Err(message) => {
                // No AWS call: the ECR span says why.
                let span = ecr_span(request);
                span.record("outcome", FailureKind::Other.label());
                return Err(fail(Failure::new(FailureKind::Other, message)));
            }
        };
        let role = self.assume(&key, &request.identity).await.map_err(fail)?;
        let credentials = role.as_ref().map(|r| &r.credentials);
        let obtained = match request.kind {
            RegistryKind::Private => self.private_token(&key, request, credentials).await,
            RegistryKind::Public => {
                public::authorization_token(self.public_client(), credentials).await
            }
        };
        let mut token = obtained.map_err(|f| match &request.identity {
            Identity::Operator => fail(f),
            identity => fail(f.context(format!("as {identity}"))),
        })?;
        if let Some(role) = &role {
            // Never longer than the credentials it was asked with.
            token.expires_at = token.expires_at.min(role.expires_at);
        }
        Ok(token)
    }
}

impl AwsTokenSource {
    /// The temporary credentials of the request's identity; `None` for the operator's own.
    async fn assume(
        &self,
        key: &ClientKey,
        identity: &Identity,
    ) -> Result<Option<AssumedRole>, Failure> {
        let (operation, result) = match identity {
            Identity::Operator => return Ok(None),
            Identity::Role {
                arn,
                external_id,
                session_name,
            } => {
                let session_name = session_name.as_deref().unwrap_or(DEFAULT_SESSION_NAME);
                let result = self
                    .sts
                    .assume_role(key, arn, external_id.as_deref(), session_name)
                    .await;
                ("AssumeRole", result)
            }
            Identity::WebIdentity {
                namespace,
                service_account,
                role_arn,
                session_name,
            } => {
                let Some(kube) = &self.kube else {
                    return Err(Failure::new(
                        FailureKind::Other,
                        format!(
                            "{identity}: this token source has no Kubernetes client to request \
                             ServiceAccount tokens with"
                        ),
                    ));
                };
                let jwt = service_account::token(kube, namespace, service_account).await?;
                let token_of = format!("ServiceAccount {namespace}/{service_account}");
                let result = self
                    .sts
                    .assume_role_with_web_identity(
                        key,
                        role_arn,
                        session_name.as_deref().unwrap_or(DEFAULT_SESSION_NAME),
                        &jwt,
                        &token_of,
                    )
                    .await;
                ("AssumeRoleWithWebIdentity", result)
            }
        };
        if let Some(metrics) = &self.metrics {
            let outcome = match &result {
                Ok(_) => "success",
                Err(f) => f.kind.label(),
            };
            metrics.sts_call(operation, outcome);
        }
        result.map(Some)
    }

    /// `GetAuthorizationToken` of a private registry's region, signed with `credentials`
    /// when given, in an `ecr.get_authorization_token` span.
    async fn private_token(
        &self,
        key: &ClientKey,
        request: &TokenRequest,
        credentials: Option<&Credentials>,
    ) -> Result<AuthorizationToken, Failure> {
        let span = ecr_span(request);
        // `registryIds` is deprecated (a token works for every registry the principal may
        // read), but naming the registry keeps the call explicit about which account we
        // expect, and stand-ins use it to shape the answer.
        #[allow(deprecated)]
        let call = self
            .client(key)
            .get_authorization_token()
            .registry_ids(&request.registry_id);
        let result = match credentials {
            Some(credentials) => {
                call.customize()
                    .config_override(
                        aws_sdk_ecr::config::Builder::default()
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
            Ok(output) => match output.authorization_data().first() {
                Some(data) => token::from_answer(
                    data.authorization_token(),
                    data.expires_at(),
                    data.proxy_endpoint(),
                ),
                None => Err(Failure::new(
                    FailureKind::InvalidResponse,
                    "the response has no authorizationData",
                )),
            },
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
}

/// The span of a private registry's `GetAuthorizationToken` call (`region`,
/// `registry_id`, `fips`, `outcome`).
fn ecr_span(request: &TokenRequest) -> tracing::Span {
    tracing::info_span!(
        "ecr.get_authorization_token",
        region = %request.region,
        registry_id = %request.registry_id,
        fips = request.fips,
        outcome = tracing::field::Empty
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_sdk_ecr::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_ecr::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_smithy_runtime_api::box_error::BoxError;

    use super::*;

    fn key(region: &str, fips: bool) -> ClientKey {
        ClientKey {
            region: region.to_string(),
            fips,
        }
    }

    /// The URL the SDK's own ECR endpoint rules give for `key`.
    async fn endpoint_of(key: &ClientKey, endpoint_override: Option<&str>) -> String {
        let params = endpoint_params(key, endpoint_override, false).expect("valid params");
        DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .expect("the ECR rules give an endpoint")
            .url()
            .to_string()
    }

    /// aws-sdk-ecr 1.138's rules (and its generated rule tests) give
    /// `api.ecr-fips.<region>.<suffix>` for FIPS without dual-stack, in every partition;
    /// the AWS General Reference lists `ecr-fips.<region>.amazonaws.com`. These tests pin
    /// what the SDK does, so an SDK update that changes the host shows up here.
    #[tokio::test]
    async fn fips_endpoints_in_each_partition() {
        for (region, fips, url) in [
            (
                "us-east-1",
                false,
                "https://api.ecr.us-east-1.amazonaws.com",
            ),
            (
                "us-east-1",
                true,
                "https://api.ecr-fips.us-east-1.amazonaws.com",
            ),
            (
                "us-west-2",
                true,
                "https://api.ecr-fips.us-west-2.amazonaws.com",
            ),
            (
                "us-gov-west-1",
                true,
                "https://api.ecr-fips.us-gov-west-1.amazonaws.com",
            ),
            (
                "us-gov-west-1",
                false,
                "https://api.ecr.us-gov-west-1.amazonaws.com",
            ),
            (
                "cn-north-1",
                false,
                "https://api.ecr.cn-north-1.amazonaws.com.cn",
            ),
        ] {
            assert_eq!(
                endpoint_of(&key(region, fips), None).await,
                url,
                "{region} fips={fips}"
            );
        }
    }

    #[tokio::test]
    async fn an_endpoint_override_wins_over_fips() {
        // The SDK's rules alone refuse FIPS with a custom endpoint ...
        let raw = Params::builder()
            .region("us-east-1")
            .use_fips(true)
            .endpoint("http://127.0.0.1:5000")
            .build()
            .expect("valid params");
        let refused = DefaultResolver::new().resolve_endpoint(&raw).await;
        assert!(
            refused
                .expect_err("FIPS with a custom endpoint is refused")
                .to_string()
                .contains("FIPS and custom endpoint are not supported")
        );
        // ... so the key's parameters leave FIPS out when an override is configured.
        assert_eq!(
            endpoint_of(&key("us-east-1", true), Some("http://127.0.0.1:5000")).await,
            "http://127.0.0.1:5000"
        );
    }

    /// Records the URI of the request the client is about to send, then stops it.
    #[derive(Debug, Clone, Default)]
    struct CaptureUri(Arc<Mutex<Option<String>>>);

    impl Intercept for CaptureUri {
        fn name(&self) -> &'static str {
            "CaptureUri"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            *self.0.lock().unwrap() = Some(context.request().uri().to_string());
            Err("captured; not sent".into())
        }
    }

    fn test_sdk_config(endpoint_url: Option<&str>) -> SdkConfig {
        let mut builder = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST", "secret", None, None, "tests",
            )));
        builder.set_endpoint_url(endpoint_url.map(str::to_string));
        builder.build()
    }

    /// The URI a client built by [`client_config`] sends `GetAuthorizationToken` to.
    async fn uri_sent_by(sdk_config: &SdkConfig, key: &ClientKey) -> String {
        let capture = CaptureUri::default();
        let client = aws_sdk_ecr::Client::from_conf(client_config(sdk_config, key));
        let result = client
            .get_authorization_token()
            .customize()
            .interceptor(capture.clone())
            .send()
            .await;
        assert!(result.is_err(), "the interceptor stops the request");
        let uri = capture.0.lock().unwrap().clone();
        uri.expect("the request reached the transmit stage")
    }

    #[tokio::test]
    async fn clients_send_to_the_endpoint_of_their_key() {
        let shared = test_sdk_config(None);
        for k in [
            key("us-east-1", true),
            key("us-gov-west-1", true),
            key("cn-north-1", false),
            key("ap-southeast-2", false),
        ] {
            let expected = endpoint_of(&k, None).await;
            let sent = uri_sent_by(&shared, &k).await;
            assert_eq!(sent.trim_end_matches('/'), expected, "{k:?}");
        }
    }

    #[tokio::test]
    async fn clients_send_to_the_endpoint_override_even_for_fips() {
        let shared = test_sdk_config(Some("http://127.0.0.1:9"));
        let sent = uri_sent_by(&shared, &key("us-east-1", true)).await;
        assert_eq!(sent.trim_end_matches('/'), "http://127.0.0.1:9");
    }

    #[test]
    fn fips_everywhere_from_the_shared_configuration() {
        let request = TokenRequest {
            region: "us-east-1".into(),
            registry_id: "123456789012".into(),
            fips: false,
            identity: Default::default(),
            kind: Default::default(),
        };
        let plain = test_sdk_config(None);
        assert_eq!(
            ClientKey::for_request(&request, &plain),
            Ok(key("us-east-1", false))
        );
        let fips_everywhere = plain.to_builder().use_fips(true).build();
        assert_eq!(
            ClientKey::for_request(&request, &fips_everywhere),
            Ok(key("us-east-1", true))
        );
    }

    #[tokio::test]
    async fn a_region_that_is_not_a_region_gets_no_client_and_no_call() {
        // An endpoint nobody listens on: a call would fail as Network, not Other.
        let source = AwsTokenSource::new(test_sdk_config(Some("http://127.0.0.1:9")));
        for region in [
            "",
            "us-east",
            "US-EAST-1",
            "us-east-1.evil.example",
            "x/y-z-1",
        ] {
            let err = source
                .authorization_token(&TokenRequest {
                    region: region.into(),
                    registry_id: "123456789012".into(),
                    fips: false,
                    identity: Default::default(),
                    kind: Default::default(),
                })
                .await
                .expect_err("no token for a bad region");
            assert_eq!(err.kind, FailureKind::Other, "{region:?}");
            assert!(
                err.message.contains(&format!("{region:?}")),
                "{region:?}: {}",
                err.message
            );
        }
        assert!(source.client_keys().is_empty());
    }

    #[test]
    fn at_most_max_clients_least_recently_used_evicted() {
        let source = AwsTokenSource::new(test_sdk_config(None));
        let regions: Vec<String> = (1..=MAX_CLIENTS + 8)
            .map(|n| format!("us-east-{n}"))
            .collect();
        for region in &regions {
            source.client(&key(region, false));
            // us-east-1 stays in use all along.
            source.client(&key("us-east-1", false));
        }
        let keys = source.client_keys();
        assert_eq!(keys.len(), MAX_CLIENTS);
        assert!(keys.contains(&key("us-east-1", false)));
        // The newest ones are kept, the oldest others gone.
        assert!(keys.contains(&key(&format!("us-east-{}", MAX_CLIENTS + 8), false)));
        assert!(!keys.contains(&key("us-east-2", false)));
        // FIPS and non-FIPS are different clients.
        source.client(&key("us-east-1", true));
        let keys = source.client_keys();
        assert!(keys.contains(&key("us-east-1", true)) && keys.contains(&key("us-east-1", false)));
    }
}
