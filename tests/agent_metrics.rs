//! End to end: the agent's own `/metrics` (`metrics.listen`) on the real `edgeroll run`.
//!
//! Counts what went through the proxy per version, follows a canary into its pause, and (in the
//! ignored test, which `.ci/run` runs with Prometheus installed) is scraped by a real Prometheus,
//! which must accept the exposition and see the same numbers.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HttpClient, Site, SiteOptions};

/// Requests sent through the proxy to the stable version.
const REQUESTS: usize = 50;

fn steps() -> &'static str {
    "steps = [{ setWeight = 50 }, { pause = {} }]"
}

/// The site, with 1.0.0 healthy and `REQUESTS` requests answered through the proxy.
fn site_with_traffic() -> Site {
    let site = Site::start(SiteOptions {
        metrics: true,
        ..SiteOptions::default()
    });
    site.write_desired("1.0.0", 0.0, steps(), 1);
    site.reload();
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0" && common::all_ready(s)
    });
    let mut client = HttpClient::connect(site.proxy);
    for _ in 0..REQUESTS {
        assert_eq!(client.get("/").status, 200);
    }
    site
}

fn scrape(address: SocketAddr, path: &str) -> (u16, String) {
    let answer = HttpClient::connect(address).get(path);
    (
        answer.status,
        String::from_utf8(answer.body).expect("utf-8 exposition"),
    )
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

#[test]
fn metrics_count_proxied_requests_and_follow_the_rollout() {
    let site = site_with_traffic();
    let address = site.metrics.expect("metrics address");

    let (status, text) = scrape(address, "/metrics");
    assert_eq!(status, 200);
    let series = |labels: &str| format!("edgeroll_proxy_requests_total{{{labels}}}");
    assert_eq!(
        sample(
            &text,
            &series(r#"service="web",version="1.0.0",outcome="2xx""#)
        ),
        Some(REQUESTS as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &series(r#"service="web",version="1.0.0",outcome="5xx""#)
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"edgeroll_proxy_request_duration_seconds_count{service="web",version="1.0.0"}"#
        ),
        Some(REQUESTS as f64)
    );
    assert_eq!(
        sample(
            &text,
            r#"edgeroll_rollout_phase{service="web",phase="Healthy"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"edgeroll_instances{service="web",role="stable",ready="true"}"#
        ),
        Some(1.0)
    );
    assert!(
        text.contains("edgeroll_agent_info{version=\"") && text.contains("site=\"test-site\""),
        "{text}"
    );
    let rss = sample(&text, "process_resident_memory_bytes").expect("RSS");
    assert!(rss > 1_000_000.0, "RSS {rss}");
    assert!(text.ends_with("# EOF\n"));

    // A canary: the scrape shows the pause, the split and both revisions.
    site.write_desired("2.0.0", 0.0, steps(), 1);
    site.reload();
    site.wait_for("canary paused at 50 %", |s| {
        s["phase"] == "Paused" && s["weights"]["canary"] == 50
    });
    let (_, text) = scrape(address, "/metrics");
    for (series, value) in [
        (
            r#"edgeroll_rollout_phase{service="web",phase="Paused"}"#,
            1.0,
        ),
        (
            r#"edgeroll_rollout_phase{service="web",phase="Healthy"}"#,
            0.0,
        ),
        (
            r#"edgeroll_rollout_weight_percent{service="web",role="canary"}"#,
            50.0,
        ),
        (
            r#"edgeroll_rollout_revision{service="web",role="canary",version="2.0.0"}"#,
            2.0,
        ),
        (r#"edgeroll_rollout_step{service="web"}"#, 1.0),
        (r#"edgeroll_rollout_steps{service="web"}"#, 2.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }

    let (status, _) = scrape(address, "/v1/status");
    assert_eq!(status, 404, "only /metrics is served");
}

#[test]
fn a_metrics_address_in_use_stops_the_agent_before_anything_runs() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("edgeroll.toml");
    let desired = dir.path().join("desired.toml");
    let proxy = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let marker = format!("{:016x}", fastrand::u64(..));
    std::fs::write(
        &desired,
        format!(
            "apiVersion = \"edgeroll/v1\"\nserial = 1\n[[services]]\nname = \"web\"\nreplicas = 1\n\
             traffic = {{ http = \"{proxy}\" }}\n[services.template]\nversion = \"1.0.0\"\n\
             command = [\"{exe}\", \"sample-app\", \"--port\", \"{{port}}\"]\n\
             env = {{ EDGEROLL_TEST_MARKER = \"{marker}\" }}\n\
             [services.strategy.canary]\nsteps = []\n",
            exe = common::edgeroll(),
        ),
    )
    .expect("write desired");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\nsocket = \"{}\"\n[desired]\nsource = \"{}\"\n\
             [metrics]\nlisten = \"{address}\"\n",
            dir.path().join("state").display(),
            dir.path().join("edgeroll.sock").display(),
            desired.display(),
        ),
    )
    .expect("write config");
    let output = Command::new(common::edgeroll())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run edgeroll");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen on {address} for /metrics (metrics.listen)"
        )),
        "{stderr}"
    );
    // Nothing ran: no rollout was committed (so no effect was issued), no workload started.
    common::kill_marked_processes(&marker);
    let store = edgeroll::store::Store::open(&dir.path().join("state")).expect("open the store");
    let rollouts: Vec<(String, serde_json::Value)> = store.load_rollouts().expect("load rollouts");
    assert!(
        rollouts.is_empty(),
        "the document was applied: {rollouts:?}"
    );
    let workload_logs = dir.path().join("state/logs/web");
    assert!(!workload_logs.exists(), "a workload was started");
}

