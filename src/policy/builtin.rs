//! Built-in policies: the behaviour of the original operator.

use std::time::Duration;

use rand::Rng;

use super::{
    CrInfo, Failure, FanoutPolicy, NamespaceInfo, NamingPolicy, PolicyError, RetryDecision,
    RetryPolicy,
};

/// Names the Secret after the custom resource (`metadata.name`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinNaming;

impl NamingPolicy for BuiltinNaming {
    fn secret_name(&self, cr: &CrInfo, _target_namespace: &str) -> Result<String, PolicyError> {
        Ok(cr.name.clone())
    }
}

/// Writes the Secret into the custom resource's own namespace only.
///
/// The candidates are ignored: the original operator always wrote into the
/// resource's namespace, whether or not it was listed.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinFanout;

impl FanoutPolicy for BuiltinFanout {
    fn select(
        &self,
        cr: &CrInfo,
        _candidates: &[NamespaceInfo],
    ) -> Result<Vec<String>, PolicyError> {
        Ok(vec![cr.namespace.clone()])
    }
}

/// How [`BuiltinRetry`] randomises its delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// "Full jitter": uniform in `[0, bound]`.
    #[default]
    Full,
    /// No randomness: exactly `bound` (useful in tests).
    None,
}

/// Exponential backoff with jitter; never gives up.
///
/// The bound for attempt `n` (1-based) is `base * 2^(n-1)`, capped at `cap`;
/// the delay is drawn according to `jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinRetry {
    /// Bound of the first retry (default 1 s).
    pub base: Duration,
    /// Largest bound (default 5 min).
    pub cap: Duration,
    /// Randomisation (default full jitter).
    pub jitter: Jitter,
}

impl Default for BuiltinRetry {
    fn default() -> Self {
        BuiltinRetry {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            jitter: Jitter::Full,
        }
    }
}

impl BuiltinRetry {
    /// The un-jittered delay bound for a 1-based `attempt`.
    pub fn bound(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << exp;
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let cap_ms = u64::try_from(self.cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(base_ms.saturating_mul(factor).min(cap_ms))
    }

    /// The delay for a 1-based `attempt`, jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let bound = self.bound(attempt);
        match self.jitter {
            Jitter::None => bound,
            Jitter::Full => {
                let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
                Duration::from_millis(rand::rng().random_range(0..=ms))
            }
        }
    }
}

impl RetryPolicy for BuiltinRetry {
    fn decide(
        &self,
        _cr: &CrInfo,
        failure: &Failure,
        _token_expires_in: Option<Duration>,
    ) -> Result<RetryDecision, PolicyError> {
        Ok(RetryDecision::RetryAfter(self.delay(failure.attempt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::FailureKind;

    fn cr() -> CrInfo {
        CrInfo {
            name: "ecr-credentials".into(),
            namespace: "apps".into(),
            ..Default::default()
        }
    }

    #[test]
    fn naming_is_the_cr_name() {
        assert_eq!(
            BuiltinNaming.secret_name(&cr(), "other").unwrap(),
            "ecr-credentials"
        );
    }

    #[test]
    fn fanout_is_the_own_namespace() {
        let c = [NamespaceInfo::named("a"), NamespaceInfo::named("apps")];
        assert_eq!(BuiltinFanout.select(&cr(), &c).unwrap(), vec!["apps"]);
        assert_eq!(BuiltinFanout.select(&cr(), &[]).unwrap(), vec!["apps"]);
    }

    #[test]
    fn retry_doubles_to_the_cap() {
        let r = BuiltinRetry::default();
        assert_eq!(r.bound(1), Duration::from_secs(1));
        assert_eq!(r.bound(2), Duration::from_secs(2));
        assert_eq!(r.bound(5), Duration::from_secs(16));
        assert_eq!(r.bound(9), Duration::from_secs(256));
        assert_eq!(r.bound(10), Duration::from_secs(300));
        assert_eq!(r.bound(u32::MAX), Duration::from_secs(300));
        assert_eq!(r.bound(0), Duration::from_secs(1));
    }

    #[test]
    fn retry_jitter_stays_within_the_bound_and_never_gives_up() {
        let r = BuiltinRetry::default();
        for attempt in 1..20 {
            let f = Failure {
                kind: FailureKind::AccessDenied,
                message: "no".into(),
                attempt,
            };
            match r.decide(&cr(), &f, None).unwrap() {
                RetryDecision::RetryAfter(d) => assert!(d <= r.bound(attempt)),
                other => panic!("gave up: {other:?}"),
            }
        }
        let exact = BuiltinRetry {
            jitter: Jitter::None,
            ..r
        };
        assert_eq!(exact.delay(3), Duration::from_secs(4));
    }
}
