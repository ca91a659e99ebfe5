//! `edgeroll hub` ingesting report batches over HTTP: exactly one copy per (site, sequence),
//! duplicates and overlaps acknowledged, gaps refused with the high-water mark, bad batches
//! refused without changing anything; and a property test of ingest against the real store.

mod hub_support;

use std::collections::BTreeMap;

use edgeroll::hub::store::{HubStore, Outcome};
use edgeroll::time::Timestamp;
use hub_support::*;
use proptest::prelude::*;

fn ack(answer: &Answer) -> u64 {
    answer.json()["ack"].as_u64().expect("ack")
}

#[test]
fn the_same_batch_twice_and_overlapping_batches_keep_one_copy() {
    let dir = HubDir::new("127.0.0.1:0", "");
    let hub = InProcessHub::start(&dir);
    let first = batch("store-1", 1, 5, 1..=5);
    let answer = post_batch(hub.address, &first);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json(),
        serde_json::json!({"site": "store-1", "ack": 5})
    );
    // The same batch again (its acknowledgement was lost): acknowledged, not stored again.
    let again = post_batch(hub.address, &first);
    assert_eq!((again.status, ack(&again)), (200, 5));
    // A batch that overlaps what is held: only the new part is kept.
    let overlapping = post_batch(hub.address, &batch("store-1", 3, 8, 3..=8));
    assert_eq!((overlapping.status, ack(&overlapping)), (200, 8));
    // An older range entirely held: acknowledged with the high-water mark.
    let old = post_batch(hub.address, &batch("store-1", 2, 4, 2..=4));
    assert_eq!((old.status, ack(&old)), (200, 8));
    // A range with numbers the site dropped (its outbox was full) counts them as missing.
    let mut sparse = batch("store-1", 9, 12, [9, 12]);
    sparse.dropped = BTreeMap::from([("measurement".to_owned(), 2)]);
    assert_eq!(ack(&post_batch(hub.address, &sparse)), 12);

    let (seqs, high_water) = held(hub.address, "store-1");
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 12]);
    assert_eq!(high_water, 12);
    let site = request(hub.address, "GET", "/v1/sites/store-1", &[], b"").json();
    assert_eq!(site["highWater"], 12);
    assert_eq!(site["reports"], 10);
    assert_eq!(site["missing"], 2);
    assert_eq!(site["duplicates"], 2);
    assert_eq!(site["dropped"]["measurement"], 2);
    assert_eq!(site["services"]["telemetry-ingest"]["phase"], "Progressing");
    assert_eq!(
        site["services"]["telemetry-ingest"]["canary"]["version"],
        "2.5.0"
    );
    assert_eq!(site["services"]["telemetry-ingest"]["seq"], 12);
    assert_eq!(site["serial"], 42);
    let sites = request(hub.address, "GET", "/v1/sites", &[], b"").json();
    assert_eq!(sites.as_array().map(Vec::len), Some(1));
}

#[test]
fn a_gap_is_refused_with_409_and_the_ack_so_the_site_resends() {
    let dir = HubDir::new("127.0.0.1:0", "");
    let hub = InProcessHub::start(&dir);
    assert_eq!(
        ack(&post_batch(hub.address, &batch("store-1", 1, 3, 1..=3))),
        3
    );
    let gap = post_batch(hub.address, &batch("store-1", 6, 9, 6..=9));
    assert_eq!(gap.status, 409, "{}", gap.text());
    assert_eq!(gap.json(), serde_json::json!({"site": "store-1", "ack": 3}));
    assert_eq!(held(hub.address, "store-1"), (vec![1, 2, 3], 3));
    // The site resends from ack + 1.
    let resent = post_batch(hub.address, &batch("store-1", 4, 9, 4..=9));
    assert_eq!((resent.status, ack(&resent)), (200, 9));
    assert_eq!(held(hub.address, "store-1").0, (1..=9).collect::<Vec<_>>());
    // A first batch that does not start at 1 is a gap too.
    let late = post_batch(hub.address, &batch("store-2", 5, 6, 5..=6));
    assert_eq!((late.status, ack(&late)), (409, 0));
}

