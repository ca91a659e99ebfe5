//! When measurements are due: `initialDelay`, `interval`, retries after errors, and the wait
//! for evidence. Pure: `now` is always an argument.

use std::time::Duration;

use super::{
    AnalysisRun, MeasurementPhase, MetricRun, RunPhase, DEFAULT_ERROR_RETRY_INTERVAL,
    DEFAULT_WAIT_FOR_EVIDENCE, EVIDENCE_RETRY_INTERVAL, MIN_MEASUREMENT_INTERVAL,
    WAITING_FOR_EVIDENCE,
};
use crate::spec::Metric;
use crate::time::Timestamp;

/// When the next measurement of a running run is due; `None` once the run has ended.
pub fn next_due(run: &AnalysisRun) -> Option<Timestamp> {
    if run.phase.is_terminal() {
        return None;
    }
    run.metrics
        .iter()
        .filter_map(|metric_run| metric_next_due(run.started_at, metric_run))
        .min()
}

/// Indexes of the metrics due at `now`.
pub fn due_metrics(run: &AnalysisRun, now: Timestamp) -> Vec<usize> {
    if run.phase.is_terminal() {
        return Vec::new();
    }
    run.metrics
        .iter()
        .enumerate()
        .filter(|(_, metric_run)| {
            metric_next_due(run.started_at, metric_run).is_some_and(|due| due <= now)
        })
        .map(|(index, _)| index)
        .collect()
}

/// When `metric_run`'s next measurement is due: `initialDelay` after the run started, then
/// `interval` after the previous one (sooner after an error). A metric without an interval asks
/// again [`EVIDENCE_RETRY_INTERVAL`] after a "no data" answer that did not count because it was
/// waiting for evidence.
pub(super) fn metric_next_due(started_at: Timestamp, metric_run: &MetricRun) -> Option<Timestamp> {
    if metric_run.phase.is_terminal() {
        return None;
    }
    let metric = &metric_run.metric;
    let interval = metric
        .interval
        .map(|interval| interval.max(MIN_MEASUREMENT_INTERVAL));
    match metric_run.measurements.last() {
        None => Some(started_at.plus(metric.initial_delay.unwrap_or(Duration::ZERO))),
        Some(last) if last.phase == MeasurementPhase::Error => {
            let retry = interval.map_or(DEFAULT_ERROR_RETRY_INTERVAL, |interval| {
                interval.min(DEFAULT_ERROR_RETRY_INTERVAL)
            });
            Some(last.at.plus(retry))
        }
        // Without an interval a metric that is still measuring after a counted answer has
        // reached its count of one; only an answer while waiting for evidence leaves it here.
        Some(last) => Some(last.at.plus(interval.unwrap_or(EVIDENCE_RETRY_INTERVAL))),
    }
}

/// The end of `metric`'s wait for evidence in a run that started at `started_at`.
pub(super) fn evidence_deadline(started_at: Timestamp, metric: &Metric) -> Timestamp {
    started_at.plus(wait_for_evidence(metric))
}

/// The metric's `waitForEvidence`, or [`DEFAULT_WAIT_FOR_EVIDENCE`].
pub fn wait_for_evidence(metric: &Metric) -> Duration {
    metric
        .wait_for_evidence
        .unwrap_or(DEFAULT_WAIT_FOR_EVIDENCE)
}

/// What a running metric that is waiting for evidence says, e.g. `waiting for evidence (2m30s
/// left of 5m): only 7 of 20 requests to canary 2.0.0 in the last 30s`.
pub(super) fn waiting_message(
    metric_run: &MetricRun,
    started_at: Timestamp,
    now: Timestamp,
) -> Option<String> {
    if metric_run.phase != RunPhase::Running || !metric_run.waiting_for_evidence(started_at, now) {
        return None;
    }
    let left = evidence_deadline(started_at, &metric_run.metric).since(now);
    let last = metric_run
        .measurements
        .last()
        .and_then(|measurement| measurement.message.as_deref())
        .and_then(|message| message.strip_prefix(WAITING_FOR_EVIDENCE))
        .and_then(|rest| rest.strip_prefix(": "));
    let head = format!(
        "{WAITING_FOR_EVIDENCE} ({} left of {})",
        duration_text(left),
        duration_text(wait_for_evidence(&metric_run.metric))
    );
    Some(match last {
        Some(reason) => format!("{head}: {reason}"),
        None => head,
    })
}

/// A duration as Prometheus writes them: `30s`, `4m10s`, `500ms`.
pub(super) fn duration_text(duration: Duration) -> String {
    // Whole seconds read better in a countdown; below one second the milliseconds matter.
    let shown = if duration >= Duration::from_secs(1) {
        Duration::from_secs(duration.as_secs())
    } else {
        duration
    };
    humantime::format_duration(shown)
        .to_string()
        .split_whitespace()
        .collect()
}
