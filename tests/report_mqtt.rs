//! The report sender over MQTT 5 against a real mosquitto (Debian `mosquitto`), started here on
//! a loopback port with its own config and persistence directory, and restarted in the middle of
//! the delivery. A subscriber with a persistent session (rumqttc) checks that batches arrive in
//! order with no gap, counts duplicates (QoS 1 may deliver twice), and that every report
//! arrives. Like the other real-engine tests it is `#[ignore]`d and run by `.ci/run`
//! (`cargo test -- --ignored`); it fails, never skips, when mosquitto is not installed.
// Real processes, real time.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeroll::shell::Clock;
use edgeroll::store::{NewReport, Store};
use edgeroll::time::Timestamp;
use edgeroll::wire::report::{self, ReportBody};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio_util::sync::CancellationToken;

const SITE: &str = "store-0042";
const WITHIN: Duration = Duration::from_secs(60);

/// A mosquitto process on 127.0.0.1:`port`, stopped (by its pid) when dropped.
struct Broker {
    child: Child,
    config: PathBuf,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Broker {
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 user root\n\
                 persistence_location {}/\nlog_dest file {}/mosquitto.log\n",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        Broker::spawn(config, port)
    }

    fn spawn(config: PathBuf, port: u16) -> Broker {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto must be installed (Debian package `mosquitto`)");
        let deadline = std::time::Instant::now() + WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, config }
    }

    /// SIGTERM (mosquitto saves its sessions), wait, and start again on the same config.
    fn restart(mut self, port: u16) -> Broker {
        self.stop();
        Broker::spawn(self.config.clone(), port)
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Default)]
struct Received {
    /// Reports kept, by sequence number.
    reports: BTreeMap<u64, ReportBody>,
    /// The highest `last` seen.
    high_water: u64,
    batches: usize,
    duplicates: usize,
    /// Batches that started after a gap (must stay 0).
    gaps: Vec<(u64, u64)>,
}

/// A subscriber with a persistent session on `edgeroll/+/reports`, reconnecting on errors.
fn subscribe(port: u16, received: Arc<Mutex<Received>>, stop: CancellationToken) {
    let mut options = MqttOptions::new("test-hub", "127.0.0.1", port);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(3600))
        .set_max_packet_size(Some(8 * 1024 * 1024));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    tokio::spawn(async move {
        let _client = client.clone();
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    if !connack.session_present {
                        client
                            .subscribe(edgeroll::wire::REPORT_TOPIC_FILTER, QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let batch = report::decode(&publish.payload, true).expect("a valid batch");
                    assert_eq!(publish.topic, edgeroll::wire::report_topic(SITE).as_bytes());
                    let mut received = received.lock().unwrap();
                    received.batches += 1;
                    if batch.last <= received.high_water {
                        received.duplicates += 1;
                        continue;
                    }
                    if batch.first > received.high_water + 1 {
                        let gap = (received.high_water, batch.first);
                        received.gaps.push(gap);
                    }
                    for report in batch.reports {
                        received.reports.entry(report.seq).or_insert(report.body);
                    }
                    received.high_water = batch.last;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
}

fn reports(from: u64, count: u64) -> Vec<NewReport> {
    (from..from + count)
        .map(|n| NewReport {
            at: Timestamp::from_millis(n),
            body: ReportBody::Rollout {
                service: "web".to_owned(),
                kind: "StepCompleted".to_owned(),
                message: format!("event {n}"),
                phase: "Progressing".to_owned(),
                completion: None,
                stable: None,
                canary: None,
                serial: Some(n),
            },
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (Debian package `mosquitto`); .ci/run installs it and runs --ignored"]
async fn batches_arrive_in_order_through_a_real_broker_that_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Broker::start(dir.path(), port);
    let received = Arc::new(Mutex::new(Received::default()));
    let stop = CancellationToken::new();
    subscribe(port, received.clone(), stop.clone());
    // Let the subscriber connect (and subscribe) before anything is published.
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default();
        if log.contains("as test-hub") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let config_path = dir.path().join("edgeroll.toml");
    std::fs::write(
        &config_path,
        format!(
            "[agent]\nsite = \"{SITE}\"\nstate_dir = \"{}\"\n\n[reports]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
             batch_max_reports = 10\ntimeout = \"2s\"\nretry_initial = \"50ms\"\nretry_max = \"300ms\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let config = edgeroll::config::load(&config_path).unwrap();
    let store = Arc::new(Store::open(&config.state_dir).unwrap());
    let shutdown = CancellationToken::new();
    edgeroll::report::spawn(
        &config,
        store.clone(),
        Clock::starting_at(Timestamp::from_millis(0)),
        shutdown.clone(),
    )
    .unwrap()
    .expect("reports are configured");

    let mut next = 1;
    for round in 0..12 {
        store.append_reports(&reports(next, 25)).unwrap();
        next += 25;
        if round == 5 {
            broker = broker.restart(port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = next - 1;
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let status = store.outbox_status().unwrap();
        let have = received.lock().unwrap().reports.len() as u64;
        if status.depth == 0 && have == total {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: outbox {status:?}, subscriber has {have} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = received.lock().unwrap();
    eprintln!(
        "{total} reports in {} batches through mosquitto, {} duplicate batches",
        received.batches, received.duplicates
    );
    assert!(received.gaps.is_empty(), "gaps: {:?}", received.gaps);
    assert_eq!(
        received.reports.keys().copied().collect::<Vec<u64>>(),
        (1..=total).collect::<Vec<u64>>()
    );
    for (seq, body) in &received.reports {
        assert_eq!(body, &reports(*seq, 1)[0].body);
    }
    let status = store.outbox_status().unwrap();
    assert!(status.last_ok, "{status:?}");
    shutdown.cancel();
    stop.cancel();
    broker.stop();
}
