//! More edge cases of [`Memory`], whose answers `observe` turns into the plan's
//! [`Found`](crate::controller::plan::Found) and [`Stale`](crate::controller::plan::Stale):
//! `recall`, `just_written`, `recent_writes`, `mark_deleted` and the per-resource counters.
//!
//! Included (`#[path]`) by `plan_tests.rs`, since `memory.rs` itself was left untouched;
//! it can move next to `memory.rs`'s own tests unchanged.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;

use crate::controller::memory::{CACHE_LAG, Memory, Recalled, Written};
use crate::ecr::{AuthorizationToken, Credentials, HeldToken};
use crate::secret::{SecretMeta, SecretTarget};

const OWNER: &str = "owner-uid";
const OTHER: &str = "other-owner-uid";

fn target(namespace: &str) -> SecretTarget {
    SecretTarget {
        namespace: namespace.into(),
        name: "creds".into(),
    }
}

fn expiry() -> Timestamp {
    "2026-03-02T00:00:00Z".parse().expect("timestamp")
}

/// A Secret of ours as the watch cache shows it.
fn cached(uid: &str, rv: &str) -> SecretMeta {
    SecretMeta {
        uid: uid.into(),
        resource_version: rv.into(),
        ours: true,
        metadata_intact: true,
        data_hash: Some("cached-hash".into()),
        expires_at: None,
        terminating: false,
    }
}

/// Well past [`CACHE_LAG`].
fn long_ago() -> Instant {
    Instant::now()
        .checked_sub(CACHE_LAG * 3)
        .expect("the monotonic clock is past CACHE_LAG")
}

/// A record by `owner` of the Secret `uid` at `rv` (before: `previous`), written at `at`
/// (`None`: verified, not written).
fn write(owner: &str, uid: &str, rv: &str, previous: Option<&str>, at: Option<Instant>) -> Written {
    Written::new(owner, uid, rv)
        .previous(previous)
        .holding(Some("written-hash"), Some(expiry()))
        .at(at)
}

/// The metadata a fresh record stands in with.
fn as_written(uid: &str, rv: &str) -> SecretMeta {
    SecretMeta {
        uid: uid.into(),
        resource_version: rv.into(),
        ours: true,
        metadata_intact: true,
        data_hash: Some("written-hash".into()),
        expires_at: Some(expiry()),
        terminating: false,
    }
}

fn not_edited(meta: SecretMeta) -> Recalled {
    Recalled {
        meta,
        edited: false,
    }
}

fn edited(meta: SecretMeta) -> Recalled {
    Recalled { meta, edited: true }
}

#[test]
fn a_fresh_record_stands_in_with_exactly_what_was_written() {
    let m = Memory::default();
    m.record(
        target("a"),
        write(OWNER, "s1", "7", Some("5"), Some(Instant::now())),
    );
    assert_eq!(
        m.just_written(&target("a"), OWNER),
        Some(as_written("s1", "7"))
    );
    assert_eq!(
        m.recent_writes(OWNER),
        vec![(target("a"), as_written("s1", "7"))]
    );
    // Only for that target.
    assert_eq!(m.just_written(&target("b"), OWNER), None);
    assert_eq!(
        m.recall(&target("b"), OWNER, &cached("s9", "1")),
        not_edited(cached("s9", "1"))
    );
}

#[test]
fn a_verification_record_never_stands_in_but_makes_later_edits_visible() {
    let m = Memory::default();
    m.record(target("a"), write(OWNER, "s1", "7", None, None));
    assert_eq!(m.just_written(&target("a"), OWNER), None);
    assert!(m.recent_writes(OWNER).is_empty());
    assert!(
        !m.is_own_write(&target("a"), "7"),
        "a verification is not a write of ours coming back"
    );
    assert!(m.has_record(&target("a"), OWNER));
    assert_eq!(
        m.recall(&target("a"), OWNER, &cached("s1", "7")),
        not_edited(cached("s1", "7"))
    );
    assert_eq!(
        m.recall(&target("a"), OWNER, &cached("s1", "8")),
        edited(cached("s1", "8"))
    );
    // Deleted and recreated by someone else.
    assert_eq!(
        m.recall(&target("a"), OWNER, &cached("s2", "7")),
        edited(cached("s2", "7"))
    );
}

#[test]
fn a_fresh_create_bridges_a_cache_still_showing_the_replaced_secret_only_briefly() {
    let m = Memory::default();
    // The operator created s2; the cache still shows s1, the object it replaced.
    m.record(
        target("a"),
        write(OWNER, "s2", "3", None, Some(Instant::now())),
    );
    assert_eq!(
        m.recall(&target("a"), OWNER, &cached("s1", "9")),
        not_edited(as_written("s2", "3"))
    );
    // Past the lag window the cache is the truth: someone replaced it.
    m.record(target("a"), write(OWNER, "s2", "3", None, Some(long_ago())));
    assert_eq!(
        m.recall(&target("a"), OWNER, &cached("s1", "9")),
        edited(cached("s1", "9"))
    );
}

