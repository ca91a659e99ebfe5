//! A private edgeroll site for end-to-end tests: a temporary state directory, config and desired
//! document, the real `edgeroll run` process, the CLI, and a small HTTP/1.1 client for the proxy.
//!
//! Every workload the agent starts carries a marker in its environment, so the site can find and
//! stop them all when the test ends, even when it fails half-way.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The test binary under test.
pub fn edgeroll() -> &'static str {
    env!("CARGO_BIN_EXE_edgeroll")
}

/// How long a test waits for a condition before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Settings of a site.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    /// The service's name.
    pub service: String,
    /// Serve the agent's own `/metrics` on a free loopback port (`metrics.listen`).
    pub metrics: bool,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions {
            service: "web".to_owned(),
            metrics: false,
        }
    }
}

/// The analysis template `write_desired` adds: the canary's success rate over 5 s, measured
/// every second after 1 s, 5 times; any measurement below 95 % fails it.
pub const SUCCESS_RATE_TEMPLATE: &str = r#"[[analysisTemplates]]
name = "success-rate"
[[analysisTemplates.metrics]]
name = "success-rate"
initialDelay = "1s"
interval = "1s"
count = 5
successCondition = "result[0] >= 0.95"
failureLimit = 0
provider = { builtin = { query = "success_rate", version = "canary", window = "5s" } }
"#;

/// One agent with its own directory.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub service: String,
    pub proxy: SocketAddr,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub desired: PathBuf,
    /// Where the agent serves `/metrics`, when the site was started with `metrics`.
    pub metrics: Option<SocketAddr>,
    marker: String,
    agent: Option<Child>,
}

impl Site {
    /// Write the config and start `edgeroll run`.
    pub fn start(options: SiteOptions) -> Site {
        let mut site = Site::create(options);
        site.start_agent();
        site
    }

