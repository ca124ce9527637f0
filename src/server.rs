//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (liveness) and
//! `/readyz` (readiness), served with axum on `server.listen`.
//!
//! Readiness: without leader election, ready once the controller's caches are synced.
//! With leader election, a standby is ready as soon as it knows it is the standby (it
//! serves its purpose: waiting), and the leader once its caches are synced; nobody is
//! ready before the first look at the Lease.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::metrics::encode_text;

/// This replica's role under leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not known yet (the Lease has not been read).
    Unknown,
    /// Holds the Lease and reconciles.
    Leader,
    /// Another replica holds the Lease; this one waits.
    Standby,
}

/// Shared health state, updated by the leader elector and the controller.
#[derive(Debug)]
pub struct Health {
    leader_election: bool,
    role: AtomicU8,
    synced: AtomicBool,
}

impl Health {
    /// Health for an operator with (`true`) or without leader election.
    pub fn new(leader_election: bool) -> Self {
        Self {
            leader_election,
            role: AtomicU8::new(Role::Unknown as u8),
            synced: AtomicBool::new(false),
        }
    }

    /// Records the role.
    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::SeqCst);
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match self.role.load(Ordering::SeqCst) {
            x if x == Role::Leader as u8 => Role::Leader,
            x if x == Role::Standby as u8 => Role::Standby,
            _ => Role::Unknown,
        }
    }

    /// Records whether the controller's caches are synced.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }

    /// `Ok(())` when ready, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        let synced = self.synced.load(Ordering::SeqCst);
        if !self.leader_election {
            return if synced {
                Ok(())
            } else {
                Err("the controller's caches are not synced yet")
            };
        }
        match self.role() {
            Role::Unknown => Err("leader election: role not known yet"),
            Role::Standby => Ok(()),
            Role::Leader if synced => Ok(()),
            Role::Leader => Err("leader: the controller's caches are not synced yet"),
        }
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

/// The router: `GET /metrics`, `/healthz`, `/readyz`.
pub fn router(registry: Arc<Registry>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, health })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        encode_text(&state.registry),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Serves the router on `listener` until `shutdown` resolves.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_without_leader_election_waits_for_the_caches() {
        let h = Health::new(false);
        assert!(h.readiness().is_err());
        h.set_synced(true);
        assert!(h.readiness().is_ok());
    }

    #[test]
    fn readiness_with_leader_election_needs_the_role() {
        let h = Health::new(true);
        assert_eq!(h.readiness(), Err("leader election: role not known yet"));
        h.set_role(Role::Standby);
        assert!(h.readiness().is_ok());
        h.set_role(Role::Leader);
        assert!(h.readiness().is_err());
        h.set_synced(true);
        assert!(h.readiness().is_ok());
        assert_eq!(h.role(), Role::Leader);
    }
}
