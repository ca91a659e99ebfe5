//! The judge provider: the canary against the stable version on the same site, over the same
//! window, from the proxy's own per-request samples.
//!
//! This module owns collecting both versions' samples and turning the pure judgement
//! (`crate::analysis::judge`) into an [`Outcome`]: too few samples on either side is
//! [`Outcome::NoData`] (so the metric waits for evidence or is Inconclusive, never Failed); a
//! judgement is the verdict string (`"Pass"`, `"Marginal"`, `"Fail"`) with the figures as the
//! measurement's message. It never decides what a verdict does: the metric's conditions do.

use serde_json::Value;

use crate::analysis::judge::{self, Bounds, Judgement};
use crate::analysis::Outcome;
use crate::spec::{JudgeSignal, JudgeSpec};

use super::{window_text, ProviderContext, CANARY_ROLE, STABLE_ROLE};

/// Judge the canary against stable as `spec` says.
pub fn measure(spec: &JudgeSpec, context: &ProviderContext) -> Outcome {
    let (Some(stable), Some(canary)) = (&context.stable_version, &context.canary_version) else {
        let missing = if context.stable_version.is_none() {
            STABLE_ROLE
        } else {
            CANARY_ROLE
        };
        return Outcome::NoData(format!(
            "no {missing} version to compare right now: the judge needs both a canary and a \
             stable version"
        ));
    };
    if stable == canary {
        return Outcome::NoData(format!(
            "canary and stable are the same version {canary}: nothing to compare"
        ));
    }
    let window = window_text(spec.window);
    let bounds = Bounds {
        confidence: spec.confidence,
        allowed_increase: spec.allowed_increase,
    };
    let metrics = &context.metrics;
    let (judgement, stable_count, canary_count) = match spec.signal {
        JudgeSignal::Latency => {
            let stable_samples = metrics.latency_samples(stable, spec.window);
            let canary_samples = metrics.latency_samples(canary, spec.window);
            let counts = (stable_samples.len() as u64, canary_samples.len() as u64);
            if let Some(no_data) = too_few(spec, stable, canary, counts, &window) {
                return no_data;
            }
            (
                judge::judge_latency(&stable_samples, &canary_samples, bounds),
                counts.0,
                counts.1,
            )
        }
        JudgeSignal::Errors => {
            let stable_outcomes = metrics.outcome_samples(stable, spec.window);
            let canary_outcomes = metrics.outcome_samples(canary, spec.window);
            let counts = (stable_outcomes.1, canary_outcomes.1);
            if let Some(no_data) = too_few(spec, stable, canary, counts, &window) {
                return no_data;
            }
            (
                judge::judge_errors(stable_outcomes, canary_outcomes, bounds),
                counts.0,
                counts.1,
            )
        }
    };
    let note = note(spec, &judgement, stable_count, canary_count, &window);
    Outcome::ValueWithNote(Value::String(judgement.verdict.as_str().to_owned()), note)
}

/// "No data" when either version has fewer than `minSamples` requests in the window.
fn too_few(
    spec: &JudgeSpec,
    stable: &str,
    canary: &str,
    (stable_count, canary_count): (u64, u64),
    window: &str,
) -> Option<Outcome> {
    if stable_count >= spec.min_samples && canary_count >= spec.min_samples {
        return None;
    }
    Some(Outcome::NoData(format!(
        "too few requests to compare in the last {window}: canary {canary} {canary_count}, \
         stable {stable} {stable_count} (minSamples {})",
        spec.min_samples
    )))
}

