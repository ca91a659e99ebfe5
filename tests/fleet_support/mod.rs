//! A simulated fleet for tests: thousands of sites, each an async task speaking the real site
//! protocol over HTTP to a real `edgeroll hub` (docs/protocol.md), plus the hub itself run as
//! the real binary, which a test may `kill -9` and start again.
//!
//! A simulated site polls `GET /v1/sites/{site}/desired` with the `edgeroll-site` and
//! `edgeroll-labels` headers and `If-None-Match`, reads a new document's `serial` and the
//! `template.version` of each service (JSON or TOML), and reports what an agent would: per-site
//! sequence numbers from 1, `Document applied`, then per service a `RolloutStarted`
//! (Progressing) and, after its rollout time, `RolloutPromoted` (Healthy on the new version and
//! serial) or, for a site told to abort that version, `RolloutAborted` (Degraded, Aborted). It
//! keeps its reports until the hub acknowledges them (200 or 409 with an Ack), like the
//! agent's outbox. A site can be put to sleep (it then answers nothing and sends nothing) and
//! woken. All sites share a few keep-alive connections.
//!
//! It owns no product code: it must never reach into the hub's internals, only its HTTP API, so
//! what it shows is what a real fleet would see. It does not verify signatures (the agent's own
//! tests do).
// Real sockets, real processes, in real time.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeroll::hub::plan::view::PlanView;
use edgeroll::time::Timestamp;
use edgeroll::wire::report::{Ack, Report, ReportBatch, ReportBody, RevisionRef};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::hub_support::{try_request, Answer, HubDir};

/// The most reports a simulated site puts in one batch.
const BATCH_REPORTS: usize = 100;
/// How long one request may take before the site counts it as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The hub, as the real binary.

/// `edgeroll hub` run as the real binary on plain HTTP, with its directory.
pub struct HubProcess {
    pub dir: HubDir,
    pub address: SocketAddr,
    child: Option<Child>,
    started: u32,
}

impl HubProcess {
    /// Write `hub.toml` (listening on a free port, plus `extra`) and start the hub.
    pub fn start(extra: &str) -> HubProcess {
        let address: SocketAddr = format!("127.0.0.1:{}", crate::hub_support::free_port())
            .parse()
            .expect("address");
        let dir = HubDir::new(&address.to_string(), extra);
        let mut hub = HubProcess {
            dir,
            address,
            child: None,
            started: 0,
        };
        hub.spawn();
        hub
    }

    fn spawn(&mut self) {
        self.started += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("hub log");
        let child = Command::new(crate::hub_support::edgeroll())
            .args(["hub", "--config"])
            .arg(self.dir.config())
            .env("EDGEROLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start edgeroll hub");
        self.child = Some(child);
        let deadline = Instant::now() + crate::hub_support::WAIT;
        loop {
            if try_request(self.address, "GET", "/v1/documents", &[], b"").is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the hub exited ({status}):\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "the hub did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.dir.path().join("hub.log")
    }

    /// The hub's log (every run of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `kill -9` the hub and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the hub again on the same directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A GET of the read API.
    pub fn get(&self, path: &str) -> Answer {
        try_request(self.address, "GET", path, &[], b"")
            .unwrap_or_else(|error| panic!("GET {path}: {error}\n{}", self.log()))
    }

    /// A GET that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
        answer.json()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated sites.

/// What one simulated site is.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// Its name (`edgeroll-site`).
    pub name: String,
    /// Its labels (`edgeroll-labels`).
    pub labels: BTreeMap<String, String>,
    /// Template versions this site aborts when told to roll to them.
    pub aborts: Vec<String>,
}

/// Settings of the whole fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How often an awake site polls (each wait is jittered by ±25 %).
    pub poll_interval: Duration,
    /// How long a rollout takes on a site: uniformly between the two.
    pub rollout: (Duration, Duration),
    /// How many connections (and requests in flight) all the sites share.
    pub connections: usize,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            poll_interval: Duration::from_secs(1),
            rollout: (Duration::from_millis(100), Duration::from_millis(500)),
            connections: 16,
        }
    }
}

