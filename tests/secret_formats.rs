//! `spec.secretTemplate`: the Argo CD repository and basic-auth formats, template labels
//! and annotations (the operator's own win), and a format change that writes the new
//! Secrets before it removes the old one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::tokens::ScriptedTokens;
use common::*;
use kube_standin::StandIn;
use serde_json::{Value, json};

const WEST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fn text(s: &Value, key: &str) -> String {
    let b64 = s["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no key {key} in {:#}", s["metadata"]));
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

fn keys(s: &Value) -> Vec<String> {
    s["data"].as_object().unwrap().keys().cloned().collect()
}

async fn cluster_with_request_log() -> Cluster {
    let api = StandIn::new()
        .with_bookmark_interval(Duration::from_millis(200))
        .with_request_log(true);
    let server = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = kube::Config::new(server.url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    Cluster {
        api,
        server,
        client,
    }
}

#[tokio::test]
async fn argocd_repository_and_basic_formats_write_one_secret_per_registry_with_the_documented_keys()
 {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster.apply_sample(
        "charts",
        json!({"additionalRegistries": [WEST], "secretTemplate": {"format": "argocd-repository"}}),
    );
    cluster.apply_sample("flux", json!({"secretTemplate": {"format": "basic"}}));
    cluster.wait_ready("charts", "True", "TokenRefreshed").await;
    cluster.wait_ready("flux", "True", "TokenRefreshed").await;
    running.stop().await;
    let charts = cluster.cr("charts");
    assert_eq!(
        charts["status"]["servedNamespaces"], 1,
        "{:#}",
        charts["status"]
    );

    // Argo CD: one repository Secret per registry host.
    let listed: Vec<&str> = charts["status"]["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "charts-argocd-123456789012-eu-west-1",
            "charts-argocd-123456789012-us-east-1"
        ]
    );
    assert!(
        cluster.secret("charts").is_none(),
        "no dockerconfigjson Secret"
    );
    for (name, host) in [
        ("charts-argocd-123456789012-us-east-1", HOST),
        ("charts-argocd-123456789012-eu-west-1", WEST),
    ] {
        let s = cluster
            .secret(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(s["type"], "Opaque");
        assert_eq!(
            s["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
            "repository"
        );
        assert_eq!(
            keys(&s),
            ["enableOCI", "name", "password", "type", "url", "username"]
        );
        assert_eq!(text(&s, "type"), "helm");
        assert_eq!(text(&s, "enableOCI"), "true");
        assert_eq!(text(&s, "url"), host);
        assert_eq!(text(&s, "username"), "AWS");
        assert!(
            text(&s, "password").starts_with("secret-password-"),
            "{name}: the issued password"
        );
        assert_eq!(
            s["metadata"]["ownerReferences"][0]["name"], "charts",
            "garbage-collected with the resource"
        );
    }
    // For the record: the first one as YAML, password elided.
    let mut shown = cluster
        .secret("charts-argocd-123456789012-us-east-1")
        .unwrap();
    shown["data"]["password"] = json!("<elided>");
    for k in [
        "managedFields",
        "creationTimestamp",
        "resourceVersion",
        "uid",
    ] {
        shown["metadata"].as_object_mut().unwrap().remove(k);
    }
    println!("{}", serde_yaml::to_string(&shown).unwrap());

    // Each holds the token of its own region.
    assert_ne!(
        text(
            &cluster
                .secret("charts-argocd-123456789012-us-east-1")
                .unwrap(),
            "password"
        ),
        text(
            &cluster
                .secret("charts-argocd-123456789012-eu-west-1")
                .unwrap(),
            "password"
        ),
    );

    // basic: kubernetes.io/basic-auth with username and password.
    let s = cluster
        .secret("flux-basic-123456789012-us-east-1")
        .expect("the basic-auth Secret");
    assert_eq!(s["type"], "kubernetes.io/basic-auth");
    assert_eq!(keys(&s), ["password", "username"]);
    assert_eq!(text(&s, "username"), "AWS");
    assert!(text(&s, "password").starts_with("secret-password-"));
}

#[tokio::test]
async fn template_labels_land_and_the_operators_own_cannot_be_overridden() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    let cr = cluster.apply_sample(
        "labelled",
        json!({"secretTemplate": {"metadata": {
            "labels": {
                "team": "a",
                "app.kubernetes.io/managed-by": "someone-else",
                "ecr.aws.edenlab.io/owner-uid": "forged"
            },
            "annotations": {
                "argocd.argoproj.io/sync-options": "Prune=false",
                "ecr.aws.edenlab.io/expires-at": "never"
            }
        }}}),
    );
    cluster
        .wait_ready("labelled", "True", "TokenRefreshed")
        .await;
    let s = cluster.secret("labelled").unwrap();
    let labels = &s["metadata"]["labels"];
    assert_eq!(labels["team"], "a");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "ecr-token-refresh");
    assert_eq!(
        labels["ecr.aws.edenlab.io/owner-uid"],
        cr["metadata"]["uid"]
    );
    let annotations = &s["metadata"]["annotations"];
    assert_eq!(
        annotations["argocd.argoproj.io/sync-options"],
        "Prune=false"
    );
    assert_ne!(annotations["ecr.aws.edenlab.io/expires-at"], "never");
    assert_eq!(world::password_in(&s, HOST), ScriptedTokens::password(1));

    // A template change rewrites the Secret with the token it holds (no ECR call).
    cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "labelled",
            json!({"spec": {"secretTemplate": {"metadata": {"labels": {"team": "b"}}}}}),
            false,
        )
        .unwrap();
    let relabelled = poll_until(WAIT, || {
        cluster
            .secret("labelled")
            .is_some_and(|s| s["metadata"]["labels"]["team"] == "b")
    })
    .await;
    running.stop().await;
    assert!(
        relabelled,
        "{:#}",
        cluster.secret("labelled").unwrap()["metadata"]
    );
    assert_eq!(tokens.calls(), 1, "the held token is written again");
    let s = cluster.secret("labelled").unwrap();
    assert_eq!(world::password_in(&s, HOST), ScriptedTokens::password(1));
    assert_eq!(
        s["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "ecr-token-refresh"
    );
}

