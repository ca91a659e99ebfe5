//! The whole loop between sites and a center, with real processes only, on 127.0.0.1: the real
//! `edgeroll hub` (HTTPS with a throw-away CA; it signs documents with a key made by `edgeroll
//! keygen --unencrypted` and ingests reports over HTTPS and from MQTT), a real mosquitto, a
//! plain nginx serving `edgeroll sign`-signed files, and three real `edgeroll run` agents, each
//! with its own state directory, socket, proxy port and sample-app workload:
//!
//! | site    | labels          | pulls from          | reports to              |
//! |---------|-----------------|---------------------|-------------------------|
//! | pilot-1 | cohort = pilot  | the hub (HTTPS)     | the hub (HTTPS)         |
//! | pilot-2 | cohort = pilot  | nginx (static, TLS) | mosquitto → hub (MQTT)  |
//! | fleet-1 | cohort = fleet  | the hub (HTTPS)     | the hub (HTTPS)         |
//!
//! 1. A canary (a higher serial, `selector = { cohort = "pilot" }`) rolls on the pilot sites
//!    only, while pilot-2 is stopped for the whole rollout; restarted, it catches up with the
//!    latest document and delivers everything it owes.
//! 2. A document for the other cohort on pilot-2's static server is refused by pilot-2 itself
//!    (rule `selector`), and the hub learns so.
//! 3. Then new serials keep coming while every agent is killed with `kill -9` at random
//!    instants and restarted; at the end the hub holds every sequence number of every site
//!    exactly once, and each agent's outbox agrees.
//!
//! Three sites share one machine, so each site's documents differ in the proxy port (and the
//! workloads' test marker); the hub has one file per cohort (`pilot.toml` for pilot-1,
//! `fleet.toml` for fleet-1) and chooses between them by selector; nginx serves pilot-2's.
//!
//! Part of `cargo test` (102 kills in about 30 s here); it fails, never skips, without nginx or
//! mosquitto.

// Real processes in real time.
#![allow(clippy::disallowed_methods)]

mod common;
mod engine_support;
mod hub_support;
mod pull_support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Site, SiteOptions};
use engine_support::{free_port, Mosquitto, Nginx};
use hub_support::{held_via, try_request_tls, Answer, HubDir};
use pull_support::Pki;
use serde_json::Value;

/// The canary of every document: half the traffic, one second, promoted.
const STEPS: &str = r#"steps = [{ setWeight = 50 }, { pause = { duration = "1s" } }]"#;
/// How long the end of the test waits for every site to settle and deliver.
const SETTLE: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, PartialEq)]
enum Pull {
    /// `https://hub/v1/sites/{site}/desired`, from the hub file of this name.
    Hub(&'static str),
    /// `https://nginx/{site}/desired.toml`, a static file.
    Nginx,
}

#[derive(Clone, Copy, PartialEq)]
enum Reports {
    Https,
    Mqtt,
}

/// What a center publishes for one site: its documents differ from the others' only in the
/// proxy port and the workloads' marker (`VERSION` stands for the version).
#[derive(Clone)]
struct Target {
    name: &'static str,
    cohort: &'static str,
    pull: Pull,
    template: String,
}

/// One agent.
struct FleetSite {
    name: &'static str,
    site: Site,
    kills: usize,
    /// Kills while a canary ran.
    mid_rollout: usize,
}

/// The version placeholder of a [`Target`]'s template.
const VERSION: &str = "0.0.0-version";

struct Fleet {
    started: Instant,
    pki: Pki,
    keys: tempfile::TempDir,
    hub_dir: HubDir,
    hub: Option<Child>,
    hub_address: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    nginx: Nginx,
    _nginx_dir: tempfile::TempDir,
    broker: Mosquitto,
    staging: tempfile::TempDir,
    targets: Vec<Target>,
    /// The last serial published.
    serial: u64,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut hub) = self.hub.take() {
            let _ = hub.kill();
            let _ = hub.wait();
        }
    }
}

