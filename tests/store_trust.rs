//! The store's trust table: what a site accepted survives a restart, the clock floor only moves
//! forward, and refusals are kept, newest last and bounded.

use edgeroll::store::trust::{RefusalRecord, SourceRecord, REFUSALS_KEPT};
use edgeroll::store::Store;
use edgeroll::time::Timestamp;
use edgeroll::trust::Accepted;

fn accepted(serial: u64) -> Accepted {
    Accepted {
        serial,
        digest: format!("{serial:064x}"),
        key_id: Some("ABCDEF0123456789".to_owned()),
        signed_at: None,
        expires: None,
    }
}

#[test]
fn an_accepted_document_and_the_floor_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let fresh = store.load_trust().unwrap();
        assert_eq!(fresh.state.accepted, None);
        assert_eq!(fresh.document, None);
        let source = SourceRecord {
            url: "https://hub.example/v1/sites/a/desired".to_owned(),
            last_result: "applied serial 7".to_owned(),
            etag: Some("\"abc\"".to_owned()),
            ..SourceRecord::default()
        };
        store
            .accept_document(
                &accepted(7),
                b"serial = 7",
                Some("sig"),
                Timestamp::from_millis(5_000),
                &source,
                &[],
            )
            .unwrap();
        // The floor never moves back.
        store
            .save_source(Timestamp::from_millis(1_000), &source)
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let record = store.load_trust().unwrap();
    assert_eq!(record.state.accepted, Some((7, format!("{:064x}", 7))));
    assert_eq!(record.state.clock_floor, Timestamp::from_millis(5_000));
    assert_eq!(record.document.as_deref(), Some(&b"serial = 7"[..]));
    assert_eq!(record.signature.as_deref(), Some("sig"));
    assert_eq!(record.source.etag.as_deref(), Some("\"abc\""));
    assert_eq!(record.source.last_result, "applied serial 7");
}

#[test]
fn refusals_are_kept_newest_last_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for index in 0..(REFUSALS_KEPT + 5) {
        store
            .refuse_document(
                &RefusalRecord {
                    at: Timestamp::from_millis(index as u64),
                    rule: "serial".to_owned(),
                    message: format!("refusal {index}"),
                },
                &SourceRecord {
                    last_result: format!("refused {index}"),
                    ..SourceRecord::default()
                },
                &[],
            )
            .unwrap();
    }
    let all = store.recent_refusals(1_000).unwrap();
    assert_eq!(all.len(), REFUSALS_KEPT);
    assert_eq!(
        all.last().unwrap().message,
        format!("refusal {}", REFUSALS_KEPT + 4)
    );
    let last_two = store.recent_refusals(2).unwrap();
    assert_eq!(
        last_two[1].message,
        format!("refusal {}", REFUSALS_KEPT + 4)
    );
    assert_eq!(
        store.load_trust().unwrap().source.last_result,
        format!("refused {}", REFUSALS_KEPT + 4)
    );
}

/// What the site did with a document reaches the outbox in the same transaction as the
/// trust table's change: an acceptance with its serial and key, a refusal with its rule.
#[test]
fn acceptances_and_refusals_are_reported_through_the_outbox() {
    use edgeroll::report::Reporting;
    use edgeroll::store::BatchLimits;
    use edgeroll::wire::report::ReportBody;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let reporting = Reporting::enabled();
    let at = Timestamp::from_millis(1_000);
    store
        .accept_document(
            &accepted(7),
            b"serial = 7",
            Some("sig"),
            at,
            &SourceRecord::default(),
            &reporting.for_document(
                at,
                Some(7),
                "applied",
                None,
                "accepted",
                Some("ABCDEF0123456789"),
            ),
        )
        .unwrap();
    let refusal = RefusalRecord {
        at,
        rule: "serial".to_owned(),
        message: "serial 6 is older than serial 7".to_owned(),
    };
    store
        .refuse_document(
            &refusal,
            &SourceRecord::default(),
            &reporting.for_document(at, None, "refused", Some("serial"), &refusal.message, None),
        )
        .unwrap();
    let batch = store
        .outbox_batch(
            "store-0042",
            None,
            BatchLimits {
                max_reports: 10,
                max_bytes: 1 << 20,
            },
        )
        .unwrap()
        .expect("two reports are owed");
    let bodies: Vec<(String, Option<u64>, Option<String>)> = batch
        .reports
        .iter()
        .map(|report| match &report.body {
            ReportBody::Document {
                outcome,
                serial,
                rule,
                ..
            } => (outcome.clone(), *serial, rule.clone()),
            other => panic!("not a document report: {other:?}"),
        })
        .collect();
    assert_eq!(
        bodies,
        vec![
            ("applied".to_owned(), Some(7), None),
            ("refused".to_owned(), None, Some("serial".to_owned())),
        ]
    );
}
