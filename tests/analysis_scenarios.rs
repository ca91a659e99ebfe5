//! Scenario tables for analysis runs: a metric definition and a sequence of outcomes with times
//! in, the measurement phases, metric phase, run phase and next due time out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use edgeroll::analysis::{
    self, new_run, next_due, number_value, record, terminate, AnalysisRun, Outcome, RunPhase,
    MEASUREMENT_RETENTION,
};
use edgeroll::spec::{
    AnalysisTemplate, BuiltinMetric, BuiltinQuery, Metric, Provider, TemplateArg,
    DEFAULT_CONSECUTIVE_ERROR_LIMIT,
};
use edgeroll::time::Timestamp;
use expect_test::{expect, Expect};
use serde_json::json;

const START: Timestamp = Timestamp::from_millis(1_795_773_600_000);

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// A metric with Argo's defaults: one measurement, `result[0] >= 0.95`, no failures tolerated,
/// and no waiting for evidence (Argo counts "no data" at once; waiting has its own scenarios).
fn metric(name: &str) -> Metric {
    Metric {
        name: name.to_owned(),
        interval: None,
        initial_delay: None,
        count: None,
        success_condition: Some("result[0] >= 0.95".to_owned()),
        failure_condition: None,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        consecutive_success_limit: 0,
        dry_run: false,
        measurement_retention: None,
        wait_for_evidence: Some(Duration::ZERO),
        provider: Provider::Builtin(BuiltinQuery {
            query: BuiltinMetric::SuccessRate,
            version: "canary".to_owned(),
            window: secs(30),
            min_samples: 1,
        }),
    }
}

fn template(name: &str, metrics: Vec<Metric>) -> AnalysisTemplate {
    AnalysisTemplate {
        name: name.to_owned(),
        args: vec![],
        metrics,
    }
}

fn value(x: f64) -> Outcome {
    Outcome::Value(json!([number_value(x)]))
}

fn no_data() -> Outcome {
    Outcome::NoData("no requests to canary 2.0.0 in the last 30s".to_owned())
}

fn error() -> Outcome {
    Outcome::Error("connection refused".to_owned())
}

/// One step of a scenario, at a number of seconds after the run started.
enum Step {
    /// Record an outcome for a metric (by index).
    Record(u64, usize, Outcome),
    /// Terminate the run.
    Terminate(u64, &'static str),
}

fn start(metrics: Vec<Metric>) -> AnalysisRun {
    let templates = template("t", metrics);
    match new_run("run-1", "web", &[&templates], &BTreeMap::new(), START) {
        Ok(run) => run,
        Err(message) => panic!("new_run failed: {message}"),
    }
}

fn seconds_after_start(at: Timestamp) -> u64 {
    at.since(START).as_secs()
}

/// Drive a run through `steps` and describe every step on one line.
fn trace(metrics: Vec<Metric>, steps: Vec<Step>) -> String {
    let mut run = start(metrics);
    let mut text = String::new();
    let due = next_due(&run).map_or("-".to_owned(), |at| format!("{}s", seconds_after_start(at)));
    let _ = writeln!(text, "start: run {:?}, next {due}", run.phase);
    for step in steps {
        match step {
            Step::Record(at_seconds, index, outcome) => {
                let now = START.plus(secs(at_seconds));
                let was_due = analysis::due_metrics(&run, now).contains(&index);
                let total_before = run.metrics[index].total();
                record(&mut run, index, outcome, now);
                let metric_run = &run.metrics[index];
                let measurement = metric_run.measurements.last();
                let recorded = metric_run.total() > total_before;
                let shown =
                    measurement
                        .filter(|_| recorded)
                        .map_or("ignored".to_owned(), |measurement| {
                            let mut shown = format!("{:?}", measurement.phase);
                            if let Some(value) = &measurement.value {
                                let _ = write!(shown, " {value}");
                            }
                            if let Some(message) = &measurement.message {
                                let _ = write!(shown, " ({message})");
                            }
                            shown
                        });
                let due = next_due(&run)
                    .map_or("-".to_owned(), |at| format!("{}s", seconds_after_start(at)));
                let _ = writeln!(
                    text,
                    "{at_seconds:>3}s {}{}: {shown} | metric {:?} | run {:?} | next {due}",
                    metric_run.metric.name,
                    if was_due { "" } else { " (not due)" },
                    metric_run.phase,
                    run.phase,
                );
            }
            Step::Terminate(at_seconds, reason) => {
                terminate(&mut run, START.plus(secs(at_seconds)), reason);
                let _ = writeln!(text, "{at_seconds:>3}s terminate: run {:?}", run.phase);
            }
        }
    }
    for metric_run in &run.metrics {
        // Counters that only some scenarios use are shown when they are not zero.
        let mut extra = String::new();
        if metric_run.consecutive_success > 0 {
            let _ = write!(
                extra,
                ", consecutive success {}",
                metric_run.consecutive_success
            );
        }
        if metric_run.awaiting_evidence > 0 {
            let _ = write!(
                extra,
                ", awaiting evidence {}",
                metric_run.awaiting_evidence
            );
        }
        let _ = writeln!(
            text,
            "metric {}: {:?} (successful {}, failed {}, inconclusive {}, error {}, consecutive error {}{extra}, kept {}){}",
            metric_run.metric.name,
            metric_run.phase,
            metric_run.successful,
            metric_run.failed,
            metric_run.inconclusive,
            metric_run.error,
            metric_run.consecutive_error,
            metric_run.measurements.len(),
            metric_run
                .message
                .as_ref()
                .map_or(String::new(), |message| format!(": {message}")),
        );
    }
    let _ = write!(
        text,
        "run: {:?}: {}",
        run.phase,
        run.message.as_deref().unwrap_or("-")
    );
    text
}

fn check(metrics: Vec<Metric>, steps: Vec<Step>, expected: Expect) {
    expected.assert_eq(&trace(metrics, steps));
}

use Step::{Record, Terminate};

#[test]
fn count_reached_without_failures_is_successful() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(3),
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.99)),
            Record(10, 0, value(0.96)),
            Record(20, 0, value(0.995)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [0.99] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.96] | metric Running | run Running | next 20s
             20s success-rate: Successful [0.995] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 3, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 3, kept 3): 3 of 3 measurements successful
            run: Successful: metric "success-rate" succeeded: 3 of 3 measurements successful"#]],
    );
}

