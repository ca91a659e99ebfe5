//! `edgeroll hub` serving desired documents: the choice by selector and serial, ETags and 304,
//! signatures (pre-signed and signed by the hub), reloads, and bad documents.

// Real sockets and processes in real time.
#![allow(clippy::disallowed_methods)]

mod hub_support;

use std::process::Command;

use edgeroll::wire::signature::{verify, TrustedKey};
use hub_support::*;

fn keypair() -> (TrustedKey, String) {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("keypair");
    let public = TrustedKey::parse(&pair.pk.to_base64()).expect("public key");
    let secret = pair.sk.to_box(None).expect("secret key box").into_string();
    (public, secret)
}

fn signature_of(answer: &Answer) -> String {
    let header = answer
        .header(edgeroll::wire::SIGNATURE_HEADER)
        .expect("signature header");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header)
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

use base64::Engine as _;

#[test]
fn a_poll_with_the_same_etag_gets_304_and_a_new_document_gets_200() {
    let dir = HubDir::new("127.0.0.1:0", "");
    dir.write_document("fleet.toml", 41, "", "2.4.0");
    let hub = InProcessHub::start(&dir);

    let first = poll(hub.address, "store-1", "", None);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.text(), document(41, "", "2.4.0"));
    assert_eq!(first.header("content-type"), Some("application/toml"));
    assert!(first.header("date").is_some(), "a Date header");
    assert!(first.header(edgeroll::wire::SIGNATURE_HEADER).is_none());
    let etag = first.header("etag").expect("etag").to_owned();
    assert!(etag.starts_with("\"41-"), "{etag}");

    for _ in 0..3 {
        let again = poll(hub.address, "store-1", "", Some(&etag));
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
    }
    // Another site polling with the same ETag gets the same 304: the tag is per document.
    assert_eq!(poll(hub.address, "store-2", "", Some(&etag)).status, 304);

    // A new document (higher serial) is picked up by the reload poll and changes the answer.
    dir.write_document("fleet-2.toml", 43, "", "2.5.0");
    wait_for("the new document", || {
        poll(hub.address, "store-1", "", Some(&etag)).status == 200
    });
    let newer = poll(hub.address, "store-1", "", Some(&etag));
    assert_eq!(newer.text(), document(43, "", "2.5.0"));
    assert_ne!(newer.header("etag"), Some(etag.as_str()));
}

#[test]
fn each_site_gets_the_highest_serial_whose_selector_matches_it() {
    let dir = HubDir::new("127.0.0.1:0", "");
    dir.write_document("fleet.toml", 40, "", "2.4.0");
    dir.write_document("pilot.toml", 42, "cohort = \"pilot\"", "2.5.0");
    dir.write_document(
        "eu-pilot.toml",
        41,
        "cohort = \"pilot\", region = \"eu\"",
        "2.4.9",
    );
    dir.write_document("lab.toml", 44, "site = \"lab-1\"", "3.0.0-rc1");
    dir.write_document("others.toml", 45, "cohort = \"canary-lab\"", "9.9.9");
    let hub = InProcessHub::start(&dir);
    let serial_for = |site: &str, labels: &str| {
        let answer = poll(hub.address, site, labels, None);
        assert_eq!(answer.status, 200, "{site}: {}", answer.text());
        let text = answer.text();
        text.lines()
            .find_map(|line| line.strip_prefix("serial = "))
            .and_then(|serial| serial.parse::<u64>().ok())
            .expect("serial")
    };
    assert_eq!(serial_for("store-1", "cohort=pilot,region=eu"), 42);
    assert_eq!(serial_for("store-2", "cohort=fleet,region=eu"), 40);
    assert_eq!(serial_for("store-3", ""), 40);
    assert_eq!(serial_for("lab-1", "cohort=fleet"), 44);
    // A poll without labels is answered with the labels the site sent last.
    assert_eq!(serial_for("store-1", ""), 42);
    // A label named `site` does not make a site another one.
    assert_eq!(serial_for("store-4", "site=lab-1"), 40);

    // Nothing selects a site: 404, with a reason.
    let dir = HubDir::new("127.0.0.1:0", "");
    dir.write_document("pilot.toml", 42, "cohort = \"pilot\"", "2.5.0");
    let hub = InProcessHub::start(&dir);
    let none = poll(hub.address, "store-9", "cohort=fleet", None);
    assert_eq!(none.status, 404);
    assert!(
        none.json()["error"]
            .as_str()
            .is_some_and(|error| error.contains("no document selects site store-9")),
        "{}",
        none.text()
    );
    let bad = poll(hub.address, "store 9", "", None);
    assert_eq!(bad.status, 400);
}

