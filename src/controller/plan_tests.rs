//! Unit tests of the plan's pure decisions: [`token_need`], [`Input::accepts`],
//! [`Input::scheduled_refresh`], [`plan`], [`needs_finalizer`] and [`pull_secret_ops`].

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::ecr::FailureKind;

// The scenario builders are shared by the plan and settle tests; each test module is
// private to its parent, so each includes its own copy.
#[allow(clippy::duplicate_mod)]
#[path = "test_scenario.rs"]
mod scenario;
use scenario::*;

/// What the controller remembers decides what `observe` finds; see the file.
#[path = "memory_tests.rs"]
mod memory;

// ---------------------------------------------------------------------------------------
// token_need
// ---------------------------------------------------------------------------------------

#[test]
fn without_status_a_token_is_needed_whatever_is_found() {
    let tok = ecr_token("pw", h(1));
    // A first reconcile: nothing there yet.
    assert_eq!(
        token_need(&Scenario::new().absent(NS).build()),
        TokenNeed::Refresh
    );
    // An intact Secret of ours, but status does not say what it holds.
    let input = Scenario::new()
        .held(Some(&tok))
        .ours(NS, holding(NS, &tok))
        .build();
    assert_eq!(token_need(&input), TokenNeed::Refresh);
    // Status knows when it was written but not when it expires: still unknown.
    let mut status = status_holding(&tok);
    status.expires_at = None;
    let input = Scenario::new()
        .status(status)
        .ours(NS, holding(NS, &tok))
        .build();
    assert_eq!(token_need(&input), TokenNeed::Refresh);
}

#[test]
fn fresh_status_and_intact_targets_need_no_token() {
    let tok = ecr_token("pw", h(1));
    let input = Scenario::new()
        .holding(&tok)
        .ours(NS, holding(NS, &tok))
        .ours("team-a", holding("team-a", &tok))
        .build();
    assert_eq!(token_need(&input), TokenNeed::None);
}

#[test]
fn due_by_frequency_means_refresh_exactly_from_the_scheduled_time() {
    // Fetched 8h ago, frequency 8h, expiry 4h ahead: due now (by frequency).
    let tok = ecr_token("pw", h(8));
    let scenario = Scenario::new().holding(&tok).ours(NS, holding(NS, &tok));
    assert_eq!(token_need(&scenario.clone().build()), TokenNeed::Refresh);
    // One second earlier it was not due yet.
    let before = scenario.clone().now(at(-1)).build();
    assert_eq!(token_need(&before), TokenNeed::None);
    // A shorter frequency makes it due earlier.
    let tok = ecr_token("pw", h(2));
    let input = Scenario::new()
        .frequency(2 * HOUR)
        .holding(&tok)
        .ours(NS, holding(NS, &tok))
        .build();
    assert_eq!(token_need(&input), TokenNeed::Refresh);
}

#[test]
fn a_refresh_due_before_the_next_pass_counts_as_due_with_refresh_ahead() {
    // Fetched 2h ago, frequency 8h: due in 6h. A pass whose next run is in 6h refreshes
    // now; one whose next run is sooner does not (the next one will).
    let tok = ecr_token("pw", h(2));
    let mut input = Scenario::new()
        .holding(&tok)
        .ours(NS, holding(NS, &tok))
        .build();
    assert_eq!(token_need(&input), TokenNeed::None);
    input.schedule.refresh_ahead = 6 * HOUR;
    assert_eq!(token_need(&input), TokenNeed::Refresh);
    input.schedule.refresh_ahead = 6 * HOUR - Duration::from_secs(1);
    assert_eq!(token_need(&input), TokenNeed::None);
}

#[test]
fn due_by_expiry_minus_margin_even_with_a_long_frequency() {
    // Frequency 24h: the expiry (12h after fetch) minus the 30 min margin decides.
    let tok = ecr_token("pw", h(11) + 30 * 60);
    let due = Scenario::new()
        .frequency(24 * HOUR)
        .holding(&tok)
        .ours(NS, holding(NS, &tok));
    assert_eq!(token_need(&due.clone().build()), TokenNeed::Refresh);
    assert_eq!(token_need(&due.now(at(-1)).build()), TokenNeed::None);
}