/// What a site holds: the document it follows and what runs.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// The serial of the document it accepted last.
    pub serial: Option<u64>,
    /// Every serial it applied, in order.
    pub applied: Vec<u64>,
    /// Service → the stable version that runs.
    pub stable: BTreeMap<String, String>,
    /// Whether its last rollout aborted.
    pub aborted: bool,
    /// Whether a rollout is still in progress.
    pub rolling: bool,
    /// Reports not yet acknowledged by the hub.
    pub undelivered: usize,
    /// The last sequence number it used (0: none yet).
    pub last_seq: u64,
    /// The hub's last acknowledgement.
    pub acked: u64,
    /// Polls answered (200, 304 or 404) so far.
    pub polls: u64,
    /// Polls answered since the site was last woken (all of them if it never slept).
    pub polls_awake: u64,
}

impl Held {
    /// Settled on `serial` with `version` for every service, everything delivered.
    pub fn settled_on(&self, serial: u64, version: &str) -> bool {
        self.serial == Some(serial)
            && !self.rolling
            && !self.stable.is_empty()
            && self.stable.values().all(|v| v == version)
            && self.undelivered == 0
    }
}

/// Protocol counters of the whole fleet.
#[derive(Debug, Default)]
pub struct Stats {
    pub polls: AtomicU64,
    pub documents: AtomicU64,
    pub not_modified: AtomicU64,
    pub not_found: AtomicU64,
    pub failed: AtomicU64,
    pub batches: AtomicU64,
    pub conflicts: AtomicU64,
    pub busy: AtomicU64,
    /// Requests answered, and the time they took on the wire (microseconds, in total and the
    /// longest), not counting the wait for a free connection.
    pub answered: AtomicU64,
    pub latency_us: AtomicU64,
    pub latency_max_us: AtomicU64,
    /// What went wrong that a real site would not expect (a bug here or in the hub).
    pub errors: Mutex<Vec<String>>,
}

impl Stats {
    fn error(&self, message: String) {
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() < 20 {
                errors.push(message);
            }
        }
    }

    /// Panic with the errors, if there were any.
    pub fn assert_no_errors(&self) {
        let errors = self
            .errors
            .lock()
            .map(|errors| errors.clone())
            .unwrap_or_default();
        assert!(
            errors.is_empty(),
            "the simulated sites met errors:\n{}",
            errors.join("\n")
        );
    }

    /// A one-line summary.
    pub fn line(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "{} polls ({} documents, {} not modified, {} not found), {} batches ({} 409, {} busy), {} failed requests; answers in {:.1} ms on average, {:.0} ms at most",
            get(&self.polls),
            get(&self.documents),
            get(&self.not_modified),
            get(&self.not_found),
            get(&self.batches),
            get(&self.conflicts),
            get(&self.busy),
            get(&self.failed),
            get(&self.latency_us) as f64 / get(&self.answered).max(1) as f64 / 1000.0,
            get(&self.latency_max_us) as f64 / 1000.0
        )
    }
}

/// One simulated site, shared between its task and the test.
pub struct SimSite {
    pub spec: SiteSpec,
    labels_header: String,
    awake: AtomicBool,
    wake: Notify,
    held: Mutex<Held>,
}

impl SimSite {
    /// What it holds now.
    pub fn held(&self) -> Held {
        self.held
            .lock()
            .map(|held| held.clone())
            .unwrap_or_default()
    }

    /// Whether it is awake.
    pub fn awake(&self) -> bool {
        self.awake.load(Ordering::SeqCst)
    }

