//! Go duration syntax, as accepted by the original operator's `spec.frequency`.
//!
//! The grammar is Go's [`time.ParseDuration`](https://pkg.go.dev/time#ParseDuration):
//! a sequence of decimal numbers, each with an optional fraction and a unit suffix,
//! such as `300s`, `1.5h`, `1h30m` or `90m`. Valid units are `ns`, `us` (or `µs`),
//! `ms`, `s`, `m`, `h`. Unlike Go, zero and negative durations are rejected here, since
//! a refresh frequency must be positive.

use std::time::Duration;

/// Why a duration string was rejected. The message is meant for a status condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("is empty; expected a Go duration such as 8h, 1h30m or 90m")]
    Empty,
    /// The string starts with `-`.
    #[error("{0:?} is negative; expected a positive duration")]
    Negative(String),
    /// The string adds up to zero.
    #[error("{0:?} is zero; expected a positive duration")]
    Zero(String),
    /// The string does not follow the grammar.
    #[error("{input:?} is not a Go duration ({why}); expected e.g. 8h, 1h30m, 90m, 1.5h or 300s")]
    Syntax {
        /// The input as written.
        input: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The value does not fit in 64-bit nanoseconds (about 292 years), as in Go.
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Parses a Go duration string (`8h`, `1h30m`, `90m`, `1.5h`, `300s`) into a positive
/// [`Duration`].
///
/// # Errors
/// [`DurationError`] when the string is empty, negative, zero, malformed, or overflows.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let syntax = |why| DurationError::Syntax {
        input: input.to_string(),
        why,
    };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    if let Some(r) = rest.strip_prefix('-') {
        if r.is_empty() {
            return Err(syntax("a sign without a number"));
        }
        return Err(DurationError::Negative(input.to_string()));
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    if rest == "0" {
        return Err(DurationError::Zero(input.to_string()));
    }
    if rest.is_empty() {
        return Err(syntax("a sign without a number"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(syntax("a unit without a number"));
        }
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, next) = after_num.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(syntax("a number without a unit")),
            _ => return Err(syntax("unknown unit; use ns, us, ms, s, m or h")),
        };
        let overflow = || DurationError::Overflow(input.to_string());
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        if whole > i64::MAX as u128 {
            return Err(overflow());
        }
        let mut value = whole.checked_mul(nanos_per_unit).ok_or_else(overflow)?;
        // Fraction: digits / 10^len of the unit; digits past nanosecond precision are dropped.
        let mut scale = nanos_per_unit;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            value = value
                .checked_add(u128::from(d - b'0') * scale)
                .ok_or_else(overflow)?;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        if total > i64::MAX as u128 {
            return Err(overflow());
        }
        rest = next;
    }
    if total == 0 {
        return Err(DurationError::Zero(input.to_string()));
    }
    let total = u64::try_from(total).map_err(|_| DurationError::Overflow(input.to_string()))?;
    Ok(Duration::from_nanos(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_go_duration(s).unwrap().as_secs()
    }

    #[test]
    fn accepts_the_forms_the_original_accepted() {
        assert_eq!(secs("8h"), 8 * 3600);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("90m"), 5400);
        assert_eq!(secs("1.5h"), 5400);
        assert_eq!(secs("300s"), 300);
        assert_eq!(secs("+2m"), 120);
        assert_eq!(secs("1h0m30s"), 3630);
        assert_eq!(
            parse_go_duration(".5s").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("1.s").unwrap(), Duration::from_secs(1));
        assert_eq!(
            parse_go_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_go_duration("10us").unwrap(),
            Duration::from_micros(10)
        );
        assert_eq!(
            parse_go_duration("10µs").unwrap(),
            Duration::from_micros(10)
        );
        assert_eq!(parse_go_duration("7ns").unwrap(), Duration::from_nanos(7));
    }

    #[test]
    fn rejects_zero_negative_and_garbage() {
        assert_eq!(parse_go_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_go_duration("0"),
            Err(DurationError::Zero(_))
        ));
        assert!(matches!(
            parse_go_duration("0s"),
            Err(DurationError::Zero(_))
        ));
        assert!(matches!(
            parse_go_duration("0h0m"),
            Err(DurationError::Zero(_))
        ));
        assert!(matches!(
            parse_go_duration("-1h"),
            Err(DurationError::Negative(_))
        ));
        for bad in [
            "8", "h", "8hours", "1d", "8 h", "1..5h", ".h", "-", "+", "1h-5m", "abc",
        ] {
            assert!(
                matches!(parse_go_duration(bad), Err(DurationError::Syntax { .. })),
                "{bad:?} should be a syntax error, got {:?}",
                parse_go_duration(bad)
            );
        }
        assert!(matches!(
            parse_go_duration("9999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn huge_values_are_errors_never_wrapped_or_panics() {
        // Fits u128 after the multiplication, then the fraction pushed it over: once read as
        // 8 seconds.
        for huge in [
            "94522879700260684295381835.4h",
            "340282366920938463463374607431768211455ns",
            "99999999999999999999999999999999999999999h",
            "2562047h48m",
            "9223372036854775808ns",
        ] {
            assert!(
                matches!(parse_go_duration(huge), Err(DurationError::Overflow(_))),
                "{huge}: {:?}",
                parse_go_duration(huge)
            );
        }
        // The largest Go duration still parses.
        assert!(parse_go_duration("9223372036854775807ns").is_ok());
    }

    #[test]
    fn error_messages_name_the_value_and_the_expected_form() {
        let msg = parse_go_duration("8hours").unwrap_err().to_string();
        assert!(msg.contains("\"8hours\""), "{msg}");
        assert!(msg.contains("1h30m"), "{msg}");
    }
}
