//! Per-version request metrics, recorded by the proxy and read by analysis.
//!
//! Owns, for every version label, a ring of one-second buckets (requests, status classes,
//! transport failures and a log-spaced latency histogram) covering the last [`RING_SECONDS`]
//! seconds, plus lifetime totals for status output and `/metrics`.
//!
//! Invariants: recording never allocates except the first time a version is seen, and holds a
//! lock only for a handful of integer additions; time comes from `tokio::time::Instant`, so
//! paused-clock tests drive the windows. This module must never decide anything (thresholds
//! belong to `analysis`) and never does I/O.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::spec::BuiltinMetric;

/// How many one-second buckets each version keeps: ten minutes plus a margin, so a 600 s window
/// that includes the current partial second is always fully covered.
pub const RING_SECONDS: usize = 610;

/// Lower edge of the first finite latency bucket; faster requests share one underflow bucket.
pub const LATENCY_MIN: Duration = Duration::from_micros(100);

/// Latency buckets per doubling. Four gives a bucket ratio of 2^(1/4) ≈ 1.19, so the middle of a
/// bucket is within about 9 % of any value in it.
const LATENCY_BUCKETS_PER_OCTAVE: f64 = 4.0;

/// Finite log-spaced buckets from [`LATENCY_MIN`] up to about 62 s (100 µs · 2^(77/4)), which
/// covers the proxy's 60 s response-header timeout.
const LATENCY_FINITE_BUCKETS: usize = 77;

/// Every latency bucket: one underflow bucket below [`LATENCY_MIN`], the finite buckets, and one
/// overflow bucket above the last finite edge.
pub const LATENCY_BUCKETS: usize = LATENCY_FINITE_BUCKETS + 2;

/// The shortest span a request rate is divided by, so a version seen for the first time a moment
/// ago does not report an absurd rate.
const MIN_RATE_SPAN: Duration = Duration::from_secs(1);

/// HTTP status classes kept apart: 1xx to 5xx.
const STATUS_CLASSES: usize = 5;

/// Marks a ring slot that has never held a second.
const UNUSED_SECOND: u64 = u64::MAX;

/// The answer to a built-in query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryResult {
    /// The figure (NaN when there were no requests).
    pub value: f64,
    /// How many requests it is based on.
    pub samples: u64,
}

impl QueryResult {
    /// The answer when there is nothing to measure.
    const EMPTY: QueryResult = QueryResult {
        value: f64::NAN,
        samples: 0,
    };
}

/// How one proxied request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The backend answered with this HTTP status code.
    Status(u16),
    /// The backend could not be reached, broke the connection, or did not answer in time; the
    /// proxy answered 502 or 504 itself. Counted apart from the status classes.
    TransportFailure,
}

/// Lifetime totals for one version, for status output and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionTotals {
    /// Version label.
    pub version: String,
    /// Requests recorded.
    pub requests: u64,
    /// Answers by status class: index 0 is 1xx, index 4 is 5xx.
    pub status_classes: [u64; STATUS_CLASSES],
    /// Requests that failed in transport (502/504 from the proxy itself).
    pub transport_failures: u64,
    /// Sum of all latencies, seconds.
    pub latency_sum_seconds: f64,
    /// Requests per latency bucket; the bucket edges are [`latency_bucket_upper_bounds`].
    pub latency_buckets: Vec<u64>,
}

/// The upper edge of every latency bucket in seconds, in bucket order; the last is infinity.
pub fn latency_bucket_upper_bounds() -> [f64; LATENCY_BUCKETS] {
    let mut bounds = [f64::INFINITY; LATENCY_BUCKETS];
    for (index, bound) in bounds.iter_mut().enumerate().take(LATENCY_BUCKETS - 1) {
        *bound = bucket_upper_seconds(index);
    }
    bounds
}

