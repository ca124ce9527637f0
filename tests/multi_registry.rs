//! Several registries in one pull Secret, identities per resource, and one token per
//! (identity, region, FIPS, private|public) key shared by every resource that needs it:
//! the real controller against the Kubernetes stand-in with a scripted token source that
//! records what was asked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tokens::ScriptedTokens;
use common::world::password_in;
use common::*;
use ecr_token_refresh::ecr::{Identity, RegistryKind};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const EAST_A: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
const EAST_B: &str = "222222222222.dkr.ecr.us-east-1.amazonaws.com";
const WEST_B: &str = "222222222222.dkr.ecr.eu-west-1.amazonaws.com";
const PUBLIC: &str = "public.ecr.aws";

/// The issued (region, kind, identity, password) of every successful token call so far.
fn issued(tokens: &ScriptedTokens) -> Vec<(String, RegistryKind, Identity, String)> {
    tokens
        .issued
        .lock()
        .unwrap()
        .iter()
        .map(|(r, pw)| (r.region.clone(), r.kind, r.identity.clone(), pw.clone()))
        .collect()
}

fn hosts_of(secret: &Value) -> Vec<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    doc["auths"].as_object().unwrap().keys().cloned().collect()
}

/// One Secret for private hosts in two regions and two accounts plus ECR Public: every host
/// an entry of its own key's token (one call per key, not per host), the status expiry the
/// earliest of them, and `region` may be left out.
#[tokio::test]
async fn one_secret_holds_every_registry_each_with_its_own_regions_token() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    // eu-west-1's token lives 6 hours only: the Secret's expiry is that one.
    tokens
        .region_lifetimes
        .lock()
        .unwrap()
        .insert("eu-west-1".into(), SignedDuration::from_hours(6));
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": "multi", "namespace": "default"},
                   "spec": {"ecrRegistry": EAST_A, "frequency": "8h",
                            "additionalRegistries": [EAST_B, WEST_B, PUBLIC]}}),
        )
        .unwrap();
    let ready = cluster.wait_ready("multi", "True", "TokenRefreshed").await;
    let secret = cluster.secret("multi").unwrap();
    running.stop().await;

    let mut hosts = hosts_of(&secret);
    hosts.sort();
    let mut want = vec![EAST_A, EAST_B, WEST_B, PUBLIC];
    want.sort();
    assert_eq!(hosts, want);

    let calls = issued(&tokens);
    assert_eq!(calls.len(), 3, "one call per key, not per host: {calls:?}");
    let password_of = |region: &str, kind: RegistryKind| {
        calls
            .iter()
            .find(|(r, k, _, _)| r == region && *k == kind)
            .map(|(_, _, _, pw)| pw.clone())
            .unwrap_or_else(|| panic!("no call for {region} {kind:?}: {calls:?}"))
    };
    let east = password_of("us-east-1", RegistryKind::Private);
    let west = password_of("eu-west-1", RegistryKind::Private);
    let public = password_of("us-east-1", RegistryKind::Public);
    assert_eq!(password_in(&secret, EAST_A), east);
    assert_eq!(
        password_in(&secret, EAST_B),
        east,
        "one token per region serves both accounts"
    );
    assert_eq!(password_in(&secret, WEST_B), west);
    assert_eq!(password_in(&secret, PUBLIC), public);
    assert!(
        calls.iter().all(|(_, _, id, _)| *id == Identity::Operator),
        "{calls:?}"
    );
    world::assert_pull_secret_sound(&secret);

    // Expiry: the earliest token's (eu-west-1, about 6 hours), in status and annotation.
    let cr = cluster.cr("multi");
    let expires: Timestamp = cr["status"]["expiresAt"].as_str().unwrap().parse().unwrap();
    let in_hours = (expires - Timestamp::now()).get_seconds() as f64 / 3600.0;
    assert!(
        (5.9..=6.01).contains(&in_hours),
        "expiresAt {expires} is {in_hours} h away"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["ecr.aws.edenlab.io/expires-at"],
        cr["status"]["expiresAt"]
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("tokens for 4 registries, the first expiring at"),
        "{message}"
    );
}

/// Ten resources on one (identity, region) — in several accounts — created at once: one ECR
/// call serves them all (concurrent first reconciles wait for the one call under way), and
/// a resource created later takes the held token.
#[tokio::test]
async fn resources_on_one_key_share_one_call_even_when_they_start_together() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    // A slow ECR: the first reconciles overlap the call.
    *tokens.delay.lock().unwrap() = Duration::from_millis(300);
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    for i in 0..10 {
        let host = if i % 2 == 0 { EAST_A } else { EAST_B };
        cluster.apply_sample(&format!("r{i}"), json!({"ecrRegistry": host}));
    }
    for i in 0..10 {
        cluster
            .wait_ready(&format!("r{i}"), "True", "TokenRefreshed")
            .await;
    }
    assert_eq!(tokens.calls(), 1, "{:?}", issued(&tokens));
    cluster.apply_sample("late", json!({}));
    cluster.wait_ready("late", "True", "TokenRefreshed").await;
    assert_eq!(tokens.calls(), 1);
    let first = password_in(&cluster.secret("r0").unwrap(), EAST_A);
    assert_eq!(password_in(&cluster.secret("r1").unwrap(), EAST_B), first);
    assert_eq!(password_in(&cluster.secret("late").unwrap(), HOST), first);

    // Another identity is another key: its own call, never the operator's token.
    cluster.apply_sample(
        "as-role",
        json!({"auth": {"roleArn": "arn:aws:iam::111111111111:role/pull", "externalId": "tenant-42"}}),
    );
    cluster
        .wait_ready("as-role", "True", "TokenRefreshed")
        .await;
    running.stop().await;
    assert_eq!(tokens.calls(), 2);
    let calls = issued(&tokens);
    assert_eq!(
        calls[1].2,
        Identity::Role {
            arn: "arn:aws:iam::111111111111:role/pull".into(),
            external_id: Some("tenant-42".into()),
            session_name: None,
        }
    );
    assert_ne!(
        password_in(&cluster.secret("as-role").unwrap(), HOST),
        first
    );
}