    fn update(&self, change: impl FnOnce(&mut Held)) {
        if let Ok(mut held) = self.held.lock() {
            change(&mut held);
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Everything a site task shares with the others.
struct Link {
    client: HttpClient,
    permits: Semaphore,
    hub: SocketAddr,
    options: FleetOptions,
    stats: Arc<Stats>,
}

/// The simulated fleet: a runtime of its own running one task per site.
pub struct SimFleet {
    pub sites: Vec<Arc<SimSite>>,
    pub stats: Arc<Stats>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: CancellationToken,
}

impl SimFleet {
    /// Start a task per site against the hub at `hub`; every site starts awake, polling at a
    /// random instant of its first interval.
    pub fn start(hub: SocketAddr, specs: Vec<SiteSpec>, options: FleetOptions) -> SimFleet {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = {
            let _guard = runtime.enter();
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(options.connections)
                .pool_idle_timeout(Duration::from_secs(20))
                .build(connector)
        };
        let link = Arc::new(Link {
            client,
            permits: Semaphore::new(options.connections),
            hub,
            options,
            stats: Arc::clone(&stats),
        });
        let sites: Vec<Arc<SimSite>> = specs
            .into_iter()
            .map(|spec| {
                Arc::new(SimSite {
                    labels_header: edgeroll::wire::labels_header_value(&spec.labels),
                    spec,
                    awake: AtomicBool::new(true),
                    wake: Notify::new(),
                    held: Mutex::new(Held::default()),
                })
            })
            .collect();
        for site in &sites {
            let site = Arc::clone(site);
            let link = Arc::clone(&link);
            let stop = stop.clone();
            runtime.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = run(site, link) => {}
                }
            });
        }
        SimFleet {
            sites,
            stats,
            runtime: Some(runtime),
            stop,
        }
    }

    /// Put the sites `which` selects to sleep: from their next step on, they send nothing.
    pub fn sleep(&self, which: impl Fn(&SimSite) -> bool) -> usize {
        let mut count = 0;
        for site in self.sites.iter().filter(|site| which(site)) {
            site.awake.store(false, Ordering::SeqCst);
            count += 1;
        }
        count
    }

    /// Wake the sites `which` selects: each polls at once.
    pub fn wake(&self, which: impl Fn(&SimSite) -> bool) -> usize {
        let mut count = 0;
        for site in self.sites.iter().filter(|site| which(site)) {
            site.update(|held| held.polls_awake = 0);
            site.awake.store(true, Ordering::SeqCst);
            site.wake.notify_one();
            count += 1;
        }
        count
    }

    /// The sites `which` selects.
    pub fn select(&self, which: impl Fn(&SimSite) -> bool) -> Vec<Arc<SimSite>> {
        self.sites
            .iter()
            .filter(|site| which(site))
            .cloned()
            .collect()
    }

