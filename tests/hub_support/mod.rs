//! A private `edgeroll hub` for tests: a temporary directory with `hub.toml`, a documents
//! directory and a state directory; the hub run in this process (on its own runtime) or as the
//! real binary; a small blocking HTTP/1.1 client; and report batches to send it.
// These tests drive real sockets and processes in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeroll::time::Timestamp;
use edgeroll::wire::report::{Report, ReportBatch, ReportBody, RevisionRef};
use tokio_util::sync::CancellationToken;

/// How long a test waits for a condition before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A hub's directory: `hub.toml`, `docs/`, `state/`.
pub struct HubDir {
    pub dir: tempfile::TempDir,
}

impl HubDir {
    /// A new directory whose `hub.toml` listens on `listen` and adds `extra` (TOML).
    pub fn new(listen: &str, extra: &str) -> HubDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("docs")).expect("docs");
        let hub = HubDir { dir };
        hub.write_config(listen, extra);
        hub
    }

    /// Rewrite `hub.toml`.
    pub fn write_config(&self, listen: &str, extra: &str) {
        let text = format!(
            "listen = \"{listen}\"\nstate_dir = \"state\"\ndocuments = \"docs\"\n\
             reload_interval = \"200ms\"\nlast_seen_flush = \"200ms\"\n{extra}\n"
        );
        std::fs::write(self.config(), text).expect("write hub.toml");
    }

    /// Start the real `edgeroll hub` binary on this directory and wait until `address` (its
    /// `listen`) answers.
    pub fn spawn(&self, address: SocketAddr) -> std::process::Child {
        let child = std::process::Command::new(edgeroll())
            .args(["hub", "--config"])
            .arg(self.config())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start edgeroll hub");
        wait_listening(address);
        child
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("hub.toml")
    }

    pub fn docs(&self) -> PathBuf {
        self.dir.path().join("docs")
    }

    /// Write the document `name` (atomically) with `serial`, `selector` (TOML inline table
    /// body, e.g. `cohort = "pilot"`) and the service's `version`.
    pub fn write_document(&self, name: &str, serial: u64, selector: &str, version: &str) {
        let text = document(serial, selector, version);
        let path = self.docs().join(name);
        let partial = self.dir.path().join(format!("{name}.partial"));
        std::fs::write(&partial, text).expect("write document");
        std::fs::rename(&partial, &path).expect("rename document");
    }
}

/// The text of a small valid desired document.
pub fn document(serial: u64, selector: &str, version: &str) -> String {
    let selector = if selector.is_empty() {
        String::new()
    } else {
        format!("selector = {{ {selector} }}\n")
    };
    format!(
        "apiVersion = \"edgeroll/v1\"\nserial = {serial}\n{selector}\n[[services]]\n\
         name = \"telemetry-ingest\"\ntraffic = {{ http = \"0.0.0.0:8080\" }}\n\n\
         [services.template]\nversion = \"{version}\"\n\
         command = [\"/opt/ingest/bin/ingest\", \"--listen\", \"127.0.0.1:{{port}}\"]\n\n\
         [services.strategy.canary]\nsteps = [{{ setWeight = 20 }}, {{ pause = {{}} }}]\n"
    )
}

/// A hub run in this process, on its own runtime thread; dropping it stops it.
pub struct InProcessHub {
    pub address: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessHub {
    /// Start the hub of `dir`; panics with the hub's error when it cannot start.
    pub fn start(dir: &HubDir) -> InProcessHub {
        let config = edgeroll::hub::config::load(&dir.config()).expect("valid hub.toml");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (started, address) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                match edgeroll::hub::start(config, token).await {
                    Ok(hub) => {
                        started.send(Ok(hub.address)).expect("report address");
                        hub.wait().await;
                    }
                    Err(error) => started.send(Err(error.to_string())).expect("report error"),
                }
            });
        });
        let address = address
            .recv()
            .expect("hub thread")
            .unwrap_or_else(|error| panic!("the hub did not start: {error}"));
        InProcessHub {
            address,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Stop and wait for the hub.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for InProcessHub {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The test binary.
pub fn edgeroll() -> &'static str {
    env!("CARGO_BIN_EXE_edgeroll")
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request (`Connection: close`); `Err` when the connection fails.
pub fn try_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    exchange(stream, address, method, path, headers, body)
}

/// As [`try_request`], over TLS with `tls` (server name `127.0.0.1`), for a hub with `[tls]`.
pub fn try_request_tls(
    tls: &Arc<rustls::ClientConfig>,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let tcp = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let name = rustls::pki_types::ServerName::from(address.ip());
    let connection =
        rustls::ClientConnection::new(tls.clone(), name).map_err(std::io::Error::other)?;
    exchange(
        rustls::StreamOwned::new(connection, tcp),
        address,
        method,
        path,
        headers,
        body,
    )
}

/// One request and its answer on a connected stream.
fn exchange(
    mut stream: impl Read + Write,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer (413) and close before the whole body is sent: read the answer
    // whatever happened to the rest of the body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    if let Err(error) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(error);
        }
    }
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// One request that must get an answer.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    try_request(address, method, path, headers, body)
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
}

