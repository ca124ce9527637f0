//! The fault matrix, part 2: deletion and ServiceAccounts. The cleanup finalizer goes only
//! once every copy is confirmed gone and every entry the operator added is removed; failing
//! deletes, finalizer writes and ServiceAccount patches are retried; only the
//! `imagePullSecrets` entries the operator recorded are ever removed. Each case ends with
//! [`World::check`].

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::world::*;
use common::*;
use ecr_token_refresh::api::ECRTokenRefresh;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_standin::{FaultRule, Verb};
use serde_json::{Value, json};

const FINALIZER: &str = "ecr.aws.edenlab.io/cleanup";

fn finalizers(cr: &Value) -> Vec<String> {
    cr["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_string())
        .collect()
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

/// The spec of a home-only resource naming these ServiceAccounts.
fn with_service_accounts(names: &[&str]) -> Value {
    let mut spec = spec_for(HOST);
    spec["serviceAccounts"] = json!(names);
    spec
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn copies_that_cannot_be_deleted_keep_the_finalizer_and_stay_intact() {
    let (world, calls) = fanout_world().await;
    let before = [
        world.secret("a", "pull").unwrap(),
        world.secret("b", "pull").unwrap(),
    ];
    world.cluster.api.faults().add(
        FaultRule::new(500)
            .verb(Verb::Delete)
            .gvr(SECRETS)
            .name("pull"),
    );
    world
        .cluster
        .api
        .delete(CRS, Some(PLATFORM), "pull")
        .unwrap();
    let cr = world
        .wait_cr(PLATFORM, "pull", "saying what is left", |cr| {
            let error = cr["status"]["error"].as_str().unwrap_or_default();
            error.contains("a/pull") && error.contains("b/pull")
        })
        .await;
    assert!(cr["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(finalizers(&cr), [FINALIZER], "the finalizer stays");
    let note = world
        .wait_event(PLATFORM, "pull", "Warning", "CleanupFailed")
        .await;
    assert!(note.contains("a/pull") && note.contains("500"), "{note}");
    // Retried with backoff while it fails.
    let deletes = || world.cluster.api.counters().get_count("delete", SECRETS);
    let first = deletes();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let retried = deletes() - first;
    assert!(
        (2..=16).contains(&retried),
        "{retried} delete attempts in 3 s (two copies per attempt)"
    );
    // The copies still serve: untouched, not blanked.
    for copy in &before {
        let ns = copy["metadata"]["namespace"].as_str().unwrap();
        let now = world.secret(ns, "pull").unwrap();
        assert_eq!(
            (&now["metadata"]["resourceVersion"], &now["data"]),
            (&copy["metadata"]["resourceVersion"], &copy["data"]),
            "{ns}/pull changed while it could not be deleted"
        );
        assert_pull_secret_sound(&now);
    }
    assert!(world.cr(PLATFORM, "pull").is_object(), "the resource stays");

    world.cluster.api.faults().clear();
    world.wait_holders("pull", &[]).await;
    world.wait_gone(PLATFORM, "pull").await;
    assert_eq!(world.ecr_calls() - calls, 1, "deletion costs no ECR call");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_failing_finalizer_removal_is_retried_until_the_resource_is_gone() {
    let (world, calls) = fanout_world().await;
    // Both failures hit the removal: nothing else patches the resource while it is deleted
    // and its copies go.
    let faults = world.cluster.api.faults();
    faults.add(
        FaultRule::new(409)
            .verb(Verb::Patch)
            .gvr(CRS)
            .name("pull")
            .times(1),
    );
    faults.add(
        FaultRule::new(500)
            .verb(Verb::Patch)
            .gvr(CRS)
            .name("pull")
            .times(2),
    );
    world.cluster.api.reset_counters();
    world
        .cluster
        .api
        .delete(CRS, Some(PLATFORM), "pull")
        .unwrap();
    world.wait_holders("pull", &[]).await;
    world.wait_gone(PLATFORM, "pull").await;
    assert_eq!(faults.active_rules(), 0, "every injected failure was met");
    let patches = world.cluster.api.counters().get_count("patch", CRS);
    assert!(
        patches >= 4,
        "{patches} patches: 3 failed removals and 1 more"
    );
    assert_eq!(world.ecr_calls() - calls, 1);
    world.check().await;
    world.stop().await;
}

/// What the test saw, in resourceVersion order (the stand-in's one global counter).
#[derive(Default)]
struct Seen {
    /// resourceVersion at which the resource first carried the finalizer.
    finalized: Option<u64>,
    /// resourceVersion of the first sight of each copy outside the resource's namespace.
    copies: Vec<(u64, String)>,
}

fn rv_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn no_copy_is_written_before_the_finalizer_is_on() {
    let world = World::start_fanout().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watches = world.cluster.api.active_watches();
    {
        let seen = Arc::clone(&seen);
        let secrets: Api<Secret> = Api::all(world.cluster.client.clone());
        tokio::spawn(
            watcher(secrets, watcher::Config::default())
                .applied_objects()
                .try_for_each(move |s| {
                    let ns = s.namespace().unwrap_or_default();
                    if s.name_any() == "pull" && ns != PLATFORM {
                        let mut seen = seen.lock().unwrap();
                        if !seen.copies.iter().any(|(_, n)| n == &ns) {
                            seen.copies.push((rv_of(&s.metadata), ns));
                        }
                    }
                    futures::future::ready(Ok(()))
                }),
        );
    }
    {
        let seen = Arc::clone(&seen);
        let crs: Api<ECRTokenRefresh> = Api::namespaced(world.cluster.client.clone(), PLATFORM);
        tokio::spawn(
            watcher(crs, watcher::Config::default())
                .applied_objects()
                .try_for_each(move |cr| {
                    if cr.finalizers().iter().any(|f| f == FINALIZER) {
                        let mut seen = seen.lock().unwrap();
                        seen.finalized.get_or_insert(rv_of(&cr.metadata));
                    }
                    futures::future::ready(Ok(()))
                }),
        );
    }
    assert!(
        poll_until(WAIT, || world.cluster.api.active_watches() >= watches + 2).await,
        "the test's watches never started"
    );
    world.cluster.api.faults().add(
        FaultRule::new(500)
            .verb(Verb::Patch)
            .gvr(CRS)
            .name("pull")
            .times(3),
    );
    let calls = world.ecr_calls();
    world.apply(PLATFORM, "pull", fanout_spec(json!({})));
    world.wait_holders("pull", &["a", "b"]).await;
    world
        .wait_ready(PLATFORM, "pull", "True", "TokenRefreshed")
        .await;
    assert_eq!(world.cluster.api.faults().active_rules(), 0);
    assert!(
        poll_until(WAIT, || seen.lock().unwrap().copies.len() == 2).await,
        "the test's watch did not see both copies"
    );
    let (finalized, copies) = {
        let seen = seen.lock().unwrap();
        (seen.finalized, seen.copies.clone())
    };
    let finalized = finalized.expect("the finalizer was never seen");
    for (rv, ns) in &copies {
        assert!(
            *rv > finalized,
            "{ns}/pull written at resourceVersion {rv}, before the finalizer ({finalized})"
        );
    }
    assert_eq!(world.ecr_calls() - calls, 1);
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn deleting_a_home_only_resource_removes_only_its_service_account_entry() {
    let world = World::start().await;
    world.service_account("default", "default", &["someone-elses"]);
    world.apply("default", "victim", with_service_accounts(&["default"]));
    world
        .wait_pulls("default", "default", &["someone-elses", "victim"])
        .await;
    let uid = world.uid("default", "victim");
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    assert_eq!(
        finalizers(&world.cr("default", "victim")),
        [FINALIZER],
        "no fan-out, but entries to remove on deletion"
    );
    assert_eq!(
        world.pull_record("default", "default"),
        [("victim".to_string(), uid)].into_iter().collect()
    );
    // Someone lists another entry after ours (the list is atomic: the whole list is sent).
    world
        .cluster
        .api
        .merge_patch(
            SERVICE_ACCOUNTS,
            Some("default"),
            "default",
            json!({"imagePullSecrets": [{"name": "someone-elses"}, {"name": "victim"}, {"name": "added-later"}]}),
            false,
        )
        .unwrap();
    world
        .cluster
        .api
        .delete(CRS, Some("default"), "victim")
        .unwrap();
    world.wait_gone("default", "victim").await;
    world
        .wait_pulls("default", "default", &["someone-elses", "added-later"])
        .await;
    assert!(world.pull_record("default", "default").is_empty());
    assert!(world.secret("default", "victim").is_none());
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_service_account_dropped_from_the_spec_loses_only_our_entry() {
    let world = World::start().await;
    world.service_account("default", "default", &["theirs"]);
    world.service_account("default", "builder", &["theirs-too"]);
    world.apply(
        "default",
        "victim",
        with_service_accounts(&["default", "builder"]),
    );
    world.apply("default", "other", with_service_accounts(&["builder"]));
    let (victim, other) = (
        world.uid("default", "victim"),
        world.uid("default", "other"),
    );
    let both = world
        .cluster
        .api
        .wait_for(WAIT, |_| {
            world
                .pulls("default", "builder")
                .into_iter()
                .collect::<BTreeSet<_>>()
                == set(&["theirs-too", "victim", "other"])
        })
        .await;
    assert!(both, "{:?}", world.pulls("default", "builder"));
    world
        .wait_pulls("default", "default", &["theirs", "victim"])
        .await;
    assert_eq!(
        world.pull_record("default", "builder"),
        [
            ("victim".to_string(), victim.clone()),
            ("other".to_string(), other.clone())
        ]
        .into_iter()
        .collect()
    );
    let default_sa = world
        .cluster
        .api
        .get(SERVICE_ACCOUNTS, Some("default"), "default")
        .unwrap();

    world
        .cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "victim",
            json!({"spec": {"serviceAccounts": ["default"]}}),
            false,
        )
        .unwrap();
    let gone = world
        .cluster
        .api
        .wait_for(WAIT, |_| {
            world
                .pulls("default", "builder")
                .into_iter()
                .collect::<BTreeSet<_>>()
                == set(&["theirs-too", "other"])
        })
        .await;
    assert!(gone, "{:?}", world.pulls("default", "builder"));
    assert_eq!(
        world.pulls("default", "builder")[0],
        "theirs-too",
        "others' entries keep their place"
    );
    assert_eq!(
        world.pull_record("default", "builder"),
        [("other".to_string(), other)].into_iter().collect(),
        "the record is updated"
    );
    world
        .wait_cr("default", "victim", "observing generation 2", |cr| {
            ready_of(cr)["observedGeneration"] == 2
        })
        .await;
    assert_eq!(
        world
            .cluster
            .api
            .get(SERVICE_ACCOUNTS, Some("default"), "default")
            .unwrap()["metadata"]["resourceVersion"],
        default_sa["metadata"]["resourceVersion"],
        "the ServiceAccount still named is untouched"
    );
    assert_eq!(
        world.pull_record("default", "default"),
        [("victim".to_string(), victim)].into_iter().collect()
    );
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn an_entry_the_user_listed_with_our_secrets_name_is_never_removed() {
    let world = World::start().await;
    world.service_account("default", "default", &["victim"]);
    let sa_rv = || {
        world
            .cluster
            .api
            .get(SERVICE_ACCOUNTS, Some("default"), "default")
            .unwrap()["metadata"]["resourceVersion"]
            .clone()
    };
    let rv = sa_rv();
    world.apply("default", "victim", with_service_accounts(&["default"]));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.quiet(Duration::from_millis(300)).await;
    assert_eq!(world.pulls("default", "default"), ["victim"]);
    assert!(
        world.pull_record("default", "default").is_empty(),
        "not ours"
    );
    assert_eq!(sa_rv(), rv, "nothing to add: the name is listed");

    // No longer named: the entry is not the operator's to remove.
    world
        .cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "victim",
            json!({"spec": {"serviceAccounts": []}}),
            false,
        )
        .unwrap();
    world
        .wait_cr("default", "victim", "observing generation 2", |cr| {
            ready_of(cr)["observedGeneration"] == 2
        })
        .await;
    world.quiet(Duration::from_millis(300)).await;
    assert_eq!(sa_rv(), rv);
    // Named again, then deleted: still not removed.
    world
        .cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "victim",
            json!({"spec": {"serviceAccounts": ["default"]}}),
            false,
        )
        .unwrap();
    world
        .wait_cr("default", "victim", "observing generation 3", |cr| {
            ready_of(cr)["observedGeneration"] == 3
        })
        .await;
    world
        .cluster
        .api
        .delete(CRS, Some("default"), "victim")
        .unwrap();
    world.wait_gone("default", "victim").await;
    assert_eq!(world.pulls("default", "default"), ["victim"]);
    assert_eq!(sa_rv(), rv, "the ServiceAccount was never written");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn service_account_conflicts_are_retried() {
    let mut world = World::start().await;
    world.service_account("default", "default", &[]);
    world.cluster.api.faults().add(
        FaultRule::new(409)
            .verb(Verb::Patch)
            .gvr(SERVICE_ACCOUNTS)
            .name("default")
            .times(2),
    );
    let calls = world.ecr_calls();
    world.apply("default", "victim", with_service_accounts(&["default"]));
    world.wait_pulls("default", "default", &["victim"]).await;
    assert_eq!(world.cluster.api.faults().active_rules(), 0);
    let patches = world
        .cluster
        .api
        .counters()
        .get_count("patch", SERVICE_ACCOUNTS);
    assert!(patches >= 3, "{patches} ServiceAccount patches");
    assert_eq!(
        world.pull_record("default", "default"),
        [("victim".to_string(), world.uid("default", "victim"))]
            .into_iter()
            .collect()
    );
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    assert_eq!(world.ecr_calls() - calls, 1, "retries reuse the held token");
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

#[tokio::test]
async fn a_stale_copy_that_cannot_be_deleted_is_retried_and_reported() {
    let (mut world, calls) = fanout_world().await;
    world.cluster.api.faults().add(
        FaultRule::new(500)
            .verb(Verb::Delete)
            .gvr(SECRETS)
            .name("pull")
            .times(3),
    );
    world.label_namespace("a", false);
    let note = world
        .wait_event(PLATFORM, "pull", "Warning", "SecretDeleteFailed")
        .await;
    assert!(note.contains("could not be deleted"), "{note}");
    world.wait_holders("pull", &["b"]).await;
    assert_eq!(world.cluster.api.faults().active_rules(), 0);
    let cr = world
        .wait_cr(PLATFORM, "pull", "settled on b", |cr| {
            ready_of(cr)["reason"] == "TokenRefreshed" && cr["status"]["servedNamespaces"] == 1
        })
        .await;
    assert_eq!(
        cr["status"]["secrets"],
        json!([{"namespace": "b", "name": "pull"}])
    );
    assert_eq!(world.ecr_calls() - calls, 1);
    world.keep("b", "pull");
    world.check().await;
    world.stop().await;
}
