//! Rounds of measurements: every metric due at the same instant is answered, and only then is
//! the run decided, as the worst of its metrics' phases (Failed over Error over Inconclusive,
//! Argo's `IsWorst`), whatever the template order and whatever order the answers come in.
//!
//! The table covers every pair and every triple of metric outcomes (Successful, Failed,
//! Inconclusive, Error, still running), each metric a dry run or not, in every template order
//! and every answer order, against an oracle written from the rules in `docs/analysis.md`. The
//! property test permutes templates and answers over several rounds of random outcomes.

use std::collections::BTreeMap;
use std::time::Duration;

use edgeroll::analysis::{
    new_run, number_value, record_round, AnalysisRun, Answer, Outcome, RunPhase,
};
use edgeroll::spec::{AnalysisTemplate, BuiltinMetric, BuiltinQuery, Metric, Provider};
use edgeroll::time::Timestamp;
use expect_test::expect;
use proptest::prelude::*;
use serde_json::json;

const START: Timestamp = Timestamp::from_millis(1_795_773_600_000);

/// What one metric's answer in the round makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Successful,
    Failed,
    Inconclusive,
    Error,
    /// A value that passes, but the metric needs three of them: it goes on measuring.
    Running,
}

const KINDS: [Kind; 5] = [
    Kind::Successful,
    Kind::Failed,
    Kind::Inconclusive,
    Kind::Error,
    Kind::Running,
];

/// A metric that ends on its first answer as `kind` says (or keeps running for `Running`):
/// success at `>= 0.95`, failure below `0.5`, inconclusive in between, Error at the first error.
fn metric(name: &str, kind: Kind, dry_run: bool) -> Metric {
    let running = kind == Kind::Running;
    Metric {
        name: name.to_owned(),
        interval: running.then(|| Duration::from_secs(10)),
        initial_delay: None,
        count: running.then_some(3),
        success_condition: Some("result[0] >= 0.95".to_owned()),
        failure_condition: Some("result[0] < 0.5".to_owned()),
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 0,
        consecutive_success_limit: 0,
        dry_run,
        measurement_retention: None,
        wait_for_evidence: Some(Duration::ZERO),
        provider: Provider::Builtin(BuiltinQuery {
            query: BuiltinMetric::SuccessRate,
            version: "canary".to_owned(),
            window: Duration::from_secs(30),
            min_samples: 1,
        }),
    }
}

fn outcome(kind: Kind) -> Outcome {
    let value = |x: f64| Outcome::Value(json!([number_value(x)]));
    match kind {
        Kind::Successful | Kind::Running => value(0.99),
        Kind::Failed => value(0.2),
        Kind::Inconclusive => value(0.7),
        Kind::Error => Outcome::Error("connection refused".to_owned()),
    }
}

fn run_of(metrics: Vec<Metric>) -> AnalysisRun {
    let template = AnalysisTemplate {
        name: "t".to_owned(),
        args: vec![],
        metrics,
    };
    match new_run("run-1", "web", &[&template], &BTreeMap::new(), START) {
        Ok(run) => run,
        Err(message) => panic!("new_run failed: {message}"),
    }
}

/// The rules, written out independently of the code: the worst phase among the metrics that
/// are not dry runs and have ended; else Running while any metric still measures; else
/// Successful.
fn oracle(metrics: &[(Kind, bool)]) -> RunPhase {
    let deciding: Vec<Kind> = metrics
        .iter()
        .filter(|(_, dry_run)| !dry_run)
        .map(|(kind, _)| *kind)
        .collect();
    for (kind, phase) in [
        (Kind::Failed, RunPhase::Failed),
        (Kind::Error, RunPhase::Error),
        (Kind::Inconclusive, RunPhase::Inconclusive),
    ] {
        if deciding.contains(&kind) {
            return phase;
        }
    }
    if metrics.iter().any(|(kind, _)| *kind == Kind::Running) {
        RunPhase::Running
    } else {
        RunPhase::Successful
    }
}

/// Every ordering of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for position in 0..=rest.len() {
            let mut ordering = rest.clone();
            ordering.insert(position, n - 1);
            all.push(ordering);
        }
    }
    all
}

