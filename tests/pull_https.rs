//! The pull of a signed desired document over real HTTPS (a stand-in center on 127.0.0.1 with
//! rcgen certificates): what is applied, what is refused and why, what a misbehaving center
//! does to the site (nothing that runs changes), ETag and 304, Retry-After, mutual TLS, and the
//! last verified document applied at start-up with the center down.

// These tests drive real sockets in real time.
#![allow(clippy::disallowed_methods)]

mod pull_support;

use std::time::{Duration, Instant};

use pull_support::{document, summarize, Center, Mode, Pki, Rig, Round, Signer, DOCUMENT_PATH};

fn keys_line(signer: &Signer) -> String {
    format!("trusted_keys = [\"{}\"]", signer.public)
}

#[tokio::test]
async fn a_signed_document_is_pulled_verified_and_then_not_modified() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    let signer = Signer::new();
    let bytes = document(
        3,
        "selector = { cohort = \"pilot\" }\nexpires = \"2099-01-01T00:00:00Z\"\n",
    );
    center.publish(&bytes, Some(signer.sign(&bytes)));
    let extra = format!(
        "{}\nca_file = \"{}\"",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &extra);

    let first = rig.round().await;
    assert_eq!(first.applied, vec![(3, false)], "{first:?}");
    assert_eq!(first.last_result, "applied serial 3");
    assert_eq!(first.serial, Some(3));
    assert!(first.key_id.is_some());
    assert!(first.etag.is_some());
    assert_eq!(rig.accepted_serial(), Some(3));
    // The hub's Date raised the clock floor to about now.
    let floor = rig.store.load_trust().unwrap().state.clock_floor;
    assert!(floor.as_millis() > 1_796_083_100_000, "{floor:?}");

    let seen = center.seen();
    assert_eq!(seen[0].path, DOCUMENT_PATH);
    assert_eq!(seen[0].site.as_deref(), Some("store-0042"));
    assert_eq!(
        seen[0].labels.as_deref(),
        Some("cohort=pilot,region=eu-west")
    );
    assert_eq!(seen[1].path, format!("{DOCUMENT_PATH}.minisig"));

    let second = rig.round().await;
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.last_result, "not modified (serial 3)");
    let seen = center.seen();
    assert_eq!(seen.last().unwrap().if_none_match, first.etag);
}

#[tokio::test]
async fn the_signature_may_come_in_the_edgeroll_signature_header() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    center.signature_in_header(true);
    let signer = Signer::new();
    let bytes = document(4, "");
    center.publish(&bytes, Some(signer.sign(&bytes)));
    let extra = format!(
        "{}\nca_file = \"{}\"",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &extra);
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(4, false)], "{round:?}");
    // No second request for URL.minisig.
    assert!(center
        .seen()
        .iter()
        .all(|seen| !seen.path.ends_with(".minisig")));
}