#[test]
fn failures_above_the_failure_limit_fail_the_run() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(5),
            failure_limit: 1,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.5)),
            Record(10, 0, value(0.99)),
            Record(20, 0, value(0.9)),
            Record(30, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.5] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Failed [0.9] | metric Failed | run Failed | next -
             30s success-rate (not due): ignored | metric Failed | run Failed | next -
            metric success-rate: Failed (successful 1, failed 2, inconclusive 0, error 0, consecutive error 0, kept 3): 2 of 3 measurements failed (limit 1)
            run: Failed: metric "success-rate" failed: 2 of 3 measurements failed (limit 1)"#]],
    );
}

#[test]
fn failure_limit_minus_one_never_fails() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(3),
            failure_limit: -1,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.1)),
            Record(10, 0, value(0.2)),
            Record(20, 0, value(0.3)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.1] | metric Running | run Running | next 10s
             10s success-rate: Failed [0.2] | metric Running | run Running | next 20s
             20s success-rate: Failed [0.3] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 0, failed 3, inconclusive 0, error 0, consecutive error 0, kept 3): 0 of 3 measurements successful
            run: Successful: metric "success-rate" succeeded: 0 of 3 measurements successful"#]],
    );
}

#[test]
fn neither_condition_matching_beyond_the_inconclusive_limit_is_inconclusive() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(4),
            success_condition: Some("result[0] >= 0.95".to_owned()),
            failure_condition: Some("result[0] < 0.5".to_owned()),
            inconclusive_limit: 1,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.7)),
            Record(10, 0, value(0.99)),
            Record(20, 0, value(0.8)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive [0.7] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Inconclusive [0.8] | metric Inconclusive | run Inconclusive | next -
            metric success-rate: Inconclusive (successful 1, failed 0, inconclusive 2, error 0, consecutive error 0, kept 3): 2 of 3 measurements inconclusive (limit 1)
            run: Inconclusive: metric "success-rate" was inconclusive: 2 of 3 measurements inconclusive (limit 1)"#]],
    );
}

#[test]
fn no_data_is_inconclusive_never_failed() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(3),
            ..metric("success-rate")
        }],
        vec![Record(0, 0, no_data())],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Inconclusive | run Inconclusive | next -
            metric success-rate: Inconclusive (successful 0, failed 0, inconclusive 1, error 0, consecutive error 0, kept 1): 1 of 1 measurement inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s
            run: Inconclusive: metric "success-rate" was inconclusive: 1 of 1 measurement inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s"#]],
    );
}

#[test]
fn no_data_within_the_inconclusive_limit_keeps_measuring() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(3),
            inconclusive_limit: 2,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, no_data()),
            Record(10, 0, no_data()),
            Record(20, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 20s
             20s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 1, failed 0, inconclusive 2, error 0, consecutive error 0, consecutive success 1, kept 3): 1 of 3 measurements successful
            run: Successful: metric "success-rate" succeeded: 1 of 3 measurements successful"#]],
    );
}

#[test]
fn only_no_data_up_to_the_count_is_never_successful() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(2),
            inconclusive_limit: 5,
            ..metric("success-rate")
        }],
        vec![Record(0, 0, no_data()), Record(10, 0, no_data())],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Inconclusive | run Inconclusive | next -
            metric success-rate: Inconclusive (successful 0, failed 0, inconclusive 2, error 0, consecutive error 0, kept 2): no evidence: 2 of 2 measurements inconclusive: no requests to canary 2.0.0 in the last 30s
            run: Inconclusive: metric "success-rate" was inconclusive: no evidence: 2 of 2 measurements inconclusive: no requests to canary 2.0.0 in the last 30s"#]],
    );
}

#[test]
fn consecutive_errors_beyond_the_default_limit_of_four_are_an_error() {
    check(
        vec![Metric {
            interval: Some(secs(30)),
            count: Some(3),
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, error()),
            Record(10, 0, error()),
            Record(20, 0, error()),
            Record(30, 0, error()),
            Record(40, 0, error()),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Error (connection refused) | metric Running | run Running | next 10s
             10s success-rate: Error (connection refused) | metric Running | run Running | next 20s
             20s success-rate: Error (connection refused) | metric Running | run Running | next 30s
             30s success-rate: Error (connection refused) | metric Running | run Running | next 40s
             40s success-rate: Error (connection refused) | metric Error | run Error | next -
            metric success-rate: Error (successful 0, failed 0, inconclusive 0, error 5, consecutive error 5, kept 5): 5 measurements errored in a row (limit 4): connection refused
            run: Error: metric "success-rate" errored: 5 measurements errored in a row (limit 4): connection refused"#]],
    );
}

#[test]
fn a_measurement_between_errors_resets_the_consecutive_count() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(2),
            consecutive_error_limit: 1,
            consecutive_success_limit: 0,
            dry_run: false,
            measurement_retention: None,
            wait_for_evidence: None,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, error()),
            Record(10, 0, value(0.99)),
            Record(20, 0, error()),
            Record(30, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Error (connection refused) | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Error (connection refused) | metric Running | run Running | next 30s
             30s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 2, failed 0, inconclusive 0, error 2, consecutive error 0, consecutive success 1, kept 4): 2 of 4 measurements successful
            run: Successful: metric "success-rate" succeeded: 2 of 4 measurements successful"#]],
    );
}