    /// Wait until `done` holds for every site `which` selects; panics after `within` with the
    /// first few that do not.
    pub fn wait_all(
        &self,
        what: &str,
        within: Duration,
        which: impl Fn(&SimSite) -> bool,
        done: impl Fn(&Held) -> bool,
    ) {
        let deadline = Instant::now() + within;
        let selected = self.select(which);
        loop {
            let behind: Vec<(String, Held)> = selected
                .iter()
                .map(|site| (site.spec.name.clone(), site.held()))
                .filter(|(_, held)| !done(held))
                .take(5)
                .collect();
            self.stats.assert_no_errors();
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what} ({} sites); for instance {behind:#?}\n{}",
                selected.len(),
                self.stats.line()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A document as a site reads it.
struct Desired {
    serial: u64,
    /// Service → template version.
    versions: BTreeMap<String, String>,
}

/// The serial and service versions of a document, JSON (starts with `{`) or TOML.
fn parse_document(body: &[u8]) -> Result<Desired, String> {
    let text = std::str::from_utf8(body).map_err(|error| error.to_string())?;
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|error| format!("JSON: {error}"))?
    } else {
        let table: toml::Table = toml::from_str(text).map_err(|error| format!("TOML: {error}"))?;
        serde_json::to_value(table).map_err(|error| error.to_string())?
    };
    let serial = value["serial"].as_u64().ok_or("no serial")?;
    let mut versions = BTreeMap::new();
    for service in value["services"].as_array().ok_or("no services")? {
        let name = service["name"].as_str().ok_or("a service without a name")?;
        let version = service["template"]["version"]
            .as_str()
            .ok_or("a service without template.version")?;
        versions.insert(name.to_owned(), version.to_owned());
    }
    Ok(Desired { serial, versions })
}

/// What one poll gave.
enum Polled {
    Document(Desired, Option<String>),
    NotModified,
    NotFound,
    Failed,
}

/// A rollout in progress on a site.
struct Rolling {
    serial: u64,
    /// Service → (stable revision, canary revision, new version).
    services: BTreeMap<String, (u64, u64, String)>,
    abort: bool,
    done_at: tokio::time::Instant,
}

/// The state of one site's task (the test sees [`Held`]).
struct Agent {
    etag: Option<String>,
    serial: Option<u64>,
    /// Service → (revision, version) that runs as stable.
    stable: BTreeMap<String, (u64, String)>,
    next_seq: u64,
    outbox: VecDeque<Report>,
    rolling: Option<Rolling>,
    retry_at: Option<tokio::time::Instant>,
    failures: u32,
}

fn now_ms() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    Timestamp::from_millis(millis)
}

fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

