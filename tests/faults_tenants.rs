//! The fault matrix, part 2: tenants. What a tenant does to the copy in its namespace, or
//! to Secrets it labels as the operator's, changes nothing anywhere else: forged data and
//! expiry never reach other namespaces nor the status, a copy it takes over is reported
//! and left alone, labelled junk costs no request, and one namespace failing fails only
//! itself. Each case ends with [`World::check`].

mod common;

use std::time::Duration;

use common::world::*;
use common::*;
use kube_standin::{FaultRule, Verb};
use serde_json::{Value, json};

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const OWNER_UID: &str = "ecr.aws.edenlab.io/owner-uid";
const OWNER_NAMESPACE: &str = "ecr.aws.edenlab.io/owner-namespace";
const OWNER_NAME: &str = "ecr.aws.edenlab.io/owner-name";
const DATA_HASH: &str = "ecr.aws.edenlab.io/data-sha256";
const EXPIRES_AT: &str = "ecr.aws.edenlab.io/expires-at";
/// What the `naming-prefix` plugin (prefix `team`) names the Secret of any resource for
/// [`HOST`], in every namespace.
const PREFIXED: &str = "team-123456789012-us-east-1";

/// `status.failedNamespaces` as (namespace, reason).
fn failed(cr: &Value) -> Vec<(String, String)> {
    cr["status"]["failedNamespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            (
                f["namespace"].as_str().unwrap_or_default().to_string(),
                f["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pair(namespace: &str, reason: &str) -> (String, String) {
    (namespace.to_string(), reason.to_string())
}

fn ready_is(cr: &Value, status: &str, reason: &str) -> bool {
    let c = ready_of(cr);
    c["status"] == status && c["reason"] == reason
}

fn timestamp(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not a timestamp: {v}: {e}"))
}

/// Whether two RFC 3339 times are the same to the second (status times are whole seconds,
/// annotations are not).
fn same_second(a: &Value, b: &Value) -> bool {
    timestamp(a).duration_since(timestamp(b)).abs() < jiff::SignedDuration::from_secs(1)
}

/// A random-looking uid no resource has.
fn random_uid() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A fan-out world with `platform/pull` serving `a` and `b`; returns the ECR calls made
/// before the resource was created.
async fn fanout_world() -> (World, u32) {
    let world = World::start_fanout().await;
    let calls = world.ecr_calls();
    world.apply(PLATFORM, "pull", fanout_spec(json!({})));
    world.wait_holders("pull", &["a", "b"]).await;
    world
        .wait_ready(PLATFORM, "pull", "True", "TokenRefreshed")
        .await;
    (world, calls)
}

#[tokio::test]
async fn a_forged_copy_reaches_no_other_namespace_nor_the_status_and_is_rewritten() {
    let (mut world, calls) = fanout_world().await;
    let genuine = world.secret("b", "pull").unwrap();
    let password = password_in(&genuine, HOST);
    let expires = genuine["metadata"]["annotations"][EXPIRES_AT].clone();
    // The repair of the forged copy fails for now, so the forgery is in place while a new
    // namespace is served.
    world.cluster.api.faults().add(
        FaultRule::new(500)
            .verb(Verb::Patch)
            .gvr(SECRETS)
            .name("pull"),
    );
    let mut forged = world.secret("a", "pull").unwrap();
    let (data, hash) = docker_config(HOST, "forged-password");
    forged["data"][".dockerconfigjson"] = json!(data);
    forged["metadata"]["annotations"][EXPIRES_AT] = json!("2099-01-01T00:00:00Z");
    forged["metadata"]["annotations"][DATA_HASH] = json!(hash);
    world.cluster.api.replace(SECRETS, forged).unwrap();
    world
        .wait_cr(PLATFORM, "pull", "reporting the forged copy", |cr| {
            failed(cr) == [pair("a", "SecretWriteFailed")]
                && ready_is(cr, "True", "SomeNamespacesFailed")
        })
        .await;

    world.namespace("c", true);
    let c = world
        .wait_secret("c", "pull", "created", |s| s.is_some())
        .await
        .unwrap();
    assert_eq!(password_in(&c, HOST), password, "c got the genuine token");
    assert!(same_second(
        &c["metadata"]["annotations"][EXPIRES_AT],
        &expires
    ));
    assert_eq!(
        password_in(&world.secret("a", "pull").unwrap(), HOST),
        "forged-password",
        "the forgery was still in place while c was served"
    );
    let cr = world
        .wait_cr(PLATFORM, "pull", "serving c", |cr| {
            cr["status"]["servedNamespaces"] == 2
                && cr["status"]["secrets"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["namespace"] == "c"))
        })
        .await;
    assert!(
        same_second(&cr["status"]["expiresAt"], &expires),
        "status.expiresAt follows the token, not the forgery: {}",
        cr["status"]
    );

    // The forged copy is rewritten once its namespace accepts writes again.
    world.cluster.api.faults().clear();
    world
        .wait_secret("a", "pull", "rewritten", |s| {
            s.is_some_and(|s| password_in(s, HOST) == password)
        })
        .await;
    let cr = world
        .wait_ready(PLATFORM, "pull", "True", "TokenRefreshed")
        .await;
    assert!(
        cr["message"].as_str().unwrap().contains("3 Secrets"),
        "{cr}"
    );
    let cr = world.cr(PLATFORM, "pull");
    assert!(failed(&cr).is_empty(), "{}", cr["status"]);
    assert!(
        same_second(&cr["status"]["expiresAt"], &expires),
        "{}",
        cr["status"]
    );
    assert_eq!(world.ecr_calls() - calls, 1, "one ECR call in all");
    for ns in ["a", "b", "c"] {
        world.keep(ns, "pull");
    }
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_deleted_copy_is_restored_from_the_held_token() {
    let (mut world, calls) = fanout_world().await;
    let before = world.secret("a", "pull").unwrap();
    world
        .cluster
        .api
        .delete(SECRETS, Some("a"), "pull")
        .unwrap();
    let after = world
        .wait_secret("a", "pull", "restored", |s| {
            s.is_some_and(|s| s["metadata"]["uid"] != before["metadata"]["uid"])
        })
        .await
        .unwrap();
    assert_eq!(password_in(&after, HOST), password_in(&before, HOST));
    assert_eq!(
        after["metadata"]["annotations"][EXPIRES_AT],
        before["metadata"]["annotations"][EXPIRES_AT]
    );
    assert_eq!(world.ecr_calls() - calls, 1, "no ECR call to restore");
    world
        .wait_ready(PLATFORM, "pull", "True", "TokenRefreshed")
        .await;
    world.keep("a", "pull");
    world.keep("b", "pull");
    world.check().await;
    world.stop().await;
}

/// A tenant takes its copy over with `patch`: the namespace is reported as a conflict, the
/// Secret is never written again, the other namespace stays served. With `nudge`, the
/// resource is also changed (annotated) right after, so it reconciles whatever the
/// Secret's change triggered.
async fn a_copy_taken_over(patch: Value, nudge: bool) {
    let (mut world, calls) = fanout_world().await;
    world
        .cluster
        .api
        .merge_patch(SECRETS, Some("a"), "pull", patch, false)
        .unwrap();
    world.adopt_foreign("a", "pull");
    if nudge {
        world
            .cluster
            .api
            .merge_patch(
                CRS,
                Some(PLATFORM),
                "pull",
                json!({"metadata": {"annotations": {"touch": "1"}}}),
                false,
            )
            .unwrap();
    }
    let cr = world
        .wait_cr(PLATFORM, "pull", "reporting a as a conflict", |cr| {
            failed(cr) == [pair("a", "SecretConflict")]
                && ready_is(cr, "True", "SomeNamespacesFailed")
        })
        .await;
    assert_eq!(cr["status"]["servedNamespaces"], 1, "{}", cr["status"]);
    // Looked at again every second (the conflict recheck), never written.
    let rv = world.secret("a", "pull").unwrap()["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.secret("a", "pull").unwrap()["metadata"]["resourceVersion"],
        rv
    );
    let cr = world.cr(PLATFORM, "pull");
    assert_eq!(failed(&cr), [pair("a", "SecretConflict")]);
    assert_eq!(world.ecr_calls() - calls, 1);
    world.keep("b", "pull");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_copy_stripped_of_the_managed_by_label_is_a_conflict_never_overwritten() {
    a_copy_taken_over(json!({"metadata": {"labels": {MANAGED_BY: null}}}), false).await;
}

#[tokio::test]
async fn a_copy_given_another_owner_uid_is_a_conflict_never_overwritten() {
    a_copy_taken_over(
        json!({"metadata": {"labels": {OWNER_UID: random_uid()}}}),
        false,
    )
    .await;
}

/// What does work of the case above: once the resource reconciles for another reason.
#[tokio::test]
async fn a_copy_given_another_owner_uid_is_a_conflict_once_the_resource_reconciles() {
    a_copy_taken_over(
        json!({"metadata": {"labels": {OWNER_UID: random_uid()}}}),
        true,
    )
    .await;
}

/// A labelled Secret of `type_` in `namespace` claiming to be the copy of the resource
/// with `owner_uid` (in `owner_namespace`).
fn claimed_secret(
    namespace: &str,
    name: &str,
    type_: &str,
    owner_uid: &str,
    owner_namespace: &str,
    data: Value,
) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": namespace,
                        "labels": {MANAGED_BY: "ecr-token-refresh", OWNER_UID: owner_uid,
                                   OWNER_NAMESPACE: owner_namespace},
                        "annotations": {OWNER_NAME: "pull"}},
           "type": type_, "data": data})
}