#[test]
fn errors_are_retried_sooner_than_a_long_interval_and_never_sooner_than_a_short_one() {
    check(
        vec![
            Metric {
                interval: Some(secs(60)),
                count: Some(2),
                ..metric("slow")
            },
            Metric {
                interval: Some(secs(5)),
                count: Some(2),
                ..metric("fast")
            },
        ],
        vec![
            Record(0, 0, error()),
            Record(0, 1, error()),
            Record(5, 1, value(0.99)),
            Record(10, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s slow: Error (connection refused) | metric Running | run Running | next 0s
              0s fast: Error (connection refused) | metric Running | run Running | next 5s
              5s fast: Successful [0.99] | metric Running | run Running | next 10s
             10s slow: Successful [0.99] | metric Running | run Running | next 10s
            metric slow: Running (successful 1, failed 0, inconclusive 0, error 1, consecutive error 0, consecutive success 1, kept 2)
            metric fast: Running (successful 1, failed 0, inconclusive 0, error 1, consecutive error 0, consecutive success 1, kept 2)
            run: Running: -"#]],
    );
}

#[test]
fn without_an_interval_one_measurement_decides_after_the_initial_delay() {
    check(
        vec![Metric {
            initial_delay: Some(secs(30)),
            ..metric("success-rate")
        }],
        vec![Record(30, 0, value(0.99)), Record(40, 0, value(0.5))],
        expect![[r#"
            start: run Running, next 30s
             30s success-rate: Successful [0.99] | metric Successful | run Successful | next -
             40s success-rate (not due): ignored | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 1, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 1, kept 1): 1 of 1 measurement successful
            run: Successful: metric "success-rate" succeeded: 1 of 1 measurement successful"#]],
    );
}

#[test]
fn without_an_interval_a_count_cannot_leave_the_metric_waiting() {
    check(
        vec![Metric {
            count: Some(3),
            ..metric("success-rate")
        }],
        vec![Record(0, 0, value(0.99))],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 1, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 1, kept 1): 1 of 1 measurement successful
            run: Successful: metric "success-rate" succeeded: 1 of 1 measurement successful"#]],
    );
}

#[test]
fn without_an_interval_an_error_is_retried() {
    check(
        vec![metric("success-rate")],
        vec![Record(0, 0, error()), Record(10, 0, value(0.99))],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Error (connection refused) | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 1, failed 0, inconclusive 0, error 1, consecutive error 0, consecutive success 1, kept 2): 1 of 2 measurements successful
            run: Successful: metric "success-rate" succeeded: 1 of 2 measurements successful"#]],
    );
}

#[test]
fn an_interval_without_a_count_runs_until_terminated_and_keeps_the_last_ten() {
    let steps: Vec<Step> = (0..12)
        .map(|n| Record(n * 10, 0, value(0.99)))
        .chain([Terminate(125, "step skipped by promote")])
        .collect();
    check(
        vec![Metric {
            interval: Some(secs(10)),
            ..metric("success-rate")
        }],
        steps,
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [0.99] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Successful [0.99] | metric Running | run Running | next 30s
             30s success-rate: Successful [0.99] | metric Running | run Running | next 40s
             40s success-rate: Successful [0.99] | metric Running | run Running | next 50s
             50s success-rate: Successful [0.99] | metric Running | run Running | next 60s
             60s success-rate: Successful [0.99] | metric Running | run Running | next 70s
             70s success-rate: Successful [0.99] | metric Running | run Running | next 80s
             80s success-rate: Successful [0.99] | metric Running | run Running | next 90s
             90s success-rate: Successful [0.99] | metric Running | run Running | next 100s
            100s success-rate: Successful [0.99] | metric Running | run Running | next 110s
            110s success-rate: Successful [0.99] | metric Running | run Running | next 120s
            125s terminate: run Successful
            metric success-rate: Successful (successful 12, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 12, kept 10): 12 of 12 measurements successful
            run: Successful: terminated: step skipped by promote"#]],
    );
}

#[test]
fn retention_keeps_counters_so_limits_stay_right() {
    // Twelve successes, then failures: the oldest measurements are trimmed, the counters are not.
    let steps: Vec<Step> = (0..12)
        .map(|n| Record(n * 10, 0, value(0.99)))
        .chain([Record(120, 0, value(0.1)), Record(130, 0, value(0.1))])
        .collect();
    let mut run = start(vec![Metric {
        interval: Some(secs(10)),
        failure_limit: 1,
        ..metric("success-rate")
    }]);
    for step in steps {
        if let Record(at, index, outcome) = step {
            record(&mut run, index, outcome, START.plus(secs(at)));
        }
    }
    let metric_run = &run.metrics[0];
    assert_eq!(metric_run.measurements.len(), MEASUREMENT_RETENTION);
    assert_eq!((metric_run.successful, metric_run.failed), (12, 2));
    assert_eq!(run.phase, RunPhase::Failed);
    assert_eq!(
        run.message.as_deref(),
        Some(r#"metric "success-rate" failed: 2 of 14 measurements failed (limit 1)"#)
    );
    assert_eq!(
        metric_run.measurements.first().map(|m| m.at),
        Some(START.plus(secs(40)))
    );
}

#[test]
fn a_metric_whose_measurements_all_errored_is_never_successful() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, error()),
            Record(10, 0, error()),
            Terminate(15, "step skipped by promote"),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Error (connection refused) | metric Running | run Running | next 10s
             10s success-rate: Error (connection refused) | metric Running | run Running | next 20s
             15s terminate: run Error
            metric success-rate: Error (successful 0, failed 0, inconclusive 0, error 2, consecutive error 2, kept 2): all 2 measurements errored: connection refused
            run: Error: terminated: step skipped by promote; metric "success-rate" errored: all 2 measurements errored: connection refused"#]],
    );
}