/// The run's phase after one round in which `metrics` (in this template order) are answered
/// in `answer_order` (indexes into `metrics`).
fn phase_after_round(metrics: &[(Kind, bool)], answer_order: &[usize]) -> RunPhase {
    let mut run = run_of(
        metrics
            .iter()
            .enumerate()
            .map(|(index, (kind, dry_run))| metric(&format!("m{index}"), *kind, *dry_run))
            .collect(),
    );
    let answers = answer_order
        .iter()
        .map(|&index| Answer {
            index,
            outcome: outcome(metrics[index].0),
            query: None,
        })
        .collect();
    record_round(&mut run, answers, START);
    run.phase
}

/// Every combination of `size` metrics, each of every kind, dry run or not.
fn combinations(size: u32) -> Vec<Vec<(Kind, bool)>> {
    let choices: Vec<(Kind, bool)> = KINDS
        .iter()
        .flat_map(|kind| [(*kind, false), (*kind, true)])
        .collect();
    let mut all = vec![vec![]];
    for _ in 0..size {
        all = all
            .into_iter()
            .flat_map(|prefix: Vec<(Kind, bool)>| {
                choices.iter().map(move |choice| {
                    let mut next = prefix.clone();
                    next.push(*choice);
                    next
                })
            })
            .collect();
    }
    all
}

