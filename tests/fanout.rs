//! Namespace fan-out with the example label plugin, against the Kubernetes stand-in.

mod common;
use common::plugins;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::tokens::ScriptedTokens;
use common::*;
use ecr_token_refresh::controller::Settings;
use ecr_token_refresh::policy::{HostConfig, PluginRegistry, Policies};
use serde_json::{Value, json};

const NAMESPACES: &str = "v1/namespaces";
const SERVICE_ACCOUNTS: &str = "v1/serviceaccounts";

async fn label_policies() -> Arc<Policies> {
    let path = plugins::wasm("fanout-label");
    let yaml = format!(
        "plugins:\n  labelled:\n    path: {}\n    sha256: {}\n    settings: {{label: ecr-pull, value: enabled}}\n",
        path.display(),
        plugins::sha256_of(&path)
    );
    let registry = PluginRegistry::from_yaml(&yaml, &plugins::repo_root()).unwrap();
    tokio::task::spawn_blocking(move || Arc::new(Policies::load(&registry, HostConfig::default())))
        .await
        .unwrap()
}

fn settings() -> Settings {
    Settings {
        fanout_sources: BTreeSet::from(["platform".to_string()]),
        ..fast_settings()
    }
}

fn namespace(cluster: &Cluster, name: &str, labelled: bool) {
    let labels = if labelled {
        json!({"ecr-pull": "enabled"})
    } else {
        json!({})
    };
    cluster
        .api
        .create(NAMESPACES, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}))
        .unwrap();
}

fn create_cr(cluster: &Cluster, namespace: &str, name: &str, extra: Value) {
    let mut spec = json!({"ecrRegistry": HOST, "frequency": "8h", "region": "us-east-1", "policy": {"fanout": "labelled"}});
    if let (Some(s), Value::Object(e)) = (spec.as_object_mut(), extra) {
        s.extend(e);
    }
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
        )
        .unwrap();
}

/// Namespaces holding a Secret named `name`.
fn holders(cluster: &Cluster, name: &str) -> BTreeSet<String> {
    cluster
        .api
        .list(SECRETS, None)
        .into_iter()
        .filter(|s| s["metadata"]["name"] == name)
        .map(|s| s["metadata"]["namespace"].as_str().unwrap().to_string())
        .collect()
}

fn set<const N: usize>(names: [&str; N]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn wait_holders(cluster: &Cluster, name: &str, want: &BTreeSet<String>) {
    let ok = cluster
        .api
        .wait_for(WAIT, |_| &holders(cluster, name) == want)
        .await;
    assert!(
        ok,
        "Secret {name} is in {:?}, want {want:?}",
        holders(cluster, name)
    );
}

#[tokio::test]
async fn a_permitted_resource_follows_the_label_and_cleans_up_on_delete() {
    let cluster = Cluster::start().await;
    for (ns, labelled) in [
        ("platform", false),
        ("a", true),
        ("b", true),
        ("c", false),
        ("kube-system", true),
    ] {
        namespace(&cluster, ns, labelled);
    }
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller_with(
        cluster.client.clone(),
        tokens.clone(),
        label_policies().await,
        settings(),
    );
    create_cr(&cluster, "platform", "pull", json!({}));

    // kube-* is excluded by the plugin; unlabelled namespaces get nothing.
    wait_holders(&cluster, "pull", &set(["a", "b"])).await;
    let st = cluster.api.get(CRS, Some("platform"), "pull").unwrap()["status"].clone();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api.get(CRS, Some("platform"), "pull").unwrap()
                ["status"]["servedNamespaces"]
                == 2)
            .await,
        "{st}"
    );
    assert_eq!(tokens.calls(), 1, "one ECR call serves every namespace");
    let cr = cluster.api.get(CRS, Some("platform"), "pull").unwrap();
    assert_eq!(
        cr["metadata"]["finalizers"],
        json!(["ecr.aws.edenlab.io/cleanup"])
    );
    let copy = cluster.api.get(SECRETS, Some("a"), "pull").unwrap();
    assert!(
        copy["metadata"].get("ownerReferences").is_none(),
        "no cross-namespace ownerReference"
    );
    assert_eq!(
        copy["metadata"]["labels"]["ecr.aws.edenlab.io/owner-namespace"],
        "platform"
    );

    // A namespace labelled later gets its copy; one unlabelled loses it.
    namespace(&cluster, "d", true);
    wait_holders(&cluster, "pull", &set(["a", "b", "d"])).await;
    cluster
        .api
        .merge_patch(
            NAMESPACES,
            None,
            "a",
            json!({"metadata": {"labels": {"ecr-pull": null}}}),
            false,
        )
        .unwrap();
    wait_holders(&cluster, "pull", &set(["b", "d"])).await;
    // A deleted copy comes back, from the token already in hand, and so does an edited one.
    settle(&cluster.api, std::time::Duration::from_millis(200)).await;
    cluster.api.delete(SECRETS, Some("b"), "pull").unwrap();
    wait_holders(&cluster, "pull", &set(["b", "d"])).await;
    let mut edited = cluster.api.get(SECRETS, Some("d"), "pull").unwrap();
    edited["data"][".dockerconfigjson"] = json!("e30=");
    cluster.api.replace(SECRETS, edited).unwrap();
    let repaired = cluster
        .api
        .wait_for(WAIT, |api| {
            api.get(SECRETS, Some("d"), "pull").unwrap()["data"][".dockerconfigjson"] != "e30="
        })
        .await;
    assert!(
        repaired,
        "the edited copy in another namespace was not repaired"
    );
    assert_eq!(tokens.calls(), 1, "copies are made from the token in hand");

    // A resync with nothing to do makes no request at all.
    settle(&cluster.api, std::time::Duration::from_millis(300)).await;
    cluster.api.reset_counters();
    cluster
        .api
        .merge_patch(
            CRS,
            Some("platform"),
            "pull",
            json!({"metadata": {"annotations": {"touch": "1"}}}),
            false,
        )
        .unwrap();
    let quiet = poll_until(std::time::Duration::from_secs(1), || {
        cluster.api.counters().total() > 0
    })
    .await;
    assert!(
        !quiet,
        "a no-op resync made requests: {:?}",
        cluster.api.counters()
    );

    // Deleting the resource removes every copy (finalizer), then the resource goes.
    cluster.api.delete(CRS, Some("platform"), "pull").unwrap();
    wait_holders(&cluster, "pull", &BTreeSet::new()).await;
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api.get(CRS, Some("platform"), "pull").is_none())
            .await
    );
    running.stop().await;
}