/// Per-version counters and latency histograms in one-second buckets.
///
/// Shared as an `Arc` between the proxy (which records every request) and analysis (which
/// queries). The version map is behind a `RwLock` taken for reading on every record; each version
/// has its own `Mutex` held only for a few additions.
pub struct Metrics {
    /// Second zero of every ring.
    epoch: Instant,
    /// The series of every version seen and not yet dropped by [`Metrics::retain_versions`].
    versions: RwLock<HashMap<String, Arc<Mutex<VersionSeries>>>>,
    /// Requests answered 503 because no pool could take them; they belong to no version.
    unrouted: AtomicU64,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Metrics {
            epoch: Instant::now(),
            versions: RwLock::new(HashMap::new()),
            unrouted: AtomicU64::new(0),
        }
    }

    /// Record one request for `version` that ended now with `outcome` after `latency` (request
    /// received to response headers received).
    pub fn record(&self, version: &str, outcome: RequestOutcome, latency: Duration) {
        self.record_at(version, outcome, latency, Instant::now());
    }

    /// Record one request as if it ended at `at`. A time older than the ring counts only towards
    /// the lifetime totals.
    pub fn record_at(
        &self,
        version: &str,
        outcome: RequestOutcome,
        latency: Duration,
        at: Instant,
    ) {
        let second = at.saturating_duration_since(self.epoch).as_secs();
        {
            // The common case: a known version, added to under the shared read lock.
            let versions = self.versions.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = versions.get(version) {
                let mut series = series.lock().unwrap_or_else(PoisonError::into_inner);
                series.add(second, outcome, latency);
                return;
            }
        }
        let mut versions = self
            .versions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let series = versions
            .entry(version.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(VersionSeries::new(at))));
        let mut series = series.lock().unwrap_or_else(PoisonError::into_inner);
        series.add(second, outcome, latency);
    }

    /// Count one request that no version could take (answered 503 by the proxy).
    pub fn record_unrouted(&self) {
        self.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered 503 since start because no pool had a ready instance.
    pub fn unrouted_total(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }

    /// Evaluate a built-in query for `version` over the trailing `window`.
    pub fn query(&self, version: &str, metric: BuiltinMetric, window: Duration) -> QueryResult {
        self.query_at(version, metric, window, Instant::now())
    }

    /// Evaluate a built-in query for `version` over the `window` that ends at `now`.
    ///
    /// The window covers every one-second bucket it overlaps, including the current partial
    /// second, and is cut to the ring's length.
    pub fn query_at(
        &self,
        version: &str,
        metric: BuiltinMetric,
        window: Duration,
        now: Instant,
    ) -> QueryResult {
        let Some(series) = self.series(version) else {
            return QueryResult::EMPTY;
        };
        let now_offset = now.saturating_duration_since(self.epoch);
        let last_second = now_offset.as_secs();
        let first_second = now_offset
            .saturating_sub(window)
            .as_secs()
            .max(last_second.saturating_sub(RING_SECONDS as u64 - 1));
        let (sum, first_seen) = {
            let series = series.lock().unwrap_or_else(PoisonError::into_inner);
            (series.sum(first_second, last_second), series.first_seen)
        };
        if sum.requests == 0 {
            return QueryResult::EMPTY;
        }
        let samples = sum.requests;
        let value = match metric {
            BuiltinMetric::SuccessRate => sum.success_rate(),
            BuiltinMetric::ErrorRate => 1.0 - sum.success_rate(),
            BuiltinMetric::RequestRate => {
                // A version younger than the window has had less time to receive requests.
                let age = now.saturating_duration_since(first_seen).max(MIN_RATE_SPAN);
                let span = window.min(age);
                if span.is_zero() {
                    f64::NAN
                } else {
                    sum.requests as f64 / span.as_secs_f64()
                }
            }
            BuiltinMetric::LatencyP50 => sum.latency_quantile(0.50),
            BuiltinMetric::LatencyP95 => sum.latency_quantile(0.95),
            BuiltinMetric::LatencyP99 => sum.latency_quantile(0.99),
        };
        QueryResult { value, samples }
    }

    /// Per-request latencies (seconds) of `version` over the trailing `window`, for the judge.
    ///
    /// The proxy keeps a histogram, not the requests, so each request is represented by its
    /// bucket's geometric middle: within about 9 % of its true latency (one bucket spans a factor
    /// of 2^(1/4) ≈ 1.19), which bounds the resolution of any comparison made with them. Requests
    /// faster than [`LATENCY_MIN`] are represented by half of it, slower ones than the last edge by
    /// that edge. The values come out sorted; there is one per request in the window.
    pub fn latency_samples(&self, version: &str, window: Duration) -> Vec<f64> {
        self.latency_samples_at(version, window, Instant::now())
    }

    /// [`Metrics::latency_samples`] over the `window` that ends at `now`.
    pub fn latency_samples_at(&self, version: &str, window: Duration, now: Instant) -> Vec<f64> {
        let Some(sum) = self.window_sum(version, window, now) else {
            return Vec::new();
        };
        let count = usize::try_from(sum.latency.iter().sum::<u64>()).unwrap_or(usize::MAX);
        let mut samples = Vec::with_capacity(count);
        for (index, &in_bucket) in sum.latency.iter().enumerate() {
            let representative = bucket_representative_seconds(index);
            let in_bucket = usize::try_from(in_bucket).unwrap_or(usize::MAX);
            samples.extend(std::iter::repeat_n(representative, in_bucket));
        }
        samples
    }

    /// `(failures, requests)` of `version` over the trailing `window`, for the judge: a failure is
    /// a 5xx answer or a transport failure, as in [`BuiltinMetric::SuccessRate`].
    pub fn outcome_samples(&self, version: &str, window: Duration) -> (u64, u64) {
        self.outcome_samples_at(version, window, Instant::now())
    }

    /// [`Metrics::outcome_samples`] over the `window` that ends at `now`.
    pub fn outcome_samples_at(&self, version: &str, window: Duration, now: Instant) -> (u64, u64) {
        self.window_sum(version, window, now).map_or((0, 0), |sum| {
            let failures = (sum.server_errors + sum.transport_failures).min(sum.requests);
            (failures, sum.requests)
        })
    }

    /// The buckets of `version` in the `window` that ends at `now`, added up; `None` for a
    /// version never seen. The window is cut as in [`Metrics::query_at`].
    fn window_sum(&self, version: &str, window: Duration, now: Instant) -> Option<WindowSum> {
        let series = self.series(version)?;
        let now_offset = now.saturating_duration_since(self.epoch);
        let last_second = now_offset.as_secs();
        let first_second = now_offset
            .saturating_sub(window)
            .as_secs()
            .max(last_second.saturating_sub(RING_SECONDS as u64 - 1));
        let series = series.lock().unwrap_or_else(PoisonError::into_inner);
        Some(series.sum(first_second, last_second))
    }

    /// Lifetime totals of every version, sorted by version label.
    pub fn snapshot(&self) -> Vec<VersionTotals> {
        let series: Vec<(String, Arc<Mutex<VersionSeries>>)> = self
            .versions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(version, series)| (version.clone(), Arc::clone(series)))
            .collect();
        let mut totals: Vec<VersionTotals> = series
            .into_iter()
            .map(|(version, series)| {
                let series = series.lock().unwrap_or_else(PoisonError::into_inner);
                series.totals.to_public(version)
            })
            .collect();
        totals.sort_by(|left, right| left.version.cmp(&right.version));
        totals
    }

    /// Drop every version not in `versions`, so memory stays bounded as versions come and go.
    pub fn retain_versions(&self, versions: &[&str]) {
        self.versions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|version, _| versions.contains(&version.as_str()));
    }

    /// The series of `version`, if it has been seen.
    fn series(&self, version: &str) -> Option<Arc<Mutex<VersionSeries>>> {
        self.versions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(version)
            .cloned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<String> = self
            .versions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        formatter
            .debug_struct("Metrics")
            .field("versions", &versions)
            .field("unrouted", &self.unrouted_total())
            .finish_non_exhaustive()
    }
}

