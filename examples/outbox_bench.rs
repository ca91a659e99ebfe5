//! Benchmarks of the report outbox (figures, not pass/fail; see bench/README.md):
//!
//! 1. commit latency of `save_rollout` with its outbox rows against the same commit without
//!    them (p50/p99, interleaved, on the state directory given or a temporary one);
//! 2. bytes per report in the outbox (JSON) and on the wire (gzip batch), for rollout events
//!    and measurements, and the database's size per row;
//! 3. how long a backlog of one simulated day of a busy rollout takes to deliver to a receiver
//!    on 127.0.0.1.
//!
//! `cargo run --release --example outbox_bench [STATE_DIR]`
// A benchmark measures real time.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/report_support/mod.rs"]
mod report_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeroll::shell::Clock;
use edgeroll::store::{EventRecord, NewReport, Store};
use edgeroll::time::Timestamp;
use edgeroll::wire::report::{self, Report, ReportBatch, ReportBody, RevisionRef};
use tokio_util::sync::CancellationToken;

const COMMITS: usize = 400;
const SITE: &str = "store-0042";
/// A busy rollout for a day: 4 metrics measured every 10 s, a rollout event a minute.
const DAY_MEASUREMENTS: u64 = 4 * 24 * 360;
const DAY_EVENTS: u64 = 24 * 60;

fn event_report(n: u64) -> ReportBody {
    ReportBody::Rollout {
        service: "telemetry-ingest".to_owned(),
        kind: "WeightChanged".to_owned(),
        message: format!(
            "step {}: canary weight {}% with {} ready instances",
            n % 5 + 1,
            fastrand::u8(1..100),
            fastrand::u8(1..9)
        ),
        phase: "Progressing".to_owned(),
        completion: None,
        stable: Some(RevisionRef {
            revision: 41,
            version: "2.4.1".to_owned(),
        }),
        canary: Some(RevisionRef {
            revision: 42,
            version: "2.5.0".to_owned(),
        }),
        serial: Some(17),
    }
}

