//! End to end: the real `edgeroll run` pulls signed desired documents over HTTPS from a
//! stand-in center on 127.0.0.1, rolls a canary from one, refuses a replayed older serial with a
//! `DocumentRefused` event that `edgeroll get` shows (and nothing that runs changes), and after
//! a restart with the center down it runs the last verified document from its store.

// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;
mod pull_support;

use common::{Site, SiteOptions};
use pull_support::{Center, Pki, Signer};
use serde_json::Value;

fn site_status(site: &Site) -> Value {
    serde_json::from_str(&site.cli_ok(&["get", "-o", "json"])).expect("status JSON")
}

/// The document `write_desired` wrote, with `serial`.
fn desired_with_serial(site: &Site, serial: u64) -> Vec<u8> {
    let text = std::fs::read_to_string(&site.desired).expect("desired");
    text.replacen("serial = 1\n", &format!("serial = {serial}\n"), 1)
        .replacen(
            "apiVersion = \"edgeroll/v1\"\n",
            "apiVersion = \"edgeroll/v1\"\nselector = { cohort = \"pilot\" }\nexpires = \"2099-01-01T00:00:00Z\"\n",
            1,
        )
        .into_bytes()
}

#[test]
fn the_agent_pulls_signed_documents_refuses_a_replay_and_starts_offline_from_its_store() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pki = Pki::new();
    let center = runtime.block_on(Center::start(&pki, false));
    let signer = Signer::new();

    let mut site = Site::start(SiteOptions::default());
    site.terminate_agent();
    let config = std::fs::read_to_string(&site.config).expect("config");
    let config = config
        .replace("site = \"test-site\"", "site = \"store-0042\"\nlabels = { cohort = \"pilot\" }")
        .lines()
        .filter(|line| !line.starts_with("source = "))
        .collect::<Vec<_>>()
        .join("\n")
        + &format!(
            "\nsource = \"{}\"\npoll_interval = \"1s\"\ntrusted_keys = [\"{}\"]\nca_file = \"{}\"\n",
            center.url(),
            signer.public,
            pki.ca_file.display()
        );
    std::fs::write(&site.config, config).expect("config");

    // Serial 1: the first release.
    site.write_desired(
        "1.0.0",
        0.0,
        "steps = [{ setWeight = 50 }, { pause = {} }]",
        1,
    );
    let first = desired_with_serial(&site, 1);
    center.publish(&first, Some(signer.sign(&first)));
    site.start_agent();
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });

    // Serial 2 starts a canary.
    site.write_desired(
        "2.0.0",
        0.0,
        "steps = [{ setWeight = 50 }, { pause = {} }]",
        1,
    );
    let second = desired_with_serial(&site, 2);
    center.publish(&second, Some(signer.sign(&second)));
    site.wait_for("canary 2.0.0 paused at 50", |s| {
        s["phase"] == "Paused" && s["weights"]["canary"] == 50
    });

    // A replay of an older serial (validly signed) is refused, and nothing that runs changes.
    site.write_desired("3.0.0", 0.0, "steps = []", 1);
    let replay = desired_with_serial(&site, 1);
    center.publish(&replay, Some(signer.sign(&replay)));
    let deadline = std::time::Instant::now() + common::WAIT;
    let refused = loop {
        let status = site_status(&site);
        let found = status["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|event| event["kind"] == "DocumentRefused")
                .cloned()
        });
        if let Some(event) = found {
            break (status, event);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal: {status:#}\n{}",
            site.agent_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (status, event) = refused;
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("serial: serial 1 is older than serial 2"),
        "{event}"
    );
    assert_eq!(status["source"]["serial"], 2);
    assert_eq!(status["source"]["lastResult"], "refused (serial)");
    assert_eq!(status["source"]["expires"], "2099-01-01T00:00:00Z");
    assert_eq!(status["source"]["stale"], false);
    assert_eq!(status["source"]["keyId"].as_str().map(str::len), Some(16));
    let web = site.status();
    assert_eq!(web["phase"], "Paused");
    assert_eq!(web["weights"]["canary"], 50);
    assert_eq!(web["canary"]["version"], "2.0.0");

    let text = site.cli_ok(&["get"]);
    assert!(
        text.contains("Source:          https://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("  Serial:        2"), "{text}");
    assert!(
        text.contains("DocumentRefused  serial: serial 1 is older"),
        "{text}"
    );

    // Stop the agent and the center; the agent starts from the last verified document.
    site.terminate_agent();
    drop(center);
    site.start_agent();
    let status = site_status(&site);
    assert_eq!(status["source"]["serial"], 2, "{status:#}");
    let web = site.wait_for("the canary as it was", |s| {
        s["phase"] == "Paused" && s["weights"]["canary"] == 50
    });
    assert_eq!(web["canary"]["version"], "2.0.0");
    // The refusal from before the restart is still shown.
    assert!(status["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|event| event["kind"] == "DocumentRefused"));
    let log = site.agent_log();
    assert!(
        log.contains("applying the last verified desired document from the store"),
        "{log}"
    );
    site.wait_for_source_error();
}

trait SourceError {
    fn wait_for_source_error(&self);
}

impl SourceError for Site {
    /// The first poll after the restart fails: the center is down, and nothing changes.
    fn wait_for_source_error(&self) {
        let deadline = std::time::Instant::now() + common::WAIT;
        loop {
            let status = site_status(self);
            let result = status["source"]["lastResult"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if result.starts_with("error: cannot reach") {
                assert_eq!(status["source"]["serial"], 2);
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{status:#}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn an_expired_document_keeps_running_and_is_shown_stale() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pki = Pki::new();
    let center = runtime.block_on(Center::start(&pki, false));
    let signer = Signer::new();
    let mut site = Site::start(SiteOptions::default());
    site.terminate_agent();
    let config = std::fs::read_to_string(&site.config).expect("config");
    let config = config
        .replace("site = \"test-site\"", "site = \"store-0042\"")
        .lines()
        .filter(|line| !line.starts_with("source = "))
        .collect::<Vec<_>>()
        .join("\n")
        + &format!(
            "\nsource = \"{}\"\npoll_interval = \"1s\"\ntrusted_keys = [\"{}\"]\nca_file = \"{}\"\n",
            center.url(),
            signer.public,
            pki.ca_file.display()
        );
    std::fs::write(&site.config, config).expect("config");

    // Expires a few seconds from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let expires = edgeroll::time::Timestamp::from_millis(
        u64::try_from((now + std::time::Duration::from_secs(6)).as_millis()).unwrap(),
    );
    site.write_desired("1.0.0", 0.0, "steps = []", 1);
    let text = std::fs::read_to_string(&site.desired).expect("desired");
    let bytes = text
        .replacen(
            "apiVersion = \"edgeroll/v1\"\n",
            &format!(
                "apiVersion = \"edgeroll/v1\"\nexpires = \"{}\"\n",
                expires.rfc3339()
            ),
            1,
        )
        .into_bytes();
    center.publish(&bytes, Some(signer.sign(&bytes)));
    site.start_agent();
    site.wait_for("1.0.0 healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let status = site_status(&site);
        if status["source"]["stale"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:#}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let text = site.cli_ok(&["get"]);
    assert!(text.contains("STALE: expired; it keeps running"), "{text}");
    let web = site.status();
    assert_eq!(web["phase"], "Healthy");
    assert_eq!(web["stable"]["version"], "1.0.0");

    // After a restart it still runs (from the persisted state), still shown stale.
    site.terminate_agent();
    site.start_agent();
    let status = site_status(&site);
    assert_eq!(status["source"]["stale"], true, "{status:#}");
    site.wait_for("1.0.0 still healthy", |s| {
        s["phase"] == "Healthy" && s["stable"]["version"] == "1.0.0"
    });
    assert!(site
        .agent_log()
        .contains("the desired document has expired: what runs keeps running"));
}
