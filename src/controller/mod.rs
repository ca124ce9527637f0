//! The reconcile loop: `ECRTokenRefresh` events in, Secrets and status out.

mod reconcile;
pub mod schedule;
pub mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::ECRTokenRefresh;
use crate::ecr::TokenSource;
use crate::metrics::Metrics;
use crate::secret::MANAGED_SELECTOR;
use crate::server::Health;

pub use reconcile::reconcile;
pub use schedule::ScheduleSettings;

/// Controller settings (from the CLI until a config file exists).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace; `None` watches all namespaces.
    pub namespace: Option<String>,
    /// Refresh and retry timing.
    pub schedule: ScheduleSettings,
    /// How often to look again at a resource blocked by a foreign Secret (default 60 s).
    pub conflict_recheck: Duration,
    /// How many resources reconcile at once (default 8).
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            schedule: ScheduleSettings::default(),
            conflict_recheck: Duration::from_secs(60),
            concurrency: 8,
        }
    }
}

/// Everything a reconcile needs, shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Where tokens come from.
    pub tokens: Arc<dyn TokenSource>,
    /// Publishes Events on the custom resources.
    pub recorder: Recorder,
    /// Timing and scope.
    pub settings: Settings,
    /// Where reconciles record metrics (an unregistered set unless the operator sets one).
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per resource, for backoff; cleared by a success.
    failures: Mutex<HashMap<ObjectRef<ECRTokenRefresh>, u32>>,
}

impl Context {
    /// Builds a context; events are reported as `ecr-token-refresh` (with the pod name
    /// from `POD_NAME` as the instance, when set).
    pub fn new(client: Client, tokens: Arc<dyn TokenSource>, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: "ecr-token-refresh".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            tokens,
            settings,
            metrics: Arc::new(Metrics::default()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records one more consecutive failure and returns the attempt number (1-based).
    fn bump_failures(&self, key: &ObjectRef<ECRTokenRefresh>) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn clear_failures(&self, key: &ObjectRef<ECRTokenRefresh>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Reconcile failures that are not about the resource itself (those end up in status):
/// Kubernetes API calls that failed. They are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the target Secret failed.
    #[error("cannot read Secret {target}: {source}")]
    ReadSecret {
        /// `namespace/name`.
        target: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the status subresource failed.
    #[error("cannot update the status of ECRTokenRefresh {target}: {source}")]
    WriteStatus {
        /// `namespace/name`.
        target: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The object has no namespace (it is a namespaced kind, so the API server never
    /// sends such an object).
    #[error("ECRTokenRefresh {0} has no namespace")]
    MissingNamespace(String),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadSecret { .. } => "read_secret",
            Error::WriteStatus { .. } => "write_status",
            Error::MissingNamespace(_) => "missing_namespace",
        }
    }
}

/// What the controller does when [`reconcile`] returns an [`Error`]: back off like a
/// failed refresh.
pub fn error_policy(cr: Arc<ECRTokenRefresh>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(cr.as_ref());
    let attempt = ctx.bump_failures(&key);
    let delay = schedule::backoff(attempt, &ctx.settings.schedule, &mut rand::rng());
    tracing::warn!(%key, %error, attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Errors that stop the controller from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The CRD is not installed (or not readable with our RBAC).
    #[error(
        "cannot list ecrtokenrefreshes.ecr.aws.edenlab.io ({0}); is the CRD installed? \
         Install it with `ecr-token-refresh crd | kubectl apply -f -`"
    )]
    CrdMissing(#[source] kube::Error),
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
///
/// Watches `ECRTokenRefresh` objects and the Secrets carrying the managed-by label (never
/// every Secret of the cluster), so a deleted or edited Secret is repaired within seconds.
///
/// # Errors
/// [`StartError`] when the custom resources cannot be listed at start-up.
pub async fn run(
    client: Client,
    tokens: Arc<dyn TokenSource>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), StartError> {
    run_with(client, tokens, settings, Observers::default(), shutdown).await
}

/// What the operator around the controller observes it with.
#[derive(Debug, Clone, Default)]
pub struct Observers {
    /// Where reconciles record metrics.
    pub metrics: Arc<Metrics>,
    /// Told when the controller's caches are synced (for `/readyz`).
    pub health: Option<Arc<Health>>,
}

/// How often expiry gauges of deleted resources are dropped.
const METRICS_PRUNE_INTERVAL: Duration = Duration::from_secs(15);

/// [`run`], recording into `observers`: reconcile metrics, and readiness once the
/// custom resources are listed (cache synced).
///
/// # Errors
/// [`StartError`] when the custom resources cannot be listed at start-up.
pub async fn run_with(
    client: Client,
    tokens: Arc<dyn TokenSource>,
    settings: Settings,
    observers: Observers,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), StartError> {
    let (crs, secrets): (Api<ECRTokenRefresh>, Api<Secret>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    crs.list(&ListParams::default().limit(1))
        .await
        .map_err(StartError::CrdMissing)?;
    let concurrency = settings.concurrency;
    let mut ctx = Context::new(client, tokens, settings);
    ctx.metrics = Arc::clone(&observers.metrics);
    let ctx = Arc::new(ctx);
    tracing::info!("controller started");
    let controller = Controller::new(crs, watcher::Config::default().any_semantic())
        .owns(
            secrets,
            watcher::Config::default()
                .labels(MANAGED_SELECTOR)
                .any_semantic(),
        )
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    let observer = tokio::spawn(observe_store(controller.store(), observers.clone()));
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::observed, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => tracing::debug!(%obj, ?action, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!(%error, "controller stream error"),
            }
        })
        .await;
    observer.abort();
    if let Some(health) = &observers.health {
        health.set_synced(false);
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// Marks the caches synced once the resources are listed, then keeps the expiry gauges
/// to the resources that still exist.
async fn observe_store(
    store: kube::runtime::reflector::Store<ECRTokenRefresh>,
    observers: Observers,
) {
    // `Store::wait_until_ready` wakes only the most recent of several waiters (the
    // controller's own runner waits on it too), so look again every 200 ms.
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => continue,
        }
    }
    if let Some(health) = &observers.health {
        health.set_synced(true);
    }
    tracing::debug!("controller caches synced");
    loop {
        tokio::time::sleep(METRICS_PRUNE_INTERVAL).await;
        observers.metrics.retain_expiry(|namespace, name| {
            store.get(&ObjectRef::new(name).within(namespace)).is_some()
        });
    }
}