#[tokio::test]
async fn every_bad_document_is_refused_by_its_rule_and_nothing_changes() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    let signer = Signer::new();
    let stranger = Signer::new();
    let extra = format!(
        "{}\nca_file = \"{}\"\nmax_document_bytes = 2048",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let good = document(5, "");
    center.publish(&good, Some(signer.sign(&good)));
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &extra);
    assert_eq!(rig.round().await.applied, vec![(5, false)]);

    let mut flipped = document(6, "");
    let signature = signer.sign(&flipped);
    flipped[3] ^= 0x01;
    let older = document(4, "");
    let conflict = document(5, "# other bytes\n");
    let expired = document(7, "expires = \"2020-01-01T00:00:00Z\"\n");
    let elsewhere = document(8, "selector = { site = \"store-0043\" }\n");
    let cohort = document(9, "selector = { cohort = \"fleet\" }\n");
    let oversized = document(10, &format!("# {}\n", "x".repeat(4096)));
    let fine = document(11, "");
    let mut tampered_signature = signer.sign(&fine);
    let second_line_end = tampered_signature
        .match_indices('\n')
        .nth(1)
        .map(|(index, _)| index)
        .unwrap();
    let at = second_line_end - 3;
    let replacement = if &tampered_signature[at..=at] == "A" {
        "B"
    } else {
        "A"
    };
    tampered_signature.replace_range(at..=at, replacement);
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        ("signature", flipped, Some(signature), "does not match"),
        ("signature", fine.clone(), Some(tampered_signature), ""),
        (
            "untrusted-key",
            document(12, ""),
            Some(stranger.sign(&document(12, ""))),
            "does not trust",
        ),
        ("unsigned", document(13, ""), None, "no signature"),
        (
            "serial",
            older.clone(),
            Some(signer.sign(&older)),
            "serial 4 is older than serial 5",
        ),
        (
            "serial-conflict",
            conflict.clone(),
            Some(signer.sign(&conflict)),
            "already accepted with other content",
        ),
        (
            "expired",
            expired.clone(),
            Some(signer.sign(&expired)),
            "expired at 2020-01-01T00:00:00Z",
        ),
        (
            "selector",
            elsewhere.clone(),
            Some(signer.sign(&elsewhere)),
            "site=store-0043",
        ),
        (
            "selector",
            cohort.clone(),
            Some(signer.sign(&cohort)),
            "cohort=fleet",
        ),
        (
            "size",
            oversized.clone(),
            Some(signer.sign(&oversized)),
            "more than the limit of 2048",
        ),
    ];
    for (rule, bytes, signature, words) in cases {
        center.publish(&bytes, signature);
        let round = rig.round().await;
        assert!(round.applied.is_empty(), "{rule}: {round:?}");
        assert_eq!(round.refused.len(), 1, "{rule}: {round:?}");
        assert_eq!(round.refused[0].0, rule, "{round:?}");
        assert!(
            round.refused[0].1.contains(words),
            "{rule}: {}",
            round.refused[0].1
        );
        assert_eq!(round.last_result, format!("refused ({rule})"));
        assert_eq!(rig.accepted_serial(), Some(5), "{rule}");
    }
    // Every refusal is in the store, for `edgeroll get` after a restart.
    let refusals = rig.store.recent_refusals(100).unwrap();
    assert_eq!(refusals.len(), 10);
    // The same refused document at the next poll is not a new event.
    let round = rig.round().await;
    assert!(round.refused.is_empty(), "{round:?}");
    assert_eq!(round.last_result, "refused (size)");
    assert_eq!(rig.store.recent_refusals(100).unwrap().len(), 10);
    // And the genuine next document is still taken.
    center.publish(&fine, Some(signer.sign(&fine)));
    assert_eq!(rig.round().await.applied, vec![(11, false)]);
}

#[tokio::test]
async fn a_center_that_hangs_resets_fails_or_sends_garbage_changes_nothing() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    let signer = Signer::new();
    let good = document(5, "");
    center.publish(&good, Some(signer.sign(&good)));
    let extra = format!(
        "{}\nca_file = \"{}\"\ntimeout = \"1s\"",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &extra);
    assert_eq!(rig.round().await.applied, vec![(5, false)]);

    let cases = [
        (Mode::Hang, "did not answer within 1s"),
        (Mode::Reset, "cannot reach"),
        (
            Mode::Status(500, None),
            "answered 500 Internal Server Error: \"center trouble\"",
        ),
        (
            Mode::Status(429, Some("1".to_owned())),
            "answered 429 Too Many Requests, retry after 1s",
        ),
    ];
    for (mode, words) in cases {
        center.set_mode(mode.clone());
        let started = Instant::now();
        let round = rig.round().await;
        assert!(round.applied.is_empty(), "{mode:?}: {round:?}");
        assert_eq!(round.failed.len(), 1, "{mode:?}: {round:?}");
        assert!(
            round.failed[0].contains(words),
            "{mode:?}: {}",
            round.failed[0]
        );
        assert!(round.last_result.starts_with("error: "), "{round:?}");
        assert_eq!(rig.accepted_serial(), Some(5));
        if mode == Mode::Hang {
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }
    // Endless data: the body stops counting at the limit.
    center.set_mode(Mode::Endless);
    let round = rig.round().await;
    assert_eq!(round.refused.len(), 1, "{round:?}");
    assert_eq!(round.refused[0].0, "size");
    assert!(
        round.refused[0]
            .1
            .contains("sent more than the limit of 1048576 bytes"),
        "{}",
        round.refused[0].1
    );
    assert_eq!(rig.accepted_serial(), Some(5));

    center.set_mode(Mode::Garbage);
    let round = rig.round().await;
    assert_eq!(round.refused.len(), 1, "{round:?}");
    assert_eq!(round.refused[0].0, "signature");
    assert_eq!(rig.accepted_serial(), Some(5));

    // Back to normal: the same document is not modified; nothing was lost.
    center.set_mode(Mode::Serve);
    let round = rig.round().await;
    assert!(round.applied.is_empty());
    assert_eq!(round.last_result, "not modified (serial 5)");
}

