//! Temporary credentials of a role from AWS STS, for [`Identity::Role`](super::Identity::Role)
//! ([AssumeRole](https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html),
//! signed with the operator's own credentials) and
//! [`Identity::WebIdentity`](super::Identity::WebIdentity)
//! ([AssumeRoleWithWebIdentity](https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html),
//! unsigned: the ServiceAccount token is the proof).
//!
//! One STS client per (region, FIPS) pair, at most [`MAX_CLIENTS`](super::aws::MAX_CLIENTS),
//! each asking the regional endpoint of the token request's region
//! (`sts.<region>.amazonaws.com`, the SDK's own STS endpoint rules); the endpoint override
//! `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL` wins over the rules and over FIPS, like for
//! ECR. Credentials are not cached here: the token cache asks once per (identity, region)
//! and cycle, and fresh credentials give each token their whole lifetime.

use std::sync::Mutex;
use std::time::SystemTime;

use aws_config::{Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_sts::config::endpoint::{DefaultResolver, EndpointFuture, Params, ResolveEndpoint};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use tracing::Instrument as _;

use super::FailureKind;
use super::aws::{ClientKey, MAX_CLIENTS};
use super::lru::Lru;
use super::sdk_error::Failure;

/// The session name of an assumed role when none is given (`RoleSessionName`, shown in
/// CloudTrail as the assumed role's session).
pub const DEFAULT_SESSION_NAME: &str = "ecr-token-refresh";

/// The `Source` of the credentials built from an STS answer (shown by `Credentials`'
/// `Debug`, never the secret parts).
const PROVIDER_NAME: &str = "ecr-token-refresh-sts";

/// Temporary credentials of an assumed role and when they expire.
///
/// `Debug` shows the access key ID and expiry only (aws-credential-types redacts the
/// secret key and session token).
#[derive(Debug, Clone)]
pub(super) struct AssumedRole {
    /// The credentials to sign ECR calls with.
    pub credentials: Credentials,
    /// When they stop working (`Credentials.Expiration` of the STS answer).
    pub expires_at: Timestamp,
}

/// STS clients of one token source, bounded like its ECR clients.
pub(super) struct StsClients {
    sdk_config: SdkConfig,
    clients: Mutex<Lru<ClientKey, aws_sdk_sts::Client>>,
}

impl StsClients {
    /// Clients built from `sdk_config` (credentials, retries, timeouts, endpoint override).
    pub fn new(sdk_config: SdkConfig) -> Self {
        Self {
            sdk_config,
            clients: Mutex::new(Lru::new(MAX_CLIENTS)),
        }
    }

    /// The client for `key`, built on first use (or again after eviction).
    fn client(&self, key: &ClientKey) -> aws_sdk_sts::Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .get_or_insert_with(key, || {
                aws_sdk_sts::Client::from_conf(sts_config(&self.sdk_config, key))
            })
            .clone()
    }

    /// `AssumeRole` of `role_arn` with the operator's own credentials, in a
    /// `sts.assume_role` span (`role_arn`, `region`, `outcome`).
    ///
    /// # Errors
    /// A [`Failure`] classified like ECR's, its message starting with
    /// `assuming role <arn>`.
    pub async fn assume_role(
        &self,
        key: &ClientKey,
        role_arn: &str,
        external_id: Option<&str>,
        session_name: &str,
    ) -> Result<AssumedRole, Failure> {
        let span = tracing::info_span!(
            "sts.assume_role",
            role_arn,
            region = %key.region,
            outcome = tracing::field::Empty
        );
        let result = self
            .client(key)
            .assume_role()
            .role_arn(role_arn)
            .set_external_id(external_id.map(str::to_string))
            .role_session_name(session_name)
            .send()
            .instrument(span.clone())
            .await;
        let outcome = match result {
            Ok(output) => assumed(output.credentials()),
            Err(err) => Err(Failure::from_sdk(&err)),
        }
        .map_err(|f| f.context(format!("assuming role {role_arn}")));
        record(&span, &outcome);
        outcome
    }

    /// `AssumeRoleWithWebIdentity` of `role_arn` with `web_identity_token` (a
    /// ServiceAccount token), unsigned, in a `sts.assume_role_with_web_identity` span
    /// (`role_arn`, `region`, `outcome`; never the token).
    ///
    /// # Errors
    /// A [`Failure`] classified like ECR's, its message starting with
    /// `assuming role <arn> with the token of ServiceAccount <namespace>/<name>`
    /// (`token_of`).
    pub async fn assume_role_with_web_identity(
        &self,
        key: &ClientKey,
        role_arn: &str,
        session_name: &str,
        web_identity_token: &SecretString,
        token_of: &str,
    ) -> Result<AssumedRole, Failure> {
        let span = tracing::info_span!(
            "sts.assume_role_with_web_identity",
            role_arn,
            region = %key.region,
            outcome = tracing::field::Empty
        );
        let result = self
            .client(key)
            .assume_role_with_web_identity()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .web_identity_token(web_identity_token.expose_secret())
            .send()
            .instrument(span.clone())
            .await;
        let outcome = match result {
            Ok(output) => assumed(output.credentials()),
            Err(err) => Err(Failure::from_sdk(&err)),
        }
        .map_err(|f| {
            f.context(format!(
                "assuming role {role_arn} with the token of {token_of}"
            ))
        });
        record(&span, &outcome);
        outcome
    }

    #[cfg(test)]
    fn client_keys(&self) -> Vec<ClientKey> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.keys().cloned().collect()
    }
}

