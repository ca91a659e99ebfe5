//! Beyond one hub: documents served by a plain static HTTPS server (nginx) from the directory
//! the hub exports, reports through an MQTT broker (mosquitto) the hub subscribes to, and a real
//! agent that never talks to the hub at all taken through a fleet plan.
//!
//! The agent starts unknown to the hub: nginx falls back to the export's `_default/` (what
//! selects every site), the agent applies it and reports over MQTT with its labels, the hub
//! learns it is a pilot, the plan starts, the pilot's document appears in the agent's own export
//! directory, the agent rolls it and reports Healthy on the new serial, and the plan moves on.
//! Needs nginx and mosquitto; `.ci/run` installs them and runs it with `--ignored`.

// Real processes in real time.
#![allow(clippy::disallowed_methods)]

mod common;
mod engine_support;
mod hub_support;
mod pull_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Site, SiteOptions};
use engine_support::{free_port, Mosquitto, Nginx};
use hub_support::HubDir;
use pull_support::Pki;
use serde_json::Value;

const STEPS: &str = r#"steps = [{ setWeight = 50 }, { pause = { duration = "1s" } }]"#;
/// nginx falls back to the export's `_default/` for a site the hub does not know yet.
const FALLBACK: &str = "    location ~ ^/[^/]+/desired$ { try_files $uri /_default/desired; }\n\
     location ~ ^/[^/]+/desired\\.minisig$ { try_files $uri /_default/desired.minisig; }";

