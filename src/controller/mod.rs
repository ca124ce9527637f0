//! The reconcile loop: `ECRTokenRefresh` events in, Secrets and status out.

mod cleanup;
mod reconcile;
pub mod schedule;
pub mod status;
pub mod targets;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::reflector;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;

use crate::api::ECRTokenRefresh;
use crate::ecr::TokenSource;
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::secret::{MANAGED_SELECTOR, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL};
use crate::server::Health;

pub use reconcile::reconcile;
pub use schedule::ScheduleSettings;

/// Controller settings (built from the operator config by `OperatorConfig::controller_settings`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace; `None` watches all namespaces.
    pub namespace: Option<String>,
    /// Refresh timing (retry timing is the retry policy's).
    pub schedule: ScheduleSettings,
    /// How often to look again at a resource blocked by a foreign Secret (default 60 s).
    pub conflict_recheck: Duration,
    /// How many resources reconcile at once (default 8).
    pub concurrency: u16,
    /// How many Secret writes one resource makes at once when it fans out (default 16).
    pub write_concurrency: usize,
    /// Namespaces whose resources may write Secrets into other namespaces (through a
    /// fan-out plugin). Empty (the default): every resource stays in its own namespace.
    pub fanout_sources: BTreeSet<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            schedule: ScheduleSettings::default(),
            conflict_recheck: Duration::from_secs(60),
            concurrency: 8,
            write_concurrency: 16,
            fanout_sources: BTreeSet::new(),
        }
    }
}

/// Everything a reconcile needs, shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Where tokens come from.
    pub tokens: Arc<dyn TokenSource>,
    /// Naming, fan-out and retry policies: built-ins and registered plugins.
    pub policies: Arc<Policies>,
    /// Publishes Events on the custom resources.
    pub recorder: Recorder,
    /// Timing and scope.
    pub settings: Settings,
    /// Where reconciles record metrics (an unregistered set unless the operator sets one).
    pub metrics: Arc<Metrics>,
    /// Watch caches of the managed Secrets, the Namespaces and the ServiceAccounts; `None`
    /// when the context runs without watches (scripted tests), then every read is a GET.
    pub caches: Option<Caches>,
    /// Consecutive failures per resource, for backoff; cleared by a success.
    failures: Mutex<HashMap<ObjectRef<ECRTokenRefresh>, u32>>,
}

/// Reflector stores the reconciles read instead of asking the API server.
#[derive(Clone)]
pub struct Caches {
    /// Secrets with the managed-by label (only ours: memory stays flat in the number of
    /// Secrets in the cluster).
    pub secrets: Store<Secret>,
    /// Namespace metadata (the fan-out candidates).
    /// `None` for an operator watching one namespace: it cannot fan out.
    pub namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    /// ServiceAccounts (for `spec.serviceAccounts`).
    pub service_accounts: Store<ServiceAccount>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Builds the caches over these stores; [`Caches::ready`] resolves once all of them
    /// hold their initial list.
    ///
    /// (One task waits on the stores and publishes readiness on a watch channel: a
    /// kube-runtime 5 store wakes only its most recent waiter, and many reconciles wait.)
    pub fn new(
        secrets: Store<Secret>,
        namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
        service_accounts: Store<ServiceAccount>,
    ) -> Self {
        let (tx, ready) = tokio::sync::watch::channel(false);
        let (s, n, a) = (
            secrets.clone(),
            namespaces.clone(),
            service_accounts.clone(),
        );
        tokio::spawn(async move {
            let _ = s.wait_until_ready().await;
            if let Some(n) = n {
                let _ = n.wait_until_ready().await;
            }
            let _ = a.wait_until_ready().await;
            let _ = tx.send(true);
        });
        Self {
            secrets,
            namespaces,
            service_accounts,
            ready,
        }
    }

    /// Waits (at most 30 s) until every store has its initial list, so that a reconcile
    /// never mistakes an unlisted namespace or Secret for an absent one.
    ///
    /// # Errors
    /// [`Error::CachesNotReady`] when the watches have not listed in time.
    pub async fn ready(&self) -> Result<(), Error> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::CachesNotReady),
        }
    }
}