#[tokio::test]
async fn a_foreign_secret_in_one_namespace_is_kept_and_reported_while_the_others_are_served() {
    let cluster = Cluster::start().await;
    for (ns, labelled) in [("platform", false), ("a", true), ("b", true)] {
        namespace(&cluster, ns, labelled);
    }
    cluster
        .api
        .create(SECRETS, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull", "namespace": "b"}, "type": "Opaque"}))
        .unwrap();
    let running = start_controller_with(
        cluster.client.clone(),
        Arc::new(ScriptedTokens::default()),
        label_policies().await,
        settings(),
    );
    create_cr(&cluster, "platform", "pull", json!({}));
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api.get(SECRETS, Some("a"), "pull").is_some())
            .await
    );
    let ok = cluster
        .api
        .wait_for(WAIT, |api| api.get(CRS, Some("platform"), "pull").unwrap()["status"]["failedNamespaces"][0]["namespace"] == "b")
        .await;
    let status = cluster.api.get(CRS, Some("platform"), "pull").unwrap()["status"].clone();
    assert!(ok, "{status}");
    assert_eq!(status["failedNamespaces"][0]["reason"], "SecretConflict");
    assert_eq!(status["servedNamespaces"], 1);
    // The others are served: Ready, with a reason that says some namespaces failed.
    let ready = ready_of(&json!({"status": status}));
    assert_eq!(ready["status"], "True", "{ready}");
    assert_eq!(ready["reason"], "SomeNamespacesFailed");
    assert_eq!(
        cluster.api.get(SECRETS, Some("b"), "pull").unwrap()["type"],
        "Opaque",
        "foreign Secret kept"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_resource_without_the_privilege_stays_home_whatever_its_plugin_selects() {
    let cluster = Cluster::start().await;
    for (ns, labelled) in [("team-a", true), ("a", true), ("b", true)] {
        namespace(&cluster, ns, labelled);
    }
    let running = start_controller_with(
        cluster.client.clone(),
        Arc::new(ScriptedTokens::default()),
        label_policies().await,
        settings(),
    );
    create_cr(&cluster, "team-a", "pull", json!({}));
    wait_holders(&cluster, "pull", &set(["team-a"])).await;
    let st = cluster.api.get(CRS, Some("team-a"), "pull").unwrap();
    assert!(
        st["metadata"].get("finalizers").is_none(),
        "no finalizer needed at home: {st}"
    );
    // Still only home after the other namespaces change.
    namespace(&cluster, "c", true);
    cluster.api.reset_counters();
    let moved = poll_until(std::time::Duration::from_secs(1), || {
        holders(&cluster, "pull").len() > 1
    })
    .await;
    assert!(!moved);
    running.stop().await;
}

#[tokio::test]
async fn service_accounts_get_the_pull_secret_added_and_removed_without_touching_other_entries() {
    let cluster = Cluster::start().await;
    for (ns, labelled) in [("platform", false), ("a", true)] {
        namespace(&cluster, ns, labelled);
    }
    cluster
        .api
        .create(
            SERVICE_ACCOUNTS,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "a"},
                   "imagePullSecrets": [{"name": "someone-elses"}]}),
        )
        .unwrap();
    let running = start_controller_with(
        cluster.client.clone(),
        Arc::new(ScriptedTokens::default()),
        label_policies().await,
        settings(),
    );
    create_cr(
        &cluster,
        "platform",
        "pull",
        json!({"serviceAccounts": ["default"]}),
    );
    let pulls = |ns: &str| -> Vec<String> {
        cluster
            .api
            .get(SERVICE_ACCOUNTS, Some(ns), "default")
            .map(|sa| {
                sa["imagePullSecrets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .unwrap_or_default()
            .iter()
            .map(|r| r["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let ok = cluster
        .api
        .wait_for(WAIT, |_| pulls("a") == ["someone-elses", "pull"])
        .await;
    assert!(ok, "{:?}", pulls("a"));

    // A new namespace's ServiceAccount appears a moment after the namespace.
    namespace(&cluster, "b", true);
    wait_holders(&cluster, "pull", &set(["a", "b"])).await;
    cluster
        .api
        .create(SERVICE_ACCOUNTS, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "b"}}))
        .unwrap();
    let ok = cluster.api.wait_for(WAIT, |_| pulls("b") == ["pull"]).await;
    assert!(ok, "{:?}", pulls("b"));

    // Unlabelled: the copy goes, and only our entry with it.
    cluster
        .api
        .merge_patch(
            NAMESPACES,
            None,
            "a",
            json!({"metadata": {"labels": {"ecr-pull": null}}}),
            false,
        )
        .unwrap();
    let ok = cluster
        .api
        .wait_for(WAIT, |_| pulls("a") == ["someone-elses"])
        .await;
    assert!(ok, "{:?}", pulls("a"));
    wait_holders(&cluster, "pull", &set(["b"])).await;
    running.stop().await;
}

#[tokio::test]
async fn a_fanout_plugin_answering_outside_the_candidates_fails_only_its_resource() {
    let cluster = Cluster::start().await;
    for (ns, labelled) in [("platform", false), ("a", true)] {
        namespace(&cluster, ns, labelled);
    }
    let entry = |name: &str, krate: &str, settings: &str| {
        let path = plugins::wasm(krate);
        format!(
            "  {name}:\n    path: {}\n    sha256: {}\n    settings: {settings}\n",
            path.display(),
            plugins::sha256_of(&path)
        )
    };
    let yaml = format!(
        "plugins:\n{}{}",
        entry(
            "labelled",
            "fanout-label",
            "{label: ecr-pull, value: enabled}"
        ),
        entry("rogue", "outside-candidates", "{}")
    );
    let registry = PluginRegistry::from_yaml(&yaml, &plugins::repo_root()).unwrap();
    let policies = tokio::task::spawn_blocking(move || {
        Arc::new(Policies::load(&registry, HostConfig::default()))
    })
    .await
    .unwrap();
    let running = start_controller_with(
        cluster.client.clone(),
        Arc::new(ScriptedTokens::default()),
        policies,
        settings(),
    );
    create_cr(
        &cluster,
        "platform",
        "rogue",
        json!({"policy": {"fanout": "rogue"}}),
    );
    create_cr(&cluster, "platform", "pull", json!({}));

    let failed = cluster
        .api
        .wait_for(WAIT, |api| {
            ready_of(&api.get(CRS, Some("platform"), "rogue").unwrap_or_default())["reason"]
                == "PolicyFailed"
        })
        .await;
    let cond = ready_of(&cluster.api.get(CRS, Some("platform"), "rogue").unwrap());
    assert!(failed, "{cond}");
    assert!(
        cond["message"].as_str().unwrap().contains("rogue"),
        "{cond}"
    );
    wait_holders(&cluster, "pull", &set(["a"])).await;
    assert!(
        holders(&cluster, "rogue").is_empty(),
        "nothing written for the failing resource"
    );
    running.stop().await;
}
