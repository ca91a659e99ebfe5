//! End to end: two metrics due at the same instant, the first in template order answering
//! Inconclusive and the second Failed. The real agent must abort the rollout (the worst verdict
//! wins), not pause it for a human: the defect of issue 13.
//!
//! Both metrics read the proxy's own success rate of the canary, with load driven through the
//! proxy, and both wait the same `initialDelay`, so they are measured in one round. The first
//! can never decide (its success condition is above 1 and its failure condition below 0); the
//! second always fails.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Site, SiteOptions};

const STEPS: &str = r#"steps = [
  { setWeight = 50 },
  { analysis = { templates = [{ templateName = "two-metrics" }] } },
  { setWeight = 100 },
]"#;

const TEMPLATES: &str = r#"[[analysisTemplates]]
name = "two-metrics"

[[analysisTemplates.metrics]]
name = "never-decides"
initialDelay = "3s"
successCondition = "result[0] > 2"
failureCondition = "result[0] < 0"
provider = { builtin = { query = "success_rate", version = "canary", window = "10s" } }

[[analysisTemplates.metrics]]
name = "always-fails"
initialDelay = "3s"
failureCondition = "result[0] <= 1"
provider = { builtin = { query = "success_rate", version = "canary", window = "10s" } }
"#;

#[test]
fn an_inconclusive_metric_listed_first_does_not_hide_a_failed_one() {
    let site = Site::start(SiteOptions::default());
    site.write_desired_with("1.0.0", &[], STEPS, TEMPLATES, 1);
    site.reload();
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });
    let load = site.background_load();
    site.write_desired_with("2.0.0", &[], STEPS, TEMPLATES, 1);
    site.reload();
    let done = site.wait_for("2.0.0 aborted or paused", |s| {
        s["completion"] == "Aborted" || s["phase"] == "Paused" || s["completion"] == "Promoted"
    });
    load.stop();
    assert_eq!(
        done["completion"], "Aborted",
        "the rollout must abort on the Failed metric, not pause: {done:#}"
    );
    assert_eq!(done["weights"]["canary"], 0, "{done:#}");
    let runs = done["analysisRuns"].as_array().cloned().unwrap_or_default();
    let run = runs.last().expect("the analysis run is shown");
    assert_eq!(run["phase"], "Failed", "{run:#}");
    let phases: Vec<(String, String)> = run["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|metric| {
            (
                metric["name"].as_str().unwrap_or_default().to_owned(),
                metric["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        phases,
        vec![
            ("never-decides".to_owned(), "Inconclusive".to_owned()),
            ("always-fails".to_owned(), "Failed".to_owned()),
        ],
        "{run:#}"
    );
}
