//! The reconcile loop: `ECRTokenRefresh` events in, Secrets and status out.
//!
//! A reconcile decides from plain data ([`plan`], [`settle`]) and a thin layer carries the
//! decision out (`apply`). Triggers come from changes in the world — a resource's
//! generation, labels, annotations or deletion; a managed Secret changed or deleted by
//! someone else; a Namespace or ServiceAccount — never from the operator's own status or
//! Secret writes, so a failing resource waits for its backoff — and from the policy
//! plugins: a plugin loaded, replaced or removed reconciles the resources selecting it
//! ([`plugin_changes`]).

mod apply;
pub mod caches;
mod cleanup;
pub mod events;
pub mod fence;
pub mod memory;
mod observe;
pub mod plan;
pub mod plugin_changes;
mod reconcile;
pub mod schedule;
pub mod settle;
pub mod status;
pub mod store;
pub mod targets;
pub mod throttle;
mod triggers;
mod verify;
pub mod watches;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;

use crate::access::AccessRules;
use crate::api::ECRTokenRefresh;
use crate::ecr::{TokenCache, TokenSource};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::registry_check::{RegistryChecker, VerifySettings};
use crate::secret::{MANAGED_SELECTOR, SecretFacts};
use crate::server::Health;

pub use apply::added_pull_secrets;
pub use caches::Caches;
pub use cleanup::{FINALIZER, has_finalizer};
pub use fence::Fence;
pub use memory::Memory;
pub use reconcile::{cr_info, reconcile, selection};
pub use schedule::ScheduleSettings;

/// Annotation on a ServiceAccount recording the `imagePullSecrets` entries the operator
/// added: a JSON object, Secret name → uid of the resource it was added for. Only entries
/// recorded there are ever removed.
pub const PULL_SECRETS_ANNOTATION: &str = "ecr.aws.edenlab.io/image-pull-secrets";

/// Controller settings (built from the operator config by `OperatorConfig::controller_settings`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only these namespaces (one watch per namespace and kind); empty watches all
    /// namespaces with one watch per kind. Only a cluster-wide operator fans out.
    pub namespaces: Vec<String>,
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
    /// Which namespaces may use which registries and identities; checked before any AWS
    /// call. Default: no rules, everything allowed.
    pub access: AccessRules,
    /// The client Secret writes go through: one built without kube's automatic retry of
    /// 429/503 answers, so that the write window ([`throttle`]) sees the server push back and
    /// slows every writer down. `None`: the controller's client.
    pub writer: Option<WriteClient>,
    /// The credential check after a refresh (`spec.verify`). Default: off unless a
    /// resource asks for it.
    pub verify: VerifySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            schedule: ScheduleSettings::default(),
            conflict_recheck: Duration::from_secs(60),
            concurrency: 8,
            write_concurrency: 16,
            fanout_sources: BTreeSet::new(),
            access: AccessRules::default(),
            verify: VerifySettings::default(),
            writer: None,
        }
    }
}

impl Settings {
    /// Whether the operator watches every namespace (and may fan out).
    pub fn cluster_wide(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// The namespace to list a resource's Secrets in: all (`None`) for a cluster-wide
    /// operator; else the resource's own, the only one an operator watching listed
    /// namespaces writes into (it does not fan out).
    pub fn secrets_scope<'a>(&self, resource_namespace: &'a str) -> Option<&'a str> {
        (!self.cluster_wide()).then_some(resource_namespace)
    }
}

/// A Kubernetes client for Secret writes (see [`Settings::writer`]).
#[derive(Clone)]
pub struct WriteClient(pub Client);

impl std::fmt::Debug for WriteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteClient")
    }
}

impl WriteClient {
    /// A client like one built from `config`, without kube's automatic retry.
    ///
    /// # Errors
    /// What [`Client::try_from`] returns.
    pub fn without_retry(config: &kube::Config) -> Result<Self, kube::Error> {
        let mut config = config.clone();
        config.default_retry = false;
        Client::try_from(config).map(Self)
    }
}