/// A site's poll of its desired document.
pub fn poll(address: SocketAddr, site: &str, labels: &str, etag: Option<&str>) -> Answer {
    let mut headers = vec![("edgeroll-site", site)];
    if !labels.is_empty() {
        headers.push(("edgeroll-labels", labels));
    }
    if let Some(etag) = etag {
        headers.push(("if-none-match", etag));
    }
    request(
        address,
        "GET",
        &edgeroll::wire::desired_path(site),
        &headers,
        b"",
    )
}

/// A batch of `site` covering `first..=last` with a rollout report for each of `seqs`.
pub fn batch(
    site: &str,
    first: u64,
    last: u64,
    seqs: impl IntoIterator<Item = u64>,
) -> ReportBatch {
    ReportBatch {
        site: site.to_owned(),
        first,
        last,
        reports: seqs
            .into_iter()
            .map(|seq| Report {
                seq,
                at: Timestamp::from_millis(1_764_600_000_000 + seq),
                body: ReportBody::Rollout {
                    service: "telemetry-ingest".to_owned(),
                    kind: "StepAdvanced".to_owned(),
                    message: format!("step of report {seq}"),
                    phase: "Progressing".to_owned(),
                    completion: None,
                    stable: Some(RevisionRef {
                        revision: 1,
                        version: "2.4.0".to_owned(),
                    }),
                    canary: Some(RevisionRef {
                        revision: 2,
                        version: "2.5.0".to_owned(),
                    }),
                    serial: Some(42),
                },
            })
            .collect(),
        dropped: BTreeMap::new(),
    }
}

/// A batch of one rollout report: `site`'s service `phase` on `version` (stable, no canary),
/// following `serial`, as report `seq`.
pub fn state_batch(site: &str, seq: u64, serial: u64, phase: &str, version: &str) -> ReportBatch {
    ReportBatch {
        site: site.to_owned(),
        first: seq,
        last: seq,
        reports: vec![Report {
            seq,
            at: Timestamp::from_millis(1_764_600_000_000 + seq),
            body: ReportBody::Rollout {
                service: "telemetry-ingest".to_owned(),
                kind: "StateChanged".to_owned(),
                message: String::new(),
                phase: phase.to_owned(),
                completion: None,
                stable: Some(RevisionRef {
                    revision: seq,
                    version: version.to_owned(),
                }),
                canary: None,
                serial: Some(serial),
            },
        }],
        dropped: BTreeMap::new(),
    }
}

/// POST a batch the way a site does (gzip, idempotency key).
pub fn try_post_batch(address: SocketAddr, batch: &ReportBatch) -> std::io::Result<Answer> {
    let key = edgeroll::wire::report::idempotency_key(batch);
    try_request(
        address,
        "POST",
        edgeroll::wire::REPORTS_PATH,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("idempotency-key", &key),
            ("edgeroll-site", &batch.site),
        ],
        &edgeroll::wire::report::encode(batch),
    )
}

pub fn post_batch(address: SocketAddr, batch: &ReportBatch) -> Answer {
    try_post_batch(address, batch).expect("POST batch")
}

/// Every sequence number the hub holds for `site`, in order, and its high-water mark.
pub fn held(address: SocketAddr, site: &str) -> (Vec<u64>, u64) {
    held_via(|path| request(address, "GET", path, &[], b""), site)
}

/// As [`held`], with `get` doing each GET of the read API (e.g. over TLS).
pub fn held_via(mut get: impl FnMut(&str) -> Answer, site: &str) -> (Vec<u64>, u64) {
    let mut seqs = Vec::new();
    let mut after = 0;
    let mut high_water;
    loop {
        let answer = get(&format!(
            "/v1/sites/{site}/reports?after={after}&limit=10000"
        ));
        assert_eq!(answer.status, 200, "{}", answer.text());
        let page = answer.json();
        high_water = page["highWater"].as_u64().unwrap_or(0);
        let reports = page["reports"].as_array().cloned().unwrap_or_default();
        if reports.is_empty() {
            break;
        }
        for report in reports {
            let seq = report["seq"].as_u64().expect("seq");
            seqs.push(seq);
            after = seq;
        }
    }
    (seqs, high_water)
}

/// Wait until `condition` holds, or fail with `what`.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Wait until something answers HTTP on `address`.
pub fn wait_listening(address: SocketAddr) {
    wait_for(&format!("the hub on {address}"), || {
        try_request(address, "GET", "/v1/documents", &[], b"").is_ok()
    });
}

/// The path of `name` in `dir`.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