/// The figures users read in the measurement's message, e.g.
/// `latency median canary 26.3ms vs stable 20.1ms (+30.8%, allowed +10%); Mann–Whitney U=…,
/// p=…; 1200 canary and 1180 stable requests in the last 30s`.
fn note(
    spec: &JudgeSpec,
    judgement: &Judgement,
    stable_count: u64,
    canary_count: u64,
    window: &str,
) -> String {
    let figures = match spec.signal {
        JudgeSignal::Latency => format!(
            "latency median canary {} vs stable {}",
            milliseconds(judgement.canary_figure),
            milliseconds(judgement.stable_figure)
        ),
        JudgeSignal::Errors => format!(
            "failure rate canary {:.2}% vs stable {:.2}%",
            judgement.canary_figure * 100.0,
            judgement.stable_figure * 100.0
        ),
    };
    let test = &judgement.test;
    let ranked = if test.stable_samples as u64 == stable_count
        && test.canary_samples as u64 == canary_count
    {
        String::new()
    } else {
        format!(
            ", ranked {} and {}",
            test.canary_samples, test.stable_samples
        )
    };
    format!(
        "{figures} (effect {}, allowed {}); Mann–Whitney U={:.1}, z={:.2}, p={}, significant \
         below {}; {canary_count} canary and {stable_count} stable requests in the last \
         {window}{ranked}",
        percent(judgement.effect),
        percent(spec.allowed_increase),
        test.u,
        test.z,
        p_value_text(test.p_value),
        p_value_text(1.0 - spec.confidence),
    )
}

/// `26.3ms`.
fn milliseconds(seconds: f64) -> String {
    format!("{:.1}ms", seconds * 1000.0)
}

/// `+30.8%`, `-4.0%`, `+inf%`.
fn percent(ratio: f64) -> String {
    format!("{:+.1}%", ratio * 100.0)
}

/// A p-value readable at any size: `0.0123`, `3.2e-9`.
fn p_value_text(p_value: f64) -> String {
    if p_value >= 0.001 || p_value == 0.0 {
        format!("{p_value:.4}")
    } else {
        format!("{p_value:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::proxy::{Metrics, RequestOutcome};

    fn spec(signal: JudgeSignal) -> JudgeSpec {
        JudgeSpec {
            signal,
            window: Duration::from_secs(60),
            min_samples: 50,
            confidence: 0.95,
            allowed_increase: 0.1,
        }
    }

    fn context(metrics: Arc<Metrics>) -> ProviderContext {
        ProviderContext {
            metrics,
            stable_version: Some("1.0.0".to_owned()),
            canary_version: Some("2.0.0".to_owned()),
            jobs: None,
        }
    }

    fn record(metrics: &Metrics, version: &str, count: u32, millis: u64, status: u16) {
        for index in 0..count {
            // Spread over a few buckets, as real latencies are.
            let jitter = u64::from(index % 5);
            metrics.record(
                version,
                RequestOutcome::Status(status),
                Duration::from_millis(millis + jitter),
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slower_canary_fails_with_its_figures_in_the_note() {
        let metrics = Arc::new(Metrics::new());
        record(&metrics, "1.0.0", 300, 20, 200);
        record(&metrics, "2.0.0", 300, 26, 200);
        let outcome = measure(&spec(JudgeSignal::Latency), &context(metrics));
        let Outcome::ValueWithNote(value, note) = outcome else {
            panic!("expected a verdict, got {outcome:?}");
        };
        assert_eq!(value, Value::String("Fail".to_owned()));
        assert!(note.starts_with("latency median canary"), "{note}");
        assert!(
            note.contains("300 canary and 300 stable requests"),
            "{note}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn too_few_samples_is_no_data() {
        let metrics = Arc::new(Metrics::new());
        record(&metrics, "1.0.0", 300, 20, 200);
        record(&metrics, "2.0.0", 7, 20, 500);
        let outcome = measure(&spec(JudgeSignal::Errors), &context(metrics));
        assert_eq!(
            outcome,
            Outcome::NoData(
                "too few requests to compare in the last 1m: canary 2.0.0 7, stable 1.0.0 300 \
                 (minSamples 50)"
                    .to_owned()
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_canary_is_no_data() {
        let mut context = context(Arc::new(Metrics::new()));
        context.canary_version = None;
        assert!(matches!(
            measure(&spec(JudgeSignal::Latency), &context),
            Outcome::NoData(message) if message.starts_with("no canary version")
        ));
    }
}