impl Agent {
    fn record(&mut self, body: ReportBody) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbox.push_back(Report {
            seq,
            at: now_ms(),
            body,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn rollout_report(
        service: &str,
        kind: &str,
        message: String,
        phase: &str,
        completion: Option<&str>,
        stable: (u64, &str),
        canary: Option<(u64, &str)>,
        serial: u64,
    ) -> ReportBody {
        ReportBody::Rollout {
            service: service.to_owned(),
            kind: kind.to_owned(),
            message,
            phase: phase.to_owned(),
            completion: completion.map(str::to_owned),
            stable: Some(RevisionRef {
                revision: stable.0,
                version: stable.1.to_owned(),
            }),
            canary: canary.map(|(revision, version)| RevisionRef {
                revision,
                version: version.to_owned(),
            }),
            serial: Some(serial),
        }
    }

    /// A new document: record it, start a rollout of every service whose version changed.
    fn apply(&mut self, spec: &SiteSpec, desired: Desired, options: &FleetOptions) {
        self.record(ReportBody::Document {
            serial: Some(desired.serial),
            outcome: "applied".to_owned(),
            rule: None,
            message: format!("desired document serial {} accepted", desired.serial),
            key_id: None,
        });
        self.serial = Some(desired.serial);
        let mut services = BTreeMap::new();
        let mut abort = false;
        for (service, version) in &desired.versions {
            let (revision, current) = self
                .stable
                .get(service)
                .cloned()
                .unwrap_or((0, String::new()));
            if revision == 0 {
                // The first revision has nothing to canary against: it becomes stable at once.
                let body = Agent::rollout_report(
                    service,
                    "RolloutPromoted",
                    format!("revision 1 ({version}) is the first: stable"),
                    "Healthy",
                    Some("Promoted"),
                    (1, version),
                    None,
                    desired.serial,
                );
                self.record(body);
                self.stable.insert(service.clone(), (1, version.clone()));
                continue;
            }
            if &current == version {
                // Unchanged: it follows the new serial, still Healthy (as the agent does).
                let body = Agent::rollout_report(
                    service,
                    "DocumentFollowed",
                    format!("follows serial {}; its spec is unchanged", desired.serial),
                    "Healthy",
                    Some("Promoted"),
                    (revision, version),
                    None,
                    desired.serial,
                );
                self.record(body);
                continue;
            }
            abort |= spec.aborts.contains(version);
            let canary = revision + 1;
            let body = Agent::rollout_report(
                service,
                "RolloutStarted",
                format!("canary revision {canary} ({version}) started"),
                "Progressing",
                None,
                (revision, &current),
                Some((canary, version.as_str())),
                desired.serial,
            );
            self.record(body);
            services.insert(service.clone(), (revision, canary, version.clone()));
        }
        let (low, high) = options.rollout;
        let spread = high.saturating_sub(low);
        self.rolling = (!services.is_empty()).then(|| Rolling {
            serial: desired.serial,
            services,
            abort,
            done_at: tokio::time::Instant::now() + low + spread.mul_f64(fastrand::f64()),
        });
    }

    /// The rollout in progress is over: promoted, or aborted.
    fn finish_rollout(&mut self) {
        let Some(rolling) = self.rolling.take() else {
            return;
        };
        for (service, (stable, canary, version)) in rolling.services {
            if rolling.abort {
                let current = self
                    .stable
                    .get(&service)
                    .map(|(_, version)| version.clone())
                    .unwrap_or_default();
                let body = Agent::rollout_report(
                    &service,
                    "RolloutAborted",
                    format!(
                        "Rollout aborted update to revision {canary}: analysis run failed: metric \"success-rate\" assessed Failed"
                    ),
                    "Degraded",
                    Some("Aborted"),
                    (stable, &current),
                    Some((canary, &version)),
                    rolling.serial,
                );
                self.record(body);
            } else {
                let body = Agent::rollout_report(
                    &service,
                    "RolloutPromoted",
                    format!("canary revision {canary} ({version}) promoted to stable"),
                    "Healthy",
                    Some("Promoted"),
                    (canary, &version),
                    None,
                    rolling.serial,
                );
                self.record(body);
                self.stable.insert(service, (canary, version));
            }
        }
    }

    fn show(&self, site: &SimSite, aborted: Option<bool>) {
        site.update(|held| {
            held.serial = self.serial;
            held.stable = self
                .stable
                .iter()
                .map(|(service, (_, version))| (service.clone(), version.clone()))
                .collect();
            held.rolling = self.rolling.is_some();
            held.undelivered = self.outbox.len();
            held.last_seq = self.next_seq - 1;
            if let Some(aborted) = aborted {
                held.aborted = aborted;
            }
        });
    }
}

/// Send one request through the shared connections once a connection is free; `None` when it
/// failed, or when the site fell asleep while it waited (it then sends nothing).
async fn exchange(
    site: &SimSite,
    link: &Link,
    request: http::Request<Full<Bytes>>,
) -> Option<(http::StatusCode, http::HeaderMap, Bytes)> {
    let _permit = link.permits.acquire().await.ok()?;
    if !site.awake() {
        return None;
    }
    let sent = Instant::now();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let response = link.client.request(request).await.ok()?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, headers, body))
    })
    .await
    .ok()
    .flatten();
    if answer.is_none() {
        link.stats.failed.fetch_add(1, Ordering::Relaxed);
    } else {
        let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        link.stats.answered.fetch_add(1, Ordering::Relaxed);
        link.stats.latency_us.fetch_add(took, Ordering::Relaxed);
        link.stats.latency_max_us.fetch_max(took, Ordering::Relaxed);
    }
    answer
}

