//! Decide, then do: what one reconcile does, computed from plain data by pure functions.
//!
//! The reconcile gathers an [`Input`] (the resource, the policies' answers as targets, what
//! the watch caches say about each target, the ServiceAccounts, the token this resource's
//! Secrets hold), asks [`token_need`] whether a token is needed, obtains it (or fails),
//! asks [`plan`] for the Secret writes and deletes, carries them out
//! ([`super::apply`]), asks [`pull_secret_ops`] for the ServiceAccount changes, and
//! finally [`settle`] turns the per-item results into the status, Events and the requeue.
//! Nothing here talks to an API server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::schedule::{self, ScheduleSettings};
use crate::api::ECRTokenRefreshStatus;
use crate::ecr::{Credentials, EcrError, HeldToken, Wanted};
use crate::policy::RetryDecision;
use crate::secret::{Owner, SecretMeta, SecretTarget};
use crate::secret_format::{Layout, Part};

/// The resource, as the plan sees it.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Who owns the Secrets.
    pub owner: Owner,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The registry hosts, the keys under `auths` (`spec.ecrRegistry` first), each with the
    /// key of the token that serves it (identity, region, FIPS or not, private or public).
    pub registries: Vec<Wanted>,
    /// `spec.frequency`.
    pub frequency: Duration,
    /// The current status (what the operator last wrote).
    pub status: ECRTokenRefreshStatus,
    /// `spec.serviceAccounts`.
    pub service_accounts: Vec<String>,
    /// How its credentials are laid out in Secrets (`spec.secretTemplate`).
    pub layout: Layout,
}

/// What is at a target now.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Nothing known there (no Secret of ours in the cache): create it.
    Absent,
    /// A Secret of ours.
    Ours {
        /// Its metadata.
        meta: SecretMeta,
        /// Whether it changed since the operator last wrote or verified it (someone else
        /// wrote it: its resourceVersion moved).
        edited: bool,
    },
    /// Someone else's Secret (another resource's, or unmanaged): never touched.
    Foreign,
}

/// One target Secret and what is there.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Where.
    pub target: SecretTarget,
    /// What is there.
    pub found: Found,
    /// Which part of the credentials it holds (every registry, or one per Secret).
    pub part: Part,
}

/// A Secret of ours that is no longer targeted.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    /// Where.
    pub target: SecretTarget,
    /// Its metadata (uid and resourceVersion are the delete's preconditions).
    pub meta: SecretMeta,
}

/// A ServiceAccount the plan may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.resourceVersion` (the patch's precondition).
    pub resource_version: String,
    /// The names in `imagePullSecrets`, in order.
    pub pull_secrets: Vec<String>,
    /// The entries the operator added (annotation
    /// [`super::PULL_SECRETS_ANNOTATION`]): Secret name → uid of the owning resource.
    pub added: BTreeMap<String, String>,
}

/// Everything [`plan`] decides on.
#[derive(Debug, Clone)]
pub struct Input {
    /// Now (whole seconds).
    pub now: Timestamp,
    /// The resource.
    pub resource: Resource,
    /// Where its Secrets should be, and what is there.
    pub targets: Vec<Target>,
    /// Its Secrets no longer targeted.
    pub stale: Vec<Stale>,
    /// The ServiceAccounts in the target namespaces named by the spec, and those holding
    /// entries this resource added.
    pub service_accounts: Vec<ServiceAccountView>,
    /// The tokens the resource's Secrets hold (remembered from the last write, or seeded
    /// from its own Secret after a restart).
    pub held: Option<Arc<Credentials>>,
    /// Failed attempts in a row so far (the controller's memory; status mirrors it).
    pub failures: u32,
    /// Targets the operator wrote moments ago (within [`super::memory::CONTEST_WINDOW`]):
    /// an edit of one of them means another writer competes for it.
    pub recently_written: BTreeSet<SecretTarget>,
    /// Whether the resource is backing off from such a competition: edited Secrets are
    /// not repaired until it ends.
    pub contested: bool,
    /// Refresh timing.
    pub schedule: ScheduleSettings,
}

