//! The running controller with policy plugins registered: the naming plugin names the
//! Secret, the retry plugin's delays are used and clamped, and a misbehaving plugin
//! fails only the resources that select it.

mod common;
use common::plugins;

use std::sync::Arc;

use common::tokens::ScriptedTokens;
use common::*;
use ecr_token_refresh::policy::{HostConfig, PluginRegistry, Policies};
use serde_json::json;

/// Registers the example plugins and two misbehaving ones, as a cluster owner would.
async fn policies() -> Arc<Policies> {
    let entry = |name: &str, krate: &str, settings: &str| {
        let path = plugins::wasm(krate);
        format!(
            "  {name}:\n    path: {}\n    sha256: {}\n    settings: {settings}\n",
            path.display(),
            plugins::sha256_of(&path)
        )
    };
    let yaml = format!(
        "plugins:\n{}{}{}{}",
        entry("prefixed-names", "naming-prefix", "{prefix: team}"),
        entry(
            "slow-retry",
            "retry-linear",
            "{step_ms: 3600000, max_ms: 7200000, give_up_after: 3}"
        ),
        entry("loops", "loop-forever", "{}"),
        entry("bad-names", "invalid-name", "{}"),
    );
    let registry = PluginRegistry::from_yaml(&yaml, &plugins::repo_root()).unwrap();
    tokio::task::spawn_blocking(move || Arc::new(Policies::load(&registry, HostConfig::default())))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_naming_plugin_names_the_secret_and_a_switch_back_prunes_it() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller_with(
        cluster.client.clone(),
        tokens,
        policies().await,
        fast_settings(),
    );

    cluster.apply_sample(
        "ecr-credentials",
        json!({"policy": {"naming": "prefixed-names"}}),
    );
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    let name = "team-123456789012-us-east-1";
    let secret = cluster
        .secret(name)
        .expect("the Secret has the plugin's name");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["name"],
        "ecr-credentials"
    );
    assert!(cluster.secret("ecr-credentials").is_none());
    assert_eq!(
        cluster.cr("ecr-credentials")["status"]["secrets"],
        json!([{"namespace": "default", "name": name}])
    );

    // Back to the built-in: the Secret is named after the resource and the old one goes.
    cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "ecr-credentials",
            json!({"spec": {"policy": null}}),
            false,
        )
        .unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api
                .get(SECRETS, Some("default"), name)
                .is_none()
                && api
                    .get(SECRETS, Some("default"), "ecr-credentials")
                    .is_some())
            .await,
        "secrets now: {:?}",
        cluster
            .api
            .list(SECRETS, Some("default"))
            .iter()
            .map(|s| s["metadata"]["name"].clone())
            .collect::<Vec<_>>()
    );
    running.stop().await;
}

/// The delay in "next in Ns" of a failure message.
/// Seconds from now until `status.nextRefreshTime` of `cr` (the next attempt).
fn next_attempt_in_secs(cr: &serde_json::Value) -> i64 {
    let next: jiff::Timestamp = cr["status"]["nextRefreshTime"]
        .as_str()
        .unwrap_or_else(|| panic!("no nextRefreshTime in {cr}"))
        .parse()
        .unwrap();
    next.duration_since(jiff::Timestamp::now()).as_secs()
}

#[tokio::test]
async fn the_retry_plugin_decides_the_delay_and_the_host_clamps_it_before_expiry() {
    let cluster = Cluster::start().await;
    // Both resources refresh every 2 s, so the token source's failure is met at once.
    let long = Arc::new(ScriptedTokens::default());
    let short = Arc::new(ScriptedTokens::with_lifetime(7 * 60));
    let policies = policies().await;
    // Two controllers, one per namespace-scoped token source, keep the cases apart.
    let running_long = start_controller_with(
        cluster.client.clone(),
        long.clone(),
        policies.clone(),
        ecr_token_refresh::controller::Settings {
            namespaces: vec!["default".into()],
            ..expiring_settings()
        },
    );
    cluster.apply_sample(
        "slow",
        json!({"frequency": "2s", "policy": {"retry": "slow-retry"}}),
    );
    cluster.wait_ready("slow", "True", "TokenRefreshed").await;
    long.fail(true);
    cluster.wait_ready("slow", "False", "ECRUnreachable").await;
    // The plugin's delay (step 1 h × attempt 1), not the built-in's seconds.
    let secs = next_attempt_in_secs(&cluster.cr("slow"));
    assert!((3590..=3600).contains(&secs), "{secs}s");
    running_long.stop().await;

    let running_short = start_controller_with(
        cluster.client.clone(),
        short.clone(),
        policies,
        expiring_settings(),
    );
    cluster.apply_sample(
        "clamped",
        json!({"frequency": "2s", "policy": {"retry": "slow-retry"}}),
    );
    cluster
        .wait_ready("clamped", "True", "TokenRefreshed")
        .await;
    short.fail(true);
    cluster
        .wait_ready("clamped", "False", "ECRUnreachable")
        .await;
    // The token has 7 min left; retries must come 5 min before expiry: about 2 min.
    let secs = next_attempt_in_secs(&cluster.cr("clamped"));
    assert!((100..=120).contains(&secs), "clamped delay {secs}s");
    running_short.stop().await;
}

#[tokio::test]
async fn a_misbehaving_plugin_fails_only_the_resources_that_select_it() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller_with(
        cluster.client.clone(),
        tokens,
        policies().await,
        fast_settings(),
    );

    cluster.apply_sample("loops", json!({"policy": {"naming": "loops"}}));
    cluster.apply_sample("bad-names", json!({"policy": {"naming": "bad-names"}}));
    cluster.apply_sample("unknown", json!({"policy": {"naming": "not-registered"}}));
    cluster.apply_sample("healthy", json!({}));

    let c = cluster.wait_ready("loops", "False", "PolicyFailed").await;
    let m = c["message"].as_str().unwrap();
    assert!(
        m.contains("loops") && (m.contains("fuel") || m.contains("deadline") || m.contains("time")),
        "{m}"
    );
    let c = cluster
        .wait_ready("bad-names", "False", "PolicyFailed")
        .await;
    assert!(c["message"].as_str().unwrap().contains("bad-names"), "{c}");
    let c = cluster.wait_ready("unknown", "False", "PolicyFailed").await;
    assert!(
        c["message"].as_str().unwrap().contains("not-registered"),
        "{c}"
    );
    cluster.wait_event("loops", "Warning", "PolicyFailed").await;

    cluster
        .wait_ready("healthy", "True", "TokenRefreshed")
        .await;
    assert!(cluster.secret("healthy").is_some());
    assert!(cluster.secret("loops").is_none() && cluster.secret("bad-names").is_none());
    running.stop().await;
}
