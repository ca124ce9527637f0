//! The fault matrix, part 2: watches, Events and leadership. Dropped watches and 410 Gone
//! (relists) leave the operator consistent without extra ECR calls, failing Event writes
//! fail nothing, and a leader that loses its Lease sends no further request.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::tokens::ScriptedTokens;
use common::world::*;
use common::*;
use ecr_token_refresh::config::{GoDuration, OperatorConfig};
use ecr_token_refresh::operator::{self, Handles, RunError};
use ecr_token_refresh::server::Role;
use kube_standin::{FaultRule, StandIn};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[tokio::test]
async fn watches_dropped_during_a_fan_out_cost_no_extra_ecr_call() {
    let mut world = World::start_fanout().await;
    let first: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
    for ns in &first {
        world.namespace(ns, true);
    }
    let calls = world.ecr_calls();
    world.apply(PLATFORM, "pull", fanout_spec(json!({})));
    // Watches dropped every 50 ms while the copies are written and more namespaces come.
    let api = world.cluster.api.clone();
    let dropper = tokio::spawn(async move {
        for _ in 0..40 {
            api.close_watches();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for i in 12..16 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        world.namespace(&format!("n{i}"), true);
    }
    dropper.await.unwrap();
    let mut all: Vec<String> = (0..16).map(|i| format!("n{i}")).collect();
    all.extend(["a".to_string(), "b".to_string()]);
    let want: Vec<&str> = all.iter().map(String::as_str).collect();
    world.wait_holders("pull", &want).await;
    world
        .wait_cr(PLATFORM, "pull", "serving every namespace", |cr| {
            ready_of(cr)["reason"] == "TokenRefreshed" && cr["status"]["servedNamespaces"] == 18
        })
        .await;
    assert_eq!(world.ecr_calls() - calls, 1, "one ECR call for all");
    // The watches are back: a deleted copy is restored.
    let before = world.secret("n3", "pull").unwrap();
    world
        .cluster
        .api
        .delete(SECRETS, Some("n3"), "pull")
        .unwrap();
    world
        .wait_secret("n3", "pull", "restored", |s| {
            s.is_some_and(|s| s["metadata"]["uid"] != before["metadata"]["uid"])
        })
        .await;
    assert_eq!(world.ecr_calls() - calls, 1);
    for ns in &want {
        world.keep(ns, "pull");
    }
    world.check().await;
    world.stop().await;
}

/// A world on a stand-in that keeps only 5 watch events: a watch resumed after more
/// writes than that gets 410 Gone and the client lists again.
async fn forgetful_world() -> World {
    let api = StandIn::new()
        .with_bookmark_interval(Duration::from_millis(200))
        .with_event_retention(5);
    let server = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = kube::Client::try_from(kube::Config::new(server.url.parse().unwrap())).unwrap();
    let cluster = Cluster {
        api,
        server,
        client,
    };
    World::start_on(
        cluster,
        fast_settings(),
        fast_policies(),
        ScriptedTokens::default(),
    )
    .await
}

/// What the operator watches.
const WATCHED: [&str; 4] = [CRS, SECRETS, "v1/serviceaccounts", NAMESPACES];

/// Unrelated writes (ConfigMaps), more than the stand-in keeps, then every watch dropped:
/// each resumes from a forgotten resourceVersion (410) and lists again. Returns how long
/// it took until `kinds` were all listed again (at most `within`).
async fn force_relist(world: &World, round: u32, kinds: &[&str], within: Duration) -> Duration {
    let lists = || -> Vec<u64> {
        let c = world.cluster.api.counters();
        kinds.iter().map(|k| c.get_count("list", k)).collect()
    };
    let before = lists();
    for i in 0..20 {
        world
            .cluster
            .api
            .create(
                "v1/configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": format!("noise-{round}-{i}"), "namespace": "tenant"},
                       "data": {"i": i.to_string()}}),
            )
            .unwrap();
    }
    let started = std::time::Instant::now();
    world.cluster.api.close_watches();
    let relisted = poll_until(within, || {
        lists().iter().zip(&before).all(|(now, then)| now > then)
    })
    .await;
    assert!(
        relisted,
        "{kinds:?} not all listed again within {within:?} of 410 Gone: {before:?} -> {:?}",
        lists()
    );
    started.elapsed()
}

