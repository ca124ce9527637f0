//! `watch.namespaces` with several namespaces: the real controller against the Kubernetes
//! stand-in serves the resources of the listed namespaces — one watch per namespace for
//! each kind it reads, never a cluster-wide one — and never touches a third namespace.

mod common;

use std::sync::Arc;

use common::tokens::ScriptedTokens;
use common::world::NAMESPACES;
use common::*;
use ecr_token_refresh::controller::Settings;
use kube_standin::Verb;
use serde_json::{Value, json};

const SERVICE_ACCOUNTS: &str = "v1/serviceaccounts";
const WATCHED: [&str; 2] = ["apps", "team-b"];
const IGNORED: &str = "team-c";

fn create_namespaces(cluster: &Cluster) {
    for ns in ["apps", "team-b", "team-c"] {
        cluster
            .api
            .create(
                NAMESPACES,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .unwrap();
    }
}

fn apply(cluster: &Cluster, namespace: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({"ecrRegistry": HOST, "frequency": "8h", "region": "us-east-1"});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
        )
        .unwrap()
}

fn service_account(cluster: &Cluster, namespace: &str, name: &str) {
    cluster
        .api
        .create(
            SERVICE_ACCOUNTS,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": name, "namespace": namespace}}),
        )
        .unwrap();
}

fn cr(cluster: &Cluster, namespace: &str, name: &str) -> Value {
    cluster
        .api
        .get(CRS, Some(namespace), name)
        .unwrap_or(Value::Null)
}

async fn wait_ready(cluster: &Cluster, namespace: &str, name: &str) {
    let ok = cluster
        .api
        .wait_for(WAIT, |api| {
            let c = ready_of(&api.get(CRS, Some(namespace), name).unwrap_or(Value::Null));
            c["status"] == "True" && c["reason"] == "TokenRefreshed"
        })
        .await;
    assert!(
        ok,
        "{namespace}/{name} never became Ready; status: {:#}",
        cr(cluster, namespace, name)["status"]
    );
}

fn pulls(cluster: &Cluster, namespace: &str, name: &str) -> Value {
    cluster
        .api
        .get(SERVICE_ACCOUNTS, Some(namespace), name)
        .map(|sa| sa["imagePullSecrets"].clone())
        .unwrap_or(Value::Null)
}

/// The ignored namespace is exactly as the test left it: the resource has no status and no
/// finalizer, no Secret or Event was written there, its ServiceAccount is unchanged, and no
/// request of the operator's ever named it.
fn assert_untouched(cluster: &Cluster, ignored_rv: &Value) {
    let ignored = cr(cluster, IGNORED, "creds");
    assert!(ignored["status"].is_null(), "{ignored:#}");
    assert!(ignored["metadata"]["finalizers"].is_null(), "{ignored:#}");
    assert_eq!(&ignored["metadata"]["resourceVersion"], ignored_rv);
    assert!(cluster.api.list(SECRETS, Some(IGNORED)).is_empty());
    assert!(cluster.api.list(EVENTS, Some(IGNORED)).is_empty());
    assert!(pulls(cluster, IGNORED, "builder").is_null());
    let touching: Vec<String> = cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| r.namespace.as_deref() == Some(IGNORED))
        .map(|r| format!("{:?} {} {:?}", r.verb, r.gvr, r.name))
        .collect();
    assert!(touching.is_empty(), "requests in {IGNORED}: {touching:?}");
}

#[tokio::test]
async fn two_watched_namespaces_are_served_and_a_third_is_ignored() {
    let cluster = Cluster::start().await;
    create_namespaces(&cluster);
    for ns in ["apps", "team-b", "team-c"] {
        service_account(&cluster, ns, "builder");
    }
    // One resource per namespace before the controller starts, each naming the
    // ServiceAccount `builder` of its namespace.
    for ns in ["apps", "team-b", "team-c"] {
        apply(
            &cluster,
            ns,
            "creds",
            json!({"serviceAccounts": ["builder"]}),
        );
    }
    let ignored_rv = cr(&cluster, IGNORED, "creds")["metadata"]["resourceVersion"].clone();
    cluster.api.clear_requests();

    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(
        cluster.client.clone(),
        tokens.clone(),
        Settings {
            namespaces: WATCHED.iter().map(|s| s.to_string()).collect(),
            ..fast_settings()
        },
    );

    for ns in WATCHED {
        wait_ready(&cluster, ns, "creds").await;
        let secret = cluster
            .api
            .get(SECRETS, Some(ns), "creds")
            .unwrap_or_else(|| panic!("no Secret {ns}/creds"));
        assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
        // The ServiceAccount watch of each namespace feeds the cache reconciles read.
        assert_eq!(pulls(&cluster, ns, "builder"), json!([{"name": "creds"}]));
    }
    // Both served, then quiet: the third was never looked at.
    settle(&cluster.api, std::time::Duration::from_millis(300)).await;
    assert_untouched(&cluster, &ignored_rv);

    // One watch per namespace for each namespaced kind; no cluster-wide list or watch of
    // them, and no Namespace watch (an operator watching namespaces does not fan out).
    let reads = cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| matches!(r.verb, Verb::List | Verb::Watch))
        .collect::<Vec<_>>();
    for gvr in [CRS, SECRETS, SERVICE_ACCOUNTS] {
        for ns in WATCHED {
            assert!(
                reads.iter().any(|r| r.verb == Verb::Watch
                    && r.gvr == gvr
                    && r.namespace.as_deref() == Some(ns)),
                "no watch of {gvr} in {ns}"
            );
        }
    }
    for r in &reads {
        assert!(
            r.namespace
                .as_deref()
                .is_some_and(|ns| WATCHED.contains(&ns)),
            "a {:?} of {} outside the watched namespaces",
            r.verb,
            r.gvr
        );
    }

    // New objects in a watched namespace are seen; the watches survive being cut (every
    // watch lists again, the merged store keeps both namespaces).
    cluster.api.close_watches();
    apply(&cluster, "team-b", "second", json!({}));
    wait_ready(&cluster, "team-b", "second").await;
    cluster
        .api
        .delete(SECRETS, Some("apps"), "creds")
        .expect("delete the Secret of apps/creds");
    let repaired = cluster
        .api
        .wait_for(WAIT, |api| {
            api.get(SECRETS, Some("apps"), "creds").is_some()
        })
        .await;
    assert!(
        repaired,
        "the deleted Secret of apps/creds was not written again"
    );
    // A new resource in the ignored namespace is not served either.
    apply(&cluster, IGNORED, "later", json!({}));
    settle(&cluster.api, std::time::Duration::from_millis(300)).await;
    assert!(cr(&cluster, IGNORED, "later")["status"].is_null());
    assert_untouched(&cluster, &ignored_rv);
    running.stop().await;
}