fn measurement_report(n: u64) -> ReportBody {
    ReportBody::Measurement {
        service: "telemetry-ingest".to_owned(),
        run: "telemetry-ingest-42-3".to_owned(),
        metric: ["success-rate", "p99-latency", "error-rate", "judge"][(n % 4) as usize].to_owned(),
        phase: "Successful".to_owned(),
        // Values as varied as real ones, so the compression figure is not flattered.
        value: Some(format!("[{:.6}]", 0.9 + fastrand::f64() / 10.0)),
        message: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn main() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    println!("# outbox benchmarks (state directory {})\n", dir.display());
    commit_latency(&dir.join("latency"));
    sizes(&dir.join("sizes"));
    backlog(&dir.join("backlog"));
}

/// A rollout state of realistic size (a canary mid-way: two revisions with their templates).
fn state() -> serde_json::Value {
    let template = serde_json::json!({
        "version": "2.5.0",
        "command": ["/opt/ingest/bin/ingest", "--listen", "127.0.0.1:{port}", "--config", "/etc/ingest/ingest.toml"],
        "env": {"RUST_LOG": "info", "INGEST_BUFFER": "65536"},
        "readiness": {"httpGet": "/healthz"},
    });
    serde_json::json!({
        "service": "telemetry-ingest",
        "revisions": [
            {"number": 41, "template": template},
            {"number": 42, "template": template},
        ],
        "stable": 41,
        "canary": {"revision": 42, "step_index": 2, "progress": "Running"},
        "ready": {"41": 2, "42": 1},
        "phase": "Progressing",
        "message": "CanaryStepWeight",
    })
}

fn commit_latency(dir: &std::path::Path) {
    let store = Store::open(dir).expect("open store");
    let state = state();
    let mut without = Vec::with_capacity(COMMITS);
    let mut with = Vec::with_capacity(COMMITS);
    for n in 0..COMMITS as u64 {
        let event = EventRecord {
            service: "telemetry-ingest".to_owned(),
            at: Timestamp::from_millis(n),
            kind: "WeightChanged".to_owned(),
            message: "canary weight set to 50%".to_owned(),
        };
        let report = NewReport {
            at: Timestamp::from_millis(n),
            body: event_report(n),
        };
        // Interleaved, so both see the same disk and the same machine load.
        let started = Instant::now();
        store
            .save_rollout("telemetry-ingest", &state, std::slice::from_ref(&event))
            .expect("save");
        without.push(started.elapsed());
        let started = Instant::now();
        store
            .save_rollout_reporting("telemetry-ingest", &state, &[event], &[report])
            .expect("save with report");
        with.push(started.elapsed());
    }
    without.sort();
    with.sort();
    println!("## commit latency of save_rollout ({COMMITS} commits each, interleaved, synchronous=FULL)\n");
    println!("| commit | p50 | p99 |\n|---|---|---|");
    println!(
        "| state + event | {} | {} |",
        ms(percentile(&without, 0.5)),
        ms(percentile(&without, 0.99))
    );
    println!(
        "| state + event + outbox row | {} | {} |",
        ms(percentile(&with, 0.5)),
        ms(percentile(&with, 0.99))
    );
    println!();
}

fn sizes(dir: &std::path::Path) {
    println!("## bytes per report\n");
    println!("| report | outbox (JSON) | wire (gzip, batch of 500) |\n|---|---|---|");
    for (name, make) in [
        ("rollout event", event_report as fn(u64) -> ReportBody),
        ("measurement", measurement_report),
    ] {
        let reports: Vec<Report> = (1..=500)
            .map(|seq| Report {
                seq,
                at: Timestamp::from_millis(1_764_000_000_000 + seq * 10_000),
                body: make(seq),
            })
            .collect();
        let json: usize = reports
            .iter()
            .map(|report| serde_json::to_string(&report.body).unwrap().len())
            .sum();
        let batch = ReportBatch {
            site: SITE.to_owned(),
            first: 1,
            last: 500,
            reports,
            dropped: Default::default(),
        };
        let wire = report::encode(&batch).len();
        println!(
            "| {name} | {:.0} B | {:.1} B |",
            json as f64 / 500.0,
            wire as f64 / 500.0
        );
    }
    // On disk: the database file's growth per row (pages, index, row overhead).
    let store = Store::open(dir).expect("open store");
    let before = db_size(dir);
    let rows = 20_000u64;
    for chunk in 0..rows / 100 {
        let reports: Vec<NewReport> = (0..100)
            .map(|n| NewReport {
                at: Timestamp::from_millis(chunk * 100 + n),
                body: measurement_report(n),
            })
            .collect();
        store.append_reports(&reports).expect("append");
    }
    drop(store);
    let after = db_size(dir);
    println!(
        "\nOn disk: {:.0} B per measurement row (state.db + WAL growth over {rows} rows)\n",
        (after - before) as f64 / rows as f64
    );
}

fn db_size(dir: &std::path::Path) -> u64 {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

fn backlog(dir: &std::path::Path) {
    let store = Arc::new(Store::open(dir).expect("open store"));
    let total = DAY_MEASUREMENTS + DAY_EVENTS;
    let every = DAY_MEASUREMENTS / DAY_EVENTS;
    let mut pending = Vec::new();
    for n in 0..DAY_MEASUREMENTS {
        pending.push(NewReport {
            at: Timestamp::from_millis(n * 2_500),
            body: measurement_report(n),
        });
        if n % every == 0 {
            pending.push(NewReport {
                at: Timestamp::from_millis(n * 2_500),
                body: event_report(n),
            });
        }
        if pending.len() >= 500 {
            store.append_reports(&pending).expect("append");
            pending.clear();
        }
    }
    store.append_reports(&pending).expect("append");
    let status = store.outbox_status().expect("status");
    let receiver = report_support::Receiver::start();
    let config_path = dir.join("edgeroll.toml");
    std::fs::write(
        &config_path,
        format!(
            "[agent]\nsite = \"{SITE}\"\nstate_dir = \"{}\"\n[reports]\nurl = \"{}\"\nretry_initial = \"10ms\"\n",
            dir.display(),
            receiver.url()
        ),
    )
    .expect("write config");
    let config = edgeroll::config::load(&config_path).expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    runtime.block_on(async {
        edgeroll::report::spawn(
            &config,
            store.clone(),
            Clock::starting_at(Timestamp::from_millis(0)),
            shutdown.clone(),
        )
        .expect("sender")
        .expect("configured");
        loop {
            let now = store.outbox_status().expect("status");
            if now.depth == 0 && now.acked == now.last_seq {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let took = started.elapsed();
    shutdown.cancel();
    let requests = receiver.seen.lock().unwrap().requests.len();
    println!("## backlog of one simulated day of a busy rollout\n");
    println!(
        "{total} reports ({DAY_MEASUREMENTS} measurements, {} rollout events; {} bytes of JSON) \
         delivered to a receiver on 127.0.0.1 in {:.2} s: {requests} batches, {:.0} reports/s \
         (includes the sender's start-up jitter of up to 10 ms).",
        status.depth - DAY_MEASUREMENTS,
        status.bytes,
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    assert_eq!(receiver.high_water(SITE), status.last_seq);
}