#[test]
fn a_presigned_document_is_served_with_its_signature_and_others_are_signed_by_the_hub() {
    let (offline_public, offline_secret) = keypair();
    let (hub_public, hub_secret) = keypair();
    let dir = HubDir::new("127.0.0.1:0", "[signing]\nkey = \"hub.key\"\n");
    std::fs::write(dir.dir.path().join("hub.key"), &hub_secret).expect("key");
    dir.write_document("fleet.toml", 40, "", "2.4.0");
    dir.write_document("pilot.toml", 42, "cohort = \"pilot\"", "2.5.0");
    let offline = edgeroll::wire::signature::SigningKey::parse(&offline_secret, None).expect("key");
    let pilot_text = document(42, "cohort = \"pilot\"", "2.5.0");
    let presigned = offline
        .sign(pilot_text.as_bytes(), "timestamp:1764600000 serial:42")
        .expect("sign");
    std::fs::write(dir.docs().join("pilot.toml.minisig"), &presigned).expect("minisig");
    let hub = InProcessHub::start(&dir);

    let pilot = poll(hub.address, "store-1", "cohort=pilot", None);
    assert_eq!(signature_of(&pilot), presigned);
    let verified = verify(
        &pilot.body,
        &signature_of(&pilot),
        std::slice::from_ref(&offline_public),
    )
    .expect("the offline signature verifies");
    assert_eq!(verified.trusted_comment, "timestamp:1764600000 serial:42");
    // The signature is also at the document's URL + .minisig, for sites that fetch it there.
    let at_url = request(
        hub.address,
        "GET",
        "/v1/sites/store-1/desired.minisig",
        &[],
        b"",
    );
    assert_eq!(at_url.text(), presigned);

    let fleet = poll(hub.address, "store-2", "cohort=fleet", None);
    let signature = signature_of(&fleet);
    let verified = verify(&fleet.body, &signature, std::slice::from_ref(&hub_public))
        .expect("the hub's signature verifies");
    assert!(
        verified.trusted_comment.contains("serial:40"),
        "{}",
        verified.trusted_comment
    );
    let mut flipped = fleet.body.clone();
    flipped[5] ^= 1;
    assert!(verify(&flipped, &signature, &[hub_public]).is_err());

    // A restarted hub signs again (minisign signatures are randomised) but keeps the ETag,
    // which names its key: sites polling with it get 304.
    let etag = fleet.header("etag").expect("etag").to_owned();
    hub.stop();
    let hub = InProcessHub::start(&dir);
    assert_eq!(
        poll(hub.address, "store-2", "cohort=fleet", Some(&etag)).status,
        304
    );
}

#[test]
fn an_invalid_document_on_reload_changes_nothing_that_is_served() {
    let dir = HubDir::new("127.0.0.1:0", "");
    dir.write_document("fleet.toml", 41, "", "2.4.0");
    let hub = InProcessHub::start(&dir);
    let etag = poll(hub.address, "store-1", "", None)
        .header("etag")
        .expect("etag")
        .to_owned();
    std::fs::write(
        dir.docs().join("broken.toml"),
        "apiVersion = \"edgeroll/v1\"\nserial = 99\n[[services]]\nname = 3\n",
    )
    .expect("write");
    // Two documents with one serial are refused too.
    dir.write_document("twin.toml", 41, "cohort = \"x\"", "2.4.1");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let answer = poll(hub.address, "store-1", "", Some(&etag));
    assert_eq!(answer.status, 304, "still the document served before");
    std::fs::remove_file(dir.docs().join("broken.toml")).expect("remove");
    std::fs::remove_file(dir.docs().join("twin.toml")).expect("remove");
    dir.write_document("fleet-2.toml", 50, "", "2.5.0");
    wait_for("the fixed directory", || {
        poll(hub.address, "store-1", "", Some(&etag)).status == 200
    });
}

