//! Test-only builders for the plan's [`Input`]: a resource with its status, its targets
//! and what is found there, stale copies, ServiceAccount views and a held token, so that
//! each unit test of [`super::plan`] and [`super::settle`] reads as a scenario.
//!
//! Included (`#[path]`) by `plan_tests.rs` and `settle_tests.rs`; each uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use secrecy::SecretString;

use crate::api::ECRTokenRefreshStatus;
use crate::controller::plan::{Found, Input, Resource, ServiceAccountView, Stale, Target};
use crate::controller::schedule::ScheduleSettings;
use crate::ecr::{
    AuthorizationToken, Credentials, EcrError, FailureKind, HeldToken, TokenKey, Wanted,
};
use crate::secret::{self, Owner, SecretMeta, SecretTarget};

/// The registry host of every scenario.
pub const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// The resource's namespace.
pub const NS: &str = "apps";
/// The resource's name (and, as with the built-in naming policy, its Secrets' name).
pub const NAME: &str = "ecr-credentials";
/// The resource's `metadata.uid`.
pub const UID: &str = "uid-of-the-resource";
/// Another resource's `metadata.uid`.
pub const OTHER_UID: &str = "uid-of-another-resource";
/// One hour.
pub const HOUR: Duration = Duration::from_secs(3600);

/// The token key of every scenario's resource (us-east-1, not FIPS).
pub fn key() -> TokenKey {
    TokenKey::operator("us-east-1", false)
}

/// "Now" in every scenario (whole seconds, as the reconcile uses).
pub fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().expect("a valid timestamp")
}

/// `now()` moved by `secs` seconds (negative: earlier).
pub fn at(secs: i64) -> Timestamp {
    now()
        .checked_add(SignedDuration::from_secs(secs))
        .expect("in range")
}

/// Seconds in `hours` hours.
pub const fn h(hours: i64) -> i64 {
    hours * 3600
}

/// The registries of every scenario's resource: [`REGISTRY`] served by [`key()`].
pub fn wanted() -> Vec<Wanted> {
    vec![Wanted {
        host: REGISTRY.into(),
        key: key(),
    }]
}

/// One shared token of `key` with `password`, fetched at `fetched_at`, expiring at
/// `expires_at`.
pub fn held_token(
    key: TokenKey,
    password: &str,
    fetched_at: Timestamp,
    expires_at: Timestamp,
) -> Arc<HeldToken> {
    Arc::new(HeldToken {
        key,
        token: AuthorizationToken {
            username: "AWS".into(),
            password: SecretString::from(password.to_string()),
            expires_at,
            proxy_endpoint: None,
        },
        fetched_at,
    })
}

/// Credentials for [`REGISTRY`] with `password`, fetched at `fetched_at`, expiring at
/// `expires_at`.
pub fn token(password: &str, fetched_at: Timestamp, expires_at: Timestamp) -> Arc<Credentials> {
    let held = held_token(key(), password, fetched_at, expires_at);
    Arc::new(Credentials::new(vec![(REGISTRY.into(), held)]).expect("one entry"))
}

/// A token as ECR hands it out: fetched `ago` seconds before now, valid 12 hours.
pub fn ecr_token(password: &str, ago: i64) -> Arc<Credentials> {
    token(password, at(-ago), at(h(12) - ago))
}

/// The data-hash annotation a Secret holding `tok` for [`REGISTRY`] carries.
pub fn hash_of(tok: &Credentials) -> String {
    secret::sha256_hex(&secret::docker_config_json(tok))
}

/// The Secret target in `namespace`, named [`NAME`].
pub fn target(namespace: &str) -> SecretTarget {
    SecretTarget {
        namespace: namespace.into(),
        name: NAME.into(),
    }
}

/// The set of targets in `namespaces`.
pub fn targets(namespaces: &[&str]) -> std::collections::BTreeSet<SecretTarget> {
    namespaces.iter().map(|ns| target(ns)).collect()
}

/// The metadata of an intact Secret of ours in `namespace` holding exactly `tok`
/// (uid `secret-<namespace>`, resourceVersion `10`).
pub fn holding(namespace: &str, tok: &Credentials) -> SecretMeta {
    SecretMeta {
        uid: format!("secret-{namespace}"),
        resource_version: "10".into(),
        ours: true,
        metadata_intact: true,
        data_hash: Some(hash_of(tok)),
        expires_at: Some(tok.expires_at),
        terminating: false,
    }
}

/// The status the operator writes once the Secrets hold `tok` (generation 1).
pub fn status_holding(tok: &Credentials) -> ECRTokenRefreshStatus {
    ECRTokenRefreshStatus {
        last_updated_time: Some(Time(tok.fetched_at)),
        expires_at: Some(Time(tok.expires_at)),
        observed_generation: Some(1),
        ..Default::default()
    }
}

