//! `ecr-token-refresh once`: one pass over every resource the controller would reconcile,
//! then a one-line summary per resource; for clusters that run the operator as a CronJob
//! (`config/cronjob/`) rather than as a long-running controller.
//!
//! The pass is the controller's own [`controller::reconcile`] with the same
//! configuration, policies, access rules, token source and watch caches (listed once,
//! kept up to date for the length of the pass): same validation, same writes, same
//! status and Events. What differs:
//!
//! - every resource is reconciled once, `controller.concurrency` at a time, and nothing is
//!   requeued: a resource whose refresh failed stays as its status says until the next
//!   pass;
//! - a refresh due before the next pass (`next_run_in`, the CronJob's period) is done now
//!   ([`ScheduleSettings::refresh_ahead`](crate::controller::ScheduleSettings)), so no
//!   token expires between two passes;
//! - resources being deleted are finalized (their copies and ServiceAccount entries
//!   removed, then the finalizer), as the controller would: without a controller nobody
//!   else would, and their deletion would hang.
//!
//! Beside a running controller: with `leader_election.enabled` (the install's config) the
//! pass takes the controller's Lease for its duration, and refuses to run while a live
//! controller holds it ([`OnceError::LeaseHeld`]) — two writers would only race each
//! other. Without leader election nothing stops both: do not run `once` beside a
//! controller watching the same namespaces.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::api::ECRTokenRefresh;
use crate::config::OperatorConfig;
use crate::controller::{self, Context, Fence};
use crate::ecr::TokenSource;
use crate::leader::{LeaderElection, LeaderError};
use crate::metrics::Metrics;
use crate::server::Role;

/// How long the pass waits for the Lease (when leader election is on) and for the watch
/// caches to list.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the pass could not run (as opposed to resources that did not end Ready, which the
/// [`Summary`] reports).
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    /// The custom resources cannot be listed (CRD missing, no permission, no cluster).
    #[error(transparent)]
    List(#[from] controller::StartError),
    /// The Lease could not be read or created.
    #[error(transparent)]
    Leader(#[from] LeaderError),
    /// A controller holds the Lease: it reconciles already, a pass beside it would only
    /// race it.
    #[error(
        "a running controller holds the Lease {lease}; `once` does not run beside it \
         (stop the controller, or do not schedule `once` where one runs)"
    )]
    LeaseHeld {
        /// `namespace/name` of the Lease.
        lease: String,
    },
    /// The Lease was not obtained within [`START_TIMEOUT`].
    #[error("could not take the Lease {lease} within {timeout:?}")]
    LeaseTimeout {
        /// `namespace/name` of the Lease.
        lease: String,
        /// How long the pass waited.
        timeout: Duration,
    },
    /// The Lease was lost during the pass; writes were fenced off at once.
    #[error("lost the Lease during the pass: {0}")]
    LostLeadership(String),
    /// The managed Secrets, ServiceAccounts or Namespaces were not listed in time.
    #[error("the watch caches did not list within {0:?}")]
    CachesNotReady(Duration),
    /// The policy plugins cannot be registered (a name both in the config file and the
    /// plugins directory, an unreadable directory), or compiling them panicked.
    #[error("loading the policy plugins: {0}")]
    Policies(String),
}

/// How one resource ended the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `Ready=True` for its current generation.
    Ready,
    /// `Ready=False` or unknown (see the detail).
    NotReady,
    /// Being deleted: its cleanup finished (or it is gone).
    Deleted,
    /// Being deleted, and the operator's cleanup has not finished.
    Deleting,
    /// The reconcile failed on a Kubernetes API call (status, finalizer, Secret read).
    Error,
}

impl Outcome {
    /// Whether this outcome counts as success for the exit code.
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Ready | Outcome::Deleted)
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ready => "Ready",
            Outcome::NotReady => "NotReady",
            Outcome::Deleted => "Deleted",
            Outcome::Deleting => "Deleting",
            Outcome::Error => "Error",
        }
    }
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceResult {
    /// `namespace/name` of the `ECRTokenRefresh`.
    pub resource: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The `Ready` condition's message (`Reason: message` when not Ready), or what went
    /// wrong. Never a credential: status messages and errors never hold one.
    pub detail: String,
}