#[test]
fn a_missing_changed_or_different_target_or_a_new_generation_needs_a_repair() {
    let tok = ecr_token("pw", h(1));
    let intact = holding("team-a", &tok);
    let base = || Scenario::new().holding(&tok).ours(NS, holding(NS, &tok));
    let cases: Vec<(&str, Input)> = vec![
        ("a target is missing", base().absent("team-a").build()),
        (
            "a target was edited by someone else",
            base().edited("team-a", intact.clone()).build(),
        ),
        (
            "a target's labels or ownerReference are not as written",
            base()
                .ours(
                    "team-a",
                    SecretMeta {
                        metadata_intact: false,
                        ..intact.clone()
                    },
                )
                .build(),
        ),
        (
            "a target lost its data-hash annotation",
            base()
                .ours(
                    "team-a",
                    SecretMeta {
                        data_hash: None,
                        ..intact.clone()
                    },
                )
                .build(),
        ),
        (
            "a target's expiry annotation differs from status.expiresAt",
            base()
                .ours(
                    "team-a",
                    SecretMeta {
                        expires_at: Some(at(h(1))),
                        ..intact.clone()
                    },
                )
                .build(),
        ),
        (
            "a target has no expiry annotation",
            base()
                .ours(
                    "team-a",
                    SecretMeta {
                        expires_at: None,
                        ..intact.clone()
                    },
                )
                .build(),
        ),
        (
            "the spec changed since status was written",
            base().ours("team-a", intact.clone()).generation(2).build(),
        ),
    ];
    for (why, input) in cases {
        assert_eq!(token_need(&input), TokenNeed::Repair, "{why}");
    }
    // The same scenario with everything as written needs nothing (the cases above differ
    // from it only by what they name).
    assert_eq!(
        token_need(&base().ours("team-a", intact).build()),
        TokenNeed::None
    );
}

#[test]
fn no_token_is_needed_when_no_target_can_be_written() {
    let tok = ecr_token("pw", h(1));
    // Every target someone else's: nothing would be written, not even on a first reconcile.
    let input = Scenario::new().foreign(NS).foreign("team-a").build();
    assert_eq!(token_need(&input), TokenNeed::None);
    // Only terminating Secrets of ours (and foreign ones): nothing to write either, even
    // when due and broken.
    let terminating = SecretMeta {
        terminating: true,
        metadata_intact: false,
        ..holding(NS, &tok)
    };
    let input = Scenario::new()
        .ours(NS, terminating.clone())
        .foreign("team-a")
        .build();
    assert_eq!(token_need(&input), TokenNeed::None);
    let input = Scenario::new()
        .edited(NS, terminating)
        .now(at(h(20)))
        .build();
    assert_eq!(token_need(&input), TokenNeed::None);
    // No target at all.
    assert_eq!(token_need(&Scenario::new().build()), TokenNeed::None);
}

#[test]
fn one_writable_target_among_foreign_ones_needs_a_token() {
    let input = Scenario::new().foreign("team-a").absent(NS).build();
    assert_eq!(token_need(&input), TokenNeed::Refresh);
}

#[test]
fn a_broken_terminating_target_alone_does_not_need_a_token() {
    let tok = ecr_token("pw", h(1));
    let input = Scenario::new()
        .holding(&tok)
        .ours(NS, holding(NS, &tok))
        .edited(
            "team-a",
            SecretMeta {
                terminating: true,
                ..holding("team-a", &tok)
            },
        )
        .build();
    // plan would write nothing with any token: the terminating one is held.
    let p = plan(&input, &TokenState::Ready(Arc::clone(&tok)));
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    assert_eq!(token_need(&input), TokenNeed::None);
}

// ---------------------------------------------------------------------------------------
// Input::accepts, Input::scheduled_refresh
// ---------------------------------------------------------------------------------------

#[test]
fn a_recent_token_is_accepted_and_one_past_its_own_refresh_time_is_not() {
    let input = Scenario::new().build();
    assert!(input.accepts(&ecr_token("pw", h(1))));
    assert!(input.accepts(&ecr_token("pw", h(8) - 1)));
    // Its own refresh time (fetched + 8h frequency) has come.
    assert!(!input.accepts(&ecr_token("pw", h(8))));
    // Short-lived: fetched 20 min ago, expiring in 10 min: refresh was due at mid-life.
    let short = token("pw", at(-20 * 60), at(10 * 60));
    assert!(!input.accepts(&short));
    // A shorter frequency on the resource rejects a token another resource accepts.
    let two_hours_old = ecr_token("pw", h(2));
    assert!(input.accepts(&two_hours_old));
    let hourly = Scenario::new().frequency(HOUR).build();
    assert!(!hourly.accepts(&two_hours_old));
}

