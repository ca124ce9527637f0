//! Unit tests of [`settle`]: per-item results turned into status, Events and requeue.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::api::NamespaceFailure;
use crate::controller::plan::{self, SecretOp, TokenNeed};
use crate::controller::status::{MAX_ITEM_MESSAGE, MAX_MESSAGE, READY, patch_between};
use crate::ecr::FailureKind;
use crate::secret::SecretMeta;

// The scenario builders are shared by the plan and settle tests; each test module is
// private to its parent, so each includes its own copy.
#[allow(clippy::duplicate_mod)]
#[path = "test_scenario.rs"]
mod scenario;
use scenario::*;

/// The timing knobs of every scenario: both shorter than any refresh interval used here.
const RETRY: Retry = Retry {
    write_delay: Duration::from_secs(45),
    conflict_recheck: Duration::from_secs(60),
};

/// A write that went through.
fn done() -> OpResult {
    OpResult::Done {
        uid: "written-uid".into(),
        resource_version: "100".into(),
    }
}

/// Plans `input` with `token`, answers each operation with `answer`, and settles.
fn run(
    input: &Input,
    token: &TokenState,
    answer: impl Fn(&SecretOp) -> OpResult,
) -> (Plan, Outcome) {
    let p = plan::plan(input, token);
    let results: Vec<OpResult> = p.ops.iter().map(answer).collect();
    let out = settle(input, &p, token, &results, &RETRY);
    (p, out)
}

/// `(status, reason)` of the Ready condition.
fn ready_of(status: &ECRTokenRefreshStatus) -> (String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("a Ready condition");
    (c.status.clone(), c.reason.clone())
}

fn ready_message(status: &ECRTokenRefreshStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.message.clone())
        .expect("a Ready condition")
}

fn is(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

/// The Normal notes as (reason, count).
fn normal_notes(out: &Outcome) -> Vec<(&'static str, usize)> {
    out.notes
        .iter()
        .filter(|n| !n.warning)
        .map(|n| (n.reason, n.count))
        .collect()
}

/// The Warning notes' reasons.
fn warnings(out: &Outcome) -> Vec<&'static str> {
    out.notes
        .iter()
        .filter(|n| n.warning)
        .map(|n| n.reason)
        .collect()
}

fn namespaces(status: &ECRTokenRefreshStatus) -> Vec<&str> {
    status
        .secrets
        .iter()
        .map(|s| s.namespace.as_str())
        .collect()
}

fn failed_token(
    kind: FailureKind,
    message: &str,
    decision: RetryDecision,
    fallback: Option<&Arc<Credentials>>,
) -> TokenState {
    TokenState::Failed {
        error: ecr_error(kind, message),
        decision,
        fallback: fallback.cloned(),
        fresh: true,
    }
}

fn with_failures(mut status: ECRTokenRefreshStatus, n: u32) -> ECRTokenRefreshStatus {
    status.consecutive_failures = Some(n);
    status
}

// ---------------------------------------------------------------------------------------
// Everything written
// ---------------------------------------------------------------------------------------

