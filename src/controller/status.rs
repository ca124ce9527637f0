//! Status updates: the `Ready` condition and the original `phase`/`error` fields.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use crate::api::{ECRTokenRefreshStatus, Phase, SecretReference};

/// The condition type this operator maintains.
pub const READY: &str = "Ready";

/// Condition reasons (CamelCase, per the API conventions).
pub mod reason {
    /// The Secret holds a fresh token.
    pub const TOKEN_REFRESHED: &str = "TokenRefreshed";
    /// The spec failed validation; see the message for the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A Secret of the same name exists and is not ours.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// A policy plugin failed or answered outside the guardrails; the message names it.
    pub const POLICY_FAILED: &str = "PolicyFailed";
    /// The fan-out policy selected no namespace.
    pub const NO_NAMESPACE_SELECTED: &str = "NoNamespaceSelected";
    /// Writing the Secret failed.
    pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";
}

/// Builds the `Ready` condition, keeping `lastTransitionTime` from `previous` when the
/// status (True/False) did not change.
pub fn ready_condition(
    previous: &[Condition],
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether the `Ready` condition is `True` in `status`.
pub fn is_ready(status: &ECRTokenRefreshStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// The `Ready` condition in `status`, if any.
pub fn ready(status: &ECRTokenRefreshStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == READY)
}

fn with_condition(previous: &[Condition], cond: Condition) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .collect();
    out.push(cond);
    out
}

/// A JSON merge patch for the status subresource after a successful refresh. Clears
/// `error`.
pub fn success_patch(
    previous: &ECRTokenRefreshStatus,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
    expires_at: Timestamp,
    next_refresh: Timestamp,
    secrets: Vec<SecretReference>,
) -> Value {
    let cond = ready_condition(
        &previous.conditions,
        true,
        reason::TOKEN_REFRESHED,
        message,
        generation,
        now,
    );
    json!({ "status": {
        "phase": Phase::Ready,
        "lastUpdatedTime": Time(now),
        "error": null,
        "expiresAt": Time(expires_at),
        "nextRefreshTime": Time(next_refresh),
        "secrets": secrets,
        "observedGeneration": generation,
        "conditions": with_condition(&previous.conditions, cond),
    }})
}

/// A JSON merge patch for the status subresource after a failure: `Ready=False` with
/// `reason`, `phase: Failed`, `error: message`. Leaves `lastUpdatedTime`, `expiresAt` and
/// `secrets` as they were: they still describe the Secret that is in place.
pub fn failure_patch(
    previous: &ECRTokenRefreshStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
    next_attempt: Option<Timestamp>,
) -> Value {
    let cond = ready_condition(
        &previous.conditions,
        false,
        reason,
        message,
        generation,
        now,
    );
    json!({ "status": {
        "phase": Phase::Failed,
        "error": message,
        "nextRefreshTime": next_attempt.map(Time),
        "observedGeneration": generation,
        "conditions": with_condition(&previous.conditions, cond),
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let c1 = ready_condition(&[], false, "X", "m", Some(1), t("2026-01-01T00:00:00Z"));
        let c2 = ready_condition(
            std::slice::from_ref(&c1),
            false,
            "Y",
            "m2",
            Some(2),
            t("2026-01-01T01:00:00Z"),
        );
        assert_eq!(c2.last_transition_time, c1.last_transition_time);
        let c3 = ready_condition(&[c2], true, "Z", "ok", Some(2), t("2026-01-01T02:00:00Z"));
        assert_eq!(c3.last_transition_time, Time(t("2026-01-01T02:00:00Z")));
    }

    #[test]
    fn failure_keeps_what_describes_the_secret_in_place() {
        let p = failure_patch(
            &Default::default(),
            "ECRUnreachable",
            "down",
            Some(3),
            t("2026-01-01T00:00:00Z"),
            None,
        );
        let st = &p["status"];
        assert_eq!(st["phase"], "Failed");
        assert_eq!(st["error"], "down");
        assert!(st.get("expiresAt").is_none() && st.get("lastUpdatedTime").is_none());
        assert_eq!(st["conditions"][0]["reason"], "ECRUnreachable");
        assert_eq!(st["conditions"][0]["status"], "False");
        assert_eq!(st["observedGeneration"], 3);
    }

    #[test]
    fn success_clears_the_error() {
        let p = success_patch(
            &Default::default(),
            "ok",
            Some(1),
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T12:00:00Z"),
            t("2026-01-01T08:00:00Z"),
            vec![],
        );
        assert!(p["status"]["error"].is_null());
        assert_eq!(p["status"]["phase"], "Ready");
        assert_eq!(p["status"]["expiresAt"], "2026-01-01T12:00:00Z");
    }
}