async fn poll(site: &SimSite, link: &Link, etag: Option<&str>) -> Polled {
    link.stats.polls.fetch_add(1, Ordering::Relaxed);
    let uri = format!(
        "http://{}{}",
        link.hub,
        edgeroll::wire::desired_path(&site.spec.name)
    );
    let mut request = http::Request::get(uri)
        .header(edgeroll::wire::SITE_HEADER, &site.spec.name)
        .header(edgeroll::wire::LABELS_HEADER, &site.labels_header);
    if let Some(etag) = etag {
        request = request.header(http::header::IF_NONE_MATCH, etag);
    }
    let Ok(request) = request.body(Full::new(Bytes::new())) else {
        return Polled::Failed;
    };
    let Some((status, headers, body)) = exchange(site, link, request).await else {
        return Polled::Failed;
    };
    match status {
        http::StatusCode::OK => match parse_document(&body) {
            Ok(desired) => {
                link.stats.documents.fetch_add(1, Ordering::Relaxed);
                let etag = headers
                    .get(http::header::ETAG)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                Polled::Document(desired, etag)
            }
            Err(error) => {
                link.stats.error(format!(
                    "{}: the hub served a document a site cannot read ({error}): {}",
                    site.spec.name,
                    String::from_utf8_lossy(&body)
                ));
                Polled::Failed
            }
        },
        http::StatusCode::NOT_MODIFIED => {
            link.stats.not_modified.fetch_add(1, Ordering::Relaxed);
            Polled::NotModified
        }
        http::StatusCode::NOT_FOUND => {
            link.stats.not_found.fetch_add(1, Ordering::Relaxed);
            Polled::NotFound
        }
        _ => {
            link.stats.failed.fetch_add(1, Ordering::Relaxed);
            Polled::Failed
        }
    }
}