#[test]
fn terminating_before_any_measurement_is_successful() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            initial_delay: Some(secs(60)),
            ..metric("success-rate")
        }],
        vec![Terminate(5, "step skipped by promote")],
        expect![[r#"
            start: run Running, next 60s
              5s terminate: run Successful
            metric success-rate: Successful (successful 0, failed 0, inconclusive 0, error 0, consecutive error 0, kept 0): stopped before its first measurement
            run: Successful: terminated: step skipped by promote"#]],
    );
}

#[test]
fn a_condition_that_fails_to_evaluate_is_an_error_not_a_failure() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(2),
            consecutive_error_limit: 0,
            consecutive_success_limit: 0,
            dry_run: false,
            measurement_retention: None,
            wait_for_evidence: None,
            ..metric("success-rate")
        }],
        vec![Record(0, 0, Outcome::Value(json!([])))],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Error [] (evaluating successCondition `result[0] >= 0.95`: Invalid operands for operator >=) | metric Error | run Error | next -
            metric success-rate: Error (successful 0, failed 0, inconclusive 0, error 1, consecutive error 1, kept 1): 1 measurement errored in a row (limit 0): evaluating successCondition `result[0] >= 0.95`: Invalid operands for operator >=
            run: Error: metric "success-rate" errored: 1 measurement errored in a row (limit 0): evaluating successCondition `result[0] >= 0.95`: Invalid operands for operator >="#]],
    );
}

#[test]
fn a_nan_answer_classified_as_no_data_is_inconclusive() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(2),
            inconclusive_limit: 1,
            ..metric("success-rate")
        }],
        vec![
            Record(
                0,
                0,
                Outcome::NoData("no success_rate value for canary 2.0.0".to_owned()),
            ),
            Record(10, 0, Outcome::NoData("empty result".to_owned())),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (no success_rate value for canary 2.0.0) | metric Running | run Running | next 10s
             10s success-rate: Inconclusive (empty result) | metric Inconclusive | run Inconclusive | next -
            metric success-rate: Inconclusive (successful 0, failed 0, inconclusive 2, error 0, consecutive error 0, kept 2): 2 of 2 measurements inconclusive (limit 1): empty result
            run: Inconclusive: metric "success-rate" was inconclusive: 2 of 2 measurements inconclusive (limit 1): empty result"#]],
    );
}

#[test]
fn a_nan_value_can_be_handled_by_the_condition() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(2),
            success_condition: Some("isNaN(result[0]) || result[0] >= 0.95".to_owned()),
            ..metric("success-rate")
        }],
        vec![Record(0, 0, value(f64::NAN)), Record(10, 0, value(0.97))],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [NaN] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.97] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 2, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 2, kept 2): 2 of 2 measurements successful
            run: Successful: metric "success-rate" succeeded: 2 of 2 measurements successful"#]],
    );
}

