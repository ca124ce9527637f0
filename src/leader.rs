//! Leader election on a `coordination.k8s.io/v1` Lease, with `kube-lease-manager`.
//!
//! Replicas share one Lease (`leader_election.lease_name` in `lease_namespace`). The
//! holder renews it `renew_margin` before it would expire; the others wait and take it
//! over once it has expired (at most `lease_duration` after the leader stopped renewing,
//! or after it released the Lease on a graceful shutdown). Only the holder runs the
//! controller, so two replicas never both write.
//!
//! **Losing the Lease** (a renewal failed, or another replica holds it) stops the
//! controller and makes [`crate::operator::run`] return
//! [`RunError::LostLeadership`](crate::operator::RunError::LostLeadership); the binary then
//! exits non-zero and Kubernetes restarts the container, which comes back as a standby.
//! This is the usual choice (controller-runtime does the same): no state of the old
//! term survives into the next.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder};

use crate::config::LeaderElectionConfig;
use crate::server::Role;

/// Field manager prefix of the Lease writes.
const FIELD_MANAGER: &str = "ecr-token-refresh";

/// Leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read, created or written.
    #[error("leader election on Lease {lease}: {source}")]
    Lease {
        /// `namespace/name`.
        lease: String,
        /// The cause.
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// One replica's participation in the election.
pub struct LeaderElection {
    manager: LeaseManager,
    api: Api<Lease>,
    identity: String,
    lease: String,
    name: String,
}

impl std::fmt::Debug for LeaderElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElection")
            .field("identity", &self.identity)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// This replica's identity: `leader_election.identity`, else `POD_NAME`, else the host
/// name and process ID.
pub fn identity(config: &LeaderElectionConfig) -> String {
    if let Some(id) = config.identity.clone().filter(|s| !s.is_empty()) {
        return id;
    }
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ecr-token-refresh".into());
    format!("{host}-{}", std::process::id())
}

/// The Lease's namespace: `leader_election.lease_namespace`, else `POD_NAMESPACE`, else
/// the client's default namespace (the pod's own namespace in a cluster).
pub fn lease_namespace(config: &LeaderElectionConfig, client: &Client) -> String {
    config
        .lease_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| client.default_namespace().to_string())
}

impl LeaderElection {
    /// Prepares the election; creates the Lease if it does not exist yet.
    ///
    /// # Errors
    /// [`LeaderError`] when the Lease cannot be read or created.
    pub async fn new(client: Client, config: &LeaderElectionConfig) -> Result<Self, LeaderError> {
        let namespace = lease_namespace(config, &client);
        let identity = identity(config);
        let lease = format!("{namespace}/{}", config.lease_name);
        // Validated by the config: whole seconds, renew_margin < lease_duration.
        let duration = config.lease_duration.0.as_secs().max(2);
        let grace = config.renew_margin.0.as_secs().clamp(1, duration - 1);
        let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&namespace)
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .with_identity(&identity)
            .with_field_manager(format!("{FIELD_MANAGER}-{identity}"))
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await
            .map_err(|source| LeaderError::Lease {
                lease: lease.clone(),
                source,
            })?;
        Ok(Self {
            manager,
            api: Api::namespaced(client, &namespace),
            identity,
            lease,
            name: config.lease_name.clone(),
        })
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// What one read of the Lease says about this replica: [`Role::Standby`] when another
    /// identity holds an unexpired Lease, [`Role::Unknown`] when it is free (it will be
    /// taken shortly) or unreadable.
    pub async fn probe(&self) -> Role {
        let Ok(Some(lease)) = self.api.get_opt(&self.name).await else {
            return Role::Unknown;
        };
        let Some(spec) = lease.spec else {
            return Role::Unknown;
        };
        let holder = spec.holder_identity.unwrap_or_default();
        let expires = match (spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => {
                let renewed: SystemTime = renewed.0.into();
                renewed.checked_add(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
            }
            _ => None,
        };
        let live = expires.is_some_and(|e| e > SystemTime::now());
        if !holder.is_empty() && holder != self.identity && live {
            Role::Standby
        } else {
            Role::Unknown
        }
    }

    /// Waits until this replica holds the Lease. Errors reading or writing the Lease are
    /// logged and retried (every 2 s, up to 30 s apart): a standby that cannot reach the API
    /// server does no harm, and its `/readyz` stays as it was.
    pub async fn acquire(&self) {
        let mut delay = Duration::from_secs(2);
        loop {
            match self.manager.changed().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = %self.lease, "became the leader");
                    return;
                }
                Ok(false) => continue,
                Err(error) => {
                    tracing::error!(%error, lease = %self.lease, retry_in = ?delay, "leader election: cannot read or write the Lease");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Keeps renewing the Lease; resolves when leadership is lost, with why.
    pub async fn hold(&self) -> String {
        match self.manager.changed().await {
            Ok(false) => "another replica holds the Lease".to_string(),
            Ok(true) => "the Lease was taken and given back (unexpected)".to_string(),
            Err(e) => format!("cannot renew the Lease: {e}"),
        }
    }

    /// Gives the Lease up (when this replica holds it), so a standby can take over as soon
    /// as the old term ends. Errors are logged: the Lease then simply expires.
    pub async fn release(&self) {
        match self.manager.release().await {
            Ok(()) => {
                tracing::info!(identity = %self.identity, lease = %self.lease, "released the Lease")
            }
            Err(error) => {
                tracing::warn!(%error, lease = %self.lease, "cannot release the Lease; it expires by itself")
            }
        }
    }
}