// === a real Prometheus scrapes the agent ===

/// A Prometheus started by this test, stopped (by its own PID) when dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let address = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: edgeroll\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "cannot start `prometheus`: this test needs it on PATH (apt-get install prometheus)",
            );
        Prometheus { child, address }
    }

    /// The value of the first series `query` returns, once Prometheus answers it.
    fn query(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|byte| match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (byte as char).to_string(),
                _ => format!("%{byte:02X}"),
            })
            .collect();
        let mut client = HttpClient::try_connect(self.address).ok()?;
        let answer = client
            .try_get(&format!("/api/v1/query?query={encoded}"))
            .ok()?;
        let body: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    fn wait_for(&self, query: &str, expected: f64, log: &Path) {
        let deadline = Instant::now() + common::WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(query);
            if last == Some(expected) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "Prometheus: {query} is {last:?}, expected {expected}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs a real Prometheus (apt-get install prometheus); .ci/run runs it"]
fn a_real_prometheus_scrapes_the_agent() {
    let site = site_with_traffic();
    let target = site.metrics.expect("metrics address");
    let dir = tempfile::tempdir().expect("temp dir");
    let prometheus = Prometheus::start(dir.path(), target);
    let log = dir.path().join("prometheus.log");

    // `up` is 1 only when the scrape was parsed: the exposition is valid OpenMetrics.
    prometheus.wait_for(r#"up{job="edgeroll"}"#, 1.0, &log);
    prometheus.wait_for(
        r#"edgeroll_proxy_requests_total{service="web",version="1.0.0",outcome="2xx"}"#,
        REQUESTS as f64,
        &log,
    );
    prometheus.wait_for(
        r#"histogram_quantile(1, edgeroll_proxy_request_duration_seconds_bucket{version="1.0.0"}) < bool 1"#,
        1.0,
        &log,
    );
    prometheus.wait_for(
        r#"edgeroll_rollout_phase{service="web",phase="Healthy"}"#,
        1.0,
        &log,
    );
    prometheus.wait_for(r#"count(edgeroll_agent_info{site="test-site"})"#, 1.0, &log);
}