/// Records `success` or the failure's label as the span's `outcome`.
fn record(span: &tracing::Span, outcome: &Result<AssumedRole, Failure>) {
    let label = match outcome {
        Ok(_) => "success",
        Err(f) => f.kind.label(),
    };
    span.record("outcome", label);
}

/// The credentials of an STS answer.
fn assumed(credentials: Option<&aws_sdk_sts::types::Credentials>) -> Result<AssumedRole, Failure> {
    let invalid = |m: &str| Failure::new(FailureKind::InvalidResponse, m);
    let c = credentials.ok_or_else(|| invalid("STS answered without Credentials"))?;
    if c.access_key_id().is_empty() || c.secret_access_key().is_empty() {
        return Err(invalid("STS answered with empty Credentials"));
    }
    let expiration = c.expiration();
    let expires_at = Timestamp::new(expiration.secs(), expiration.subsec_nanos() as i32)
        .map_err(|_| invalid("Credentials.Expiration is out of range"))?;
    let expiry = SystemTime::try_from(*expiration)
        .map_err(|_| invalid("Credentials.Expiration is out of range"))?;
    let session_token = Some(c.session_token().to_string()).filter(|t| !t.is_empty());
    Ok(AssumedRole {
        credentials: Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            session_token,
            Some(expiry),
            PROVIDER_NAME,
        ),
        expires_at,
    })
}

/// The STS client configuration for one key: the shared configuration with the key's
/// region, and an endpoint resolver that asks the SDK's STS rules for
/// [`endpoint_params`] of the key.
fn sts_config(sdk_config: &SdkConfig, key: &ClientKey) -> aws_sdk_sts::Config {
    aws_sdk_sts::config::Builder::from(sdk_config)
        .region(Region::new(key.region.clone()))
        .use_fips(key.fips)
        .endpoint_resolver(KeyResolver {
            key: key.clone(),
            rules: DefaultResolver::new(),
        })
        .build()
}

/// The parameters the SDK's STS rules get for `key`: its region (the regional endpoint
/// unless `AWS_STS_REGIONAL_ENDPOINTS=legacy` asks for the global one), FIPS unless an
/// endpoint override is configured (the rules refuse the pair), dual-stack as configured.
///
/// # Errors
/// [`aws_sdk_sts::config::endpoint::InvalidParams`] when the region is not a valid host
/// label (never for a checked region name).
fn endpoint_params(
    key: &ClientKey,
    configured: &Params,
) -> Result<Params, aws_sdk_sts::config::endpoint::InvalidParams> {
    let endpoint_override = configured.endpoint();
    Params::builder()
        .region(key.region.clone())
        .use_fips(key.fips && endpoint_override.is_none())
        .use_dual_stack(configured.use_dual_stack().unwrap_or(false))
        .use_global_endpoint(configured.use_global_endpoint().unwrap_or(false))
        .set_endpoint(endpoint_override.map(str::to_string))
        .build()
}