#[test]
fn two_metrics_any_failure_fails_the_run_and_stops_the_other() {
    check(
        vec![
            Metric {
                interval: Some(secs(10)),
                count: Some(3),
                ..metric("success-rate")
            },
            Metric {
                interval: Some(secs(10)),
                count: Some(3),
                success_condition: Some("result[0] <= 0.5".to_owned()),
                ..metric("latency")
            },
        ],
        vec![
            Record(0, 0, value(0.99)),
            Record(0, 1, value(0.2)),
            Record(10, 0, value(0.99)),
            Record(10, 1, value(0.9)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [0.99] | metric Running | run Running | next 0s
              0s latency: Successful [0.2] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 10s
             10s latency: Failed [0.9] | metric Failed | run Failed | next -
            metric success-rate: Successful (successful 2, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 2, kept 2): stopped when metric "latency" ended the run; 2 of 2 measurements successful
            metric latency: Failed (successful 1, failed 1, inconclusive 0, error 0, consecutive error 0, kept 2): 1 of 2 measurements failed (limit 0)
            run: Failed: metric "latency" failed: 1 of 2 measurements failed (limit 0)"#]],
    );
}

#[test]
fn two_metrics_all_successful_make_a_successful_run() {
    check(
        vec![
            metric("success-rate"),
            Metric {
                initial_delay: Some(secs(20)),
                ..metric("latency")
            },
        ],
        vec![Record(0, 0, value(0.99)), Record(20, 1, value(0.99))],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [0.99] | metric Successful | run Running | next 20s
             20s latency: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 1, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 1, kept 1): 1 of 1 measurement successful
            metric latency: Successful (successful 1, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 1, kept 1): 1 of 1 measurement successful
            run: Successful: all 2 metrics successful"#]],
    );
}

#[test]
fn a_metric_cut_short_by_another_does_not_take_the_blame() {
    check(
        vec![
            Metric {
                interval: Some(secs(10)),
                ..metric("success-rate")
            },
            Metric {
                interval: Some(secs(10)),
                ..metric("latency")
            },
        ],
        vec![Record(0, 1, error()), Record(0, 0, no_data())],
        expect![[r#"
            start: run Running, next 0s
              0s latency: Error (connection refused) | metric Running | run Running | next 0s
              0s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Inconclusive | run Inconclusive | next -
            metric success-rate: Inconclusive (successful 0, failed 0, inconclusive 1, error 0, consecutive error 0, kept 1): 1 of 1 measurement inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s
            metric latency: Error (successful 0, failed 0, inconclusive 0, error 1, consecutive error 1, kept 1): stopped when metric "success-rate" ended the run; its only measurement errored: connection refused
            run: Inconclusive: metric "success-rate" was inconclusive: 1 of 1 measurement inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s"#]],
    );
}

#[test]
fn on_termination_error_outranks_inconclusive() {
    check(
        vec![
            Metric {
                interval: Some(secs(10)),
                inconclusive_limit: 2,
                ..metric("success-rate")
            },
            Metric {
                interval: Some(secs(10)),
                ..metric("latency")
            },
        ],
        vec![
            Record(0, 0, no_data()),
            Record(0, 1, error()),
            Terminate(5, "step skipped by promote"),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 0s
              0s latency: Error (connection refused) | metric Running | run Running | next 10s
              5s terminate: run Error
            metric success-rate: Inconclusive (successful 0, failed 0, inconclusive 1, error 0, consecutive error 0, kept 1): no evidence: 1 of 1 measurement inconclusive: no requests to canary 2.0.0 in the last 30s
            metric latency: Error (successful 0, failed 0, inconclusive 0, error 1, consecutive error 1, kept 1): its only measurement errored: connection refused
            run: Error: terminated: step skipped by promote; metric "latency" errored: its only measurement errored: connection refused"#]],
    );
}

#[test]
fn a_terminal_run_ignores_records_and_termination() {
    check(
        vec![metric("success-rate")],
        vec![
            Record(0, 0, value(0.5)),
            Record(10, 0, value(0.99)),
            Terminate(20, "promoted"),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.5] | metric Failed | run Failed | next -
             10s success-rate (not due): ignored | metric Failed | run Failed | next -
             20s terminate: run Failed
            metric success-rate: Failed (successful 0, failed 1, inconclusive 0, error 0, consecutive error 0, kept 1): 1 of 1 measurement failed (limit 0)
            run: Failed: metric "success-rate" failed: 1 of 1 measurement failed (limit 0)"#]],
    );
}

#[test]
fn new_run_merges_templates_and_substitutes_arguments() {
    let first = AnalysisTemplate {
        name: "success".to_owned(),
        args: vec![
            TemplateArg {
                name: "threshold".to_owned(),
                value: Some("0.9".to_owned()),
            },
            TemplateArg {
                name: "version".to_owned(),
                value: None,
            },
        ],
        metrics: vec![Metric {
            success_condition: Some("result[0] >= {{args.threshold}}".to_owned()),
            provider: Provider::Builtin(BuiltinQuery {
                query: BuiltinMetric::SuccessRate,
                version: "{{ args.version }}".to_owned(),
                window: secs(30),
                min_samples: 1,
            }),
            ..metric("success-rate")
        }],
    };
    let second = template("latency", vec![metric("latency")]);
    let args = BTreeMap::from([("version".to_owned(), "2.0.0".to_owned())]);
    let run = match new_run("run-1", "web", &[&first, &second], &args, START) {
        Ok(run) => run,
        Err(message) => panic!("new_run failed: {message}"),
    };
    let names: Vec<&str> = run.metrics.iter().map(|m| m.metric.name.as_str()).collect();
    assert_eq!(names, ["success-rate", "latency"]);
    let substituted = &run.metrics[0].metric;
    assert_eq!(
        substituted.success_condition.as_deref(),
        Some("result[0] >= 0.9")
    );
    let Provider::Builtin(query) = &substituted.provider else {
        panic!("the builtin provider stays builtin");
    };
    assert_eq!(query.version, "2.0.0");
    assert_eq!(run.phase, RunPhase::Running);
    assert!(run.metrics.iter().all(|m| m.phase == RunPhase::Pending));

    // The step's value wins over the default.
    let args = BTreeMap::from([
        ("version".to_owned(), "2.0.0".to_owned()),
        ("threshold".to_owned(), "0.99".to_owned()),
    ]);
    let run = new_run("run-2", "web", &[&first], &args, START);
    assert_eq!(
        run.map(|run| run.metrics[0].metric.success_condition.clone()),
        Ok(Some("result[0] >= 0.99".to_owned()))
    );
}

#[test]
fn new_run_names_a_missing_argument() {
    let needs_version = AnalysisTemplate {
        name: "success".to_owned(),
        args: vec![TemplateArg {
            name: "version".to_owned(),
            value: None,
        }],
        metrics: vec![metric("success-rate")],
    };
    let error = new_run("r", "web", &[&needs_version], &BTreeMap::new(), START).err();
    assert_eq!(
        error.as_deref(),
        Some(
            "analysis template \"success\": argument \"version\" has no value \
             (pass it in the analysis step's args or give it a default)"
        )
    );

    let undeclared = template(
        "success",
        vec![Metric {
            failure_condition: Some("result[0] < {{args.floor}}".to_owned()),
            ..metric("success-rate")
        }],
    );
    let error = new_run("r", "web", &[&undeclared], &BTreeMap::new(), START).err();
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("argument \"floor\" has no value")),
        "{error:?}"
    );
}

#[test]
fn new_run_refuses_a_metric_name_used_by_two_templates() {
    let first = template("a", vec![metric("success-rate")]);
    let second = template("b", vec![metric("success-rate")]);
    let error = new_run("r", "web", &[&first, &second], &BTreeMap::new(), START).err();
    assert_eq!(
        error.as_deref(),
        Some(
            "metric \"success-rate\" is defined by both analysis template \"a\" and analysis \
             template \"b\": metric names must be unique in a run"
        )
    );
}

#[test]
fn measurements_keep_the_query_that_was_asked() {
    let mut run = start(vec![metric("success-rate")]);
    analysis::record_with_query(
        &mut run,
        0,
        value(0.99),
        Some(r#"builtin success_rate{version="2.0.0"}[30s]"#.to_owned()),
        START,
    );
    let measurement = &run.metrics[0].measurements[0];
    assert_eq!(
        measurement.query.as_deref(),
        Some(r#"builtin success_rate{version="2.0.0"}[30s]"#)
    );
    assert_eq!(measurement.value.as_deref(), Some("[0.99]"));
}

// === consecutiveSuccessLimit (Argo v1.8, PR #3970) ===

#[test]
fn consecutive_successes_end_the_metric_before_its_count() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(10),
            failure_limit: 2,
            consecutive_success_limit: 3,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.5)),
            Record(10, 0, value(0.99)),
            Record(20, 0, value(0.5)),
            Record(30, 0, value(0.99)),
            Record(40, 0, value(0.99)),
            Record(50, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.5] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Failed [0.5] | metric Running | run Running | next 30s
             30s success-rate: Successful [0.99] | metric Running | run Running | next 40s
             40s success-rate: Successful [0.99] | metric Running | run Running | next 50s
             50s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 4, failed 2, inconclusive 0, error 0, consecutive error 0, consecutive success 3, kept 6): 3 measurements successful in a row (consecutiveSuccessLimit 3); 4 of 6 measurements successful
            run: Successful: metric "success-rate" succeeded: 3 measurements successful in a row (consecutiveSuccessLimit 3); 4 of 6 measurements successful"#]],
    );
}

