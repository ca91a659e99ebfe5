//! `edgeroll hub` ingesting report batches from a real mosquitto broker (Debian `mosquitto`,
//! started here on a loopback port): duplicates and overlaps keep one copy, a gap is recorded,
//! garbage is skipped, and batches published while the hub is down arrive when it is back
//! (persistent session). Fails, never skips, when mosquitto is not installed; like the other
//! real-engine tests it is `#[ignore]`d and run by `.ci/run` (`cargo test -- --ignored`).
// Real processes in real time.
#![allow(clippy::disallowed_methods)]

mod engine_support;
mod hub_support;

use std::net::SocketAddr;
use std::time::Duration;

use engine_support::Mosquitto;
use hub_support::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};

/// A site publishing batches with QoS 1, as the agent's MQTT sender does.
struct Publisher {
    client: AsyncClient,
    runtime: tokio::runtime::Runtime,
}

impl Publisher {
    fn new(port: u16) -> Publisher {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let options = MqttOptions::new("test-site-publisher", "127.0.0.1", port);
        let (client, mut events) = AsyncClient::new(options, 64);
        runtime.spawn(async move {
            loop {
                if events.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Publisher { client, runtime }
    }

    fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.runtime
            .block_on(self.client.publish(topic, QoS::AtLeastOnce, false, payload))
            .expect("publish");
    }

    fn batch(&self, site: &str, first: u64, last: u64, seqs: impl IntoIterator<Item = u64>) {
        let sent = batch(site, first, last, seqs);
        self.publish(
            &edgeroll::wire::report_topic(site),
            edgeroll::wire::report::encode(&sent),
        );
    }
}

fn site_json(address: SocketAddr, site: &str) -> Option<serde_json::Value> {
    let answer = request(address, "GET", &format!("/v1/sites/{site}"), &[], b"");
    (answer.status == 200).then(|| answer.json())
}

fn high_water(address: SocketAddr, site: &str) -> u64 {
    site_json(address, site).map_or(0, |site| site["highWater"].as_u64().unwrap_or(0))
}

/// Publish probes until the hub has subscribed and stored one (the broker keeps nothing for a
/// subscriber that has not subscribed yet).
fn wait_subscribed(publisher: &Publisher, address: SocketAddr, probe: u64) {
    wait_for("the hub to subscribe", || {
        publisher.batch("probe", probe, probe, [probe]);
        std::thread::sleep(Duration::from_millis(100));
        high_water(address, "probe") >= probe
    });
}

#[test]
#[ignore = "needs mosquitto: .ci/run installs it and runs the ignored tests"]
fn batches_from_mqtt_are_stored_once_and_survive_the_hub_being_away() {
    let broker = Mosquitto::start();
    let dir = HubDir::new(
        "127.0.0.1:0",
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{}\"\nclient_id = \"hub-under-test\"\n",
            broker.port
        ),
    );
    let hub = InProcessHub::start(&dir);
    let publisher = Publisher::new(broker.port);
    wait_subscribed(&publisher, hub.address, 1);

    publisher.batch("store-1", 1, 5, 1..=5);
    publisher.batch("store-1", 1, 5, 1..=5);
    publisher.batch("store-1", 3, 8, 3..=8);
    // Garbage and a batch on another site's topic are skipped, not stored.
    publisher.publish(
        &edgeroll::wire::report_topic("store-1"),
        b"not gzip".to_vec(),
    );
    let foreign = batch("store-2", 1, 1, [1]);
    publisher.publish(
        &edgeroll::wire::report_topic("store-1"),
        edgeroll::wire::report::encode(&foreign),
    );
    // A gap: MQTT cannot answer 409, so the batch is stored and the skipped numbers counted.
    publisher.batch("store-1", 12, 13, 12..=13);
    wait_for("store-1 up to 13", || {
        high_water(hub.address, "store-1") == 13
    });
    let (seqs, _) = held(hub.address, "store-1");
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 7, 8, 12, 13]);
    let site = site_json(hub.address, "store-1").expect("store-1");
    assert_eq!(site["gaps"], 1);
    assert_eq!(site["lost"], 3);
    assert_eq!(site["duplicates"], 1);
    assert!(site_json(hub.address, "store-2").is_none());

    // The hub goes away; the broker keeps its session and queues what sites publish meanwhile.
    hub.stop();
    publisher.batch("store-1", 14, 20, 14..=20);
    publisher.batch("store-1", 21, 30, 21..=30);
    std::thread::sleep(Duration::from_millis(300));
    let hub = InProcessHub::start(&dir);
    wait_for("the batches published while the hub was away", || {
        high_water(hub.address, "store-1") == 30
    });
    let (seqs, _) = held(hub.address, "store-1");
    let mut expected: Vec<u64> = (1..=8).collect();
    expected.extend(12..=30);
    assert_eq!(seqs, expected);

    // A burst from several sites at once, each site's batches in order (they share commits).
    for first in (1..=300).step_by(3) {
        for site in ["store-a", "store-b", "store-c"] {
            publisher.batch(site, first, first + 2, first..=first + 2);
        }
    }
    for site in ["store-a", "store-b", "store-c"] {
        wait_for(&format!("the burst of {site}"), || {
            high_water(hub.address, site) == 300
        });
        assert_eq!(held(hub.address, site).0, (1..=300).collect::<Vec<_>>());
        assert_eq!(site_json(hub.address, site).expect(site)["gaps"], 0);
    }
}

#[test]
#[ignore = "needs mosquitto: .ci/run installs it and runs the ignored tests"]
fn kill_9_of_the_hub_during_mqtt_ingest_loses_nothing() {
    let broker = Mosquitto::start();
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let dir = HubDir::new(
        &address.to_string(),
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{}\"\nclient_id = \"hub-killed\"\n",
            broker.port
        ),
    );
    let start = || dir.spawn(address);
    let mut hub = start();
    let publisher = Publisher::new(broker.port);
    wait_subscribed(&publisher, address, 1);
    const BATCHES: u64 = 400;
    for index in 0..BATCHES {
        let first = index * 5 + 1;
        publisher.batch("store-1", first, first + 4, first..=first + 4);
        if index % 100 == 50 {
            // kill -9 while batches are in flight, then start again.
            hub.kill().expect("kill -9");
            hub.wait().expect("reap");
            hub = start();
        }
    }
    wait_for("every batch after the kills", || {
        high_water(address, "store-1") == BATCHES * 5
    });
    assert_eq!(
        held(address, "store-1").0,
        (1..=BATCHES * 5).collect::<Vec<_>>()
    );
    let site = site_json(address, "store-1").expect("store-1");
    assert_eq!(site["gaps"], 0, "{site}");
    assert_eq!(site["lost"], 0, "{site}");
    eprintln!(
        "{BATCHES} batches over 4 kills: {} received again after a kill (committed, not yet acknowledged)",
        site["duplicates"]
    );
    let _ = hub.kill();
    let _ = hub.wait();
}