#[test]
fn a_fresh_write_hides_no_edit_made_after_it() {
    let m = Memory::default();
    m.record(
        target("a"),
        write(OWNER, "s1", "7", Some("5"), Some(Instant::now())),
    );
    // A version that is neither ours nor the one before it: someone else wrote it.
    assert_eq!(
        m.recall(&target("a"), OWNER, &cached("s1", "8")),
        edited(cached("s1", "8"))
    );
    // The version before the write, long after it: the cache is the truth.
    m.record(
        target("a"),
        write(OWNER, "s1", "7", Some("5"), Some(long_ago())),
    );
    assert_eq!(
        m.recall(&target("a"), OWNER, &cached("s1", "5")),
        edited(cached("s1", "5"))
    );
    // But the written version itself is never an edit.
    assert_eq!(
        m.recall(&target("a"), OWNER, &cached("s1", "7")),
        not_edited(cached("s1", "7"))
    );
}

#[test]
fn recent_writes_are_only_the_fresh_undeleted_writes_of_that_owner() {
    let m = Memory::default();
    let fresh = || Some(Instant::now());
    m.record(target("a"), write(OWNER, "sa", "1", None, fresh()));
    m.record(target("b"), write(OTHER, "sb", "1", None, fresh()));
    m.record(target("c"), write(OWNER, "sc", "1", None, Some(long_ago())));
    m.record(target("d"), write(OWNER, "sd", "1", None, None));
    m.record(target("e"), write(OWNER, "se", "1", None, fresh()));
    m.mark_deleted(&target("e"), "se");
    let ours: Vec<SecretTarget> = m.recent_writes(OWNER).into_iter().map(|(t, _)| t).collect();
    assert_eq!(ours, [target("a")]);
    let theirs: Vec<SecretTarget> = m.recent_writes(OTHER).into_iter().map(|(t, _)| t).collect();
    assert_eq!(theirs, [target("b")]);
    assert_eq!(
        m.sizes(),
        (0, 5),
        "deleted records are kept (they name an owner)"
    );
}

#[test]
fn mark_deleted_applies_only_to_the_secret_it_names() {
    let m = Memory::default();
    // No record: nothing happens.
    m.mark_deleted(&target("a"), "s1");
    assert_eq!(m.sizes(), (0, 0));

    m.record(
        target("a"),
        write(OWNER, "s2", "4", None, Some(Instant::now())),
    );
    // The deletion of an older Secret at that place says nothing about the new one.
    m.mark_deleted(&target("a"), "s1");
    assert!(m.just_written(&target("a"), OWNER).is_some());
    m.mark_deleted(&target("a"), "s2");
    assert!(m.just_written(&target("a"), OWNER).is_none());
    assert!(m.has_record(&target("a"), OWNER));
    // Written again: the new record stands in.
    m.record(
        target("a"),
        write(OWNER, "s3", "6", None, Some(Instant::now())),
    );
    assert_eq!(
        m.just_written(&target("a"), OWNER),
        Some(as_written("s3", "6"))
    );
}

#[test]
fn only_the_latest_write_is_recognised_as_our_own() {
    let m = Memory::default();
    m.record(
        target("a"),
        write(OWNER, "s1", "7", Some("5"), Some(Instant::now())),
    );
    m.record(
        target("a"),
        write(OWNER, "s1", "9", Some("7"), Some(Instant::now())),
    );
    assert!(m.is_own_write(&target("a"), "9"));
    assert!(!m.is_own_write(&target("a"), "7"));
    assert!(!m.is_own_write(&target("b"), "9"));
}

#[test]
fn forgetting_is_precise() {
    let m = Memory::default();
    m.bump_failures(OWNER);
    m.bump_failures(OTHER);
    m.record(target("a"), write(OWNER, "s1", "1", None, None));
    m.record(target("b"), write(OTHER, "s2", "1", None, None));
    // Another Secret's uid at that place: the record stays.
    m.forget_secret_uid(&target("a"), "s0");
    assert!(m.has_record(&target("a"), OWNER));
    m.forget_secret_uid(&target("a"), "s1");
    assert!(!m.has_record(&target("a"), OWNER));

    m.record(target("a"), write(OWNER, "s1", "1", None, None));
    m.forget_resource(OWNER);
    assert_eq!(m.sizes(), (1, 1));
    assert_eq!(m.failures(OWNER), 0);
    assert_eq!(m.failures(OTHER), 1);
    assert!(m.has_record(&target("b"), OTHER));
    assert!(!m.has_record(&target("a"), OWNER));
}

#[test]
fn failure_counts_saturate_and_the_held_token_can_be_cleared() {
    let m = Memory::default();
    assert_eq!(m.bump_failures(OWNER), 1);
    assert_eq!(m.bump_failures(OWNER), 2);
    m.set_failures(OWNER, u32::MAX);
    assert_eq!(m.bump_failures(OWNER), u32::MAX);
    m.set_failures(OWNER, 0);
    assert_eq!(m.failures(OWNER), 0);

    assert!(m.held(OWNER).is_none());
    let held = Arc::new(HeldToken {
        key: crate::ecr::TokenKey::operator("us-east-1", false),
        token: AuthorizationToken {
            username: "AWS".into(),
            password: secrecy::SecretString::from("pw".to_string()),
            expires_at: expiry(),
            proxy_endpoint: None,
        },
        fetched_at: Timestamp::UNIX_EPOCH,
    });
    let tok = Arc::new(Credentials::new(vec![("registry".into(), held)]).unwrap());
    m.set_held(OTHER, Some(Arc::clone(&tok)));
    assert!(m.held(OTHER).is_some_and(|h| Arc::ptr_eq(&h, &tok)));
    assert!(m.held(OWNER).is_none(), "held tokens are per resource");
    m.set_held(OTHER, None);
    assert!(m.held(OTHER).is_none());
    assert_eq!(m.sizes(), (2, 0));
}
