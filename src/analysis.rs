//! STUB (helper E replaces this file): pure analysis rules (Argo's AnalysisRun semantics).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{AnalysisTemplate, Metric};
use crate::time::Timestamp;

/// Phase of a run or of one metric in it (Argo's AnalysisPhase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunPhase {
    /// Not started.
    Pending,
    /// Measuring.
    Running,
    /// Passed.
    Successful,
    /// Failed: the rollout aborts.
    Failed,
    /// The provider kept erroring: no evidence either way.
    Error,
    /// Neither condition matched often enough: a human decides.
    Inconclusive,
}

/// Phase of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeasurementPhase {
    /// The success condition held (or the failure condition did not).
    Successful,
    /// The failure condition held (or the success condition did not).
    Failed,
    /// Neither condition decided, or there was no evidence yet.
    Inconclusive,
    /// The provider could not answer.
    Error,
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
}

/// One metric inside a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRun {
    /// The metric with arguments substituted.
    pub metric: Metric,
    /// Its phase.
    pub phase: RunPhase,
    /// Kept measurements, oldest first.
    pub measurements: Vec<Measurement>,
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
}

/// What a provider answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A value, bound to `result` in conditions.
    Value(serde_json::Value),
    /// The provider answered but there is no evidence (no requests, empty result, NaN).
    NoData(String),
    /// The provider could not be asked or failed.
    Error(String),
}

/// Build a run from templates and argument values.
pub fn new_run(
    id: &str,
    service: &str,
    templates: &[&AnalysisTemplate],
    args: &BTreeMap<String, String>,
    now: Timestamp,
) -> Result<AnalysisRun, String> {
    let _ = (templates, args);
    Ok(AnalysisRun {
        id: id.to_owned(),
        service: service.to_owned(),
        started_at: now,
        phase: RunPhase::Running,
        message: None,
        metrics: vec![],
    })
}

/// When the next measurement of a running run is due.
pub fn next_due(run: &AnalysisRun) -> Option<Timestamp> {
    let _ = run;
    None
}

/// Indexes of the metrics due at `now`.
pub fn due_metrics(run: &AnalysisRun, now: Timestamp) -> Vec<usize> {
    let _ = (run, now);
    vec![]
}

/// Record a measurement of metric `index` and update the phases.
pub fn record(run: &mut AnalysisRun, index: usize, outcome: Outcome, now: Timestamp) {
    let _ = (run, index, outcome, now);
}

/// Check, without evaluating it, that a condition compiles: known functions, only `result`.
pub fn check_condition(expression: &str) -> Result<(), String> {
    let _ = expression;
    Ok(())
}

/// End a run that no longer gates anything.
pub fn terminate(run: &mut AnalysisRun, now: Timestamp, reason: &str) {
    let _ = (now, reason);
    run.phase = RunPhase::Successful;
}
