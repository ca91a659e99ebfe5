//! End to end: the real `edgeroll` binary with the process runtime and `edgeroll sample-app`.
//!
//! Starts `edgeroll run` on a private state directory, rolls releases through the canary while
//! measuring the split the proxy actually applies, kills the agent with SIGKILL in the middle of a
//! timed pause and checks that the restarted agent resumes at the same step with the same weights,
//! adopts the running workloads and serves again, then checks that a release with errors is aborted
//! automatically and that no request reaches it afterwards.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::{Site, SiteOptions};

const SPLIT_REQUESTS: usize = 2_000;
/// Allowed deviation of the measured canary share, in percentage points (about 4 standard
/// deviations at 2,000 requests and 50 %).
const SPLIT_TOLERANCE: f64 = 4.5;

fn canary_steps() -> &'static str {
    r#"steps = [
  { setWeight = 10 },
  { pause = {} },
  { setWeight = 50 },
  { pause = { duration = "120s" } },
  { setWeight = 90 },
  { pause = {} },
]"#
}

#[test]
fn canary_split_kill9_resume_and_automatic_abort() {
    let mut site = Site::start(SiteOptions::default());
    site.write_desired("1.0.0", 0.0, canary_steps(), 2);
    site.reload();
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });

    // --- the split at each weight ---
    site.write_desired("2.0.0", 0.0, canary_steps(), 2);
    site.reload();
    let mut figures = Vec::new();
    for (weight, next) in [(10, true), (50, false)] {
        site.wait_for(&format!("weight {weight}"), |s| {
            s["weights"]["canary"] == weight && s["phase"] == "Paused"
        });
        let share = site.canary_share("2.0.0", SPLIT_REQUESTS);
        figures.push((weight, share));
        assert!(
            (share - f64::from(weight)).abs() <= SPLIT_TOLERANCE,
            "setWeight {weight}: measured {share:.1} % over {SPLIT_REQUESTS} requests"
        );
        if next {
            site.cli_ok(&["promote", "web"]);
        }
    }

    // --- kill -9 in the middle of the timed pause ---
    let before = site.status();
    let instances_before = common::instance_ids(&before);
    site.kill9_agent();
    let restarted_at = Instant::now();
    site.start_agent();
    let first_answer = site.wait_for_proxy_answer(Duration::from_secs(10));
    let after = site.wait_for("status after restart", |s| s["phase"] == "Paused");
    assert_eq!(after["step"], before["step"], "resumed at the same step");
    assert_eq!(after["weights"], before["weights"], "same weights");
    assert_eq!(after["message"], "CanaryPauseStep");
    // The same timed pause goes on: the deadline is the one committed before the kill, so it
    // neither restarts from zero nor ends early.
    assert!(before["pauseEndsAt"].is_string(), "{before}");
    assert_eq!(
        after["pauseEndsAt"], before["pauseEndsAt"],
        "same pause deadline"
    );
    site.wait_for("workloads adopted", |s| {
        common::instance_ids(s) == instances_before && common::all_ready(s)
    });
    let share = site.canary_share("2.0.0", SPLIT_REQUESTS);
    assert!(
        (share - 50.0).abs() <= SPLIT_TOLERANCE,
        "after restart: {share:.1} %"
    );
    eprintln!(
        "after kill -9: first proxied answer {} ms after the restart began",
        first_answer.duration_since(restarted_at).as_millis()
    );

    site.cli_ok(&["promote", "web"]);
    site.wait_for("weight 90", |s| {
        s["weights"]["canary"] == 90 && s["phase"] == "Paused"
    });
    let share = site.canary_share("2.0.0", SPLIT_REQUESTS);
    figures.push((90, share));
    assert!(
        (share - 90.0).abs() <= SPLIT_TOLERANCE,
        "setWeight 90: measured {share:.1} %"
    );
    site.cli_ok(&["promote", "web"]);
    site.wait_for("2.0.0 promoted", |s| {
        s["phase"] == "Healthy"
            && s["stable"]["version"] == "2.0.0"
            && s["completion"] == "Promoted"
    });
    for (weight, share) in &figures {
        eprintln!("setWeight {weight}: canary share {share:.1} % over {SPLIT_REQUESTS} requests");
    }

    // --- a release with errors is aborted by analysis, and then gets no traffic ---
    let analysis_steps = r#"steps = [
  { setWeight = 30 },
  { analysis = { templates = [{ templateName = "success-rate" }] } },
  { pause = {} },
]"#;
    site.write_desired("3.0.0", 0.3, analysis_steps, 2);
    site.reload();
    site.wait_for("3.0.0 under analysis", |s| {
        s["canary"]["version"] == "3.0.0"
    });
    let load = site.background_load();
    let aborted = site.wait_for("3.0.0 aborted", |s| s["completion"] == "Aborted");
    load.stop();
    assert_eq!(aborted["phase"], "Degraded");
    assert_eq!(aborted["weights"]["canary"], 0);
    assert!(
        aborted["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("RolloutAborted"),
        "{}",
        aborted["message"]
    );
    let runs = aborted["analysisRuns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last_run = runs.last().expect("the analysis run is shown");
    assert_eq!(last_run["phase"], "Failed");
    assert!(!last_run["metrics"][0]["measurements"]
        .as_array()
        .unwrap()
        .is_empty());
    let share = site.canary_share("3.0.0", 1_000);
    assert_eq!(share, 0.0, "no request may reach the aborted version");
    let text = site.cli_ok(&["get", "web"]);
    assert!(text.contains("Degraded"), "{text}");

    site.cli_ok(&["retry", "web"]);
    site.wait_for("retried", |s| {
        s["completion"].is_null() && s["canary"]["version"] == "3.0.0"
    });
    site.cli_ok(&["abort", "web"]);
    let refused = site.cli_fails(&["abort", "web"]);
    assert!(refused.contains("already aborted"), "{refused}");
}

#[test]
fn a_second_agent_on_the_same_state_directory_refuses_to_start() {
    let site = Site::start(SiteOptions::default());
    let output = site.run_second_agent();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another edgeroll agent"), "{stderr}");
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_leaves_workloads_running() {
    let mut site = Site::start(SiteOptions::default());
    let text = format!(
        r#"apiVersion = "edgeroll/v1"
[[services]]
name = "web"
traffic = {{ http = "{proxy}" }}
[services.template]
version = "1.0.0"
command = ["{exe}", "sample-app", "--port", "{{port}}", "--version", "1.0.0", "--latency-ms", "1500"]
env = {{ EDGEROLL_TEST_MARKER = "{marker}" }}
readiness = {{ httpGet = "/healthz" }}
[services.strategy.canary]
steps = []
"#,
        proxy = site.proxy,
        exe = common::edgeroll(),
        marker = site.marker(),
    );
    std::fs::write(&site.desired, text).expect("write desired");
    site.reload();
    let healthy = site.wait_for("healthy", |s| s["phase"] == "Healthy");
    let instances = common::instance_ids(&healthy);

    // A request that takes 1.5 s is in flight when SIGTERM arrives.
    let proxy = site.proxy;
    let slow = std::thread::spawn(move || common::HttpClient::connect(proxy).get("/"));
    std::thread::sleep(Duration::from_millis(300));
    let status = site.terminate_agent();
    let answer = slow.join().expect("the slow request");
    assert_eq!(
        answer.status, 200,
        "the in-flight request finished: {answer:?}"
    );
    assert_eq!(status.code(), Some(0), "the agent exits cleanly on SIGTERM");
    assert!(
        std::net::TcpStream::connect(proxy).is_err(),
        "the proxy no longer accepts connections"
    );

    // The workload kept running and is adopted, not restarted, by the next agent.
    site.start_agent();
    let adopted = site.wait_for("adopted", |s| {
        s["phase"] == "Healthy" && common::all_ready(s)
    });
    assert_eq!(common::instance_ids(&adopted), instances);
    assert_eq!(adopted["instances"][0]["restarts"], 0);
}

#[test]
fn sighup_reloads_the_config_and_an_invalid_config_changes_nothing() {
    let site = Site::start(SiteOptions::default());
    site.write_desired("1.0.0", 0.0, "steps = []", 1);
    site.reload();
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });

    // An invalid drop-in on SIGHUP: logged with file, line and field, and nothing changes.
    let drop_ins = site.dir.path().join("edgeroll.d");
    std::fs::create_dir_all(&drop_ins).expect("edgeroll.d");
    let drop_in = drop_ins.join("50-site.toml");
    std::fs::write(&drop_in, "[agent]\nsocket_mode = \"0777\"\n").expect("drop-in");
    site.reload();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !site
        .agent_log()
        .contains("the config is invalid; keeping the running one")
    {
        assert!(
            Instant::now() < deadline,
            "no error logged:\n{}",
            site.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        site.agent_log()
            .contains("50-site.toml:2:15: agent.socket_mode"),
        "{}",
        site.agent_log()
    );
    assert_eq!(site.status()["stable"]["version"], "1.0.0");

    // A valid drop-in naming another site and another desired document: SIGHUP applies both.
    let other = site.dir.path().join("other.toml");
    let document = std::fs::read_to_string(&site.desired).expect("desired");
    std::fs::write(&other, document.replace("1.0.0", "2.0.0")).expect("other desired");
    std::fs::write(
        &drop_in,
        format!(
            "[agent]\nsite = \"renamed-site\"\n\n[desired]\nsource = \"file://{}\"\n",
            other.display()
        ),
    )
    .expect("drop-in");
    site.reload();
    site.wait_for("2.0.0 promoted from the other document", |s| {
        s["stable"]["version"] == "2.0.0" && s["phase"] == "Healthy"
    });
    let all = site.cli_ok(&["get", "-o", "json"]);
    let all: serde_json::Value = serde_json::from_str(&all).expect("status");
    assert_eq!(all["site"], "renamed-site");
}
