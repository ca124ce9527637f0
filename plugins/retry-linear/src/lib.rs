//! Retry plugin: linear backoff (`step_ms * attempt`, capped at `max_ms`);
//! gives up on `access-denied` after `give_up_after` attempts.
//!
//! Settings (JSON), all optional:
//! `{"step_ms": 5000, "max_ms": 60000, "give_up_after": 3}`.

wit_bindgen::generate!({ path: "../../wit", world: "retry-policy" });

use ecr_token_refresh::policy::types::{FailureKind, RetryDecision};
use exports::ecr_token_refresh::policy::{retry, settings};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    step_ms: u64,
    max_ms: u64,
    give_up_after: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            step_ms: 5_000,
            max_ms: 60_000,
            give_up_after: 3,
        }
    }
}

fn parse(settings: &str) -> Result<Settings, String> {
    let s: Settings =
        serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))?;
    if s.step_ms == 0 || s.max_ms < s.step_ms {
        return Err(format!(
            "invalid settings: need 0 < step_ms ({}) <= max_ms ({})",
            s.step_ms, s.max_ms
        ));
    }
    if s.give_up_after == 0 {
        return Err("invalid settings: give_up_after must be at least 1".to_owned());
    }
    Ok(s)
}

struct Plugin;

impl settings::Guest for Plugin {
    fn validate_settings(settings: String) -> Result<(), String> {
        parse(&settings).map(|_| ())
    }
}

impl retry::Guest for Plugin {
    fn decide(
        settings: String,
        _cr: retry::CrInfo,
        failure: retry::Failure,
        _token_expires_in_seconds: Option<u64>,
    ) -> Result<RetryDecision, String> {
        let s = parse(&settings)?;
        if failure.kind == FailureKind::AccessDenied && failure.attempt >= s.give_up_after {
            return Ok(RetryDecision::GiveUp(format!(
                "access denied {} times in a row: {}",
                failure.attempt, failure.message
            )));
        }
        let delay = s
            .step_ms
            .saturating_mul(u64::from(failure.attempt.max(1)))
            .min(s.max_ms);
        Ok(RetryDecision::RetryAfterMs(delay))
    }
}

export!(Plugin);