/// Resolves the endpoint of one STS client with the SDK's rules, from
/// [`endpoint_params`] of its key.
#[derive(Debug)]
struct KeyResolver {
    key: ClientKey,
    rules: DefaultResolver,
}

impl ResolveEndpoint for KeyResolver {
    fn resolve_endpoint<'a>(&'a self, params: &'a Params) -> EndpointFuture<'a> {
        match endpoint_params(&self.key, params) {
            Ok(own) => EndpointFuture::new(async move { self.rules.resolve_endpoint(&own).await }),
            Err(e) => EndpointFuture::ready(Err(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_config::BehaviorVersion;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_smithy_types::DateTime;

    use super::*;

    fn key(region: &str, fips: bool) -> ClientKey {
        ClientKey {
            region: region.to_string(),
            fips,
        }
    }

    async fn endpoint_of(key: &ClientKey, endpoint_override: Option<&str>) -> String {
        let configured = Params::builder()
            .region("eu-west-1")
            .set_endpoint(endpoint_override.map(str::to_string))
            .build()
            .expect("valid params");
        let params = endpoint_params(key, &configured).expect("valid params");
        DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .expect("the STS rules give an endpoint")
            .url()
            .to_string()
    }

    /// The regional endpoint of the token request's region, in every partition (as the
    /// SDK's STS rules give it: an SDK update that changes a host shows up here); an
    /// override wins over it and over FIPS.
    #[tokio::test]
    async fn regional_endpoints_and_the_override() {
        for (k, url) in [
            (
                key("us-east-1", false),
                "https://sts.us-east-1.amazonaws.com",
            ),
            (
                key("eu-west-1", false),
                "https://sts.eu-west-1.amazonaws.com",
            ),
            (
                key("us-east-1", true),
                "https://sts-fips.us-east-1.amazonaws.com",
            ),
            // GovCloud's STS endpoint is FIPS already; the SDK's rules say so.
            (
                key("us-gov-west-1", true),
                "https://sts.us-gov-west-1.amazonaws.com",
            ),
            (
                key("cn-north-1", false),
                "https://sts.cn-north-1.amazonaws.com.cn",
            ),
        ] {
            assert_eq!(endpoint_of(&k, None).await, url, "{k:?}");
        }
        assert_eq!(
            endpoint_of(&key("us-east-1", true), Some("http://127.0.0.1:9")).await,
            "http://127.0.0.1:9"
        );
    }

    fn credentials(expiration: DateTime) -> aws_sdk_sts::types::Credentials {
        aws_sdk_sts::types::Credentials::builder()
            .access_key_id("ASIAEXAMPLE")
            .secret_access_key("secret-access-key-value")
            .session_token("session-token-value")
            .expiration(expiration)
            .build()
            .expect("complete credentials")
    }

    #[test]
    fn assumed_credentials_keep_their_expiry_and_hide_their_secrets() {
        let a = assumed(Some(&credentials(DateTime::from_secs(1_900_000_000)))).unwrap();
        assert_eq!(a.expires_at, Timestamp::from_second(1_900_000_000).unwrap());
        assert_eq!(a.credentials.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(a.credentials.session_token(), Some("session-token-value"));
        let debug = format!("{a:?}");
        assert!(!debug.contains("secret-access-key-value"), "{debug}");
        assert!(!debug.contains("session-token-value"), "{debug}");
    }

    #[test]
    fn an_answer_without_credentials_is_an_invalid_response() {
        let e = assumed(None).unwrap_err();
        assert_eq!(e.kind, FailureKind::InvalidResponse);
    }

    #[test]
    fn clients_are_bounded_and_per_region() {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST", "secret", None, None, "tests",
            )))
            .build();
        let sts = StsClients::new(config);
        for n in 1..=MAX_CLIENTS + 3 {
            sts.client(&key(&format!("us-east-{n}"), false));
        }
        assert_eq!(sts.client_keys().len(), MAX_CLIENTS);
    }
}