#[test]
fn the_binary_refuses_to_start_with_every_problem_named() {
    let dir = HubDir::new("127.0.0.1:0", "listen_port = 1\n[tls]\ncert = \"x.pem\"\n");
    let output = Command::new(edgeroll())
        .args(["hub", "--config"])
        .arg(dir.config())
        .output()
        .expect("run edgeroll hub");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("hub.toml:6:1: listen_port: unknown field"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tls.key: required field is missing"),
        "{stderr}"
    );

    let dir = HubDir::new("127.0.0.1:0", "");
    std::fs::write(
        dir.docs().join("bad.toml"),
        "apiVersion = \"edgeroll/v1\"\nserial = \"seven\"\n",
    )
    .expect("write");
    let output = Command::new(edgeroll())
        .args(["hub", "run", "--config"])
        .arg(dir.config())
        .output()
        .expect("run edgeroll hub");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:2:10: serial:"), "{stderr}");
}

#[test]
fn the_binary_reloads_on_sighup() {
    let port = free_port();
    let dir = HubDir::new(&format!("127.0.0.1:{port}"), "");
    // A long poll interval: only the SIGHUP can make the reload happen in time.
    dir.write_config(&format!("127.0.0.1:{port}"), "");
    let text = std::fs::read_to_string(dir.config())
        .expect("read")
        .replace("reload_interval = \"200ms\"", "reload_interval = \"1h\"");
    std::fs::write(dir.config(), text).expect("write");
    dir.write_document("fleet.toml", 41, "", "2.4.0");
    let mut child = Command::new(edgeroll())
        .args(["hub", "--config"])
        .arg(dir.config())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start edgeroll hub");
    let address = format!("127.0.0.1:{port}").parse().expect("address");
    wait_listening(address);
    let etag = poll(address, "store-1", "", None)
        .header("etag")
        .expect("etag")
        .to_owned();
    dir.write_document("fleet-2.toml", 42, "", "2.5.0");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    wait_for("the reload on SIGHUP", || {
        poll(address, "store-1", "", Some(&etag)).status == 200
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn polls_are_answered_from_memory_while_the_database_is_write_locked() {
    let dir = HubDir::new("127.0.0.1:0", "");
    dir.write_document("fleet.toml", 41, "", "2.4.0");
    let hub = InProcessHub::start(&dir);
    let etag = poll(hub.address, "store-1", "", None)
        .header("etag")
        .expect("etag")
        .to_owned();
    // Another process holds the write lock of hub.db: the hub cannot write anything.
    let locker = rusqlite::Connection::open(dir.dir.path().join("state").join("hub.db"))
        .expect("open hub.db");
    locker
        .execute_batch("BEGIN IMMEDIATE;")
        .expect("lock hub.db");
    let started = std::time::Instant::now();
    for index in 0..200 {
        let site = format!("store-{index}");
        assert_eq!(
            poll(hub.address, &site, "cohort=pilot", Some(&etag)).status,
            304
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "200 polls took {:?} with the database write-locked",
        started.elapsed()
    );
    // A report batch cannot be stored meanwhile: the hub says so and the site comes back.
    let refused = post_batch(hub.address, &batch("store-1", 1, 1, [1]));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.header("retry-after").is_some());
    locker.execute_batch("ROLLBACK;").expect("unlock");
    drop(locker);
    let accepted = post_batch(hub.address, &batch("store-1", 1, 1, [1]));
    assert_eq!(accepted.status, 200, "{}", accepted.text());
}

#[test]
fn a_second_hub_on_the_same_state_directory_is_refused() {
    let dir = HubDir::new("127.0.0.1:0", "");
    dir.write_document("fleet.toml", 41, "", "2.4.0");
    let _hub = InProcessHub::start(&dir);
    let output = Command::new(edgeroll())
        .args(["hub", "--config"])
        .arg(dir.config())
        .output()
        .expect("run edgeroll hub");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another edgeroll hub is using"), "{stderr}");
}