#[tokio::test]
async fn retry_after_is_honoured_before_the_next_attempt() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    let signer = Signer::new();
    center.set_mode(Mode::Status(429, Some("3".to_owned())));
    let extra = format!(
        "{}\nca_file = \"{}\"",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &extra);
    let round = rig.round().await;
    assert_eq!(round.failed.len(), 1, "{round:?}");
    let after_first = center.seen().len();
    // The backoff alone would be at most 2 s; Retry-After says 3 s.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        center.seen().len(),
        after_first,
        "retried before Retry-After"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while center.seen().len() == after_first {
        assert!(Instant::now() < deadline, "never retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unsigned_https_is_refused_unless_allowed() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    let bytes = document(2, "");
    center.publish(&bytes, None);
    let ca = format!("ca_file = \"{}\"", pki.ca_file.display());
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &ca);
    let round = rig.round().await;
    assert_eq!(round.refused[0].0, "unsigned", "{round:?}");
    assert!(round.refused[0].1.contains("allow_unsigned"));
    drop(rig.stop().await);

    let mut rig = Rig::start(
        tempfile::tempdir().unwrap(),
        &center.url(),
        &format!("{ca}\nallow_unsigned = true"),
    );
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(2, false)], "{round:?}");
    assert_eq!(round.key_id, None);
}

#[tokio::test]
async fn an_unknown_ca_is_a_failure_and_mutual_tls_presents_the_site_certificate() {
    let pki = Pki::new();
    let signer = Signer::new();
    let bytes = document(2, "");
    // Without ca_file the test CA is unknown.
    let center = Center::start(&pki, false).await;
    center.publish(&bytes, Some(signer.sign(&bytes)));
    let mut rig = Rig::start(
        tempfile::tempdir().unwrap(),
        &center.url(),
        &keys_line(&signer),
    );
    let round = rig.round().await;
    assert!(round.failed[0].contains("certificate"), "{round:?}");
    drop(rig.stop().await);

    let center = Center::start(&pki, true).await;
    center.publish(&bytes, Some(signer.sign(&bytes)));
    let ca = format!(
        "{}\nca_file = \"{}\"",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &ca);
    let round = rig.round().await;
    assert_eq!(round.failed.len(), 1, "no client certificate: {round:?}");
    drop(rig.stop().await);

    let mtls = format!(
        "{ca}\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        pki.client_cert_file.display(),
        pki.client_key_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &mtls);
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(2, false)], "{round:?}");
}