#[test]
fn truncated_gzip_garbage_and_oversized_batches_are_refused_and_change_nothing() {
    let dir = HubDir::new("127.0.0.1:0", "");
    let hub = InProcessHub::start(&dir);
    assert_eq!(
        ack(&post_batch(hub.address, &batch("store-1", 1, 2, 1..=2))),
        2
    );
    let next = batch("store-1", 3, 6, 3..=6);
    let encoded = edgeroll::wire::report::encode(&next);
    let key = edgeroll::wire::report::idempotency_key(&next);
    let gzip_headers = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
        ("idempotency-key", key.as_str()),
    ];
    let truncated = request(
        hub.address,
        "POST",
        "/v1/reports",
        &gzip_headers,
        &encoded[..encoded.len() - 9],
    );
    assert_eq!(truncated.status, 400, "{}", truncated.text());
    assert!(truncated.text().contains("gzip"), "{}", truncated.text());
    let garbage = request(
        hub.address,
        "POST",
        "/v1/reports",
        &gzip_headers,
        b"\x1f\x8b\x08 definitely not a batch",
    );
    assert_eq!(garbage.status, 400);
    let plain_garbage = request(
        hub.address,
        "POST",
        "/v1/reports",
        &[("content-type", "application/json")],
        b"{\"site\": \"store-1\", \"first\": 3}",
    );
    assert_eq!(plain_garbage.status, 400);
    // Inconsistent: reports outside the range.
    let mut inconsistent = batch("store-1", 3, 4, [3, 7]);
    inconsistent.last = 4;
    assert_eq!(post_batch(hub.address, &inconsistent).status, 400);
    // An idempotency key that names another range.
    let mismatched = request(
        hub.address,
        "POST",
        "/v1/reports",
        &[
            ("content-encoding", "gzip"),
            ("idempotency-key", "store-1:3-5"),
        ],
        &encoded,
    );
    assert_eq!(mismatched.status, 400, "{}", mismatched.text());
    // Too large, by its Content-Length, before reading it.
    let huge = vec![b' '; edgeroll::wire::report::MAX_BATCH_BYTES + 1];
    let too_large = request(hub.address, "POST", "/v1/reports", &[], &huge);
    assert_eq!(too_large.status, 413);

    assert_eq!(held(hub.address, "store-1"), (vec![1, 2], 2));
    // The real batch still goes in.
    assert_eq!(ack(&post_batch(hub.address, &next)), 6);
    assert_eq!(held(hub.address, "store-1").0, (1..=6).collect::<Vec<_>>());
}

#[test]
fn reports_survive_a_restart_of_the_hub() {
    let dir = HubDir::new("127.0.0.1:0", "");
    let hub = InProcessHub::start(&dir);
    assert_eq!(
        ack(&post_batch(hub.address, &batch("store-1", 1, 4, 1..=4))),
        4
    );
    hub.stop();
    let hub = InProcessHub::start(&dir);
    assert_eq!(held(hub.address, "store-1"), (vec![1, 2, 3, 4], 4));
    let again = post_batch(hub.address, &batch("store-1", 1, 4, 1..=4));
    assert_eq!((again.status, ack(&again)), (200, 4));
}

/// One batch a site might send: a range that starts somewhere around what it sent before
/// (retries, overlaps, gaps), with some numbers dropped.
fn arbitrary_batches() -> impl Strategy<Value = Vec<(u64, u64, Vec<bool>)>> {
    proptest::collection::vec(
        (
            1u64..30,
            0u64..6,
            proptest::collection::vec(any::<bool>(), 6),
        ),
        1..25,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever order, overlap or repetition batches come in, the store holds exactly one copy
    /// of each sequence number up to its high-water mark and never anything above it; a batch
    /// is refused only when it starts after a gap.
    #[test]
    fn ingest_keeps_exactly_one_copy_of_each_sequence_number(batches in arbitrary_batches()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let store = HubStore::open(dir.path()).expect("store");
            let mut model_high_water = 0u64;
            let mut model: BTreeMap<u64, ()> = BTreeMap::new();
            for (first, length, keep) in batches {
                let last = first + length;
                let seqs: Vec<u64> = (first..=last)
                    .filter(|seq| keep[usize::try_from(seq - first).unwrap_or(0) % keep.len()])
                    .collect();
                let sent = batch("store-1", first, last, seqs.clone());
                let outcome = store
                    .ingest(sent, Timestamp::from_millis(1), true, false)
                    .await
                    .expect("ingest");
                if first > model_high_water + 1 {
                    prop_assert_eq!(outcome, Outcome::Gap { ack: model_high_water, expected: model_high_water + 1 });
                } else if last <= model_high_water {
                    prop_assert_eq!(outcome, Outcome::Duplicate { ack: model_high_water });
                } else {
                    for seq in seqs.iter().filter(|seq| **seq > model_high_water) {
                        model.insert(*seq, ());
                    }
                    model_high_water = last;
                    prop_assert_eq!(outcome.ack(), last);
                }
            }
            let held = store.reports("store-1".to_owned(), 0, 10_000).await.expect("reports");
            let held: Vec<u64> = held.iter().map(|stored| stored.report.seq).collect();
            let expected: Vec<u64> = model.keys().copied().collect();
            prop_assert_eq!(&held, &expected);
            let summary = store.site("store-1".to_owned()).await.expect("site").expect("known");
            prop_assert_eq!(summary.high_water, model_high_water);
            // Every number up to the mark is either held or counted as missing, once.
            prop_assert_eq!(summary.reports, expected.len() as u64);
            prop_assert_eq!(summary.reports + summary.missing, model_high_water);
            Ok(())
        })?;
    }
}