// === impl VersionSeries ===

/// Everything kept for one version.
struct VersionSeries {
    /// When the version was first recorded; request rates of young versions divide by this age.
    first_seen: Instant,
    /// One bucket per second, indexed by `second % RING_SECONDS`.
    ring: Box<[SecondBucket]>,
    /// Since the version was first seen.
    totals: Totals,
}

impl VersionSeries {
    fn new(first_seen: Instant) -> Self {
        VersionSeries {
            first_seen,
            ring: vec![SecondBucket::UNUSED; RING_SECONDS].into_boxed_slice(),
            totals: Totals::default(),
        }
    }

    fn add(&mut self, second: u64, outcome: RequestOutcome, latency: Duration) {
        let latency_bucket = latency_bucket(latency);
        self.totals.add(outcome, latency, latency_bucket);
        let slot = &mut self.ring[ring_index(second)];
        if slot.second != second {
            // A slot holding an older second is reused; one holding a newer second means this
            // record is older than the ring and only the totals keep it.
            if slot.second != UNUSED_SECOND && slot.second > second {
                return;
            }
            *slot = SecondBucket::UNUSED;
            slot.second = second;
        }
        slot.add(outcome, latency_bucket);
    }

    /// Add up the buckets of seconds `first..=last`.
    fn sum(&self, first: u64, last: u64) -> WindowSum {
        let mut sum = WindowSum::default();
        for second in first..=last {
            let slot = &self.ring[ring_index(second)];
            if slot.second == second {
                sum.add(slot);
            }
        }
        sum
    }
}