/// Everything a reconcile needs, shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Where tokens come from: the shared, single-flight token cache.
    pub tokens: Arc<TokenCache>,
    /// Naming, fan-out and retry policies: built-ins and registered plugins.
    pub policies: Arc<Policies>,
    /// Publishes Events on the custom resources.
    pub events: events::Publisher,
    /// Timing and scope.
    pub settings: Settings,
    /// Where reconciles record metrics (an unregistered set unless the operator sets one).
    pub metrics: Arc<Metrics>,
    /// Watch caches of the managed Secrets, the Namespaces and the ServiceAccounts; `None`
    /// when the context runs without watches (scripted tests), then reads are GETs.
    pub caches: Option<Caches>,
    /// Failures, held tokens and the record of writes.
    pub memory: Arc<Memory>,
    /// Closed when this replica must stop writing (lost leadership).
    pub fence: Fence,
    /// Runs the credential checks of `spec.verify` (with `settings.verify`).
    pub registry: Arc<RegistryChecker>,
    /// The operator-wide Secret write window (AIMD up to `settings.write_concurrency`,
    /// honouring 429 `Retry-After`).
    pub writes: Arc<throttle::WriteWindow>,
    /// The client Secret writes go through ([`Settings::writer`]).
    pub writer: Client,
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
        let settings_write_concurrency = settings.write_concurrency;
        let writer = settings
            .writer
            .clone()
            .map_or_else(|| client.clone(), |w| w.0);
        Self {
            events: events::Publisher::new(
                client.clone(),
                "ecr-token-refresh",
                std::env::var("POD_NAME").ok(),
            ),
            client,
            registry: Arc::new(RegistryChecker::new(settings.verify.clone())),
            tokens: Arc::new(TokenCache::new(tokens)),
            policies,
            settings,
            metrics: Arc::new(Metrics::default()),
            caches: None,
            memory: Arc::new(Memory::default()),
            fence: Fence::new(),
            writes: Arc::new(throttle::WriteWindow::new(settings_write_concurrency)),
            writer,
        }
    }

    /// The built-in retry delay for `attempt`, clamped (used when no retry plugin
    /// decides: Kubernetes API failures, policy failures, a failing retry plugin).
    fn retry_delay(&self, attempt: u32, token_expires_in: Option<Duration>) -> Duration {
        let delay = self.policies.builtin_retry().delay(attempt);
        self.policies.retry_clamp().clamp(delay, token_expires_in)
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
    /// This replica lost its leadership: no write is sent any more.
    #[error("this replica is no longer the leader; writes are fenced off")]
    Fenced,
    /// A Secret could not be encoded as JSON (never expected).
    #[error("cannot encode a Secret: {0}")]
    Encode(#[source] serde_json::Error),
    /// A request could not be built (never expected: names come from validated input).
    #[error("cannot build a request: {0}")]
    Request(String),
    /// An answer of the API server could not be decoded (its body is never shown: it may
    /// carry Secret data).
    #[error("cannot decode the API server's answer for {0}")]
    Decode(String),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadSecret { .. } => "read_secret",
            Error::WriteStatus { .. } => "write_status",
            Error::WriteMetadata { .. } => "write_metadata",
            Error::MissingNamespace(_) => "missing_namespace",
            Error::CachesNotReady => "caches_not_ready",
            Error::Fenced => "fenced",
            Error::Encode(_) => "encode",
            Error::Request(_) => "request",
            Error::Decode(_) => "decode",
        }
    }
}

