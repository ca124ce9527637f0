//! The running controller with the JavaScript example plugins (`plugins/js`,
//! componentize-qjs) registered as a cluster owner would: the naming plugin names the
//! Secret, the fan-out plugin picks the labelled namespaces.

mod common;
#[path = "common/js_plugins.rs"]
mod js_plugins;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::tokens::ScriptedTokens;
use common::*;
use ecr_token_refresh::controller::Settings;
use ecr_token_refresh::policy::{HostConfig, PluginRegistry, Policies};
use serde_json::json;

const NAMESPACES: &str = "v1/namespaces";

/// Registers the JS examples under `js-names` and `js-labelled`, pinned to the sha256
/// of the files just built, with the default limits.
async fn js_policies() -> Arc<Policies> {
    let entry = |name: &str, source: &str, settings: &str| {
        let path = js_plugins::js_wasm(source);
        format!(
            "  {name}:\n    path: {}\n    sha256: {}\n    settings: {settings}\n",
            path.display(),
            common::plugins::sha256_of(&path)
        )
    };
    let yaml = format!(
        "plugins:\n{}{}",
        entry("js-names", "naming-prefix", "{prefix: team}"),
        entry(
            "js-labelled",
            "fanout-label",
            "{label: ecr-pull, value: enabled}"
        ),
    );
    let registry = PluginRegistry::from_yaml(&yaml, &common::plugins::repo_root()).unwrap();
    let policies = tokio::task::spawn_blocking(move || {
        Arc::new(Policies::load(&registry, HostConfig::default()))
    })
    .await
    .unwrap();
    assert!(
        policies.load_errors().is_empty(),
        "{:?}",
        policies.load_errors()
    );
    assert!(policies.plugin("js-names").is_some() && policies.plugin("js-labelled").is_some());
    policies
}

#[tokio::test]
async fn the_js_naming_plugin_names_the_secret() {
    let cluster = Cluster::start().await;
    let running = start_controller_with(
        cluster.client.clone(),
        Arc::new(ScriptedTokens::default()),
        js_policies().await,
        fast_settings(),
    );

    cluster.apply_sample("ecr-credentials", json!({"policy": {"naming": "js-names"}}));
    cluster.apply_sample("plain", json!({}));
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    let name = "team-123456789012-us-east-1";
    let secret = cluster
        .secret(name)
        .expect("the Secret has the JS plugin's name");
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
    // A resource without a policy keeps the built-in name.
    cluster.wait_ready("plain", "True", "TokenRefreshed").await;
    assert!(cluster.secret("plain").is_some());
    running.stop().await;
}

#[tokio::test]
async fn the_js_fanout_plugin_picks_the_labelled_namespaces() {
    let cluster = Cluster::start().await;
    for (ns, labels) in [
        ("platform", json!({})),
        ("a", json!({"ecr-pull": "enabled"})),
        ("b", json!({"ecr-pull": "enabled", "team": "b"})),
        ("c", json!({"ecr-pull": "disabled"})),
        ("kube-system", json!({"ecr-pull": "enabled"})),
    ] {
        cluster
            .api
            .create(
                NAMESPACES,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}),
            )
            .unwrap();
    }
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller_with(
        cluster.client.clone(),
        tokens.clone(),
        js_policies().await,
        Settings {
            fanout_sources: BTreeSet::from(["platform".to_string()]),
            ..fast_settings()
        },
    );
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": "pull", "namespace": "platform"},
                   "spec": {"ecrRegistry": HOST, "frequency": "8h", "region": "us-east-1",
                            "policy": {"fanout": "js-labelled"}}}),
        )
        .unwrap();

    // kube-* is excluded by the plugin; c has another value, platform no label.
    let holders = || -> BTreeSet<String> {
        cluster
            .api
            .list(SECRETS, None)
            .into_iter()
            .filter(|s| s["metadata"]["name"] == "pull")
            .map(|s| s["metadata"]["namespace"].as_str().unwrap().to_owned())
            .collect()
    };
    let want = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
    assert!(
        cluster.api.wait_for(WAIT, |_| holders() == want).await,
        "Secret pull is in {:?}, want {want:?}",
        holders()
    );
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api.get(CRS, Some("platform"), "pull").unwrap()
                ["status"]["servedNamespaces"]
                == 2)
            .await,
        "{}",
        cluster.api.get(CRS, Some("platform"), "pull").unwrap()["status"]
    );
    assert_eq!(tokens.calls(), 1, "one ECR call serves every namespace");

    // A namespace that gets the label later receives the Secret too.
    cluster
        .api
        .merge_patch(
            NAMESPACES,
            None,
            "c",
            json!({"metadata": {"labels": {"ecr-pull": "enabled"}}}),
            false,
        )
        .unwrap();
    let want = BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]);
    assert!(
        cluster.api.wait_for(WAIT, |_| holders() == want).await,
        "Secret pull is in {:?}, want {want:?}",
        holders()
    );
    running.stop().await;
}