/// POST what the outbox holds (at most [`BATCH_REPORTS`]); returns whether the hub answered.
async fn deliver(site: &SimSite, link: &Link, agent: &mut Agent) -> bool {
    let Some(first) = agent.outbox.front().map(|report| report.seq) else {
        return true;
    };
    let reports: Vec<Report> = agent.outbox.iter().take(BATCH_REPORTS).cloned().collect();
    let last = reports.last().map_or(first, |report| report.seq);
    let batch = ReportBatch {
        site: site.spec.name.clone(),
        first,
        last,
        reports,
        dropped: BTreeMap::new(),
    };
    let Ok(request) = http::Request::post(format!(
        "http://{}{}",
        link.hub,
        edgeroll::wire::REPORTS_PATH
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .header(http::header::CONTENT_ENCODING, "gzip")
    .header(
        edgeroll::wire::IDEMPOTENCY_KEY_HEADER,
        edgeroll::wire::report::idempotency_key(&batch),
    )
    .header(edgeroll::wire::SITE_HEADER, &site.spec.name)
    .header(edgeroll::wire::LABELS_HEADER, &site.labels_header)
    .body(Full::new(Bytes::from(edgeroll::wire::report::encode(
        &batch,
    )))) else {
        return false;
    };
    link.stats.batches.fetch_add(1, Ordering::Relaxed);
    let Some((status, headers, body)) = exchange(site, link, request).await else {
        return false;
    };
    match status {
        http::StatusCode::OK | http::StatusCode::CONFLICT => {
            if status == http::StatusCode::CONFLICT {
                link.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            let Ok(ack) = serde_json::from_slice::<Ack>(&body) else {
                link.stats.failed.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            while agent
                .outbox
                .front()
                .is_some_and(|report| report.seq <= ack.ack)
            {
                agent.outbox.pop_front();
            }
            site.update(|held| held.acked = ack.ack);
            true
        }
        http::StatusCode::SERVICE_UNAVAILABLE | http::StatusCode::TOO_MANY_REQUESTS => {
            link.stats.busy.fetch_add(1, Ordering::Relaxed);
            let wait = headers
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(1)
                .min(5);
            agent.retry_at =
                Some(tokio::time::Instant::now() + jittered(Duration::from_secs(wait)));
            false
        }
        other => {
            link.stats.error(format!(
                "{}: the hub refused a batch a site would send ({other}): {}",
                site.spec.name,
                String::from_utf8_lossy(&body)
            ));
            false
        }
    }
}

/// One site's life: poll, apply, roll, report; sleep while asleep.
async fn run(site: Arc<SimSite>, link: Arc<Link>) {
    let mut agent = Agent {
        etag: None,
        serial: None,
        stable: BTreeMap::new(),
        next_seq: 1,
        outbox: VecDeque::new(),
        rolling: None,
        retry_at: None,
        failures: 0,
    };
    let interval = link.options.poll_interval;
    let mut next_poll = tokio::time::Instant::now() + interval.mul_f64(fastrand::f64());
    loop {
        // Asleep: nothing at all until woken, then a poll at once.
        if !site.awake() {
            loop {
                let woken = site.wake.notified();
                if site.awake() {
                    break;
                }
                woken.await;
            }
            next_poll = tokio::time::Instant::now();
            agent.retry_at = None;
        }
        let mut wake_at = next_poll;
        if let Some(rolling) = &agent.rolling {
            wake_at = wake_at.min(rolling.done_at);
        }
        if !agent.outbox.is_empty() {
            wake_at = wake_at.min(agent.retry_at.unwrap_or_else(tokio::time::Instant::now));
        }
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = site.wake.notified() => {}
        }
        if !site.awake() {
            continue;
        }
        let now = tokio::time::Instant::now();
        if agent
            .rolling
            .as_ref()
            .is_some_and(|rolling| rolling.done_at <= now)
        {
            let abort = agent.rolling.as_ref().is_some_and(|rolling| rolling.abort);
            agent.finish_rollout();
            agent.show(&site, Some(abort));
        }
        if now >= next_poll {
            let polled = poll(&site, &link, agent.etag.as_deref()).await;
            if !site.awake() {
                // Fell asleep while the poll was out: the answer is lost with it.
                continue;
            }
            if !matches!(polled, Polled::Failed) {
                site.update(|held| {
                    held.polls += 1;
                    held.polls_awake += 1;
                });
            }
            match polled {
                Polled::Document(desired, etag) => {
                    agent.failures = 0;
                    if agent.serial.is_some_and(|held| desired.serial < held) && etag != agent.etag
                    {
                        // Older than what it accepted: the agent refuses it (rule `serial`).
                        agent.record(ReportBody::Document {
                            serial: Some(desired.serial),
                            outcome: "refused".to_owned(),
                            rule: Some("serial".to_owned()),
                            message: format!(
                                "serial {} is not above the accepted serial {}",
                                desired.serial,
                                agent.serial.unwrap_or_default()
                            ),
                            key_id: None,
                        });
                        agent.show(&site, None);
                    } else if agent.serial.is_none_or(|held| desired.serial > held) {
                        let serial = desired.serial;
                        agent.finish_rollout_superseded();
                        agent.apply(&site.spec, desired, &link.options);
                        site.update(|held| held.applied.push(serial));
                        agent.show(&site, Some(false));
                    }
                    agent.etag = etag;
                }
                Polled::NotModified | Polled::NotFound => agent.failures = 0,
                Polled::Failed => agent.failures += 1,
            }
            // Back off (full jitter, capped) after failures, like the agent's pull.
            next_poll = tokio::time::Instant::now()
                + if agent.failures == 0 {
                    jittered(interval)
                } else {
                    let cap = interval * 2u32.saturating_pow(agent.failures.min(4));
                    cap.mul_f64(fastrand::f64()).max(Duration::from_millis(50))
                };
        }
        if !agent.outbox.is_empty()
            && agent
                .retry_at
                .is_none_or(|at| at <= tokio::time::Instant::now())
            && site.awake()
        {
            if deliver(&site, &link, &mut agent).await {
                agent.retry_at = None;
            } else if agent
                .retry_at
                .is_none_or(|at| at <= tokio::time::Instant::now())
            {
                agent.retry_at =
                    Some(tokio::time::Instant::now() + jittered(Duration::from_millis(300)));
            }
            agent.show(&site, None);
        }
    }
}

impl Agent {
    /// A newer document arrived while a rollout ran: the agent supersedes it (the new rollout
    /// starts from what runs as stable).
    fn finish_rollout_superseded(&mut self) {
        self.rolling = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Fleets and documents.

/// A desired document for the simulated sites: two services at `version`, `serial`, and
/// `selector` (TOML inline-table body, empty for none).
pub fn document(serial: u64, selector: &str, version: &str) -> String {
    let selector = if selector.is_empty() {
        String::new()
    } else {
        format!("selector = {{ {selector} }}\n")
    };
    let mut text = format!("apiVersion = \"edgeroll/v1\"\nserial = {serial}\n{selector}");
    for (service, port) in [("telemetry-ingest", 8080), ("edge-cache", 8081)] {
        text.push_str(&format!(
            "\n[[services]]\nname = \"{service}\"\ntraffic = {{ http = \"0.0.0.0:{port}\" }}\n\n\
             [services.template]\nversion = \"{version}\"\n\
             command = [\"/opt/{service}/bin/{service}\", \"--listen\", \"127.0.0.1:{{port}}\"]\n\n\
             [services.strategy.canary]\nsteps = [{{ setWeight = 20 }}, {{ pause = {{ duration = \"1m\" }} }}]\n"
        ));
    }
    text
}

/// Write `text` as `name` under `dir` atomically (a temporary file beside, then a rename).
pub fn write_atomic(dir: &std::path::Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the directory");
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).expect("write");
    std::fs::rename(&partial, &path).expect("rename");
}

/// Whether item `index` of a group is among `percent` % of it, spread evenly: every
/// `100 / percent`-th item, starting at `offset`.
pub fn picked(index: usize, percent: usize, offset: usize) -> bool {
    let every = 100 / percent;
    index % every == offset % every
}

// ---------------------------------------------------------------------------------------------
// Plans, as the hub's API shows them.

/// `GET /v1/plans/{name}` through `get`: the plan, or `None` while the hub does not know it.
pub fn plan_view(get: impl Fn(&str) -> Answer, name: &str) -> Option<PlanView> {
    let answer = get(&format!("/v1/plans/{name}"));
    match answer.status {
        200 => Some(
            serde_json::from_slice(&answer.body).unwrap_or_else(|error| {
                panic!(
                    "GET /v1/plans/{name} is not a PlanView ({error}): {}",
                    answer.text()
                )
            }),
        ),
        404 => None,
        other => panic!("GET /v1/plans/{name}: {other} {}", answer.text()),
    }
}

/// Poll the plan every 100 ms until `done` holds; returns that view. Panics after `within`
/// with the last view.
pub fn wait_plan(
    get: impl Fn(&str) -> Answer,
    name: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&PlanView) -> bool,
) -> PlanView {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some(view) = plan_view(&get, name) {
            if done(&view) {
                return view;
            }
            last = Some(view);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}; the plan:\n{}",
            last.map(|view| summary(&view))
                .unwrap_or_else(|| "unknown".to_owned())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plan in a few lines: its phase and message, then each wave with its counts.
pub fn summary(view: &PlanView) -> String {
    let mut text = format!("{} {:?}: {}\n", view.name, view.phase, view.message);
    for wave in &view.waves {
        let c = &wave.counts;
        text.push_str(&format!(
            "  {} {:?} serial {:?}: {} members, {} reachable, healthy {} progressing {} aborted {} unknown {} stale {}, needed {}, max aborted {}\n",
            wave.name, wave.phase, wave.serial, wave.members, wave.reachable, c.healthy,
            c.progressing, c.aborted, c.unknown, c.stale, wave.needed, wave.max_aborted
        ));
    }
    let first = view.events.first().map_or(0, |event| event.at.as_millis());
    for event in &view.events {
        let after = event.at.as_millis().saturating_sub(first) as f64 / 1000.0;
        text.push_str(&format!(
            "  +{after:.1} s {}: {}\n",
            event.kind, event.message
        ));
    }
    text
}
