//! The judge's statistics on synthetic samples with known answers: p-values against values
//! computed by hand (and normal-table look-ups), verdicts for known shifts, no data below
//! `minSamples`, ties and constant series, and a property: swapping canary and stable can never
//! make both directions Fail.

use std::sync::Arc;
use std::time::Duration;

use edgeroll::analysis::judge::{
    decide, judge_errors, judge_latency, mann_whitney, Bounds, Verdict,
};
use edgeroll::analysis::Outcome;
use edgeroll::provider::{self, ProviderContext};
use edgeroll::proxy::{Metrics, RequestOutcome};
use edgeroll::spec::{JudgeSignal, JudgeSpec, Metric, Provider};
use proptest::prelude::*;
use serde_json::json;

const BOUNDS: Bounds = Bounds {
    confidence: 0.95,
    allowed_increase: 0.1,
};

/// `count` latencies around `center` seconds: a deterministic pseudo-random spread of ±20 %.
fn latencies(seed: u64, count: usize, center: f64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| center * (0.8 + 0.4 * rng.f64()))
        .collect()
}

#[test]
fn p_value_of_two_separated_samples_matches_the_hand_computation() {
    // U = 25 of 25 pairs; mean 12.5; variance 5·5·11/12 = 22.917; with the continuity
    // correction z = (25 − 12.5 − 0.5) / 4.7871 = 2.5067; two-sided p = 2·(1 − Φ(2.5067)).
    // Normal table: Φ(2.50) = 0.99379, Φ(2.51) = 0.99396 → Φ(2.5067) ≈ 0.993904, p ≈ 0.012192.
    let test = mann_whitney(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]);
    assert_eq!(test.u, 25.0);
    assert!((test.z - 2.5067).abs() < 1e-3, "{test:?}");
    assert!((test.p_value - 0.012192).abs() < 1e-4, "{test:?}");
    // Symmetric: the other way round U is 0 and z negative, with the same p-value.
    let reverse = mann_whitney(&[6.0, 7.0, 8.0, 9.0, 10.0], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(reverse.u, 0.0);
    assert!((reverse.p_value - test.p_value).abs() < 1e-12);
    assert!(reverse.z < 0.0);
}

#[test]
fn p_value_with_ties_uses_average_ranks_and_the_tie_correction() {
    // Pooled 1,1,2,2,2,2,3,3: ranks 1.5 (×2), 4.5 (×4), 7.5 (×2). Canary ranks 4.5+4.5+7.5+7.5
    // = 24, U = 24 − 4·5/2 = 14. Ties Σ(t³−t) = 6 + 60 + 6 = 72; variance
    // 16/12·(9 − 72/56) = 10.2857; z = (14 − 8 − 0.5)/3.20713 = 1.71493; from the normal table
    // Φ(1.71) = 0.95637, Φ(1.72) = 0.95728 → Φ ≈ 0.956819, p ≈ 0.086362.
    let test = mann_whitney(&[1.0, 1.0, 2.0, 2.0], &[2.0, 2.0, 3.0, 3.0]);
    assert_eq!(test.u, 14.0);
    assert!((test.z - 1.71493).abs() < 1e-4, "{test:?}");
    assert!((test.p_value - 0.086362).abs() < 2e-4, "{test:?}");
}

#[test]
fn constant_and_identical_series_cannot_be_told_apart() {
    let constant = vec![0.02; 100];
    let test = mann_whitney(&constant, &constant);
    assert_eq!(test.p_value, 1.0);
    let judgement = judge_latency(&constant, &constant, BOUNDS);
    assert_eq!(judgement.verdict, Verdict::Pass);
    assert_eq!(judgement.effect, 0.0);
    // No samples at all: nothing to compare, p = 1.
    assert_eq!(mann_whitney(&[], &constant).p_value, 1.0);
}

