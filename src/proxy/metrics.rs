//! STUB (helper B replaces this file): per-version request metrics.

use std::time::Duration;

use crate::spec::BuiltinMetric;

/// The answer to a built-in query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryResult {
    /// The figure (NaN when there were no requests).
    pub value: f64,
    /// How many requests it is based on.
    pub samples: u64,
}

/// Per-version counters and latency histograms in one-second buckets.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Metrics {}
    }

    /// Evaluate a built-in query for `version` over the trailing `window`.
    pub fn query(&self, version: &str, metric: BuiltinMetric, window: Duration) -> QueryResult {
        let _ = (version, metric, window);
        QueryResult {
            value: f64::NAN,
            samples: 0,
        }
    }
}
