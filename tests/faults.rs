//! The fault matrix, part 1: ECR failures, failing Kubernetes writes, bad input. Each case
//! runs the real controller against the Kubernetes stand-in, injects one fault, asserts what
//! the operator did (ECR calls, status, Events) and ends with [`World::check`]: no managed
//! Secret lost or blanked, no foreign Secret changed, the operator still serving.

mod common;

use std::time::{Duration, Instant};

use common::world::*;
use common::*;
use ecr_token_refresh::ecr::FailureKind;
use kube_standin::{FaultRule, Verb};
use serde_json::{Value, json};

const STATUS: &str = "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes/status";

/// Events about `name` in `default`: (type, reason, series count).
fn events(world: &World, name: &str) -> Vec<(String, String, i64)> {
    world
        .cluster
        .api
        .list(EVENTS, Some("default"))
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["series"]["count"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

/// Persistent failures of one kind: attempts over a window stay within what the backoff
/// allows (every delay is at least 500 ms, so at most 1 + window / 500 ms), retries do go
/// on, the status names the reason, and repeats are one Warning Event with a count.
async fn persistent_ecr_failure(kind: FailureKind, reason: &str) {
    let mut world = World::start().await;
    world.tokens.fail_in("us-east-1", kind);
    world.apply("default", "victim", spec_for(HOST));
    world.wait_ready("default", "victim", "False", reason).await;
    let first = world.tokens.attempts();
    let started = Instant::now();
    let window = Duration::from_secs(5);
    tokio::time::sleep(window).await;
    let attempts = world.tokens.attempts() - first;
    let bound = 1 + (started.elapsed().as_millis() / 500) as u32;
    assert!(attempts >= 2, "retries go on: {attempts} in {window:?}");
    assert!(
        attempts <= bound,
        "{attempts} attempts in {window:?}: the backoff does not hold (bound {bound})"
    );
    let warnings: Vec<_> = events(&world, "victim")
        .into_iter()
        .filter(|(t, r, _)| t == "Warning" && r == reason)
        .collect();
    assert_eq!(warnings.len(), 1, "one Event per reason: {warnings:?}");
    assert!(warnings[0].2 >= 2, "repeats are counted: {warnings:?}");
    let status = &world.cr("default", "victim")["status"];
    assert!(
        status["consecutiveFailures"].as_u64().unwrap() >= 2,
        "{status}"
    );
    assert!(world.secret("default", "victim").is_none());
    world.tokens.fail(false);
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn ecr_access_denied_backs_off() {
    persistent_ecr_failure(FailureKind::AccessDenied, "ECRAccessDenied").await;
}

#[tokio::test]
async fn ecr_throttling_backs_off() {
    persistent_ecr_failure(FailureKind::Throttled, "ECRThrottled").await;
}

#[tokio::test]
async fn ecr_server_errors_back_off() {
    persistent_ecr_failure(FailureKind::ServerError, "ECRServerError").await;
}

#[tokio::test]
async fn ecr_timeouts_back_off() {
    persistent_ecr_failure(FailureKind::Network, "ECRUnreachable").await;
}

#[tokio::test]
async fn an_invalid_ecr_answer_backs_off() {
    persistent_ecr_failure(FailureKind::InvalidResponse, "ECRInvalidResponse").await;
}

#[tokio::test]
async fn a_secret_deleted_during_an_ecr_outage_comes_back_with_the_held_token() {
    let mut world = World::start_with(
        expiring_settings(),
        fast_policies(),
        tokens::ScriptedTokens::with_lifetime(6),
    )
    .await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    let before = world.secret("default", "victim").unwrap();
    world.tokens.fail_in("us-east-1", FailureKind::Network);
    world
        .wait_ready("default", "victim", "False", "ECRUnreachable")
        .await;
    world
        .cluster
        .api
        .delete(SECRETS, Some("default"), "victim")
        .unwrap();
    assert!(
        world
            .cluster
            .api
            .wait_for(WAIT, |api| api
                .get(SECRETS, Some("default"), "victim")
                .is_some())
            .await,
        "the Secret is restored while ECR is down"
    );
    let after = world.secret("default", "victim").unwrap();
    assert_eq!(password_in(&after, HOST), password_in(&before, HOST));
    world.tokens.fail(false);
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

/// The first 6 status writes fail with `code`: the Secret is written once, the token is
/// held, and the retries cost no new ECR call.
async fn failing_status_writes(code: u16) {
    let mut world = World::start().await;
    world.cluster.api.faults().add(
        FaultRule::new(code)
            .verb(Verb::Patch)
            .gvr(STATUS)
            .name("victim")
            .times(6),
    );
    let calls = world.ecr_calls();
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    assert_eq!(
        world.ecr_calls() - calls,
        1,
        "six failed status writes, one ECR call"
    );
    let creates = world
        .cluster
        .api
        .requests()
        .iter()
        .filter(|r| r.verb == Verb::Create && r.is_for("v1/secrets", Some("default"), "victim"))
        .count();
    assert_eq!(creates, 1, "the Secret is written once");
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn failed_status_writes_cost_no_new_token() {
    failing_status_writes(500).await;
}

#[tokio::test]
async fn conflicting_status_writes_cost_no_new_token() {
    failing_status_writes(409).await;
}

#[tokio::test]
async fn throttled_status_writes_cost_no_new_token() {
    failing_status_writes(429).await;
}

/// A Kubernetes write that fails with `status` a few times is retried with the held token.
async fn failing_secret_writes(verb: Verb, status: u16) {
    let mut world = World::start().await;
    world.cluster.api.faults().add(
        FaultRule::new(status)
            .verb(verb)
            .gvr("v1/secrets")
            .name("victim")
            .times(3),
    );
    let calls = world.ecr_calls();
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    assert_eq!(world.ecr_calls() - calls, 1, "retries reuse the held token");
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn secret_create_500s_are_retried() {
    failing_secret_writes(Verb::Create, 500).await;
}

#[tokio::test]
async fn secret_create_429s_are_retried() {
    failing_secret_writes(Verb::Create, 429).await;
}

#[tokio::test]
async fn a_refused_secret_write_is_reported_and_retried_without_new_tokens() {
    let mut world = World::start().await;
    world.cluster.api.faults().add(
        FaultRule::new(422)
            .verb(Verb::Create)
            .gvr("v1/secrets")
            .name("victim"),
    );
    let calls = world.ecr_calls();
    world.apply("default", "victim", spec_for(HOST));
    let c = world
        .wait_ready("default", "victim", "False", "SecretWriteFailed")
        .await;
    assert!(c["message"].as_str().unwrap().contains("422"), "{c}");
    let attempts_before = world
        .cluster
        .api
        .counters()
        .get_count("create", "v1/secrets");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let creates = world
        .cluster
        .api
        .counters()
        .get_count("create", "v1/secrets")
        - attempts_before;
    assert!(
        (1..=7).contains(&creates),
        "{creates} create attempts in 3 s: retries with backoff"
    );
    assert_eq!(
        world.ecr_calls() - calls,
        1,
        "one token, held across retries"
    );
    world.cluster.api.faults().clear();
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn an_edited_secret_is_repaired_with_the_held_token() {
    let mut world = World::start().await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    let calls = world.ecr_calls();
    let mut s = world.secret("default", "victim").unwrap();
    s["data"][".dockerconfigjson"] = json!("e30=");
    world.cluster.api.replace(SECRETS, s).unwrap();
    assert!(
        world
            .cluster
            .api
            .wait_for(WAIT, |api| api
                .get(SECRETS, Some("default"), "victim")
                .is_some_and(|s| s["data"][".dockerconfigjson"] != "e30="))
            .await
    );
    assert_eq!(world.ecr_calls(), calls, "no ECR call to repair");
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_foreign_secret_of_the_target_name_is_never_overwritten() {
    let mut world = World::start().await;
    world.add_foreign(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "victim", "namespace": "default"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}}));
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "False", "SecretConflict")
        .await;
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn our_secret_replaced_by_a_foreign_one_is_left_alone() {
    let mut world = World::start().await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world
        .cluster
        .api
        .delete(SECRETS, Some("default"), "victim")
        .unwrap();
    world.add_foreign(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "victim", "namespace": "default"},
        "type": "Opaque", "data": {"mine": "eWVz"}}));
    world
        .wait_ready("default", "victim", "False", "SecretConflict")
        .await;
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn long_resource_names_are_served() {
    let mut world = World::start().await;
    let started = Instant::now();
    for len in [75usize, 253] {
        let name: String = std::iter::repeat_n("a", len).collect();
        world.apply("default", &name, spec_for(HOST));
        world
            .wait_ready("default", &name, "True", "TokenRefreshed")
            .await;
        let s = world.secret("default", &name).unwrap();
        for (k, v) in s["metadata"]["labels"].as_object().unwrap() {
            assert!(v.as_str().unwrap().len() <= 63, "{k}={v}");
        }
        assert_eq!(
            s["metadata"]["annotations"]["ecr.aws.edenlab.io/owner-name"],
            name.as_str()
        );
        world.keep("default", &name);
        if len == 75 {
            eprintln!("75-character name served in {:?}", started.elapsed());
        }
    }
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn bad_input_gets_invalid_spec_and_no_ecr_call() {
    let world = World::start().await;
    let calls = world.ecr_calls();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "overflow",
            json!({"frequency": "94522879700260684295381835.4h"}),
            "spec.frequency",
        ),
        (
            "too-many-accounts",
            json!({"serviceAccounts": (0..40).map(|i| format!("sa{i}")).collect::<Vec<_>>()}),
            "spec.serviceAccounts",
        ),
        (
            "look-alike",
            json!({"ecrRegistry": "123456789012.dkr.еcr.us-east-1.amazonaws.com"}),
            "spec.ecrRegistry",
        ),
        (
            "huge-parameter",
            json!({"policy": {"parameters": {"k": "v".repeat(5000)}}}),
            "spec.policy.parameters",
        ),
    ];
    for (name, extra, _) in &cases {
        let mut spec = spec_for(HOST);
        if let (Some(s), Value::Object(e)) = (spec.as_object_mut(), extra.clone()) {
            s.extend(e);
        }
        world.apply("default", name, spec);
    }
    for (name, _, field) in &cases {
        let c = world
            .wait_ready("default", name, "False", "InvalidSpec")
            .await;
        let m = c["message"].as_str().unwrap();
        assert!(m.starts_with(field), "{name}: {m}");
        assert!(m.len() < 1024, "{name}: message of {} bytes", m.len());
    }
    assert_eq!(world.ecr_calls(), calls);
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_huge_ecr_error_is_truncated_in_status_and_events() {
    let mut world = World::start().await;
    *world.tokens.message.lock().unwrap() = "x".repeat(100_000);
    world.tokens.fail_in("us-east-1", FailureKind::Other);
    world.apply("default", "victim", spec_for(HOST));
    let c = world
        .wait_ready("default", "victim", "False", "ECRRequestFailed")
        .await;
    assert!(c["message"].as_str().unwrap().len() <= 4096);
    world
        .cluster
        .wait_event("victim", "Warning", "ECRRequestFailed")
        .await;
    for e in world.cluster.api.list(EVENTS, Some("default")) {
        assert!(e["note"].as_str().unwrap_or_default().len() <= 1024);
    }
    world.tokens.fail(false);
    world.keep("default", "bystander");
    world.check().await;
    world.stop().await;
}
