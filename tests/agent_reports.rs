//! End to end: a real `edgeroll run` with `[reports]` pointing at a receiver on 127.0.0.1 rolls
//! a canary through an analysis step, is killed with SIGKILL in the middle and restarted, and
//! the receiver ends with every rollout event (with the state it left), every measurement and
//! the verdict, once each, numbered without a gap; `edgeroll get` shows the outbox drained.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;
mod report_support;

use std::time::Duration;

use common::{Site, SiteOptions};
use edgeroll::wire::report::ReportBody;
use report_support::Receiver;

const SITE: &str = "test-site";

/// A site whose agent reports to `receiver` (retrying fast).
fn reporting_site(receiver: &Receiver) -> Site {
    let mut site = Site::start(SiteOptions::default());
    site.terminate_agent();
    let drop_ins = site.dir.path().join("edgeroll.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("reports.toml"),
        format!(
            "[reports]\nurl = \"{}\"\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\ntimeout = \"5s\"\n",
            receiver.url()
        ),
    )
    .unwrap();
    site.start_agent();
    site
}

/// The outbox drained, as `edgeroll get -o json` shows it; returns the status.
fn drained(site: &Site) -> serde_json::Value {
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&site.cli_ok(&["get", "-o", "json"])).unwrap();
        let reports = &status["reports"];
        if reports["depth"] == 0 && reports["acked"] == reports["lastSeq"] {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not drained: {reports}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_events_of_a_real_rollout_reach_the_receiver_once_each() {
    let receiver = Receiver::start();
    let mut site = reporting_site(&receiver);
    site.write_desired("1.0.0", 0.0, "steps = []", 1);
    site.reload();
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });
    let steps = r#"steps = [
  { setWeight = 50 },
  { analysis = { templates = [{ templateName = "success-rate" }] } },
  { pause = {} },
]"#;
    site.write_desired("2.0.0", 0.0, steps, 1);
    site.reload();
    let load = site.background_load();
    site.wait_for("2.0.0 under analysis", |s| {
        s["canary"]["version"] == "2.0.0" && !s["analysisRuns"].as_array().unwrap().is_empty()
    });
    // Killed mid-analysis: what was committed is in the outbox and goes out after the restart.
    std::thread::sleep(Duration::from_millis(1_500));
    site.kill9_agent();
    site.start_agent();
    site.wait_for("analysis passed, paused", |s| {
        s["phase"] == "Paused" && s["step"]["index"] == 2
    });
    load.stop();
    site.cli_ok(&["promote", "web"]);
    site.wait_for("2.0.0 promoted", |s| {
        s["stable"]["version"] == "2.0.0" && s["completion"] == "Promoted"
    });

    // The outbox drains, and `get` says so.
    let deadline = std::time::Instant::now() + common::WAIT;
    let status = loop {
        let status: serde_json::Value =
            serde_json::from_str(&site.cli_ok(&["get", "-o", "json"])).unwrap();
        let reports = &status["reports"];
        if reports["depth"] == 0 && reports["acked"] == reports["lastSeq"] {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not drained: {reports}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let reports = &status["reports"];
    assert_eq!(reports["url"], receiver.url());
    assert_eq!(reports["lastOk"], true, "{reports}");
    let text = site.cli_ok(&["get"]);
    assert!(
        text.contains("Reports:") && text.contains("0 undelivered"),
        "{text}"
    );

    // One copy each, numbered 1.. without a gap, across the SIGKILL.
    let seqs = receiver.seqs(SITE);
    let last = reports["lastSeq"].as_u64().unwrap();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>());
    let seen = receiver.seen.lock().unwrap();
    let bodies: Vec<&ReportBody> = seen.reports[SITE].iter().map(|r| &r.body).collect();
    let kinds: Vec<String> = bodies
        .iter()
        .filter_map(|body| match body {
            ReportBody::Rollout { kind, .. } => Some(kind.clone()),
            _ => None,
        })
        .collect();
    eprintln!(
        "{} reports; rollout events: {}",
        bodies.len(),
        kinds.join(", ")
    );
    // Instances becoming ready records no event, but the center learns that 1.0.0 is healthy.
    assert!(
        bodies.iter().any(|body| matches!(body,
            ReportBody::Rollout { kind, phase, stable: Some(stable), .. }
                if kind == "StateChanged" && phase == "Healthy" && stable.version == "1.0.0")),
        "no report says 1.0.0 became healthy"
    );
    let measurements = bodies
        .iter()
        .filter(|body| matches!(body, ReportBody::Measurement { .. }))
        .count();
    assert!(
        measurements >= 5,
        "5 measurements of success-rate, got {measurements}"
    );
    assert!(
        bodies
            .iter()
            .any(|body| matches!(body, ReportBody::Verdict { phase, .. } if phase == "Successful")),
        "the verdict"
    );
    // The last rollout event carries the state it left: 2.0.0 stable and promoted.
    let last_event = bodies
        .iter()
        .rev()
        .find_map(|body| match body {
            ReportBody::Rollout {
                completion,
                stable,
                serial,
                ..
            } => Some((completion.clone(), stable.clone(), *serial)),
            _ => None,
        })
        .expect("rollout events");
    assert_eq!(last_event.0.as_deref(), Some("Promoted"));
    assert_eq!(
        last_event.1.map(|stable| stable.version).as_deref(),
        Some("2.0.0")
    );
    assert_eq!(last_event.2, Some(1));
}

#[test]
fn sigkill_at_random_instants_of_a_rollout_loses_and_repeats_no_report() {
    let receiver = Receiver::start();
    let mut site = reporting_site(&receiver);
    site.write_desired("1.0.0", 0.0, "steps = []", 1);
    site.reload();
    site.wait_for("1.0.0 healthy", |s| s["phase"] == "Healthy");
    let steps = r#"steps = [
  { setWeight = 10 }, { pause = { duration = "1s" } },
  { setWeight = 30 }, { pause = { duration = "1s" } },
  { setWeight = 50 }, { pause = { duration = "1s" } },
  { setWeight = 70 }, { pause = { duration = "1s" } },
  { setWeight = 90 }, { pause = { duration = "1s" } },
]"#;
    site.write_desired("2.0.0", 0.0, steps, 1);
    site.reload();
    let mut kills = 0;
    loop {
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..600)));
        let status = site.status();
        if status["stable"]["version"] == "2.0.0" {
            break;
        }
        site.kill9_agent();
        kills += 1;
        site.start_agent();
        assert!(kills < 60, "the rollout did not finish");
    }
    let status = drained(&site);
    let last = status["reports"]["lastSeq"].as_u64().unwrap();
    let seqs = receiver.seqs(SITE);
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<u64>>(),
        "after {kills} kills"
    );
    let seen = receiver.seen.lock().unwrap();
    let weights: Vec<String> = seen.reports[SITE]
        .iter()
        .filter_map(|report| match &report.body {
            ReportBody::Rollout { kind, message, .. } if kind == "WeightChanged" => {
                Some(message.clone())
            }
            _ => None,
        })
        .collect();
    eprintln!(
        "{kills} SIGKILLs; {last} reports, {} duplicate batches acknowledged again; weights: {}",
        seen.duplicates,
        weights.join(" | ")
    );
    assert!(kills >= 3, "only {kills} kills");
    assert_eq!(
        weights.len(),
        5,
        "one report per weight change: {weights:?}"
    );
}
