//! The sample app's own metrics, rendered in the Prometheus text format.
//!
//! Owns the request counters, the in-flight gauge and the latency histogram of `GET /`. It counts
//! only the workload requests (`GET /`), never `/healthz` or `/metrics`, so that an error rate
//! computed from these counters is not diluted by probes and scrapes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, seconds (Prometheus' default buckets).
pub const DURATION_BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Name of the request counter.
pub const REQUESTS_TOTAL: &str = "sample_app_requests_total";
/// Name of the latency histogram.
pub const REQUEST_DURATION_SECONDS: &str = "sample_app_request_duration_seconds";
/// Name of the in-flight gauge.
pub const REQUESTS_IN_FLIGHT: &str = "sample_app_requests_in_flight";

/// The latency histogram: per-bucket counts (not cumulative), the sum and the count.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket; index `DURATION_BUCKETS_SECONDS.len()` is the `+Inf` bucket.
    bucket_counts: [u64; DURATION_BUCKETS_SECONDS.len() + 1],
    /// Sum of every observation, seconds.
    sum_seconds: f64,
    /// Number of observations.
    count: u64,
}

/// The metrics of one sample app.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Answers `200` to `GET /`.
    ok_total: AtomicU64,
    /// Answers `500` to `GET /`.
    error_total: AtomicU64,
    /// `GET /` requests being answered now.
    in_flight: AtomicU64,
    /// Latency of `GET /` answers. A std mutex: the critical section is a few additions.
    histogram: Mutex<Histogram>,
}

/// Counts one request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    /// The gauge to decrement on drop.
    gauge: &'a AtomicU64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Count a `GET /` as in flight while the returned guard lives.
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            gauge: &self.in_flight,
        }
    }

    /// Record one finished `GET /` answer.
    pub fn observe(&self, status_is_error: bool, duration: Duration) {
        let counter = if status_is_error {
            &self.error_total
        } else {
            &self.ok_total
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS_SECONDS
            .iter()
            .position(|upper_bound| seconds <= *upper_bound)
            .unwrap_or(DURATION_BUCKETS_SECONDS.len());
        // A poisoned histogram still holds valid numbers (each update is a few additions), so
        // recording continues rather than failing the request.
        let mut histogram = self
            .histogram
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = histogram.bucket_counts.get_mut(bucket) {
            *count += 1;
        }
        histogram.sum_seconds += seconds;
        histogram.count += 1;
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let (bucket_counts, sum_seconds, count) = {
            let histogram = self
                .histogram
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                histogram.bucket_counts,
                histogram.sum_seconds,
                histogram.count,
            )
        };
        let mut text = String::new();
        // Writing to a String cannot fail, so the results of `writeln!` are ignored.
        let _ = writeln!(
            text,
            "# HELP {REQUESTS_TOTAL} Answers to GET /, by status code.\n\
             # TYPE {REQUESTS_TOTAL} counter\n\
             {REQUESTS_TOTAL}{{code=\"200\"}} {}\n\
             {REQUESTS_TOTAL}{{code=\"500\"}} {}",
            self.ok_total.load(Ordering::Relaxed),
            self.error_total.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            text,
            "# HELP {REQUESTS_IN_FLIGHT} GET / requests being answered.\n\
             # TYPE {REQUESTS_IN_FLIGHT} gauge\n\
             {REQUESTS_IN_FLIGHT} {}",
            self.in_flight.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            text,
            "# HELP {REQUEST_DURATION_SECONDS} Time to answer GET /, seconds.\n\
             # TYPE {REQUEST_DURATION_SECONDS} histogram"
        );
        let mut cumulative = 0;
        for (upper_bound, bucket_count) in DURATION_BUCKETS_SECONDS.iter().zip(bucket_counts) {
            cumulative += bucket_count;
            let _ = writeln!(
                text,
                "{REQUEST_DURATION_SECONDS}_bucket{{le=\"{upper_bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            text,
            "{REQUEST_DURATION_SECONDS}_bucket{{le=\"+Inf\"}} {count}\n\
             {REQUEST_DURATION_SECONDS}_sum {sum_seconds}\n\
             {REQUEST_DURATION_SECONDS}_count {count}"
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.observe(false, Duration::from_millis(3));
        metrics.observe(false, Duration::from_millis(30));
        metrics.observe(true, Duration::from_secs(20));
        let text = metrics.render();
        assert!(
            text.contains("sample_app_requests_total{code=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("sample_app_requests_total{code=\"500\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sample_app_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("sample_app_request_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("sample_app_request_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("sample_app_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("sample_app_request_duration_seconds_count 3\n"));
        assert!(text.contains("sample_app_requests_in_flight 0\n"));
    }
}
