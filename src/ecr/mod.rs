//! The token source: getting ECR authorization tokens.
//!
//! [`TokenSource`] is the seam the controller depends on; [`AwsTokenSource`] implements it
//! with aws-sdk-ecr's `GetAuthorizationToken` (aws-sdk-ecrpublic's for ECR Public), the
//! SDK's default credential chain (environment, profile, IRSA web identity, EKS Pod
//! Identity, IMDS), roles assumed through STS (`AssumeRole`, or
//! `AssumeRoleWithWebIdentity` with a ServiceAccount token), and the endpoint overrides
//! (`AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL_ECR_PUBLIC`, `AWS_ENDPOINT_URL_STS`,
//! `AWS_ENDPOINT_URL`).

mod aws;
mod cache;
mod credentials;
mod error;
mod lru;
mod public;
mod sdk_error;
mod service_account;
mod sts;
mod token;

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::SecretString;

use crate::api::{PUBLIC_HOST, Registry};

pub use aws::{AwsTokenSource, MAX_CLIENTS};
pub use cache::{HeldToken, Lookup, Obtained, TokenCache, TokenKey, whole_seconds};
pub use credentials::{Credentials, Wanted};
pub use error::{EcrError, FailureKind};
pub use public::ECR_PUBLIC_REGION;
pub use service_account::{TOKEN_EXPIRATION_SECONDS, WEB_IDENTITY_AUDIENCE};
pub use sts::DEFAULT_SESSION_NAME;
pub use token::decode_authorization_token;

/// Whose credentials ask ECR for a token.
///
/// `Debug` shows role ARNs and names, never a credential (the external ID is not shown
/// either: AWS treats it as a shared value between the two accounts).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Identity {
    /// The operator's own credentials: the SDK's default chain (environment, profile, IRSA,
    /// EKS Pod Identity, IMDS).
    #[default]
    Operator,
    /// A role the operator assumes with its own credentials
    /// ([STS AssumeRole](https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html)).
    Role {
        /// The role's ARN, `arn:<partition>:iam::<account>:role/<name>`.
        arn: String,
        /// The external ID the role's trust policy may require.
        external_id: Option<String>,
        /// The session name (default: [`DEFAULT_SESSION_NAME`], `ecr-token-refresh`).
        session_name: Option<String>,
    },
    /// A role assumed with a token of a ServiceAccount of the resource's namespace
    /// ([STS AssumeRoleWithWebIdentity](https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html),
    /// the token from the Kubernetes TokenRequest API, audience `sts.amazonaws.com`), as
    /// IRSA does for pods: the role's trust policy decides.
    WebIdentity {
        /// Namespace of the ServiceAccount (the resource's own).
        namespace: String,
        /// The ServiceAccount's name.
        service_account: String,
        /// The role's ARN.
        role_arn: String,
        /// The session name (default: [`DEFAULT_SESSION_NAME`], `ecr-token-refresh`).
        session_name: Option<String>,
    },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Operator => f.write_str("Operator"),
            Identity::Role {
                arn, session_name, ..
            } => f
                .debug_struct("Role")
                .field("arn", arn)
                .field("session_name", session_name)
                .finish_non_exhaustive(),
            Identity::WebIdentity {
                namespace,
                service_account,
                role_arn,
                session_name,
            } => f
                .debug_struct("WebIdentity")
                .field("namespace", namespace)
                .field("service_account", service_account)
                .field("role_arn", role_arn)
                .field("session_name", session_name)
                .finish(),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Operator => f.write_str("the operator's own identity"),
            Identity::Role { arn, .. } => write!(f, "role {arn}"),
            Identity::WebIdentity {
                namespace,
                service_account,
                role_arn,
                ..
            } => write!(
                f,
                "role {role_arn} through ServiceAccount {namespace}/{service_account}"
            ),
        }
    }
}

/// Which ECR API serves a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RegistryKind {
    /// A private registry, `<account>.dkr.ecr.<region>.amazonaws.com`: the `ecr` API of its
    /// region.
    #[default]
    Private,
    /// ECR Public, `public.ecr.aws`: the `ecr-public` API, only in `us-east-1`.
    Public,
}

/// What to ask ECR for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenRequest {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// The registry ID, which is the 12-digit AWS account ID of the registry.
    pub registry_id: String,
    /// Ask ECR's FIPS endpoint; set for `dkr.ecr-fips.` registry hosts. AWS documents
    /// it as `ecr-fips.<region>.amazonaws.com`
    /// ([ECR endpoints](https://docs.aws.amazon.com/general/latest/gr/ecr.html),
    /// [FIPS endpoints](https://aws.amazon.com/compliance/fips/)); the host actually used
    /// is the one aws-sdk-ecr's endpoint rules give for FIPS, which for aws-sdk-ecr 1.138
    /// is `api.ecr-fips.<region>.amazonaws.com`. An endpoint override
    /// (`AWS_ENDPOINT_URL_ECR`) takes precedence over it.
    pub fips: bool,
    /// Whose credentials ask.
    pub identity: Identity,
    /// Private registry or ECR Public.
    pub kind: RegistryKind,
}

impl TokenRequest {
    /// What to ask for `registry` with `identity`: its own region, account and FIPS setting
    /// for a private registry; `ecr-public` in [`ECR_PUBLIC_REGION`] for ECR Public (whose
    /// "registry ID" in messages is its host, `public.ecr.aws`).
    pub fn for_registry(registry: &Registry, identity: &Identity) -> Self {
        match registry {
            Registry::Private(r) => Self {
                region: r.region.clone(),
                registry_id: r.account_id.clone(),
                fips: r.fips,
                identity: identity.clone(),
                kind: RegistryKind::Private,
            },
            Registry::Public => Self {
                region: ECR_PUBLIC_REGION.to_string(),
                registry_id: PUBLIC_HOST.to_string(),
                fips: false,
                identity: identity.clone(),
                kind: RegistryKind::Public,
            },
        }
    }
}

/// A decoded ECR authorization token.
///
/// ECR returns `authorizationToken` as base64 of `<user>:<password>` (the user is `AWS`);
/// see [GetAuthorizationToken](https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html).
/// `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct AuthorizationToken {
    /// The user name to log in with, `AWS` for ECR.
    pub username: String,
    /// The password: everything after the first colon of the decoded token.
    pub password: SecretString,
    /// When the token stops working: ECR's `expiresAt` (12 hours after issue), or the
    /// expiry of the assumed role's credentials it was asked with when that is earlier.
    pub expires_at: Timestamp,
    /// The registry URL the token is for, e.g. `https://123456789012.dkr.ecr.us-east-1.amazonaws.com`.
    pub proxy_endpoint: Option<String>,
}

/// Something that hands out ECR authorization tokens. Implemented by [`AwsTokenSource`];
/// tests provide their own.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// Gets a new authorization token for one registry.
    ///
    /// # Errors
    /// [`EcrError`] with a [`FailureKind`] that the retry policy uses.
    async fn authorization_token(
        &self,
        request: &TokenRequest,
    ) -> Result<AuthorizationToken, EcrError>;
}