impl Input {
    /// When the Secrets are due for a new token, per status (which only the operator
    /// writes); `None` when status does not say what they hold.
    pub fn scheduled_refresh(&self) -> Option<Timestamp> {
        let s = &self.resource.status;
        let (last, expires) = (s.last_updated_time.as_ref()?, s.expires_at.as_ref()?);
        Some(schedule::next_refresh(
            last.0,
            self.resource.frequency,
            expires.0,
            &self.schedule,
        ))
    }

    /// Whether `credentials` serve this resource now: a token of the right key for each of
    /// its registries (a spec moved to another region or identity needs another token) and
    /// fresh enough (their refresh time, the earlier of the earliest `fetched_at + frequency`
    /// and the earliest expiry minus the margin, is still ahead).
    pub fn accepts(&self, credentials: &Credentials) -> bool {
        credentials.serves(&self.resource.registries)
            && self.fresh(credentials.fetched_at, credentials.expires_at)
    }

    /// Whether one shared token (of a key this resource uses) is fresh enough for it: its
    /// own refresh time for this resource's `frequency` is still ahead.
    pub fn accepts_token(&self, token: &HeldToken) -> bool {
        self.fresh(token.fetched_at, token.token.expires_at)
    }

    fn fresh(&self, fetched_at: Timestamp, expires_at: Timestamp) -> bool {
        schedule::next_refresh(
            fetched_at,
            self.resource.frequency,
            expires_at,
            &self.schedule,
        ) > self.now
    }

    fn generation_seen(&self) -> bool {
        self.resource.status.observed_generation == self.resource.generation
    }
}

/// Whether and why a token is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenNeed {
    /// Nothing to write and nothing due.
    None,
    /// Not due, but a Secret must be written: the held token serves (or, after a restart,
    /// one seeded from the resource's own Secret), else a new one.
    Repair,
    /// Due (or status does not say what the Secrets hold): a token fresh enough for this
    /// resource, from the shared cache or ECR.
    Refresh,
}

/// Whether a token is needed: due by status, or some target missing, edited or not as
/// last written, or the spec changed since status was written.
pub fn token_need(input: &Input) -> TokenNeed {
    let writable = input.targets.iter().any(|t| match &t.found {
        Found::Absent => true,
        Found::Ours { meta, .. } => !meta.terminating,
        Found::Foreign => false,
    });
    if !writable {
        // Every target is someone else's: no token would be written anywhere.
        return TokenNeed::None;
    }
    let ahead = jiff::SignedDuration::try_from(input.schedule.refresh_ahead)
        .unwrap_or(jiff::SignedDuration::MAX);
    let horizon = input.now.saturating_add(ahead).unwrap_or(Timestamp::MAX);
    let due = input.scheduled_refresh().is_none_or(|t| horizon >= t);
    if due {
        return TokenNeed::Refresh;
    }
    let expected_expiry = input.resource.status.expires_at.as_ref().map(|t| t.0);
    let broken = input.targets.iter().any(|t| match &t.found {
        Found::Absent => true,
        // A Secret being deleted is not written (see `plan`): it needs no token.
        Found::Ours { meta, .. } if meta.terminating => false,
        Found::Ours { meta, edited } => {
            *edited
                || !meta.metadata_intact
                || meta.data_hash.is_none()
                || meta.expires_at != expected_expiry
        }
        Found::Foreign => false,
    });
    if broken || !input.generation_seen() {
        TokenNeed::Repair
    } else {
        TokenNeed::None
    }
}

/// How getting a token went.
#[derive(Debug, Clone)]
pub enum TokenState {
    /// No token was needed.
    NotNeeded,
    /// The tokens to write.
    Ready(Arc<Credentials>),
    /// None could be had.
    Failed {
        /// Why.
        error: EcrError,
        /// What the retry policy decided.
        decision: RetryDecision,
        /// The held token when it has not expired yet: missing Secrets are still written
        /// with it, so an ECR outage never leaves a namespace without credentials.
        fallback: Option<Arc<Credentials>>,
        /// Whether this reconcile asked (a new attempt, counted); `false` while waiting for
        /// the retry of an earlier failure (nothing is asked before it is due).
        fresh: bool,
    },
}

