//! End to end: the judge provider in the real agent, comparing the canary with stable on the
//! same site over the same window, from the proxy's own samples.
//!
//! Two sample-app releases behind the proxy at 50 % each, with load driven through the proxy:
//! a canary about 30 % slower than stable (and error-free) must Fail the judge and abort the
//! rollout; a canary as fast as stable must Pass and be promoted. The latencies are chosen in
//! the middle of the proxy's histogram buckets (22 ms and 29 ms) so scheduling noise on a busy
//! machine does not move a median across a bucket edge; the sample counts are generous.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Site, SiteOptions};
use serde_json::Value;

/// Stable's per-request latency, milliseconds.
const STABLE_LATENCY_MS: &str = "22";
/// A canary about 30 % slower.
const SLOW_LATENCY_MS: &str = "29";

/// How many load loops run through the proxy at once (each about 40 requests a second).
const LOAD_LOOPS: usize = 3;

const STEPS: &str = r#"steps = [
  { setWeight = 50 },
  { analysis = { templates = [{ templateName = "judge" }] } },
]"#;

/// One judge measurement once both versions have 300 requests in the last 20 s; until then it
/// waits for evidence (retrying every 2 s).
const JUDGE_TEMPLATE: &str = r#"[[analysisTemplates]]
name = "judge"
[[analysisTemplates.metrics]]
name = "latency"
interval = "2s"
count = 1
provider = { judge = { signal = "latency", window = "20s", minSamples = 300, confidence = 0.99, allowedIncrease = 0.1 } }
"#;

/// Deploy stable 1.0.0, then roll `version` with `latency_ms` under load; returns the final
/// status once the rollout completed (promoted or aborted).
fn roll(version: &str, latency_ms: &str) -> (Site, Value) {
    let site = Site::start(SiteOptions::default());
    site.write_desired_with(
        "1.0.0",
        &["--latency-ms", STABLE_LATENCY_MS],
        STEPS,
        JUDGE_TEMPLATE,
        2,
    );
    site.reload();
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });
    let loads: Vec<common::Load> = (0..LOAD_LOOPS).map(|_| site.background_load()).collect();
    site.write_desired_with(
        version,
        &["--latency-ms", latency_ms],
        STEPS,
        JUDGE_TEMPLATE,
        2,
    );
    site.reload();
    let done = site.wait_for(&format!("{version} promoted or aborted"), |s| {
        s["completion"] == "Promoted" || s["completion"] == "Aborted"
    });
    for load in loads {
        load.stop();
    }
    (site, done)
}

/// The judge run's last measurement: (phase, value, message).
fn judge_measurement(status: &Value) -> (String, String, String) {
    let runs = status["analysisRuns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let run = runs.last().expect("the judge run is shown");
    let measurements = run["metrics"][0]["measurements"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = measurements.last().expect("the judge measured");
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    (
        text(&last["phase"]),
        text(&last["value"]),
        text(&last["message"]),
    )
}

#[test]
fn a_thirty_percent_slower_canary_fails_the_judge_and_is_aborted() {
    let (site, status) = roll("2.0.0", SLOW_LATENCY_MS);
    let (phase, value, message) = judge_measurement(&status);
    eprintln!("slow canary: {phase} {value}: {message}");
    assert_eq!(status["completion"], "Aborted", "{status:#}");
    assert_eq!(status["phase"], "Degraded");
    assert_eq!(value, "\"Fail\"", "{message}");
    assert_eq!(phase, "Failed");
    assert!(message.contains("Mann–Whitney"), "{message}");
    assert_eq!(site.canary_share("2.0.0", 200), 0.0);
}

#[test]
fn an_identical_canary_passes_the_judge_and_is_promoted() {
    let (_site, status) = roll("2.0.0", STABLE_LATENCY_MS);
    let (phase, value, message) = judge_measurement(&status);
    eprintln!("identical canary: {phase} {value}: {message}");
    assert_eq!(status["completion"], "Promoted", "{status:#}");
    assert_eq!(status["stable"]["version"], "2.0.0");
    assert_eq!(value, "\"Pass\"", "{message}");
    assert_eq!(phase, "Successful");
}
