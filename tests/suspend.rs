//! `spec.suspend`: no AWS call and no Secret write while it is true, `Ready` keeps its last
//! value and a `Suspended` condition says so; set back to false, refreshing goes on.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tokens::ScriptedTokens;
use common::*;
use serde_json::{Value, json};

fn condition(cr: &Value, type_: &str) -> Value {
    cr["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

fn set_suspend(cluster: &Cluster, name: &str, suspend: bool) {
    cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            name,
            json!({"spec": {"suspend": suspend}}),
            false,
        )
        .unwrap();
}

#[tokio::test]
async fn a_suspended_resource_is_left_alone_until_resumed() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster.apply_sample("paused", json!({}));
    cluster.wait_ready("paused", "True", "TokenRefreshed").await;
    assert_eq!(tokens.calls(), 1);

    set_suspend(&cluster, "paused", true);
    let suspended = cluster
        .api
        .wait_for(WAIT, |api| {
            let cr = api
                .get(CRS, Some("default"), "paused")
                .unwrap_or(Value::Null);
            condition(&cr, "Suspended")["status"] == "True"
        })
        .await;
    assert!(suspended, "{:#}", cluster.cr("paused")["status"]);
    let cr = cluster.cr("paused");
    let c = condition(&cr, "Suspended");
    assert_eq!(c["reason"], "Suspended");
    assert!(c["message"].as_str().unwrap().contains("expire at"), "{c}");
    assert_eq!(
        ready_of(&cr)["status"],
        "True",
        "Ready keeps its last value"
    );
    assert!(
        cr["status"]["nextRefreshTime"].is_null(),
        "no refresh scheduled"
    );
    cluster.wait_event("paused", "Normal", "Suspended").await;

    // While suspended, a deleted Secret is not written again and AWS is not asked.
    cluster
        .api
        .delete(SECRETS, Some("default"), "paused")
        .unwrap();
    settle(&cluster.api, Duration::from_millis(500)).await;
    assert!(cluster.secret("paused").is_none());
    assert_eq!(tokens.attempts(), 1);

    // Resumed: the condition turns False and the Secret is served again.
    set_suspend(&cluster, "paused", false);
    let resumed = cluster
        .api
        .wait_for(WAIT, |api| {
            let cr = api
                .get(CRS, Some("default"), "paused")
                .unwrap_or(Value::Null);
            condition(&cr, "Suspended")["reason"] == "Resumed"
                && api.get(SECRETS, Some("default"), "paused").is_some()
        })
        .await;
    running.stop().await;
    assert!(resumed, "{:#}", cluster.cr("paused")["status"]);
    let cr = cluster.cr("paused");
    assert_eq!(condition(&cr, "Suspended")["status"], "False");
    assert_eq!(ready_of(&cr)["status"], "True");
    world::assert_pull_secret_sound(&cluster.secret("paused").unwrap());
}