impl TokenState {
    /// The token writes use, if any.
    pub fn writable(&self) -> Option<&Arc<Credentials>> {
        match self {
            TokenState::Ready(t) => Some(t),
            TokenState::Failed { fallback, .. } => fallback.as_ref(),
            TokenState::NotNeeded => None,
        }
    }
}

/// One Secret write or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOp {
    /// Create the Secret (a 409 means someone else's appeared: a conflict).
    Create(SecretTarget),
    /// Rewrite our Secret, preconditioned on its uid and resourceVersion.
    Update {
        /// Where.
        target: SecretTarget,
        /// Precondition.
        uid: String,
        /// Precondition.
        resource_version: String,
    },
    /// Delete our Secret, preconditioned on its uid and resourceVersion.
    Delete {
        /// Where.
        target: SecretTarget,
        /// Precondition.
        uid: String,
        /// Precondition.
        resource_version: String,
    },
}

impl SecretOp {
    /// The Secret the operation is about.
    pub fn target(&self) -> &SecretTarget {
        match self {
            SecretOp::Create(t) => t,
            SecretOp::Update { target, .. } | SecretOp::Delete { target, .. } => target,
        }
    }
}

/// Why a target is not written this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Someone else's Secret is there.
    Conflict,
    /// Our Secret is being deleted (someone else's finalizer holds it).
    Terminating,
    /// It needs a write and no token could be had.
    NoToken,
    /// Someone else keeps changing it right after the operator wrote it: its repair waits
    /// for the resource's backoff.
    Contested,
}

/// What to write and delete.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Writes (creates, updates) in target order, then deletes of stale Secrets.
    pub ops: Vec<SecretOp>,
    /// Targets left as they are, with why.
    pub held: Vec<(SecretTarget, Held)>,
}

/// The Secret writes and deletes for `input`, given how getting the token went.
pub fn plan(input: &Input, token: &TokenState) -> Plan {
    let writable = token.writable();
    let layout = &input.resource.layout;
    // The data hash of each part, computed once (every target of a part holds the same).
    let mut hashes: BTreeMap<Part, String> = BTreeMap::new();
    let mut expected_of = |part: Part| {
        writable.map(|t| {
            let hash = hashes
                .entry(part)
                .or_insert_with(|| layout.data_hash(t, part))
                .clone();
            (hash, t.expires_at)
        })
    };

    let status_expiry = input.resource.status.expires_at.as_ref().map(|t| t.0);
    let refresh = matches!(token, TokenState::Ready(_));
    let mut ops = Vec::new();
    let mut held = Vec::new();
    for t in &input.targets {
        match &t.found {
            Found::Foreign => held.push((t.target.clone(), Held::Conflict)),
            Found::Ours { meta, .. } if meta.terminating => {
                held.push((t.target.clone(), Held::Terminating))
            }
            Found::Ours { edited: true, .. } if input.contested => {
                held.push((t.target.clone(), Held::Contested))
            }
            Found::Absent => match writable {
                Some(_) => ops.push(SecretOp::Create(t.target.clone())),
                None => held.push((t.target.clone(), Held::NoToken)),
            },
            Found::Ours { meta, edited } => {
                let sound = !*edited && meta.metadata_intact;
                let expected = expected_of(t.part);
                let current = match &expected {
                    // With a token in hand: does the Secret hold exactly it, laid out as
                    // the template says (the template is part of the hash)?
                    Some((hash, expiry)) => {
                        sound
                            && meta.data_hash.as_ref() == Some(hash)
                            && meta.expires_at == Some(*expiry)
                    }
                    // Without: does it hold what status says?
                    None => sound && meta.data_hash.is_some() && meta.expires_at == status_expiry,
                };
                // During an outage (fallback token) only broken Secrets are rewritten.
                let rewrite = if refresh {
                    !current
                } else {
                    !sound
                        || meta.data_hash.is_none()
                        || (expected.is_none() && meta.expires_at != status_expiry)
                };
                if !rewrite {
                    continue;
                }
                match writable {
                    Some(_) => ops.push(SecretOp::Update {
                        target: t.target.clone(),
                        uid: meta.uid.clone(),
                        resource_version: meta.resource_version.clone(),
                    }),
                    None => held.push((t.target.clone(), Held::NoToken)),
                }
            }
        }
    }
    for s in &input.stale {
        ops.push(SecretOp::Delete {
            target: s.target.clone(),
            uid: s.meta.uid.clone(),
            resource_version: s.meta.resource_version.clone(),
        });
    }
    Plan { ops, held }
}

