//! When to refresh and when to retry: pure functions of plain data.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::Rng;

/// Scheduling knobs. Defaults: 30 min safety margin, 60 s minimum interval, backoff from
/// 5 s doubling up to 5 min.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSettings {
    /// Refresh at least this long before the token expires (capped at half the token's
    /// lifetime, so short-lived tokens are refreshed at mid-life).
    pub refresh_margin: Duration,
    /// Never schedule refreshes closer than this, even when a token claims to be already
    /// expired (clock skew, a misbehaving stand-in): no spinning.
    pub min_refresh_interval: Duration,
    /// First retry delay after a failure.
    pub backoff_base: Duration,
    /// Longest retry delay; retries go on at this pace until a refresh succeeds.
    pub backoff_max: Duration,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(30 * 60),
            min_refresh_interval: Duration::from_secs(60),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(5 * 60),
        }
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// The time of the next refresh after a token was fetched at `fetched_at`: the earlier of
/// `fetched_at + frequency` and `expires_at - margin`, but never sooner than
/// `fetched_at + min_refresh_interval`.
pub fn next_refresh(
    fetched_at: Timestamp,
    frequency: Duration,
    expires_at: Timestamp,
    settings: &ScheduleSettings,
) -> Timestamp {
    let lifetime = expires_at.duration_since(fetched_at);
    let margin = signed(settings.refresh_margin)
        .min(lifetime / 2)
        .max(SignedDuration::ZERO);
    let by_expiry = expires_at.checked_sub(margin).unwrap_or(expires_at);
    let by_frequency = fetched_at
        .checked_add(signed(frequency))
        .unwrap_or(Timestamp::MAX);
    let floor = fetched_at
        .checked_add(signed(settings.min_refresh_interval))
        .unwrap_or(Timestamp::MAX);
    by_frequency.min(by_expiry).max(floor)
}

/// Whether a token expiring at `expires_at`, fetched at `fetched_at`, was already expired
/// (or about to) when it arrived: worth a warning, since refreshes then happen at the
/// minimum interval.
pub fn arrived_expired(
    fetched_at: Timestamp,
    expires_at: Timestamp,
    settings: &ScheduleSettings,
) -> bool {
    expires_at.duration_since(fetched_at) <= signed(settings.min_refresh_interval)
}

/// Exponential backoff with "equal jitter": for attempt `n` (1-based) the ceiling is
/// `base * 2^(n-1)` capped at `max`, and the delay is uniform in `[ceiling/2, ceiling]`.
pub fn backoff(attempt: u32, settings: &ScheduleSettings, rng: &mut impl Rng) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = settings
        .backoff_base
        .saturating_mul(1u32 << exp)
        .min(settings.backoff_max);
    let half = ceiling / 2;
    let jitter_ms = rng.random_range(0..=half.as_millis().min(u128::from(u64::MAX)) as u64);
    half + Duration::from_millis(jitter_ms)
}

/// Clamps a retry delay so that, while the current token is still valid, the retry comes
/// before it expires: at most the time left minus a small guard (and never below one
/// second). Once the token has expired, delays stay as given.
pub fn clamp_before_expiry(delay: Duration, token_expires_in: Option<Duration>) -> Duration {
    const GUARD: Duration = Duration::from_secs(10);
    match token_expires_in {
        Some(left) if left > GUARD => delay.min(left - GUARD).max(Duration::from_secs(1)),
        _ => delay,
    }
}

/// Converts `until - now` into a non-negative [`Duration`] for `Action::requeue`.
pub fn until(now: Timestamp, until: Timestamp) -> Duration {
    Duration::try_from(until.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const H: u64 = 3600;

    #[test]
    fn frequency_wins_when_shorter_than_expiry_minus_margin() {
        let s = ScheduleSettings::default();
        let next = next_refresh(
            t("2026-01-01T00:00:00Z"),
            Duration::from_secs(8 * H),
            t("2026-01-01T12:00:00Z"),
            &s,
        );
        assert_eq!(next, t("2026-01-01T08:00:00Z"));
    }

    #[test]
    fn a_long_frequency_never_lets_the_token_lapse() {
        let s = ScheduleSettings::default();
        let next = next_refresh(
            t("2026-01-01T00:00:00Z"),
            Duration::from_secs(24 * H),
            t("2026-01-01T12:00:00Z"),
            &s,
        );
        assert_eq!(next, t("2026-01-01T11:30:00Z"));
    }

    #[test]
    fn short_lived_tokens_refresh_at_mid_life() {
        let s = ScheduleSettings::default();
        let next = next_refresh(
            t("2026-01-01T00:00:00Z"),
            Duration::from_secs(8 * H),
            t("2026-01-01T00:20:00Z"),
            &s,
        );
        assert_eq!(next, t("2026-01-01T00:10:00Z"));
    }

    #[test]
    fn an_already_expired_token_does_not_cause_spinning() {
        // moto answers with expiresAt = 2015-01-01.
        let s = ScheduleSettings::default();
        let now = t("2026-01-01T00:00:00Z");
        let next = next_refresh(
            now,
            Duration::from_secs(8 * H),
            t("2015-01-01T00:00:00Z"),
            &s,
        );
        assert_eq!(next, t("2026-01-01T00:01:00Z"));
        assert!(arrived_expired(now, t("2015-01-01T00:00:00Z"), &s));
        assert!(!arrived_expired(now, t("2026-01-01T12:00:00Z"), &s));
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let s = ScheduleSettings::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..=20 {
            let ceiling = (s.backoff_base * 2u32.pow((attempt - 1).min(20))).min(s.backoff_max);
            for _ in 0..50 {
                let d = backoff(attempt, &s, &mut rng);
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "attempt {attempt}: {d:?} vs {ceiling:?}"
                );
            }
        }
        assert!(backoff(u32::MAX, &s, &mut rng) <= s.backoff_max);
        let a: Vec<_> = (0..10).map(|_| backoff(3, &s, &mut rng)).collect();
        assert!(a.iter().any(|d| *d != a[0]), "jitter varies the delay");
    }

    #[test]
    fn retries_come_before_expiry() {
        let d = Duration::from_secs(300);
        assert_eq!(
            clamp_before_expiry(d, Some(Duration::from_secs(70))),
            Duration::from_secs(60)
        );
        assert_eq!(clamp_before_expiry(d, Some(Duration::from_secs(3600))), d);
        assert_eq!(clamp_before_expiry(d, None), d);
        assert_eq!(clamp_before_expiry(d, Some(Duration::from_secs(5))), d);
    }
}
