//! `edgeroll demo`: the whole loop on one machine with nothing installed.
//!
//! Starts a real agent (the same `shell::start` as `edgeroll run`) with the process runtime and
//! `edgeroll sample-app` as the workload, drives about 100 requests per second through its proxy,
//! rolls a healthy release through a canary to `Promoted`, then a release that answers 20 % of
//! requests with errors, which analysis must abort. The last line printed is the JSON summary.
//! Everything lives in a temporary directory that is removed at the end, and every workload it
//! started is stopped. It must never touch the system's own agent, state or sockets.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::types::{ServiceStatus, Status};
use crate::shell;

/// The demo's service name.
const SERVICE: &str = "demo-app";
/// Requests per second the load driver sends.
const REQUESTS_PER_SECOND: u64 = 100;
/// Share of errors in the bad release.
const BAD_ERROR_RATE: f64 = 0.2;
/// How long a release may take before the demo gives up.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(45);
/// Concurrent requests the load driver allows.
const MAX_IN_FLIGHT: usize = 32;

/// The JSON summary, the demo's last line.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    releases: Vec<ReleaseSummary>,
    requests: u64,
    failed_requests_after_abort: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReleaseSummary {
    version: String,
    completion: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// From the first failing canary answer to 0 % canary traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    reaction_ms: Option<u64>,
}

/// What the load driver saw, shared with the demo.
#[derive(Debug, Default)]
struct Observed {
    requests: u64,
    /// When the first 5xx from the bad version arrived.
    first_bad_failure: Option<Instant>,
    /// Set once the abort is seen; requests sent after it are checked.
    abort_seen_at: Option<Instant>,
    /// Requests sent after the abort that reached the bad version or failed.
    failed_after_abort: u64,
    bad_version: Option<String>,
}

/// Run the demo; with `json`, progress goes to stderr and only the summary to stdout.
pub async fn run(json: bool) -> anyhow::Result<()> {
    let progress = Progress { json };
    let dir = DemoDir::create()?;
    let proxy_port = free_port().context("cannot find a free port for the demo's proxy")?;
    let executable = std::env::current_exe().context("cannot find the edgeroll executable")?;
    let config_path = dir.path.join("edgeroll.toml");
    let desired_path = dir.path.join("desired.toml");
    std::fs::write(&config_path, demo_config(&dir.path, &desired_path))
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    write_desired(&desired_path, &executable, proxy_port, "1.0.0", 0.0)?;
    let config = crate::config::load(&config_path).map_err(|diagnostics| {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the demo's own config is invalid:\n{}", lines.join("\n"))
    })?;

    progress.say(&format!(
        "edgeroll demo: agent with the process runtime, {SERVICE} behind the proxy on 127.0.0.1:{proxy_port}"
    ));
    let shutdown = CancellationToken::new();
    let agent = shell::start(config, shutdown.clone())
        .await
        .context("cannot start the demo agent")?;
    let mut status = agent.status.clone();
    let outcome = drive(
        &agent,
        &mut status,
        &progress,
        &desired_path,
        &executable,
        proxy_port,
    )
    .await;

    progress.say("stopping the demo's workloads");
    agent.supervisor.stop_all().await;
    shutdown.cancel();
    if let Err(error) = agent.stopped().await {
        progress.say(&format!("the agent did not stop cleanly: {error}"));
    }
    let summary = outcome?;
    let line = serde_json::to_string(&summary).context("cannot encode the summary")?;
    println!("{line}");
    if summary.failed_requests_after_abort > 0 {
        bail!(
            "{} requests reached the bad version or failed after the abort",
            summary.failed_requests_after_abort
        );
    }
    Ok(())
}

