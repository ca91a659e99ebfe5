//! Analysis runs: Argo Rollouts' AnalysisRun semantics as pure rules.
//!
//! This module owns what a measurement means and what a run of measurements decides: the verdict
//! of one measurement from its conditions (Argo's `EvaluateResult`), a metric's phase from its
//! counters and limits (`failureLimit`, `inconclusiveLimit`, `consecutiveErrorLimit`, `count`),
//! a run's phase from its metrics, and when the next measurement is due.
//!
//! It is pure: it never reads a clock (`now` is always an argument), performs no I/O and never
//! waits; providers (`crate::provider`) take the measurements and the shell schedules them.
//!
//! Where it deliberately differs from Argo:
//! - No evidence is never "bad": an answer without data (no requests in the window, NaN, an
//!   empty result) is an Inconclusive measurement, a provider failure or a condition that fails
//!   to evaluate is an Error measurement, and neither can make a metric Failed (Argo #1466).
//! - A metric can only be Successful on evidence: when its count is reached, or its run is
//!   terminated, with no Successful or Failed measurement, it ends Inconclusive (some answers
//!   had no data) or Error (every measurement errored), never Successful (Argo #4479).
//! - A metric waits for evidence (`waitForEvidence`, default [`DEFAULT_WAIT_FOR_EVIDENCE`]):
//!   from the run's start until its first answer with a value, or until that time has passed,
//!   a "no data" answer is recorded as an Inconclusive measurement that says it is waiting, but
//!   it counts neither towards `inconclusiveLimit` nor towards `count` (Argo #1466, #3503,
//!   PR #4864). `0s` restores Argo's behaviour.
//!
//! The full rules, with the sources in Argo, are in `docs/analysis.md`.

pub mod condition;
pub mod judge;
pub mod template;
pub mod value;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{AnalysisTemplate, Metric};
use crate::time::Timestamp;

pub use self::condition::MAX_CONDITION_BYTES;
pub use self::value::{format_float, number_value, to_expr_value, value_text};

/// How many measurements are kept per metric (Argo's default `measurementRetention`); the
/// counters in [`MetricRun`] keep counting past it.
pub const MEASUREMENT_RETENTION: usize = 10;
/// How soon a measurement that errored is retried (Argo's `DefaultErrorRetryInterval`), unless
/// the metric's interval is shorter.
pub const DEFAULT_ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest time between two measurements of a metric, so a zero interval cannot make the
/// shell measure in a busy loop.
pub const MIN_MEASUREMENT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a metric waits for its first evidence when its `waitForEvidence` is not set.
pub const DEFAULT_WAIT_FOR_EVIDENCE: Duration = Duration::from_secs(300);
/// How soon a metric without an interval asks again after a "no data" answer that came while it
/// was waiting for evidence (it has no interval to follow, and that answer did not count).
pub const EVIDENCE_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// What the message of a measurement taken while waiting for evidence starts with.
pub const WAITING_FOR_EVIDENCE: &str = "waiting for evidence";

/// Phase of a run or of one metric in it (Argo's AnalysisPhase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunPhase {
    /// Not started: no measurement taken yet.
    Pending,
    /// Measuring.
    Running,
    /// Passed.
    Successful,
    /// Failed: the rollout aborts.
    Failed,
    /// The provider kept erroring: no evidence either way.
    Error,
    /// Neither condition matched often enough, or there was no data: a human decides.
    Inconclusive,
}

impl RunPhase {
    /// Whether the phase is final: a run or metric in it never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunPhase::Successful | RunPhase::Failed | RunPhase::Error | RunPhase::Inconclusive
        )
    }

    /// The name shown to users, e.g. `Successful`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Pending => "Pending",
            RunPhase::Running => "Running",
            RunPhase::Successful => "Successful",
            RunPhase::Failed => "Failed",
            RunPhase::Error => "Error",
            RunPhase::Inconclusive => "Inconclusive",
        }
    }
}