#[test]
fn count_reached_without_the_success_streak_and_within_the_failure_limit_is_inconclusive() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(4),
            failure_limit: 1,
            consecutive_success_limit: 3,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.99)),
            Record(10, 0, value(0.5)),
            Record(20, 0, value(0.99)),
            Record(30, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [0.99] | metric Running | run Running | next 10s
             10s success-rate: Failed [0.5] | metric Running | run Running | next 20s
             20s success-rate: Successful [0.99] | metric Running | run Running | next 30s
             30s success-rate: Successful [0.99] | metric Inconclusive | run Inconclusive | next -
            metric success-rate: Inconclusive (successful 3, failed 1, inconclusive 0, error 0, consecutive error 0, consecutive success 2, kept 4): consecutiveSuccessLimit 3 not reached and failureLimit 1 not exceeded in 4 measurements
            run: Inconclusive: metric "success-rate" was inconclusive: consecutiveSuccessLimit 3 not reached and failureLimit 1 not exceeded in 4 measurements"#]],
    );
}

#[test]
fn count_reached_without_the_success_streak_and_no_failure_limit_is_failed() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(3),
            failure_limit: -1,
            consecutive_success_limit: 2,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.5)),
            Record(10, 0, value(0.99)),
            Record(20, 0, value(0.5)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.5] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Failed [0.5] | metric Failed | run Failed | next -
            metric success-rate: Failed (successful 1, failed 2, inconclusive 0, error 0, consecutive error 0, kept 3): consecutiveSuccessLimit 2 not reached in 3 measurements
            run: Failed: metric "success-rate" failed: consecutiveSuccessLimit 2 not reached in 3 measurements"#]],
    );
}

#[test]
fn the_failure_limit_still_fails_a_metric_waiting_for_its_success_streak() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(10),
            failure_limit: 1,
            consecutive_success_limit: 2,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.5)),
            Record(10, 0, value(0.99)),
            Record(20, 0, value(0.5)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.5] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Failed [0.5] | metric Failed | run Failed | next -
            metric success-rate: Failed (successful 1, failed 2, inconclusive 0, error 0, consecutive error 0, kept 3): 2 of 3 measurements failed (limit 1)
            run: Failed: metric "success-rate" failed: 2 of 3 measurements failed (limit 1)"#]],
    );
}

#[test]
fn a_success_streak_without_count_ends_the_metric_and_termination_before_it_passes() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            failure_limit: -1,
            consecutive_success_limit: 2,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.5)),
            Record(10, 0, value(0.99)),
            Record(20, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.5] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 2, failed 1, inconclusive 0, error 0, consecutive error 0, consecutive success 2, kept 3): 2 measurements successful in a row (consecutiveSuccessLimit 2); 2 of 3 measurements successful
            run: Successful: metric "success-rate" succeeded: 2 measurements successful in a row (consecutiveSuccessLimit 2); 2 of 3 measurements successful"#]],
    );
    check(
        vec![Metric {
            interval: Some(secs(10)),
            failure_limit: -1,
            consecutive_success_limit: 2,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, value(0.5)),
            Record(10, 0, value(0.99)),
            Terminate(15, "rollout completed"),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.5] | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             15s terminate: run Successful
            metric success-rate: Successful (successful 1, failed 1, inconclusive 0, error 0, consecutive error 0, consecutive success 1, kept 2): 1 of 2 measurements successful
            run: Successful: terminated: rollout completed"#]],
    );
}

// === dryRun ===

