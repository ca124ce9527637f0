//! Plain data the policies decide on, and the three policy traits.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PolicyError;

/// An `ECRTokenRefresh` custom resource, as policies see it (never the token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// ECR registry host, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com`.
    pub registry: String,
    /// AWS account id of the registry, e.g. `123456789012`.
    pub account_id: String,
    /// AWS region of the registry, e.g. `us-east-1`.
    pub region: String,
    /// String parameters the resource passes to its plugins (untrusted input
    /// from the namespace owner).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// A candidate namespace for fan-out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl NamespaceInfo {
    /// A namespace with no labels or annotations.
    pub fn named(name: impl Into<String>) -> Self {
        NamespaceInfo {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// The class of a failed token refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// ECR throttled the request.
    Throttled,
    /// The credentials may not get a token (IAM, AssumeRole).
    AccessDenied,
    /// No answer from ECR (DNS, TCP, TLS, timeout).
    Network,
    /// ECR answered with a 5xx.
    ServerError,
    /// ECR's answer could not be used.
    InvalidResponse,
    /// Anything else.
    Other,
}

/// A failed attempt to refresh the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The class of failure.
    pub kind: FailureKind,
    /// Human-readable description; must never contain credentials.
    pub message: String,
    /// Consecutive failed attempts, this one included (1-based).
    pub attempt: u32,
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay (millisecond resolution when it comes from a plugin).
    RetryAfter(Duration),
    /// Stop retrying until the resource changes.
    GiveUp {
        /// Why, for the resource's status.
        reason: String,
    },
}

/// Decides the name of the Secret written for a resource into a namespace.
pub trait NamingPolicy: Send + Sync {
    /// The Secret name for `cr` in `target_namespace`.
    fn secret_name(&self, cr: &CrInfo, target_namespace: &str) -> Result<String, PolicyError>;
}

/// Decides which namespaces receive a resource's Secret.
pub trait FanoutPolicy: Send + Sync {
    /// The names of the chosen namespaces, from `candidates` (one call per decision).
    fn select(&self, cr: &CrInfo, candidates: &[NamespaceInfo])
    -> Result<Vec<String>, PolicyError>;
}

/// Decides when to retry after a failed token refresh.
pub trait RetryPolicy: Send + Sync {
    /// What to do after `failure`; `token_expires_in` is the time left before
    /// the token currently in the Secret expires (`None` when there is none yet,
    /// `Some(ZERO)` when it has expired).
    fn decide(
        &self,
        cr: &CrInfo,
        failure: &Failure,
        token_expires_in: Option<Duration>,
    ) -> Result<RetryDecision, PolicyError>;
}