#[test]
fn identical_distributions_pass() {
    let stable = latencies(1, 200, 0.020);
    let canary = latencies(2, 200, 0.020);
    let judgement = judge_latency(&stable, &canary, BOUNDS);
    assert_eq!(judgement.verdict, Verdict::Pass, "{judgement:?}");
    assert!(judgement.test.p_value > 0.05, "{judgement:?}");
}

#[test]
fn a_thirty_percent_slower_canary_fails() {
    let stable = latencies(3, 200, 0.020);
    let canary = latencies(4, 200, 0.026);
    let judgement = judge_latency(&stable, &canary, BOUNDS);
    assert_eq!(judgement.verdict, Verdict::Fail, "{judgement:?}");
    assert!(judgement.test.p_value < 1e-6, "{judgement:?}");
    assert!((judgement.effect - 0.3).abs() < 0.08, "{judgement:?}");
}

#[test]
fn a_seven_percent_slower_canary_is_marginal_at_ten_percent_allowed() {
    // Significant with 200 samples a side, worse by more than half of the allowed 10 % but not
    // by all of it: Marginal, which pauses for a human.
    let stable = latencies(5, 200, 0.020);
    let canary = latencies(6, 200, 0.0214);
    let judgement = judge_latency(&stable, &canary, BOUNDS);
    assert!(judgement.test.p_value < 0.05, "{judgement:?}");
    assert!(
        judgement.effect > 0.05 && judgement.effect <= 0.1,
        "{judgement:?}"
    );
    assert_eq!(judgement.verdict, Verdict::Marginal, "{judgement:?}");
}

#[test]
fn a_faster_canary_always_passes() {
    let stable = latencies(7, 200, 0.026);
    let canary = latencies(8, 200, 0.020);
    let judgement = judge_latency(&stable, &canary, BOUNDS);
    assert!(judgement.test.p_value < 1e-6);
    assert!(judgement.effect < 0.0);
    assert_eq!(judgement.verdict, Verdict::Pass);
}

#[test]
fn errors_zero_against_five_percent_fail_and_equal_rates_pass() {
    // Stable has no failures, so the effect is in percentage points: +5 pp is 5.0.
    let judgement = judge_errors((0, 400), (20, 400), BOUNDS);
    assert_eq!(judgement.verdict, Verdict::Fail, "{judgement:?}");
    assert!((judgement.effect - 5.0).abs() < 1e-9);
    assert!(judgement.test.p_value < 1e-4, "{judgement:?}");
    // Both error-free: every sample tied, p = 1.
    let clean = judge_errors((0, 400), (0, 400), BOUNDS);
    assert_eq!(clean.verdict, Verdict::Pass);
    assert_eq!(clean.test.p_value, 1.0);
    // 2 % against 2.2 %: a relative +10 %, far from significant.
    let close = judge_errors((20, 1000), (22, 1000), BOUNDS);
    assert_eq!(close.verdict, Verdict::Pass, "{close:?}");
    // One failure in 200 is no evidence of anything.
    assert_eq!(
        judge_errors((0, 200), (1, 200), BOUNDS).verdict,
        Verdict::Pass
    );
}

#[test]
fn the_verdict_rule() {
    assert_eq!(decide(0.01, 0.3, BOUNDS), Verdict::Fail);
    assert_eq!(decide(0.01, 0.07, BOUNDS), Verdict::Marginal);
    assert_eq!(decide(0.01, 0.04, BOUNDS), Verdict::Pass);
    assert_eq!(decide(0.2, 0.3, BOUNDS), Verdict::Pass);
    assert_eq!(decide(0.01, -0.3, BOUNDS), Verdict::Pass);
    assert_eq!(decide(0.01, f64::NAN, BOUNDS), Verdict::Pass);
}

#[test]
fn large_samples_are_down_sampled_and_still_decide() {
    let stable = latencies(9, 50_000, 0.020);
    let canary = latencies(10, 50_000, 0.026);
    let judgement = judge_latency(&stable, &canary, BOUNDS);
    assert_eq!(judgement.test.stable_samples, 5_000);
    assert_eq!(judgement.verdict, Verdict::Fail);
}