struct Hub {
    child: Child,
    dir: HubDir,
    address: std::net::SocketAddr,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hub {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// `edgeroll hub get -o json` over the hub's socket.
    fn plans(&self) -> Value {
        let output = Command::new(common::edgeroll())
            .arg("--config")
            .arg(self.dir.config())
            .args(["hub", "get", "-o", "json"])
            .env_remove("EDGEROLL_SOCKET")
            .output()
            .expect("edgeroll hub get");
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }
}

fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs nginx and mosquitto (apt-get install nginx-light mosquitto); .ci/run installs them and runs --ignored"]
fn a_site_behind_a_static_server_and_a_broker_goes_through_a_plan_without_talking_to_the_hub() {
    let pki = Pki::new();
    let keys = tempfile::tempdir().expect("keys");
    let keygen = Command::new(common::edgeroll())
        .args(["keygen", "--unencrypted", "--out"])
        .arg(keys.path())
        .output()
        .expect("keygen");
    assert!(keygen.status.success(), "{keygen:?}");
    let broker = Mosquitto::start();
    let nginx_dir = tempfile::tempdir().expect("nginx dir");
    let nginx = Nginx::start_with(
        nginx_dir.path(),
        &pki.cert_file,
        &pki.key_file,
        free_port(),
        FALLBACK,
    );

    // The site and its documents: 1.0.0 for every site, and a plan for 2.0.0.
    let mut site = Site::create(SiteOptions::default());
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let dir = HubDir::new(
        &address.to_string(),
        &format!(
            "plan_interval = \"200ms\"\nexport = \"{}\"\n\n[signing]\nkey = \"{}\"\n\n\
             [mqtt]\nbroker = \"{}\"\nclient_id = \"cdn-hub\"\n",
            nginx.www().display(),
            keys.path().join("edgeroll.key").display(),
            broker.url()
        ),
    );
    std::fs::write(
        dir.docs().join("base.toml"),
        site.desired_text("1.0.0", &[], STEPS, "", 1),
    )
    .expect("base");
    std::fs::create_dir_all(dir.docs().join("releases")).expect("releases");
    std::fs::write(
        dir.docs().join("releases/v2.toml"),
        site.desired_text("2.0.0", &[], STEPS, "", 1)
            .replace("serial = 1", "serial = 2"),
    )
    .expect("release");
    std::fs::write(
        dir.docs().join("v2.plan.toml"),
        "document = \"releases/v2.toml\"\n\
         [[waves]]\nname = \"pilot\"\nselector = { cohort = \"pilot\" }\nbake = \"1s\"\n\
         [[waves]]\nname = \"fleet\"\n",
    )
    .expect("plan");
    let log = std::fs::File::create(dir.dir.path().join("hub.log")).expect("log");
    let child = Command::new(common::edgeroll())
        .args(["hub", "--config"])
        .arg(dir.config())
        .env("EDGEROLL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the hub");
    let hub = Hub {
        child,
        dir,
        address,
    };
    wait(
        "the export's fallback document",
        Duration::from_secs(30),
        || nginx.www().join("_default/desired.minisig").exists(),
        || hub.log(),
    );

    let ca = pki.ca_file.display();
    let config = format!(
        "[agent]\nsite = \"pilot-1\"\nlabels = {{ cohort = \"pilot\" }}\n\
         state_dir = \"{state}\"\nsocket = \"{socket}\"\nshutdown_grace = \"2s\"\n\n\
         [runtime]\nkind = \"process\"\nstop_grace = \"2s\"\n\n\
         [desired]\nsource = \"https://127.0.0.1:{port}/{{site}}/desired\"\npoll_interval = \"1s\"\n\
         trusted_keys = [\"{key}\"]\nca_file = \"{ca}\"\ntimeout = \"5s\"\n\n\
         [reports]\nurl = \"{url}\"\ntimeout = \"5s\"\nretry_initial = \"50ms\"\nretry_max = \"500ms\"\n",
        state = site.dir.path().join("state").display(),
        socket = site.socket.display(),
        port = nginx.port,
        key = keys.path().join("edgeroll.pub").display(),
        url = broker.url(),
    );
    std::fs::write(&site.config, config).expect("agent config");
    site.start_agent();

    // Unknown to the hub, the site gets the fallback (1.0.0) from nginx and reports over MQTT;
    // the hub learns its labels, the plan starts, and the pilot's document reaches it.
    let settled = site.wait_for("2.0.0 rolled from the pilot's document", |status| {
        status["stable"]["version"] == "2.0.0"
            && status["phase"] == "Healthy"
            && status["canary"].is_null()
    });
    assert_eq!(settled["stable"]["version"], "2.0.0");
    wait(
        "the plan to complete",
        Duration::from_secs(60),
        || hub.plans()[0]["phase"] == "Completed",
        || format!("{:#}\n{}", hub.plans(), hub.log()),
    );
    let plan = hub.plans();
    let pilot = &plan[0]["waves"][0];
    assert_eq!(pilot["counts"]["healthy"], 1, "{plan:#}");
    assert_eq!(pilot["members"], 1);
    let pilot_serial = pilot["serial"].as_u64().expect("pilot serial");
    assert!(
        pilot_serial >= 2,
        "at least the release's own serial, above the base's: {plan:#}"
    );
    // The fleet wave's document (selector {}) has the higher serial, so the pilot follows it
    // too: same release, nothing to roll, and it says so (DocumentFollowed) on the new serial.
    let fleet_serial = plan[0]["waves"][1]["serial"]
        .as_u64()
        .expect("fleet serial");
    assert!(fleet_serial > pilot_serial, "{plan:#}");
    let exported = std::fs::read_to_string(nginx.www().join("pilot-1/desired")).expect("export");
    assert!(
        exported.contains(&format!("\"serial\": {fleet_serial}")),
        "{exported}"
    );
    wait(
        "the hub to see the pilot follow the fleet's serial",
        Duration::from_secs(30),
        || {
            let seen =
                hub_support::request(hub.address, "GET", "/v1/sites/pilot-1", &[], b"").json();
            seen["services"]["web"]["serial"] == fleet_serial
                && seen["services"]["web"]["lastEvent"] == "DocumentFollowed"
        },
        || hub.log(),
    );
    let status: Value =
        serde_json::from_str(&site.cli_ok(&["get", "-o", "json"])).expect("status JSON");
    assert_eq!(status["source"]["serial"], fleet_serial, "{status:#}");
    assert_eq!(status["services"][0]["stable"]["version"], "2.0.0");

    // The site never talked to the hub: everything came through nginx and mosquitto.
    let access = nginx.access_log();
    assert!(access.contains("GET /pilot-1/desired HTTP"), "{access}");
    assert!(
        access.contains("GET /pilot-1/desired.minisig HTTP"),
        "{access}"
    );
    let text = Command::new(common::edgeroll())
        .arg("--config")
        .arg(hub.dir.config())
        .args(["hub", "get", "v2"])
        .env_remove("EDGEROLL_SOCKET")
        .output()
        .expect("hub get");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Completed") && text.contains("pilot"),
        "{text}"
    );
    let seen = hub_support::request(hub.address, "GET", "/v1/sites/pilot-1", &[], b"").json();
    assert!(
        seen["lastPoll"].is_null(),
        "the site polled the hub itself: {seen:#}"
    );
    assert_eq!(
        seen["labels"]["cohort"], "pilot",
        "labels came with the MQTT reports: {seen:#}"
    );
    let _ = site.terminate_agent();
}