#[test]
fn acceptance_ignores_status_only_the_token_counts() {
    // Status says the Secrets are long due; a just-fetched token is still fine.
    let old = ecr_token("old", h(20));
    let input = Scenario::new().holding(&old).build();
    assert!(!input.accepts(&old));
    assert!(input.accepts(&ecr_token("new", 0)));
}

#[test]
fn an_already_expired_token_is_accepted_only_within_the_minimum_interval() {
    // moto: expiresAt is 2015-01-01, always in the past.
    let expired = "2015-01-01T00:00:00Z".parse().expect("timestamp");
    let input = Scenario::new().build();
    assert_eq!(
        input.schedule.min_refresh_interval,
        std::time::Duration::from_secs(60)
    );
    assert!(input.accepts(&token("pw", at(-30), expired)));
    assert!(input.accepts(&token("pw", at(-59), expired)));
    assert!(!input.accepts(&token("pw", at(-60), expired)));
    assert!(!input.accepts(&token("pw", at(-3600), expired)));
}

#[test]
fn the_scheduled_refresh_comes_from_status_only() {
    let tok = ecr_token("pw", h(1));
    let input = Scenario::new().holding(&tok).build();
    // Fetched 1h ago with an 8h frequency: 7h from now.
    assert_eq!(input.scheduled_refresh(), Some(at(h(7))));
    // Without one of the two times, status does not say.
    let mut status = status_holding(&tok);
    status.last_updated_time = None;
    assert_eq!(
        Scenario::new().status(status).build().scheduled_refresh(),
        None
    );
    let mut status = status_holding(&tok);
    status.expires_at = None;
    assert_eq!(
        Scenario::new().status(status).build().scheduled_refresh(),
        None
    );
    // The held token plays no part.
    let input = Scenario::new()
        .held(Some(&tok))
        .status(ECRTokenRefreshStatus {
            last_updated_time: Some(Time(at(-h(2)))),
            expires_at: Some(Time(at(h(1)))),
            ..Default::default()
        })
        .build();
    // Expiry in 1h minus the 30 min margin comes before fetch + 8h.
    assert_eq!(input.scheduled_refresh(), Some(at(30 * 60)));
}

// ---------------------------------------------------------------------------------------
// plan
// ---------------------------------------------------------------------------------------

fn update(namespace: &str, meta: &SecretMeta) -> SecretOp {
    SecretOp::Update {
        target: target(namespace),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
    }
}

fn delete(namespace: &str, meta: &SecretMeta) -> SecretOp {
    SecretOp::Delete {
        target: target(namespace),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
    }
}

#[test]
fn with_a_token_in_hand_each_target_gets_what_it_needs() {
    let old = ecr_token("old", h(9));
    let new = ecr_token("new", 0);
    let current = holding("b-current", &new);
    let old_data = SecretMeta {
        resource_version: "21".into(),
        ..holding("c-old-data", &old)
    };
    // Same data, another expiry annotation: not exactly the token either.
    let other_expiry = SecretMeta {
        uid: "secret-d".into(),
        resource_version: "33".into(),
        expires_at: Some(at(h(3))),
        ..holding("d-other-expiry", &new)
    };
    let terminating = SecretMeta {
        terminating: true,
        ..holding("f-terminating", &old)
    };
    let stale = SecretMeta {
        uid: "secret-stale".into(),
        resource_version: "77".into(),
        ..holding("g-stale", &old)
    };
    let input = Scenario::new()
        .holding(&old)
        .absent("a-absent")
        .ours("b-current", current)
        .ours("c-old-data", old_data.clone())
        .ours("d-other-expiry", other_expiry.clone())
        .foreign("e-foreign")
        .ours("f-terminating", terminating)
        .stale("g-stale", stale.clone())
        .build();
    let p = plan(&input, &TokenState::Ready(Arc::clone(&new)));
    assert_eq!(
        p.ops,
        vec![
            SecretOp::Create(target("a-absent")),
            update("c-old-data", &old_data),
            update("d-other-expiry", &other_expiry),
            delete("g-stale", &stale),
        ]
    );
    assert_eq!(
        p.held,
        vec![
            (target("e-foreign"), Held::Conflict),
            (target("f-terminating"), Held::Terminating),
        ]
    );
}

