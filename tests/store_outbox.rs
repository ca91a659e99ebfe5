//! The report outbox against a simple model: random appends (events and measurements of
//! random sizes), batches, acknowledgements and reopenings, with a small bound so that
//! measurements are dropped. Sequence numbers never repeat, batches come in order within their
//! limits, nothing that is not a measurement is ever lost, and the bound holds whenever
//! measurements are left to drop.

use std::collections::BTreeMap;

use edgeroll::store::{BatchLimits, NewReport, Store};
use edgeroll::time::Timestamp;
use edgeroll::wire::report::ReportBody;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Event(usize),
    Measurement(usize),
    /// Read a batch with these limits and acknowledge it (or not).
    Deliver {
        max_reports: usize,
        max_bytes: usize,
        ack: bool,
    },
    Reopen,
    /// A receiver that holds this many numbers more than the store ever gave out (the site's
    /// store was reset) acknowledges.
    AckAhead(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0usize..200).prop_map(Op::Event),
        5 => (0usize..200).prop_map(Op::Measurement),
        2 => (1usize..8, 1usize..3000, any::<bool>()).prop_map(|(max_reports, max_bytes, ack)| Op::Deliver { max_reports, max_bytes, ack }),
        1 => Just(Op::Reopen),
        1 => (1u64..50).prop_map(Op::AckAhead),
    ]
}

fn body(kind: &str, pad: usize, n: u64) -> ReportBody {
    let message = format!("{n}:{}", "x".repeat(pad));
    if kind == "measurement" {
        ReportBody::Measurement {
            service: "web".to_owned(),
            run: "run".to_owned(),
            metric: "m".to_owned(),
            phase: "Successful".to_owned(),
            value: None,
            message: Some(message),
        }
    } else {
        ReportBody::Rollout {
            service: "web".to_owned(),
            kind: "E".to_owned(),
            message,
            phase: "Progressing".to_owned(),
            completion: None,
            stable: None,
            canary: None,
            serial: None,
        }
    }
}

/// The model: the rows the outbox must hold, by sequence number.
#[derive(Default)]
struct Model {
    rows: BTreeMap<u64, (bool, u64, ReportBody)>,
    last_seq: u64,
    acked: u64,
    dropped_total: u64,
    dropped_pending: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.rows.values().map(|(_, size, _)| size).sum()
    }

    fn append(&mut self, measurement: bool, body: ReportBody, max_bytes: u64) -> u64 {
        self.last_seq += 1;
        let size = serde_json::to_string(&body).unwrap().len() as u64;
        self.rows.insert(self.last_seq, (measurement, size, body));
        while self.bytes() > max_bytes {
            let Some(oldest) = self
                .rows
                .iter()
                .find(|(_, (measurement, _, _))| *measurement)
                .map(|(seq, _)| *seq)
            else {
                break;
            };
            self.rows.remove(&oldest);
            self.dropped_total += 1;
            self.dropped_pending += 1;
        }
        self.last_seq
    }
}

const MAX_BYTES: u64 = 2_000;
const SITE: &str = "store-7";

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_outbox_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.set_outbox_max_bytes(MAX_BYTES);
        let mut model = Model::default();
        let mut given_out = std::collections::BTreeSet::new();
        for (step, op) in ops.into_iter().enumerate() {
            let now = Timestamp::from_millis(step as u64);
            match op {
                Op::Event(pad) | Op::Measurement(pad) => {
                    let measurement = matches!(op, Op::Measurement(_));
                    let kind = if measurement { "measurement" } else { "rollout" };
                    let body = body(kind, pad, step as u64);
                    let expected = model.append(measurement, body.clone(), MAX_BYTES);
                    let seqs = store.append_reports(&[NewReport { at: now, body }]).unwrap();
                    prop_assert_eq!(seqs.clone(), vec![expected]);
                    prop_assert!(given_out.insert(seqs[0]), "sequence number {} given out twice", seqs[0]);
                    prop_assert!(given_out.iter().all(|seq| *seq <= seqs[0]));
                }
                Op::Deliver { max_reports, max_bytes, ack } => {
                    let limits = BatchLimits { max_reports, max_bytes };
                    let batch = store.outbox_batch(SITE, None, limits).unwrap();
                    let Some(batch) = batch else {
                        prop_assert_eq!(model.last_seq, model.acked);
                        continue;
                    };
                    prop_assert_eq!(batch.first, model.acked + 1);
                    prop_assert!(batch.last <= model.last_seq);
                    edgeroll::wire::report::validate(&batch).unwrap();
                    // The batch is the model's rows from the mark on, in order, within limits.
                    let expected: Vec<u64> = model.rows.range(batch.first..=batch.last).map(|(seq, _)| *seq).collect();
                    let got: Vec<u64> = batch.reports.iter().map(|report| report.seq).collect();
                    prop_assert_eq!(&got, &expected);
                    prop_assert!(got.len() <= max_reports);
                    let bytes: u64 = batch.reports.iter().map(|report| model.rows[&report.seq].1).sum();
                    prop_assert!(got.len() == 1 || bytes <= max_bytes as u64);
                    for report in &batch.reports {
                        prop_assert_eq!(&report.body, &model.rows[&report.seq].2);
                    }
                    // A batch that stops short stops at a row; one that does not covers everything.
                    let more = model.rows.range(batch.last + 1..).next().is_some();
                    if !more {
                        prop_assert_eq!(batch.last, model.last_seq);
                    }
                    prop_assert_eq!(batch.dropped.get("measurement").copied().unwrap_or(0), model.dropped_pending);
                    if ack {
                        store.outbox_acknowledge(batch.last, &batch.dropped, now, "ok").unwrap();
                        model.acked = batch.last;
                        model.rows = model.rows.split_off(&(batch.last + 1));
                        model.dropped_pending -= batch.dropped.get("measurement").copied().unwrap_or(0);
                    }
                }
                Op::AckAhead(ahead) => {
                    if model.last_seq == 0 {
                        continue;
                    }
                    let ack = model.last_seq + ahead;
                    let kept = store.outbox_acknowledge(ack, &BTreeMap::new(), now, "ok").unwrap();
                    prop_assert_eq!(kept, ack);
                    let delta = ack - model.acked;
                    model.rows = std::mem::take(&mut model.rows)
                        .into_iter()
                        .map(|(seq, row)| (seq + delta, row))
                        .collect();
                    model.last_seq += delta;
                    model.acked = ack;
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(dir.path()).unwrap();
                    store.set_outbox_max_bytes(MAX_BYTES);
                }
            }
            let status = store.outbox_status().unwrap();
            prop_assert_eq!(status.depth, model.rows.len() as u64);
            prop_assert_eq!(status.bytes, model.bytes());
            prop_assert_eq!(status.acked, model.acked);
            prop_assert_eq!(status.last_seq, model.last_seq);
            prop_assert_eq!(status.oldest.map(|(seq, _)| seq), model.rows.keys().next().copied());
            prop_assert_eq!(status.dropped.get("measurement").copied().unwrap_or(0), model.dropped_total);
            let measurements_left = model.rows.values().any(|(measurement, _, _)| *measurement);
            prop_assert!(status.bytes <= MAX_BYTES || !measurements_left);
        }
    }
}
