//! A load generator that behaves like a fleet of sites polling `edgeroll hub` (figures, not
//! pass/fail; `bench/hub_fleet.sh` drives it, bench/README.md reads the figures).
//!
//! Each of `--sites` sites has its own name (`site-0000042`) and labels (`region`, `cohort`,
//! `hw`), and polls `GET /v1/sites/{site}/desired` every `--interval` (30 s) at its own random
//! phase, with the `edgeroll-site` / `edgeroll-labels` headers and `If-None-Match` = the last
//! ETag it was given, so nearly every answer is a 304. Every `--report-every`th poll of a site
//! it also posts a batch of `--batch` reports (one rollout event, the rest measurements) to
//! `POST /v1/reports`, gzip-encoded with the real wire encoder, its sequence numbers continuing
//! from the hub's last acknowledgement. With `--target nginx` it polls
//! `/{site}/desired.toml` static files instead (site `i` reads file `i % --nginx-files`) with
//! the ETag nginx gave, and posts nothing.
//!
//! Open loop: every request has a scheduled time and is queued then whether or not earlier
//! ones were answered; its latency runs from that scheduled time to the end of the answer's
//! body, so a server that falls behind shows it in the latency instead of slowing the client
//! down (no coordinated omission). Requests go over `--connections` keep-alive connections
//! (real sites each hold their own; a connection takes the next queued request when it is
//! free). Before the clock starts, each distinct document is fetched once and every site
//! starts with that ETag, as if it had polled before.
//!
//! It prints one JSON object per line: per step, requests sent, answers by status, errors,
//! latency percentiles (a log-bucket histogram, 1/64 relative precision, values reported as
//! the bucket's upper bound), the achieved rate, and with `--server-pid` the server's CPU share
//! (utime+stime over the window) and RSS. `--ramp` doubles the sites after each step until a
//! step misses `--slo-ms` at p99, has errors or leaves requests unanswered, and then prints the
//! ceiling. It must never talk to anything but the URL it is given, and never pass off a
//! saturated client as a saturated server: it prints its own CPU share next to the server's.
//!
//! `cargo build --release --example hub_fleet_load && target/release/examples/hub_fleet_load --help`
// A benchmark measures real time.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use edgeroll::time::Timestamp;
use edgeroll::wire::report::{self, Ack, Report, ReportBatch, ReportBody, RevisionRef};
use edgeroll::wire::{IDEMPOTENCY_KEY_HEADER, LABELS_HEADER, SITE_HEADER};
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Linux reports utime/stime in USER_HZ ticks, 100 per second on every architecture it runs on.
const USER_HZ: f64 = 100.0;
/// Distinct label sets: `i % LABEL_CLASSES` decides a site's labels.
const LABEL_CLASSES: u32 = 120;
const NO_ETAG: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// `edgeroll hub`: `GET /v1/sites/{site}/desired` and `POST /v1/reports`.
    Hub,
    /// Static files: `GET /{site}/desired.toml`, no reports.
    Nginx,
}