#[test]
fn a_secret_holding_the_token_but_changed_or_incomplete_is_rewritten() {
    let tok = ecr_token("pw", h(1));
    let ready = TokenState::Ready(Arc::clone(&tok));
    let intact = holding(NS, &tok);
    let edited = Scenario::new()
        .holding(&tok)
        .edited(NS, intact.clone())
        .build();
    assert_eq!(plan(&edited, &ready).ops, vec![update(NS, &intact)]);
    let broken = SecretMeta {
        metadata_intact: false,
        ..intact.clone()
    };
    let input = Scenario::new()
        .holding(&tok)
        .ours(NS, broken.clone())
        .build();
    assert_eq!(plan(&input, &ready).ops, vec![update(NS, &broken)]);
    let hashless = SecretMeta {
        data_hash: None,
        ..intact.clone()
    };
    let input = Scenario::new()
        .holding(&tok)
        .ours(NS, hashless.clone())
        .build();
    assert_eq!(plan(&input, &ready).ops, vec![update(NS, &hashless)]);
    // And the intact one is left alone.
    let input = Scenario::new().holding(&tok).ours(NS, intact).build();
    let p = plan(&input, &ready);
    assert!(p.ops.is_empty() && p.held.is_empty(), "{p:?}");
}

#[test]
fn the_hash_plan_expects_is_the_one_a_rendered_secret_carries() {
    use crate::api::{ECRTokenRefresh, ECRTokenRefreshSpec};
    let mut cr = ECRTokenRefresh::new(NAME, ECRTokenRefreshSpec::sample());
    cr.metadata.namespace = Some(NS.into());
    cr.metadata.uid = Some(UID.into());
    let tok = ecr_token("pa:ss", h(1));
    let mut rendered = crate::secret::render(&cr, &target(NS), &tok);
    rendered.metadata.uid = Some("secret-uid".into());
    rendered.metadata.resource_version = Some("5".into());
    let meta = SecretMeta::read(&rendered.metadata, &Owner::of(&cr));
    assert!(meta.ours && meta.metadata_intact, "{meta:?}");
    let input = Scenario::new().holding(&tok).ours(NS, meta.clone()).build();
    assert_eq!(token_need(&input), TokenNeed::None);
    let p = plan(&input, &TokenState::Ready(Arc::clone(&tok)));
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    // Another password (same expiry): rewritten.
    let other = token("other", tok.fetched_at, tok.expires_at);
    let p = plan(&input, &TokenState::Ready(other));
    assert_eq!(p.ops, vec![update(NS, &meta)]);
}

#[test]
fn without_a_token_needed_nothing_is_written_but_stale_secrets_go() {
    let tok = ecr_token("pw", h(1));
    let stale = holding("gone", &tok);
    let input = Scenario::new()
        .holding(&tok)
        .ours(NS, holding(NS, &tok))
        .ours("team-a", holding("team-a", &tok))
        .foreign("team-b")
        .stale("gone", stale.clone())
        .build();
    assert_eq!(token_need(&input), TokenNeed::None);
    let p = plan(&input, &TokenState::NotNeeded);
    assert_eq!(p.ops, vec![delete("gone", &stale)]);
    assert_eq!(p.held, vec![(target("team-b"), Held::Conflict)]);
}

fn failed(fallback: Option<&Arc<Credentials>>) -> TokenState {
    TokenState::Failed {
        error: ecr_error(FailureKind::Throttled, "Rate exceeded"),
        decision: crate::policy::RetryDecision::RetryAfter(std::time::Duration::from_secs(30)),
        fallback: fallback.cloned(),
        fresh: true,
    }
}