#[test]
fn all_written_means_ready_with_the_new_token_described() {
    let old = ecr_token("old", h(8));
    // From the shared token cache, fetched half a minute ago for another resource.
    let new = ecr_token("new", 30);
    let input = Scenario::new()
        .holding(&old)
        .status(with_failures(status_holding(&old), 2))
        .absent(NS)
        .ours("team-a", holding("team-a", &old))
        .edited("team-b", holding("team-b", &old))
        .ours(
            "team-c",
            SecretMeta {
                metadata_intact: false,
                ..holding("team-c", &old)
            },
        )
        .build();
    assert_eq!(plan::token_need(&input), TokenNeed::Refresh);
    let (p, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |_| done());
    assert_eq!(p.ops.len(), 4);

    let s = &out.status;
    assert_eq!(ready_of(s), is("True", "TokenRefreshed"));
    assert_eq!(s.phase, Some(Phase::Ready));
    assert_eq!(s.last_updated_time, Some(Time(new.fetched_at)));
    assert_eq!(s.expires_at, Some(Time(new.expires_at)));
    // Fetch + 8h frequency comes before expiry (fetch + 12h) minus the margin.
    assert_eq!(s.next_refresh_time, Some(Time(at(h(8) - 30))));
    assert_eq!(out.requeue, Some(8 * HOUR - Duration::from_secs(30)));
    assert_eq!(namespaces(s), [NS, "team-a", "team-b", "team-c"]);
    assert_eq!(s.served_namespaces, Some(4));
    assert!(s.failed_namespaces.is_empty());
    assert_eq!(s.error, None);
    assert_eq!(
        s.consecutive_failures, None,
        "a full success resets the count"
    );
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(
        ready_message(s),
        format!(
            "4 Secrets hold a token that expires at {}; next refresh at {}",
            at(h(12) - 30),
            at(h(8) - 30)
        )
    );
    assert!(!out.failed);
    assert_eq!(out.label, "refreshed");
    assert!(out.held.as_ref().is_some_and(|h| Arc::ptr_eq(h, &new)));
    assert_eq!(out.served, targets(&[NS, "team-a", "team-b", "team-c"]));

    assert_eq!(
        normal_notes(&out),
        [("Created", 1), ("Repaired", 2), ("Refreshed", 1)]
    );
    assert!(warnings(&out).is_empty());
    let created = &out.notes[0].note;
    assert!(
        created.starts_with("Created Secret apps/ecr-credentials;")
            && created.contains(&at(h(12) - 30).to_string()),
        "{created}"
    );
    assert!(
        out.notes[1]
            .note
            .starts_with("Rewrote changed Secret team-b/ecr-credentials, team-c/ecr-credentials;"),
        "{}",
        out.notes[1].note
    );
    assert!(
        out.notes[2]
            .note
            .starts_with("Refreshed the token in Secret team-a/")
    );
}

#[test]
fn one_secret_is_named_in_the_message() {
    let new = ecr_token("new", 0);
    let input = Scenario::new().absent(NS).build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |_| done());
    assert_eq!(
        ready_message(&out.status),
        format!(
            "Secret apps/ecr-credentials holds a token that expires at {}; next refresh at {}",
            at(h(12)),
            at(h(8))
        )
    );
    assert_eq!(out.status.error, None);
}

#[test]
fn a_repair_with_the_held_token_writing_nothing_only_moves_the_generation() {
    let tok = ecr_token("pw", h(1));
    let input = Scenario::new()
        .holding(&tok)
        .generation(2)
        .ours(NS, holding(NS, &tok))
        .build();
    assert_eq!(plan::token_need(&input), TokenNeed::Repair);
    let (p, out) = run(&input, &TokenState::Ready(Arc::clone(&tok)), |_| done());
    assert!(p.ops.is_empty());
    assert_eq!(out.label, "up_to_date");
    assert!(normal_notes(&out).is_empty());
    assert_eq!(out.status.observed_generation, Some(2));
    assert_eq!(out.status.last_updated_time, Some(Time(tok.fetched_at)));
    assert_eq!(out.status.expires_at, Some(Time(tok.expires_at)));
    assert_eq!(out.status.next_refresh_time, Some(Time(at(h(7)))));
    assert_eq!(out.requeue, Some(7 * HOUR));
}