impl Context {
    /// Builds a context; events are reported as `ecr-token-refresh` (with the pod name
    /// from `POD_NAME` as the instance, when set).
    pub fn new(
        client: Client,
        tokens: Arc<dyn TokenSource>,
        policies: Arc<Policies>,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: "ecr-token-refresh".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            tokens,
            policies,
            settings,
            metrics: Arc::new(Metrics::default()),
            caches: None,
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

    /// The built-in retry delay for `attempt`, clamped (used when no retry plugin
    /// decides: Kubernetes API failures, policy failures, a failing retry plugin).
    fn retry_delay(&self, attempt: u32, token_expires_in: Option<Duration>) -> Duration {
        let delay = self.policies.builtin_retry().delay(attempt);
        self.policies.retry_clamp().clamp(delay, token_expires_in)
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
    /// Deleting a copy of a deleted resource's Secret failed (the finalizer stays).
    #[error("cannot delete Secret {target}: {source}")]
    DeleteSecret {
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
    /// Adding or removing the finalizer failed.
    #[error("cannot update the finalizers of ECRTokenRefresh {target}: {source}")]
    WriteMetadata {
        /// `namespace/name`.
        target: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The watches of Secrets, Namespaces or ServiceAccounts have not listed yet.
    #[error("the watch caches are not synced yet")]
    CachesNotReady,
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
            Error::DeleteSecret { .. } => "delete_secret",
            Error::WriteStatus { .. } => "write_status",
            Error::WriteMetadata { .. } => "write_metadata",
            Error::MissingNamespace(_) => "missing_namespace",
            Error::CachesNotReady => "caches_not_ready",
        }
    }
}

/// What the controller does when [`reconcile`] returns an [`Error`]: back off like a
/// failed refresh.
pub fn error_policy(cr: Arc<ECRTokenRefresh>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(cr.as_ref());
    let attempt = ctx.bump_failures(&key);
    let delay = ctx.retry_delay(attempt, None);
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
    policies: Arc<Policies>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), StartError> {
    run_with(
        client,
        tokens,
        policies,
        settings,
        Observers::default(),
        shutdown,
    )
    .await
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
    policies: Arc<Policies>,
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
    let cluster_wide = settings.namespace.is_none();

    // Managed Secrets: one label-selected watch feeds both the cache the reconciles read
    // and the trigger that repairs a deleted or edited Secret.
    let (secret_store, secret_writer) = reflector::store();
    let secret_events = reflector(
        secret_writer,
        watcher::watcher(
            secrets,
            watcher::Config::default()
                .labels(MANAGED_SELECTOR)
                .any_semantic(),
        ),
    )
    .default_backoff()
    .touched_objects();
    // Namespaces (metadata only) are the fan-out candidates; only a cluster-wide
    // operator can fan out.
    let (ns_store, ns_writer) = reflector::store();
    let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let ns_events = reflector(
        ns_writer,
        watcher::watcher(ns_api, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .touched_objects();
    let (sa_store, sa_writer) = reflector::store();
    let sa_api: Api<ServiceAccount> = match &settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let sa_events = reflector(
        sa_writer,
        watcher::watcher(sa_api, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .touched_objects();

    let mut ctx = Context::new(client, tokens, policies, settings);
    ctx.metrics = Arc::clone(&observers.metrics);
    ctx.caches = Some(Caches::new(
        secret_store,
        cluster_wide.then_some(ns_store),
        sa_store,
    ));
    let ctx = Arc::new(ctx);
    tracing::info!("controller started");
    let controller = Controller::new(crs, watcher::Config::default().any_semantic())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    let crs_for_ns = controller.store();
    let crs_for_sa = controller.store();
    // A managed Secret maps to its resource by the owner labels, which copies in other
    // namespaces carry too (ownerReferences cannot cross namespaces).
    let mut controller = controller
        .watches_stream(secret_events, |secret: Secret| {
            let labels = secret.labels();
            match (
                labels.get(OWNER_NAME_LABEL),
                labels.get(OWNER_NAMESPACE_LABEL),
            ) {
                (Some(name), Some(namespace)) => {
                    Some(ObjectRef::<ECRTokenRefresh>::new(name).within(namespace))
                }
                _ => None,
            }
        })
        .watches_stream(sa_events, move |sa: ServiceAccount| {
            // A ServiceAccount named by a resource appeared or changed.
            let name = sa.name_any();
            crs_for_sa
                .state()
                .into_iter()
                .filter(|cr| cr.spec.service_accounts.contains(&name))
                .map(|cr| ObjectRef::from_obj(cr.as_ref()))
                .collect::<Vec<_>>()
        });
    if cluster_wide {
        controller =
            controller.watches_stream(ns_events, move |ns: PartialObjectMeta<Namespace>| {
                // Any namespace change may change what a fan-out plugin selects, and a
                // resource's own namespace going away matters to it.
                let name = ns.name_any();
                crs_for_ns
                    .state()
                    .into_iter()
                    .filter(|cr| {
                        cr.spec.policy.as_ref().is_some_and(|p| p.fanout.is_some())
                            || cr.namespace().as_deref() == Some(name.as_str())
                    })
                    .map(|cr| ObjectRef::from_obj(cr.as_ref()))
                    .collect::<Vec<_>>()
            });
    }
    let observer = tokio::spawn(observe_store(
        controller.store(),
        ctx.caches.clone(),
        observers.clone(),
    ));
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
    caches: Option<Caches>,
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
    // ...and the managed Secrets, Namespaces and ServiceAccounts.
    if let Some(caches) = &caches {
        while caches.ready().await.is_err() {}
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
