//! What the counters decide: a metric's phase from its limits (Argo's `assessMetricStatus`),
//! a run's phase from its metrics (`assessRunStatus`), and the messages that say why.

use super::{AnalysisRun, MetricRun, RunPhase, WAITING_FOR_EVIDENCE};
use crate::spec::Metric;
use crate::time::Timestamp;

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
pub(super) fn assess(metric_run: &MetricRun, terminating: bool) -> (RunPhase, Option<String>) {
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
pub(super) fn measurements(count: u32) -> String {
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
pub(super) fn effective_count(metric: &Metric) -> Option<u32> {
    match (metric.count, metric.interval) {
        (Some(count), Some(_)) => Some(count.max(1)),
        (_, None) => Some(1),
        (None, Some(_)) => None,
    }
}

/// Assess every metric still measuring as if the run were being terminated; `stopped_by` names
/// the metric whose verdict ended the run, if one did.
pub(super) fn stop_metrics(run: &mut AnalysisRun, stopped_by: Option<&str>) {
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
pub(super) fn combined_phase(metrics: &[MetricRun]) -> (RunPhase, Option<&MetricRun>) {
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
pub(super) fn conclude(run: &mut AnalysisRun, now: Timestamp) {
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
pub(super) fn run_message(
    run: &AnalysisRun,
    phase: RunPhase,
    decider: Option<&MetricRun>,
) -> String {
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
pub(super) fn with_dry_run_summary(run: &AnalysisRun, message: String) -> String {
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
pub(super) fn metric_message(metric_run: &MetricRun) -> String {
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

pub(super) fn end(run: &mut AnalysisRun, phase: RunPhase, message: String, now: Timestamp) {
    run.phase = phase;
    run.message = Some(message);
    run.ended_at = Some(now);
}