#[tokio::test]
async fn a_format_change_writes_the_new_secret_before_it_removes_the_old_one() {
    let cluster = cluster_with_request_log().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster.apply_sample("switch", json!({}));
    cluster.wait_ready("switch", "True", "TokenRefreshed").await;
    assert_eq!(
        cluster.secret("switch").unwrap()["type"],
        "kubernetes.io/dockerconfigjson"
    );

    cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "switch",
            json!({"spec": {"secretTemplate": {"format": "basic"}}}),
            false,
        )
        .unwrap();
    let new = "switch-basic-123456789012-us-east-1";
    let replaced = poll_until(WAIT, || {
        cluster.secret(new).is_some() && cluster.secret("switch").is_none()
    })
    .await;
    running.stop().await;
    assert!(replaced, "{:#}", cluster.cr("switch")["status"]);
    assert_eq!(
        cluster.secret(new).unwrap()["type"],
        "kubernetes.io/basic-auth"
    );
    assert_eq!(
        tokens.calls(),
        1,
        "the held token is written in the new format"
    );

    // The request log: the new Secret was created before the old one was deleted.
    let log = cluster.api.requests();
    let position = |verb: &str, name: &str| {
        log.iter()
            .position(|r| {
                r.succeeded()
                    && format!("{:?}", r.verb).eq_ignore_ascii_case(verb)
                    && r.is_for(SECRETS, Some("default"), name)
            })
            .unwrap_or_else(|| panic!("no successful {verb} of {name}"))
    };
    assert!(
        position("create", new) < position("delete", "switch"),
        "the old Secret went only after its replacement existed"
    );
    let cr = cluster.cr("switch");
    assert_eq!(ready_of(&cr)["status"], "True");
    assert_eq!(cr["status"]["secrets"][0]["name"], new);
}
