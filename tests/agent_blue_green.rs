//! End to end: blue-green with the real binary, the process runtime and `edgeroll sample-app`.
//!
//! The new version first serves only the preview listener; `promote` switches the active listener
//! at once; a post-promotion analysis that fails switches back to the old version, which was kept
//! warm, and every request after the switch-back is answered by the old version.

// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{HttpClient, Site, SiteOptions};

/// Share (percent) of `requests` to `address` answered by `version`; all must be 200.
fn share(address: SocketAddr, version: &str, requests: usize) -> f64 {
    let mut client = HttpClient::connect(address);
    let mut hits = 0;
    for _ in 0..requests {
        let answer = client.get("/");
        assert_eq!(answer.status, 200, "{address}: {answer:?}");
        if answer.version.as_deref() == Some(version) {
            hits += 1;
        }
    }
    hits as f64 * 100.0 / requests as f64
}

fn write_blue_green(site: &Site, preview: SocketAddr, version: &str, error_rate: f64) {
    let text = format!(
        r#"apiVersion = "edgeroll/v1"

[[services]]
name = "web"
replicas = 2
traffic = {{ http = "{proxy}" }}

[services.template]
version = "{version}"
command = ["{exe}", "sample-app", "--port", "{{port}}", "--version", "{version}", "--error-rate", "{error_rate}"]
env = {{ EDGEROLL_TEST_MARKER = "{marker}" }}
readiness = {{ httpGet = "/healthz" }}

[services.strategy.blueGreen]
previewService = "{preview}"
previewReplicaCount = 1
autoPromotionEnabled = false
prePromotionAnalysis = {{ templates = [{{ templateName = "smoke" }}] }}
postPromotionAnalysis = {{ templates = [{{ templateName = "success-rate" }}] }}
scaleDownDelaySeconds = 4
abortScaleDownDelaySeconds = 3

[[analysisTemplates]]
name = "smoke"
[[analysisTemplates.metrics]]
name = "smoke"
provider = {{ job = {{ command = ["true"], deadline = "10s" }} }}

[[analysisTemplates]]
name = "success-rate"
[[analysisTemplates.metrics]]
name = "success-rate"
initialDelay = "1s"
interval = "1s"
count = 4
successCondition = "result[0] >= 0.95"
failureLimit = 0
provider = {{ builtin = {{ query = "success_rate", version = "canary", window = "5s" }} }}
"#,
        proxy = site.proxy,
        exe = common::edgeroll(),
        marker = site.marker(),
    );
    let partial = site.desired.with_extension("partial");
    std::fs::write(&partial, text).expect("write desired");
    std::fs::rename(&partial, &site.desired).expect("rename desired");
    site.reload();
}

fn versions(status: &serde_json::Value, role: &str) -> Vec<String> {
    status["instances"]
        .as_array()
        .map(|instances| {
            instances
                .iter()
                .filter(|instance| instance["role"] == role)
                .filter_map(|instance| instance["version"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn blue_green_preview_switch_and_switch_back_on_failed_post_promotion_analysis() {
    let site = Site::start(SiteOptions::default());
    let preview = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    write_blue_green(&site, preview, "1.0.0", 0.0);
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });

    // --- the preview serves the new version; active traffic stays on the old one ---
    write_blue_green(&site, preview, "2.0.0", 0.0);
    let paused = site.wait_for("BlueGreenPause", |s| s["message"] == "BlueGreenPause");
    assert_eq!(paused["strategy"], "blueGreen");
    assert_eq!(paused["phase"], "Paused");
    assert_eq!(
        versions(&paused, "preview"),
        vec!["2.0.0"],
        "previewReplicaCount = 1"
    );
    assert_eq!(
        share(site.proxy, "1.0.0", 300),
        100.0,
        "active stays on 1.0.0"
    );
    assert_eq!(share(preview, "2.0.0", 300), 100.0, "preview serves 2.0.0");
    let runs = paused["analysisRuns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        runs.iter().any(
            |run| run["name"].as_str().is_some_and(|n| n.contains("-pre-"))
                && run["phase"] == "Successful"
        ),
        "the pre-promotion analysis ran: {runs:?}"
    );

    // --- promote: the switch, then post-promotion analysis with the old version warm ---
    let load = site.background_load();
    site.cli_ok(&["promote", "web"]);
    let switched = site.wait_for("switched", |s| s["weights"]["canary"] == 100);
    assert!(
        versions(&switched, "old").contains(&"1.0.0".to_owned()),
        "old version kept warm: {switched}"
    );
    let promoted = site.wait_for("2.0.0 promoted", |s| {
        s["completion"] == "Promoted" && s["stable"]["version"] == "2.0.0"
    });
    load.stop();
    assert_eq!(share(site.proxy, "2.0.0", 300), 100.0);
    assert!(
        versions(&promoted, "old").contains(&"1.0.0".to_owned()),
        "scaleDownDelaySeconds keeps 1.0.0"
    );
    site.wait_for("1.0.0 scaled down after the delay", |s| {
        versions(s, "old").is_empty()
    });

    // --- a bad release: post-promotion analysis fails, active switches back at once ---
    write_blue_green(&site, preview, "3.0.0", 0.5);
    site.wait_for("3.0.0 preview", |s| {
        s["message"] == "BlueGreenPause" && s["canary"]["version"] == "3.0.0"
    });
    let load = site.background_load();
    site.cli_ok(&["promote", "web"]);
    let aborted = site.wait_for("3.0.0 aborted", |s| s["completion"] == "Aborted");
    let switched_back_at = Instant::now();
    load.stop();
    assert_eq!(aborted["phase"], "Degraded");
    assert_eq!(aborted["weights"]["canary"], 0);
    assert_eq!(
        share(site.proxy, "2.0.0", 500),
        100.0,
        "every request after the abort is answered by 2.0.0"
    );
    let warm = site.status();
    if switched_back_at.elapsed() < Duration::from_secs(2) {
        assert!(
            versions(&warm, "preview").contains(&"3.0.0".to_owned()),
            "aborted preview kept warm: {warm}"
        );
    }
    site.wait_for("aborted preview scaled down", |s| {
        s["instances"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["version"] != "3.0.0"))
    });
}