/// Simulate a fleet of sites polling a hub (or nginx) with ETags and posting report batches.
#[derive(Debug, Parser)]
#[command(name = "hub_fleet_load")]
struct Args {
    /// The server, `http://host:port` (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:18440")]
    url: String,
    /// What the server is.
    #[arg(long, value_enum, default_value_t = Target::Hub)]
    target: Target,
    /// How many sites (with `--ramp`: the first step).
    #[arg(long, default_value_t = 10_000)]
    sites: u32,
    /// How often each site polls.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Each site polls this many times per interval (push without more sites).
    #[arg(long, default_value_t = 1.0)]
    rate_multiplier: f64,
    /// How long each step is measured.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load sent on schedule before each step's measurement, not recorded.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Keep-alive connections shared by all sites.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Post a report batch with every Nth poll of a site (0: never).
    #[arg(long, default_value_t = 10)]
    report_every: u32,
    /// Reports per batch.
    #[arg(long, default_value_t = 5)]
    batch: u64,
    /// Static files nginx serves (`--target nginx`): site i reads file `i % N`.
    #[arg(long, default_value_t = 10_000)]
    nginx_files: u32,
    /// Double the sites after every step that holds, until one does not (or `--max-sites`).
    #[arg(long)]
    ramp: bool,
    /// The most sites a ramp goes to.
    #[arg(long, default_value_t = 2_560_000)]
    max_sites: u32,
    /// A step holds when its p99 is at most this (ms), with no errors and nothing unanswered.
    #[arg(long, default_value_t = 50.0)]
    slo_ms: f64,
    /// A request not answered within this is an error (and its connection is replaced).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How long to wait for a step's last answers before counting them unanswered.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// The server's pid, to report its CPU share and RSS (read from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The CPU the server is pinned to, to report how busy that core was (server and anything
    /// else) from /proc/stat.
    #[arg(long)]
    server_core: Option<usize>,
    /// Seed of the sites' phases.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Latencies in microseconds, in log buckets: exact below 128 µs, then 64 buckets per power of
/// two (at most 1/64 = 1.6 % above the true value when read as the bucket's upper bound).
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    const EXACT: u64 = 128;
    const PER_OCTAVE: u64 = 64;

