//! The credential check of a reconcile (`spec.verify`): after new credentials were written
//! (or when the check is turned on, or could not reach a registry last time), log in once
//! to each registry with them ([`crate::registry_check`]) and set the
//! `CredentialsVerified` condition. The check never changes `Ready`, never deletes or
//! rewrites a Secret; a Warning Event says when a check starts failing or fails
//! differently, a Normal one when it passes again.
//!
//! The decisions ([`due`], [`verdict`]) are pure functions of plain data.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;

use super::settle::Outcome;
use super::status::{self, CREDENTIALS_VERIFIED, reason};
use super::{Context, apply};
use crate::api::ECRTokenRefresh;
use crate::registry_check::{Check, CheckResult};

/// The `CredentialsVerified` condition among `conditions`, if any.
pub fn condition_of(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == CREDENTIALS_VERIFIED)
}

/// Whether a check is due: new credentials were `written`, or there is no verdict yet for
/// this `generation` (the check was just turned on, or the spec changed), or the last one
/// could not reach a registry (`Unknown`).
pub fn due(written: bool, previous: Option<&Condition>, generation: Option<i64>) -> bool {
    match previous {
        _ if written => true,
        None => true,
        Some(c) => c.status == "Unknown" || c.observed_generation != generation,
    }
}

/// The `CredentialsVerified` condition for `checks` (one per registry host, in spec
/// order): `False`/`Rejected` when a registry refused the credentials, else
/// `Unknown`/`Unreachable` when one could not be asked, else `True`/`Verified`. The
/// message names the hosts and HTTP statuses (never a credential); `lastTransitionTime`
/// stays when the status did not change.
pub fn verdict(
    previous: Option<&Condition>,
    checks: &[Check],
    recheck: Duration,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let of = |f: fn(&CheckResult) -> bool| -> Vec<String> {
        checks
            .iter()
            .filter(|c| f(&c.result))
            .map(ToString::to_string)
            .collect()
    };
    let rejected = of(|r| matches!(r, CheckResult::Rejected { .. }));
    let unknown = of(|r| {
        matches!(
            r,
            CheckResult::Unreachable { .. } | CheckResult::Unavailable { .. }
        )
    });
    let (value, why, message) = if !rejected.is_empty() {
        (
            "False",
            reason::REJECTED,
            format!("{}; the Secrets are kept as they are", rejected.join("; ")),
        )
    } else if !unknown.is_empty() {
        (
            "Unknown",
            reason::UNREACHABLE,
            format!(
                "{}; checking again in {}",
                unknown.join("; "),
                humanize(recheck)
            ),
        )
    } else {
        let message = match checks {
            [one] => format!("{one} with the Secret's credentials"),
            _ => format!(
                "all {} registries accepted the Secret's credentials (GET /v2/): {}",
                checks.len(),
                checks
                    .iter()
                    .map(|c| c.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        ("True", reason::VERIFIED, message)
    };
    let last_transition_time = previous
        .filter(|c| c.status == value)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: CREDENTIALS_VERIFIED.to_string(),
        status: value.to_string(),
        reason: why.to_string(),
        message: status::truncate(&message, status::MAX_MESSAGE),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The Event for a new verdict, if one is due: `(warning, reason)`; its note is the
/// condition's message. A failing check
/// is published when its condition changed (status, reason or message); a passing one
/// only when it passes again after a failure.
pub fn event_for(previous: Option<&Condition>, now: &Condition) -> Option<(bool, &'static str)> {
    let changed = previous.is_none_or(|p| {
        p.status != now.status || p.reason != now.reason || p.message != now.message
    });
    match now.status.as_str() {
        "False" if changed => Some((true, "CredentialsRejected")),
        "Unknown" if changed => Some((true, "RegistryUnreachable")),
        "True" if previous.is_some_and(|p| p.status != "True") => {
            Some((false, "CredentialsVerified"))
        }
        _ => None,
    }
}

/// `30s`, `5m`, `1h30m`.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// Runs the check when `spec.verify` (or the operator's `verify.default`) asks for it and
/// one is due, and folds the verdict into `settled`: the `CredentialsVerified` condition in
/// its status, and a requeue after `verify.recheck` when a registry could not be reached.
/// With the check off, the condition is removed. Only a `Ready` outcome that serves
/// Secrets is checked (with the credentials they hold now); any other keeps the last
/// verdict.
pub(super) async fn after_refresh(
    ctx: &Context,
    cr: &ECRTokenRefresh,
    mut settled: Outcome,
    now: Timestamp,
) -> Outcome {
    let settings = ctx.registry.settings();
    let enabled = cr.spec.verify.unwrap_or(settings.default);
    let conditions = &mut settled.status.conditions;
    if !enabled {
        conditions.retain(|c| c.type_ != CREDENTIALS_VERIFIED);
        return settled;
    }
    let generation = cr.meta().generation;
    let previous = condition_of(conditions).cloned();
    let Some(credentials) = settled.held.clone() else {
        return settled;
    };
    let written = settled.label == "refreshed";
    if settled.served.is_empty()
        || !status::is_ready(&settled.status)
        || !due(written, previous.as_ref(), generation)
    {
        return settled;
    }
    let checks = futures::future::join_all(credentials.entries().iter().map(|(host, held)| {
        ctx.registry
            .check(host, &held.token.username, &held.token.password)
    }))
    .await;
    for check in &checks {
        ctx.metrics.registry_check(check.result.label());
    }
    let condition = verdict(
        previous.as_ref(),
        &checks,
        settings.recheck,
        generation,
        now,
    );
    match condition.status.as_str() {
        "True" => tracing::info!(registries = checks.len(), "credentials verified"),
        _ => {
            tracing::warn!(reason = %condition.reason, message = %condition.message, "credential check failed")
        }
    }
    if condition.status == "Unknown" {
        let recheck = settings.recheck;
        settled.requeue = Some(settled.requeue.map_or(recheck, |r| r.min(recheck)));
    }
    if let Some((warning, why)) = event_for(previous.as_ref(), &condition) {
        apply::event(ctx, cr, warning, why, &condition.message, "Verify").await;
    }
    settled.status.conditions = status::set_condition(&settled.status.conditions, condition);
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const EAST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const WEST: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn check(host: &str, result: CheckResult) -> Check {
        Check {
            host: host.into(),
            result,
        }
    }

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    const RECHECK: Duration = Duration::from_secs(300);

    #[test]
    fn a_rejection_names_the_host_and_status_and_wins_over_unreachable() {
        let checks = [
            check(
                EAST,
                CheckResult::Accepted {
                    status: status(200),
                },
            ),
            check(
                WEST,
                CheckResult::Rejected {
                    status: status(401),
                },
            ),
            check(
                "public.ecr.aws",
                CheckResult::Unreachable { class: "timeout" },
            ),
        ];
        let c = verdict(None, &checks, RECHECK, Some(3), t("2026-01-01T00:00:00Z"));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Rejected")
        );
        assert_eq!(
            c.message,
            format!(
                "{WEST} answered 401 Unauthorized to GET /v2/; the Secrets are kept as they are"
            )
        );
        assert_eq!(c.observed_generation, Some(3));
    }

    #[test]
    fn unreachable_or_unavailable_is_unknown_with_the_recheck() {
        let checks = [
            check(
                EAST,
                CheckResult::Unavailable {
                    status: status(503),
                },
            ),
            check(WEST, CheckResult::Unreachable { class: "connect" }),
        ];
        let c = verdict(None, &checks, RECHECK, Some(1), t("2026-01-01T00:00:00Z"));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "Unreachable")
        );
        assert_eq!(
            c.message,
            format!(
                "{EAST} answered 503 Service Unavailable to GET /v2/; {WEST} could not be reached (connect); checking again in 5m"
            )
        );
    }

    #[test]
    fn all_accepted_is_verified_and_keeps_its_transition_time() {
        let one = [check(
            EAST,
            CheckResult::Accepted {
                status: status(200),
            },
        )];
        let first = verdict(None, &one, RECHECK, Some(1), t("2026-01-01T00:00:00Z"));
        assert_eq!(
            (first.status.as_str(), first.reason.as_str()),
            ("True", "Verified")
        );
        assert_eq!(
            first.message,
            format!("{EAST} answered 200 OK to GET /v2/ with the Secret's credentials")
        );
        let two = [
            check(
                EAST,
                CheckResult::Accepted {
                    status: status(200),
                },
            ),
            check(
                WEST,
                CheckResult::Accepted {
                    status: status(200),
                },
            ),
        ];
        let later = verdict(
            Some(&first),
            &two,
            RECHECK,
            Some(2),
            t("2026-01-01T08:00:00Z"),
        );
        assert_eq!(later.last_transition_time, first.last_transition_time);
        assert!(
            later.message.starts_with("all 2 registries accepted"),
            "{}",
            later.message
        );
        let failed = verdict(
            Some(&later),
            &[check(
                EAST,
                CheckResult::Rejected {
                    status: status(403),
                },
            )],
            RECHECK,
            Some(2),
            t("2026-01-01T09:00:00Z"),
        );
        assert_eq!(failed.last_transition_time, Time(t("2026-01-01T09:00:00Z")));
    }

    #[test]
    fn a_check_is_due_after_a_write_a_spec_change_or_an_unreachable_registry() {
        let now = t("2026-01-01T00:00:00Z");
        let ok = verdict(
            None,
            &[check(
                EAST,
                CheckResult::Accepted {
                    status: status(200),
                },
            )],
            RECHECK,
            Some(2),
            now,
        );
        assert!(due(false, None, Some(2)), "no verdict yet");
        assert!(due(true, Some(&ok), Some(2)), "new credentials");
        assert!(!due(false, Some(&ok), Some(2)), "nothing new");
        assert!(due(false, Some(&ok), Some(3)), "spec changed");
        let unknown = verdict(
            None,
            &[check(EAST, CheckResult::Unreachable { class: "timeout" })],
            RECHECK,
            Some(2),
            now,
        );
        assert!(due(false, Some(&unknown), Some(2)), "try again");
    }

    #[test]
    fn events_once_per_change() {
        let now = t("2026-01-01T00:00:00Z");
        let rejected = verdict(
            None,
            &[check(
                EAST,
                CheckResult::Rejected {
                    status: status(401),
                },
            )],
            RECHECK,
            Some(1),
            now,
        );
        assert_eq!(
            event_for(None, &rejected),
            Some((true, "CredentialsRejected"))
        );
        assert_eq!(
            event_for(Some(&rejected), &rejected),
            None,
            "same failure again"
        );
        let ok = verdict(
            Some(&rejected),
            &[check(
                EAST,
                CheckResult::Accepted {
                    status: status(200),
                },
            )],
            RECHECK,
            Some(1),
            now,
        );
        assert_eq!(
            event_for(Some(&rejected), &ok),
            Some((false, "CredentialsVerified"))
        );
        assert_eq!(event_for(None, &ok), None, "a first pass is not news");
        assert_eq!(event_for(Some(&ok), &ok), None);
        let unknown = verdict(
            Some(&ok),
            &[check(EAST, CheckResult::Unreachable { class: "connect" })],
            RECHECK,
            Some(1),
            now,
        );
        assert_eq!(
            event_for(Some(&ok), &unknown),
            Some((true, "RegistryUnreachable"))
        );
    }

    #[test]
    fn durations_read_like_the_config() {
        assert_eq!(humanize(Duration::from_secs(30)), "30s");
        assert_eq!(humanize(Duration::from_secs(300)), "5m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_secs(5400)), "1h30m");
    }
}
