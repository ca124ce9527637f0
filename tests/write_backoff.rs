//! The Secret writer under a busy API server: 429 with `Retry-After` (as API Priority and
//! Fairness sends it: plain text, the header) and 500s, during a large fan-out. Every
//! namespace is still served exactly once, a 429 pauses the writes for its `Retry-After`,
//! unchanged Secrets are never written twice, and an idle resync touches no Secret.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tokens::ScriptedTokens;
use common::world::{self, NAMESPACES};
use common::*;
use kube_standin::{FaultRule, StandIn, Verb};
use serde_json::json;

const N: usize = 120;

#[tokio::test]
async fn a_throttled_fanout_serves_every_namespace_once_and_honours_retry_after() {
    let api = StandIn::new()
        .with_bookmark_interval(Duration::from_millis(200))
        .with_request_log(true);
    let server = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = kube::Config::new(server.url.parse().unwrap());
    let client = kube::Client::try_from(config.clone()).unwrap();
    // As `run` builds it: Secret writes without kube's own retry of 429s.
    let writer = ecr_token_refresh::controller::WriteClient::without_retry(&config).unwrap();
    let cluster = Cluster {
        api,
        server,
        client,
    };
    let ns = |name: &str, labelled: bool| {
        let labels = if labelled {
            json!({world::FANOUT_LABEL: world::FANOUT_VALUE})
        } else {
            json!({})
        };
        cluster
            .api
            .create(
                NAMESPACES,
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": name, "labels": labels}}),
            )
            .unwrap();
    };
    ns(world::PLATFORM, false);
    let targets: Vec<String> = (0..N).map(|i| format!("team-{i:03}")).collect();
    for t in &targets {
        ns(t, true);
    }
    // What a busy API server answers: 429s with Retry-After 1 s (plain text, as API
    // Priority and Fairness sends them) and a few 500s, on Secret creates.
    cluster.api.faults().add(
        FaultRule::new(429)
            .verb(Verb::Create)
            .gvr(SECRETS)
            .times(12)
            .retry_after(1)
            .plain_text(),
    );
    cluster
        .api
        .faults()
        .add(FaultRule::new(500).verb(Verb::Create).gvr(SECRETS).times(4));

    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller_with(
        cluster.client.clone(),
        tokens.clone(),
        world::label_policies().await,
        ecr_token_refresh::controller::Settings {
            writer: Some(writer),
            ..world::fanout_settings()
        },
    );
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": "pull", "namespace": world::PLATFORM},
                   "spec": world::fanout_spec(json!({}))}),
        )
        .unwrap();
    let served = poll_until(Duration::from_secs(60), || {
        let cr = cluster
            .api
            .get(CRS, Some(world::PLATFORM), "pull")
            .unwrap_or_default();
        cr["status"]["servedNamespaces"] == N && ready_of(&cr)["status"] == "True"
    })
    .await;
    assert!(
        served,
        "{:#}",
        cluster.api.get(CRS, Some(world::PLATFORM), "pull").unwrap()["status"]
    );

    let log = cluster.api.requests();
    let secret_writes: Vec<_> = log
        .iter()
        .filter(|r| r.gvr == SECRETS && r.is_write())
        .collect();
    // Exactly one successful create per namespace, and no other successful Secret write:
    // nothing written twice, nothing rewritten unchanged.
    for t in &targets {
        let created = secret_writes
            .iter()
            .filter(|r| r.succeeded() && r.is_for(SECRETS, Some(t), "pull"))
            .count();
        assert_eq!(created, 1, "namespace {t}");
    }
    let succeeded = secret_writes.iter().filter(|r| r.succeeded()).count();
    assert_eq!(succeeded, N, "only the creates succeeded");
    let throttled: Vec<_> = secret_writes.iter().filter(|r| r.status == 429).collect();
    assert_eq!(throttled.len(), 12, "every injected 429 was met");
    assert_eq!(secret_writes.iter().filter(|r| r.status == 500).count(), 4);
    // Retry-After honoured: a throttled write is sent again only once its second is up.
    for t in &throttled {
        let again = secret_writes
            .iter()
            .find(|r| r.at > t.at && r.namespace == t.namespace && r.name == t.name)
            .expect("a throttled write is sent again");
        let waited = again.at - t.at;
        assert!(
            waited >= Duration::from_millis(900),
            "{:?}/{:?} sent again after {waited:?}",
            t.namespace,
            t.name
        );
    }

    // An idle resync: no Secret request at all.
    let since = std::time::Instant::now();
    cluster
        .api
        .merge_patch(
            CRS,
            Some(world::PLATFORM),
            "pull",
            json!({"metadata": {"annotations": {"resync": "1"}}}),
            false,
        )
        .unwrap();
    settle(&cluster.api, Duration::from_millis(700)).await;
    running.stop().await;
    let after: Vec<_> = cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| r.at > since && r.gvr == SECRETS && r.verb != Verb::Watch)
        .collect();
    assert!(
        after.is_empty(),
        "an idle resync made Secret requests: {after:?}"
    );
    assert_eq!(tokens.calls(), 1, "one ECR call for the whole fan-out");
}