    fn new() -> Histogram {
        Histogram {
            counts: vec![0; (Self::EXACT + 58 * Self::PER_OCTAVE) as usize],
            total: 0,
            max: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < Self::EXACT {
            return value as usize;
        }
        let octave = 63 - u64::from(value.leading_zeros()); // >= 7
        let shift = octave - 6;
        let mantissa = (value >> shift) - Self::PER_OCTAVE; // 0..64
        (Self::EXACT + (octave - 7) * Self::PER_OCTAVE + mantissa) as usize
    }

    /// The largest value that falls in bucket `index`.
    fn upper(index: usize) -> u64 {
        let index = index as u64;
        if index < Self::EXACT {
            return index;
        }
        let octave = (index - Self::EXACT) / Self::PER_OCTAVE + 7;
        let mantissa = (index - Self::EXACT) % Self::PER_OCTAVE + Self::PER_OCTAVE;
        let shift = octave - 6;
        ((mantissa + 1) << shift) - 1
    }

    fn record(&mut self, micros: u64) {
        let index = Self::index(micros).min(self.counts.len() - 1);
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    /// The `q` quantile (0..=1) in ms; 0 when empty.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::upper(index).min(self.max) as f64 / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }

    fn summary(&self) -> serde_json::Value {
        let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
        json!({
            "count": self.total,
            "p50_ms": round(self.quantile_ms(0.50)),
            "p90_ms": round(self.quantile_ms(0.90)),
            "p99_ms": round(self.quantile_ms(0.99)),
            "p999_ms": round(self.quantile_ms(0.999)),
            "max_ms": round(self.max as f64 / 1000.0),
        })
    }
}

/// What every site remembers between its polls.
struct Sites {
    /// Index into [`Etags`] of the last ETag the site was given.
    etag: Vec<AtomicU32>,
    /// The hub's last acknowledgement of the site's reports.
    acked: Vec<AtomicU64>,
    /// How many polls the site has made.
    polls: Vec<AtomicU32>,
}

impl Sites {
    fn new(count: u32) -> Sites {
        let count = count as usize;
        Sites {
            etag: (0..count).map(|_| AtomicU32::new(NO_ETAG)).collect(),
            acked: (0..count).map(|_| AtomicU64::new(0)).collect(),
            polls: (0..count).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// Every distinct ETag seen, interned (sites hold an index).
#[derive(Default)]
struct Etags {
    values: Vec<HeaderValue>,
    index: HashMap<HeaderValue, u32>,
}

/// What one step counts.
struct StepStats {
    all: Histogram,
    polls: Histogram,
    reports: Histogram,
    /// From the scheduled time to a connection taking the request (the client's own lag).
    queue_wait: Histogram,
    /// From a connection taking the request to the end of the answer (what the server and the
    /// network took, without the client's lag).
    service: Histogram,
    statuses: BTreeMap<u16, u64>,
    poll_statuses: BTreeMap<u16, u64>,
    report_statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<&'static str, u64>,
    retries: u64,
    sent: u64,
}

impl StepStats {
    fn new() -> StepStats {
        StepStats {
            all: Histogram::new(),
            polls: Histogram::new(),
            reports: Histogram::new(),
            queue_wait: Histogram::new(),
            service: Histogram::new(),
            statuses: BTreeMap::new(),
            poll_statuses: BTreeMap::new(),
            report_statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            retries: 0,
            sent: 0,
        }
    }
}

struct Step {
    stats: Mutex<StepStats>,
    outstanding: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Poll,
    Report,
}

struct Job {
    due: Instant,
    site: u32,
    kind: Kind,
    /// Recorded (not warm-up).
    step: Option<Arc<Step>>,
}

/// What every connection shares.
struct Fleet {
    args: Args,
    host: HeaderValue,
    address: String,
    sites: Sites,
    etags: RwLock<Etags>,
    labels: Vec<HeaderValue>,
}

impl Fleet {
    fn site_name(&self, site: u32) -> String {
        format!("site-{site:07}")
    }

    /// Which distinct document site `site` is served: the label class for the hub (its
    /// documents select by labels), the file for nginx.
    fn document_key(&self, site: u32) -> u32 {
        match self.args.target {
            Target::Hub => site % LABEL_CLASSES,
            Target::Nginx => site % self.args.nginx_files,
        }
    }

    fn document_keys(&self) -> u32 {
        match self.args.target {
            Target::Hub => LABEL_CLASSES,
            Target::Nginx => self.args.nginx_files,
        }
    }

    fn poll_request(&self, site: u32, etag: bool) -> Request<Full<Bytes>> {
        let name = self.site_name(site);
        let path = match self.args.target {
            Target::Hub => format!("/v1/sites/{name}/desired"),
            Target::Nginx => format!("/{}/desired.toml", self.site_name(self.document_key(site))),
        };
        let mut builder = Request::get(path)
            .header(header::HOST, self.host.clone())
            .header(
                LABELS_HEADER,
                self.labels[(site % LABEL_CLASSES) as usize].clone(),
            )
            .header(SITE_HEADER, name);
        if etag {
            let index = self.sites.etag[site as usize].load(Ordering::Relaxed);
            if index != NO_ETAG {
                if let Ok(etags) = self.etags.read() {
                    if let Some(value) = etags.values.get(index as usize) {
                        builder = builder.header(header::IF_NONE_MATCH, value.clone());
                    }
                }
            }
        }
        builder
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }

    fn report_request(&self, site: u32) -> Request<Full<Bytes>> {
        let name = self.site_name(site);
        let first = self.sites.acked[site as usize].load(Ordering::Relaxed) + 1;
        let last = first + self.args.batch.max(1) - 1;
        let now_ms = 1_764_600_000_000 + u64::from(site);
        let reports = (first..=last)
            .map(|seq| Report {
                seq,
                at: Timestamp(now_ms + seq),
                body: if seq == first {
                    ReportBody::Rollout {
                        service: "telemetry-ingest".to_owned(),
                        kind: "RolloutStepAdvanced".to_owned(),
                        message: format!("step {} of 4: setWeight 20", seq % 4 + 1),
                        phase: "Progressing".to_owned(),
                        completion: None,
                        stable: Some(RevisionRef {
                            revision: 6,
                            version: "2.4.1".to_owned(),
                        }),
                        canary: Some(RevisionRef {
                            revision: 7,
                            version: "2.5.0".to_owned(),
                        }),
                        serial: Some(42),
                    }
                } else {
                    ReportBody::Measurement {
                        service: "telemetry-ingest".to_owned(),
                        run: format!("run-{}", seq / 100),
                        metric: if seq % 2 == 0 {
                            "success-rate"
                        } else {
                            "latency-p99"
                        }
                        .to_owned(),
                        phase: "Successful".to_owned(),
                        value: Some(format!("[0.99{}]", seq % 10)),
                        message: None,
                    }
                },
            })
            .collect();
        let batch = ReportBatch {
            site: name.clone(),
            first,
            last,
            reports,
            dropped: BTreeMap::new(),
        };
        let key = report::idempotency_key(&batch);
        Request::post("/v1/reports")
            .header(header::HOST, self.host.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, "gzip")
            .header(IDEMPOTENCY_KEY_HEADER, key)
            .header(SITE_HEADER, name)
            .header(
                LABELS_HEADER,
                self.labels[(site % LABEL_CLASSES) as usize].clone(),
            )
            .body(Full::new(Bytes::from(report::encode(&batch))))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }

    fn intern(&self, etag: HeaderValue) -> u32 {
        if let Ok(etags) = self.etags.read() {
            if let Some(&index) = etags.index.get(&etag) {
                return index;
            }
        }
        let Ok(mut etags) = self.etags.write() else {
            return NO_ETAG;
        };
        if let Some(&index) = etags.index.get(&etag) {
            return index;
        }
        let index = etags.values.len() as u32;
        etags.values.push(etag.clone());
        etags.index.insert(etag, index);
        index
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, &'static str> {
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(|_| "connect")?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| "handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The answer to one request, read to the end.
struct Answer {
    status: StatusCode,
    etag: Option<HeaderValue>,
    body: Bytes,
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let etag = response.headers().get(header::ETAG).cloned();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer { status, etag, body })
}

/// One keep-alive connection: take the next queued request, send it, record the answer.
async fn connection(
    fleet: Arc<Fleet>,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    ready: Arc<AtomicU64>,
) {
    let mut sender = fleet.connect().await.ok();
    ready.fetch_add(1, Ordering::Relaxed);
    loop {
        let job = {
            let mut queue = queue.lock().await;
            queue.recv().await
        };
        let Some(job) = job else { return };
        let picked = Instant::now();
        let mut outcome: Result<Answer, &'static str> = Err("connect");
        let mut retried = false;
        for attempt in 0..2 {
            let current = match sender.take() {
                Some(current) if !current.is_closed() => Some(current),
                _ => fleet.connect().await.ok(),
            };
            let Some(mut current) = current else {
                outcome = Err("connect");
                break;
            };
            let request = match job.kind {
                Kind::Poll => fleet.poll_request(job.site, true),
                Kind::Report => fleet.report_request(job.site),
            };
            match tokio::time::timeout(fleet.args.timeout, exchange(&mut current, request)).await {
                Ok(Ok(answer)) => {
                    sender = Some(current);
                    outcome = Ok(answer);
                    break;
                }
                // A keep-alive connection the server closed while idle: once more on a new one
                // (polls and batches are both idempotent).
                Ok(Err(_)) if attempt == 0 => {
                    retried = true;
                }
                Ok(Err(_)) => outcome = Err("http"),
                Err(_elapsed) => {
                    outcome = Err("timeout");
                    break;
                }
            }
        }
        let done = Instant::now();
        if let Ok(answer) = &outcome {
            match job.kind {
                Kind::Poll if answer.status == StatusCode::OK => {
                    if let Some(etag) = answer.etag.clone() {
                        let index = fleet.intern(etag);
                        fleet.sites.etag[job.site as usize].store(index, Ordering::Relaxed);
                    }
                }
                Kind::Report
                    if answer.status == StatusCode::OK || answer.status == StatusCode::CONFLICT =>
                {
                    if let Ok(ack) = serde_json::from_slice::<Ack>(&answer.body) {
                        fleet.sites.acked[job.site as usize].fetch_max(ack.ack, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
        if let Some(step) = &job.step {
            if let Ok(mut stats) = step.stats.lock() {
                let micros = |from: Instant, to: Instant| {
                    to.saturating_duration_since(from).as_micros() as u64
                };
                stats.queue_wait.record(micros(job.due, picked));
                if retried {
                    stats.retries += 1;
                }
                match &outcome {
                    Ok(answer) => {
                        let latency = micros(job.due, done);
                        stats.service.record(micros(picked, done));
                        stats.all.record(latency);
                        match job.kind {
                            Kind::Poll => stats.polls.record(latency),
                            Kind::Report => stats.reports.record(latency),
                        }
                        let status = answer.status.as_u16();
                        *stats.statuses.entry(status).or_default() += 1;
                        let by_kind = match job.kind {
                            Kind::Poll => &mut stats.poll_statuses,
                            Kind::Report => &mut stats.report_statuses,
                        };
                        *by_kind.entry(status).or_default() += 1;
                    }
                    Err(kind) => *stats.errors.entry(kind).or_default() += 1,
                }
            }
            step.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// utime+stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// utime+stime of each thread of a process in seconds, summed by thread name.
fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .map(|name| name.trim().to_owned())
            .unwrap_or_default();
        if let Some(seconds) = cpu_seconds(&format!("{pid}/task/{tid}")) {
            *by_name.entry(name).or_insert(0.0) += seconds;
        }
    }
    by_name
}

/// Busy and total ticks of CPU `core` (/proc/stat; idle and iowait are not busy).
fn core_ticks(core: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{core} ");
    let line = stat.lines().find(|line| line.starts_with(&name))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// VmRSS and VmHWM of a process, in MB.
fn memory_mb(pid: u32) -> serde_json::Value {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return serde_json::Value::Null;
    };
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0)
    };
    json!({"vm_rss_mb": field("VmRSS:"), "vm_hwm_mb": field("VmHWM:")})
}

/// A site's phase in `0..period` (µs), the same for a site whatever the number of sites.
fn phase(seed: u64, site: u32, period: u64) -> u64 {
    // splitmix64
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(site).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % period.max(1)
}

/// Run one step: `sites` sites on schedule for warm-up + duration; the JSON of what it measured.
async fn step(
    fleet: &Arc<Fleet>,
    queue: &mpsc::UnboundedSender<Job>,
    sites: u32,
) -> serde_json::Value {
    let args = &fleet.args;
    let period = args.interval.div_f64(args.rate_multiplier.max(1e-6));
    let period_us = period.as_micros() as u64;
    let mut order: Vec<(u64, u32)> = (0..sites)
        .map(|site| (phase(args.seed, site, period_us), site))
        .collect();
    order.sort_unstable();
    let step = Arc::new(Step {
        stats: Mutex::new(StepStats::new()),
        outstanding: AtomicU64::new(0),
    });
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut server_cpu: Option<f64> = None;
    let mut server_threads = BTreeMap::new();
    let mut client_cpu: Option<f64> = None;
    let mut core_before: Option<(u64, u64)> = None;
    let mut measuring = false;
    let mut sent = 0u64;
    let mut now = Instant::now();
    'rounds: for round in 0u32.. {
        let base = start + period * round;
        for &(offset, site) in &order {
            let due = base + Duration::from_micros(offset);
            if due >= end {
                break 'rounds;
            }
            if due > now {
                tokio::time::sleep_until(due).await;
                now = Instant::now();
            }
            let recorded = due >= measure_from;
            if recorded && !measuring {
                measuring = true;
                server_cpu = args
                    .server_pid
                    .and_then(|pid| cpu_seconds(&pid.to_string()));
                server_threads = args.server_pid.map(thread_cpu).unwrap_or_default();
                core_before = args.server_core.and_then(core_ticks);
                client_cpu = cpu_seconds("self");
            }
            let polls = fleet.sites.polls[site as usize].fetch_add(1, Ordering::Relaxed);
            let mut kinds = vec![Kind::Poll];
            if args.target == Target::Hub
                && args.report_every > 0
                && (polls.wrapping_add(site)) % args.report_every == args.report_every - 1
            {
                kinds.push(Kind::Report);
            }
            for kind in kinds {
                let job = Job {
                    due,
                    site,
                    kind,
                    step: recorded.then(|| Arc::clone(&step)),
                };
                if recorded {
                    step.outstanding.fetch_add(1, Ordering::Relaxed);
                    sent += 1;
                }
                if queue.send(job).is_err() {
                    break 'rounds;
                }
            }
        }
    }
    tokio::time::sleep_until(end).await;
    let window = Instant::now().saturating_duration_since(measure_from);
    let share = |seconds: f64| (seconds / window.as_secs_f64() * 1000.0).round() / 10.0;
    let take = |before: Option<f64>, pid: &str| Some(share(cpu_seconds(pid)? - before?));
    let server_share = args
        .server_pid
        .and_then(|pid| take(server_cpu, &pid.to_string()));
    let threads_share: serde_json::Map<String, serde_json::Value> = args
        .server_pid
        .map(thread_cpu)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, after)| {
            let before = server_threads.get(&name).copied().unwrap_or(0.0);
            (name, json!(share(after - before)))
        })
        .collect();
    let client_share = take(client_cpu, "self");
    let core_busy = match (core_before, args.server_core.and_then(core_ticks)) {
        (Some((busy_before, total_before)), Some((busy, total))) if total > total_before => Some(
            ((busy - busy_before) as f64 / (total - total_before) as f64 * 1000.0).round() / 10.0,
        ),
        _ => None,
    };
    let drain_until = Instant::now() + args.drain;
    while step.outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unanswered = step.outstanding.load(Ordering::Relaxed);
    let Ok(mut stats) = step.stats.lock() else {
        return json!({"error": "statistics lost"});
    };
    stats.sent = sent;
    let answered: u64 = stats.statuses.values().sum();
    let errors: u64 = stats.errors.values().sum();
    let bad_statuses: u64 = stats
        .statuses
        .iter()
        .filter(|(status, _)| !matches!(**status, 200 | 304))
        .map(|(_, count)| count)
        .sum();
    let p99 = stats.all.quantile_ms(0.99);
    let held = p99 <= args.slo_ms && errors == 0 && unanswered == 0 && bad_statuses == 0;
    let offered = sent as f64 / args.duration.as_secs_f64();
    let achieved = answered as f64 / args.duration.as_secs_f64();
    let sites_equivalent = f64::from(sites) * args.rate_multiplier;
    json!({
        "target": format!("{:?}", args.target).to_lowercase(),
        "sites": sites,
        "interval_s": args.interval.as_secs_f64(),
        "rate_multiplier": args.rate_multiplier,
        "sites_at_interval": sites_equivalent,
        "connections": args.connections,
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "sent": stats.sent,
        "answered": answered,
        "status": counts(&stats.statuses),
        "poll_status": counts(&stats.poll_statuses),
        "report_status": counts(&stats.report_statuses),
        "errors": errors,
        "error_kinds": stats.errors.iter().map(|(kind, count)| ((*kind).to_owned(), json!(count))).collect::<serde_json::Map<_, _>>(),
        "unanswered": unanswered,
        "retries": stats.retries,
        "offered_rps": (offered * 10.0).round() / 10.0,
        "achieved_rps": (achieved * 10.0).round() / 10.0,
        "latency": stats.all.summary(),
        "polls": stats.polls.summary(),
        "reports": stats.reports.summary(),
        "client_queue_wait": stats.queue_wait.summary(),
        "service": stats.service.summary(),
        "server_cpu_pct": server_share,
        "server_threads_cpu_pct": threads_share,
        "server_core_busy_pct": core_busy,
        "client_cpu_pct": client_share,
        "server_memory": args.server_pid.map_or(serde_json::Value::Null, memory_mb),
        "held": held,
    })
}

fn counts(by_status: &BTreeMap<u16, u64>) -> serde_json::Map<String, serde_json::Value> {
    by_status
        .iter()
        .map(|(status, count)| (status.to_string(), json!(count)))
        .collect()
}

/// Fetch each distinct document once and give every site its ETag.
async fn prime(fleet: &Arc<Fleet>, sites: u32) -> Result<usize, String> {
    let keys = fleet.document_keys().min(sites);
    let mut sender = fleet
        .connect()
        .await
        .map_err(|kind| format!("cannot reach {}: {kind}", fleet.args.url))?;
    let mut by_key = Vec::with_capacity(keys as usize);
    for key in 0..keys {
        let answer = exchange(&mut sender, fleet.poll_request(key, false))
            .await
            .map_err(|error| format!("priming poll of site {key}: {error}"))?;
        if answer.status != StatusCode::OK {
            return Err(format!(
                "priming poll of site {key} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        let etag = answer
            .etag
            .ok_or_else(|| format!("priming poll of site {key}: no ETag"))?;
        by_key.push(fleet.intern(etag));
    }
    for (site, slot) in fleet.sites.etag.iter().enumerate() {
        let key = fleet.document_key(site as u32) as usize;
        if let Some(&index) = by_key.get(key) {
            slot.store(index, Ordering::Relaxed);
        }
    }
    Ok(fleet.etags.read().map_or(0, |etags| etags.values.len()))
}

fn labels(class: u32) -> HeaderValue {
    let cohort = if class % 10 == 0 { "pilot" } else { "main" };
    let text = format!("cohort={cohort},hw=rev{},region=r{}", class % 3, class % 8);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("cohort=main"))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hub_fleet_load: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hub_fleet_load: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let authority = args
        .url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {} is not http://host:port", args.url))?
        .trim_end_matches('/')
        .to_owned();
    let host = HeaderValue::from_str(&authority).map_err(|error| error.to_string())?;
    let capacity = if args.ramp {
        args.max_sites.max(args.sites)
    } else {
        args.sites
    };
    let fleet = Arc::new(Fleet {
        host,
        address: authority,
        sites: Sites::new(capacity),
        etags: RwLock::new(Etags::default()),
        labels: (0..LABEL_CLASSES).map(labels).collect(),
        args,
    });
    let documents = prime(&fleet, capacity).await?;
    eprintln!(
        "hub_fleet_load: {documents} distinct ETags; opening {} connections",
        fleet.args.connections
    );
    let (queue, jobs) = mpsc::unbounded_channel();
    let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
    let ready = Arc::new(AtomicU64::new(0));
    for _ in 0..fleet.args.connections {
        tokio::spawn(connection(
            Arc::clone(&fleet),
            Arc::clone(&jobs),
            Arc::clone(&ready),
        ));
    }
    let connected_by = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Relaxed) < fleet.args.connections as u64
        && Instant::now() < connected_by
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sites = fleet.args.sites;
    let mut ceiling: Option<serde_json::Value> = None;
    loop {
        eprintln!(
            "hub_fleet_load: {sites} sites for {:?}",
            fleet.args.duration
        );
        let result = step(&fleet, &queue, sites).await;
        println!("{result}");
        let held = result["held"].as_bool().unwrap_or(false);
        if !fleet.args.ramp {
            break;
        }
        if held {
            ceiling = Some(result.clone());
        } else {
            let last = ceiling.as_ref();
            println!(
                "{}",
                json!({
                    "ceiling_sites": last.map(|step| step["sites_at_interval"].clone()),
                    "ceiling_rps": last.map(|step| step["achieved_rps"].clone()),
                    "ceiling_p99_ms": last.map(|step| step["latency"]["p99_ms"].clone()),
                    "ceiling_server_cpu_pct": last.map(|step| step["server_cpu_pct"].clone()),
                    "failed_sites": result["sites_at_interval"],
                    "failed_p99_ms": result["latency"]["p99_ms"],
                    "failed_errors": result["errors"],
                    "failed_unanswered": result["unanswered"],
                    "failed_server_cpu_pct": result["server_cpu_pct"],
                    "failed_client_cpu_pct": result["client_cpu_pct"],
                })
            );
            break;
        }
        if sites >= fleet.args.max_sites {
            println!(
                "{}",
                json!({"ceiling_sites": result["sites_at_interval"], "ceiling_rps": result["achieved_rps"], "note": "max_sites reached before saturation"})
            );
            break;
        }
        sites = sites.saturating_mul(2).min(fleet.args.max_sites);
    }
    Ok(())
}
