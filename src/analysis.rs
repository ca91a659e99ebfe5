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

mod assess;
pub mod condition;
pub mod judge;
mod schedule;
pub mod template;
pub mod value;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{AnalysisTemplate, Metric};
use crate::time::Timestamp;

use self::assess::{
    assess, combined_phase, conclude, end, run_message, stop_metrics, with_dry_run_summary,
};
pub use self::condition::MAX_CONDITION_BYTES;
pub use self::schedule::{due_metrics, next_due, wait_for_evidence};
use self::schedule::{evidence_deadline, waiting_message};
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

/// Record a measurement of metric `index` and update the phases: a round of one answer
/// ([`record_round`]).
///
/// The caller measures when [`due_metrics`] says so; `record` does not check the time. It is
/// ignored when the run or the metric has already ended, or `index` is out of range.
pub fn record(run: &mut AnalysisRun, index: usize, outcome: Outcome, now: Timestamp) {
    record_with_query(run, index, outcome, None, now);
}

/// [`record`], keeping `query` (what was asked, from `provider::describe`) in the measurement.
pub fn record_with_query(
    run: &mut AnalysisRun,
    index: usize,
    outcome: Outcome,
    query: Option<String>,
    now: Timestamp,
) {
    record_round(
        run,
        vec![Answer {
            index,
            outcome,
            query,
        }],
        now,
    );
}

/// One provider answer for metric `index` of a run, with what was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The metric's index in [`AnalysisRun::metrics`].
    pub index: usize,
    /// What the provider answered.
    pub outcome: Outcome,
    /// What was asked (`provider::describe`), kept in the measurement.
    pub query: Option<String>,
}

/// Record a round of answers (every metric that was due at the same instant) and only then
/// decide the run: its phase is the worst of its metrics' phases (Failed over Error over
/// Inconclusive, Argo's `IsWorst`), whatever the template order and whatever order the answers
/// are given in. Metrics that were not in the round and are still measuring are then stopped.
///
/// A "no data" answer while the metric waits for evidence
/// ([`MetricRun::waiting_for_evidence`]) is kept as an Inconclusive measurement whose message
/// starts with [`WAITING_FOR_EVIDENCE`], and counts neither towards `inconclusiveLimit` nor
/// towards `count`. Answers for a metric that has ended, or an index out of range, are ignored;
/// a second answer for the same metric in one round is recorded after the first. Nothing is
/// recorded once the run has ended.
pub fn record_round(run: &mut AnalysisRun, answers: Vec<Answer>, now: Timestamp) {
    if run.phase.is_terminal() {
        return;
    }
    let started_at = run.started_at;
    for answer in answers {
        let Some(metric_run) = run.metrics.get_mut(answer.index) else {
            continue;
        };
        if metric_run.phase.is_terminal() {
            continue;
        }
        let outcome = answer.outcome;
        let has_evidence = matches!(outcome, Outcome::Value(_) | Outcome::ValueWithNote(..));
        let waiting = !has_evidence && metric_run.waiting_for_evidence(started_at, now);
        let mut measurement = measurement_of(&metric_run.metric, outcome, now);
        measurement.query = answer.query;
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
    }
    conclude(run, now);
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

/// Check, without evaluating it, that a condition compiles: known functions, only `result`.
///
/// The message says what is wrong, e.g. `unknown function "isNan" (did you mean "isNaN"?)`.
pub fn check_condition(expression: &str) -> Result<(), String> {
    condition::check(expression).map_err(|error| error.to_string())
}
