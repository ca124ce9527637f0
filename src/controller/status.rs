//! Status updates: the `Ready` condition and the original `phase`/`error` fields.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use crate::api::ECRTokenRefreshStatus;
#[cfg(test)]
use crate::api::Phase;

/// The condition type this operator maintains.
pub const READY: &str = "Ready";
/// The condition type saying whether refreshing is suspended (`spec.suspend`).
pub const SUSPENDED: &str = "Suspended";
/// The condition type saying whether the registries accepted the Secret's credentials
/// (`spec.verify`): `True` (`Verified`), `False` (`Rejected`) or `Unknown` (`Unreachable`).
pub const CREDENTIALS_VERIFIED: &str = "CredentialsVerified";

/// Condition reasons (CamelCase, per the API conventions).
pub mod reason {
    /// The Secret holds a fresh token.
    pub const TOKEN_REFRESHED: &str = "TokenRefreshed";
    /// The spec failed validation; see the message for the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The operator's access rules do not let the resource's namespace use one of its
    /// registries, or its identity; the message names the namespace and the registry or
    /// role. No AWS call is made.
    pub const NOT_PERMITTED: &str = "NotPermitted";
    /// A Secret of the same name exists and is not ours.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// A policy plugin failed or answered outside the guardrails; the message names it.
    pub const POLICY_FAILED: &str = "PolicyFailed";
    /// A plugin the resource selects is still being compiled; nothing has failed, and its
    /// load reconciles the resource again.
    pub const POLICY_LOADING: &str = "PolicyLoading";
    /// The fan-out policy selected no namespace.
    pub const NO_NAMESPACE_SELECTED: &str = "NoNamespaceSelected";
    /// Writing the Secret failed.
    pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";
    /// A Secret of ours is being deleted (someone else's finalizer holds it); it is written
    /// again once it is gone.
    pub const SECRET_TERMINATING: &str = "SecretTerminating";
    /// A Secret must be written and no token could be had.
    pub const TOKEN_UNAVAILABLE: &str = "TokenUnavailable";
    /// Ready, but some selected namespaces are not served (`status.failedNamespaces`).
    pub const SOME_NAMESPACES_FAILED: &str = "SomeNamespacesFailed";
    /// A Secret no longer targeted could not be deleted.
    pub const SECRET_DELETE_FAILED: &str = "SecretDeleteFailed";
    /// A ServiceAccount named in the spec could not be updated (its `imagePullSecrets`).
    pub const SERVICE_ACCOUNT_UPDATE_FAILED: &str = "ServiceAccountUpdateFailed";
    /// The operator's own write of a Secret was changed again by someone else soon after:
    /// another writer competes for it; repairs back off.
    pub const SECRET_CONTESTED: &str = "SecretContested";
    /// Deleting the resource is waiting for its Secrets or ServiceAccount entries to go.
    pub const CLEANUP_FAILED: &str = "CleanupFailed";
    /// `spec.suspend` is true: nothing is refreshed (the `Suspended` condition's reason).
    pub const SUSPENDED: &str = "Suspended";
    /// `spec.suspend` was set back to false: refreshing goes on.
    pub const RESUMED: &str = "Resumed";
    /// Every registry answered 2xx to `GET /v2/` with the Secret's credentials
    /// (`CredentialsVerified=True`).
    pub const VERIFIED: &str = "Verified";
    /// A registry refused the Secret's credentials; the message names the host and the
    /// HTTP status (`CredentialsVerified=False`).
    pub const REJECTED: &str = "Rejected";
    /// A registry could not be reached, or answered 5xx/429; the message names the host
    /// (`CredentialsVerified=Unknown`).
    pub const UNREACHABLE: &str = "Unreachable";
}

/// Longest condition message and `status.error` written, in bytes. (The API allows 32 KiB
/// for a condition message; a few KiB keep `kubectl describe` readable.)
pub const MAX_MESSAGE: usize = 4096;
/// Longest message of one entry of `status.failedNamespaces`, in bytes.
pub const MAX_ITEM_MESSAGE: usize = 512;

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ellipsis = "…";
    let mut end = max.saturating_sub(ellipsis.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

/// A JSON merge patch of the status subresource turning `current` into `desired`, or
/// `None` when they are equal (the operator never writes a status that did not change).
/// Fields absent from `desired` are removed.
pub fn patch_between(
    current: &ECRTokenRefreshStatus,
    desired: &ECRTokenRefreshStatus,
) -> Option<Value> {
    if current == desired {
        return None;
    }
    let cur = serde_json::to_value(current).unwrap_or_default();
    let mut new = serde_json::to_value(desired).unwrap_or_default();
    if let (Some(cur), Some(new)) = (cur.as_object(), new.as_object_mut()) {
        for key in cur.keys() {
            new.entry(key.clone()).or_insert(Value::Null);
        }
    }
    Some(json!({ "status": new }))
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
    condition(previous, READY, ready, reason, message, generation, now)
}

/// Builds the condition of type `type_`, keeping `lastTransitionTime` from `previous` when
/// its status (True/False) did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if value { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
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

/// `previous` with the condition of `cond`'s type replaced by `cond` (others kept, in
/// order).
pub fn set_condition(previous: &[Condition], cond: Condition) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != cond.type_)
        .cloned()
        .collect();
    out.push(cond);
    out
}

/// Whether the `Suspended` condition is `True` in `status`.
pub fn is_suspended(status: &ECRTokenRefreshStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == SUSPENDED && c.status == "True")
}

/// `previous` with the `Ready` condition replaced by `cond` (other types kept).
pub fn with_condition(previous: &[Condition], cond: Condition) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .collect();
    out.push(cond);
    out
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
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn only_changed_status_is_patched_and_removed_fields_are_nulled() {
        let a = ECRTokenRefreshStatus {
            phase: Some(Phase::Ready),
            error: Some("x".into()),
            ..Default::default()
        };
        assert!(patch_between(&a, &a).is_none());
        let b = ECRTokenRefreshStatus {
            phase: Some(Phase::Ready),
            ..Default::default()
        };
        let p = patch_between(&a, &b).unwrap();
        assert!(p["status"]["error"].is_null() && p["status"].get("error").is_some());
        assert_eq!(p["status"]["phase"], "Ready");
    }
}
