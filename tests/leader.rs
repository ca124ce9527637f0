//! Two operator instances with leader election against the Kubernetes stand-in: only the
//! leader writes; the standby is ready but passive; when the leader stops (gracefully, or
//! dies without releasing the Lease) the standby takes over.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::tokens::ScriptedTokens;
use common::web::{get, poll_async, sample};
use common::*;
use ecr_token_refresh::config::{GoDuration, OperatorConfig};
use ecr_token_refresh::operator::{self, Handles, RunError};
use ecr_token_refresh::server::Role;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LEASES: &str = "coordination.k8s.io/v1/leases";
const LEASE: &str = "ecr-token-refresh-leader";

/// One operator replica running in-process.
struct Replica {
    addr: SocketAddr,
    handles: Handles,
    tokens: Arc<ScriptedTokens>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RunError>>,
}

impl Replica {
    async fn start(cluster: &Cluster, identity: &str) -> Self {
        let mut config = OperatorConfig::default();
        config.leader_election.enabled = true;
        config.leader_election.identity = Some(identity.into());
        config.leader_election.lease_namespace = Some("default".into());
        config.leader_election.lease_duration = GoDuration(Duration::from_secs(2));
        config.leader_election.renew_margin = GoDuration(Duration::from_secs(1));
        config.validate().unwrap();
        let handles = Handles::new(&config);
        let tokens = Arc::new(ScriptedTokens::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(operator::run(
            config,
            cluster.client.clone(),
            tokens.clone(),
            listener,
            handles.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            handles,
            tokens,
            stop: Some(stop),
            task,
        }
    }

    async fn wait_role(&self, role: Role, timeout: Duration) -> bool {
        poll_until(timeout, || self.handles.health.role() == role).await
    }

    async fn leader_gauge(&self) -> f64 {
        sample(
            &get(self.addr, "/metrics").await.1,
            "ecr_token_refresh_leader",
        )
        .unwrap_or(-1.0)
    }

    /// Graceful stop: in-flight reconciles finish, the Lease is released.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("replica stops")
            .unwrap();
        result.expect("a graceful stop is not an error");
    }
}

fn holder(cluster: &Cluster) -> String {
    cluster
        .api
        .get(LEASES, Some("default"), LEASE)
        .map(|l| {
            l["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_the_standby_takes_over_when_it_stops() {
    let cluster = Cluster::start().await;
    let a = Replica::start(&cluster, "replica-a").await;
    assert!(
        a.wait_role(Role::Leader, WAIT).await,
        "replica-a never became the leader"
    );
    assert_eq!(holder(&cluster), "replica-a");
    let b = Replica::start(&cluster, "replica-b").await;
    assert!(
        b.wait_role(Role::Standby, WAIT).await,
        "replica-b never saw itself as the standby"
    );

    // Both are ready: the leader once its caches synced, the standby as soon as it knows.
    for r in [&a, &b] {
        let ready = poll_async(WAIT, || async { get(r.addr, "/readyz").await.0 == 200 }).await;
        assert!(
            ready,
            "{} not ready: {:?}",
            r.addr,
            get(r.addr, "/readyz").await
        );
    }
    assert_eq!(a.leader_gauge().await, 1.0);
    assert_eq!(b.leader_gauge().await, 0.0);

    // Work arrives: only the leader calls ECR and writes.
    cluster.apply_sample("one", json!({}));
    cluster.apply_sample("two", json!({}));
    cluster.wait_ready("one", "True", "TokenRefreshed").await;
    cluster.wait_ready("two", "True", "TokenRefreshed").await;
    // One token serves both (same identity and region).
    assert_eq!(a.tokens.calls(), 1);
    assert_eq!(b.tokens.attempts(), 0, "the standby called ECR");
    // A repair is the leader's job too (with the token it holds: no ECR call).
    cluster.api.delete(SECRETS, Some("default"), "one").unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api
                .get(SECRETS, Some("default"), "one")
                .is_some())
            .await
    );
    assert_eq!(a.tokens.calls(), 1, "repaired from the held token");
    assert_eq!(b.tokens.attempts(), 0, "the standby called ECR");
    assert_eq!(b.handles.health.role(), Role::Standby);

    // The leader stops gracefully and gives the Lease up; the standby takes over.
    a.stop().await;
    assert!(
        b.wait_role(Role::Leader, WAIT).await,
        "replica-b never took over"
    );
    assert_eq!(holder(&cluster), "replica-b");
    assert_eq!(b.leader_gauge().await, 1.0);
    // New work goes to the new leader. (A resource, not a deleted Secret: a Secret deleted
    // while the new leader's watches are still starting is only noticed at the next
    // scheduled refresh.)
    cluster.apply_sample("three", json!({}));
    cluster.wait_ready("three", "True", "TokenRefreshed").await;
    assert!(b.tokens.calls() >= 1, "the new leader did not write");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_after_the_lease_of_a_dead_leader_expires() {
    let cluster = Cluster::start().await;
    let a = Replica::start(&cluster, "replica-a").await;
    assert!(a.wait_role(Role::Leader, WAIT).await);
    let b = Replica::start(&cluster, "replica-b").await;
    assert!(b.wait_role(Role::Standby, WAIT).await);

    // The leader dies without releasing (its task is dropped mid-flight).
    a.task.abort();
    let _ = a.task.await;
    assert_eq!(
        holder(&cluster),
        "replica-a",
        "a dead leader releases nothing"
    );
    let lease = cluster.api.get(LEASES, Some("default"), LEASE).unwrap();
    let renewed: jiff::Timestamp = lease["spec"]["renewTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expires = renewed
        + jiff::SignedDuration::from_secs(lease["spec"]["leaseDurationSeconds"].as_i64().unwrap());
    assert!(
        b.wait_role(Role::Leader, WAIT).await,
        "replica-b never took over"
    );
    // Not before the dead leader's Lease ran out.
    let now = jiff::Timestamp::now();
    assert!(
        now >= expires,
        "took over at {now}, before the Lease expired at {expires}"
    );
    cluster.apply_sample("late", json!({}));
    cluster.wait_ready("late", "True", "TokenRefreshed").await;
    assert!(b.tokens.calls() >= 1, "the new leader did not write");
    b.stop().await;
}