/// Phase of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeasurementPhase {
    /// The success condition held (or the failure condition did not).
    Successful,
    /// The failure condition held (or the success condition did not).
    Failed,
    /// Neither condition decided, or there was no evidence.
    Inconclusive,
    /// The provider could not answer, or a condition could not be evaluated.
    Error,
}

impl MeasurementPhase {
    /// The name shown to users, e.g. `Successful`.
    pub fn as_str(self) -> &'static str {
        match self {
            MeasurementPhase::Successful => "Successful",
            MeasurementPhase::Failed => "Failed",
            MeasurementPhase::Inconclusive => "Inconclusive",
            MeasurementPhase::Error => "Error",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// When it was taken.
    pub at: Timestamp,
    /// Its verdict.
    pub phase: MeasurementPhase,
    /// The value as text, e.g. `[0.995]`.
    pub value: Option<String>,
    /// Why (errors, no data).
    pub message: Option<String>,
    /// What was asked, e.g. `builtin success_rate{version="2.0.0"}[30s]`.
    #[serde(default)]
    pub query: Option<String>,
}

/// One metric inside a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRun {
    /// The metric with arguments substituted.
    pub metric: Metric,
    /// Its phase.
    pub phase: RunPhase,
    /// Kept measurements, oldest first (at most the metric's `measurementRetention`, by default
    /// [`MEASUREMENT_RETENTION`]).
    pub measurements: Vec<Measurement>,
    /// Why it ended this way.
    #[serde(default)]
    pub message: Option<String>,
    /// Successful measurements ever taken.
    #[serde(default)]
    pub successful: u32,
    /// Failed measurements ever taken.
    #[serde(default)]
    pub failed: u32,
    /// Inconclusive measurements ever taken.
    #[serde(default)]
    pub inconclusive: u32,
    /// Error measurements ever taken.
    #[serde(default)]
    pub error: u32,
    /// Error measurements since the last measurement that was not an error.
    #[serde(default)]
    pub consecutive_error: u32,
    /// Successful measurements since the last one that was not successful (for
    /// `consecutiveSuccessLimit`).
    #[serde(default)]
    pub consecutive_success: u32,
    /// "No data" answers taken while the metric was waiting for evidence: kept and shown as
    /// Inconclusive measurements, but not counted in `inconclusive` nor towards `count`.
    #[serde(default)]
    pub awaiting_evidence: u32,
    /// When the metric first had evidence (an answer with a value); `None` while it has none.
    #[serde(default)]
    pub evidence_at: Option<Timestamp>,
}

impl MetricRun {
    /// A metric that has not been measured yet.
    pub fn new(metric: Metric) -> Self {
        MetricRun {
            metric,
            phase: RunPhase::Pending,
            measurements: Vec::new(),
            message: None,
            successful: 0,
            failed: 0,
            inconclusive: 0,
            error: 0,
            consecutive_error: 0,
            consecutive_success: 0,
            awaiting_evidence: 0,
            evidence_at: None,
        }
    }

    /// Measurements ever taken, errors and answers while waiting for evidence included.
    pub fn total(&self) -> u32 {
        self.successful
            .saturating_add(self.failed)
            .saturating_add(self.inconclusive)
            .saturating_add(self.error)
            .saturating_add(self.awaiting_evidence)
    }

    /// Measurements that count towards `count`: errors do not (as in Argo).
    pub fn taken(&self) -> u32 {
        self.successful
            .saturating_add(self.failed)
            .saturating_add(self.inconclusive)
    }

    /// How many measurements are kept: the metric's `measurementRetention`, or
    /// [`MEASUREMENT_RETENTION`] when it is not set or 0 (Argo: "setting this option to 0 would
    /// disable it").
    pub fn retention(&self) -> usize {
        self.metric
            .measurement_retention
            .filter(|limit| *limit > 0)
            .and_then(|limit| usize::try_from(limit).ok())
            .unwrap_or(MEASUREMENT_RETENTION)
    }