/// What the controller does when [`reconcile`] returns an [`Error`]: back off like a
/// failed refresh.
pub fn error_policy(cr: Arc<ECRTokenRefresh>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(cr.as_ref());
    if matches!(error, Error::Fenced) {
        return Action::await_change();
    }
    let uid = cr.metadata.uid.clone().unwrap_or_default();
    let attempt = ctx.memory.bump_failures(&uid);
    let delay = ctx.retry_delay(attempt, None);
    ctx.metrics.retry(error.metric_label());
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
    /// Closed by the operator when this replica loses its leadership.
    pub fence: Fence,
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
    let namespaces = settings.namespaces.clone();
    check_crd(&client, &namespaces).await?;
    let concurrency = settings.concurrency;
    let cluster_wide = settings.cluster_wide();

    // Before any reconcile: a plugin change from now on re-reconciles its users; what
    // changed before, the first reconciles read from the table.
    let plugin_events = policies.subscribe();
    let mut ctx = Context::new(client.clone(), tokens, policies, settings.clone());
    ctx.metrics = Arc::clone(&observers.metrics);
    ctx.fence = observers.fence.clone();
    let memory = Arc::clone(&ctx.memory);

    // One watch per watched namespace and kind (one of the whole cluster when none is
    // listed), merged (see `watches`).
    //
    // The resources: every change goes into the store reconciles read, but only changes
    // made by users or the cluster (not the operator's status writes) trigger a reconcile.
    let (cr_store, cr_writer) = reflector::store();
    let cr_events = watches::scoped::<ECRTokenRefresh>(
        &client,
        &namespaces,
        &watcher::Config::default().any_semantic(),
        |_| {},
    )
    .reflect(cr_writer)
    .applied_objects()
    .predicate_filter(triggers::resource_changed, Default::default());
    let cr_events = log_errors(cr_events, "ecrtokenrefreshes");

    // Managed Secrets: a metadata-only watch of labelled Secrets (of every format) feeds
    // the cache reconciles read and the trigger that repairs a deleted or edited Secret.
    let (secret_store, secret_writer) = store::store::<SecretFacts>();
    let secret_events = caches::cache_secrets(
        watches::scoped(
            &client,
            &namespaces,
            &secret_watch_config(),
            caches::strip_secret,
        ),
        secret_writer,
    )
    .flat_map(triggers::secret_changes(
        secret_store.clone(),
        Arc::clone(&memory),
    ));
    let secret_events = log_errors(secret_events, "secrets");
    // Namespaces (metadata only, cluster-scoped) are the fan-out candidates; only a
    // cluster-wide operator can fan out, and only it watches them.
    let (ns_store, ns_writer) = store::store();
    let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let ns_events = caches::cache_namespaces(
        watcher::watcher(ns_api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(caches::strip_namespace),
        ns_writer,
    )
    .touched_objects();
    let ns_events = log_errors(ns_events, "namespaces");
    let (sa_store, sa_writer) = reflector::store();
    let sa_events = watches::scoped(
        &client,
        &namespaces,
        &watcher::Config::default().any_semantic(),
        caches::strip_service_account,
    )
    .reflect(sa_writer)
    .touched_objects();
    let sa_events = log_errors(sa_events, "serviceaccounts");

    ctx.caches = Some(Caches::new(
        secret_store,
        cluster_wide.then_some(ns_store),
        sa_store,
    ));
    let ctx = Arc::new(ctx);
    tracing::info!(
        access_rules = ctx.settings.access.len(),
        namespaces = ?ctx.settings.namespaces,
        "controller started"
    );
    let controller = Controller::for_stream(cr_events, cr_store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    let mut controller = controller
        .watches_stream(
            secret_events,
            triggers::secret_owner(cr_store.clone(), Arc::clone(&memory)),
        )
        .watches_stream(
            sa_events,
            triggers::service_account_users(cr_store.clone(), settings.fanout_sources.clone()),
        );
    if cluster_wide {
        controller =
            controller.watches_stream(ns_events, triggers::namespace_users(cr_store.clone()));
    }
    let controller = controller.reconcile_on(plugin_changes::reconcile_requests(
        plugin_events,
        cr_store.clone(),
        Arc::clone(&ctx),
    ));
    // Aborted when this future ends or is dropped (a replica that lost its leadership
    // cancels the controller rather than waiting for it).
    let observer = AbortOnDrop(tokio::spawn(observe_store(
        cr_store,
        Arc::clone(&ctx),
        observers.clone(),
    )));
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
    drop(observer);
    if let Some(health) = &observers.health {
        health.set_synced(false);
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// The managed-Secret watch: metadata of Secrets with the managed-by label and the
/// image-pull type.
fn secret_watch_config() -> watcher::Config {
    watcher::Config::default()
        .labels(MANAGED_SELECTOR)
        .any_semantic()
}

/// Lists the custom resources once in each watched namespace (or the whole cluster), so a
/// missing CRD or missing permissions stop start-up with a clear message.
async fn check_crd(client: &Client, namespaces: &[String]) -> Result<(), StartError> {
    let probe = ListParams::default().limit(1);
    if namespaces.is_empty() {
        let crs: Api<ECRTokenRefresh> = Api::all(client.clone());
        crs.list(&probe).await.map_err(StartError::CrdMissing)?;
    }
    for namespace in namespaces {
        let crs: Api<ECRTokenRefresh> = Api::namespaced(client.clone(), namespace);
        crs.list(&probe).await.map_err(StartError::CrdMissing)?;
    }
    Ok(())
}

/// Watch caches for a single pass (`ecr-token-refresh once`): the same watches as
/// [`run_with`] (managed Secrets, ServiceAccounts, and Namespaces for a cluster-wide
/// operator), kept up to date by a task that stops when the returned guard is dropped.
/// Wait for [`Caches::ready`] before reconciling.
pub fn pass_caches(client: &Client, settings: &Settings) -> (Caches, AbortOnDrop) {
    let namespaces = &settings.namespaces;
    let (secret_store, secret_writer) = store::store::<SecretFacts>();
    let secrets = caches::cache_secrets(
        watches::scoped(
            client,
            namespaces,
            &secret_watch_config(),
            caches::strip_secret,
        ),
        secret_writer,
    );
    let secrets = log_errors(secrets, "secrets").map(|_| ());
    let (sa_store, sa_writer) = reflector::store();
    let sas = watches::scoped(
        client,
        namespaces,
        &watcher::Config::default().any_semantic(),
        caches::strip_service_account,
    )
    .reflect(sa_writer);
    let sas = log_errors(sas, "serviceaccounts").map(|_| ());
    let mut streams = vec![secrets.boxed(), sas.boxed()];
    let ns_store = settings.cluster_wide().then(|| {
        let (ns_store, ns_writer) = store::store();
        let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let events = caches::cache_namespaces(
            watcher::watcher(ns_api, watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(caches::strip_namespace),
            ns_writer,
        );
        streams.push(log_errors(events, "namespaces").map(|_| ()).boxed());
        ns_store
    });
    let task = tokio::spawn(futures::stream::select_all(streams).for_each(|()| async {}));
    (
        Caches::new(secret_store, ns_store, sa_store),
        AbortOnDrop(task),
    )
}

/// Logs and drops the errors of a watch stream. The watcher lists again on its own (after
/// its backoff, with a 410 Gone at once); an error passed on to the Controller would pause
/// every trigger stream for seconds (kube-runtime's trigger backoff), leaving the operator
/// deaf to deleted Secrets and new namespaces meanwhile.
fn log_errors<T, S>(
    stream: S,
    watch: &'static str,
) -> impl futures::Stream<Item = Result<T, watcher::Error>> + Send
where
    S: futures::Stream<Item = Result<T, watcher::Error>> + Send,
    T: Send,
{
    stream.filter_map(move |item| async move {
        match item {
            Ok(object) => Some(Ok(object)),
            Err(error) => {
                tracing::warn!(watch, %error, "watch failed; listing again");
                None
            }
        }
    })
}

/// A task aborted when the guard is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Marks the caches synced once the resources are listed, then keeps the expiry gauges,
/// the controller's memory and the token cache to what still exists.
async fn observe_store(
    store: reflector::Store<ECRTokenRefresh>,
    ctx: Arc<Context>,
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
    if let Some(caches) = &ctx.caches {
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
        let uids: BTreeSet<String> = store
            .state()
            .iter()
            .filter_map(|cr| cr.metadata.uid.clone())
            .collect();
        ctx.memory.retain_resources(|uid| uids.contains(uid));
        ctx.tokens.evict_expired(jiff::Timestamp::now());
        let in_use = keys_in_use(&store.state());
        ctx.tokens.retain_keys(|key| in_use.contains(key));
        ctx.metrics.set_token_cache_keys(ctx.tokens.len());
    }
}

/// The token keys the resources of `crs` use (those with a valid spec): what the shared
/// token cache keeps.
fn keys_in_use(crs: &[Arc<ECRTokenRefresh>]) -> BTreeSet<crate::ecr::TokenKey> {
    crs.iter()
        .filter_map(|cr| Some((cr.metadata.namespace.as_deref()?, cr.spec.validate().ok()?)))
        .flat_map(|(namespace, spec)| observe::wanted(&spec, namespace))
        .map(|wanted| wanted.key)
        .collect()
}