/// A ServiceAccount reference is the resource's own namespace's ServiceAccount: two
/// namespaces naming the same ServiceAccount name are two identities.
#[tokio::test]
async fn a_service_account_identity_is_per_namespace() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    cluster
        .api
        .create(
            "v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .unwrap();
    let auth = json!({"roleArn": "arn:aws:iam::111111111111:role/pull",
                      "serviceAccountRef": {"name": "puller"}});
    for ns in ["default", "team"] {
        cluster
            .api
            .create(
                CRS,
                json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                       "metadata": {"name": "wi", "namespace": ns},
                       "spec": {"ecrRegistry": HOST, "frequency": "8h", "auth": auth}}),
            )
            .unwrap();
    }
    for ns in ["default", "team"] {
        let ok = cluster
            .api
            .wait_for(WAIT, |api| {
                ready_of(&api.get(CRS, Some(ns), "wi").unwrap_or(Value::Null))["status"] == "True"
            })
            .await;
        assert!(ok, "{ns}/wi never became Ready");
    }
    running.stop().await;
    let mut namespaces: Vec<String> = issued(&tokens)
        .into_iter()
        .map(|(_, _, id, _)| match id {
            Identity::WebIdentity {
                namespace,
                service_account,
                role_arn,
                ..
            } => {
                assert_eq!(
                    (service_account.as_str(), role_arn.as_str()),
                    ("puller", "arn:aws:iam::111111111111:role/pull")
                );
                namespace
            }
            other => panic!("not a web identity: {other:?}"),
        })
        .collect();
    namespaces.sort();
    assert_eq!(namespaces, ["default", "team"]);
}

/// After a restart, a resource with several registries is served from its own Secret
/// (every entry taken back) with no ECR call when a new namespace needs a copy; a host
/// added to the spec then needs new tokens.
#[tokio::test]
async fn every_entry_is_taken_back_after_a_restart() {
    use common::world::{FANOUT_LABEL, FANOUT_VALUE, PLATFORM, fanout_settings, fanout_spec};
    let cluster = Cluster::start().await;
    for (ns, labelled) in [(PLATFORM, true), ("a", true), ("b", false)] {
        let labels = if labelled {
            json!({FANOUT_LABEL: FANOUT_VALUE})
        } else {
            json!({})
        };
        cluster
            .api
            .create(
                "v1/namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": ns, "labels": labels}}),
            )
            .unwrap();
    }
    let policies = world::label_policies().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let start = || {
        start_controller_with(
            cluster.client.clone(),
            tokens.clone(),
            policies.clone(),
            fanout_settings(),
        )
    };
    let running = start();
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": "pull", "namespace": PLATFORM},
                   "spec": fanout_spec(json!({"additionalRegistries": [WEST_B, PUBLIC]}))}),
        )
        .unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api.get(SECRETS, Some("a"), "pull").is_some()
                && ready_of(
                    &api.get(CRS, Some(PLATFORM), "pull").unwrap_or(Value::Null)
                )["reason"]
                    == "TokenRefreshed")
            .await
    );
    running.stop().await;
    assert_eq!(tokens.calls(), 3);
    let own = cluster.api.get(SECRETS, Some(PLATFORM), "pull").unwrap();

    // While the operator is down, namespace b is labelled: after the restart it needs a
    // copy, which the tokens taken back from the resource's own Secret serve.
    cluster
        .api
        .merge_patch(
            "v1/namespaces",
            None,
            "b",
            json!({"metadata": {"labels": {FANOUT_LABEL: FANOUT_VALUE}}}),
            false,
        )
        .unwrap();
    let running = start();
    let copied = cluster
        .api
        .wait_for(WAIT, |api| api.get(SECRETS, Some("b"), "pull").is_some())
        .await;
    assert!(copied, "namespace b never got its copy");
    settle(&cluster.api, Duration::from_millis(300)).await;
    assert_eq!(
        tokens.calls(),
        3,
        "served from the seeded tokens, no ECR call"
    );
    let copy = cluster.api.get(SECRETS, Some("b"), "pull").unwrap();
    assert_eq!(copy["data"], own["data"]);
    assert_eq!(hosts_of(&copy).len(), 3);

    // A new host: the seeded tokens no longer serve the spec; new ones are asked.
    let mut cr = cluster.api.get(CRS, Some(PLATFORM), "pull").unwrap();
    cr["spec"]["additionalRegistries"] = json!([WEST_B, PUBLIC, EAST_B]);
    cluster.api.replace(CRS, cr).unwrap();
    let grew = cluster
        .api
        .wait_for(WAIT, |api| {
            api.get(SECRETS, Some("b"), "pull")
                .is_some_and(|s| hosts_of(&s).len() == 4)
        })
        .await;
    running.stop().await;
    assert!(grew, "the added host never reached the copies");
    let s = cluster.api.get(SECRETS, Some("b"), "pull").unwrap();
    assert_eq!(password_in(&s, EAST_B), password_in(&s, HOST));
    world::assert_pull_secret_sound(&s);
}