    /// Whether a "no data" answer at `now` would still be an answer while waiting for evidence:
    /// no evidence yet, and the metric's `waitForEvidence` since `started_at` has not passed.
    pub fn waiting_for_evidence(&self, started_at: Timestamp, now: Timestamp) -> bool {
        self.evidence_at.is_none() && now < evidence_deadline(started_at, &self.metric)
    }

    /// Count a measurement (Argo's counters) and keep it.
    fn add(&mut self, measurement: Measurement) {
        match measurement.phase {
            MeasurementPhase::Successful => self.successful = self.successful.saturating_add(1),
            MeasurementPhase::Failed => self.failed = self.failed.saturating_add(1),
            MeasurementPhase::Inconclusive => {
                self.inconclusive = self.inconclusive.saturating_add(1);
            }
            MeasurementPhase::Error => self.error = self.error.saturating_add(1),
        }
        if measurement.phase == MeasurementPhase::Error {
            self.consecutive_error = self.consecutive_error.saturating_add(1);
        } else {
            self.consecutive_error = 0;
        }
        if measurement.phase == MeasurementPhase::Successful {
            self.consecutive_success = self.consecutive_success.saturating_add(1);
        } else {
            self.consecutive_success = 0;
        }
        self.keep(measurement);
    }

    /// Keep a "no data" answer taken while waiting for evidence: shown, but counted apart.
    fn add_awaiting(&mut self, measurement: Measurement) {
        self.awaiting_evidence = self.awaiting_evidence.saturating_add(1);
        // The provider did answer, so a run of errors is broken, as Argo's Inconclusive does.
        self.consecutive_error = 0;
        self.keep(measurement);
    }

    /// Keep a measurement, trimming the oldest beyond the retention; counters are unaffected.
    fn keep(&mut self, measurement: Measurement) {
        self.measurements.push(measurement);
        let retention = self.retention();
        if self.measurements.len() > retention {
            let excess = self.measurements.len() - retention;
            self.measurements.drain(..excess);
        }
    }

    /// The message of the latest measurement, if it has one.
    fn last_message(&self) -> Option<&str> {
        self.measurements
            .last()
            .and_then(|measurement| measurement.message.as_deref())
    }

    /// `"{reason}: {last message}"`, or the reason alone.
    fn with_last_message(&self, reason: String) -> String {
        match self.last_message() {
            Some(message) => format!("{reason}: {message}"),
            None => reason,
        }
    }
}

/// An analysis run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRun {
    /// Unique id.
    pub id: String,
    /// Service it gates.
    pub service: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Overall phase.
    pub phase: RunPhase,
    /// Why it ended this way.
    pub message: Option<String>,
    /// Its metrics.
    pub metrics: Vec<MetricRun>,
    /// When it reached a terminal phase.
    #[serde(default)]
    pub ended_at: Option<Timestamp>,
}

/// What a provider answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A value, bound to `result` in conditions. Non-finite numbers are encoded as the strings
    /// `"NaN"`, `"+Inf"`, `"-Inf"` ([`number_value`]).
    Value(serde_json::Value),
    /// A value with a note that becomes the measurement's message, e.g. the judge's figures
    /// (`U=…, p=…`); judged exactly like [`Outcome::Value`].
    ValueWithNote(serde_json::Value, String),
    /// The provider answered but there is no evidence (no requests, empty result, NaN).
    NoData(String),
    /// The provider could not be asked or failed.
    Error(String),
}

