//! How the agent waits before it tries its center again: full-jitter exponential backoff, and
//! the reading of a server's `Retry-After`. The pull of the desired document and the report
//! sender both use it, so a region whose power comes back does not retry in lockstep.
//!
//! It holds a failure count and draws random numbers; it never sleeps and never reads a clock.

use std::time::{Duration, UNIX_EPOCH};

use crate::time::Timestamp;

/// The longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Full-jitter exponential backoff: the n-th consecutive failure waits a uniformly random time
/// between zero and `min(max, initial * 2^(n-1))`. The cap applies before the jitter, so sites
/// that failed together do not meet again at the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff whose first wait is at most `initial`, and no wait more than `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The upper bound of the wait after `failures` failures in a row (at least one).
    pub fn ceiling(&self, failures: u32) -> Duration {
        self.initial
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)))
            .min(self.max)
    }

    /// The wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        jitter(self.ceiling(self.failures))
    }

    /// Forget the failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A uniformly random duration between zero and `ceiling`.
pub fn jitter(ceiling: Duration) -> Duration {
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=millis))
}

/// A `Retry-After` value: seconds, or an HTTP date after `now`; at most [`MAX_RETRY_AFTER`].
/// A date that is not in the future (or a value that is neither) is `None`: the backoff applies.
pub fn retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            let at = at.duration_since(UNIX_EPOCH).ok()?;
            let wait = at.checked_sub(Duration::from_millis(now.as_millis()))?;
            if wait.is_zero() {
                return None;
            }
            wait
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_before_the_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            assert!(backoff.next_delay() <= Duration::from_secs(1));
        }
        // At the cap the waits still spread over the whole range, not bunched at the cap.
        let waits: Vec<Duration> = (0..200).map(|_| backoff.next_delay()).collect();
        assert!(waits.iter().any(|wait| *wait < Duration::from_millis(500)));
        assert!(waits.iter().any(|wait| *wait > Duration::from_millis(500)));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_is_seconds_or_a_future_date_and_bounded() {
        // 2026-12-01T00:00:00Z
        let now = Timestamp::from_millis(1_796_083_200_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 99999999 ", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), None);
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