async fn drive(
    agent: &shell::Agent,
    status: &mut watch::Receiver<Arc<Status>>,
    progress: &Progress,
    desired_path: &Path,
    executable: &Path,
    proxy_port: u16,
) -> anyhow::Result<Summary> {
    let mut releases = Vec::new();
    progress.say("release 1.0.0: first revision, no canary");
    wait_for(status, progress, |service| service.phase == "Healthy").await?;

    let observed = Arc::new(Mutex::new(Observed::default()));
    let load_stop = CancellationToken::new();
    let load = tokio::spawn(drive_load(
        SocketAddr::from(([127, 0, 0, 1], proxy_port)),
        observed.clone(),
        load_stop.clone(),
    ));

    progress.say("release 2.0.0: healthy; canary with analysis of its success rate");
    write_desired(desired_path, executable, proxy_port, "2.0.0", 0.0)?;
    reload(agent).await;
    let promoted = wait_for(status, progress, |service| {
        service
            .stable
            .as_ref()
            .is_some_and(|stable| stable.version == "2.0.0")
            && service.phase == "Healthy"
    })
    .await?;
    releases.push(ReleaseSummary {
        version: "2.0.0".to_owned(),
        completion: promoted.completion.clone().unwrap_or_default(),
        reason: None,
        reaction_ms: None,
    });

    progress.say(&format!(
        "release 3.0.0: answers {:.0} % of requests with 500; analysis must abort it",
        BAD_ERROR_RATE * 100.0
    ));
    if let Ok(mut observed) = observed.lock() {
        observed.bad_version = Some("3.0.0".to_owned());
    }
    write_desired(
        desired_path,
        executable,
        proxy_port,
        "3.0.0",
        BAD_ERROR_RATE,
    )?;
    reload(agent).await;
    let aborted = wait_for(status, progress, |service| {
        service
            .canary
            .as_ref()
            .is_some_and(|canary| canary.version == "3.0.0")
            && service.completion.as_deref() == Some("Aborted")
    })
    .await?;
    let aborted_at = Instant::now();
    if let Ok(mut observed) = observed.lock() {
        observed.abort_seen_at = Some(aborted_at);
    }
    // Keep sending for a while: every request after the abort must stay on stable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    load_stop.cancel();
    let _ = load.await;

    let observed = observed
        .lock()
        .map_err(|_| anyhow::anyhow!("load statistics are unavailable"))?;
    let reaction_ms = observed.first_bad_failure.map(|first| {
        u64::try_from(aborted_at.saturating_duration_since(first).as_millis()).unwrap_or(u64::MAX)
    });
    releases.push(ReleaseSummary {
        version: "3.0.0".to_owned(),
        completion: aborted.completion.clone().unwrap_or_default(),
        reason: Some(aborted.message.clone()),
        reaction_ms,
    });
    if let Some(reaction_ms) = reaction_ms {
        progress.say(&format!(
            "from the first failing canary answer to 0 % canary traffic: {reaction_ms} ms"
        ));
    }
    progress.say(&format!(
        "{} requests sent; {} reached 3.0.0 or failed after the abort",
        observed.requests, observed.failed_after_abort
    ));
    Ok(Summary {
        releases,
        requests: observed.requests,
        failed_requests_after_abort: observed.failed_after_abort,
    })
}

async fn reload(agent: &shell::Agent) {
    // The file is also noticed by polling; asking directly just saves a second.
    let _ = agent.reload.send(()).await;
}

/// Wait until the demo service satisfies `done`, printing each change on the way.
async fn wait_for(
    status: &mut watch::Receiver<Arc<Status>>,
    progress: &Progress,
    done: impl Fn(&ServiceStatus) -> bool,
) -> anyhow::Result<ServiceStatus> {
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    let mut last_line = String::new();
    loop {
        let current = status
            .borrow_and_update()
            .services
            .iter()
            .find(|service| service.name == SERVICE)
            .cloned();
        if let Some(service) = current {
            let line = describe(&service);
            if line != last_line {
                progress.say(&format!("  {line}"));
                last_line = line;
            }
            if done(&service) {
                return Ok(service);
            }
        }
        match tokio::time::timeout_at(deadline, status.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the agent stopped during the demo"),
            Err(_) => bail!(
                "the release did not finish within {}s (last: {last_line})",
                RELEASE_TIMEOUT.as_secs()
            ),
        }
    }
}

fn describe(service: &ServiceStatus) -> String {
    let mut line = format!("{:<11}", service.phase);
    if let Some(step) = service.step {
        let _ = write!(
            line,
            " step {}/{}",
            (step.index + 1).min(step.count),
            step.count
        );
    }
    let _ = write!(
        line,
        " weights stable {}% canary {}%",
        service.weights.stable, service.weights.canary
    );
    if let Some(canary) = &service.canary {
        let _ = write!(line, " | canary {}", canary.version);
    }
    if let Some(stable) = &service.stable {
        let _ = write!(line, " | stable {}", stable.version);
    }
    if let Some(measurement) = service
        .analysis_runs
        .last()
        .filter(|_| service.canary.is_some())
        .and_then(|run| run.metrics.first())
        .and_then(|metric| metric.measurements.last())
    {
        let _ = write!(
            line,
            " | success rate {} {}",
            measurement.value.as_deref().unwrap_or("-"),
            measurement.phase
        );
    }
    if !service.message.is_empty() {
        let _ = write!(line, " | {}", service.message);
    }
    line
}