impl Fleet {
    /// The hub, mosquitto, nginx, and three agents (configured, not started).
    fn new() -> (Fleet, Vec<FleetSite>) {
        let started = Instant::now();
        let pki = Pki::new();
        let keys = tempfile::tempdir().expect("keys dir");
        let keygen = Command::new(common::edgeroll())
            .args(["keygen", "--unencrypted", "--out"])
            .arg(keys.path())
            .output()
            .expect("edgeroll keygen");
        assert!(keygen.status.success(), "keygen: {keygen:?}");
        let broker = Mosquitto::start();
        let nginx_dir = tempfile::tempdir().expect("nginx dir");
        let nginx = Nginx::start(nginx_dir.path(), &pki.cert_file, &pki.key_file, free_port());

        let hub_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let hub_dir = HubDir::new(
            &hub_address.to_string(),
            &format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[signing]\nkey = \"{}\"\n\n\
                 [mqtt]\nbroker = \"{}\"\nclient_id = \"fleet-hub\"\n",
                pki.cert_file.display(),
                pki.key_file.display(),
                keys.path().join("edgeroll.key").display(),
                broker.url()
            ),
        );
        let tls = Arc::new(pki.client_config());
        let mut fleet = Fleet {
            started,
            pki,
            keys,
            hub_dir,
            hub: None,
            hub_address,
            tls,
            nginx,
            _nginx_dir: nginx_dir,
            broker,
            staging: tempfile::tempdir().expect("staging dir"),
            targets: Vec::new(),
            serial: 0,
        };
        fleet.start_hub();
        fleet.wait_hub_subscribed();
        let mut sites = Vec::new();
        for (name, cohort, pull, reports) in [
            ("pilot-1", "pilot", Pull::Hub("pilot.toml"), Reports::Https),
            ("pilot-2", "pilot", Pull::Nginx, Reports::Mqtt),
            ("fleet-1", "fleet", Pull::Hub("fleet.toml"), Reports::Https),
        ] {
            let site = Site::create(SiteOptions::default());
            fleet.configure(&site, name, cohort, pull, reports);
            fleet.targets.push(Target {
                name,
                cohort,
                pull,
                template: site.desired_text(VERSION, &[], STEPS, "", 1),
            });
            sites.push(FleetSite {
                name,
                site,
                kills: 0,
                mid_rollout: 0,
            });
        }
        (fleet, sites)
    }

    fn start_hub(&mut self) {
        let log = std::fs::File::create(self.hub_dir.dir.path().join("hub.log")).expect("log");
        let child = Command::new(common::edgeroll())
            .args(["hub", "--config"])
            .arg(self.hub_dir.config())
            .env("EDGEROLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start edgeroll hub");
        self.hub = Some(child);
        let deadline = Instant::now() + common::WAIT;
        while self.try_get("/v1/documents").is_err() {
            assert!(
                Instant::now() < deadline,
                "the hub did not answer HTTPS: {}",
                self.hub_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn hub_log(&self) -> String {
        std::fs::read_to_string(self.hub_dir.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// The broker keeps nothing for a session before it subscribes: wait until the hub's log
    /// says it is connected, then until a probe batch published through mosquitto is held.
    fn wait_hub_subscribed(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let options = rumqttc::v5::MqttOptions::new("fleet-probe", "127.0.0.1", self.broker.port);
        let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 16);
        let deadline = Instant::now() + common::WAIT;
        let mut probe = 0;
        runtime.block_on(async {
            let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
            loop {
                probe += 1;
                let batch = hub_support::batch("probe", probe, probe, [probe]);
                client
                    .publish(
                        edgeroll::wire::report_topic("probe"),
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                        false,
                        edgeroll::wire::report::encode(&batch),
                    )
                    .await
                    .expect("publish a probe");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if self
                    .summary("probe")
                    .is_some_and(|summary| summary["highWater"].as_u64() >= Some(1))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the hub never took a batch from MQTT: {}",
                    self.hub_log()
                );
            }
            poller.abort();
        });
    }

    /// Write the agent's config: its name and labels, its source, its report transport.
    fn configure(&self, site: &Site, name: &str, cohort: &str, pull: Pull, reports: Reports) {
        let source = match pull {
            Pull::Hub(_) => format!("https://{}/v1/sites/{{site}}/desired", self.hub_address),
            Pull::Nginx => format!(
                "https://127.0.0.1:{}/{{site}}/desired.toml",
                self.nginx.port
            ),
        };
        let url = match reports {
            Reports::Https => format!("https://{}/v1/reports", self.hub_address),
            Reports::Mqtt => self.broker.url(),
        };
        let ca = self.pki.ca_file.display();
        let config = format!(
            "[agent]\nsite = \"{name}\"\nlabels = {{ cohort = \"{cohort}\" }}\n\
             state_dir = \"{state}\"\nsocket = \"{socket}\"\nshutdown_grace = \"2s\"\n\n\
             [runtime]\nkind = \"process\"\nstop_grace = \"2s\"\n\n\
             [desired]\nsource = \"{source}\"\npoll_interval = \"1s\"\n\
             trusted_keys = [\"{key}\"]\nca_file = \"{ca}\"\ntimeout = \"5s\"\n\n\
             [reports]\nurl = \"{url}\"\nca_file = \"{ca}\"\ntimeout = \"5s\"\n\
             retry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
            state = site.dir.path().join("state").display(),
            socket = site.socket.display(),
            key = self.keys.path().join("edgeroll.pub").display(),
        );
        std::fs::write(&site.config, config).expect("write the agent config");
    }

    fn try_get(&self, path: &str) -> std::io::Result<Answer> {
        try_request_tls(&self.tls, self.hub_address, "GET", path, &[], b"")
    }

    fn get(&self, path: &str) -> Answer {
        self.try_get(path)
            .unwrap_or_else(|error| panic!("GET {path} from the hub: {error}"))
    }

    /// `GET /v1/sites/{site}`, when the hub has heard from it.
    fn summary(&self, site: &str) -> Option<Value> {
        let answer = self.get(&format!("/v1/sites/{site}"));
        (answer.status == 200).then(|| answer.json())
    }

    /// Publish `version` with a new serial to `which` sites (one serial for all of them; the
    /// hub's two files need two serials, so the fleet's is one lower).
    fn publish(&mut self, which: &[usize], version: &str) -> u64 {
        self.serial += 2;
        let serial = self.serial;
        for &index in which {
            let cohort = self.targets[index].cohort;
            let serial = if cohort == "fleet" {
                serial - 1
            } else {
                serial
            };
            self.publish_one(index, serial, cohort, version);
        }
        serial
    }

    /// Publish `version` as `serial` with `selector = { cohort = COHORT }` where site `index`
    /// pulls from.
    fn publish_one(&self, index: usize, serial: u64, cohort: &str, version: &str) {
        let site = &self.targets[index];
        let text = site.template.replace(VERSION, version).replacen(
            "serial = 1\n",
            &format!("serial = {serial}\nselector = {{ cohort = \"{cohort}\" }}\n"),
            1,
        );
        match site.pull {
            Pull::Hub(file) => {
                // The hub signs it with its key (there is no .minisig next to it).
                let partial = self.hub_dir.dir.path().join(format!("{file}.partial"));
                std::fs::write(&partial, &text).expect("write");
                std::fs::rename(&partial, self.hub_dir.docs().join(file)).expect("rename");
            }
            Pull::Nginx => self.publish_static(site.name, &text),
        }
    }

    /// Sign `text` with `edgeroll sign` and put it and its `.minisig` into nginx's root: the
    /// signature first, then the document, each renamed into place.
    fn publish_static(&self, site: &str, text: &str) {
        let staged = self.staging.path().join("desired.toml");
        std::fs::write(&staged, text).expect("stage");
        let sign = Command::new(common::edgeroll())
            .arg("sign")
            .arg(&staged)
            .arg("--key")
            .arg(self.keys.path().join("edgeroll.key"))
            .output()
            .expect("edgeroll sign");
        assert!(sign.status.success(), "edgeroll sign: {sign:?}");
        let dir = self.nginx.www().join(site);
        std::fs::create_dir_all(&dir).expect("site dir");
        for name in ["desired.toml.minisig", "desired.toml"] {
            std::fs::rename(self.staging.path().join(name), dir.join(name)).expect("rename");
        }
    }

    /// The agent's whole status (`get -o json`).
    fn status(site: &Site) -> Value {
        serde_json::from_str(&site.cli_ok(&["get", "-o", "json"])).expect("status JSON")
    }

    /// Wait until `site` runs `version` as its stable, rolled out from `serial`, with nothing
    /// in progress, and the hub's summary says the same.
    fn wait_settled(&self, site: &FleetSite, version: &str, serial: u64) {
        site.site
            .wait_for(&format!("{} on {version}", site.name), |s| {
                s["stable"]["version"] == version
                    && s["phase"] == "Healthy"
                    && s["canary"].is_null()
            });
        let deadline = Instant::now() + SETTLE;
        loop {
            let status = Fleet::status(&site.site);
            let summary = self.summary(site.name).unwrap_or(Value::Null);
            let web = &summary["services"]["web"];
            if status["source"]["serial"] == serial
                && web["stable"]["version"] == version
                && web["phase"] == "Healthy"
                && web["serial"] == serial
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the hub does not show {version} (serial {serial}) settled:\n{summary:#}\n\
                 source: {:#}",
                site.name,
                status["source"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the agent's outbox is empty and the hub holds all of it; then check that the
    /// hub holds each of 1..=last exactly once. Returns (last, duplicate batches at the hub).
    fn wait_delivered(&self, site: &FleetSite) -> (u64, u64) {
        let deadline = Instant::now() + SETTLE;
        let (last, summary) = loop {
            let reports = Fleet::status(&site.site)["reports"].clone();
            let last = reports["lastSeq"].as_u64().unwrap_or(0);
            let summary = self.summary(site.name).unwrap_or(Value::Null);
            if reports["depth"] == 0
                && reports["acked"] == last
                && summary["highWater"].as_u64() == Some(last)
            {
                break (last, summary);
            }
            assert!(
                Instant::now() < deadline,
                "{}: not delivered: outbox {reports:#}\nhub: {summary:#}\n{}",
                site.name,
                site.site.agent_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let (seqs, high_water) = held_via(|path| self.get(path), site.name);
        assert_eq!(high_water, last, "{}", site.name);
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<u64>>(),
            "{}: the hub holds every number exactly once",
            site.name
        );
        for counter in ["missing", "gaps", "lost"] {
            assert_eq!(summary[counter], 0, "{}: {counter}: {summary:#}", site.name);
        }
        assert_eq!(summary["reports"], last, "{}: {summary:#}", site.name);
        assert_eq!(
            summary["dropped"],
            serde_json::json!({}),
            "{}: nothing was dropped: {summary:#}",
            site.name
        );
        (last, summary["duplicates"].as_u64().unwrap_or(0))
    }
}

/// Kill `site`'s agent with `kill -9` at random instants, `kills` times, restarting it each
/// time (the workloads keep running and are adopted).
fn chaos(site: &mut FleetSite, kills: usize) {
    for _ in 0..kills {
        // A third of the kills come right after the restart, while the agent resumes its
        // rollout and sends what it owes; the others anywhere in the next 0.8 s.
        let wait = if fastrand::u8(0..3) == 0 {
            fastrand::u64(0..60)
        } else {
            fastrand::u64(50..800)
        };
        std::thread::sleep(Duration::from_millis(wait));
        // What the agent was doing an instant before: a rollout in progress, or not.
        let output = site.site.cli(&["get", "web", "-o", "json"]);
        let rolling = serde_json::from_slice::<Value>(&output.stdout)
            .is_ok_and(|status| !status["canary"].is_null());
        site.site.kill9_agent();
        site.kills += 1;
        site.mid_rollout += usize::from(rolling);
        site.site.start_agent();
    }
}

/// The fleet's serial of a release published as `serial` (see [`Fleet::publish`]).
fn serial_of(site: &FleetSite, serial: u64) -> u64 {
    if site.name == "fleet-1" {
        serial - 1
    } else {
        serial
    }
}

fn fleet_end_to_end(kills_per_site: usize) {
    let (mut fleet, mut sites) = Fleet::new();
    let all = [0, 1, 2];
    let (pilot_1, pilot_2, fleet_1) = (0, 1, 2);

    // The first release everywhere.
    let first = fleet.publish(&all, "1.0.0");
    for site in &mut sites {
        site.site.start_agent();
    }
    for site in &sites {
        fleet.wait_settled(site, "1.0.0", serial_of(site, first));
    }

    // pilot-2 is away for the whole canary of the pilot cohort.
    let before = Fleet::status(&sites[pilot_2].site)["reports"]["lastSeq"]
        .as_u64()
        .unwrap_or(0);
    let status = sites[pilot_2].site.terminate_agent();
    assert!(status.success(), "pilot-2 stopped: {status:?}");
    let canary = fleet.publish(&[pilot_1, pilot_2], "2.0.0");
    sites[pilot_1]
        .site
        .wait_for("pilot-1's canary", |s| s["canary"]["version"] == "2.0.0");
    fleet.wait_settled(&sites[pilot_1], "2.0.0", canary);

    // fleet-1 was not selected: the hub kept answering it with the fleet's document (the
    // pilots' has the higher serial), and it still runs and reports 1.0.0.
    let summary = fleet.summary("fleet-1").expect("fleet-1 known to the hub");
    assert_eq!(summary["document"]["name"], "fleet.toml", "{summary:#}");
    assert_eq!(summary["serial"], first - 1, "{summary:#}");
    let web = &summary["services"]["web"];
    assert_eq!(web["stable"]["version"], "1.0.0", "{summary:#}");
    assert!(web["canary"].is_null(), "{summary:#}");
    let status = Fleet::status(&sites[fleet_1].site);
    assert_eq!(
        status["source"]["serial"],
        first - 1,
        "{:#}",
        status["source"]
    );
    assert_eq!(sites[fleet_1].site.status()["stable"]["version"], "1.0.0");
    let summary = fleet.summary("pilot-1").expect("pilot-1 known to the hub");
    assert_eq!(summary["document"]["name"], "pilot.toml", "{summary:#}");
    assert_eq!(summary["serial"], canary, "{summary:#}");
    // pilot-2 was away: the hub still has it on 1.0.0.
    let summary = fleet.summary("pilot-2").expect("pilot-2 known to the hub");
    assert_eq!(summary["services"]["web"]["stable"]["version"], "1.0.0");

    // pilot-2 comes back: it takes the latest document from nginx, rolls it, and delivers what
    // it owes through mosquitto to the hub.
    let back = Instant::now();
    sites[pilot_2].site.start_agent();
    fleet.wait_settled(&sites[pilot_2], "2.0.0", canary);
    let (after, _) = fleet.wait_delivered(&sites[pilot_2]);
    let caught_up = back.elapsed();
    assert!(after > before, "pilot-2 reported its catch-up");
    for index in [pilot_1, fleet_1] {
        fleet.wait_delivered(&sites[index]);
    }

    // A static server cannot choose: a document for the fleet cohort put where pilot-2 pulls
    // is refused by pilot-2 itself (rule `selector`) and reported, and nothing that runs
    // changes.
    fleet.serial += 2;
    let wrong = fleet.serial;
    fleet.publish_one(pilot_2, wrong, "fleet", "6.6.6");
    let deadline = Instant::now() + common::WAIT;
    let refusal = loop {
        let summary = fleet.summary("pilot-2").unwrap_or(Value::Null);
        if summary["lastDocument"]["serial"] == wrong {
            break summary["lastDocument"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no refusal reported: {summary:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(refusal["outcome"], "refused", "{refusal:#}");
    assert_eq!(refusal["rule"], "selector", "{refusal:#}");
    let status = Fleet::status(&sites[pilot_2].site);
    assert_eq!(status["source"]["serial"], canary, "{:#}", status["source"]);
    assert_eq!(status["source"]["lastResult"], "refused (selector)");
    let web = sites[pilot_2].site.status();
    assert_eq!(web["stable"]["version"], "2.0.0", "{web:#}");
    assert!(web["canary"].is_null(), "{web:#}");
    for site in &sites {
        fleet.wait_delivered(site);
    }
    let calm = fleet.started.elapsed();

    // New serials keep coming while every agent is killed at random instants.
    let mut version = 2;
    let mut releases = 0;
    std::thread::scope(|scope| {
        let threads: Vec<_> = sites
            .iter_mut()
            .map(|site| scope.spawn(move || chaos(site, kills_per_site)))
            .collect();
        while threads.iter().any(|thread| !thread.is_finished()) {
            version += 1;
            releases += 1;
            fleet.publish(&all, &format!("{version}.0.0"));
            std::thread::sleep(Duration::from_millis(fastrand::u64(600..1_800)));
        }
    });

    // One last release; every site settles on it and delivers everything, once.
    let version = format!("{}.0.0", version + 1);
    let last = fleet.publish(&all, &version);
    for site in &sites {
        fleet.wait_settled(site, &version, serial_of(site, last));
    }
    let mut lines = Vec::new();
    let (mut kills, mut mid_rollout, mut duplicates) = (0, 0, 0);
    for site in &sites {
        let (reports, repeated) = fleet.wait_delivered(site);
        kills += site.kills;
        mid_rollout += site.mid_rollout;
        duplicates += repeated;
        lines.push(format!(
            "{} {} kills ({} mid-canary) {reports} reports {repeated} duplicate batches",
            site.name, site.kills, site.mid_rollout
        ));
    }
    assert_eq!(kills, kills_per_site * sites.len());
    assert!(
        mid_rollout * 4 >= kills,
        "only {mid_rollout} of {kills} kills hit a rollout in progress"
    );
    eprintln!(
        "fleet e2e: {kills} kill -9 ({mid_rollout} while a canary ran) during {releases} \
         releases; {}; {duplicates} duplicate batches acknowledged again, 0 reports lost or \
         stored twice; pilot-2 back after the canary: on 2.0.0 and its {} new reports at the hub \
         {:.1} s after its start; {:.0} s in all ({:.0} s before the kills)",
        lines.join(", "),
        after - before,
        caught_up.as_secs_f64(),
        fleet.started.elapsed().as_secs_f64(),
        calm.as_secs_f64()
    );
}

#[test]
#[ignore = "needs nginx and mosquitto (apt-get install nginx-light mosquitto); .ci/run installs them and runs --ignored"]
fn a_fleet_of_three_rolls_a_pilot_canary_and_survives_102_kill_9_without_losing_a_report() {
    fleet_end_to_end(34);
}
