//! Guardrails the host applies to every plugin answer.
//!
//! Pure functions of plain data: a Secret name must be a DNS-1123 subdomain,
//! chosen namespaces must be candidates and allowed, retry delays are clamped.

use std::collections::HashSet;
use std::time::Duration;

use super::{RetryDecision, Violation};

/// Longest Secret name (DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest give-up reason kept from a plugin (bytes); longer ones are truncated.
pub const MAX_REASON_LEN: usize = 1024;

/// Checks that `name` is a DNS-1123 subdomain: at most 253 characters of
/// lowercase alphanumerics, `-` and `.`, each dot-separated label non-empty
/// and starting and ending with an alphanumeric.
pub fn check_secret_name(name: &str) -> Result<(), Violation> {
    let invalid = |reason: &str| Violation::InvalidName {
        name: super::error::truncate(name, 64),
        reason: reason.to_owned(),
    };
    if name.len() > MAX_NAME_LEN {
        return Err(Violation::OutputTooLarge {
            what: "secret name",
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err(invalid("it has an empty dot-separated part"));
        };
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return Err(invalid(
                "only lowercase letters, digits, '-' and '.' are allowed",
            ));
        }
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return Err(invalid(
                "each part must start and end with a letter or digit",
            ));
        }
    }
    Ok(())
}

/// Checks that two answers to the same naming call agree; returns the answer.
pub fn check_stable_name((first, second): (String, String)) -> Result<String, Violation> {
    if first == second {
        return Ok(first);
    }
    Err(Violation::Unstable {
        first: super::error::truncate(&first, 64),
        second: super::error::truncate(&second, 64),
    })
}

/// Checks a fan-out answer: each name a candidate and allowed, and no more
/// names than candidates. Returns the chosen names, de-duplicated, in the
/// order of the answer.
pub fn check_fanout<'a>(
    chosen: Vec<String>,
    candidates: impl IntoIterator<Item = &'a str>,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, Violation> {
    let candidates: HashSet<&str> = candidates.into_iter().collect();
    for name in &chosen {
        if !candidates.contains(name.as_str()) {
            return Err(Violation::NotACandidate(super::error::truncate(name, 253)));
        }
        if !allowed(name) {
            return Err(Violation::NamespaceNotAllowed(name.clone()));
        }
    }
    if chosen.len() > candidates.len() {
        return Err(Violation::OutputTooLarge {
            what: "fan-out answer (names)",
            len: chosen.len(),
            max: candidates.len(),
        });
    }
    let mut seen = HashSet::with_capacity(chosen.len());
    Ok(chosen
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect())
}

/// Bounds on retry delays, so that retries neither spin nor wait past the
/// token's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryClamp {
    /// Shortest delay (default 500 ms).
    pub min: Duration,
    /// Longest delay (default 1 h).
    pub max: Duration,
    /// Retries are scheduled at least this long before the current token
    /// expires (default 5 min).
    pub expiry_margin: Duration,
}

impl Default for RetryClamp {
    fn default() -> Self {
        RetryClamp {
            min: Duration::from_millis(500),
            max: Duration::from_secs(3600),
            expiry_margin: Duration::from_secs(300),
        }
    }
}

impl RetryClamp {
    /// Clamps `delay` to `[min, max]` and so that a retry comes before the current token
    /// expires: at most `token_expires_in - expiry_margin` while more than the margin is
    /// left, and at most half of what is left once inside it (so retries close in on the
    /// expiry geometrically instead of spinning every `min`). Never below `min`.
    pub fn clamp(&self, delay: Duration, token_expires_in: Option<Duration>) -> Duration {
        let mut d = delay.min(self.max);
        if let Some(left) = token_expires_in {
            d = if left > self.expiry_margin {
                d.min(left - self.expiry_margin)
            } else {
                d.min(left / 2)
            };
        }
        d.max(self.min)
    }

    /// Applies [`clamp`](Self::clamp) to a decision and bounds a give-up
    /// reason to [`MAX_REASON_LEN`] bytes.
    pub fn apply(
        &self,
        decision: RetryDecision,
        token_expires_in: Option<Duration>,
    ) -> RetryDecision {
        match decision {
            RetryDecision::RetryAfter(d) => {
                RetryDecision::RetryAfter(self.clamp(d, token_expires_in))
            }
            RetryDecision::GiveUp { reason } => RetryDecision::GiveUp {
                reason: super::error::truncate(&reason, MAX_REASON_LEN),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_subdomain_names() {
        for ok in [
            "a",
            "ecr-credentials",
            "ecr-123456789012-us-east-1",
            "a.b-c.d1",
            "0",
        ] {
            assert!(check_secret_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "é",
            "a b",
            "Not_A-Valid.Name!",
        ] {
            assert!(
                matches!(check_secret_name(bad), Err(Violation::InvalidName { .. })),
                "{bad}"
            );
        }
        assert!(check_secret_name(&"a".repeat(253)).is_ok());
        assert!(matches!(
            check_secret_name(&"a".repeat(254)),
            Err(Violation::OutputTooLarge { len: 254, .. })
        ));
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fanout_must_be_candidates_and_allowed() {
        let cands = ["a", "b", "c"];
        let any = |_: &str| true;
        assert_eq!(
            check_fanout(names(&["b", "a", "b"]), cands, &any).unwrap(),
            names(&["b", "a"])
        );
        assert_eq!(
            check_fanout(vec![], cands, &any).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            check_fanout(names(&["a", "x"]), cands, &any),
            Err(Violation::NotACandidate("x".into()))
        );
        let only_a = |n: &str| n == "a";
        assert_eq!(
            check_fanout(names(&["a", "b"]), cands, &only_a),
            Err(Violation::NamespaceNotAllowed("b".into()))
        );
        assert!(matches!(
            check_fanout(names(&["a", "a", "a", "a"]), cands, &any),
            Err(Violation::OutputTooLarge { len: 4, max: 3, .. })
        ));
    }

    #[test]
    fn retry_clamp() {
        let c = RetryClamp::default();
        let s = Duration::from_secs;
        assert_eq!(c.clamp(Duration::ZERO, None), Duration::from_millis(500));
        assert_eq!(c.clamp(s(10), None), s(10));
        assert_eq!(c.clamp(s(100_000), None), s(3600));
        // Token expires in 20 min: retry at most 15 min from now.
        assert_eq!(c.clamp(s(3600), Some(s(1200))), s(900));
        // Token inside the margin: at most half of what is left (no spinning at `min`).
        assert_eq!(c.clamp(s(3600), Some(s(240))), s(120));
        assert_eq!(c.clamp(s(10), Some(s(240))), s(10));
        assert_eq!(c.clamp(s(3600), Some(s(60))), s(30));
        assert_eq!(
            c.clamp(s(3600), Some(Duration::from_millis(600))),
            Duration::from_millis(500)
        );
        assert_eq!(
            c.clamp(s(3600), Some(Duration::ZERO)),
            Duration::from_millis(500)
        );
        let long = RetryDecision::GiveUp {
            reason: "x".repeat(5000),
        };
        match c.apply(long, None) {
            RetryDecision::GiveUp { reason } => assert!(reason.len() < 1100),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_different_names_are_unstable() {
        assert_eq!(check_stable_name(("a".into(), "a".into())).unwrap(), "a");
        let err = check_stable_name(("a-1".into(), "a-2".into())).unwrap_err();
        assert!(matches!(err, Violation::Unstable { .. }));
        assert!(err.to_string().contains("\"a-1\", then \"a-2\""), "{err}");
    }
}
