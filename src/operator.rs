//! The whole operator as one future: the metrics/health server, leader election (when
//! enabled) and the controller, all driven by one [`OperatorConfig`].

use std::future::Future;
use std::sync::Arc;

use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::OperatorConfig;
use crate::controller::{self, Fence, Observers};
use crate::ecr::TokenSource;
use crate::leader::{LeaderElection, LeaderError};
use crate::metrics::Metrics;
use crate::server::{self, Health, Role};

/// Why the operator stopped other than by its shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The controller could not start (e.g. the CRD is missing).
    #[error(transparent)]
    Start(#[from] controller::StartError),
    /// The Lease could not be read or created at start-up.
    #[error(transparent)]
    Leader(#[from] LeaderError),
    /// This replica was the leader and lost the Lease; it stopped reconciling. Restart it
    /// to join the election again as a standby.
    #[error("lost leadership: {0}")]
    LostLeadership(String),
    /// The policy plugins cannot be registered: a name both in the config file and the
    /// plugins directory, or a directory that cannot be listed.
    #[error(transparent)]
    Plugins(#[from] crate::policy::PluginsError),
    /// The controller task panicked or was cancelled.
    #[error("the controller task failed: {0}")]
    Controller(String),
    /// The metrics/health server failed.
    #[error("the metrics and health server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// The shared pieces a running operator exposes (tests read them).
#[derive(Debug, Clone)]
pub struct Handles {
    /// The metrics every part records into.
    pub metrics: Arc<Metrics>,
    /// Readiness state.
    pub health: Arc<Health>,
    /// The client Secret writes go through (`None`: the operator's client); see
    /// [`controller::Settings::writer`].
    pub writer: Option<controller::WriteClient>,
}

impl Handles {
    /// Fresh metrics and health for `config`.
    pub fn new(config: &OperatorConfig) -> Self {
        Self {
            metrics: Arc::new(Metrics::default()),
            health: Arc::new(Health::new(config.leader_election.enabled)),
            writer: None,
        }
    }
}

/// Runs the operator until `shutdown` resolves: serves `/metrics`, `/healthz` and
/// `/readyz` on `listener`; with leader election, waits to become the leader; runs the
/// controller; on shutdown lets in-flight reconciles finish and releases the Lease.
///
/// # Errors
/// [`RunError`]; notably [`RunError::LostLeadership`] after this replica lost the Lease
/// (the controller has stopped by then).
pub async fn run(
    config: OperatorConfig,
    client: Client,
    tokens: Arc<dyn TokenSource>,
    listener: TcpListener,
    handles: Handles,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = Arc::clone(&stop_tx);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
    }
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let registry = Arc::new(handles.metrics.registry());
    let server = tokio::spawn(server::serve(
        listener,
        registry,
        Arc::clone(&handles.health),
        stopped(),
    ));

    let result = run_controller(&config, client, tokens, &handles, &stopped).await;
    // Stop the server too (on shutdown it is stopping already).
    let _ = stop_tx.send(true);
    let served = server.await;
    result?;
    match served {
        Ok(Err(e)) => Err(RunError::Server(e)),
        _ => Ok(()),
    }
}

async fn run_controller<F, Fut>(
    config: &OperatorConfig,
    client: Client,
    tokens: Arc<dyn TokenSource>,
    handles: &Handles,
    stopped: &F,
) -> Result<(), RunError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + Sync + 'static,
{
    let mut settings = config.controller_settings();
    settings.writer = handles.writer.clone();
    let for_policies = config.clone();
    let metrics = Arc::clone(&handles.metrics);
    // The plugins are registered at once and compiled in the background (the reloader,
    // which then keeps `policy.directory` live): a resource that uses no plugin is never
    // delayed by a compilation, nor is readiness. Reading the directory blocks briefly.
    let (policies, reloader) = tokio::task::spawn_blocking(move || for_policies.live_policies())
        .await
        .map_err(|e| RunError::Controller(format!("loading the policy plugins: {e}")))??;
    let policies = Arc::new(policies.with_metrics(metrics));
    let _reloader = reloader.spawn(Arc::clone(&policies));
    if futures::FutureExt::now_or_never(stopped()).is_some() {
        return Ok(());
    }
    let fence = Fence::new();
    let observers = Observers {
        metrics: Arc::clone(&handles.metrics),
        health: Some(Arc::clone(&handles.health)),
        fence: fence.clone(),
    };
    if !config.leader_election.enabled {
        handles.metrics.set_leader(true);
        controller::run_with(client, tokens, policies, settings, observers, stopped()).await?;
        return Ok(());
    }

    let election = LeaderElection::new(client.clone(), &config.leader_election).await?;
    handles.metrics.set_leader(false);
    let role = election.probe().await;
    handles.health.set_role(role);
    if role == Role::Standby {
        tracing::info!(identity = %election.identity(), "standby: another replica is the leader");
    }
    tokio::select! {
        _ = stopped() => return Ok(()),
        () = election.acquire() => {},
    }
    handles.health.set_role(Role::Leader);
    handles.metrics.set_leader(true);

    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = stopped();
    let controller_shutdown = async move {
        tokio::select! {
            _ = stop => {},
            _ = lost_rx => {},
        }
    };
    let mut controller = tokio::spawn(controller::run_with(
        client,
        tokens,
        policies,
        settings,
        observers,
        controller_shutdown,
    ));
    let outcome = tokio::select! {
        reason = election.hold() => {
            // Stop writing at once: close the fence (no further request is sent, whatever
            // reconcile is in flight), then cancel the controller rather than wait for it.
            fence.close();
            tracing::error!(%reason, "lost leadership; writes fenced off, stopping the controller");
            handles.metrics.set_leader(false);
            handles.health.set_role(Role::Unknown);
            let _ = lost_tx.send(());
            controller.abort();
            let _ = (&mut controller).await;
            return Err(RunError::LostLeadership(reason));
        }
        ended = &mut controller => ended,
    };
    election.release().await;
    handles.metrics.set_leader(false);
    match outcome {
        Ok(result) => result.map_err(RunError::from),
        Err(join) => Err(RunError::Controller(join.to_string())),
    }
}