#[test]
fn during_an_outage_the_held_token_writes_only_missing_or_broken_secrets() {
    let held = ecr_token("held", h(9));
    // Due (9h > 8h): ECR was asked and failed; the held token has not expired.
    let intact = holding("b-intact", &held);
    // Still holding an older token than the held one, but intact and as status says:
    // it serves, it is not rewritten during the outage.
    let older = SecretMeta {
        data_hash: Some("older-token-hash".into()),
        ..holding("c-older", &held)
    };
    let edited = holding("d-edited", &held);
    let hashless = SecretMeta {
        data_hash: None,
        ..holding("e-hashless", &held)
    };
    let broken = SecretMeta {
        metadata_intact: false,
        ..holding("f-broken", &held)
    };
    let input = Scenario::new()
        .holding(&held)
        .absent("a-absent")
        .ours("b-intact", intact)
        .ours("c-older", older)
        .edited("d-edited", edited.clone())
        .ours("e-hashless", hashless.clone())
        .ours("f-broken", broken.clone())
        .foreign("g-foreign")
        .build();
    assert_eq!(token_need(&input), TokenNeed::Refresh);
    let p = plan(&input, &failed(Some(&held)));
    assert_eq!(
        p.ops,
        vec![
            SecretOp::Create(target("a-absent")),
            update("d-edited", &edited),
            update("e-hashless", &hashless),
            update("f-broken", &broken),
        ]
    );
    assert_eq!(p.held, vec![(target("g-foreign"), Held::Conflict)]);
}