/// Whether the resource needs the cleanup finalizer before anything is written: a Secret
/// outside its namespace (no ownerReference can reach it), or ServiceAccount entries to
/// remove when it is deleted.
pub fn needs_finalizer(input: &Input) -> bool {
    let own = &input.resource.owner.namespace;
    input
        .targets
        .iter()
        .map(|t| &t.target)
        .chain(input.stale.iter().map(|s| &s.target))
        .any(|t| &t.namespace != own)
        || !input.resource.service_accounts.is_empty()
        || input
            .service_accounts
            .iter()
            .any(|sa| sa.added.values().any(|u| u == &input.resource.owner.uid))
}

/// One ServiceAccount change: its full new `imagePullSecrets` (the list is atomic: a patch
/// replaces it, so it carries the resourceVersion it was computed from) and the new
/// record of the entries the operator added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSecretsOp {
    /// Namespace.
    pub namespace: String,
    /// ServiceAccount name.
    pub service_account: String,
    /// Precondition.
    pub resource_version: String,
    /// The new list.
    pub pull_secrets: Vec<String>,
    /// The new record (Secret name → owner uid) of entries the operator added.
    pub added: BTreeMap<String, String>,
}

/// The ServiceAccount changes once the Secrets are written: each named ServiceAccount in
/// a namespace where the Secret is `served` lists it (added, and recorded as added by us,
/// when missing); entries this resource added for Secrets that are no longer served there,
/// or for ServiceAccounts no longer named, are removed. Entries others put there are never
/// touched, even with the same name.
///
/// `uid` is the resource's, `named` its `spec.serviceAccounts`, `views` the ServiceAccounts
/// gathered for it. On deletion, `named` and `served` are empty: every entry it added goes.
pub fn pull_secret_ops(
    uid: &str,
    named: &[String],
    views: &[ServiceAccountView],
    served: &BTreeSet<SecretTarget>,
) -> Vec<PullSecretsOp> {
    let uid = &uid.to_string();
    let named: BTreeSet<&str> = named.iter().map(String::as_str).collect();
    let mut ops = Vec::new();
    for sa in views {
        let mut list = sa.pull_secrets.clone();
        let mut added = sa.added.clone();
        // The served Secrets of this ServiceAccount's namespace: a range of the ordered set
        // (namespace first), so each ServiceAccount costs O(log N), not a scan of them all.
        let first = SecretTarget {
            namespace: sa.namespace.clone(),
            name: String::new(),
        };
        let in_namespace = served
            .range(&first..)
            .take_while(|t| t.namespace == sa.namespace);
        if named.contains(sa.name.as_str()) {
            for t in in_namespace {
                if !list.contains(&t.name) {
                    list.push(t.name.clone());
                    added.insert(t.name.clone(), uid.clone());
                }
            }
        }
        let keep = |name: &str| {
            named.contains(sa.name.as_str())
                && served.contains(&SecretTarget {
                    namespace: sa.namespace.clone(),
                    name: name.to_string(),
                })
        };
        let ours_gone: Vec<String> = added
            .iter()
            .filter(|(name, owner)| *owner == uid && !keep(name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in ours_gone {
            added.remove(&name);
            list.retain(|n| n != &name);
        }
        if list != sa.pull_secrets || added != sa.added {
            ops.push(PullSecretsOp {
                namespace: sa.namespace.clone(),
                service_account: sa.name.clone(),
                resource_version: sa.resource_version.clone(),
                pull_secrets: list,
                added,
            });
        }
    }
    ops
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
