//! The report sender over HTTP against a real receiver on 127.0.0.1 that misbehaves on
//! purpose: 500, 429 with Retry-After, 413, a hang, a reset connection, a lost acknowledgement
//! (so the batch comes again and is acknowledged as a duplicate), garbage instead of an
//! acknowledgement, and a receiver that lost data (409 gap). Whatever it does, the receiver ends with every report exactly once, in order, and
//! the site's outbox ends empty.
// The receiver's timings are real time.
#![allow(clippy::disallowed_methods)]

mod report_support;

use std::sync::Arc;
use std::time::Duration;

use edgeroll::shell::Clock;
use edgeroll::store::{NewReport, Store};
use edgeroll::time::Timestamp;
use edgeroll::wire::report::ReportBody;
use report_support::{Behaviour, Receiver};
use tokio_util::sync::CancellationToken;

const SITE: &str = "store-0042";
const WITHIN: Duration = Duration::from_secs(60);

/// A config with `[reports]` for `url`, in `dir`.
fn config(dir: &std::path::Path, url: &str, extra: &str) -> edgeroll::config::Config {
    let path = dir.join("edgeroll.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nsite = \"{SITE}\"\nlabels = {{ cohort = \"pilot\" }}\nstate_dir = \"{}\"\n\n\
             [reports]\nurl = \"{url}\"\nbatch_max_reports = 7\ntimeout = \"500ms\"\n\
             retry_initial = \"20ms\"\nretry_max = \"100ms\"\n{extra}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    edgeroll::config::load(&path).unwrap()
}

fn reports(from: u64, count: u64) -> Vec<NewReport> {
    (from..from + count)
        .map(|n| NewReport {
            at: Timestamp::from_millis(1_700_000_000_000 + n),
            body: if n % 3 == 0 {
                ReportBody::Rollout {
                    service: "web".to_owned(),
                    kind: "StepCompleted".to_owned(),
                    message: format!("event {n}"),
                    phase: "Progressing".to_owned(),
                    completion: None,
                    stable: None,
                    canary: None,
                    serial: Some(7),
                }
            } else {
                ReportBody::Measurement {
                    service: "web".to_owned(),
                    run: "web-1".to_owned(),
                    metric: "success-rate".to_owned(),
                    phase: "Successful".to_owned(),
                    value: Some(format!("[0.99{n}]")),
                    message: None,
                }
            },
        })
        .collect()
}

struct Sender {
    store: Arc<Store>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

fn start(url: &str, extra: &str) -> Sender {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), url, extra);
    let store = Arc::new(Store::open(&config.state_dir).unwrap());
    let shutdown = CancellationToken::new();
    edgeroll::report::spawn(
        &config,
        store.clone(),
        Clock::starting_at(Timestamp::from_millis(1_700_000_000_000)),
        shutdown.clone(),
    )
    .unwrap()
    .expect("reports are configured");
    Sender {
        store,
        shutdown,
        _dir: dir,
    }
}

