//! A fleet plan on a real hub, driven through the protocol and the CLI: each wave's document is
//! served to its members only, the plan advances on Healthy reports of the new serial, the
//! operator verbs work on the hub's socket (and are refused over the network), `edgeroll
//! validate` checks plan files, and a restarted hub serves the same documents.
// Real sockets and processes in real time.
#![allow(clippy::disallowed_methods)]

mod hub_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;

use edgeroll::time::Timestamp;
use edgeroll::wire::report::{Report, ReportBatch, ReportBody, RevisionRef};
use hub_support::{edgeroll, poll, post_batch, request, wait_for, HubDir, InProcessHub};

const PLAN: &str = r#"document = "releases/ingest-2.5.toml"
previous = "releases/ingest-2.4.toml"
unknownAfter = "1h"

[[waves]]
name = "pilot"
selector = { cohort = "pilot" }
minHealthy = "100%"
bake = "1s"

[[waves]]
name = "fleet"
pause = {}
minHealthy = "50%"
maxAborted = "50%"
"#;

fn hub_with_plan() -> HubDir {
    let dir = HubDir::new("127.0.0.1:0", "plan_interval = \"100ms\"");
    dir.write_document("fleet.toml", 7, "", "2.4.0");
    let releases = dir.docs().join("releases");
    std::fs::create_dir_all(&releases).expect("releases");
    std::fs::write(
        releases.join("ingest-2.5.toml"),
        hub_support::document(8, "", "2.5.0"),
    )
    .expect("release");
    std::fs::write(
        releases.join("ingest-2.4.toml"),
        hub_support::document(7, "", "2.4.0"),
    )
    .expect("previous");
    std::fs::write(dir.docs().join("ingest-2.5.plan.toml"), PLAN).expect("plan");
    dir
}

/// The site's document: serial and version.
fn desired(address: SocketAddr, site: &str, cohort: &str) -> (u64, String) {
    let answer = poll(address, site, &format!("cohort={cohort}"), None);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    let document = edgeroll::spec::parse::parse_document(std::path::Path::new("served"), &text)
        .unwrap_or_else(|problems| panic!("{problems:?}\n{text}"));
    (
        document.serial,
        document.services[0].template.version.clone(),
    )
}

/// The site reports its service `phase` on `version` following `serial`, as report `seq`.
fn report(address: SocketAddr, site: &str, seq: u64, serial: u64, phase: &str, version: &str) {
    let batch = ReportBatch {
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
    };
    let answer = post_batch(address, &batch);
    assert_eq!(answer.status, 200, "{}", answer.text());
}

fn plan_view(address: SocketAddr) -> serde_json::Value {
    request(address, "GET", "/v1/plans/ingest-2.5", &[], b"").json()
}

