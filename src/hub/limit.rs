//! How many report batches one site may send: a token bucket per site, so a site stuck in a
//! loop (or a forged flood under one name) cannot take the store's writer from everyone else.
//!
//! Owns the buckets and the count of batches each site had refused. It is in memory only (a
//! restarted hub starts every bucket full) and must never refuse a site because of another
//! site's traffic. A refused batch is answered 429 with `Retry-After`, which the agent's sender
//! honours: nothing is lost, it comes again later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::time::Timestamp;

/// The most sites with a bucket; beyond it, new names share one bucket (a flood of made-up
/// names cannot grow the table without bound).
pub const MAX_BUCKETS: usize = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
    refused: u64,
}

/// Report batches per site: `rate` per second on average, `burst` at once.
#[derive(Debug)]
pub struct ReportLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A refused batch: when the site may send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Wait at least this long.
    pub retry_after: Duration,
}

impl ReportLimit {
    /// `rate` batches per second, `burst` at once (at least one).
    pub fn new(rate: f64, burst: u32) -> ReportLimit {
        ReportLimit {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `site` may send a batch at `now`; a refusal is counted.
    pub fn admit(&self, site: &str, now: Timestamp) -> Result<(), Refused> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(site) {
            ""
        } else {
            site
        };
        let burst = self.burst;
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
            refused: 0,
        });
        let elapsed = now.since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(burst);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        bucket.refused += 1;
        let wait = (1.0 - bucket.tokens) / self.rate;
        Err(Refused {
            retry_after: Duration::from_secs_f64(wait.clamp(1.0, 3600.0).ceil()),
        })
    }

    /// How many batches of `site` were refused since the hub started.
    pub fn refused(&self, site: &str) -> u64 {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(site)
            .map_or(0, |bucket| bucket.refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let limit = ReportLimit::new(2.0, 3);
        let start = Timestamp::from_millis(1_000_000);
        for _ in 0..3 {
            assert!(limit.admit("a", start).is_ok());
        }
        let refused = limit.admit("a", start).expect_err("over the burst");
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(limit.refused("a"), 1);
        assert!(
            limit.admit("b", start).is_ok(),
            "another site has its own bucket"
        );
        let later = start.plus(Duration::from_millis(500));
        assert!(
            limit.admit("a", later).is_ok(),
            "one token back after 1/rate"
        );
        assert!(limit.admit("a", later).is_err());
        assert_eq!(limit.refused("a"), 2);
        assert_eq!(limit.refused("b"), 0);
    }
}