/// A ServiceAccount `name` in `namespace` at resourceVersion `rv`, listing `pull_secrets`,
/// with `added` recording the entries the operator added (Secret name → owner uid).
pub fn sa(
    namespace: &str,
    name: &str,
    rv: &str,
    pull_secrets: &[&str],
    added: &[(&str, &str)],
) -> ServiceAccountView {
    ServiceAccountView {
        namespace: namespace.into(),
        name: name.into(),
        resource_version: rv.into(),
        pull_secrets: pull_secrets.iter().map(|s| s.to_string()).collect(),
        added: added
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A token-source failure of `kind` with `message`.
pub fn ecr_error(kind: FailureKind, message: &str) -> EcrError {
    EcrError {
        kind,
        registry_id: "123456789012".into(),
        region: "us-east-1".into(),
        message: message.into(),
    }
}

/// A scenario: the [`Input`] of one reconcile, built step by step.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// What the plan decides on.
    pub input: Input,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

impl Scenario {
    /// A resource `apps/ecr-credentials` (generation 1, frequency 8h) never reconciled:
    /// empty status, no targets, nothing held, now = [`now()`], default schedule.
    pub fn new() -> Self {
        Self {
            input: Input {
                now: now(),
                resource: Resource {
                    owner: Owner {
                        name: NAME.into(),
                        namespace: NS.into(),
                        uid: UID.into(),
                    },
                    generation: Some(1),
                    registries: wanted(),
                    frequency: 8 * HOUR,
                    status: ECRTokenRefreshStatus::default(),
                    service_accounts: Vec::new(),
                    layout: Default::default(),
                },
                targets: Vec::new(),
                stale: Vec::new(),
                service_accounts: Vec::new(),
                held: None,
                failures: 0,
                recently_written: Default::default(),
                contested: false,
                schedule: ScheduleSettings::default(),
            },
        }
    }

    /// The Secrets hold `tok`, as status says and the controller remembers.
    pub fn holding(mut self, tok: &Arc<Credentials>) -> Self {
        self.input.resource.status = status_holding(tok);
        self.input.held = Some(Arc::clone(tok));
        self
    }

    /// Replaces the status.
    pub fn status(mut self, status: ECRTokenRefreshStatus) -> Self {
        self.input.resource.status = status;
        self
    }

    /// Sets `metadata.generation`.
    pub fn generation(mut self, generation: i64) -> Self {
        self.input.resource.generation = Some(generation);
        self
    }

    /// Sets `spec.frequency`.
    pub fn frequency(mut self, frequency: Duration) -> Self {
        self.input.resource.frequency = frequency;
        self
    }

    /// Sets "now".
    pub fn now(mut self, now: Timestamp) -> Self {
        self.input.now = now;
        self
    }

    /// Sets the held token (`None`: nothing remembered, as after a restart).
    pub fn held(mut self, tok: Option<&Arc<Credentials>>) -> Self {
        self.input.held = tok.cloned();
        self
    }

    /// A target in `namespace` with `found` there.
    pub fn found(mut self, namespace: &str, found: Found) -> Self {
        self.input.targets.push(Target {
            target: target(namespace),
            found,
            part: Default::default(),
        });
        self
    }

    /// A target in `namespace` with nothing there.
    pub fn absent(self, namespace: &str) -> Self {
        self.found(namespace, Found::Absent)
    }

    /// A target in `namespace` with a Secret of ours, not edited by anyone.
    pub fn ours(self, namespace: &str, meta: SecretMeta) -> Self {
        self.found(
            namespace,
            Found::Ours {
                meta,
                edited: false,
            },
        )
    }

    /// A target in `namespace` with a Secret of ours that someone else changed.
    pub fn edited(self, namespace: &str, meta: SecretMeta) -> Self {
        self.found(namespace, Found::Ours { meta, edited: true })
    }

    /// A target in `namespace` with someone else's Secret.
    pub fn foreign(self, namespace: &str) -> Self {
        self.found(namespace, Found::Foreign)
    }

    /// A Secret of ours in `namespace` that is no longer targeted.
    pub fn stale(mut self, namespace: &str, meta: SecretMeta) -> Self {
        self.input.stale.push(Stale {
            target: target(namespace),
            meta,
        });
        self
    }

    /// `spec.serviceAccounts`.
    pub fn named(mut self, names: &[&str]) -> Self {
        self.input.resource.service_accounts = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// A ServiceAccount gathered for the resource.
    pub fn sa(mut self, view: ServiceAccountView) -> Self {
        self.input.service_accounts.push(view);
        self
    }

    /// The finished input.
    /// The input; its failure count mirrors `status.consecutiveFailures` (as the
    /// controller's memory does once status is written).
    pub fn build(mut self) -> Input {
        self.input.failures = self.input.resource.status.consecutive_failures.unwrap_or(0);
        self.input
    }
}
