//! Settle: the per-item results of a reconcile's writes turned into its status, Events and
//! requeue. Pure functions of plain data, like [`super::plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::{Found, Held, Input, Plan, SecretOp, TokenState};
use super::schedule::{self, until};
use super::status::{self, reason};
use crate::api::{ECRTokenRefreshStatus, NamespaceFailure, Phase, SecretReference};
use crate::ecr::Credentials;
use crate::policy::RetryDecision;
use crate::secret::SecretTarget;

/// At most this many Secrets are listed in `status.secrets` (the count is in
/// `status.servedNamespaces`), so the status stays small whatever the fan-out.
pub const MAX_STATUS_SECRETS: usize = 100;
/// At most this many failed namespaces are listed in `status.failedNamespaces`.
pub const MAX_STATUS_FAILURES: usize = 20;

/// How one Secret operation went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// Done. For writes: the stored object's uid and resourceVersion.
    Done {
        /// `metadata.uid` after the write (empty for deletes).
        uid: String,
        /// `metadata.resourceVersion` after the write (empty for deletes).
        resource_version: String,
    },
    /// A create found a Secret there already (409 AlreadyExists).
    Exists,
    /// The Secret changed or was replaced since it was observed (409 Conflict, 422 on the
    /// uid precondition, or 404 for an update): observed again next time.
    Changed,
    /// The API refused or failed; the message says why (HTTP status and the API's
    /// message, never Secret data).
    Failed(String),
}

/// Something to publish as an Event on the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `true`: Warning; `false`: Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// The note (truncated when published).
    pub note: String,
    /// How many Secrets it is about (written-Secret notes), else 0.
    pub count: usize,
}

/// What a reconcile ends with.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The status to have (compared with the current one: written only when it differs).
    pub status: ECRTokenRefreshStatus,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// When to look again.
    pub requeue: Option<Duration>,
    /// The metric label of the outcome.
    pub label: &'static str,
    /// Whether this reconcile failed (for the consecutive-failure count and backoff).
    pub failed: bool,
    /// The token the Secrets hold now, to remember.
    pub held: Option<Arc<Credentials>>,
    /// The Secrets serving now (for the ServiceAccount changes).
    pub served: BTreeSet<SecretTarget>,
    /// Whether another writer was found competing for a Secret of ours now (repairs back
    /// off until the requeue).
    pub contested: bool,
    /// Whether repairs wait for an earlier such competition's backoff.
    pub contest_waiting: bool,
}

/// Timing knobs of [`settle`].
#[derive(Debug, Clone)]
pub struct Retry {
    /// How long to wait before writing again after a failed write (the built-in backoff for
    /// this attempt, already clamped).
    pub write_delay: Duration,
    /// How often to look again at a target blocked by a foreign or terminating Secret.
    pub conflict_recheck: Duration,
}