#[tokio::test]
async fn after_410_gone_the_operator_lists_again_and_stays_consistent() {
    let mut world = forgetful_world().await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    let calls = world.ecr_calls();
    for round in 0..2 {
        // Eventually (see the next case for how long it takes).
        let took = force_relist(&world, round, &WATCHED, Duration::from_secs(90)).await;
        eprintln!("round {round}: every watch listed again after {took:?}");
        // Once the watches are back, a deleted Secret is restored.
        let before = world.secret("default", "victim").unwrap();
        world
            .cluster
            .api
            .delete(SECRETS, Some("default"), "victim")
            .unwrap();
        let after = world
            .wait_secret("default", "victim", "restored", |s| {
                s.is_some_and(|s| s["metadata"]["uid"] != before["metadata"]["uid"])
            })
            .await
            .unwrap();
        assert_eq!(password_in(&after, HOST), password_in(&before, HOST));
    }
    assert_eq!(world.ecr_calls(), calls, "restored from the held token");
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn the_watches_relist_promptly_after_410_gone() {
    let world = forgetful_world().await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    force_relist(&world, 0, &WATCHED, Duration::from_secs(3)).await;
    world.check().await;
    world.stop().await;
}

/// A Secret deleted while the watches are down is never seen deleted (the relist after 410
/// just no longer has it): the operator compares the new list with the Secrets it wrote
/// and reconciles the owners of the missing ones.
#[tokio::test]
async fn a_secret_deleted_while_the_watches_are_down_is_restored_after_the_relist() {
    let mut world = forgetful_world().await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.quiet(Duration::from_millis(300)).await;
    let lists = || world.cluster.api.counters().get_count("list", SECRETS);
    let before = lists();
    // Hold the watches off (every request is slow) while the Secret goes and noise comes.
    world
        .cluster
        .api
        .faults()
        .set_latency(Duration::from_secs(1));
    world.cluster.api.close_watches();
    assert!(
        poll_until(WAIT, || world.cluster.api.active_watches() == 0).await,
        "the watches did not close"
    );
    world
        .cluster
        .api
        .delete(SECRETS, Some("default"), "victim")
        .unwrap();
    for i in 0..20 {
        world
            .cluster
            .api
            .create(
                "v1/configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": format!("noise-{i}"), "namespace": "tenant"}}),
            )
            .unwrap();
    }
    world.cluster.api.faults().set_latency(Duration::ZERO);
    assert!(
        poll_until(Duration::from_secs(60), || lists() > before).await,
        "no relist"
    );
    let restored = world
        .cluster
        .api
        .wait_for(Duration::from_secs(60), |api| {
            api.get(SECRETS, Some("default"), "victim").is_some()
        })
        .await;
    assert!(
        restored,
        "the Secret deleted during the gap was not restored"
    );
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn failing_event_writes_fail_nothing() {
    let mut world = World::start().await;
    world
        .cluster
        .api
        .faults()
        .add(FaultRule::new(500).gvr(EVENTS));
    let api = world.cluster.api.clone();
    let events = move || {
        let c = api.counters();
        c.get_count("create", EVENTS) + c.get_count("patch", EVENTS)
    };
    let attempted = events();
    let calls = world.ecr_calls();
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    // Failed Events cause no retries of the work itself.
    let writes = || world.cluster.api.counters().writes_for(SECRETS);
    let secret_writes = writes();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        writes(),
        secret_writes,
        "Secret writes after a failed Event"
    );
    // A resource whose only news is a Warning: the status still says it.
    world.add_foreign(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "blocked", "namespace": "default"},
        "type": "Opaque", "data": {"mine": "eWVz"}}));
    world.apply("default", "blocked", spec_for(HOST));
    world
        .wait_ready("default", "blocked", "False", "SecretConflict")
        .await;
    assert!(
        poll_until(WAIT, || events() > attempted).await,
        "no Event was even attempted"
    );
    assert!(
        world
            .events_about("default", "victim")
            .into_iter()
            .chain(world.events_about("default", "blocked"))
            .next()
            .is_none(),
        "an Event got through the fault"
    );
    assert_eq!(world.ecr_calls() - calls, 1, "blocked needs no token");
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

// ---------------------------------------------------------------------------------------
// Leadership lost mid-reconcile.

const LEASES: &str = "coordination.k8s.io/v1/leases";
const LEASE: &str = "ecr-token-refresh-leader";

/// A client that counts the write requests (anything but GET) it sends, at the moment it
/// sends them, before they reach `inner` (the stand-in only counts a request once it has
/// waited out its injected latency).
fn counting_client(inner: kube::Client) -> (kube::Client, Arc<AtomicU64>) {
    type Body = kube::client::Body;
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let writes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&writes);
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            if request.method() != http::Method::GET {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            let inner = inner.clone();
            tokio::spawn(async move {
                match inner.send(request).await {
                    Ok(response) => respond.send_response(response),
                    Err(error) => respond.send_error(error),
                }
            });
        }
    });
    (kube::Client::new(service, "default"), writes)
}

