//! Properties of analysis runs over random outcome sequences and limits.

use std::collections::BTreeMap;
use std::time::Duration;

use edgeroll::analysis::{
    new_run, number_value, record, terminate, verdict, AnalysisRun, MeasurementPhase, Outcome,
    RunPhase, MEASUREMENT_RETENTION,
};
use edgeroll::spec::{AnalysisTemplate, BuiltinMetric, BuiltinQuery, Metric, Provider};
use edgeroll::time::Timestamp;
use proptest::prelude::*;
use serde_json::json;

const START: Timestamp = Timestamp::from_millis(1_795_773_600_000);

/// The kinds of answer a provider gives.
#[derive(Debug, Clone)]
enum Answer {
    /// A measured value, judged by the conditions.
    Value(f64),
    /// A value the conditions cannot evaluate (an empty array).
    Empty,
    /// No evidence.
    NoData,
    /// The provider failed.
    Error,
}

impl Answer {
    fn outcome(&self) -> Outcome {
        match self {
            Answer::Value(x) => Outcome::Value(json!([number_value(*x)])),
            Answer::Empty => Outcome::Value(json!([])),
            Answer::NoData => Outcome::NoData("no requests".to_owned()),
            Answer::Error => Outcome::Error("connection refused".to_owned()),
        }
    }
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Answer::Value),
        Just(Answer::Value(f64::NAN)),
        Just(Answer::Empty),
        Just(Answer::NoData),
        Just(Answer::Error),
    ]
}

fn no_evidence_answer() -> impl Strategy<Value = Answer> {
    prop_oneof![Just(Answer::NoData), Just(Answer::Error)]
}

fn metric() -> impl Strategy<Value = Metric> {
    (
        proptest::option::of(1..30u64),
        proptest::option::of(1..6u32),
        any::<bool>(),
        -1..3i32,
        0..3u32,
        0..5u32,
    )
        .prop_map(
            |(interval, count, with_failure, failure_limit, inconclusive_limit, error_limit)| {
                Metric {
                    name: String::new(),
                    interval: interval.map(Duration::from_secs),
                    initial_delay: None,
                    count,
                    success_condition: Some("result[0] >= 0.9".to_owned()),
                    failure_condition: with_failure.then(|| "result[0] < 0.5".to_owned()),
                    failure_limit,
                    inconclusive_limit,
                    consecutive_error_limit: error_limit,
                    consecutive_success_limit: 0,
                    dry_run: false,
                    measurement_retention: None,
                    // Argo's behaviour: "no data" counts at once; waiting has its own property.
                    wait_for_evidence: Some(Duration::ZERO),
                    provider: Provider::Builtin(BuiltinQuery {
                        query: BuiltinMetric::SuccessRate,
                        version: "canary".to_owned(),
                        window: Duration::from_secs(30),
                        min_samples: 1,
                    }),
                }
            },
        )
}

fn start(metrics: Vec<Metric>) -> AnalysisRun {
    let metrics = metrics
        .into_iter()
        .enumerate()
        .map(|(index, metric)| Metric {
            name: format!("metric-{index}"),
            ..metric
        })
        .collect();
    let template = AnalysisTemplate {
        name: "t".to_owned(),
        args: vec![],
        metrics,
    };
    match new_run("run", "web", &[&template], &BTreeMap::new(), START) {
        Ok(run) => run,
        Err(message) => panic!("new_run failed: {message}"),
    }
}

/// Counters per metric, counted from the outcomes that were recorded.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    successful: u32,
    failed: u32,
    inconclusive: u32,
    error: u32,
}

/// Record `answers` (metric index, seconds since the previous one, answer), then maybe terminate;
/// check after every step that a terminal run never changes again.
fn drive(
    run: &mut AnalysisRun,
    answers: &[(usize, u64, Answer)],
    terminate_at_end: bool,
) -> Result<Vec<Counts>, TestCaseError> {
    let mut counts = vec![Counts::default(); run.metrics.len()];
    let mut ended: Option<AnalysisRun> = None;
    let mut now = START;
    for (index, gap, answer) in answers {
        let index = index % run.metrics.len();
        now = now.plus(Duration::from_secs(*gap));
        let before = run.metrics[index].total();
        let metric = run.metrics[index].metric.clone();
        record(run, index, answer.outcome(), now);
        if run.metrics[index].total() > before {
            let phase = match answer {
                Answer::Value(x) => {
                    verdict(&metric, &json!([number_value(*x)])).unwrap_or(MeasurementPhase::Error)
                }
                Answer::Empty | Answer::Error => MeasurementPhase::Error,
                Answer::NoData => MeasurementPhase::Inconclusive,
            };
            let counted = &mut counts[index];
            match phase {
                MeasurementPhase::Successful => counted.successful += 1,
                MeasurementPhase::Failed => counted.failed += 1,
                MeasurementPhase::Inconclusive => counted.inconclusive += 1,
                MeasurementPhase::Error => counted.error += 1,
            }
        }
        if let Some(ended) = &ended {
            prop_assert_eq!(ended, &*run, "a terminal run changed");
        } else if run.phase.is_terminal() {
            ended = Some(run.clone());
        }
    }
    if terminate_at_end {
        terminate(run, now.plus(Duration::from_secs(1)), "promoted");
        if let Some(ended) = &ended {
            prop_assert_eq!(ended, &*run, "termination changed a terminal run");
        }
        prop_assert!(run.phase.is_terminal());
        prop_assert!(run.metrics.iter().all(|m| m.phase.is_terminal()));
    }
    Ok(counts)
}