/// Send `REQUESTS_PER_SECOND` through the proxy until stopped, recording what answered.
async fn drive_load(proxy: SocketAddr, observed: Arc<Mutex<Observed>>, stop: CancellationToken) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = match format!("http://{proxy}/").parse() {
        Ok(uri) => uri,
        Err(_) => return,
    };
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / REQUESTS_PER_SECOND));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let uri = uri.clone();
        let observed = observed.clone();
        tokio::spawn(async move {
            let sent_at = Instant::now();
            let answer = client.get(uri).await;
            let (status, version) = match answer {
                Ok(response) => {
                    let version = response
                        .headers()
                        .get("x-version")
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned);
                    let status = response.status().as_u16();
                    // Drain the body so the connection is reused.
                    let _ = response.into_body().collect().await;
                    (status, version)
                }
                Err(_) => (0, None),
            };
            if let Ok(mut observed) = observed.lock() {
                observed.requests += 1;
                let is_bad = observed.bad_version.is_some() && version == observed.bad_version;
                if is_bad && status >= 500 && observed.first_bad_failure.is_none() {
                    observed.first_bad_failure = Some(Instant::now());
                }
                let after_abort = observed.abort_seen_at.is_some_and(|at| sent_at >= at);
                if after_abort && (is_bad || !(200..300).contains(&status)) {
                    observed.failed_after_abort += 1;
                }
            }
            drop(permit);
        });
    }
    // Let the requests already sent finish so they are counted.
    let _ = in_flight
        .acquire_many(u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX))
        .await;
}

/// Progress lines: stdout in text mode, stderr in JSON mode.
struct Progress {
    json: bool,
}

impl Progress {
    fn say(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// A private temporary directory, removed when dropped.
struct DemoDir {
    path: PathBuf,
}

impl DemoDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "edgeroll-demo-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(DemoDir { path })
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn demo_config(dir: &Path, desired: &Path) -> String {
    format!(
        r#"[agent]
site = "demo"
state_dir = "{state}"
socket = "{socket}"
shutdown_grace = "2s"

[runtime]
kind = "process"
stop_grace = "2s"

[desired]
source = "file://{desired}"
"#,
        state = dir.join("state").display(),
        socket = dir.join("edgeroll.sock").display(),
        desired = desired.display(),
    )
}

fn write_desired(
    path: &Path,
    executable: &Path,
    proxy_port: u16,
    version: &str,
    error_rate: f64,
) -> anyhow::Result<()> {
    let text = format!(
        r#"apiVersion = "edgeroll/v1"
serial = 1

[[services]]
name = "{SERVICE}"
replicas = 1
progressDeadlineSeconds = 30
progressDeadlineAbort = true
traffic = {{ http = "127.0.0.1:{proxy_port}" }}

[services.template]
version = "{version}"
command = ["{executable}", "sample-app", "--port", "{{port}}", "--version", "{version}", "--error-rate", "{error_rate}"]
readiness = {{ httpGet = "/healthz" }}

[services.strategy.canary]
steps = [
  {{ setWeight = 20 }},
  {{ analysis = {{ templates = [{{ templateName = "success-rate" }}] }} }},
  {{ setWeight = 50 }},
  {{ pause = {{ duration = "3s" }} }},
]

[[analysisTemplates]]
name = "success-rate"
[[analysisTemplates.metrics]]
name = "success-rate"
initialDelay = "1s"
interval = "1s"
count = 5
successCondition = "result[0] >= 0.97"
failureLimit = 0
provider = {{ builtin = {{ query = "success_rate", version = "canary", window = "5s" }} }}
"#,
        executable = executable.display(),
    );
    // Write then rename, so the agent never reads half a document.
    let partial = path.with_extension("toml.partial");
    std::fs::write(&partial, text)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