#[test]
fn without_any_token_what_needs_a_write_is_held_for_lack_of_one() {
    let tok = ecr_token("pw", h(9));
    let edited = holding("b-edited", &tok);
    let other_expiry = SecretMeta {
        expires_at: Some(at(h(5))),
        ..holding("d-other-expiry", &tok)
    };
    let terminating = SecretMeta {
        terminating: true,
        ..holding("e-terminating", &tok)
    };
    let stale = holding("z-stale", &tok);
    let input = Scenario::new()
        .holding(&tok)
        .held(None)
        .absent("a-absent")
        .edited("b-edited", edited)
        .ours("c-intact", holding("c-intact", &tok))
        .ours("d-other-expiry", other_expiry)
        .ours("e-terminating", terminating)
        .stale("z-stale", stale.clone())
        .build();
    let p = plan(&input, &failed(None));
    // Deleting needs no token.
    assert_eq!(p.ops, vec![delete("z-stale", &stale)]);
    assert_eq!(
        p.held,
        vec![
            (target("a-absent"), Held::NoToken),
            (target("b-edited"), Held::NoToken),
            (target("d-other-expiry"), Held::NoToken),
            (target("e-terminating"), Held::Terminating),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// needs_finalizer
// ---------------------------------------------------------------------------------------

#[test]
fn a_plain_resource_in_its_own_namespace_needs_no_finalizer() {
    let tok = ecr_token("pw", h(1));
    let input = Scenario::new()
        .absent(NS)
        .stale(NS, holding(NS, &tok))
        // A ServiceAccount holding another resource's entry is not ours to clean.
        .sa(sa(NS, "default", "1", &["x"], &[("x", OTHER_UID)]))
        .build();
    assert!(!needs_finalizer(&input));
}

#[test]
fn copies_elsewhere_or_service_account_entries_need_the_finalizer() {
    let tok = ecr_token("pw", h(1));
    let own = || Scenario::new().absent(NS);
    assert!(needs_finalizer(&own().absent("team-a").build()), "copy");
    assert!(needs_finalizer(&own().foreign("team-a").build()), "target");
    assert!(
        needs_finalizer(&own().stale("team-a", holding("team-a", &tok)).build()),
        "stale copy outside"
    );
    assert!(
        needs_finalizer(&own().named(&["default"]).build()),
        "named ServiceAccounts"
    );
    assert!(
        needs_finalizer(
            &own()
                .sa(sa("team-a", "builder", "1", &[NAME], &[(NAME, UID)]))
                .build()
        ),
        "an entry recorded for this resource"
    );
}

// ---------------------------------------------------------------------------------------
// pull_secret_ops
// ---------------------------------------------------------------------------------------

fn named(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn named_service_accounts_get_the_served_secret_and_a_record_of_it() {
    let views = [
        sa(NS, "default", "42", &["registry-mirror"], &[]),
        sa("team-a", "default", "7", &[], &[]),
        // Not named: left alone.
        sa(NS, "builder", "3", &[], &[]),
    ];
    let ops = pull_secret_ops(UID, &named(&["default"]), &views, &targets(&[NS, "team-a"]));
    assert_eq!(
        ops,
        vec![
            PullSecretsOp {
                namespace: NS.into(),
                service_account: "default".into(),
                resource_version: "42".into(),
                pull_secrets: named(&["registry-mirror", NAME]),
                added: [(NAME.to_string(), UID.to_string())].into(),
            },
            PullSecretsOp {
                namespace: "team-a".into(),
                service_account: "default".into(),
                resource_version: "7".into(),
                pull_secrets: named(&[NAME]),
                added: [(NAME.to_string(), UID.to_string())].into(),
            },
        ]
    );
}

#[test]
fn only_namespaces_where_the_secret_is_served_get_an_entry() {
    let views = [sa("team-b", "default", "1", &[], &[])];
    let ops = pull_secret_ops(UID, &named(&["default"]), &views, &targets(&[NS]));
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn an_entry_someone_else_put_there_is_neither_duplicated_nor_claimed() {
    // Added by hand.
    let by_hand = [sa(NS, "default", "1", &[NAME], &[])];
    assert!(pull_secret_ops(UID, &named(&["default"]), &by_hand, &targets(&[NS])).is_empty());
    // Recorded as another resource's.
    let theirs = [sa(NS, "default", "1", &[NAME], &[(NAME, OTHER_UID)])];
    assert!(pull_secret_ops(UID, &named(&["default"]), &theirs, &targets(&[NS])).is_empty());
    // ... and neither goes when the Secret is no longer served.
    assert!(pull_secret_ops(UID, &[], &by_hand, &targets(&[])).is_empty());
    assert!(pull_secret_ops(UID, &[], &theirs, &targets(&[])).is_empty());
}

#[test]
fn nothing_is_emitted_when_nothing_changes() {
    let views = [sa(NS, "default", "1", &["x", NAME], &[(NAME, UID)])];
    assert!(pull_secret_ops(UID, &named(&["default"]), &views, &targets(&[NS])).is_empty());
}

#[test]
fn our_entry_goes_when_the_secret_is_no_longer_served_there() {
    let views = [sa(
        NS,
        "default",
        "9",
        &["x", NAME, "y"],
        &[(NAME, UID), ("y", OTHER_UID)],
    )];
    // Served elsewhere only.
    let ops = pull_secret_ops(UID, &named(&["default"]), &views, &targets(&["team-a"]));
    assert_eq!(
        ops,
        vec![PullSecretsOp {
            namespace: NS.into(),
            service_account: "default".into(),
            resource_version: "9".into(),
            pull_secrets: named(&["x", "y"]),
            added: [("y".to_string(), OTHER_UID.to_string())].into(),
        }]
    );
}

#[test]
fn our_entry_goes_when_the_service_account_is_no_longer_named() {
    let views = [
        sa(NS, "default", "9", &[NAME], &[(NAME, UID)]),
        sa(NS, "builder", "4", &[NAME], &[(NAME, UID)]),
    ];
    let ops = pull_secret_ops(UID, &named(&["builder"]), &views, &targets(&[NS]));
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].service_account, "default");
    assert_eq!(ops[0].resource_version, "9");
    assert!(ops[0].pull_secrets.is_empty() && ops[0].added.is_empty());
}

#[test]
fn on_deletion_every_entry_we_added_goes_and_others_stay() {
    let views = [
        sa(
            NS,
            "default",
            "1",
            &[NAME, "mine-too"],
            &[(NAME, UID), ("mine-too", UID)],
        ),
        sa(
            "team-a",
            "ci",
            "2",
            &["theirs", NAME],
            &[("theirs", OTHER_UID), (NAME, UID)],
        ),
        sa("team-b", "ci", "3", &["theirs"], &[("theirs", OTHER_UID)]),
    ];
    let ops = pull_secret_ops(UID, &[], &views, &targets(&[]));
    let got: Vec<(&str, Vec<String>, usize)> = ops
        .iter()
        .map(|o| (o.namespace.as_str(), o.pull_secrets.clone(), o.added.len()))
        .collect();
    assert_eq!(
        got,
        vec![(NS, named(&[]), 0), ("team-a", named(&["theirs"]), 1)]
    );
    assert_eq!(
        ops[1].added.get("theirs").map(String::as_str),
        Some(OTHER_UID)
    );
}

#[test]
fn an_entry_of_ours_removed_by_hand_is_added_back_while_named() {
    // The record says we added it; someone removed the entry from the list.
    let views = [sa(NS, "default", "5", &["x"], &[(NAME, UID)])];
    let ops = pull_secret_ops(UID, &named(&["default"]), &views, &targets(&[NS]));
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].pull_secrets, named(&["x", NAME]));
    assert_eq!(ops[0].added.get(NAME).map(String::as_str), Some(UID));
}