fn ring_index(second: u64) -> usize {
    // The remainder is below RING_SECONDS, so it fits in usize.
    (second % RING_SECONDS as u64) as usize
}

// === impl SecondBucket ===

/// What happened during one second. Counters are `u32` to keep the ring small; they saturate.
#[derive(Clone)]
struct SecondBucket {
    /// Which second since the epoch this slot holds, or [`UNUSED_SECOND`].
    second: u64,
    requests: u32,
    status_classes: [u32; STATUS_CLASSES],
    transport_failures: u32,
    latency: [u32; LATENCY_BUCKETS],
}

impl SecondBucket {
    const UNUSED: SecondBucket = SecondBucket {
        second: UNUSED_SECOND,
        requests: 0,
        status_classes: [0; STATUS_CLASSES],
        transport_failures: 0,
        latency: [0; LATENCY_BUCKETS],
    };

    fn add(&mut self, outcome: RequestOutcome, latency_bucket: usize) {
        self.requests = self.requests.saturating_add(1);
        match outcome {
            RequestOutcome::Status(status) => {
                if let Some(class) = status_class(status) {
                    self.status_classes[class] = self.status_classes[class].saturating_add(1);
                }
            }
            RequestOutcome::TransportFailure => {
                self.transport_failures = self.transport_failures.saturating_add(1);
            }
        }
        self.latency[latency_bucket] = self.latency[latency_bucket].saturating_add(1);
    }
}

/// Index 0 for 1xx up to 4 for 5xx; `None` for codes outside 100–599.
fn status_class(status: u16) -> Option<usize> {
    let class = usize::from(status / 100);
    (1..=STATUS_CLASSES).contains(&class).then(|| class - 1)
}

// === impl Totals ===

/// Lifetime counters of one version.
struct Totals {
    requests: u64,
    status_classes: [u64; STATUS_CLASSES],
    transport_failures: u64,
    latency_sum: Duration,
    latency: [u64; LATENCY_BUCKETS],
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            requests: 0,
            status_classes: [0; STATUS_CLASSES],
            transport_failures: 0,
            latency_sum: Duration::ZERO,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

impl Totals {
    fn add(&mut self, outcome: RequestOutcome, latency: Duration, latency_bucket: usize) {
        self.requests += 1;
        match outcome {
            RequestOutcome::Status(status) => {
                if let Some(class) = status_class(status) {
                    self.status_classes[class] += 1;
                }
            }
            RequestOutcome::TransportFailure => self.transport_failures += 1,
        }
        self.latency_sum = self.latency_sum.saturating_add(latency);
        self.latency[latency_bucket] += 1;
    }