fn forged_pull_data() -> Value {
    let (data, _) = docker_config(HOST, "tenant-password");
    json!({".dockerconfigjson": data})
}

#[tokio::test]
async fn labelled_junk_in_a_tenant_namespace_costs_no_request() {
    let (mut world, calls) = fanout_world().await;
    // Any reconcile of these two would rewrite their status.
    world.tamper_status(PLATFORM, "pull");
    world.tamper_status("default", "bystander");
    world.quiet(Duration::from_millis(300)).await;
    let before = world.cluster.api.counters();
    let big = "A".repeat(100 * 1024);
    for i in 0..50 {
        world.add_foreign(claimed_secret(
            "tenant",
            &format!("junk-{i}"),
            "Opaque",
            &random_uid(),
            PLATFORM,
            json!({"blob": big}),
        ));
        world.add_foreign(claimed_secret(
            "tenant",
            &format!("pull-{i}"),
            "kubernetes.io/dockerconfigjson",
            &random_uid(),
            PLATFORM,
            forged_pull_data(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = world.cluster.api.counters();
    assert_eq!(
        after.total(),
        before.total(),
        "requests followed the junk: before {:?}, after {:?}",
        before.entries(),
        after.entries()
    );
    assert!(
        world.still_tampered(PLATFORM, "pull"),
        "pull was reconciled"
    );
    assert!(
        world.still_tampered("default", "bystander"),
        "the bystander was reconciled"
    );
    assert_eq!(world.ecr_calls() - calls, 1);
    world.keep("a", "pull");
    world.keep("b", "pull");
    world.check().await;
    world.stop().await;
}

/// A forged copy of `owner` in `tenant` (a namespace `owner` does not serve) triggers
/// nothing; once something else reconciles `owner` (`nudge`), it is still not touched.
async fn a_forged_copy_elsewhere(mut world: World, owner: (&str, &str), nudge: impl Fn(&World)) {
    let (namespace, name) = owner;
    let uid = world.uid(namespace, name);
    let has_own_secret = world.secret(namespace, name).is_some();
    world.tamper_status(namespace, name);
    world.quiet(Duration::from_millis(300)).await;
    let before = world.cluster.api.counters();
    world.add_foreign(claimed_secret(
        "tenant",
        name,
        "kubernetes.io/dockerconfigjson",
        &uid,
        namespace,
        forged_pull_data(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = world.cluster.api.counters();
    assert_eq!(
        after.writes(),
        before.writes(),
        "writes followed the forged copy: before {:?}, after {:?}",
        before.entries(),
        after.entries()
    );
    assert!(
        world.still_tampered(namespace, name),
        "the forged copy triggered a reconcile"
    );
    // The probe works: a change of the resource reconciles it (and the status is rewritten).
    nudge(&world);
    world
        .wait_cr(namespace, name, "reconciled after the nudge", |cr| {
            cr["status"]["servedNamespaces"].is_u64() && cr["status"]["servedNamespaces"] != 4242
        })
        .await;
    world.quiet(Duration::from_millis(300)).await;
    if has_own_secret {
        world.keep(namespace, name);
    }
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_forged_copy_of_a_home_only_resource_elsewhere_is_not_touched() {
    let world = World::start().await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    a_forged_copy_elsewhere(world, ("default", "victim"), |w| {
        w.cluster
            .api
            .merge_patch(
                CRS,
                Some("default"),
                "victim",
                json!({"metadata": {"annotations": {"touch": "1"}}}),
                false,
            )
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_forged_copy_of_a_fanout_resource_in_an_unserved_namespace_is_not_touched() {
    let (world, _) = fanout_world().await;
    a_forged_copy_elsewhere(world, (PLATFORM, "pull"), |w| w.namespace("c", true)).await;
}

/// One namespace refuses the copy with `code` (forever, then no more): the others are
/// served, it is reported and retried with backoff, no token is fetched again.
async fn one_namespace_refusing_the_copy(code: u16) {
    let (mut world, calls) = fanout_world().await;
    world.cluster.api.faults().add(
        FaultRule::new(code)
            .verb(Verb::Create)
            .gvr(SECRETS)
            .name("pull"),
    );
    world.namespace("c", true);
    let cr = world
        .wait_cr(PLATFORM, "pull", "reporting c", |cr| {
            failed(cr) == [pair("c", "SecretWriteFailed")]
                && ready_is(cr, "True", "SomeNamespacesFailed")
        })
        .await;
    assert_eq!(cr["status"]["servedNamespaces"], 2, "{}", cr["status"]);
    let message = cr["status"]["failedNamespaces"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("c/pull") && message.contains(&code.to_string()),
        "{message}"
    );
    let creates = || world.cluster.api.counters().get_count("create", SECRETS);
    let first = creates();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let retries = creates() - first;
    assert!(
        (1..=8).contains(&retries),
        "{retries} create attempts in 3 s: retried with backoff"
    );
    assert!(world.secret("c", "pull").is_none());
    assert_eq!(world.ecr_calls() - calls, 1, "retries reuse the held token");

    world.cluster.api.faults().clear();
    world.wait_holders("pull", &["a", "b", "c"]).await;
    let cr = world
        .wait_cr(PLATFORM, "pull", "serving all", |cr| {
            ready_is(cr, "True", "TokenRefreshed") && failed(cr).is_empty()
        })
        .await;
    assert_eq!(cr["status"]["servedNamespaces"], 3);
    assert_eq!(world.ecr_calls() - calls, 1, "one ECR call in all");
    for ns in ["a", "b", "c"] {
        world.keep(ns, "pull");
    }
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_namespace_forbidding_the_copy_fails_only_itself() {
    one_namespace_refusing_the_copy(403).await;
}

#[tokio::test]
async fn a_namespace_failing_the_copy_with_500s_fails_only_itself() {
    one_namespace_refusing_the_copy(500).await;
}

#[tokio::test]
async fn two_resources_named_alike_by_a_plugin_do_not_flap() {
    let mut world =
        World::start_with(fast_settings(), label_policies().await, Default::default()).await;
    let calls = world.ecr_calls();
    let mut spec = spec_for(HOST);
    spec["policy"] = json!({"naming": "prefixed-names"});
    world.apply("default", "one", spec.clone());
    world.apply("default", "two", spec);
    let settled = |api: &kube_standin::StandIn| {
        let cr = |n: &str| api.get(CRS, Some("default"), n).unwrap_or(Value::Null);
        let (one, two) = (cr("one"), cr("two"));
        (ready_is(&one, "True", "TokenRefreshed") && ready_is(&two, "False", "SecretConflict"))
            || (ready_is(&two, "True", "TokenRefreshed")
                && ready_is(&one, "False", "SecretConflict"))
    };
    let ok = world.cluster.api.wait_for(WAIT, settled).await;
    assert!(
        ok,
        "one: {:#}\ntwo: {:#}",
        world.cr("default", "one")["status"],
        world.cr("default", "two")["status"]
    );
    let winner = if ready_is(&world.cr("default", "one"), "True", "TokenRefreshed") {
        "one"
    } else {
        "two"
    };
    let secret = world.secret("default", PREFIXED).unwrap();
    assert_eq!(
        secret["metadata"]["labels"][OWNER_UID],
        world.uid("default", winner).as_str(),
        "the Secret belongs to the Ready one"
    );
    let rv = secret["metadata"]["resourceVersion"].clone();
    let status_patches = |w: &World| {
        w.cluster.api.counters().get_count(
            "patch",
            "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes/status",
        )
    };
    let patches = status_patches(&world);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.secret("default", PREFIXED).unwrap()["metadata"]["resourceVersion"],
        rv,
        "the Secret flapped"
    );
    assert!(
        world.cluster.api.wait_for(Duration::ZERO, settled).await,
        "the outcome changed"
    );
    eprintln!(
        "status patches in 3 s of conflict: {}",
        status_patches(&world) - patches
    );
    assert_eq!(world.ecr_calls() - calls, 1, "the loser needs no token");
    world.keep("default", PREFIXED);
    world.check().await;
    world.stop().await;
}