async fn wait_until_empty(store: &Store) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let status = store.outbox_status().unwrap();
        if status.depth == 0 && status.acked == status.last_seq {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox did not drain: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_arrives_once_and_in_order_whatever_the_receiver_does() {
    let receiver = Receiver::start();
    receiver.then([
        Behaviour::Status(500, None),
        Behaviour::Normal,
        Behaviour::Status(429, Some(1)),
        Behaviour::Normal,
        Behaviour::Hang,
        Behaviour::Reset,
        Behaviour::AcceptThenReset,
        Behaviour::Normal,
        Behaviour::Status(503, None),
        Behaviour::Garbage,
    ]);
    let sender = start(&receiver.url(), "");
    let mut next = 1;
    for _ in 0..10 {
        sender.store.append_reports(&reports(next, 12)).unwrap();
        next += 12;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let total = next - 1;
    wait_until_empty(&sender.store).await;

    let seqs = receiver.seqs(SITE);
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<u64>>(),
        "one copy each, in order"
    );
    let seen = receiver.seen.lock().unwrap();
    let answers: Vec<String> = seen
        .requests
        .iter()
        .map(|(_, key, _, _, status)| format!("{key}={status}"))
        .collect();
    eprintln!("{} requests: {}", answers.len(), answers.join(" "));
    assert!(
        seen.duplicates >= 1,
        "the lost acknowledgement was not resent: {seen:?}"
    );
    // The 429 said one second, and the next attempt waited for it.
    let index = seen
        .requests
        .iter()
        .position(|request| request.4 == 429)
        .expect("a 429 was answered");
    let waited = seen.requests[index + 1].0 - seen.requests[index].0;
    assert!(
        waited >= Duration::from_millis(1_000),
        "waited only {waited:?} after a 429"
    );
    // Every report's content arrived unchanged.
    let expected = reports(1, total);
    for (kept, sent) in seen.reports[SITE].iter().zip(&expected) {
        assert_eq!(kept.body, sent.body);
        assert_eq!(kept.at, sent.at);
    }
    drop(seen);
    let status = sender.store.outbox_status().unwrap();
    assert!(status.last_ok, "{status:?}");
    assert_eq!(
        status.last_result,
        Some(format!("acknowledged up to {total}"))
    );
    sender.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_lost_reports_gets_a_batch_covering_them() {
    let receiver = Receiver::start();
    let sender = start(&receiver.url(), "");
    sender.store.append_reports(&reports(1, 10)).unwrap();
    wait_until_empty(&sender.store).await;
    // The receiver is restored from a backup that holds 1..=5 only.
    receiver.forget_after(SITE, 5);
    sender.store.append_reports(&reports(11, 5)).unwrap();
    wait_until_empty(&sender.store).await;
    receiver.wait_for("the gap is closed", WITHIN, |seen| {
        seen.high_water.get(SITE) == Some(&15)
    });
    let seen = receiver.seen.lock().unwrap();
    assert!(seen.gaps >= 1, "{seen:?}");
    // The batch after the 409 started where the receiver stood, and 6..=10, gone from the site,
    // count as missing rather than blocking delivery for ever.
    let conflict = seen.requests.iter().position(|r| r.4 == 409).unwrap();
    assert_eq!(seen.requests[conflict + 1].2, 6);
    assert_eq!(seen.missing[SITE], vec![6, 7, 8, 9, 10]);
    let seqs: Vec<u64> = seen.reports[SITE].iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 11, 12, 13, 14, 15]);
    drop(seen);
    sender.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_is_split_until_it_fits() {
    let receiver = Receiver::start();
    receiver.then([
        Behaviour::MaxReports(2),
        Behaviour::MaxReports(2),
        Behaviour::MaxReports(2),
    ]);
    let sender = start(&receiver.url(), "");
    sender.store.append_reports(&reports(1, 20)).unwrap();
    wait_until_empty(&sender.store).await;
    assert_eq!(receiver.seqs(SITE), (1..=20).collect::<Vec<u64>>());
    let seen = receiver.seen.lock().unwrap();
    assert!(seen.requests.iter().any(|request| request.4 == 413));
    drop(seen);
    sender.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_reports_what_it_dropped() {
    let receiver = Receiver::start();
    // The outbox fills before the sender starts (the site was offline).
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &receiver.url(), "outbox_max_bytes = 8192\n");
    let store = Arc::new(Store::open(&config.state_dir).unwrap());
    store.set_outbox_max_bytes(8192);
    store.append_reports(&reports(1, 150)).unwrap();
    let status = store.outbox_status().unwrap();
    assert!(status.bytes <= 8192, "{status:?}");
    let dropped = status.dropped["measurement"];
    assert!(dropped > 0);
    let shutdown = CancellationToken::new();
    edgeroll::report::spawn(
        &config,
        store.clone(),
        Clock::starting_at(Timestamp::from_millis(0)),
        shutdown.clone(),
    )
    .unwrap();
    wait_until_empty(&store).await;
    // Every rollout event arrived; the dropped measurements are counted as missing.
    let seqs = receiver.seqs(SITE);
    let events: Vec<u64> = (1..=150).filter(|n| n % 3 == 0).collect();
    assert!(events.iter().all(|n| seqs.contains(n)), "an event was lost");
    let seen = receiver.seen.lock().unwrap();
    assert_eq!(seen.missing[SITE].len() as u64, dropped);
    assert_eq!(seen.high_water[SITE], 150);
    drop(seen);
    shutdown.cancel();
}

/// A certificate for 127.0.0.1 (self-signed, so it is its own CA) as PEM, and its key.
fn certificate() -> (rcgen::CertifiedKey, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = certified.cert.pem();
    (certified, pem)
}

fn private_key(certified: &rcgen::CertifiedKey) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_a_client_certificate() {
    edgeroll::provider::http_client::install_crypto_provider();
    let (server, server_pem) = certificate();
    let (client, client_pem) = certificate();
    // The receiver accepts only clients with a certificate it trusts (mutual TLS).
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(client.cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(client_roots))
        .build()
        .unwrap();
    let server_config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.cert.der().clone()], private_key(&server))
        .unwrap();
    let receiver = Receiver::start_tls(server_config);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &server_pem).unwrap();
    std::fs::write(dir.path().join("site.crt"), &client_pem).unwrap();
    std::fs::write(dir.path().join("site.key"), client.key_pair.serialize_pem()).unwrap();

    // Without the CA the server is not trusted, and nothing is acknowledged.
    let untrusted = start(&receiver.url(), "");
    untrusted.store.append_reports(&reports(1, 3)).unwrap();
    let deadline = tokio::time::Instant::now() + WITHIN;
    let result = loop {
        let status = untrusted.store.outbox_status().unwrap();
        if let Some(result) = status.last_result {
            break result;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(result.contains("certificate"), "{result}");
    assert_eq!(untrusted.store.outbox_status().unwrap().depth, 3);
    untrusted.shutdown.cancel();

    // With ca_file but no client certificate the receiver refuses the site.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("ca.pem"), &server_pem).unwrap();
    let anonymous = config(other.path(), &receiver.url(), "ca_file = \"ca.pem\"\n");
    let store = Arc::new(Store::open(&anonymous.state_dir).unwrap());
    store.append_reports(&reports(1, 3)).unwrap();
    let shutdown = CancellationToken::new();
    edgeroll::report::spawn(
        &anonymous,
        store.clone(),
        Clock::starting_at(Timestamp::from_millis(0)),
        shutdown.clone(),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while store.outbox_status().unwrap().last_result.is_none() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = store.outbox_status().unwrap();
    assert!(!status.last_ok && status.depth == 3, "{status:?}");
    shutdown.cancel();

    // With ca_file and the client certificate: delivered.
    let config = config(
        dir.path(),
        &receiver.url(),
        "ca_file = \"ca.pem\"\nclient_cert = \"site.crt\"\nclient_key = \"site.key\"\n",
    );
    let store = Arc::new(Store::open(&config.state_dir).unwrap());
    store.append_reports(&reports(1, 3)).unwrap();
    let shutdown = CancellationToken::new();
    edgeroll::report::spawn(
        &config,
        store.clone(),
        Clock::starting_at(Timestamp::from_millis(0)),
        shutdown.clone(),
    )
    .unwrap();
    wait_until_empty(&store).await;
    assert_eq!(receiver.seqs(SITE), [1, 2, 3]);
    shutdown.cancel();
}

#[test]
fn a_missing_client_key_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("site.crt"), certificate().1).unwrap();
    let config = config(
        dir.path(),
        "https://127.0.0.1:9/v1/reports",
        "client_cert = \"site.crt\"\nclient_key = \"site.key\"\n",
    );
    let store = Arc::new(Store::open(&config.state_dir).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let error = edgeroll::report::spawn(
        &config,
        store,
        Clock::starting_at(Timestamp::from_millis(0)),
        CancellationToken::new(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("site.key"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_store_was_reset_is_not_taken_for_a_duplicate() {
    let receiver = Receiver::start();
    // The receiver knew this site up to 1000; then the site's disk was replaced.
    receiver.forget_after(SITE, 1000);
    let sender = start(&receiver.url(), "");
    sender.store.append_reports(&reports(1, 5)).unwrap();
    receiver.wait_for("the reports arrive after the old mark", WITHIN, |seen| {
        seen.high_water.get(SITE) == Some(&1005)
    });
    wait_until_empty(&sender.store).await;
    let seen = receiver.seen.lock().unwrap();
    let kept: Vec<(u64, &ReportBody)> = seen.reports[SITE]
        .iter()
        .map(|report| (report.seq, &report.body))
        .collect();
    let expected = reports(1, 5);
    assert_eq!(kept.len(), 5);
    for ((seq, body), (n, sent)) in kept.iter().zip(expected.iter().enumerate()) {
        assert_eq!(*seq, 1001 + n as u64);
        assert_eq!(*body, &sent.body);
    }
    drop(seen);
    // New reports continue after them.
    assert_eq!(sender.store.append_reports(&reports(6, 1)).unwrap(), [1006]);
    sender.shutdown.cancel();
}