/// Check every template order and every answer order of every combination of `size` metrics
/// against the oracle; returns how many rounds were checked.
fn check_all(size: u32) -> usize {
    let mut checked = 0;
    let orders = permutations(size as usize);
    for combination in combinations(size) {
        let expected = oracle(&combination);
        for template_order in &orders {
            let metrics: Vec<(Kind, bool)> =
                template_order.iter().map(|&i| combination[i]).collect();
            for answer_order in &orders {
                let phase = phase_after_round(&metrics, answer_order);
                assert_eq!(
                    phase, expected,
                    "metrics {metrics:?} answered in order {answer_order:?}"
                );
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn every_pair_of_outcomes_in_every_order_takes_the_worst() {
    // 10 choices per metric (5 outcomes, dry run or not), 2 template orders x 2 answer orders.
    assert_eq!(check_all(2), 100 * 4);
}

#[test]
fn every_triple_of_outcomes_in_every_order_takes_the_worst() {
    // 1000 combinations, 6 template orders x 6 answer orders.
    assert_eq!(check_all(3), 1000 * 36);
}

/// The cases of the defect report, shown as a table: the first metric in template order is
/// answered first, and the run must still end on the worst verdict.
#[test]
fn the_worst_verdict_decides_whatever_comes_first() {
    let mut table = String::new();
    for first in KINDS {
        for second in KINDS {
            let metrics = [(first, false), (second, false)];
            let phase = phase_after_round(&metrics, &[0, 1]);
            table.push_str(&format!("{first:?} then {second:?} => {phase:?}\n"));
        }
    }
    expect![[r#"
        Successful then Successful => Successful
        Successful then Failed => Failed
        Successful then Inconclusive => Inconclusive
        Successful then Error => Error
        Successful then Running => Running
        Failed then Successful => Failed
        Failed then Failed => Failed
        Failed then Inconclusive => Failed
        Failed then Error => Failed
        Failed then Running => Failed
        Inconclusive then Successful => Inconclusive
        Inconclusive then Failed => Failed
        Inconclusive then Inconclusive => Inconclusive
        Inconclusive then Error => Error
        Inconclusive then Running => Inconclusive
        Error then Successful => Error
        Error then Failed => Failed
        Error then Inconclusive => Error
        Error then Error => Error
        Error then Running => Error
        Running then Successful => Running
        Running then Failed => Failed
        Running then Inconclusive => Inconclusive
        Running then Error => Error
        Running then Running => Running
    "#]]
    .assert_eq(&table);
}

/// The message names the metric that decided, and the metric cut short says so.
#[test]
fn the_failed_metric_is_named_and_the_others_are_stopped() {
    let metrics = [
        (Kind::Inconclusive, false),
        (Kind::Failed, false),
        (Kind::Running, false),
    ];
    let mut run = run_of(
        metrics
            .iter()
            .enumerate()
            .map(|(index, (kind, dry_run))| metric(&format!("m{index}"), *kind, *dry_run))
            .collect(),
    );
    let answers = (0..3)
        .map(|index| Answer {
            index,
            outcome: outcome(metrics[index].0),
            query: None,
        })
        .collect();
    record_round(&mut run, answers, START);
    assert_eq!(run.phase, RunPhase::Failed);
    let message = run.message.clone().unwrap_or_default();
    assert!(message.starts_with("metric \"m1\" failed"), "{message}");
    let phases: Vec<RunPhase> = run.metrics.iter().map(|m| m.phase).collect();
    // The running metric is stopped after the decision (as terminated: Successful on one pass),
    // and the inconclusive one keeps its own verdict.
    assert_eq!(
        phases,
        vec![
            RunPhase::Inconclusive,
            RunPhase::Failed,
            RunPhase::Successful
        ]
    );
    assert!(run.metrics[2]
        .message
        .as_deref()
        .unwrap_or_default()
        .starts_with("stopped when metric \"m1\" ended the run"));
}

/// A random metric: limits and count vary, so some rounds end it and some do not.
fn any_metric() -> impl Strategy<Value = (u32, i32, u32, u32, bool)> {
    (1..4u32, -1..2i32, 0..2u32, 0..2u32, any::<bool>())
}

fn build(
    (count, failure_limit, inconclusive_limit, error_limit, dry_run): (u32, i32, u32, u32, bool),
    name: String,
) -> Metric {
    let mut metric = metric(&name, Kind::Running, dry_run);
    metric.count = Some(count);
    metric.failure_limit = failure_limit;
    metric.inconclusive_limit = inconclusive_limit;
    metric.consecutive_error_limit = error_limit;
    metric
}

fn any_outcome() -> impl Strategy<Value = Kind> {
    prop::sample::select(vec![
        Kind::Successful,
        Kind::Failed,
        Kind::Inconclusive,
        Kind::Error,
    ])
}

/// Drive rounds (each answers every metric that is due, with the outcome for it in that round)
/// through a run whose template lists the metrics in `template_order`, answering each round in
/// `answer_order`; the run's phase at the end.
fn drive(
    metrics: &[(u32, i32, u32, u32, bool)],
    rounds: &[Vec<Kind>],
    template_order: &[usize],
    answer_order: &[usize],
) -> RunPhase {
    let mut run = run_of(
        template_order
            .iter()
            .map(|&original| build(metrics[original], format!("m{original}")))
            .collect(),
    );
    let mut now = START;
    for round in rounds {
        let due = edgeroll::analysis::due_metrics(&run, now);
        let answers = answer_order
            .iter()
            .filter_map(|&original| {
                let index = template_order.iter().position(|&o| o == original)?;
                due.contains(&index).then(|| Answer {
                    index,
                    outcome: outcome(round[original]),
                    query: None,
                })
            })
            .collect();
        record_round(&mut run, answers, now);
        now = now.plus(Duration::from_secs(10));
    }
    run.phase
}

proptest! {
    #[test]
    fn permuting_metrics_or_answers_never_changes_the_phase(
        metrics in prop::collection::vec(any_metric(), 1..5),
        raw_rounds in prop::collection::vec(prop::collection::vec(any_outcome(), 4), 1..6),
        template_seed in any::<prop::sample::Index>(),
        answer_seed in any::<prop::sample::Index>(),
    ) {
        let n = metrics.len();
        let rounds: Vec<Vec<Kind>> = raw_rounds.iter().map(|round| round[..n].to_vec()).collect();
        let orders = permutations(n);
        let identity: Vec<usize> = (0..n).collect();
        let expected = drive(&metrics, &rounds, &identity, &identity);
        let template_order = template_seed.get(&orders);
        let answer_order = answer_seed.get(&orders);
        prop_assert_eq!(drive(&metrics, &rounds, template_order, &identity), expected);
        prop_assert_eq!(drive(&metrics, &rounds, &identity, answer_order), expected);
        prop_assert_eq!(drive(&metrics, &rounds, template_order, answer_order), expected);
    }
}
