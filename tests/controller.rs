//! The real controller, in-process, against the Kubernetes stand-in (and moto, or a
//! scripted token source where a test needs changing tokens or failures on demand).

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::moto::Moto;
use common::tokens::ScriptedTokens;
use common::*;
use ecr_token_refresh::ecr::AwsTokenSource;
use serde_json::{Value, json};

fn docker_config(secret: &Value) -> Value {
    let b64 = secret["data"][".dockerconfigjson"]
        .as_str()
        .expect(".dockerconfigjson present");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn password_of(secret: &Value) -> String {
    docker_config(secret)["auths"][HOST]["password"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_sample_yields_the_exact_secret_from_moto() {
    let moto = Moto::start();
    let cluster = Cluster::start().await;
    let tokens = Arc::new(AwsTokenSource::new(moto.sdk_config().await));
    let running = start_controller(cluster.client.clone(), tokens, fast_settings());

    let cr = cluster.apply_sample("ecr-credentials", json!({}));
    let ready = cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    assert_eq!(ready["observedGeneration"], 1);

    let secret = cluster
        .secret("ecr-credentials")
        .expect("Secret default/ecr-credentials");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    // moto's token is base64("AWS:<registryId>-auth-token").
    let expected_auth =
        base64::engine::general_purpose::STANDARD.encode("AWS:123456789012-auth-token");
    assert_eq!(
        docker_config(&secret),
        json!({"auths": {HOST: {"username": "AWS", "password": "123456789012-auth-token", "auth": expected_auth}}})
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ECRTokenRefresh");
    assert_eq!(owner["name"], "ecr-credentials");
    assert_eq!(owner["uid"], cr["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "ecr-token-refresh"
    );

    let status = &cluster.cr("ecr-credentials")["status"];
    assert_eq!(status["phase"], "Ready");
    assert!(status.get("error").is_none() || status["error"].is_null());
    assert_eq!(status["expiresAt"], "2015-01-01T00:00:00Z");
    assert_eq!(
        status["secrets"],
        json!([{"namespace": "default", "name": "ecr-credentials"}])
    );
    // moto's expiry is in the past: the message says so and the schedule does not spin.
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("already in the past"),
        "{ready}"
    );
    let writes = cluster.api.counters().writes();
    let settled = poll_until(std::time::Duration::from_secs(2), || {
        cluster.api.counters().writes() > writes + 2
    })
    .await;
    assert!(
        !settled,
        "the controller keeps writing after the Secret is in place"
    );
    cluster
        .wait_event("ecr-credentials", "Normal", "Created")
        .await;
    running.stop().await;
}

#[tokio::test]
async fn a_deleted_or_edited_secret_is_repaired() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster.apply_sample("ecr-credentials", json!({}));
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    assert_eq!(tokens.calls(), 1);

    cluster
        .api
        .delete(SECRETS, Some("default"), "ecr-credentials")
        .unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api
                .get(SECRETS, Some("default"), "ecr-credentials")
                .is_some())
            .await
    );
    // Rewritten with the token the operator holds: no new ECR call.
    assert_eq!(tokens.calls(), 1);

    // An edit of the data (annotations untouched) is noticed: its resourceVersion moved.
    let mut secret = cluster.secret("ecr-credentials").unwrap();
    secret["data"][".dockerconfigjson"] = json!("e30=");
    cluster.api.replace(SECRETS, secret).unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| {
                api.get(SECRETS, Some("default"), "ecr-credentials")
                    .is_some_and(|s| s["data"][".dockerconfigjson"] != "e30=")
            })
            .await
    );
    assert_eq!(
        password_of(&cluster.secret("ecr-credentials").unwrap()),
        ScriptedTokens::password(1)
    );
    assert_eq!(tokens.calls(), 1);
    cluster
        .wait_event("ecr-credentials", "Normal", "Repaired")
        .await;
    running.stop().await;
}

#[tokio::test]
async fn a_failing_token_source_keeps_the_secret_and_recovers() {
    let cluster = Cluster::start().await;
    // Tokens that live 4 s are due for refresh 2 s after they are fetched.
    let tokens = Arc::new(ScriptedTokens::with_lifetime(4));
    let running = start_controller(cluster.client.clone(), tokens.clone(), expiring_settings());
    cluster.apply_sample("ecr-credentials", json!({}));
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    let before = cluster.secret("ecr-credentials").unwrap();

    tokens.fail(true);
    let cond = cluster
        .wait_ready("ecr-credentials", "False", "ECRUnreachable")
        .await;
    let msg = cond["message"].as_str().unwrap();
    assert!(
        msg.contains("connection refused") && msg.contains("kept as they are"),
        "{msg}"
    );
    let status = cluster.cr("ecr-credentials")["status"].clone();
    assert_eq!(status["phase"], "Failed");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
    assert!(
        status["expiresAt"].is_string(),
        "expiry of the kept token stays in status"
    );
    // Retries go on with backoff while the Secret stays exactly as it was.
    let attempts = tokens.attempts();
    let retried = poll_until(WAIT, || tokens.attempts() >= attempts + 2).await;
    assert!(retried, "retries continue while the token source fails");
    assert_eq!(
        cluster.secret("ecr-credentials").unwrap()["data"],
        before["data"]
    );
    cluster
        .wait_event("ecr-credentials", "Warning", "ECRUnreachable")
        .await;

    tokens.fail(false);
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    let after = cluster.secret("ecr-credentials").unwrap();
    assert_eq!(password_of(&after), ScriptedTokens::password(2));
    let status = cluster.cr("ecr-credentials")["status"].clone();
    assert!(
        status.get("error").is_none() || status["error"].is_null(),
        "error cleared: {status}"
    );
    assert!(status.get("consecutiveFailures").is_none(), "{status}");
    running.stop().await;
}