/// One operator replica running in-process (as in `tests/leader.rs`).
struct Replica {
    handles: Handles,
    tokens: Arc<ScriptedTokens>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RunError>>,
    _addr: SocketAddr,
}

impl Replica {
    async fn start(client: kube::Client, identity: &str) -> Self {
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
            client,
            tokens.clone(),
            listener,
            handles.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            handles,
            tokens,
            stop: Some(stop),
            task,
            _addr: addr,
        }
    }

    async fn wait_role(&self, role: Role) -> bool {
        poll_until(WAIT, || self.handles.health.role() == role).await
    }
}

/// Makes `holder` the holder of the Lease for the next minute, behind the replicas' backs.
fn take_lease(api: &StandIn, holder: &str) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    api.merge_patch(
        LEASES,
        Some("default"),
        LEASE,
        json!({"spec": {"holderIdentity": holder, "acquireTime": now, "renewTime": now,
                        "leaseDurationSeconds": 60}}),
        false,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_mid_reconcile_writes_nothing_more() {
    let cluster = Cluster::start().await;
    let (client_a, sent_by_a) = counting_client(cluster.client.clone());
    let mut a = Replica::start(client_a, "replica-a").await;
    assert!(a.wait_role(Role::Leader).await, "replica-a never led");
    let b = Replica::start(cluster.client.clone(), "replica-b").await;
    assert!(b.wait_role(Role::Standby).await, "replica-b never stood by");

    // Work that takes a while: every request is slow.
    let latency = Duration::from_millis(200);
    cluster.api.faults().set_latency(latency);
    const RESOURCES: usize = 60;
    for i in 0..RESOURCES {
        cluster.apply_sample(&format!("r{i}"), json!({}));
    }
    let written = |api: &StandIn| {
        api.list_selected(
            SECRETS,
            Some("default"),
            "app.kubernetes.io/managed-by=ecr-token-refresh",
        )
        .len()
    };
    assert!(
        cluster.api.wait_for(WAIT, |api| written(api) > 0).await,
        "replica-a never wrote"
    );
    // Mid-reconcile, another identity takes the Lease (and keeps it: replica-a's renewal
    // patches only renewTime, which could otherwise let the Lease lapse to replica-b).
    take_lease(&cluster.api, "intruder");
    let keeper = {
        let api = cluster.api.clone();
        tokio::spawn(async move {
            loop {
                take_lease(&api, "intruder");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let ended = tokio::time::timeout(WAIT, &mut a.task)
        .await
        .expect("replica-a did not notice it lost the Lease")
        .unwrap();
    let sent = sent_by_a.load(Ordering::SeqCst);
    assert!(
        matches!(ended, Err(RunError::LostLeadership(_))),
        "{ended:?}"
    );
    let at_return = written(&cluster.api);
    // Requests sent before the fence closed may still be in the stand-in's latency: they
    // land now, and are not "further" requests.
    tokio::time::sleep(latency * 2).await;
    let served_at_loss = written(&cluster.api);
    assert!(
        served_at_loss < RESOURCES,
        "the Lease was lost after all the work was done: not mid-reconcile"
    );
    let at_stop = cluster.api.counters().writes();
    let further = poll_until(Duration::from_secs(2), || {
        sent_by_a.load(Ordering::SeqCst) > sent || cluster.api.counters().writes() > at_stop
    })
    .await;
    assert!(
        !further,
        "writes after the loss: replica-a sent {} more; the stand-in saw {} more",
        sent_by_a.load(Ordering::SeqCst) - sent,
        cluster.api.counters().writes() - at_stop
    );
    assert_eq!(
        written(&cluster.api),
        served_at_loss,
        "a Secret was written after the loss"
    );
    assert_eq!(a.tokens.calls(), 1, "one ECR call for all the resources");
    assert_eq!(b.tokens.attempts(), 0, "the standby called ECR");
    assert_eq!(b.handles.health.role(), Role::Standby);
    // What replica-a wrote is whole.
    for s in cluster.api.list_selected(
        SECRETS,
        None,
        "app.kubernetes.io/managed-by=ecr-token-refresh",
    ) {
        assert_pull_secret_sound(&s);
    }
    eprintln!(
        "{at_return} of {RESOURCES} Secrets written when replica-a stopped, {served_at_loss} \
         once the requests it had in flight landed"
    );
    keeper.abort();
    cluster.api.faults().set_latency(Duration::ZERO);
    let _ = b.stop.map(|s| s.send(()));
    let stopped = tokio::time::timeout(WAIT, b.task)
        .await
        .expect("replica-b stops")
        .unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
    drop(a.stop.take());
}
