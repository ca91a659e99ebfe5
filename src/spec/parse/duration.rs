//! Argo-style durations: integer seconds, or Go duration strings such as `30s`, `5m`, `1h30m`,
//! `1.5h` or `500ms`.
//!
//! Only positive durations are accepted: every duration edgeroll reads is a wait, an interval or
//! a window, and zero or less of any of them is a mistake.

use std::time::Duration;

/// Nanoseconds per unit, longest unit name first so `ms` is not read as `m`.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// The longest duration Go (and so Argo) can represent: `i64::MAX` nanoseconds, about 292 years.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Fraction digits beyond this many cannot change a nanosecond count and are ignored.
const MAX_FRACTION_DIGITS: usize = 18;

/// What every duration error ends with.
pub(crate) const DURATION_HINT: &str = "expected seconds or a duration such as 30s, 5m, 1h30m";

/// A duration given as integer seconds.
pub(crate) fn from_seconds(seconds: i128) -> Result<Duration, String> {
    if seconds <= 0 {
        return Err(format!("duration {seconds} must be positive"));
    }
    let nanos = u128::try_from(seconds)
        .ok()
        .and_then(|seconds| seconds.checked_mul(1_000_000_000))
        .filter(|nanos| *nanos <= MAX_NANOS)
        .ok_or_else(|| format!("duration {seconds} is too long"))?;
    Ok(nanos_to_duration(nanos))
}

/// Parse a duration string (`30s`, `1h30m`, `500ms`, or bare seconds `30`).
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration `{text}`: {DURATION_HINT}");
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if unsigned.is_empty() {
        return Err(invalid());
    }
    // Argo accepts a bare number of seconds as a string too.
    let total = if unsigned.bytes().all(|byte| byte.is_ascii_digit()) {
        unsigned
            .parse::<u128>()
            .ok()
            .and_then(|seconds| seconds.checked_mul(1_000_000_000))
    } else {
        sum_of_parts(unsigned).map_err(|()| invalid())?
    };
    let Some(total) = total.filter(|nanos| *nanos <= MAX_NANOS) else {
        return Err(format!("duration `{text}` is too long"));
    };
    if negative || total == 0 {
        return Err(format!("duration `{text}` must be positive"));
    }
    Ok(nanos_to_duration(total))
}

/// The nanoseconds of `1h30m`-style text; `Ok(None)` on overflow, `Err` on bad syntax.
fn sum_of_parts(mut rest: &str) -> Result<Option<u128>, ()> {
    let mut total: Option<u128> = Some(0);
    while !rest.is_empty() {
        let integer_length = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (integer, after_integer) = rest.split_at(integer_length);
        let (fraction, after_number) = match after_integer.strip_prefix('.') {
            Some(after_dot) => {
                let fraction_length = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(fraction_length)
            }
            None => ("", after_integer),
        };
        if integer.is_empty() && fraction.is_empty() {
            return Err(());
        }
        let (unit_nanos, after_unit) = UNITS
            .iter()
            .filter_map(|(name, nanos)| after_number.strip_prefix(name).map(|rest| (*nanos, rest)))
            // `ms` and `m` both match "ms…": take the longest unit name.
            .min_by_key(|(_, rest)| rest.len())
            .ok_or(())?;
        let part = integer_part(integer, unit_nanos)
            .and_then(|whole| whole.checked_add(fraction_part(fraction, unit_nanos)));
        total = total
            .zip(part)
            .and_then(|(sum, part)| sum.checked_add(part));
        rest = after_unit;
    }
    Ok(total)
}

fn integer_part(digits: &str, unit_nanos: u128) -> Option<u128> {
    if digits.is_empty() {
        return Some(0);
    }
    digits.parse::<u128>().ok()?.checked_mul(unit_nanos)
}

fn fraction_part(digits: &str, unit_nanos: u128) -> u128 {
    let digits = &digits[..digits.len().min(MAX_FRACTION_DIGITS)];
    let Ok(numerator) = digits.parse::<u128>() else {
        return 0;
    };
    // 10^18 * 3.6e12 fits easily in a u128, so this cannot overflow.
    numerator * unit_nanos / 10u128.pow(digits.len() as u32)
}

fn nanos_to_duration(nanos: u128) -> Duration {
    const NANOS_PER_SECOND: u128 = 1_000_000_000;
    // `nanos` is at most `i64::MAX`, so the seconds fit in a u64 and the remainder in a u32.
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).unwrap_or(u64::MAX);
    let subsec = u32::try_from(nanos % NANOS_PER_SECOND).unwrap_or(0);
    Duration::new(seconds, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_argo_and_go_durations() {
        let cases = [
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h0m30s", Duration::from_secs(3630)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("2us", Duration::from_micros(2)),
            ("2µs", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
            ("30", Duration::from_secs(30)),
            ("+10s", Duration::from_secs(10)),
            ("1m1ms", Duration::from_millis(60_001)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_bad_zero_negative_and_huge_durations() {
        for text in [
            "", "s", "30x", "1 h", "5m 3s", "1.s.", "abc", "1d", "-", ".",
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.starts_with("invalid duration"), "{text}: {error}");
        }
        assert_eq!(parse("0s").unwrap_err(), "duration `0s` must be positive");
        assert_eq!(parse("0").unwrap_err(), "duration `0` must be positive");
        assert_eq!(parse("-5s").unwrap_err(), "duration `-5s` must be positive");
        assert_eq!(
            parse("3000000h").unwrap_err(),
            "duration `3000000h` is too long"
        );
        assert_eq!(
            parse("99999999999999999999999999999999999999999h").unwrap_err(),
            "duration `99999999999999999999999999999999999999999h` is too long"
        );
        assert_eq!(from_seconds(0).unwrap_err(), "duration 0 must be positive");
        assert_eq!(
            from_seconds(-3).unwrap_err(),
            "duration -3 must be positive"
        );
        assert_eq!(from_seconds(30), Ok(Duration::from_secs(30)));
        assert!(from_seconds(i128::from(i64::MAX)).is_err());
    }
}
