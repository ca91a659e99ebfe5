//! `kill -9` of the real `edgeroll hub` at random instants while a fleet plan moves through its
//! waves: no wave starts twice, no wave's serial changes once published, what a site is served
//! never goes back to a lower serial, and the plan still completes.
// Real processes in real time.
#![allow(clippy::disallowed_methods)]

mod hub_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeroll::time::Timestamp;
use edgeroll::wire::report::{Report, ReportBatch, ReportBody, RevisionRef};
use hub_support::*;

/// How many times the hub is killed.
const KILLS: usize = 25;

const PLAN: &str = r#"document = "releases/v2.toml"
unknownAfter = "1h"
[[waves]]
name = "one"
selector = { ring = "1" }
bake = "300ms"
[[waves]]
name = "two"
selector = { ring = "2" }
bake = "300ms"
[[waves]]
name = "three"
bake = "300ms"
"#;

fn start_hub(dir: &HubDir, address: SocketAddr) -> Child {
    let child = Command::new(edgeroll())
        .args(["hub", "--config"])
        .arg(dir.config())
        .stderr(Stdio::null())
        .spawn()
        .expect("start edgeroll hub");
    wait_listening(address);
    child
}

/// What one simulated site saw: the highest serial it was served, its next report number.
#[derive(Debug, Default)]
struct Seen {
    highest: u64,
    next: u64,
}

/// One site: poll, and report Healthy on 2.0.0 for the serial it holds (as an agent that has
/// rolled it would), until `stop`. Asserts the serial it is served never goes down.
fn site(
    address: SocketAddr,
    name: String,
    ring: &str,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let labels = format!("ring={ring}");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(30));
        let headers = [
            ("edgeroll-site", name.as_str()),
            ("edgeroll-labels", labels.as_str()),
        ];
        let Ok(answer) = try_request(
            address,
            "GET",
            &edgeroll::wire::desired_path(&name),
            &headers,
            b"",
        ) else {
            continue; // killed: try again
        };
        if answer.status != 200 {
            continue;
        }
        let text = answer.text();
        let Ok(document) =
            edgeroll::spec::parse::parse_document(std::path::Path::new("served"), &text)
        else {
            panic!("{name} was served something that does not parse: {text}");
        };
        let mut seen = seen.lock().expect("seen");
        assert!(
            document.serial >= seen.highest,
            "{name} was served serial {} after {}",
            document.serial,
            seen.highest
        );
        seen.highest = document.serial;
        let seq = seen.next;
        let version = document.services[0].template.version.clone();
        let batch = ReportBatch {
            site: name.clone(),
            first: seq,
            last: seq,
            reports: vec![Report {
                seq,
                at: Timestamp::from_millis(1_764_600_000_000 + seq),
                body: ReportBody::Rollout {
                    service: "telemetry-ingest".to_owned(),
                    kind: "StateChanged".to_owned(),
                    message: String::new(),
                    phase: "Healthy".to_owned(),
                    completion: None,
                    stable: Some(RevisionRef {
                        revision: 1,
                        version,
                    }),
                    canary: None,
                    serial: Some(document.serial),
                },
            }],
            dropped: BTreeMap::new(),
        };
        if let Ok(answer) = try_post_batch(address, &batch) {
            if answer.status == 200 || answer.status == 409 {
                seen.next = answer.json()["ack"].as_u64().expect("ack") + 1;
            }
        }
    }
}

fn plan(address: SocketAddr) -> Option<serde_json::Value> {
    let answer = try_request(address, "GET", "/v1/plans/v2", &[], b"").ok()?;
    (answer.status == 200).then(|| answer.json())
}

#[test]
fn kill_9_while_a_plan_moves_never_restarts_a_wave_nor_serves_an_older_serial() {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let dir = HubDir::new(&address.to_string(), "plan_interval = \"50ms\"");
    dir.write_document("base.toml", 5, "", "1.0.0");
    std::fs::create_dir_all(dir.docs().join("releases")).expect("releases");
    std::fs::write(
        dir.docs().join("releases/v2.toml"),
        document(6, "", "2.0.0"),
    )
    .expect("release");
    std::fs::write(dir.docs().join("v2.plan.toml"), PLAN).expect("plan");
    let stop = Arc::new(AtomicBool::new(false));
    let mut seen = Vec::new();
    let mut threads = Vec::new();
    for (index, ring) in ["1", "1", "2", "2", "3", "3"].into_iter().enumerate() {
        let state = Arc::new(Mutex::new(Seen {
            highest: 0,
            next: 1,
        }));
        seen.push(Arc::clone(&state));
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            site(address, format!("site-{index}"), ring, state, stop)
        }));
    }

    // Every serial a wave was seen with, by wave: it must never change.
    let mut serials: BTreeMap<String, u64> = BTreeMap::new();
    let mut record = |view: &serde_json::Value| {
        for wave in view["waves"].as_array().into_iter().flatten() {
            if let Some(serial) = wave["serial"].as_u64() {
                let name = wave["name"].as_str().unwrap_or("").to_owned();
                let held = *serials.entry(name.clone()).or_insert(serial);
                assert_eq!(held, serial, "wave {name} changed its serial: {view:#}");
            }
        }
    };
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut hub = start_hub(&dir, address);
    loop {
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..250)));
        if let Some(view) = plan(address) {
            record(&view);
            if view["phase"] == "Completed" && kills >= KILLS {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the plan did not complete: {:#?}",
            plan(address)
        );
        if kills < KILLS {
            hub.kill().expect("kill -9 the hub");
            hub.wait().expect("reap the hub");
            kills += 1;
            hub = start_hub(&dir, address);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("a site thread panicked");
    }
    let view = plan(address).expect("the plan");
    record(&view);
    let kinds: Vec<&str> = view["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["kind"].as_str())
        .collect();
    let started = kinds.iter().filter(|kind| **kind == "WaveStarted").count();
    assert_eq!(started, 3, "each wave started exactly once: {kinds:?}");
    assert_eq!(kinds.last(), Some(&"PlanCompleted"), "{kinds:?}");
    assert_eq!(serials.len(), 3, "{serials:?}");
    for state in &seen {
        assert!(state.lock().expect("seen").highest >= 6);
    }
    eprintln!("{kills} kills; wave serials {serials:?}; events {kinds:?}");
    let _ = hub.kill();
    let _ = hub.wait();
}
