//! When to refresh and when to retry: pure functions of plain data.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Refresh timing. Defaults: 30 min safety margin, 60 s minimum interval. (Retry timing
/// after failures is the retry policy's, see [`crate::policy`].)
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSettings {
    /// Refresh at least this long before the token expires (capped at half the token's
    /// lifetime, so short-lived tokens are refreshed at mid-life).
    pub refresh_margin: Duration,
    /// Never schedule refreshes closer than this, even when a token claims to be already
    /// expired (clock skew, a misbehaving stand-in): no spinning.
    pub min_refresh_interval: Duration,
    /// A refresh due within this long counts as due now. Zero for the controller, which
    /// wakes up when a refresh is due; `ecr-token-refresh once` sets it to the time until
    /// its next run, so that no token expires between two runs.
    pub refresh_ahead: Duration,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(30 * 60),
            min_refresh_interval: Duration::from_secs(60),
            refresh_ahead: Duration::ZERO,
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

/// Converts `until - now` into a non-negative [`Duration`] for `Action::requeue`.
pub fn until(now: Timestamp, until: Timestamp) -> Duration {
    Duration::try_from(until.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