#[test]
fn an_already_expired_token_is_reported_and_refreshed_at_the_minimum_interval() {
    let expired = "2015-01-01T00:00:00Z".parse().expect("timestamp");
    let moto = token("moto", now(), expired);
    let input = Scenario::new().absent(NS).build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&moto)), |_| done());
    assert_eq!(ready_of(&out.status), is("True", "TokenRefreshed"));
    assert_eq!(out.status.next_refresh_time, Some(Time(at(60))));
    assert_eq!(out.requeue, Some(Duration::from_secs(60)));
    let message = ready_message(&out.status);
    assert!(
        message.contains("ECR reported an expiry already in the past"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------
// Write failures and conflicts
// ---------------------------------------------------------------------------------------

#[test]
fn one_failed_write_among_many_is_ready_with_the_namespace_listed() {
    let new = ecr_token("new", 0);
    let input = Scenario::new()
        .status(with_failures(Default::default(), 1))
        .absent("ns-a")
        .absent("ns-b")
        .absent("ns-c")
        .absent("ns-d")
        .build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |op| {
        if op.target().namespace == "ns-c" {
            OpResult::Failed("500 Internal Server Error: etcdserver: request timed out".into())
        } else {
            done()
        }
    });
    let s = &out.status;
    assert_eq!(ready_of(s), is("True", "SomeNamespacesFailed"));
    assert_eq!(s.phase, Some(Phase::Ready));
    assert_eq!(
        s.failed_namespaces,
        [NamespaceFailure {
            namespace: "ns-c".into(),
            reason: "SecretWriteFailed".into(),
            message: "cannot write Secret ns-c/ecr-credentials: 500 Internal Server Error: \
                      etcdserver: request timed out"
                .into(),
        }]
    );
    assert_eq!(namespaces(s), ["ns-a", "ns-b", "ns-d"]);
    assert_eq!(s.served_namespaces, Some(3));
    assert!(
        out.requeue.is_some_and(|r| r <= RETRY.write_delay),
        "{:?}",
        out.requeue
    );
    assert!(out.failed);
    assert_eq!(s.consecutive_failures, Some(2));
    assert!(
        s.error.as_deref().is_some_and(|e| e.contains("ns-c")),
        "{s:?}"
    );
    assert_eq!(warnings(&out), ["SecretWriteFailed"]);
    assert_eq!(normal_notes(&out), [("Created", 3)]);
    // The status still describes the token the served Secrets hold.
    assert_eq!(s.expires_at, Some(Time(new.expires_at)));
}

#[test]
fn a_create_finding_a_secret_there_is_a_conflict_not_a_failure() {
    let new = ecr_token("new", 0);
    let input = Scenario::new()
        .status(with_failures(Default::default(), 3))
        .absent(NS)
        .absent("team-a")
        .build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |op| {
        if op.target().namespace == "team-a" {
            OpResult::Exists
        } else {
            done()
        }
    });
    let s = &out.status;
    assert_eq!(ready_of(s), is("True", "SomeNamespacesFailed"));
    assert_eq!(s.failed_namespaces.len(), 1);
    assert_eq!(s.failed_namespaces[0].namespace, "team-a");
    assert_eq!(s.failed_namespaces[0].reason, "SecretConflict");
    assert_eq!(out.requeue, Some(RETRY.conflict_recheck));
    assert!(!out.failed);
    assert_eq!(s.consecutive_failures, None);
    assert_eq!(warnings(&out), ["SecretConflict"]);

    // The only target: not Ready, still no failure.
    let input = Scenario::new().absent(NS).build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |_| {
        OpResult::Exists
    });
    assert_eq!(ready_of(&out.status), is("False", "SecretConflict"));
    assert_eq!(out.status.phase, Some(Phase::Failed));
    assert_eq!(out.label, "secret_conflict");
    assert_eq!(out.requeue, Some(RETRY.conflict_recheck));
    assert_eq!(
        out.status.next_refresh_time,
        Some(Time(at(RETRY.conflict_recheck.as_secs() as i64)))
    );
    assert!(!out.failed);
    assert!(out.served.is_empty());
}

#[test]
fn foreign_and_terminating_targets_are_listed_and_looked_at_again() {
    let tok = ecr_token("pw", 0);
    let terminating = SecretMeta {
        terminating: true,
        ..holding("team-b", &tok)
    };
    let input = Scenario::new()
        .absent(NS)
        .foreign("team-a")
        .ours("team-b", terminating)
        .build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&tok)), |_| done());
    let s = &out.status;
    assert_eq!(ready_of(s), is("True", "SomeNamespacesFailed"));
    let failed: Vec<(&str, &str)> = s
        .failed_namespaces
        .iter()
        .map(|f| (f.namespace.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(
        failed,
        [
            ("team-a", "SecretConflict"),
            ("team-b", "SecretTerminating")
        ]
    );
    assert_eq!(namespaces(s), [NS]);
    assert_eq!(out.requeue, Some(RETRY.conflict_recheck));
    assert!(!out.failed);
}

#[test]
fn failed_rewrites_keep_serving_the_token_they_hold() {
    let old = ecr_token("old", h(9));
    let new = ecr_token("new", 0);
    let input = Scenario::new()
        .holding(&old)
        .ours(NS, holding(NS, &old))
        .ours("team-a", holding("team-a", &old))
        .build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |op| {
        if op.target().namespace == NS {
            OpResult::Changed
        } else {
            OpResult::Failed("403 Forbidden: secrets is forbidden".into())
        }
    });
    let s = &out.status;
    // Both Secrets still hold an unexpired token: they serve (and keep their
    // ServiceAccount entries) while the rewrite is retried with the new token.
    assert_eq!(ready_of(s), is("True", "SomeNamespacesFailed"));
    assert_eq!(out.served, targets(&[NS, "team-a"]));
    assert!(out.failed);
    assert_eq!(s.consecutive_failures, Some(1));
    assert_eq!(out.requeue, Some(RETRY.write_delay));
    assert_eq!(s.last_updated_time, Some(Time(old.fetched_at)));
    assert_eq!(s.expires_at, Some(Time(old.expires_at)));
    assert_eq!(s.served_namespaces, Some(2));
    assert!(out.held.as_ref().is_some_and(|h| Arc::ptr_eq(h, &new)));
    let reasons: Vec<&str> = s
        .failed_namespaces
        .iter()
        .map(|f| f.reason.as_str())
        .collect();
    assert_eq!(reasons, ["SecretWriteFailed", "SecretWriteFailed"]);
    assert!(
        s.failed_namespaces[0].message.contains("changed meanwhile"),
        "{s:?}"
    );
    assert!(s.failed_namespaces[1].message.contains("403 Forbidden"));
    assert_eq!(warnings(&out), ["SecretWriteFailed"]);
    assert!(normal_notes(&out).is_empty());
}