#[test]
fn a_failing_dry_run_metric_is_kept_but_cannot_fail_the_run() {
    check(
        vec![
            Metric {
                interval: Some(secs(10)),
                count: Some(2),
                ..metric("success-rate")
            },
            Metric {
                interval: Some(secs(10)),
                count: Some(2),
                dry_run: true,
                success_condition: Some("result[0] <= 0.1".to_owned()),
                ..metric("latency")
            },
        ],
        vec![
            Record(0, 0, value(0.99)),
            Record(0, 1, value(0.5)),
            Record(10, 1, value(0.5)),
            Record(10, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [0.99] | metric Running | run Running | next 0s
              0s latency: Failed [0.5] | metric Failed | run Running | next 10s
             10s latency (not due): ignored | metric Failed | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 2, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 2, kept 2): 2 of 2 measurements successful
            metric latency: Failed (successful 0, failed 1, inconclusive 0, error 0, consecutive error 0, kept 1): 1 of 1 measurement failed (limit 0)
            run: Successful: metric "success-rate" succeeded: 2 of 2 measurements successful; dry run: 1 metric, 1 failed (metric "latency" failed: 1 of 1 measurement failed (limit 0))"#]],
    );
}

#[test]
fn a_run_of_only_dry_run_metrics_is_successful_when_they_finish() {
    check(
        vec![
            Metric {
                dry_run: true,
                ..metric("success-rate")
            },
            Metric {
                dry_run: true,
                ..metric("latency")
            },
        ],
        vec![
            Record(0, 0, value(0.5)),
            Record(0, 1, error()),
            Record(10, 1, no_data()),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Failed [0.5] | metric Failed | run Running | next 0s
              0s latency: Error (connection refused) | metric Running | run Running | next 10s
             10s latency: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Inconclusive | run Successful | next -
            metric success-rate: Failed (successful 0, failed 1, inconclusive 0, error 0, consecutive error 0, kept 1): 1 of 1 measurement failed (limit 0)
            metric latency: Inconclusive (successful 0, failed 0, inconclusive 1, error 1, consecutive error 0, kept 2): 1 of 2 measurements inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s
            run: Successful: only dry-run metrics, which cannot fail the run; dry run: 2 metrics, 1 failed, 1 inconclusive (metric "success-rate" failed: 1 of 1 measurement failed (limit 0); metric "latency" was inconclusive: 1 of 2 measurements inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s)"#]],
    );
}

#[test]
fn a_deciding_failure_stops_dry_run_metrics_and_the_message_summarises_them() {
    check(
        vec![
            Metric {
                interval: Some(secs(10)),
                ..metric("success-rate")
            },
            Metric {
                interval: Some(secs(10)),
                dry_run: true,
                ..metric("errors-4xx")
            },
        ],
        vec![
            Record(0, 1, value(0.5)),
            Record(0, 0, value(0.99)),
            Record(10, 1, value(0.99)),
            Record(10, 0, value(0.5)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s errors-4xx: Failed [0.5] | metric Failed | run Running | next 0s
              0s success-rate: Successful [0.99] | metric Running | run Running | next 10s
             10s errors-4xx (not due): ignored | metric Failed | run Running | next 10s
             10s success-rate: Failed [0.5] | metric Failed | run Failed | next -
            metric success-rate: Failed (successful 1, failed 1, inconclusive 0, error 0, consecutive error 0, kept 2): 1 of 2 measurements failed (limit 0)
            metric errors-4xx: Failed (successful 0, failed 1, inconclusive 0, error 0, consecutive error 0, kept 1): 1 of 1 measurement failed (limit 0)
            run: Failed: metric "success-rate" failed: 1 of 2 measurements failed (limit 0); dry run: 1 metric, 1 failed (metric "errors-4xx" failed: 1 of 1 measurement failed (limit 0))"#]],
    );
}

// === measurementRetention ===

#[test]
fn measurement_retention_is_per_metric_and_counters_stay_exact() {
    let steps: Vec<Step> = (0..5)
        .map(|n| Record(n * 10, 0, value(if n == 1 { 0.5 } else { 0.99 })))
        .chain([Terminate(45, "step skipped by promote")])
        .collect();
    check(
        vec![Metric {
            interval: Some(secs(10)),
            failure_limit: 1,
            measurement_retention: Some(3),
            ..metric("success-rate")
        }],
        steps,
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Successful [0.99] | metric Running | run Running | next 10s
             10s success-rate: Failed [0.5] | metric Running | run Running | next 20s
             20s success-rate: Successful [0.99] | metric Running | run Running | next 30s
             30s success-rate: Successful [0.99] | metric Running | run Running | next 40s
             40s success-rate: Successful [0.99] | metric Running | run Running | next 50s
             45s terminate: run Successful
            metric success-rate: Successful (successful 4, failed 1, inconclusive 0, error 0, consecutive error 0, consecutive success 3, kept 3): 4 of 5 measurements successful
            run: Successful: terminated: step skipped by promote"#]],
    );
}

// === waiting for evidence (beyond Argo) ===

#[test]
fn no_data_while_waiting_for_evidence_counts_neither_as_inconclusive_nor_towards_count() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(2),
            wait_for_evidence: None,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, no_data()),
            Record(10, 0, no_data()),
            Record(20, 0, value(0.99)),
            Record(30, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 20s
             20s success-rate: Successful [0.99] | metric Running | run Running | next 30s
             30s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 2, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 2, awaiting evidence 2, kept 4): 2 of 4 measurements successful
            run: Successful: metric "success-rate" succeeded: 2 of 4 measurements successful"#]],
    );
}

#[test]
fn a_metric_still_waiting_says_so_and_how_long_it_has_left() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(2),
            wait_for_evidence: None,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, no_data()),
            Record(
                10,
                0,
                Outcome::NoData("only 7 of 20 requests to canary 2.0.0 in the last 30s".to_owned()),
            ),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Inconclusive (waiting for evidence: only 7 of 20 requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 20s
            metric success-rate: Running (successful 0, failed 0, inconclusive 0, error 0, consecutive error 0, awaiting evidence 2, kept 2): waiting for evidence (4m50s left of 5m): only 7 of 20 requests to canary 2.0.0 in the last 30s
            run: Running: -"#]],
    );
}