    fn to_public(&self, version: String) -> VersionTotals {
        VersionTotals {
            version,
            requests: self.requests,
            status_classes: self.status_classes,
            transport_failures: self.transport_failures,
            latency_sum_seconds: self.latency_sum.as_secs_f64(),
            latency_buckets: self.latency.to_vec(),
        }
    }
}

// === impl WindowSum ===

/// The buckets of one query window added up.
struct WindowSum {
    requests: u64,
    server_errors: u64,
    transport_failures: u64,
    latency: [u64; LATENCY_BUCKETS],
}

impl Default for WindowSum {
    fn default() -> Self {
        WindowSum {
            requests: 0,
            server_errors: 0,
            transport_failures: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

impl WindowSum {
    fn add(&mut self, slot: &SecondBucket) {
        self.requests += u64::from(slot.requests);
        self.server_errors += u64::from(slot.status_classes[STATUS_CLASSES - 1]);
        self.transport_failures += u64::from(slot.transport_failures);
        for (total, count) in self.latency.iter_mut().zip(slot.latency.iter()) {
            *total += u64::from(*count);
        }
    }

    /// Share of requests that were neither 5xx nor transport failures; `requests` is non-zero.
    fn success_rate(&self) -> f64 {
        let failed = self.server_errors + self.transport_failures;
        self.requests.saturating_sub(failed) as f64 / self.requests as f64
    }

    /// The `quantile` (0–1) latency in seconds, interpolated linearly within its bucket.
    fn latency_quantile(&self, quantile: f64) -> f64 {
        let count: u64 = self.latency.iter().sum();
        if count == 0 {
            return f64::NAN;
        }
        let rank = quantile * count as f64;
        let mut below = 0u64;
        for (index, &in_bucket) in self.latency.iter().enumerate() {
            if in_bucket == 0 {
                continue;
            }
            if (below + in_bucket) as f64 >= rank {
                if index == LATENCY_BUCKETS - 1 {
                    // The overflow bucket has no upper edge; its lower edge is the honest answer.
                    return bucket_lower_seconds(index);
                }
                let fraction = ((rank - below as f64) / in_bucket as f64).clamp(0.0, 1.0);
                let lower = bucket_lower_seconds(index);
                let upper = bucket_upper_seconds(index);
                return lower + (upper - lower) * fraction;
            }
            below += in_bucket;
        }
        bucket_lower_seconds(LATENCY_BUCKETS - 1)
    }
}

// === latency buckets ===

/// The bucket a latency falls in.
fn latency_bucket(latency: Duration) -> usize {
    let relative = latency.as_secs_f64() / LATENCY_MIN.as_secs_f64();
    if relative < 1.0 {
        return 0;
    }
    let finite = (relative.log2() * LATENCY_BUCKETS_PER_OCTAVE).floor();
    if finite >= LATENCY_FINITE_BUCKETS as f64 {
        LATENCY_BUCKETS - 1
    } else {
        // `finite` is in 0..LATENCY_FINITE_BUCKETS here, so the cast is exact.
        finite as usize + 1
    }
}

/// The value that stands for every latency in bucket `index`, seconds: the geometric middle of
/// a finite bucket, half of [`LATENCY_MIN`] for the underflow bucket, and the lower edge of the
/// overflow bucket.
fn bucket_representative_seconds(index: usize) -> f64 {
    if index == 0 {
        LATENCY_MIN.as_secs_f64() / 2.0
    } else if index == LATENCY_BUCKETS - 1 {
        bucket_lower_seconds(index)
    } else {
        (bucket_lower_seconds(index) * bucket_upper_seconds(index)).sqrt()
    }
}

/// Lower edge of bucket `index`, seconds.
fn bucket_lower_seconds(index: usize) -> f64 {
    if index == 0 {
        0.0
    } else {
        finite_edge_seconds(index - 1)
    }
}

/// Upper edge of bucket `index` (not the overflow bucket), seconds.
fn bucket_upper_seconds(index: usize) -> f64 {
    finite_edge_seconds(index)
}

/// `LATENCY_MIN · 2^(edge / LATENCY_BUCKETS_PER_OCTAVE)`, seconds.
fn finite_edge_seconds(edge: usize) -> f64 {
    LATENCY_MIN.as_secs_f64() * (edge as f64 / LATENCY_BUCKETS_PER_OCTAVE).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: RequestOutcome = RequestOutcome::Status(200);
    const SERVER_ERROR: RequestOutcome = RequestOutcome::Status(503);
    const MS: Duration = Duration::from_millis(1);

    fn query(metrics: &Metrics, metric: BuiltinMetric, window_seconds: u64) -> QueryResult {
        metrics.query("v1", metric, Duration::from_secs(window_seconds))
    }

    #[tokio::test(start_paused = true)]
    async fn no_requests_give_nan_and_zero_samples() {
        let metrics = Metrics::new();
        for (_, metric) in BuiltinMetric::ALL {
            let result = query(&metrics, metric, 30);
            assert!(result.value.is_nan(), "{metric:?}");
            assert_eq!(result.samples, 0);
        }
        metrics.record("v2", OK, MS);
        assert!(query(&metrics, BuiltinMetric::SuccessRate, 30)
            .value
            .is_nan());
    }

    #[tokio::test(start_paused = true)]
    async fn success_and_error_rates_count_5xx_and_transport_failures() {
        let metrics = Metrics::new();
        for _ in 0..90 {
            metrics.record("v1", OK, MS);
        }
        for _ in 0..6 {
            metrics.record("v1", SERVER_ERROR, MS);
        }
        for _ in 0..4 {
            metrics.record("v1", RequestOutcome::TransportFailure, MS);
        }
        // 4xx is the client's fault, not the version's.
        for _ in 0..10 {
            metrics.record("v1", RequestOutcome::Status(404), MS);
        }
        let success = query(&metrics, BuiltinMetric::SuccessRate, 30);
        assert_eq!(success.samples, 110);
        assert!((success.value - 100.0 / 110.0).abs() < 1e-9, "{success:?}");
        let error = query(&metrics, BuiltinMetric::ErrorRate, 30);
        assert!((error.value - 10.0 / 110.0).abs() < 1e-9, "{error:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn window_only_sees_recent_seconds() {
        let metrics = Metrics::new();
        for _ in 0..10 {
            metrics.record("v1", OK, MS);
        }
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..10 {
            metrics.record("v1", SERVER_ERROR, MS);
        }
        let recent = query(&metrics, BuiltinMetric::SuccessRate, 30);
        assert_eq!((recent.value, recent.samples), (0.0, 10));
        let all = query(&metrics, BuiltinMetric::SuccessRate, 200);
        assert_eq!((all.value, all.samples), (0.5, 20));

        // Seconds after the last request leave the window as time passes.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(query(&metrics, BuiltinMetric::SuccessRate, 30).samples, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_includes_the_current_partial_second() {
        let metrics = Metrics::new();
        tokio::time::advance(Duration::from_millis(10_400)).await;
        metrics.record("v1", OK, MS);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(query(&metrics, BuiltinMetric::SuccessRate, 1).samples, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn request_rate_divides_by_the_window_or_the_younger_age() {
        let metrics = Metrics::new();
        // 20 requests a second for 10 seconds by a brand-new version.
        for _ in 0..10 {
            for _ in 0..20 {
                metrics.record("v1", OK, MS);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let young = query(&metrics, BuiltinMetric::RequestRate, 60);
        assert_eq!(young.samples, 200);
        assert!((young.value - 20.0).abs() < 1e-9, "{young:?}");

        // Keep it up for two more minutes: a 60 s window divides by 60.
        for _ in 0..120 {
            for _ in 0..20 {
                metrics.record("v1", OK, MS);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let steady = query(&metrics, BuiltinMetric::RequestRate, 60);
        // The window overlaps 61 one-second buckets, the last of which has just begun.
        assert_eq!(steady.samples, 1200);
        assert!((steady.value - 20.0).abs() < 1e-9, "{steady:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_percentiles_are_within_ten_percent() {
        let metrics = Metrics::new();
        for millis in 1..=1000 {
            metrics.record("v1", OK, Duration::from_millis(millis));
        }
        for (metric, expected_seconds) in [
            (BuiltinMetric::LatencyP50, 0.500),
            (BuiltinMetric::LatencyP95, 0.950),
            (BuiltinMetric::LatencyP99, 0.990),
        ] {
            let result = query(&metrics, metric, 30);
            assert_eq!(result.samples, 1000);
            let relative_error = (result.value - expected_seconds).abs() / expected_seconds;
            assert!(relative_error <= 0.10, "{metric:?}: {result:?}");
        }
    }

    #[test]
    fn every_latency_lands_in_a_bucket_whose_edges_hold_it() {
        let bounds = latency_bucket_upper_bounds();
        for micros in [
            0, 1, 99, 100, 101, 250, 1_000, 12_345, 999_999, 59_000_000, 70_000_000,
        ] {
            let latency = Duration::from_micros(micros);
            let index = latency_bucket(latency);
            let seconds = latency.as_secs_f64();
            assert!(
                seconds >= bucket_lower_seconds(index) * (1.0 - 1e-9),
                "{micros}"
            );
            assert!(seconds < bounds[index] * (1.0 + 1e-9), "{micros}");
        }
        assert_eq!(
            latency_bucket(Duration::from_secs(3600)),
            LATENCY_BUCKETS - 1
        );
        assert!(bounds[LATENCY_BUCKETS - 2] >= 60.0);
        // Adjacent edges differ by 2^(1/4), so a bucket's middle is within 9 % of its values.
        for pair in bounds[1..LATENCY_BUCKETS - 1].windows(2) {
            assert!((pair[1] / pair[0] - 2f64.powf(0.25)).abs() < 1e-9);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_ring_forgets_seconds_older_than_ten_minutes() {
        let metrics = Metrics::new();
        metrics.record("v1", SERVER_ERROR, MS);
        tokio::time::advance(Duration::from_secs(RING_SECONDS as u64 + 5)).await;
        metrics.record("v1", OK, MS);
        let result = query(&metrics, BuiltinMetric::SuccessRate, 3600);
        assert_eq!((result.value, result.samples), (1.0, 1));
        // A ten-minute window is still whole.
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(query(&metrics, BuiltinMetric::SuccessRate, 600).samples, 1);
        // The lifetime totals keep both.
        assert_eq!(metrics.snapshot()[0].requests, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_samples_are_one_per_request_within_ten_percent() {
        let metrics = Metrics::new();
        for millis in [5u64, 20, 20, 26, 400] {
            metrics.record("v1", OK, Duration::from_millis(millis));
        }
        metrics.record("v2", OK, Duration::from_millis(1));
        let samples = metrics.latency_samples("v1", Duration::from_secs(30));
        assert_eq!(samples.len(), 5);
        for (sample, millis) in samples.iter().zip([5.0, 20.0, 20.0, 26.0, 400.0]) {
            let relative_error = (sample * 1000.0 - millis).abs() / millis;
            assert!(relative_error <= 0.10, "{sample} for {millis} ms");
        }
        assert!(samples.windows(2).all(|pair| pair[0] <= pair[1]));
        assert!(metrics
            .latency_samples("unknown", Duration::from_secs(30))
            .is_empty());
        // Seconds that left the window leave the samples.
        tokio::time::advance(Duration::from_secs(40)).await;
        assert!(metrics
            .latency_samples("v1", Duration::from_secs(30))
            .is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn outcome_samples_count_5xx_and_transport_failures() {
        let metrics = Metrics::new();
        for _ in 0..95 {
            metrics.record("v1", OK, MS);
        }
        for _ in 0..3 {
            metrics.record("v1", SERVER_ERROR, MS);
        }
        metrics.record("v1", RequestOutcome::Status(404), MS);
        metrics.record("v1", RequestOutcome::TransportFailure, MS);
        assert_eq!(
            metrics.outcome_samples("v1", Duration::from_secs(30)),
            (4, 100)
        );
        assert_eq!(
            metrics.outcome_samples("v2", Duration::from_secs(30)),
            (0, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_and_retain_versions() {
        let metrics = Metrics::new();
        metrics.record("v2", RequestOutcome::Status(201), Duration::from_millis(20));
        metrics.record("v2", RequestOutcome::Status(502), Duration::from_millis(30));
        metrics.record(
            "v2",
            RequestOutcome::TransportFailure,
            Duration::from_millis(50),
        );
        metrics.record("v1", OK, MS);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.len(), 2);
        let v2 = &snapshot[1];
        assert_eq!(v2.version, "v2");
        assert_eq!(v2.requests, 3);
        assert_eq!(v2.status_classes, [0, 1, 0, 0, 1]);
        assert_eq!(v2.transport_failures, 1);
        assert!((v2.latency_sum_seconds - 0.1).abs() < 1e-9);
        assert_eq!(v2.latency_buckets.iter().sum::<u64>(), 3);

        metrics.retain_versions(&["v2", "v3"]);
        let versions: Vec<String> = metrics.snapshot().into_iter().map(|t| t.version).collect();
        assert_eq!(versions, ["v2"]);
        assert!(query(&metrics, BuiltinMetric::SuccessRate, 30)
            .value
            .is_nan());
    }
}