/// What the pass did, one entry per resource, sorted by namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The resources.
    pub resources: Vec<ResourceResult>,
}

impl Summary {
    /// Whether every resource ended Ready (or was deleted cleanly); true for no resources.
    pub fn all_ready(&self) -> bool {
        self.resources.iter().all(|r| r.outcome.is_ok())
    }

    /// How many resources did not end well.
    pub fn failed(&self) -> usize {
        self.resources.iter().filter(|r| !r.outcome.is_ok()).count()
    }
}

impl fmt::Display for Summary {
    /// One line per resource: `namespace/name  Outcome  detail`, columns aligned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .resources
            .iter()
            .map(|r| r.resource.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for r in &self.resources {
            let _ = writeln!(
                out,
                "{:width$}  {:8}  {}",
                r.resource,
                r.outcome.label(),
                r.detail.replace('\n', " ")
            );
        }
        f.write_str(&out)
    }
}

/// Runs one pass over every `ECRTokenRefresh` in `config.watch.namespaces` (every
/// namespace when empty) and reports how each ended.
///
/// `next_run_in`: the time until the next pass (the CronJob's period); refreshes due
/// before then are done now.
///
/// # Errors
/// [`OnceError`] when the pass cannot run at all; resources that fail are in the
/// [`Summary`].
pub async fn run(
    config: &OperatorConfig,
    client: Client,
    tokens: Arc<dyn TokenSource>,
    metrics: Arc<Metrics>,
    next_run_in: Duration,
) -> Result<Summary, OnceError> {
    let mut settings = config.controller_settings();
    settings.schedule.refresh_ahead = next_run_in;
    let for_policies = config.clone();
    let policy_metrics = Arc::clone(&metrics);
    // The plugins directory, if any, is read once: no watching for a single pass.
    let policies = Arc::new(
        tokio::task::spawn_blocking(move || {
            for_policies
                .policies()
                .map(|p| p.with_metrics(policy_metrics))
        })
        .await
        .map_err(|e| OnceError::Policies(e.to_string()))?
        .map_err(|e| OnceError::Policies(e.to_string()))?,
    );

    let election = if config.leader_election.enabled {
        let election = LeaderElection::new(client.clone(), &config.leader_election).await?;
        let lease = format!(
            "{}/{}",
            crate::leader::lease_namespace(&config.leader_election, &client),
            config.leader_election.lease_name
        );
        if election.probe().await == Role::Standby {
            return Err(OnceError::LeaseHeld { lease });
        }
        tokio::time::timeout(START_TIMEOUT, election.acquire())
            .await
            .map_err(|_| OnceError::LeaseTimeout {
                lease,
                timeout: START_TIMEOUT,
            })?;
        Some(election)
    } else {
        None
    };

    let fence = Fence::new();
    let pass = pass(&client, tokens, policies, settings, metrics, fence.clone());
    let result = match &election {
        None => pass.await,
        Some(election) => {
            tokio::select! {
                result = pass => result,
                reason = election.hold() => {
                    fence.close();
                    tracing::error!(%reason, "lost the Lease; writes fenced off, pass stopped");
                    Err(OnceError::LostLeadership(reason))
                }
            }
        }
    };
    if let Some(election) = &election {
        election.release().await;
    }
    result
}