proptest! {
    #[test]
    fn terminal_runs_never_change_and_counters_match_outcomes(
        metrics in proptest::collection::vec(metric(), 1..3),
        answers in proptest::collection::vec((0..2usize, 0..20u64, answer()), 0..40),
        terminate_at_end in any::<bool>(),
    ) {
        let mut run = start(metrics);
        let counts = drive(&mut run, &answers, terminate_at_end)?;
        for (metric_run, counted) in run.metrics.iter().zip(&counts) {
            let recorded = Counts {
                successful: metric_run.successful,
                failed: metric_run.failed,
                inconclusive: metric_run.inconclusive,
                error: metric_run.error,
            };
            prop_assert_eq!(&recorded, counted);
            let total = usize::try_from(metric_run.total()).unwrap_or(usize::MAX);
            prop_assert_eq!(metric_run.measurements.len(), total.min(MEASUREMENT_RETENTION));
        }
        if run.phase.is_terminal() {
            prop_assert!(run.ended_at.is_some());
            prop_assert!(run.message.is_some());
        }
    }

    #[test]
    fn no_evidence_is_never_successful_or_failed(
        metrics in proptest::collection::vec(metric(), 1..3),
        first in no_evidence_answer(),
        answers in proptest::collection::vec((0..2usize, 0..20u64, no_evidence_answer()), 0..40),
        terminate_at_end in any::<bool>(),
    ) {
        let mut run = start(metrics);
        let mut all = vec![(0, 0, first)];
        all.extend(answers);
        drive(&mut run, &all, terminate_at_end)?;
        prop_assert!(
            !matches!(run.phase, RunPhase::Successful | RunPhase::Failed),
            "run {:?}: {:?}", run.phase, run.message
        );
        prop_assert!(run.metrics.iter().all(|m| m.phase != RunPhase::Failed));
    }
}

proptest! {
    /// While a metric waits for evidence (before its first value and before `waitForEvidence`
    /// has passed), "no data" is kept but never counted as Inconclusive; afterwards it is.
    #[test]
    fn no_data_counts_only_once_the_wait_for_evidence_is_over(
        wait_seconds in 0..120u64,
        answers in proptest::collection::vec((0..20u64, answer()), 0..40),
    ) {
        let mut run = start(vec![Metric {
            name: String::new(),
            interval: Some(Duration::from_secs(10)),
            initial_delay: None,
            count: None,
            success_condition: Some("result[0] >= 0.9".to_owned()),
            failure_condition: None,
            failure_limit: -1,
            inconclusive_limit: u32::MAX,
            consecutive_error_limit: u32::MAX,
            consecutive_success_limit: 0,
            dry_run: false,
            measurement_retention: Some(5),
            wait_for_evidence: Some(Duration::from_secs(wait_seconds)),
            provider: Provider::Builtin(BuiltinQuery {
                query: BuiltinMetric::SuccessRate,
                version: "canary".to_owned(),
                window: Duration::from_secs(30),
                min_samples: 1,
            }),
        }]);
        let deadline = START.plus(Duration::from_secs(wait_seconds));
        let (mut awaiting, mut inconclusive, mut seen_value) = (0u32, 0u32, false);
        let mut now = START;
        for (gap, answer) in &answers {
            now = now.plus(Duration::from_secs(*gap));
            match answer {
                Answer::NoData if !seen_value && now < deadline => awaiting += 1,
                Answer::NoData => inconclusive += 1,
                Answer::Value(_) | Answer::Empty => seen_value = true,
                Answer::Error => {}
            }
            record(&mut run, 0, answer.outcome(), now);
        }
        let metric_run = &run.metrics[0];
        prop_assert_eq!(metric_run.awaiting_evidence, awaiting);
        prop_assert_eq!(metric_run.inconclusive, inconclusive);
        prop_assert_eq!(metric_run.evidence_at.is_some(), seen_value);
        prop_assert!(metric_run.measurements.len() <= 5);
        prop_assert_eq!(
            metric_run.measurements.len(),
            usize::try_from(metric_run.total()).unwrap_or(usize::MAX).min(5)
        );
        prop_assert!(!run.phase.is_terminal());
    }
}