#[tokio::test]
async fn a_spec_change_reuses_the_held_token() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster.apply_sample("ecr-credentials", json!({}));
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "ecr-credentials",
            json!({"spec": {"frequency": "4h"}}),
            false,
        )
        .unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| {
                ready_of(&api.get(CRS, Some("default"), "ecr-credentials").unwrap())
                    ["observedGeneration"]
                    == 2
            })
            .await
    );
    assert_eq!(cluster.ready("ecr-credentials")["status"], "True");
    assert_eq!(tokens.calls(), 1, "the held token serves the new spec");
    running.stop().await;
}

#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let cluster = Cluster::start().await;
    let foreign = cluster
        .api
        .create(
            SECRETS,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "ecr-credentials", "namespace": "default"},
                   "type": "Opaque", "data": {"hello": "d29ybGQ="}}),
        )
        .unwrap();
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster.apply_sample("ecr-credentials", json!({}));
    let cond = cluster
        .wait_ready("ecr-credentials", "False", "SecretConflict")
        .await;
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("default/ecr-credentials")
    );
    let now = cluster.secret("ecr-credentials").unwrap();
    assert_eq!(
        now["metadata"]["resourceVersion"],
        foreign["metadata"]["resourceVersion"]
    );
    assert!(
        tokens.calls() <= 1,
        "at most one token is fetched, and written nowhere"
    );
    cluster
        .wait_event("ecr-credentials", "Warning", "SecretConflict")
        .await;

    // Once the owner removes it, the operator writes its own.
    cluster
        .api
        .delete(SECRETS, Some("default"), "ecr-credentials")
        .unwrap();
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    running.stop().await;
}

#[tokio::test]
async fn an_invalid_spec_gets_invalid_spec_and_no_aws_call() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster.apply_sample("bad-region", json!({"region": "eu-west-1"}));
    cluster.apply_sample("bad-frequency", json!({"frequency": "0s"}));
    cluster.apply_sample("bad-host", json!({"ecrRegistry": "docker.io"}));
    let c = cluster
        .wait_ready("bad-region", "False", "InvalidSpec")
        .await;
    assert!(
        c["message"].as_str().unwrap().starts_with("spec.region:"),
        "{c}"
    );
    let c = cluster
        .wait_ready("bad-frequency", "False", "InvalidSpec")
        .await;
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.frequency:"),
        "{c}"
    );
    let c = cluster.wait_ready("bad-host", "False", "InvalidSpec").await;
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.ecrRegistry:"),
        "{c}"
    );
    assert_eq!(tokens.calls(), 0);
    assert!(cluster.secret("bad-region").is_none());
    cluster
        .wait_event("bad-region", "Warning", "InvalidSpec")
        .await;

    // Fixing the spec makes it Ready.
    cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "bad-region",
            json!({"spec": {"region": "us-east-1"}}),
            false,
        )
        .unwrap();
    cluster
        .wait_ready("bad-region", "True", "TokenRefreshed")
        .await;
    assert_eq!(tokens.calls(), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_restart_does_not_refresh_fresh_tokens() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    for name in ["a", "b", "c"] {
        cluster.apply_sample(name, json!({}));
    }
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    for name in ["a", "b", "c"] {
        cluster.wait_ready(name, "True", "TokenRefreshed").await;
    }
    running.stop().await;
    // One token per identity and region serves all three.
    assert_eq!(tokens.calls(), 1);

    cluster.api.reset_counters();
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    // The new controller lists the resources and its managed Secrets, reconciles every
    // resource from those caches...
    assert!(
        poll_until(WAIT, || cluster.api.counters().get_count("list", SECRETS)
            >= 1)
        .await
    );
    assert!(poll_until(WAIT, || cluster.api.counters().get_count("list", CRS) >= 1).await);
    settle(&cluster.api, std::time::Duration::from_millis(300)).await;
    running.stop().await;
    // ...and, the tokens being fresh, fetches and writes nothing.
    assert_eq!(tokens.calls(), 1);
    assert_eq!(cluster.api.counters().get_count("patch", SECRETS), 0);
}

#[tokio::test]
async fn tokens_never_reach_status_or_events() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::with_lifetime(4));
    let running = start_controller(cluster.client.clone(), tokens.clone(), expiring_settings());
    cluster.apply_sample("ecr-credentials", json!({}));
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    tokens.fail(true);
    cluster
        .wait_ready("ecr-credentials", "False", "ECRUnreachable")
        .await;
    running.stop().await;
    let everything = format!(
        "{} {:?}",
        cluster.cr("ecr-credentials"),
        cluster.events("ecr-credentials")
    );
    assert!(
        !everything.contains("secret-password"),
        "a token leaked: {everything}"
    );
}