/// The pass itself: list, wait for the caches, reconcile each resource once, list again
/// and read each one's `Ready` condition.
async fn pass(
    client: &Client,
    tokens: Arc<dyn TokenSource>,
    policies: Arc<crate::policy::Policies>,
    settings: controller::Settings,
    metrics: Arc<Metrics>,
    fence: Fence,
) -> Result<Summary, OnceError> {
    let namespaces = settings.namespaces.clone();
    let concurrency = usize::from(settings.concurrency).max(1);
    let before = list(client, &namespaces).await?;
    tracing::info!(
        resources = before.len(),
        namespaces = ?namespaces,
        "reconciling every resource once"
    );

    let (caches, _watching) = controller::pass_caches(client, &settings);
    tokio::time::timeout(START_TIMEOUT, caches.ready())
        .await
        .map_err(|_| OnceError::CachesNotReady(START_TIMEOUT))?
        .map_err(|_| OnceError::CachesNotReady(START_TIMEOUT))?;
    let mut ctx = Context::new(client.clone(), tokens, policies, settings);
    ctx.caches = Some(caches);
    ctx.metrics = metrics;
    ctx.fence = fence;
    let ctx = Arc::new(ctx);

    let errors: BTreeMap<String, String> = futures::stream::iter(before.iter().cloned())
        .map(|cr| {
            let ctx = Arc::clone(&ctx);
            async move {
                let key = key_of(&cr);
                let result = controller::reconcile(Arc::new(cr), ctx).await;
                (key, result.err().map(|e| e.to_string()))
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|(key, error)| async move { error.map(|e| (key, e)) })
        .collect()
        .await;

    let after: BTreeMap<String, ECRTokenRefresh> = list(client, &namespaces)
        .await?
        .into_iter()
        .map(|cr| (key_of(&cr), cr))
        .collect();
    let mut resources: Vec<ResourceResult> = before
        .iter()
        .map(|cr| {
            let key = key_of(cr);
            let now = after
                .get(&key)
                .filter(|now| now.metadata.uid == cr.metadata.uid);
            result_of(key.clone(), cr, now, errors.get(&key))
        })
        .collect();
    resources.sort_by(|a, b| a.resource.cmp(&b.resource));
    let summary = Summary { resources };
    tracing::info!(
        resources = summary.resources.len(),
        failed = summary.failed(),
        "pass done"
    );
    Ok(summary)
}

/// Every `ECRTokenRefresh` in `namespaces` (all namespaces when empty).
async fn list(client: &Client, namespaces: &[String]) -> Result<Vec<ECRTokenRefresh>, OnceError> {
    let apis: Vec<Api<ECRTokenRefresh>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut out = Vec::new();
    for api in apis {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(controller::StartError::CrdMissing)?;
        out.extend(list.items);
    }
    Ok(out)
}

fn key_of(cr: &ECRTokenRefresh) -> String {
    format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any())
}

/// How `before` ended, from its state after the pass (`None`: gone) and the reconcile's
/// error, if any.
fn result_of(
    resource: String,
    before: &ECRTokenRefresh,
    after: Option<&ECRTokenRefresh>,
    error: Option<&String>,
) -> ResourceResult {
    let deleting = before.metadata.deletion_timestamp.is_some();
    let (outcome, detail) = match (after, error) {
        (None, _) if deleting => (Outcome::Deleted, "deleted; cleanup done".to_string()),
        (None, _) => (Outcome::Deleted, "deleted during the pass".to_string()),
        (Some(_), Some(error)) if deleting => {
            (Outcome::Deleting, format!("cleanup failed: {error}"))
        }
        (Some(_), Some(error)) => (Outcome::Error, error.clone()),
        (Some(now), None) if deleting => {
            if controller::has_finalizer(now) {
                let why = ready_message(now).unwrap_or_else(|| "not finished".into());
                (Outcome::Deleting, format!("cleanup not finished: {why}"))
            } else {
                (
                    Outcome::Deleted,
                    "cleanup done; waiting for other finalizers".to_string(),
                )
            }
        }
        (Some(now), None) => ready_outcome(now),
    };
    ResourceResult {
        resource,
        outcome,
        detail,
    }
}

/// `Ready` for the current generation, else `NotReady` with `Reason: message`.
fn ready_outcome(cr: &ECRTokenRefresh) -> (Outcome, String) {
    let Some(ready) = ready_condition(cr) else {
        return (Outcome::NotReady, "no Ready condition in status".into());
    };
    let suspended = if cr.spec.suspend { " (suspended)" } else { "" };
    let current = ready.observed_generation == cr.metadata.generation;
    if ready.status == "True" && current {
        (Outcome::Ready, format!("{}{suspended}", ready.message))
    } else if !current {
        (
            Outcome::NotReady,
            format!(
                "status is for generation {}, not {}: {}: {}{suspended}",
                ready.observed_generation.unwrap_or_default(),
                cr.metadata.generation.unwrap_or_default(),
                ready.reason,
                ready.message
            ),
        )
    } else {
        (
            Outcome::NotReady,
            format!("{}: {}{suspended}", ready.reason, ready.message),
        )
    }
}

fn ready_condition(
    cr: &ECRTokenRefresh,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    cr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn ready_message(cr: &ECRTokenRefresh) -> Option<String> {
    ready_condition(cr).map(|c| format!("{}: {}", c.reason, c.message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ECRTokenRefreshSpec, ECRTokenRefreshStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn cr(generation: i64, ready: Option<(&str, &str, &str, i64)>) -> ECRTokenRefresh {
        let mut cr = ECRTokenRefresh::new("creds", ECRTokenRefreshSpec::sample());
        cr.metadata.namespace = Some("apps".into());
        cr.metadata.uid = Some("u1".into());
        cr.metadata.generation = Some(generation);
        cr.status = ready.map(
            |(status, reason, message, observed)| ECRTokenRefreshStatus {
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: status.into(),
                    reason: reason.into(),
                    message: message.into(),
                    observed_generation: Some(observed),
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                }],
                ..Default::default()
            },
        );
        cr
    }

    #[test]
    fn each_resource_gets_one_line_and_only_ready_ones_pass() {
        let ok = cr(
            2,
            Some(("True", "TokenRefreshed", "Secret apps/creds holds…", 2)),
        );
        let bad = cr(
            1,
            Some(("False", "NotPermitted", "namespace apps may not", 1)),
        );
        let stale = cr(3, Some(("True", "TokenRefreshed", "old", 2)));
        let none = cr(1, None);
        let r =
            |c: &ECRTokenRefresh, e: Option<&String>| result_of("apps/creds".into(), c, Some(c), e);
        assert_eq!(r(&ok, None).outcome, Outcome::Ready);
        assert_eq!(r(&ok, None).detail, "Secret apps/creds holds…");
        let not = r(&bad, None);
        assert_eq!(not.outcome, Outcome::NotReady);
        assert_eq!(not.detail, "NotPermitted: namespace apps may not");
        let old = r(&stale, None);
        assert_eq!(old.outcome, Outcome::NotReady);
        assert!(old.detail.starts_with("status is for generation 2, not 3"));
        assert_eq!(r(&none, None).outcome, Outcome::NotReady);
        let failed = r(&ok, Some(&"cannot update the status".to_string()));
        assert_eq!(failed.outcome, Outcome::Error);

        // Deleted during the pass, or finalized by it.
        let mut deleting = ok.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let gone = result_of("apps/creds".into(), &deleting, None, None);
        assert_eq!(gone.outcome, Outcome::Deleted);
        let mut held = deleting.clone();
        held.metadata.finalizers = Some(vec![crate::controller::FINALIZER.into()]);
        let stuck = result_of("apps/creds".into(), &held, Some(&held), None);
        assert_eq!(stuck.outcome, Outcome::Deleting);

        let summary = Summary {
            resources: vec![
                result_of("apps/creds".into(), &ok, Some(&ok), None),
                result_of("team-b/pull".into(), &bad, Some(&bad), None),
            ],
        };
        assert!(!summary.all_ready());
        assert_eq!(summary.failed(), 1);
        assert_eq!(
            summary.to_string(),
            "apps/creds   Ready     Secret apps/creds holds…\n\
             team-b/pull  NotReady  NotPermitted: namespace apps may not\n"
        );
        assert!(Summary::default().all_ready());
    }
}
