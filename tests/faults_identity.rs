//! Hostile tenants against identities, several registries and the shared token cache: what
//! a tenant who may create `ECRTokenRefresh` resources and ServiceAccounts in its own
//! namespace can make the operator do, against the real controller and the Kubernetes
//! stand-in.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::ecr::{EcrStandIn, Mode, StsFault};
use common::moto::Moto;
use common::tokens::ScriptedTokens;
use common::world::password_in;
use common::*;
use ecr_token_refresh::controller::{self, Observers};
use ecr_token_refresh::ecr::{AwsTokenSource, TokenSource};
use ecr_token_refresh::metrics::Metrics;
use jiff::SignedDuration;
use serde_json::{Value, json};
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

/// Creates `name` in `namespace`: the original sample with `spec` merged in.
fn apply_in(cluster: &Cluster, namespace: &str, name: &str, spec: Value) {
    let mut base = json!({"ecrRegistry": HOST, "frequency": "8h"});
    if let (Some(b), Value::Object(extra)) = (base.as_object_mut(), spec) {
        b.extend(extra);
    }
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": name, "namespace": namespace}, "spec": base}),
        )
        .unwrap();
}

async fn wait_ready_in(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    status: &str,
    reason: &str,
) -> Value {
    let ok = cluster
        .api
        .wait_for(WAIT, |api| {
            let c = ready_of(&api.get(CRS, Some(namespace), name).unwrap_or_default());
            c["status"] == status && c["reason"] == reason
        })
        .await;
    let cr = cluster
        .api
        .get(CRS, Some(namespace), name)
        .unwrap_or_default();
    assert!(
        ok,
        "{namespace}/{name} never got Ready={status}/{reason}: {:#}",
        cr["status"]
    );
    ready_of(&cr)
}

/// A tenant trying to ride on another tenant's identity through the shared cache: a
/// `serviceAccountRef` that names another namespace reaches only its own namespace's
/// ServiceAccount (none there: refused, no STS call, no Secret); the same role with another
/// external ID is another key (its own `AssumeRole`, with its own external ID, its own token);
/// and a refused web identity token never shows in status or Events.
#[tokio::test]
async fn another_tenants_service_account_or_external_id_is_never_shared() {
    let moto = Moto::start();
    let ecr = EcrStandIn::start(&moto).await;
    ecr.set_mode(Mode::Realistic {
        lifetime: SignedDuration::from_hours(12),
    });
    let cluster = Cluster::start().await;
    let source = AwsTokenSource::new(ecr.sdk_config(1, Duration::from_secs(5)).await)
        .with_kube_client(cluster.client.clone());
    let running = start_controller(cluster.client.clone(), Arc::new(source), fast_settings());
    cluster
        .api
        .create(
            "v1/serviceaccounts",
            json!({"metadata": {"name": "puller", "namespace": "default"}}),
        )
        .unwrap();

    // Tenant A: web identity through default/puller.
    apply_in(
        &cluster,
        "default",
        "a",
        json!({"auth": {"roleArn": ROLE, "serviceAccountRef": {"name": "puller"}}}),
    );
    wait_ready_in(&cluster, "default", "a", "True", "TokenRefreshed").await;
    let a_password = password_in(&cluster.secret("a").unwrap(), HOST);
    assert_eq!(ecr.sts_calls().len(), 1);

    // Tenant B names A's ServiceAccount, with A's namespace in the reference.
    apply_in(
        &cluster,
        "team-b",
        "b",
        json!({"auth": {"roleArn": ROLE, "serviceAccountRef": {"name": "puller", "namespace": "default"}}}),
    );
    let ready = wait_ready_in(&cluster, "team-b", "b", "False", "ECRRequestFailed").await;
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("team-b/puller"), "{message}");
    // The stand-in records the tokens it issued: none more (team-b/puller does not exist).
    let asked = cluster.api.token_requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        ecr.sts_calls().len(),
        1,
        "no STS call without a token of its own"
    );
    assert!(cluster.api.get(SECRETS, Some("team-b"), "b").is_none());

    // Tenant C: the same role assumed by the operator, with another external ID: its own
    // call and token, never A's.
    apply_in(
        &cluster,
        "team-c",
        "c",
        json!({"auth": {"roleArn": ROLE, "externalId": "team-c-guess"}}),
    );
    wait_ready_in(&cluster, "team-c", "c", "True", "TokenRefreshed").await;
    let sts = ecr.sts_calls();
    assert_eq!(sts.len(), 2, "{sts:#?}");
    assert_eq!(sts[1].action, "AssumeRole");
    assert_eq!(sts[1].external_id.as_deref(), Some("team-c-guess"));
    let c_secret = cluster.api.get(SECRETS, Some("team-c"), "c").unwrap();
    assert_ne!(password_in(&c_secret, HOST), a_password);

    // STS refuses a web identity token: the status and Events name the role and the
    // ServiceAccount, never the token.
    cluster
        .api
        .create(
            "v1/serviceaccounts",
            json!({"metadata": {"name": "puller", "namespace": "team-d"}}),
        )
        .unwrap();
    ecr.fail_next_sts(1, StsFault::InvalidIdentityToken);
    apply_in(
        &cluster,
        "team-d",
        "d",
        json!({"auth": {"roleArn": ROLE, "serviceAccountRef": {"name": "puller"}}}),
    );
    let ready = wait_ready_in(&cluster, "team-d", "d", "False", "ECRAccessDenied").await;
    let jwt = cluster
        .api
        .token_requests()
        .into_iter()
        .find(|t| t.namespace == "team-d")
        .expect("a TokenRequest for team-d/puller")
        .token;
    let cr = cluster.api.get(CRS, Some("team-d"), "d").unwrap();
    let events = serde_json::to_string(&cluster.api.list(EVENTS, Some("team-d"))).unwrap();
    running.stop().await;
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains(ROLE) && message.contains("team-d/puller"),
        "{message}"
    );
    let status = cr["status"].to_string();
    for part in jwt.split('.').filter(|p| p.len() > 8) {
        assert!(
            !status.contains(part),
            "a piece of the web identity token in status: {status}"
        );
        assert!(
            !events.contains(part),
            "a piece of the web identity token in an Event: {events}"
        );
    }
}