fn hub_cli(dir: &HubDir, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(edgeroll())
        .arg("--config")
        .arg(dir.config())
        .arg("hub")
        .args(args)
        .env_remove("EDGEROLL_SOCKET")
        .output()
        .expect("run edgeroll hub");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_plan_moves_from_pilot_to_a_gated_fleet_wave_and_rolls_back_on_abort() {
    let dir = hub_with_plan();
    let hub = InProcessHub::start(&dir);
    let address = hub.address;
    // Before any site is known, the plan has not started.
    let view = plan_view(address);
    assert_eq!(view["phase"], "Pending", "{view}");
    assert!(
        view["message"]
            .as_str()
            .unwrap_or("")
            .contains("selects none"),
        "{view}"
    );

    // Sites poll: the plan starts and the pilot wave's document reaches the pilot only.
    assert_eq!(desired(address, "store-1", "pilot").0, 7);
    assert_eq!(desired(address, "store-2", "fleet").0, 7);
    wait_for("the pilot wave to start", || {
        plan_view(address)["waves"][0]["serial"].as_u64().is_some()
    });
    let pilot_serial = plan_view(address)["waves"][0]["serial"]
        .as_u64()
        .expect("serial");
    assert_eq!(
        pilot_serial, 8,
        "above every served serial, at least the release's own"
    );
    assert_eq!(
        desired(address, "store-1", "pilot"),
        (8, "2.5.0".to_owned())
    );
    assert_eq!(
        desired(address, "store-2", "fleet"),
        (7, "2.4.0".to_owned())
    );
    let documents = request(address, "GET", "/v1/documents", &[], b"").json();
    assert!(
        documents.to_string().contains("ingest-2.5/pilot@8.json"),
        "{documents}"
    );

    // The pilot reports: first still on the old serial (never counts), then Healthy on 8.
    report(address, "store-1", 1, 7, "Healthy", "2.4.0");
    std::thread::sleep(std::time::Duration::from_millis(400));
    let view = plan_view(address);
    assert_eq!(view["waves"][0]["counts"]["stale"], 1, "{view}");
    assert_eq!(view["waves"][0]["phase"], "Progressing");
    report(address, "store-1", 2, 8, "Healthy", "2.5.0");
    wait_for("the fleet wave to wait at its gate", || {
        plan_view(address)["waves"][1]["phase"] == "Gated"
    });
    let view = plan_view(address);
    assert_eq!(view["waves"][0]["phase"], "Completed", "{view}");
    assert_eq!(view["phase"], "Paused");

    // The CLI shows it, over the hub's socket.
    let (code, text, stderr) = hub_cli(&dir, &["get", "ingest-2.5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains("pilot") && text.contains("Completed") && text.contains("Gated"),
        "{text}"
    );
    assert!(text.contains("edgeroll hub promote ingest-2.5"), "{text}");
    let (code, text, _) = hub_cli(&dir, &["get", "-o", "json"]);
    assert_eq!(code, 0);
    let plans: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(plans[0]["name"], "ingest-2.5");

    // Actions are refused over the network, taken on the socket.
    let refused = request(address, "POST", "/v1/plans/ingest-2.5/promote", &[], b"");
    assert_eq!(refused.status, 403, "{}", refused.text());
    let (code, text, stderr) = hub_cli(&dir, &["promote", "ingest-2.5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("wave fleet starts"), "{text}");
    wait_for("the fleet wave to start", || {
        plan_view(address)["waves"][1]["serial"].as_u64() == Some(9)
    });
    assert_eq!(
        desired(address, "store-2", "fleet"),
        (9, "2.5.0".to_owned())
    );
    let (code, _, stderr) = hub_cli(&dir, &["promote", "no-such-plan"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no plan named no-such-plan"), "{stderr}");

    // A restart serves the same documents, byte for byte and by ETag.
    let before = poll(address, "store-2", "cohort=fleet", None);
    hub.stop();
    let hub = InProcessHub::start(&dir);
    let address = hub.address;
    let after = poll(address, "store-2", "cohort=fleet", None);
    assert_eq!(after.text(), before.text());
    assert_eq!(after.header("etag"), before.header("etag"));
    assert_eq!(plan_view(address)["waves"][1]["serial"], 9);

    // Abort: both started waves get the previous release under new serials.
    let (code, text, stderr) = hub_cli(&dir, &["abort", "ingest-2.5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("rolled back"), "{text}");
    // The pilot's rollback is serial 10, the fleet's 11; the fleet wave's selector selects the
    // pilot too, so both get 11: the same previous release.
    assert_eq!(
        desired(address, "store-1", "pilot"),
        (11, "2.4.0".to_owned())
    );
    assert_eq!(
        desired(address, "store-2", "fleet"),
        (11, "2.4.0".to_owned())
    );
    let serials: Vec<u64> = plan_view(address)["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .filter_map(|wave| wave["serial"].as_u64())
        .collect();
    assert_eq!(serials, [10, 11]);
    assert_eq!(plan_view(address)["phase"], "Aborted");
    let (code, _, stderr) = hub_cli(&dir, &["abort", "ingest-2.5"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("rolled back already"), "{stderr}");
    hub.stop();
}

#[test]
fn validate_checks_plan_files_like_documents() {
    let dir = hub_with_plan();
    let good = dir.docs().join("ingest-2.5.plan.toml");
    let output = Command::new(edgeroll())
        .arg("validate")
        .arg(&good)
        .output()
        .expect("validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("plan ingest-2.5, waves pilot → fleet"),
        "{stdout}"
    );
    let bad = dir.docs().join("bad.plan.toml");
    std::fs::write(
        &bad,
        "document = \"releases/missing.toml\"\n[[waves]]\nname = \"a\"\nminHealthy = \"101%\"\n[[waves]]\nname = \"a\"\n",
    )
    .expect("bad plan");
    let output = Command::new(edgeroll())
        .arg("validate")
        .arg(&bad)
        .output()
        .expect("validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(78), "{stdout}");
    let file = bad.display().to_string();
    assert!(
        stdout.contains(&format!("{file}:1:12: document: cannot read the document")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}:4:14: waves[0].minHealthy: 101% is outside"
        )),
        "{stdout}"
    );
}

#[test]
fn a_flood_of_batches_from_one_site_is_refused_and_counted_and_nothing_stored_is_lost() {
    let dir = HubDir::new("127.0.0.1:0", "report_rate = \"1/m\"\nreport_burst = 5");
    dir.write_document("fleet.toml", 7, "", "2.4.0");
    let hub = InProcessHub::start(&dir);
    let address = hub.address;
    let mut statuses = Vec::new();
    for seq in 1..=8 {
        let batch = hub_support::batch("noisy", seq, seq, [seq]);
        let answer = hub_support::try_post_batch(address, &batch).expect("post");
        if answer.status == 429 {
            let retry = answer.header("retry-after").unwrap_or("");
            assert!(
                retry.parse::<u64>().is_ok_and(|seconds| seconds >= 1),
                "{retry:?}"
            );
            assert!(answer.text().contains("report_rate"), "{}", answer.text());
        }
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // Another site is not held back by the noisy one.
    let quiet = hub_support::batch("quiet", 1, 1, [1]);
    assert_eq!(post_batch(address, &quiet).status, 200);
    let site = request(address, "GET", "/v1/sites/noisy", &[], b"").json();
    assert_eq!(site["refusedBatches"], 3, "{site}");
    assert_eq!(site["highWater"], 5, "what was accepted is held: {site}");
    // Their reports name serial 42, which this hub never published: kept, and counted.
    assert_eq!(site["unknownSerials"], 5, "{site}");
    assert_eq!(site["lastUnknownSerial"], 42, "{site}");
    let (held, _) = hub_support::held(address, "noisy");
    assert_eq!(held, [1, 2, 3, 4, 5]);
    hub.stop();
}
