//! What an analysis run reports as it is saved: each new measurement exactly once (even when
//! old ones have been trimmed by `measurementRetention`), and the verdict once, when it ends;
//! nothing at all when no `[reports]` receiver is configured.

use std::collections::BTreeMap;
use std::time::Duration;

use edgeroll::analysis::{self, new_run, number_value, AnalysisRun, Outcome};
use edgeroll::report::Reporting;
use edgeroll::spec::{
    AnalysisTemplate, BuiltinMetric, BuiltinQuery, Metric, Provider,
    DEFAULT_CONSECUTIVE_ERROR_LIMIT,
};
use edgeroll::time::Timestamp;
use edgeroll::wire::report::ReportBody;
use serde_json::json;

const START: Timestamp = Timestamp::from_millis(1_795_773_600_000);

fn metric(count: u32, retention: u32) -> Metric {
    Metric {
        name: "success-rate".to_owned(),
        interval: Some(Duration::from_secs(1)),
        initial_delay: None,
        count: Some(count),
        success_condition: Some("result[0] >= 0.95".to_owned()),
        failure_condition: None,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        consecutive_success_limit: 0,
        dry_run: false,
        measurement_retention: Some(retention),
        wait_for_evidence: Some(Duration::ZERO),
        provider: Provider::Builtin(BuiltinQuery {
            query: BuiltinMetric::SuccessRate,
            version: "canary".to_owned(),
            window: Duration::from_secs(30),
            min_samples: 1,
        }),
    }
}

fn run(count: u32, retention: u32) -> AnalysisRun {
    let template = AnalysisTemplate {
        name: "t".to_owned(),
        args: vec![],
        metrics: vec![metric(count, retention)],
    };
    new_run("web-1", "web", &[&template], &BTreeMap::new(), START).unwrap()
}

fn value_of(body: &ReportBody) -> Option<String> {
    match body {
        ReportBody::Measurement { value, .. } => value.clone(),
        _ => None,
    }
}

#[test]
fn each_measurement_is_reported_once_even_after_retention_trims_it() {
    let reporting = Reporting::enabled();
    let mut current = run(8, 2);
    assert!(reporting.for_analysis(None, &current, START).is_empty());
    let mut values = Vec::new();
    let mut verdicts = 0;
    for n in 0..8u64 {
        let before = current.clone();
        let now = START.plus(Duration::from_secs(n + 1));
        analysis::record(
            &mut current,
            0,
            Outcome::Value(json!([number_value(0.99 - n as f64 / 1000.0)])),
            now,
        );
        for report in reporting.for_analysis(Some(&before), &current, now) {
            match &report.body {
                ReportBody::Measurement { phase, .. } => {
                    assert_eq!(phase, "Successful");
                    values.push(value_of(&report.body).unwrap());
                }
                ReportBody::Verdict { phase, run, .. } => {
                    assert_eq!((phase.as_str(), run.as_str()), ("Successful", "web-1"));
                    verdicts += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Saving the same run again reports nothing new.
        assert!(reporting
            .for_analysis(Some(&current), &current, now)
            .is_empty());
    }
    assert_eq!(current.metrics[0].measurements.len(), 2, "retention trims");
    assert_eq!(values.len(), 8, "{values:?}");
    assert_eq!(values[0], "[0.99]");
    assert_eq!(verdicts, 1);
}

#[test]
fn a_run_stopped_by_the_rollout_reports_its_verdict_and_nothing_without_a_receiver() {
    let mut current = run(5, 10);
    let before = current.clone();
    analysis::record(
        &mut current,
        0,
        Outcome::Value(json!([number_value(0.97)])),
        START,
    );
    let stopped_before = current.clone();
    analysis::terminate(&mut current, START, "the rollout was aborted");
    let reports = Reporting::enabled().for_analysis(Some(&stopped_before), &current, START);
    assert_eq!(reports.len(), 1);
    assert!(matches!(reports[0].body, ReportBody::Verdict { .. }));
    let disabled = Reporting::new(&edgeroll::config::Config {
        reports: None,
        ..sample_config()
    });
    assert!(disabled
        .for_analysis(Some(&before), &current, START)
        .is_empty());
}

fn sample_config() -> edgeroll::config::Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgeroll.toml");
    std::fs::write(&path, "").unwrap();
    edgeroll::config::load(&path).unwrap()
}