#[test]
fn once_the_wait_is_over_no_data_counts_as_inconclusive_like_argo() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(5),
            wait_for_evidence: Some(secs(25)),
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, no_data()),
            Record(10, 0, no_data()),
            Record(20, 0, no_data()),
            Record(30, 0, no_data()),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 20s
             20s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 30s
             30s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Inconclusive | run Inconclusive | next -
            metric success-rate: Inconclusive (successful 0, failed 0, inconclusive 1, error 0, consecutive error 0, awaiting evidence 3, kept 4): 1 of 4 measurements inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s
            run: Inconclusive: metric "success-rate" was inconclusive: 1 of 4 measurements inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s"#]],
    );
}

#[test]
fn after_the_first_evidence_no_data_counts_at_once() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(5),
            wait_for_evidence: None,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, no_data()),
            Record(10, 0, value(0.99)),
            Record(20, 0, no_data()),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Successful [0.99] | metric Running | run Running | next 20s
             20s success-rate: Inconclusive (no requests to canary 2.0.0 in the last 30s) | metric Inconclusive | run Inconclusive | next -
            metric success-rate: Inconclusive (successful 1, failed 0, inconclusive 1, error 0, consecutive error 0, awaiting evidence 1, kept 3): 1 of 3 measurements inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s
            run: Inconclusive: metric "success-rate" was inconclusive: 1 of 3 measurements inconclusive (limit 0): no requests to canary 2.0.0 in the last 30s"#]],
    );
}

#[test]
fn errors_while_waiting_still_count_towards_the_consecutive_error_limit() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            count: Some(3),
            consecutive_error_limit: 2,
            wait_for_evidence: None,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, no_data()),
            Record(10, 0, error()),
            Record(20, 0, error()),
            Record(30, 0, error()),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Error (connection refused) | metric Running | run Running | next 20s
             20s success-rate: Error (connection refused) | metric Running | run Running | next 30s
             30s success-rate: Error (connection refused) | metric Error | run Error | next -
            metric success-rate: Error (successful 0, failed 0, inconclusive 0, error 3, consecutive error 3, awaiting evidence 1, kept 4): 3 measurements errored in a row (limit 2): connection refused
            run: Error: metric "success-rate" errored: 3 measurements errored in a row (limit 2): connection refused"#]],
    );
}

#[test]
fn a_metric_without_interval_asks_again_while_waiting() {
    check(
        vec![Metric {
            wait_for_evidence: None,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, no_data()),
            Record(10, 0, no_data()),
            Record(20, 0, value(0.99)),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 20s
             20s success-rate: Successful [0.99] | metric Successful | run Successful | next -
            metric success-rate: Successful (successful 1, failed 0, inconclusive 0, error 0, consecutive error 0, consecutive success 1, awaiting evidence 2, kept 3): 1 of 3 measurements successful
            run: Successful: metric "success-rate" succeeded: 1 of 3 measurements successful"#]],
    );
}

#[test]
fn terminated_while_waiting_is_inconclusive_never_successful() {
    check(
        vec![Metric {
            interval: Some(secs(10)),
            wait_for_evidence: None,
            ..metric("success-rate")
        }],
        vec![
            Record(0, 0, no_data()),
            Record(10, 0, no_data()),
            Terminate(15, "step skipped by promote"),
        ],
        expect![[r#"
            start: run Running, next 0s
              0s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 10s
             10s success-rate: Inconclusive (waiting for evidence: no requests to canary 2.0.0 in the last 30s) | metric Running | run Running | next 20s
             15s terminate: run Inconclusive
            metric success-rate: Inconclusive (successful 0, failed 0, inconclusive 0, error 0, consecutive error 0, awaiting evidence 2, kept 2): no evidence: stopped while waiting for evidence (2 of 2 measurements without data): no requests to canary 2.0.0 in the last 30s
            run: Inconclusive: terminated: step skipped by promote; metric "success-rate" was inconclusive: no evidence: stopped while waiting for evidence (2 of 2 measurements without data): no requests to canary 2.0.0 in the last 30s"#]],
    );
}

#[test]
fn a_note_with_a_value_becomes_the_measurement_message() {
    check(
        vec![Metric {
            success_condition: Some("result == 'Pass'".to_owned()),
            failure_condition: Some("result == 'Fail'".to_owned()),
            ..metric("judge-latency")
        }],
        vec![Record(
            0,
            0,
            Outcome::ValueWithNote(
                json!("Fail"),
                "latency median canary 26.0ms vs stable 20.0ms (effect +30.0%)".to_owned(),
            ),
        )],
        expect![[r#"
            start: run Running, next 0s
              0s judge-latency: Failed "Fail" (latency median canary 26.0ms vs stable 20.0ms (effect +30.0%)) | metric Failed | run Failed | next -
            metric judge-latency: Failed (successful 0, failed 1, inconclusive 0, error 0, consecutive error 0, kept 1): 1 of 1 measurement failed (limit 0): latency median canary 26.0ms vs stable 20.0ms (effect +30.0%)
            run: Failed: metric "judge-latency" failed: 1 of 1 measurement failed (limit 0): latency median canary 26.0ms vs stable 20.0ms (effect +30.0%)"#]],
    );
}
