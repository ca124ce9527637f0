//! [`TokenSource`] backed by aws-sdk-ecr.
//!
//! One SDK client per (region, FIPS) pair, at most [`MAX_CLIENTS`] of them, the least
//! recently used evicted first. Each client resolves its endpoint with the SDK's own
//! ECR endpoint rules ([`DefaultResolver`]); see [ECR endpoints and
//! quotas](https://docs.aws.amazon.com/general/latest/gr/ecr.html) for the hosts.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::config::endpoint::{DefaultResolver, EndpointFuture, Params, ResolveEndpoint};
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::operation::RequestId;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use jiff::Timestamp;

use super::{
    AuthorizationToken, EcrError, FailureKind, TokenRequest, TokenSource,
    decode_authorization_token,
};
use crate::api::registry::is_region;

/// How many SDK clients an [`AwsTokenSource`] keeps at most; the least recently used
/// one is dropped (and rebuilt on its next use) beyond that.
pub const MAX_CLIENTS: usize = 32;

/// Gets tokens with `GetAuthorizationToken`, one SDK client per (region, FIPS) pair,
/// sharing the credentials loaded once from the SDK's default chain.
///
/// Only syntactically valid region names (`us-east-1`, `us-gov-west-1`, `cn-north-1`)
/// get a client, and at most [`MAX_CLIENTS`] clients are kept, so that resource specs
/// cannot grow the process without bound.
pub struct AwsTokenSource {
    sdk_config: SdkConfig,
    clients: Mutex<Lru<ClientKey, aws_sdk_ecr::Client>>,
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
            clients: Mutex::new(Lru::new(MAX_CLIENTS)),
        }
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

    #[cfg(test)]
    fn client_keys(&self) -> Vec<ClientKey> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.keys().cloned().collect()
    }
}

/// What an SDK client is specific to: its region, and whether it talks to the FIPS
/// endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    /// An AWS region name, checked with [`is_region`].
    region: String,
    /// Use the FIPS endpoint (`ecr-fips.<region>.amazonaws.com`).
    fips: bool,
}

impl ClientKey {
    /// The key for a request: FIPS when the request asks for it or the shared
    /// configuration asks for it everywhere (`AWS_USE_FIPS_ENDPOINT=true`).
    ///
    /// # Errors
    /// A message naming the region when it is not an AWS region name such as
    /// `us-east-1`; no client is made for it.
    fn for_request(request: &TokenRequest, sdk_config: &SdkConfig) -> Result<Self, String> {
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

/// A map holding at most `capacity` entries; inserting beyond that drops the least
/// recently used one. Linear eviction, meant for a few dozen entries.
#[derive(Debug)]
struct Lru<K, V> {
    capacity: usize,
    /// Increases on every use; an entry's stamp is the tick of its last use.
    tick: u64,
    entries: HashMap<K, (V, u64)>,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` (at least one) entries.
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// The value for `key`, made with `make` when absent; marks it most recently used.
    fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &V {
        self.tick += 1;
        let tick = self.tick;
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let entry = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| (make(), tick));
        entry.1 = tick;
        &entry.0
    }

    #[cfg(test)]
    fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }
}

#[async_trait]
impl TokenSource for AwsTokenSource {
    #[tracing::instrument(
        name = "ecr.get_authorization_token",
        skip_all,
        fields(region = %request.region, registry_id = %request.registry_id, fips = request.fips, outcome)
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
        if request.identity != super::Identity::Operator
            || request.kind != super::RegistryKind::Private
        {
            // Never ask with the operator's own credentials for something else.
            tracing::Span::current().record("outcome", FailureKind::Other.label());
            return Err(fail(
                FailureKind::Other,
                format!(
                    "{} for {:?} registries is not supported by this token source",
                    request.identity, request.kind
                ),
            ));
        }
        let key = ClientKey::for_request(request, &self.sdk_config).map_err(|message| {
            tracing::Span::current().record("outcome", FailureKind::Other.label());
            fail(FailureKind::Other, message)
        })?;
        // `registryIds` is deprecated (a token works for every registry the principal may
        // read), but naming the registry keeps the call explicit about which account we
        // expect, and stand-ins use it to shape the answer.
        #[allow(deprecated)]
        let result = self
            .client(&key)
            .get_authorization_token()
            .registry_ids(&request.registry_id)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                let kind = classify(&err);
                tracing::Span::current().record("outcome", kind.label());
                return Err(fail(kind, describe(&err)));
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

/// What went wrong, for status conditions, events and logs: the error code and message
/// ECR sent (with the HTTP status and request ID), or else the chain of causes.
///
/// Built from `Display` and error metadata only: the SDK's `Debug` of a service error (which
/// `DisplayErrorContext` appends) holds the raw HTTP response, and the body of a 200 the
/// SDK could not parse carries the token.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
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
fn causes(err: &(dyn StdError + 'static)) -> String {
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
fn classify<E>(err: &SdkError<E, HttpResponse>) -> FailureKind
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

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        let mut made = 0;
        let mut get = |lru: &mut Lru<&str, u32>, k: &'static str| {
            *lru.get_or_insert_with(&k, || {
                made += 1;
                made
            })
        };
        assert_eq!(get(&mut lru, "a"), 1);
        assert_eq!(get(&mut lru, "b"), 2);
        assert_eq!(get(&mut lru, "a"), 1, "a is kept, not made again");
        assert_eq!(get(&mut lru, "c"), 3, "c evicts b, the least recently used");
        let mut keys: Vec<_> = lru.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(get(&mut lru, "b"), 4, "b was evicted and is made again");
        let mut keys: Vec<_> = lru.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, ["b", "c"]);
    }
}