/// Turns the per-item results into the status, Events and requeue. `results` holds one
/// entry per operation of `plan.ops`, in order.
pub fn settle(
    input: &Input,
    plan: &Plan,
    token: &TokenState,
    results: &[OpResult],
    retry: &Retry,
) -> Outcome {
    let now = input.now;
    let previous = &input.resource.status;
    let written = token.writable();
    let mut served: BTreeSet<SecretTarget> = BTreeSet::new();
    let mut expiries: Vec<Timestamp> = Vec::new();
    let mut failures: Vec<NamespaceFailure> = Vec::new();
    let (mut created, mut repaired, mut refreshed) = (Vec::new(), Vec::new(), Vec::new());
    let mut write_failed = false;
    let mut conflicted = false;
    let mut stale_left = 0usize;
    // Another writer competes for a Secret of ours: repairs back off (detected now, or
    // still waiting from before).
    let mut contested = false;
    let mut contest_waiting = false;
    // Served targets that hold the token of this reconcile (written, or found current).
    let mut with_token = 0usize;

    let op_result: BTreeMap<&SecretTarget, (&SecretOp, &OpResult)> = plan
        .ops
        .iter()
        .zip(results)
        .map(|(op, r)| (op.target(), (op, r)))
        .collect();
    let held: BTreeMap<&SecretTarget, &Held> = plan.held.iter().map(|(t, why)| (t, why)).collect();
    for t in &input.targets {
        if let Some(&why) = held.get(&t.target) {
            let target = &t.target;
            let (reason, message) = match why {
                Held::Conflict => {
                    conflicted = true;
                    (
                        reason::SECRET_CONFLICT,
                        format!(
                            "Secret {target} exists and is not managed by ecr-token-refresh for this resource; it is left untouched"
                        ),
                    )
                }
                Held::Terminating => {
                    conflicted = true;
                    (
                        reason::SECRET_TERMINATING,
                        format!(
                            "Secret {target} is being deleted; it is written again once it is gone"
                        ),
                    )
                }
                Held::Contested => {
                    contest_waiting = true;
                    (
                        reason::SECRET_CONTESTED,
                        format!(
                            "Secret {target} keeps being changed by another writer right after \
                             the operator writes it (another operator instance?); it is repaired \
                             again after the backoff"
                        ),
                    )
                }
                Held::NoToken => {
                    // An existing Secret of ours, as written, still serves with what it holds.
                    if still_serving(&t.found, now)
                        && let Found::Ours { meta, .. } = &t.found
                        && let Some(e) = meta.expires_at
                    {
                        served.insert(t.target.clone());
                        expiries.push(e);
                        continue;
                    }
                    (
                        reason::TOKEN_UNAVAILABLE,
                        format!("no token to write Secret {target} with"),
                    )
                }
            };
            failures.push(NamespaceFailure {
                namespace: target.namespace.clone(),
                reason: reason.to_string(),
                message,
            });
            continue;
        }
        match op_result.get(&t.target) {
            None => {
                // Left as it is: it holds the refreshed token, or what it held.
                served.insert(t.target.clone());
                match (&t.found, token) {
                    (_, TokenState::Ready(tok)) => {
                        with_token += 1;
                        expiries.push(tok.expires_at)
                    }
                    (Found::Ours { meta, .. }, _) => expiries.extend(meta.expires_at),
                    _ => {}
                }
            }
            Some((op, OpResult::Done { .. })) => {
                served.insert(t.target.clone());
                if let Some(tok) = written {
                    with_token += 1;
                    expiries.push(tok.expires_at);
                }
                match (op, &t.found) {
                    (SecretOp::Create(_), _) => created.push(t.target.clone()),
                    (_, Found::Ours { meta, edited })
                        if *edited || !meta.metadata_intact || meta.data_hash.is_none() =>
                    {
                        if *edited && input.recently_written.contains(&t.target) {
                            // Changed again right after our last write: another writer.
                            contested = true;
                            failures.push(NamespaceFailure {
                                namespace: t.target.namespace.clone(),
                                reason: reason::SECRET_CONTESTED.to_string(),
                                message: format!(
                                    "Secret {} was changed by another writer right after the \
                                     operator wrote it; repaired, and repairs now back off",
                                    t.target
                                ),
                            });
                        }
                        repaired.push(t.target.clone())
                    }
                    _ => refreshed.push(t.target.clone()),
                }
            }
            Some((_, OpResult::Exists)) => {
                conflicted = true;
                failures.push(NamespaceFailure {
                    namespace: t.target.namespace.clone(),
                    reason: reason::SECRET_CONFLICT.to_string(),
                    message: format!(
                        "Secret {} exists and is not managed by ecr-token-refresh for this resource; it is left untouched",
                        t.target
                    ),
                });
            }
            Some((_, OpResult::Changed | OpResult::Failed(_))) if still_serving(&t.found, now) => {
                // The rewrite failed, but the Secret there still holds an unexpired token:
                // it serves (and keeps its ServiceAccount entries) while it is retried.
                write_failed = true;
                served.insert(t.target.clone());
                if let Found::Ours { meta, .. } = &t.found {
                    expiries.extend(meta.expires_at);
                }
                failures.push(NamespaceFailure {
                    namespace: t.target.namespace.clone(),
                    reason: reason::SECRET_WRITE_FAILED.to_string(),
                    message: status::truncate(
                        &format!(
                            "cannot rewrite Secret {} ({}); it keeps the token it holds and is retried",
                            t.target,
                            match op_result.get(&t.target) {
                                Some((_, OpResult::Failed(m))) => m.as_str(),
                                _ => "it changed meanwhile",
                            }
                        ),
                        status::MAX_ITEM_MESSAGE,
                    ),
                });
            }
            Some((_, OpResult::Changed)) => {
                write_failed = true;
                failures.push(NamespaceFailure {
                    namespace: t.target.namespace.clone(),
                    reason: reason::SECRET_WRITE_FAILED.to_string(),
                    message: format!(
                        "Secret {} changed while it was being written; it is looked at again",
                        t.target
                    ),
                });
            }
            Some((_, OpResult::Failed(message))) => {
                write_failed = true;
                failures.push(NamespaceFailure {
                    namespace: t.target.namespace.clone(),
                    reason: reason::SECRET_WRITE_FAILED.to_string(),
                    message: status::truncate(
                        &format!("cannot write Secret {}: {message}", t.target),
                        status::MAX_ITEM_MESSAGE,
                    ),
                });
            }
        }
    }
    for (op, r) in plan.ops.iter().zip(results) {
        if matches!(op, SecretOp::Delete { .. })
            && matches!(r, OpResult::Failed(_) | OpResult::Changed)
        {
            stale_left += 1;
        }
    }
    failures.sort_by(|a, b| a.namespace.cmp(&b.namespace));

    let mut notes = Vec::new();
    let wrote = !(created.is_empty() && repaired.is_empty() && refreshed.is_empty());
    // What the Secrets hold now.
    // What the Secrets hold now: the token of this reconcile where it was written or found,
    // and the earliest expiry among the served Secrets (some may keep an older token).
    let previous_update = previous.last_updated_time.as_ref().map(|t| t.0);
    let previous_expiry = previous.expires_at.as_ref().map(|t| t.0);
    let (last_updated, expires_at) = match written {
        Some(tok) if with_token > 0 => (Some(tok.fetched_at), expiries.iter().min().copied()),
        _ if !served.is_empty() => (
            previous_update,
            expiries.iter().min().copied().or(previous_expiry),
        ),
        _ => (previous_update, previous_expiry),
    };
    let next_refresh = match (last_updated, expires_at) {
        (Some(l), Some(e)) => Some(schedule::next_refresh(
            l,
            input.resource.frequency,
            e,
            &input.schedule,
        )),
        _ => None,
    };
    // A fresh token is held even when every write failed: the retries use it.
    let held = match token {
        TokenState::Ready(t) => Some(Arc::clone(t)),
        _ => input.held.clone(),
    };

    let generation = input.resource.generation;
    // Whether this reconcile failed, and whether that counts as one more attempt (waiting
    // for the retry of an earlier failure does not).
    let fresh_token_failure = matches!(token, TokenState::Failed { fresh: true, .. });
    let counted = write_failed || stale_left > 0 || contested || fresh_token_failure;
    let failed = counted || contest_waiting || matches!(token, TokenState::Failed { .. });
    let (ready, why, message, next_attempt, requeue, label) = match token {
        TokenState::Failed {
            error,
            decision,
            fresh,
            ..
        } => {
            let kept = match previous.expires_at.as_ref() {
                Some(t) => format!(
                    "the Secrets are kept as they are (their token expires at {})",
                    t.0
                ),
                None => "no Secret is written until a token is obtained".to_string(),
            };
            let (message, retry_in) = match decision {
                RetryDecision::RetryAfter(d) => (format!("{error}; {kept}"), Some(*d)),
                RetryDecision::GiveUp { reason } => (
                    format!(
                        "{error}; {kept}; the retry policy gave up ({reason}): edit the resource to try again"
                    ),
                    None,
                ),
            };
            // Waiting for the retry of an earlier failure is not a new attempt: no Event.
            if *fresh {
                notes.push(Note {
                    warning: true,
                    reason: error.kind.reason(),
                    note: format!("{error}; {kept}"),
                    count: 0,
                });
            }
            let at = retry_in.and_then(|d| now.checked_add(d).ok());
            (
                false,
                error.kind.reason(),
                message,
                at,
                retry_in,
                "token_failed",
            )
        }
        _ if served.is_empty() => {
            let (why, label) = if write_failed {
                (reason::SECRET_WRITE_FAILED, "secret_write_failed")
            } else {
                (reason::SECRET_CONFLICT, "secret_conflict")
            };
            let message = summarize_failures(&failures);
            notes.push(Note {
                warning: true,
                reason: why,
                note: message.clone(),
                count: 0,
            });
            let delay = if write_failed {
                retry.write_delay
            } else {
                retry.conflict_recheck
            };
            (
                false,
                why,
                message,
                now.checked_add(delay).ok(),
                Some(delay),
                label,
            )
        }
        _ => {
            let what = if served.len() == 1 {
                format!(
                    "Secret {} holds",
                    served
                        .iter()
                        .next()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            } else {
                format!("{} Secrets hold", served.len())
            };
            let hosts = input.resource.registries.len();
            let mut message = match (expires_at, next_refresh) {
                (Some(e), Some(n)) if hosts > 1 => format!(
                    "{what} tokens for {hosts} registries, the first expiring at {e}; next refresh at {n}"
                ),
                (Some(e), Some(n)) => {
                    format!("{what} a token that expires at {e}; next refresh at {n}")
                }
                _ if hosts > 1 => format!("{what} tokens for {hosts} registries"),
                _ => format!("{what} a token"),
            };
            if let (Some(e), Some(l)) = (expires_at, last_updated)
                && schedule::arrived_expired(l, e, &input.schedule)
            {
                message.push_str(
                    " (ECR reported an expiry already in the past: check the clock; refreshing at the minimum interval)",
                );
            }
            let why = if failures.is_empty() {
                reason::TOKEN_REFRESHED
            } else {
                message.push_str(&format!("; {}", summarize_failures(&failures)));
                reason::SOME_NAMESPACES_FAILED
            };
            if !failures.is_empty() {
                notes.push(Note {
                    warning: true,
                    reason: if contested {
                        reason::SECRET_CONTESTED
                    } else if write_failed {
                        reason::SECRET_WRITE_FAILED
                    } else {
                        reason::SECRET_CONFLICT
                    },
                    note: summarize_failures(&failures),
                    count: 0,
                });
            }
            // The next refresh; failed items sooner, but never sooner than their backoff
            // (a refresh already due is what the retry does, with the held token).
            let refresh_in = next_refresh.map(|n| until(now, n)).filter(|d| !d.is_zero());
            let mut requeue = refresh_in;
            if conflicted {
                requeue =
                    Some(requeue.map_or(retry.conflict_recheck, |r| r.min(retry.conflict_recheck)));
            }
            if write_failed || stale_left > 0 || contested || contest_waiting {
                requeue = Some(retry.write_delay);
            }
            let label = if wrote { "refreshed" } else { "up_to_date" };
            (true, why, message, next_refresh, requeue, label)
        }
    };
    if stale_left > 0 {
        notes.push(Note {
            warning: true,
            reason: reason::SECRET_DELETE_FAILED,
            note: format!(
                "{stale_left} Secret(s) no longer targeted could not be deleted; retrying"
            ),
            count: 0,
        });
    }
    for (reason, verb, list) in [
        ("Created", "Created", &created),
        ("Repaired", "Rewrote changed", &repaired),
        ("Refreshed", "Refreshed the token in", &refreshed),
    ] {
        if list.is_empty() {
            continue;
        }
        let names: Vec<String> = list.iter().take(5).map(ToString::to_string).collect();
        let more = list.len().saturating_sub(names.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let expiry = written
            .map(|t| format!("; the token expires at {}", t.expires_at))
            .unwrap_or_default();
        notes.push(Note {
            warning: false,
            reason,
            note: format!("{verb} Secret {}{more}{expiry}", names.join(", ")),
            count: list.len(),
        });
    }

    let message = status::truncate(&message, status::MAX_MESSAGE);
    let condition =
        status::ready_condition(&previous.conditions, ready, why, &message, generation, now);
    // Namespaces, not Secrets (a per-registry format writes several in one namespace);
    // `served` is ordered by namespace.
    let mut namespaces = served.iter().map(|t| &t.namespace).collect::<Vec<_>>();
    namespaces.dedup();
    let served_count = u32::try_from(namespaces.len()).unwrap_or(u32::MAX);
    let failures_count = match (failed, counted) {
        (true, true) => input.failures.saturating_add(1),
        (true, false) => input.failures,
        (false, _) => 0,
    };
    // The spec counts as applied once every target holds a token rendered for it; until
    // then `observedGeneration` stays, so that a later reconcile renders it (e.g. a spec
    // changed during an ECR outage is written once ECR is back).
    let applied = failures.is_empty() && !matches!(token, TokenState::Failed { .. });
    let observed_generation = if applied {
        generation
    } else {
        previous.observed_generation
    };
    let status = ECRTokenRefreshStatus {
        phase: Some(if ready { Phase::Ready } else { Phase::Failed }),
        last_updated_time: last_updated.map(Time),
        error: (!ready || !failures.is_empty()).then(|| message.clone()),
        expires_at: expires_at.map(Time),
        next_refresh_time: next_attempt.map(Time),
        secrets: served
            .iter()
            .take(MAX_STATUS_SECRETS)
            .map(|t| SecretReference {
                namespace: t.namespace.clone(),
                name: t.name.clone(),
            })
            .collect(),
        served_namespaces: Some(served_count),
        failed_namespaces: failures.into_iter().take(MAX_STATUS_FAILURES).collect(),
        observed_generation,
        consecutive_failures: (failures_count > 0).then_some(failures_count),
        conditions: status::with_condition(&previous.conditions, condition),
    };
    Outcome {
        status,
        notes,
        requeue,
        label,
        failed,
        held,
        served,
        contested,
        contest_waiting,
    }
}

/// Folds the ServiceAccount updates that failed (namespace, message) into `out`: each is
/// listed in `status.failedNamespaces` (reason `ServiceAccountUpdateFailed`), a Warning says
/// so, the reconcile counts as failed (its backoff grows) and comes back after
/// `retry.write_delay`; a resource otherwise Ready says some namespaces failed.
pub fn with_service_account_failures(
    mut out: Outcome,
    failures: &[(String, String)],
    input: &Input,
    retry: &Retry,
) -> Outcome {
    if failures.is_empty() {
        return out;
    }
    let reason = reason::SERVICE_ACCOUNT_UPDATE_FAILED;
    let entries: Vec<NamespaceFailure> = failures
        .iter()
        .map(|(namespace, message)| NamespaceFailure {
            namespace: namespace.clone(),
            reason: reason.to_string(),
            message: status::truncate(message, status::MAX_ITEM_MESSAGE),
        })
        .collect();
    let summary = summarize_failures(&entries);
    let status = &mut out.status;
    let room = MAX_STATUS_FAILURES.saturating_sub(status.failed_namespaces.len());
    status
        .failed_namespaces
        .extend(entries.into_iter().take(room));
    if !out.failed {
        out.failed = true;
        status.consecutive_failures = Some(input.failures.saturating_add(1));
    }
    if let Some(ready) = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == status::READY)
        && ready.status == "True"
    {
        ready.reason = reason::SOME_NAMESPACES_FAILED.to_string();
        ready.message = status::truncate(
            &format!("{}; {summary}", ready.message),
            status::MAX_MESSAGE,
        );
        status.error = Some(ready.message.clone());
    }
    out.requeue = Some(retry.write_delay);
    out.notes.push(Note {
        warning: true,
        reason,
        note: summary,
        count: 0,
    });
    out
}

/// Whether what was found at a target is a Secret of ours, as the operator wrote it, that
/// still holds an unexpired token (so it serves even when rewriting it failed). A Secret
/// someone else edited is never trusted: its annotations may be forged.
fn still_serving(found: &Found, now: Timestamp) -> bool {
    matches!(found, Found::Ours { meta, edited: false }
        if !meta.terminating
            && meta.metadata_intact
            && meta.expires_at.is_some_and(|e| e > now))
}

/// One line about the failed namespaces: the first few, and how many more.
fn summarize_failures(failures: &[NamespaceFailure]) -> String {
    if failures.is_empty() {
        return "no namespace selected".to_string();
    }
    let shown: Vec<&str> = failures
        .iter()
        .take(3)
        .map(|f| f.message.as_str())
        .collect();
    let more = failures.len().saturating_sub(shown.len());
    let mut s = shown.join("; ");
    if more > 0 {
        s.push_str(&format!(" (and {more} more namespaces failed)"));
    }
    s
}

#[cfg(test)]
#[path = "settle_tests.rs"]
mod tests;