#[test]
fn every_write_failing_where_nothing_serves_is_not_ready() {
    let new = ecr_token("new", 0);
    let input = Scenario::new().absent(NS).absent("team-a").build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |_| {
        OpResult::Failed("403 Forbidden: secrets is forbidden".into())
    });
    let s = &out.status;
    assert_eq!(ready_of(s), is("False", "SecretWriteFailed"));
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(out.label, "secret_write_failed");
    assert!(out.failed);
    assert_eq!(out.requeue, Some(RETRY.write_delay));
    assert_eq!(s.served_namespaces, Some(0));
    assert!(s.last_updated_time.is_none() && s.expires_at.is_none());
    assert!(out.held.as_ref().is_some_and(|h| Arc::ptr_eq(h, &new)));
}

#[test]
fn a_stale_secret_that_cannot_be_deleted_is_retried_as_a_failure() {
    let tok = ecr_token("pw", h(1));
    let input = Scenario::new()
        .holding(&tok)
        .ours(NS, holding(NS, &tok))
        .stale("team-a", holding("team-a", &tok))
        .build();
    let (p, out) = run(&input, &TokenState::NotNeeded, |_| {
        OpResult::Failed("503 Service Unavailable".into())
    });
    assert_eq!(p.ops.len(), 1);
    assert_eq!(ready_of(&out.status), is("True", "TokenRefreshed"));
    assert!(out.failed);
    assert_eq!(out.status.consecutive_failures, Some(1));
    assert_eq!(out.requeue, Some(RETRY.write_delay));
    assert_eq!(warnings(&out), ["SecretDeleteFailed"]);
    assert_eq!(out.label, "up_to_date");
    // Deleted after all: nothing to retry before the next refresh.
    let (_, out) = run(&input, &TokenState::NotNeeded, |_| done());
    assert!(!out.failed);
    assert_eq!(out.requeue, Some(7 * HOUR));
    assert!(out.notes.is_empty(), "{:?}", out.notes);
}

// ---------------------------------------------------------------------------------------
// No token
// ---------------------------------------------------------------------------------------

#[test]
fn a_failed_token_keeps_the_secrets_and_what_status_said_about_them() {
    let old = ecr_token("old", h(9));
    let mut previous = with_failures(status_holding(&old), 4);
    previous.next_refresh_time = Some(Time(at(-h(1))));
    let input = Scenario::new()
        .holding(&old)
        .status(previous)
        .ours(NS, holding(NS, &old))
        .ours("team-a", holding("team-a", &old))
        .build();
    let token = failed_token(
        FailureKind::Throttled,
        "Rate exceeded",
        RetryDecision::RetryAfter(Duration::from_secs(90)),
        Some(&old),
    );
    let (p, out) = run(&input, &token, |_| done());
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    let s = &out.status;
    assert_eq!(ready_of(s), is("False", "ECRThrottled"));
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(out.label, "token_failed");
    assert_eq!(namespaces(s), [NS, "team-a"], "the Secrets still serve");
    assert_eq!(s.served_namespaces, Some(2));
    assert_eq!(s.last_updated_time, Some(Time(old.fetched_at)));
    assert_eq!(s.expires_at, Some(Time(old.expires_at)));
    assert_eq!(s.next_refresh_time, Some(Time(at(90))));
    assert_eq!(out.requeue, Some(Duration::from_secs(90)));
    assert!(out.failed);
    assert_eq!(s.consecutive_failures, Some(5));
    assert!(out.held.as_ref().is_some_and(|h| Arc::ptr_eq(h, &old)));
    let message = ready_message(s);
    assert!(
        message.contains("Rate exceeded")
            && message.contains(&format!(
                "the Secrets are kept as they are (their token expires at {})",
                old.expires_at
            )),
        "{message}"
    );
    assert_eq!(s.error.as_deref(), Some(message.as_str()));
    assert_eq!(warnings(&out), ["ECRThrottled"]);
}