    /// Write the config (a `file://` source, site `test-site`) without starting the agent, for
    /// a test that rewrites `config` first and then calls [`Site::start_agent`].
    pub fn create(options: SiteOptions) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("edgeroll.sock");
        let config = dir.path().join("edgeroll.toml");
        let desired = dir.path().join("desired.toml");
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = options
            .metrics
            .then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let metrics_section = metrics
            .map(|address| format!("\n[metrics]\nlisten = \"{address}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "[agent]\nsite = \"test-site\"\nstate_dir = \"{}\"\nsocket = \"{}\"\nshutdown_grace = \"2s\"\n\n\
                 [runtime]\nkind = \"process\"\nstop_grace = \"2s\"\n\n[desired]\nsource = \"file://{}\"\n{metrics_section}",
                dir.path().join("state").display(),
                socket.display(),
                desired.display()
            ),
        )
        .expect("write config");
        let marker = format!("{:016x}", fastrand::u64(..));
        Site {
            dir,
            service: options.service,
            proxy,
            socket,
            config,
            desired,
            metrics,
            marker,
            agent: None,
        }
    }

    /// The environment marker every workload of this site must carry (`EDGEROLL_TEST_MARKER`),
    /// so the site can stop them all when the test ends.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Start (or restart) `edgeroll run` and wait until its socket answers.
    pub fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("agent log");
        let child = Command::new(edgeroll())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("EDGEROLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start edgeroll run");
        self.agent = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.cli(&["get", "-o", "json"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the agent did not answer on its socket\n{}",
            self.agent_log()
        );
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// SIGKILL the agent and reap it (its workloads keep running).
    pub fn kill9_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the agent and wait for it to exit; returns its exit status.
    pub fn terminate_agent(&mut self) -> std::process::ExitStatus {
        let mut child = self.agent.take().expect("the agent runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the agent did not stop within {WAIT:?} of SIGTERM\n{}",
            self.agent_log()
        );
    }

    /// Run a second `edgeroll run` on the same config and collect its output.
    pub fn run_second_agent(&self) -> Output {
        let mut child = Command::new(edgeroll())
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a second agent");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return child.wait_with_output().expect("output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait_with_output().expect("output");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Write the desired document: one service with `replicas` instances of sample-app answering
    /// `error_rate` of requests with 500, and the `success-rate` analysis template.
    pub fn write_desired(&self, version: &str, error_rate: f64, steps: &str, replicas: u32) {
        let error_rate = error_rate.to_string();
        self.write_desired_with(
            version,
            &["--error-rate", &error_rate],
            steps,
            SUCCESS_RATE_TEMPLATE,
            replicas,
        );
    }

    /// Write the desired document: one service with `replicas` instances of sample-app run with
    /// the extra `app_args` (e.g. `["--latency-ms", "22"]`), the canary strategy body `steps`
    /// and the analysis templates `templates` (TOML text, `[[analysisTemplates]]` tables).
    pub fn write_desired_with(
        &self,
        version: &str,
        app_args: &[&str],
        steps: &str,
        templates: &str,
        replicas: u32,
    ) {
        let text = self.desired_text(version, app_args, steps, templates, replicas);
        let partial = self.desired.with_extension("partial");
        std::fs::write(&partial, text).expect("write desired");
        std::fs::rename(&partial, &self.desired).expect("rename desired");
    }

    /// The text [`Site::write_desired_with`] writes (`serial = 1`, no selector): this site's
    /// proxy address and marker, so a center can serve it to this site.
    pub fn desired_text(
        &self,
        version: &str,
        app_args: &[&str],
        steps: &str,
        templates: &str,
        replicas: u32,
    ) -> String {
        let extra: String = app_args.iter().map(|arg| format!(", {arg:?}")).collect();
        format!(
            r#"apiVersion = "edgeroll/v1"
serial = 1

[[services]]
name = "{service}"
replicas = {replicas}
traffic = {{ http = "{proxy}" }}

[services.template]
version = "{version}"
command = ["{exe}", "sample-app", "--port", "{{port}}", "--version", "{version}"{extra}]
env = {{ EDGEROLL_TEST_MARKER = "{marker}" }}
readiness = {{ httpGet = "/healthz" }}

[services.strategy.canary]
{steps}

{templates}
"#,
            service = self.service,
            proxy = self.proxy,
            exe = edgeroll(),
            marker = self.marker,
        )
    }

    /// Ask the agent to re-read the desired document now (SIGHUP).
    pub fn reload(&self) {
        if let Some(child) = &self.agent {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
        }
    }

    /// Run the CLI against this site's socket.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(edgeroll())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run the CLI")
    }

    /// Run the CLI; it must succeed. Returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "edgeroll {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Run the CLI; it must exit 1. Returns stdout and stderr.
    pub fn cli_fails(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "edgeroll {args:?}: {output:?}"
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// The service's status (`get SERVICE -o json`).
    pub fn status(&self) -> Value {
        let text = self.cli_ok(&["get", &self.service, "-o", "json"]);
        serde_json::from_str(&text).expect("status JSON")
    }

    /// Poll the status until `done` holds; returns that status.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let output = self.cli(&["get", &self.service, "-o", "json"]);
            if output.status.success() {
                if let Ok(status) = serde_json::from_slice::<Value>(&output.stdout) {
                    if done(&status) {
                        return status;
                    }
                    last = status;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; last status:\n{}\nagent log:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            self.agent_log()
        );
    }

    /// Send `requests` through the proxy on one keep-alive connection; the share (percent)
    /// answered by `version`. Every request must be answered 200.
    pub fn canary_share(&self, version: &str, requests: usize) -> f64 {
        let mut client = HttpClient::connect(self.proxy);
        let mut hits = 0usize;
        for _ in 0..requests {
            let answer = client.get("/");
            assert_eq!(
                answer.status, 200,
                "a request through the proxy failed: {answer:?}"
            );
            if answer.version.as_deref() == Some(version) {
                hits += 1;
            }
        }
        hits as f64 * 100.0 / requests as f64
    }

    /// Wait until the proxy answers 200; returns when.
    pub fn wait_for_proxy_answer(&self, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(mut client) = HttpClient::try_connect(self.proxy) {
                if let Ok(answer) = client.try_get("/") {
                    if answer.status == 200 {
                        return Instant::now();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!(
            "the proxy did not answer within {within:?}\n{}",
            self.agent_log()
        );
    }

    /// Requests in a loop on another thread until stopped (about 200 per second).
    pub fn background_load(&self) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let proxy = self.proxy;
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut client = None;
            while !flag.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = HttpClient::try_connect(proxy).ok();
                }
                if let Some(connection) = client.as_mut() {
                    if connection.try_get("/").is_err() {
                        client = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            // SIGTERM first so the agent stops cleanly, then make sure.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_marked_processes(&self.marker);
    }
}

/// Background requests; stops when dropped.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Stop and wait.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Kill every process whose environment holds `EDGEROLL_TEST_MARKER=<marker>`.
pub fn kill_marked_processes(marker: &str) {
    let needle = format!("EDGEROLL_TEST_MARKER={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|byte| *byte == 0)
            .any(|var| var == needle.as_bytes())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Instance ids in a service status, sorted.
pub fn instance_ids(status: &Value) -> Vec<String> {
    let mut ids: Vec<String> = status["instances"]
        .as_array()
        .map(|instances| {
            instances
                .iter()
                .filter_map(|instance| instance["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Whether every instance is ready.
pub fn all_ready(status: &Value) -> bool {
    status["instances"].as_array().is_some_and(|instances| {
        !instances.is_empty() && instances.iter().all(|i| i["ready"] == true)
    })
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub version: Option<String>,
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 keep-alive client, enough to count which version answered.
pub struct HttpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> HttpClient {
        HttpClient::try_connect(addr).expect("connect to the proxy")
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<HttpClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    pub fn get(&mut self, path: &str) -> Answer {
        self.try_get(path).expect("HTTP request")
    }

    pub fn try_get(&mut self, path: &str) -> std::io::Result<Answer> {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: edgeroll-test\r\n\r\n"
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut version = None;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "x-version" => version = Some(value.to_owned()),
                    "content-length" => length = value.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok(Answer {
            status,
            version,
            body,
        })
    }
}

/// Path of a fixture file.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
