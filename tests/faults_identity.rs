//! Hostile tenants against identities, several registries and the shared token cache: what
//! a tenant who may create `ECRTokenRefresh` resources and ServiceAccounts in its own
//! namespace can make the operator do, against the real controller and the Kubernetes
//! stand-in.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tokens::ScriptedTokens;
use common::*;
use ecr_token_refresh::controller::{self, Observers};
use ecr_token_refresh::ecr::TokenSource;
use ecr_token_refresh::metrics::Metrics;
use serde_json::json;
use tokio::sync::oneshot;

const ROLE: &str = "arn:aws:iam::123456789012:role/team-a-pull";

/// The controller running in-process, recording into `metrics`.
struct Observed {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Observed {
    fn start(
        cluster: &Cluster,
        tokens: Arc<dyn TokenSource>,
        settings: controller::Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (stop, rx) = oneshot::channel::<()>();
        let client = cluster.client.clone();
        let observers = Observers {
            metrics,
            ..Observers::default()
        };
        let task = tokio::spawn(async move {
            controller::run_with(
                client,
                tokens,
                fast_policies(),
                settings,
                observers,
                async {
                    let _ = rx.await;
                },
            )
            .await
            .expect("controller starts");
        });
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("controller stops")
            .unwrap();
    }
}

/// Waits until `name` is Ready=True for its current generation.
async fn wait_ready_at_generation(cluster: &Cluster, name: &str) {
    let ok = cluster
        .api
        .wait_for(WAIT, |api| {
            let cr = api.get(CRS, Some("default"), name).unwrap_or_default();
            let ready = ready_of(&cr);
            ready["status"] == "True"
                && ready["observedGeneration"] == cr["metadata"]["generation"]
                && cr["status"]["observedGeneration"] == cr["metadata"]["generation"]
        })
        .await;
    assert!(
        ok,
        "{name} never got Ready for its generation: {:#}",
        cluster.cr(name)
    );
}

/// A tenant that keeps changing the identity of one resource (a new session name, external
/// ID or role each time) makes the operator fetch a token for each; those of identities no
/// resource uses any more must not stay in the shared cache until they expire (up to 12
/// hours), or the operator's memory grows with every edit a tenant ever made rather than
/// with the resources that exist. After the housekeeping pass, the cache holds only the
/// keys the resources use now.
#[tokio::test]
async fn tokens_of_identities_no_resource_uses_any_more_leave_the_cache() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let metrics = Arc::new(Metrics::default());
    let running = Observed::start(
        &cluster,
        tokens.clone(),
        fast_settings(),
        Arc::clone(&metrics),
    );
    cluster.apply_sample(
        "hopper",
        json!({"auth": {"roleArn": ROLE, "sessionName": "session-0"}}),
    );
    wait_ready_at_generation(&cluster, "hopper").await;
    const EDITS: u32 = 5;
    for i in 1..=EDITS {
        cluster
            .api
            .merge_patch(
                CRS,
                Some("default"),
                "hopper",
                json!({"spec": {"auth": {"sessionName": format!("session-{i}")}}}),
                false,
            )
            .unwrap();
        wait_ready_at_generation(&cluster, "hopper").await;
    }
    assert_eq!(tokens.calls(), EDITS + 1, "one token per identity");
    // Right after the last edit, the cache holds every key it was asked for ...
    assert!(
        metrics.token_cache_keys() >= 1,
        "the gauge follows the cache: {}",
        metrics.token_cache_keys()
    );
    // ... and after the housekeeping pass (every 15 s), only the one in use.
    let pruned = poll_until(Duration::from_secs(40), || metrics.token_cache_keys() == 1).await;
    let keys = metrics.token_cache_keys();
    // The key in use is still served from the cache: no new call.
    let before = tokens.calls();
    cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "hopper",
            json!({"spec": {"frequency": "7h"}}),
            false,
        )
        .unwrap();
    wait_ready_at_generation(&cluster, "hopper").await;
    let after = tokens.calls();
    running.stop().await;
    assert!(
        pruned,
        "the cache still holds {keys} keys for one resource after {EDITS} identity changes"
    );
    assert_eq!(after, before, "the key in use stayed in the cache");
}