#[test]
fn a_retry_policy_giving_up_stops_requeueing_and_says_how_to_retry() {
    let old = ecr_token("old", h(9));
    let input = Scenario::new()
        .holding(&old)
        .ours(NS, holding(NS, &old))
        .build();
    let token = failed_token(
        FailureKind::AccessDenied,
        "not authorized to perform ecr:GetAuthorizationToken",
        RetryDecision::GiveUp {
            reason: "access denied does not heal by itself".into(),
        },
        Some(&old),
    );
    let (_, out) = run(&input, &token, |_| done());
    assert_eq!(ready_of(&out.status), is("False", "ECRAccessDenied"));
    assert_eq!(out.requeue, None);
    assert_eq!(out.status.next_refresh_time, None);
    assert!(out.failed);
    let message = ready_message(&out.status);
    assert!(
        message.contains(
            "the retry policy gave up (access denied does not heal by itself): \
             edit the resource to try again"
        ),
        "{message}"
    );
}

#[test]
fn a_first_reconcile_without_a_token_writes_nothing_and_says_so() {
    let input = Scenario::new().absent(NS).build();
    let token = failed_token(
        FailureKind::Network,
        "dispatch failure",
        RetryDecision::RetryAfter(Duration::from_secs(5)),
        None,
    );
    let (p, out) = run(&input, &token, |_| done());
    assert!(p.ops.is_empty());
    let s = &out.status;
    assert_eq!(ready_of(s), is("False", "ECRUnreachable"));
    assert_eq!(s.last_updated_time, None);
    assert_eq!(s.expires_at, None);
    assert!(s.secrets.is_empty());
    assert_eq!(s.failed_namespaces.len(), 1);
    assert_eq!(s.failed_namespaces[0].reason, "TokenUnavailable");
    assert!(
        ready_message(s).contains("no Secret is written until a token is obtained"),
        "{s:?}"
    );
    assert_eq!(out.requeue, Some(Duration::from_secs(5)));
    assert!(out.held.is_none());
}

#[test]
fn during_an_outage_a_missing_secret_is_created_with_the_held_token() {
    let held = ecr_token("held", h(9));
    let input = Scenario::new()
        .holding(&held)
        .absent(NS)
        .ours("team-a", holding("team-a", &held))
        .build();
    let token = failed_token(
        FailureKind::ServerError,
        "500 from ECR",
        RetryDecision::RetryAfter(Duration::from_secs(20)),
        Some(&held),
    );
    let (p, out) = run(&input, &token, |_| done());
    assert_eq!(p.ops, [SecretOp::Create(target(NS))]);
    assert_eq!(ready_of(&out.status), is("False", "ECRServerError"));
    assert_eq!(out.served, targets(&[NS, "team-a"]));
    assert_eq!(out.status.expires_at, Some(Time(held.expires_at)));
    assert_eq!(out.status.last_updated_time, Some(Time(held.fetched_at)));
    assert_eq!(normal_notes(&out), [("Created", 1)]);
    assert_eq!(out.requeue, Some(Duration::from_secs(20)));
}