/// Build a run from templates and argument values.
///
/// The templates' metrics are merged (their names must be unique across the templates), and
/// `{{args.name}}` in conditions and in the builtin provider's `version` is replaced by the
/// step's value, else the template's default. A run without metrics is Successful at once.
pub fn new_run(
    id: &str,
    service: &str,
    templates: &[&AnalysisTemplate],
    args: &BTreeMap<String, String>,
    now: Timestamp,
) -> Result<AnalysisRun, String> {
    let mut metrics = Vec::new();
    let mut defined_by: BTreeMap<&str, &str> = BTreeMap::new();
    for analysis_template in templates {
        let values = template::resolve_arguments(analysis_template, args)?;
        for metric in &analysis_template.metrics {
            if let Some(other) = defined_by.insert(&metric.name, &analysis_template.name) {
                return Err(format!(
                    "metric \"{}\" is defined by both analysis template \"{other}\" and \
                     analysis template \"{}\": metric names must be unique in a run",
                    metric.name, analysis_template.name
                ));
            }
            let metric = template::substitute_metric(analysis_template, metric, &values)?;
            metrics.push(MetricRun::new(metric));
        }
    }
    let mut run = AnalysisRun {
        id: id.to_owned(),
        service: service.to_owned(),
        started_at: now,
        phase: RunPhase::Running,
        message: None,
        metrics,
        ended_at: None,
    };
    if run.metrics.is_empty() {
        end(
            &mut run,
            RunPhase::Successful,
            "no metrics to measure".to_owned(),
            now,
        );
    }
    Ok(run)
}

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
fn metric_next_due(started_at: Timestamp, metric_run: &MetricRun) -> Option<Timestamp> {
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
fn evidence_deadline(started_at: Timestamp, metric: &Metric) -> Timestamp {
    started_at.plus(wait_for_evidence(metric))
}

/// The metric's `waitForEvidence`, or [`DEFAULT_WAIT_FOR_EVIDENCE`].
pub fn wait_for_evidence(metric: &Metric) -> Duration {
    metric
        .wait_for_evidence
        .unwrap_or(DEFAULT_WAIT_FOR_EVIDENCE)
}

/// Record a measurement of metric `index` and update the phases.
///
/// The caller measures when [`due_metrics`] says so; `record` does not check the time. It is
/// ignored when the run or the metric has already ended, or `index` is out of range.
pub fn record(run: &mut AnalysisRun, index: usize, outcome: Outcome, now: Timestamp) {
    record_with_query(run, index, outcome, None, now);
}

/// [`record`], keeping `query` (what was asked, from `provider::describe`) in the measurement.
///
/// A "no data" answer while the metric waits for evidence
/// ([`MetricRun::waiting_for_evidence`]) is kept as an Inconclusive measurement whose message
/// starts with [`WAITING_FOR_EVIDENCE`], and counts neither towards `inconclusiveLimit` nor
/// towards `count`.
pub fn record_with_query(
    run: &mut AnalysisRun,
    index: usize,
    outcome: Outcome,
    query: Option<String>,
    now: Timestamp,
) {
    if run.phase.is_terminal() {
        return;
    }
    let started_at = run.started_at;
    let Some(metric_run) = run.metrics.get_mut(index) else {
        return;
    };
    if metric_run.phase.is_terminal() {
        return;
    }
    let has_evidence = matches!(outcome, Outcome::Value(_) | Outcome::ValueWithNote(..));
    let waiting = !has_evidence && metric_run.waiting_for_evidence(started_at, now);
    let mut measurement = measurement_of(&metric_run.metric, outcome, now);
    measurement.query = query;
    if waiting && measurement.phase == MeasurementPhase::Inconclusive {
        let reason = measurement.message.take().unwrap_or_default();
        measurement.message = Some(format!("{WAITING_FOR_EVIDENCE}: {reason}"));
        metric_run.add_awaiting(measurement);
    } else {
        if has_evidence && metric_run.evidence_at.is_none() {
            metric_run.evidence_at = Some(now);
        }
        metric_run.add(measurement);
    }
    let (phase, message) = assess(metric_run, false);
    metric_run.phase = phase;
    metric_run.message = message.or_else(|| waiting_message(metric_run, started_at, now));
    conclude(run, now);
}

/// What a running metric that is waiting for evidence says, e.g. `waiting for evidence (2m30s
/// left of 5m): only 7 of 20 requests to canary 2.0.0 in the last 30s`.
fn waiting_message(
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
fn duration_text(duration: Duration) -> String {
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

/// End a running run early (e.g. its step was skipped by `promote`): the remaining metrics
/// stop, and the run ends as Argo's terminated runs do: Successful unless a metric that is not
/// a dry run failed, errored or was inconclusive (a metric with only errors or only no-data
/// answers is never Successful). The message starts with `terminated: {reason}`. A run that has ended stays
/// as it is.
pub fn terminate(run: &mut AnalysisRun, now: Timestamp, reason: &str) {
    if run.phase.is_terminal() {
        return;
    }
    stop_metrics(run, None);
    let (phase, decider) = combined_phase(&run.metrics);
    let message = match phase {
        RunPhase::Successful => format!("terminated: {reason}"),
        _ => format!("terminated: {reason}; {}", run_message(run, phase, decider)),
    };
    let message = with_dry_run_summary(run, message);
    end(run, phase, message, now);
}

/// The verdict of one measured value under `metric`'s conditions (Argo's `EvaluateResult`).
///
/// A condition that cannot be evaluated (a syntax error, a type error, nil where a number was
/// expected) is an `Err` with the reason: the caller records an Error measurement, never a
/// Failed one. A value is judged as the conditions say, NaN included (`isNaN(result[0])` can
/// accept it); providers report an answer without evidence as [`Outcome::NoData`] instead.
pub fn verdict(metric: &Metric, value: &serde_json::Value) -> Result<MeasurementPhase, String> {
    let result = to_expr_value(value);
    let evaluate = |kind: &str, condition: &Option<String>| -> Result<Option<bool>, String> {
        condition
            .as_deref()
            .map(|condition| {
                condition::evaluate(condition, &result)
                    .map_err(|error| format!("evaluating {kind} `{}`: {error}", shorten(condition)))
            })
            .transpose()
    };
    let success = evaluate("successCondition", &metric.success_condition)?;
    let failure = evaluate("failureCondition", &metric.failure_condition)?;
    Ok(match (success, failure) {
        (None, None) => MeasurementPhase::Successful,
        (Some(success), None) => {
            if success {
                MeasurementPhase::Successful
            } else {
                MeasurementPhase::Failed
            }
        }
        (None, Some(failure)) => {
            if failure {
                MeasurementPhase::Failed
            } else {
                MeasurementPhase::Successful
            }
        }
        (Some(success), Some(failure)) => {
            if failure {
                MeasurementPhase::Failed
            } else if success {
                MeasurementPhase::Successful
            } else {
                MeasurementPhase::Inconclusive
            }
        }
    })
}

/// Longest condition quoted in full in a message, in characters.
const QUOTED_CONDITION_CHARS: usize = 80;

/// A condition short enough to quote in a message: long ones are cut with `…`.
fn shorten(condition: &str) -> String {
    if condition.chars().count() <= QUOTED_CONDITION_CHARS {
        condition.to_owned()
    } else {
        let mut shortened: String = condition.chars().take(QUOTED_CONDITION_CHARS - 1).collect();
        shortened.push('…');
        shortened
    }
}

/// The measurement an outcome makes under `metric`.
fn measurement_of(metric: &Metric, outcome: Outcome, now: Timestamp) -> Measurement {
    let (phase, value, message) = match outcome {
        Outcome::Value(value) => {
            let text = value_text(&value);
            match verdict(metric, &value) {
                Ok(phase) => (phase, Some(text), None),
                Err(message) => (MeasurementPhase::Error, Some(text), Some(message)),
            }
        }
        Outcome::ValueWithNote(value, note) => {
            let text = value_text(&value);
            match verdict(metric, &value) {
                Ok(phase) => (phase, Some(text), Some(note)),
                Err(message) => (
                    MeasurementPhase::Error,
                    Some(text),
                    Some(format!("{message} ({note})")),
                ),
            }
        }
        Outcome::NoData(message) => (MeasurementPhase::Inconclusive, None, Some(message)),
        Outcome::Error(message) => (MeasurementPhase::Error, None, Some(message)),
    };
    Measurement {
        at: now,
        phase,
        value,
        message,
        query: None,
    }
}

/// A metric's phase from its counters (Argo's `assessMetricStatus`, v1.8), and why.
/// `terminating` says the run is being stopped, so a metric that would go on measuring ends now.
///
/// In order: `failureLimit` (Failed), `inconclusiveLimit` (Inconclusive) and
/// `consecutiveErrorLimit` (Error) are checked first; then `consecutiveSuccessLimit` reached
/// makes it Successful; otherwise it runs on until its count is reached or the run is
/// terminated. At that point a metric without evidence (no Successful or Failed measurement) is
/// Inconclusive or Error, never Successful (edgeroll). With a `consecutiveSuccessLimit` that
/// was not reached when the count is, the metric is Inconclusive if `failureLimit` also applies
/// (neither limit decided) and Failed if `failureLimit` is -1 (success was required) — Argo's
/// rule from PR #3970, documented in its "ConsecutiveSuccessLimit and FailureLimit" section. A
/// run terminated before the count ends Successful whatever `consecutiveSuccessLimit` says,
/// as Argo's terminated runs do.
fn assess(metric_run: &MetricRun, terminating: bool) -> (RunPhase, Option<String>) {
    let metric = &metric_run.metric;
    let total = metric_run.total();
    if total == 0 {
        return if terminating {
            (
                RunPhase::Successful,
                Some("stopped before its first measurement".to_owned()),
            )
        } else {
            (RunPhase::Pending, None)
        };
    }
    if let Ok(limit) = u32::try_from(metric.failure_limit) {
        if metric_run.failed > limit {
            let reason = format!(
                "{} of {} failed (limit {limit})",
                metric_run.failed,
                measurements(total)
            );
            // A provider's note (the judge's figures) says why; plain values have none.
            return (RunPhase::Failed, Some(metric_run.with_last_message(reason)));
        }
    }
    if metric_run.inconclusive > metric.inconclusive_limit {
        let reason = format!(
            "{} of {} inconclusive (limit {})",
            metric_run.inconclusive,
            measurements(total),
            metric.inconclusive_limit
        );
        return (
            RunPhase::Inconclusive,
            Some(metric_run.with_last_message(reason)),
        );
    }
    if metric_run.consecutive_error > metric.consecutive_error_limit {
        let reason = format!(
            "{} errored in a row (limit {})",
            measurements(metric_run.consecutive_error),
            metric.consecutive_error_limit
        );
        return (RunPhase::Error, Some(metric_run.with_last_message(reason)));
    }
    let success_limit = metric.consecutive_success_limit;
    if success_limit > 0 && metric_run.consecutive_success >= success_limit {
        return (
            RunPhase::Successful,
            Some(format!(
                "{} successful in a row (consecutiveSuccessLimit {success_limit}); {} of {} \
                 successful",
                measurements(metric_run.consecutive_success),
                metric_run.successful,
                measurements(total)
            )),
        );
    }
    let count_reached = effective_count(metric).is_some_and(|count| metric_run.taken() >= count);
    if !(count_reached || terminating) {
        return (RunPhase::Running, None);
    }
    if metric_run.successful == 0 && metric_run.failed == 0 {
        // No measurement carried evidence either way: never a pass, never a failure.
        return if metric_run.inconclusive > 0 {
            let reason = format!(
                "no evidence: {} of {} inconclusive",
                metric_run.inconclusive,
                measurements(total)
            );
            (
                RunPhase::Inconclusive,
                Some(metric_run.with_last_message(reason)),
            )
        } else if metric_run.awaiting_evidence > 0 {
            let reason = format!(
                "no evidence: stopped while {WAITING_FOR_EVIDENCE} ({} of {} without data)",
                metric_run.awaiting_evidence,
                measurements(total)
            );
            let last = metric_run.last_message().map(|message| {
                message
                    .strip_prefix(WAITING_FOR_EVIDENCE)
                    .and_then(|rest| rest.strip_prefix(": "))
                    .unwrap_or(message)
            });
            (
                RunPhase::Inconclusive,
                Some(match last {
                    Some(last) => format!("{reason}: {last}"),
                    None => reason,
                }),
            )
        } else {
            let reason = if total == 1 {
                "its only measurement errored".to_owned()
            } else {
                format!("all {total} measurements errored")
            };
            (RunPhase::Error, Some(metric_run.with_last_message(reason)))
        };
    }
    if count_reached && success_limit > 0 {
        let taken = measurements(metric_run.taken());
        return if metric.failure_limit >= 0 {
            (
                RunPhase::Inconclusive,
                Some(format!(
                    "consecutiveSuccessLimit {success_limit} not reached and failureLimit {} \
                     not exceeded in {taken}",
                    metric.failure_limit
                )),
            )
        } else {
            (
                RunPhase::Failed,
                Some(format!(
                    "consecutiveSuccessLimit {success_limit} not reached in {taken}"
                )),
            )
        };
    }
    (
        RunPhase::Successful,
        Some(format!(
            "{} of {} successful",
            metric_run.successful,
            measurements(total)
        )),
    )
}

/// `1 measurement`, `3 measurements`.
fn measurements(count: u32) -> String {
    if count == 1 {
        "1 measurement".to_owned()
    } else {
        format!("{count} measurements")
    }
}

/// How many measurements (errors excluded) make the metric complete: `count` with an interval,
/// one without (Argo refuses `count` above one without an interval; taking one measurement is
/// the reading that cannot leave a metric waiting forever); `None` runs until the run is
/// terminated.
fn effective_count(metric: &Metric) -> Option<u32> {
    match (metric.count, metric.interval) {
        (Some(count), Some(_)) => Some(count.max(1)),
        (_, None) => Some(1),
        (None, Some(_)) => None,
    }
}

/// Assess every metric still measuring as if the run were being terminated; `stopped_by` names
/// the metric whose verdict ended the run, if one did.
fn stop_metrics(run: &mut AnalysisRun, stopped_by: Option<&str>) {
    for metric_run in &mut run.metrics {
        if !metric_run.phase.is_terminal() {
            let (phase, message) = assess(metric_run, true);
            metric_run.phase = phase;
            metric_run.message = match (stopped_by, message) {
                (Some(decider), Some(message)) => Some(format!(
                    "stopped when metric \"{decider}\" ended the run; {message}"
                )),
                (Some(decider), None) => {
                    Some(format!("stopped when metric \"{decider}\" ended the run"))
                }
                (None, message) => message,
            };
        }
    }
}

/// The phase the metrics add up to (Argo's `assessRunStatus`): any Failed, else any Error,
/// else any Inconclusive among the metrics that are not dry runs; else Successful once every
/// metric, dry runs included, has ended; and the first metric with that phase. A dry-run
/// metric never decides the phase (Argo's `dryRun`).
fn combined_phase(metrics: &[MetricRun]) -> (RunPhase, Option<&MetricRun>) {
    let deciding = || {
        metrics
            .iter()
            .filter(|metric_run| !metric_run.metric.dry_run)
    };
    for phase in [RunPhase::Failed, RunPhase::Error, RunPhase::Inconclusive] {
        if let Some(decider) = deciding().find(|metric_run| metric_run.phase == phase) {
            return (phase, Some(decider));
        }
    }
    let all_ended = metrics
        .iter()
        .all(|metric_run| metric_run.phase.is_terminal());
    if all_ended && deciding().all(|metric_run| metric_run.phase == RunPhase::Successful) {
        return (RunPhase::Successful, deciding().next());
    }
    (RunPhase::Running, None)
}

/// End the run if its metrics add up to a terminal phase.
///
/// The metrics that ended on their own decide the phase; the ones still measuring are then
/// stopped (assessed as terminated, for display) without changing it: a metric cut short by
/// another one's verdict should not take the blame for the run.
fn conclude(run: &mut AnalysisRun, now: Timestamp) {
    let (phase, decider) = combined_phase(&run.metrics);
    if phase == RunPhase::Running {
        return;
    }
    let message = run_message(run, phase, decider);
    let stopped_by = decider.map(|decider| decider.metric.name.clone());
    stop_metrics(run, stopped_by.as_deref());
    let message = with_dry_run_summary(run, message);
    end(run, phase, message, now);
}

/// Why the run ended with `phase`, naming the metric that decided it.
fn run_message(run: &AnalysisRun, phase: RunPhase, decider: Option<&MetricRun>) -> String {
    let deciding = run
        .metrics
        .iter()
        .filter(|metric_run| !metric_run.metric.dry_run)
        .count();
    match (phase, decider) {
        (RunPhase::Successful, _) if deciding > 1 => {
            format!("all {deciding} metrics successful")
        }
        (RunPhase::Successful, None) => {
            "only dry-run metrics, which cannot fail the run".to_owned()
        }
        (_, Some(decider)) => metric_message(decider),
        (_, None) => phase.as_str().to_owned(),
    }
}

/// `message` followed by what the dry-run metrics concluded (Argo's `DryRunSummary`), e.g.
/// `…; dry run: 2 metrics, 1 successful, 1 failed (metric "errors-4xx" failed: …)`; `message`
/// alone when the run has no dry-run metric.
fn with_dry_run_summary(run: &AnalysisRun, message: String) -> String {
    let dry: Vec<&MetricRun> = run
        .metrics
        .iter()
        .filter(|metric_run| metric_run.metric.dry_run)
        .collect();
    if dry.is_empty() {
        return message;
    }
    let mut counts = Vec::new();
    for phase in [
        RunPhase::Successful,
        RunPhase::Failed,
        RunPhase::Error,
        RunPhase::Inconclusive,
        RunPhase::Running,
        RunPhase::Pending,
    ] {
        let count = dry
            .iter()
            .filter(|metric_run| metric_run.phase == phase)
            .count();
        if count > 0 {
            counts.push(format!("{count} {}", phase.as_str().to_lowercase()));
        }
    }
    let details: Vec<String> = dry
        .iter()
        .filter(|metric_run| metric_run.phase != RunPhase::Successful)
        .map(|metric_run| metric_message(metric_run))
        .collect();
    let metrics_text = if dry.len() == 1 {
        "1 metric".to_owned()
    } else {
        format!("{} metrics", dry.len())
    };
    let mut summary = format!("{message}; dry run: {metrics_text}, {}", counts.join(", "));
    if !details.is_empty() {
        summary.push_str(&format!(" ({})", details.join("; ")));
    }
    summary
}

/// `metric "success-rate" failed: 2 of 3 measurements failed (limit 1)`.
fn metric_message(metric_run: &MetricRun) -> String {
    let verb = match metric_run.phase {
        RunPhase::Successful => "succeeded",
        RunPhase::Failed => "failed",
        RunPhase::Error => "errored",
        RunPhase::Inconclusive => "was inconclusive",
        RunPhase::Pending | RunPhase::Running => "is running",
    };
    match &metric_run.message {
        Some(message) => format!("metric \"{}\" {verb}: {message}", metric_run.metric.name),
        None => format!("metric \"{}\" {verb}", metric_run.metric.name),
    }
}

fn end(run: &mut AnalysisRun, phase: RunPhase, message: String, now: Timestamp) {
    run.phase = phase;
    run.message = Some(message);
    run.ended_at = Some(now);
}

/// Check, without evaluating it, that a condition compiles: known functions, only `result`.
///
/// The message says what is wrong, e.g. `unknown function "isNan" (did you mean "isNaN"?)`.
pub fn check_condition(expression: &str) -> Result<(), String> {
    condition::check(expression).map_err(|error| error.to_string())
}