fn judge_metric(signal: JudgeSignal, min_samples: u64) -> Metric {
    Metric {
        name: "judge".to_owned(),
        interval: Some(Duration::from_secs(10)),
        initial_delay: None,
        count: Some(3),
        success_condition: Some("result == 'Pass'".to_owned()),
        failure_condition: Some("result == 'Fail'".to_owned()),
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        consecutive_success_limit: 0,
        dry_run: false,
        measurement_retention: None,
        wait_for_evidence: None,
        provider: Provider::Judge(JudgeSpec {
            signal,
            window: Duration::from_secs(60),
            min_samples,
            confidence: 0.95,
            allowed_increase: 0.1,
        }),
    }
}

#[tokio::test(start_paused = true)]
async fn the_provider_says_no_data_below_min_samples_and_judges_above() {
    let metrics = Arc::new(Metrics::new());
    let context = ProviderContext {
        metrics: Arc::clone(&metrics),
        stable_version: Some("1.0.0".to_owned()),
        canary_version: Some("2.0.0".to_owned()),
        jobs: None,
    };
    for index in 0..40u64 {
        metrics.record(
            "1.0.0",
            RequestOutcome::Status(200),
            Duration::from_millis(20 + index % 4),
        );
        metrics.record(
            "2.0.0",
            RequestOutcome::Status(200),
            Duration::from_millis(26 + index % 4),
        );
    }
    let metric = judge_metric(JudgeSignal::Latency, 50);
    let outcome = provider::measure(&metric, &context).await;
    assert!(
        matches!(&outcome, Outcome::NoData(message) if message.contains("canary 2.0.0 40")),
        "{outcome:?}"
    );
    let metric = judge_metric(JudgeSignal::Latency, 20);
    match provider::measure(&metric, &context).await {
        Outcome::ValueWithNote(value, note) => {
            assert_eq!(value, json!("Fail"));
            assert!(note.contains("p="), "{note}");
        }
        other => panic!("expected a verdict, got {other:?}"),
    }
    assert_eq!(
        provider::describe(&metric, &context),
        r#"judge latency{canary="2.0.0", stable="1.0.0"}[1m] minSamples=20 confidence=0.95 allowedIncrease=0.1"#
    );
}

proptest! {
    #[test]
    fn swapping_canary_and_stable_never_fails_both_ways(
        seed in any::<u64>(),
        stable_count in 20..300usize,
        canary_count in 20..300usize,
        shift in 0.5..2.0f64,
        allowed in 0.0..0.5f64,
    ) {
        let bounds = Bounds { confidence: 0.95, allowed_increase: allowed };
        let stable = latencies(seed, stable_count, 0.020);
        let canary = latencies(seed.wrapping_add(1), canary_count, 0.020 * shift);
        let forward = judge_latency(&stable, &canary, bounds);
        let backward = judge_latency(&canary, &stable, bounds);
        prop_assert!(
            !(forward.verdict == Verdict::Fail && backward.verdict == Verdict::Fail),
            "{forward:?} / {backward:?}"
        );
        prop_assert!((forward.test.p_value - backward.test.p_value).abs() < 1e-9);
        if forward.verdict != Verdict::Pass {
            prop_assert_eq!(backward.verdict, Verdict::Pass);
        }
    }

    #[test]
    fn swapping_error_counts_never_fails_both_ways(
        stable_failures in 0..50u64,
        canary_failures in 0..50u64,
        requests in 50..500u64,
    ) {
        let forward = judge_errors((stable_failures, requests), (canary_failures, requests), BOUNDS);
        let backward = judge_errors((canary_failures, requests), (stable_failures, requests), BOUNDS);
        prop_assert!(!(forward.verdict == Verdict::Fail && backward.verdict == Verdict::Fail));
        if forward.verdict != Verdict::Pass {
            prop_assert_eq!(backward.verdict, Verdict::Pass);
        }
    }
}