#[test]
fn a_failed_token_keeps_the_service_account_entries() {
    let old = ecr_token("old", h(9));
    let views = [sa(NS, "default", "3", &[NAME], &[(NAME, UID)])];
    let input = Scenario::new()
        .holding(&old)
        .named(&["default"])
        .sa(views[0].clone())
        .ours(NS, holding(NS, &old))
        .build();
    let token = failed_token(
        FailureKind::Throttled,
        "Rate exceeded",
        RetryDecision::RetryAfter(Duration::from_secs(30)),
        None,
    );
    let (_, out) = run(&input, &token, |_| done());
    let ops = plan::pull_secret_ops(UID, &input.resource.service_accounts, &views, &out.served);
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn a_failed_update_does_not_unlink_the_secret_from_its_service_accounts() {
    let old = ecr_token("old", h(9));
    let new = ecr_token("new", 0);
    let views = [sa(NS, "default", "3", &[NAME], &[(NAME, UID)])];
    let input = Scenario::new()
        .holding(&old)
        .named(&["default"])
        .sa(views[0].clone())
        .ours(NS, holding(NS, &old))
        .build();
    for answer in [
        OpResult::Failed("500 Internal Server Error".into()),
        OpResult::Changed,
    ] {
        let (p, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |_| {
            answer.clone()
        });
        assert_eq!(p.ops.len(), 1);
        let ops = plan::pull_secret_ops(UID, &input.resource.service_accounts, &views, &out.served);
        assert!(ops.is_empty(), "{answer:?} unlinks the Secret: {ops:?}");
    }
}

#[test]
fn a_secret_kept_for_lack_of_a_token_still_serves_unless_someone_edited_it() {
    let old = ecr_token("old", h(9));
    let token = || {
        failed_token(
            FailureKind::Throttled,
            "Rate exceeded",
            RetryDecision::RetryAfter(Duration::from_secs(30)),
            None,
        )
    };
    // As written, but its expiry annotation disagrees with status (it needs a rewrite):
    // it still serves what it holds.
    let mut stale = holding(NS, &old);
    stale.expires_at = Some(at(h(1)));
    let input = Scenario::new()
        .holding(&old)
        .held(None)
        .ours(NS, stale)
        .build();
    let (p, out) = run(&input, &token(), |_| done());
    assert_eq!(p.held, [(target(NS), plan::Held::NoToken)]);
    assert_eq!(out.served, targets(&[NS]));
    assert_eq!(namespaces(&out.status), [NS]);
    assert!(out.status.failed_namespaces.is_empty(), "{:?}", out.status);

    // Edited by someone: its annotations may be forged, so it is not counted as serving
    // and its expiry never reaches status.
    let mut forged = holding(NS, &old);
    forged.expires_at = Some(at(h(10_000)));
    let input = Scenario::new()
        .holding(&old)
        .held(None)
        .edited(NS, forged)
        .build();
    let (p, out) = run(&input, &token(), |_| done());
    assert_eq!(p.held, [(target(NS), plan::Held::NoToken)]);
    assert!(out.served.is_empty());
    assert_eq!(out.status.expires_at, Some(Time(old.expires_at)));
    assert_eq!(
        out.status.failed_namespaces[0].reason, "TokenUnavailable",
        "{:?}",
        out.status
    );
}

#[test]
fn secrets_already_holding_the_token_recover_a_lost_status_write() {
    // The last reconcile wrote the new token and remembered it, but its status patch was
    // lost: status still describes the old token, long due.
    let old = ecr_token("old", h(9));
    let new = ecr_token("new", 60);
    let input = Scenario::new()
        .holding(&old)
        .held(Some(&new))
        .ours(NS, holding(NS, &new))
        .build();
    assert_eq!(plan::token_need(&input), TokenNeed::Refresh);
    assert!(input.accepts(&new));
    let (p, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |_| done());
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    assert_eq!(out.label, "up_to_date");
    assert_eq!(out.status.last_updated_time, Some(Time(new.fetched_at)));
    assert_eq!(out.status.expires_at, Some(Time(new.expires_at)));
    assert_eq!(out.status.next_refresh_time, Some(Time(at(h(8) - 60))));
}

// ---------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------

#[test]
fn status_lists_are_capped_and_the_count_is_complete() {
    let new = ecr_token("new", 0);
    let mut scenario = Scenario::new();
    for i in 0..130 {
        scenario = scenario.absent(&format!("ns-{i:03}"));
    }
    for i in 0..25 {
        scenario = scenario.foreign(&format!("zz-{i:02}"));
    }
    let input = scenario.build();
    let (_, out) = run(&input, &TokenState::Ready(Arc::clone(&new)), |_| done());
    let s = &out.status;
    assert_eq!(s.secrets.len(), MAX_STATUS_SECRETS);
    assert_eq!(s.served_namespaces, Some(130));
    assert_eq!(out.served.len(), 130);
    assert_eq!(s.failed_namespaces.len(), MAX_STATUS_FAILURES);
    assert_eq!(s.failed_namespaces[0].namespace, "zz-00");
    assert_eq!(s.failed_namespaces[19].namespace, "zz-19");
    let message = ready_message(s);
    assert!(
        message.starts_with("130 Secrets hold")
            && message.contains("(and 22 more namespaces failed)"),
        "{message}"
    );
    assert!(message.len() <= MAX_MESSAGE);
    let created = out
        .notes
        .iter()
        .find(|n| n.reason == "Created")
        .expect("a Created note");
    assert_eq!(created.count, 130);
    assert!(created.note.contains(" and 125 more"), "{}", created.note);
}

#[test]
fn long_messages_are_truncated() {
    let old = ecr_token("old", h(9));
    let input = Scenario::new()
        .holding(&old)
        .ours(NS, holding(NS, &old))
        .build();
    let token = failed_token(
        FailureKind::Other,
        &"x".repeat(3 * MAX_MESSAGE),
        RetryDecision::RetryAfter(Duration::from_secs(30)),
        None,
    );
    let (_, out) = run(&input, &token, |_| done());
    let message = ready_message(&out.status);
    assert!(message.len() <= MAX_MESSAGE, "{}", message.len());
    assert!(message.ends_with('…'));
    assert_eq!(out.status.error.as_deref(), Some(message.as_str()));

    // One failed namespace's message is cut to its own, smaller, limit.
    let input = Scenario::new().absent(NS).absent("team-a").build();
    let (_, out) = run(&input, &TokenState::Ready(ecr_token("new", 0)), |op| {
        if op.target().namespace == NS {
            OpResult::Failed("y".repeat(4 * MAX_ITEM_MESSAGE))
        } else {
            done()
        }
    });
    let item = &out.status.failed_namespaces[0].message;
    assert!(
        item.len() <= MAX_ITEM_MESSAGE && item.ends_with('…'),
        "{}",
        item.len()
    );
}

// ---------------------------------------------------------------------------------------
// Steady state: no status write
// ---------------------------------------------------------------------------------------

#[test]
fn an_unchanged_second_settle_writes_no_status() {
    let old = ecr_token("old", h(8));
    let new = ecr_token("new", 0);
    let first = Scenario::new()
        .holding(&old)
        .absent(NS)
        .ours("team-a", holding("team-a", &old))
        .foreign("team-b")
        .build();
    let (_, out1) = run(&first, &TokenState::Ready(Arc::clone(&new)), |_| done());
    assert!(patch_between(&first.resource.status, &out1.status).is_some());

    // Five minutes later: the Secrets hold the new token, as the first settle said.
    let second = Scenario::new()
        .status(out1.status.clone())
        .held(out1.held.as_ref())
        .now(at(5 * 60))
        .ours(NS, holding(NS, &new))
        .ours("team-a", holding("team-a", &new))
        .foreign("team-b")
        .build();
    assert_eq!(plan::token_need(&second), TokenNeed::None);
    let (p, out2) = run(&second, &TokenState::NotNeeded, |_| done());
    assert!(p.ops.is_empty());
    assert_eq!(out2.status, out1.status);
    assert_eq!(patch_between(&second.resource.status, &out2.status), None);
    assert_eq!(out2.label, "up_to_date");
    assert!(!out2.failed);
    assert_eq!(
        out2.requeue,
        Some(RETRY.conflict_recheck),
        "the foreign Secret is looked at again"
    );
    assert!(normal_notes(&out2).is_empty());
}

#[test]
fn the_transition_time_stays_while_ready_stays_true() {
    let new = ecr_token("new", 0);
    let first = Scenario::new().absent(NS).build();
    let (_, out1) = run(&first, &TokenState::Ready(Arc::clone(&new)), |_| done());
    let t1 = out1.status.conditions[0].last_transition_time.clone();
    assert_eq!(t1, Time(now()));
    // An hour later, a repair writes the Secret again with the same token.
    let second = Scenario::new()
        .status(out1.status.clone())
        .held(Some(&new))
        .now(at(h(1)))
        .edited(NS, holding(NS, &new))
        .build();
    let (_, out2) = run(&second, &TokenState::Ready(Arc::clone(&new)), |_| done());
    assert_eq!(normal_notes(&out2), [("Repaired", 1)]);
    assert_eq!(out2.status.conditions[0].last_transition_time, t1);
    assert_eq!(out2.status, out1.status, "nothing it describes changed");
}