#[tokio::test]
async fn the_last_verified_document_is_applied_at_start_up_with_the_center_down() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    let signer = Signer::new();
    let bytes = document(6, "expires = \"2099-01-01T00:00:00Z\"\n");
    center.publish(&bytes, Some(signer.sign(&bytes)));
    let url = center.url();
    let extra = format!(
        "{}\nca_file = \"{}\"",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &url, &extra);
    assert_eq!(rig.round().await.applied, vec![(6, false)]);
    let dir = rig.stop().await;
    drop(center);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut rig = Rig::start(dir, &url, &extra);
    let mut initial = Round::default();
    summarize(std::mem::take(&mut rig.initial), &mut initial);
    assert_eq!(initial.applied, vec![(6, false)], "{initial:?}");
    assert_eq!(initial.serial, Some(6));
    // The next pull fails (the center is down), and changes nothing.
    let round = rig.round().await;
    assert!(round.applied.is_empty());
    assert!(
        round.last_result.starts_with("error: cannot reach"),
        "{round:?}"
    );
    assert_eq!(rig.accepted_serial(), Some(6));
}

#[tokio::test]
async fn an_expired_document_already_accepted_keeps_running_as_stale() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    let signer = Signer::new();
    // Expires two seconds from now.
    let expires = edgeroll::time::Timestamp::from_millis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
            + 2_000,
    );
    let bytes = document(6, &format!("expires = \"{}\"\n", expires.rfc3339()));
    center.publish(&bytes, Some(signer.sign(&bytes)));
    let url = center.url();
    let extra = format!(
        "{}\nca_file = \"{}\"",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &url, &extra);
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(6, false)]);
    assert!(!round.stale);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let round = rig.round().await;
    assert!(round.applied.is_empty(), "{round:?}");
    assert!(round.stale, "{round:?}");
    assert_eq!(round.last_result, "not modified (serial 6)");

    // After a restart it is handed over as stale: the shell keeps what runs.
    let dir = rig.stop().await;
    let rig = Rig::start(dir, &url, &extra);
    let mut initial = Round::default();
    summarize(rig.initial, &mut initial);
    assert_eq!(initial.applied, vec![(6, true)], "{initial:?}");
}

#[tokio::test]
async fn a_refusal_reports_the_serial_only_of_a_document_whose_signature_held() {
    let pki = Pki::new();
    let center = Center::start(&pki, false).await;
    let signer = Signer::new();
    // With [reports], every verdict goes to the outbox (the receiver is never reached here).
    let extra = format!(
        "{}\nca_file = \"{}\"\n\n[reports]\nurl = \"https://127.0.0.1:9/v1/reports\"",
        keys_line(&signer),
        pki.ca_file.display()
    );
    let good = document(5, "");
    center.publish(&good, Some(signer.sign(&good)));
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &center.url(), &extra);
    assert_eq!(rig.round().await.applied, vec![(5, false)]);

    let cohort = document(9, "selector = { cohort = \"fleet\" }\n");
    let older = document(4, "");
    let mut forged = document(99, "");
    let signature = signer.sign(&forged);
    forged[3] ^= 0x01;
    for (bytes, signature) in [
        (cohort.clone(), signer.sign(&cohort)),
        (older.clone(), signer.sign(&older)),
        (forged, signature),
    ] {
        center.publish(&bytes, Some(signature));
        assert_eq!(rig.round().await.refused.len(), 1);
    }
    let batch = rig
        .store
        .outbox_batch(
            "store-0042",
            None,
            edgeroll::store::BatchLimits {
                max_reports: 100,
                max_bytes: 1 << 20,
            },
        )
        .unwrap()
        .expect("reports");
    let documents: Vec<(Option<u64>, String, Option<String>)> = batch
        .reports
        .into_iter()
        .filter_map(|report| match report.body {
            edgeroll::wire::report::ReportBody::Document {
                serial,
                outcome,
                rule,
                ..
            } => Some((serial, outcome, rule)),
            _ => None,
        })
        .collect();
    let rule = |name: &str| Some(name.to_owned());
    assert_eq!(
        documents,
        vec![
            (Some(5), "applied".to_owned(), None),
            (Some(9), "refused".to_owned(), rule("selector")),
            (Some(4), "refused".to_owned(), rule("serial")),
            // The flipped byte: its serial 99 is only the forger's claim.
            (None, "refused".to_owned(), rule("signature")),
        ]
    );
}
