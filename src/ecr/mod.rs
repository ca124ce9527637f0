//! The token source: getting ECR authorization tokens.
//!
//! [`TokenSource`] is the seam the controller depends on; [`AwsTokenSource`] implements it
//! with aws-sdk-ecr's `GetAuthorizationToken` and the SDK's default credential chain
//! (environment, profile, IRSA web identity, EKS Pod Identity, IMDS) and endpoint
//! override (`AWS_ENDPOINT_URL_ECR` / `AWS_ENDPOINT_URL`).

mod aws;
mod cache;
mod error;
mod token;

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::SecretString;

pub use aws::AwsTokenSource;
pub use cache::{HeldToken, Obtained, TokenCache, TokenKey, whole_seconds};
pub use error::{EcrError, FailureKind};
pub use token::decode_authorization_token;

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
    /// When the token stops working, as reported by ECR (12 hours after issue).
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
