//! The report outbox: what the site still owes its center, durable, in order.
//!
//! Owns the tables `outbox` (one row per report: its sequence number, time, kind, size and the
//! JSON of its [`ReportBody`]), `outbox_state` (the receiver's acknowledged high-water mark, the
//! running row and byte counts, the last delivery) and `outbox_dropped` (how many reports of each
//! kind were dropped because the outbox was full).
//!
//! Invariants:
//! - A report's sequence number comes from SQLite's `AUTOINCREMENT`, which never gives out a
//!   number twice, even after the rows are deleted, a `kill -9` or a power loss: a number is used
//!   only when the transaction that took it commits, and then it is on disk.
//! - Reports are appended inside the caller's transaction ([`append`]), so a report commits
//!   exactly when the state change it describes commits.
//! - A row is deleted only when a receiver has acknowledged it ([`Store::outbox_acknowledge`]),
//!   or, when the outbox is fuller than its bound, if it is a measurement: the oldest go first.
//!   Rollout events, verdicts and documents are never dropped, so the bound can be exceeded by
//!   them alone (they are few: a handful per rollout step).
//! - It never sends anything: the sender task (`crate::report`) reads batches and acknowledges.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::{Error, EventRecord, Store};
use crate::time::Timestamp;
use crate::wire::report::{Report, ReportBatch, ReportBody};

/// Default bound of the outbox (`reports.outbox_max_bytes`): 64 MiB of report JSON.
pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// How many measurement rows one pass of the bound deletes at most before it checks again.
const DROP_CHUNK: i64 = 256;

/// A report to append: when it happened and what it says. The outbox gives it its number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReport {
    /// When it happened, on the site's clock.
    pub at: Timestamp,
    /// What it says.
    pub body: ReportBody,
}

/// How much one batch may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many reports (at least one is always taken).
    pub max_reports: usize,
    /// At most this many bytes of report JSON (a single larger report still goes alone).
    pub max_bytes: usize,
}

/// What the outbox holds and how delivery went, for `edgeroll get`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStatus {
    /// Reports waiting for an acknowledgement.
    pub depth: u64,
    /// Their size in bytes of JSON.
    pub bytes: u64,
    /// The bound (`outbox_max_bytes`).
    pub max_bytes: u64,
    /// The sequence number and time of the oldest report not yet acknowledged.
    pub oldest: Option<(u64, Timestamp)>,
    /// The highest sequence number given out so far.
    pub last_seq: u64,
    /// The receiver's high-water mark, as last acknowledged.
    pub acked: u64,
    /// When the sender last tried to deliver a batch.
    pub last_attempt: Option<Timestamp>,
    /// When a batch was last acknowledged.
    pub last_success: Option<Timestamp>,
    /// What the last attempt gave, e.g. `acknowledged up to 42` or `500 Internal Server Error`.
    pub last_result: Option<String>,
    /// Whether the last attempt was acknowledged.
    pub last_ok: bool,
    /// Reports dropped because the outbox was full, ever, by kind.
    pub dropped: BTreeMap<String, u64>,
}

/// The outbox's settings and wake-up, kept in the [`Store`].
#[derive(Debug)]
pub(super) struct OutboxHandle {
    max_bytes: AtomicU64,
    appended: tokio::sync::Notify,
}

impl Default for OutboxHandle {
    fn default() -> Self {
        OutboxHandle {
            max_bytes: AtomicU64::new(DEFAULT_OUTBOX_MAX_BYTES),
            appended: tokio::sync::Notify::new(),
        }
    }
}

/// Reports encoded for [`append`], with the bound to hold. Another store submodule that commits
/// a change with reports (e.g. a refused document) makes one with [`Store::prepare_reports`],
/// calls [`append`] inside its transaction, and [`Store::reports_committed`] after the commit.
pub(super) struct Prepared {
    rows: Vec<(Timestamp, &'static str, String)>,
    max_bytes: u64,
}

/// The encoded rows of `reports`: `(at, kind, body JSON)`.
fn encode(reports: &[NewReport]) -> Result<Vec<(Timestamp, &'static str, String)>, Error> {
    reports
        .iter()
        .map(|report| {
            let json = serde_json::to_string(&report.body).map_err(|cause| Error::Encode {
                what: format!("{} report", report.body.kind()),
                cause,
            })?;
            Ok((report.at, report.body.kind(), json))
        })
        .collect()
}

/// Append prepared reports inside `transaction`, then hold the outbox to its bound by dropping
/// the oldest measurements. Returns the sequence numbers given out, in order.
pub(super) fn append(
    transaction: &Transaction<'_>,
    prepared: &Prepared,
) -> rusqlite::Result<Vec<u64>> {
    let (rows, max_bytes) = (&prepared.rows, prepared.max_bytes);
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut insert = transaction.prepare_cached(
        "INSERT INTO outbox (at, kind, size, body) VALUES (?1, ?2, ?3, ?4) RETURNING seq",
    )?;
    let mut seqs = Vec::with_capacity(rows.len());
    let mut added: u64 = 0;
    for (at, kind, body) in rows {
        let size = body.len() as u64;
        let seq: u64 =
            insert.query_row(params![at.as_millis(), kind, size, body], |row| row.get(0))?;
        seqs.push(seq);
        added += size;
    }
    transaction.execute(
        "UPDATE outbox_state SET rows = rows + ?1, bytes = bytes + ?2 WHERE id = 1",
        params![rows.len() as u64, added],
    )?;
    enforce_bound(transaction, max_bytes)?;
    Ok(seqs)
}

/// Drop the oldest measurements until the outbox holds at most `max_bytes` (or no measurement
/// is left), counting them in `outbox_dropped`.
fn enforce_bound(transaction: &Transaction<'_>, max_bytes: u64) -> rusqlite::Result<()> {
    loop {
        let bytes: u64 =
            transaction.query_row("SELECT bytes FROM outbox_state WHERE id = 1", [], |row| {
                row.get(0)
            })?;
        if bytes <= max_bytes {
            return Ok(());
        }
        let mut excess = bytes - max_bytes;
        let oldest: Vec<(u64, u64)> = {
            let mut select = transaction.prepare_cached(
                "SELECT seq, size FROM outbox WHERE kind = 'measurement' ORDER BY seq LIMIT ?1",
            )?;
            let rows = select
                .query_map([DROP_CHUNK], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        if oldest.is_empty() {
            // Only reports that are never dropped are left: keep them all.
            return Ok(());
        }
        let mut last_dropped = 0;
        let mut count: u64 = 0;
        let mut freed: u64 = 0;
        for (seq, size) in oldest {
            last_dropped = seq;
            count += 1;
            freed += size;
            if size >= excess {
                break;
            }
            excess -= size;
        }
        transaction.execute(
            "DELETE FROM outbox WHERE kind = 'measurement' AND seq <= ?1",
            [last_dropped],
        )?;
        transaction.execute(
            "UPDATE outbox_state SET rows = rows - ?1, bytes = bytes - ?2 WHERE id = 1",
            params![count, freed],
        )?;
        transaction.execute(
            "INSERT INTO outbox_dropped (kind, pending, total) VALUES ('measurement', ?1, ?1)
             ON CONFLICT (kind) DO UPDATE SET
                 pending = pending + excluded.pending, total = total + excluded.total",
            [count],
        )?;
    }
}

/// The highest sequence number ever given out (0: none yet).
fn last_seq(connection: &rusqlite::Connection) -> rusqlite::Result<u64> {
    Ok(connection
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
            [],
            |row| row.get::<_, u64>(0),
        )
        .optional()?
        .unwrap_or(0))
}

impl Store {
    /// Set the bound of the outbox (`reports.outbox_max_bytes`); it applies from the next append.
    pub fn set_outbox_max_bytes(&self, max_bytes: u64) {
        self.outbox.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// Resolves after reports were appended (the sender task waits on it when it has nothing
    /// to send). A wake-up that comes while nobody waits is kept for the next wait.
    pub async fn outbox_appended(&self) {
        self.outbox.appended.notified().await;
    }

    fn max_bytes(&self) -> u64 {
        self.outbox.max_bytes.load(Ordering::Relaxed)
    }

    /// Encode `reports` for [`append`] in a transaction of another store submodule.
    pub(super) fn prepare_reports(&self, reports: &[NewReport]) -> Result<Prepared, Error> {
        Ok(Prepared {
            rows: encode(reports)?,
            max_bytes: self.max_bytes(),
        })
    }

    /// Wake the sender after a transaction that appended `seqs` committed.
    pub(super) fn reports_committed(&self, seqs: &[u64]) {
        if !seqs.is_empty() {
            self.outbox.appended.notify_one();
        }
    }

    /// [`Store::save_rollout`], with the reports the change makes appended to the outbox in the
    /// same transaction. Returns their sequence numbers.
    pub fn save_rollout_reporting<T: Serialize>(
        &self,
        service: &str,
        state: &T,
        events: &[EventRecord],
        reports: &[NewReport],
    ) -> Result<Vec<u64>, Error> {
        let prepared = self.prepare_reports(reports)?;
        let seqs = self.save_rollout_with(service, state, events, |transaction| {
            append(transaction, &prepared)
        })?;
        self.reports_committed(&seqs);
        Ok(seqs)
    }

    /// [`Store::save_analysis_run`], with the reports of its new measurements (and its verdict,
    /// when it ended) appended to the outbox in the same transaction.
    pub fn save_analysis_run_reporting<T: Serialize>(
        &self,
        run_id: &str,
        service: &str,
        run: &T,
        reports: &[NewReport],
    ) -> Result<Vec<u64>, Error> {
        let prepared = self.prepare_reports(reports)?;
        let seqs = self.save_analysis_run_with(run_id, service, run, |transaction| {
            append(transaction, &prepared)
        })?;
        self.reports_committed(&seqs);
        Ok(seqs)
    }

    /// Append reports in a transaction of their own (for reports that go with no other state).
    pub fn append_reports(&self, reports: &[NewReport]) -> Result<Vec<u64>, Error> {
        let prepared = self.prepare_reports(reports)?;
        let seqs = self.write("append reports".to_owned(), |transaction| {
            append(transaction, &prepared)
        })?;
        self.reports_committed(&seqs);
        Ok(seqs)
    }

    /// The next batch for `site`, covering `first..=last`: `first` is `from` when given (a
    /// receiver asked for a resend from there), else one after the acknowledged high-water mark.
    /// Numbers in the range without a row were dropped; the batch carries the drop counts not
    /// yet acknowledged. `None` when there is nothing to send.
    pub fn outbox_batch(
        &self,
        site: &str,
        from: Option<u64>,
        limits: BatchLimits,
    ) -> Result<Option<ReportBatch>, Error> {
        let limit = i64::try_from(limits.max_reports.max(1)).unwrap_or(i64::MAX);
        let found = self.read("read the report outbox".to_owned(), |connection| {
            let acked: u64 =
                connection.query_row("SELECT acked FROM outbox_state WHERE id = 1", [], |row| {
                    row.get(0)
                })?;
            let first = from.unwrap_or(acked + 1).max(1);
            let mut select = connection.prepare_cached(
                "SELECT seq, at, body FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = select.query(params![first, limit])?;
            let mut taken: Vec<(u64, u64, String)> = Vec::new();
            let mut bytes = 0;
            let mut full = false;
            while let Some(row) = rows.next()? {
                let body: String = row.get(2)?;
                if !taken.is_empty() && bytes + body.len() > limits.max_bytes {
                    full = true;
                    break;
                }
                bytes += body.len();
                taken.push((row.get(0)?, row.get(1)?, body));
            }
            let full = full || taken.len() as i64 == limit;
            // A batch that took every row also covers the numbers after them that were
            // dropped, so the receiver's high-water mark can pass them.
            let last = match taken.last() {
                Some((seq, _, _)) if full => *seq,
                _ => last_seq(connection)?,
            };
            let mut dropped = BTreeMap::new();
            let mut select = connection
                .prepare_cached("SELECT kind, pending FROM outbox_dropped WHERE pending > 0")?;
            for row in select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))? {
                let (kind, pending): (String, u64) = row?;
                dropped.insert(kind, pending);
            }
            Ok((first, last, taken, dropped))
        })?;
        let (first, last, taken, dropped) = found;
        if last < first {
            return Ok(None);
        }
        let reports = taken
            .into_iter()
            .map(|(seq, at, body)| {
                let body = serde_json::from_str(&body).map_err(|cause| Error::Decode {
                    what: format!("outbox report {seq}"),
                    cause,
                })?;
                Ok(Report {
                    seq,
                    at: Timestamp::from_millis(at),
                    body,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Some(ReportBatch {
            site: site.to_owned(),
            first,
            last,
            reports,
            dropped,
        }))
    }

    /// A receiver acknowledged everything up to `ack` in answer to a batch that carried the drop
    /// counts `dropped_sent`: delete the rows up to it, keep it as the high-water mark, and note
    /// the delivery. One below the mark already kept deletes nothing. Returns the mark now kept.
    ///
    /// An `ack` beyond the highest number this store ever gave out means the receiver knew this
    /// site before its store was reset (a new disk, a wiped state directory): it took the batch
    /// for a duplicate and kept nothing. The undelivered reports are then renumbered to follow
    /// the receiver's mark, in order, so the next batch is new to it; numbers still never repeat.
    pub fn outbox_acknowledge(
        &self,
        ack: u64,
        dropped_sent: &BTreeMap<String, u64>,
        now: Timestamp,
        result: &str,
    ) -> Result<u64, Error> {
        self.write(format!("acknowledge reports up to {ack}"), |transaction| {
            let last = last_seq(transaction)?;
            let acked: u64 = transaction.query_row(
                "SELECT acked FROM outbox_state WHERE id = 1",
                [],
                |row| row.get(0),
            )?;
            let note = |result: &str| {
                transaction.execute(
                    "UPDATE outbox_state SET last_attempt_at = ?1, last_success_at = ?1,
                         last_result = ?2, last_ok = 1 WHERE id = 1",
                    params![now.as_millis(), result],
                )
            };
            if ack > last && last > 0 {
                let delta = ack - acked;
                // Two steps, so no row takes a number another still holds mid-update.
                transaction.execute("UPDATE outbox SET seq = -(seq + ?1)", [delta])?;
                transaction.execute("UPDATE outbox SET seq = -seq", [])?;
                transaction.execute(
                    "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'outbox'",
                    [last + delta],
                )?;
                transaction.execute("UPDATE outbox_state SET acked = ?1 WHERE id = 1", [ack])?;
                note(&format!(
                    "the receiver already holds up to {ack}, more than this site ever numbered \
                     ({last}; was its state directory reset?): undelivered reports renumbered \
                     after {ack}"
                ))?;
                return Ok(ack);
            }
            let ack = ack.min(last);
            if ack > acked {
                let (count, freed): (u64, u64) = transaction.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE seq <= ?1",
                    [ack],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                transaction.execute("DELETE FROM outbox WHERE seq <= ?1", [ack])?;
                transaction.execute(
                    "UPDATE outbox_state SET acked = ?1, rows = rows - ?2, bytes = bytes - ?3
                     WHERE id = 1",
                    params![ack, count, freed],
                )?;
            }
            for (kind, sent) in dropped_sent {
                transaction.execute(
                    "UPDATE outbox_dropped SET pending = MAX(pending - ?2, 0) WHERE kind = ?1",
                    params![kind, sent],
                )?;
            }
            note(result)?;
            Ok(ack.max(acked))
        })
    }

    /// Note a delivery attempt that was not acknowledged (it is retried later).
    pub fn outbox_attempt_failed(&self, now: Timestamp, result: &str) -> Result<(), Error> {
        self.write("note a failed report delivery".to_owned(), |transaction| {
            transaction.execute(
                "UPDATE outbox_state SET last_attempt_at = ?1, last_result = ?2, last_ok = 0
                 WHERE id = 1",
                params![now.as_millis(), result],
            )?;
            Ok(())
        })
    }

    /// What the outbox holds and how delivery went.
    pub fn outbox_status(&self) -> Result<OutboxStatus, Error> {
        let max_bytes = self.max_bytes();
        self.read("read the report outbox's status".to_owned(), |connection| {
            let mut status = connection.query_row(
                "SELECT acked, rows, bytes, last_attempt_at, last_success_at, last_result, last_ok
                 FROM outbox_state WHERE id = 1",
                [],
                |row| {
                    Ok(OutboxStatus {
                        acked: row.get(0)?,
                        depth: row.get(1)?,
                        bytes: row.get(2)?,
                        last_attempt: row.get::<_, Option<u64>>(3)?.map(Timestamp::from_millis),
                        last_success: row.get::<_, Option<u64>>(4)?.map(Timestamp::from_millis),
                        last_result: row.get(5)?,
                        last_ok: row.get::<_, Option<bool>>(6)?.unwrap_or(false),
                        max_bytes,
                        ..OutboxStatus::default()
                    })
                },
            )?;
            status.oldest = connection
                .query_row(
                    "SELECT seq, at FROM outbox ORDER BY seq LIMIT 1",
                    [],
                    |row| Ok((row.get(0)?, Timestamp::from_millis(row.get(1)?))),
                )
                .optional()?;
            status.last_seq = last_seq(connection)?;
            let mut select = connection.prepare("SELECT kind, total FROM outbox_dropped")?;
            for row in select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))? {
                let (kind, total): (String, u64) = row?;
                status.dropped.insert(kind, total);
            }
            Ok(status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(value: &str) -> NewReport {
        NewReport {
            at: Timestamp::from_millis(1_000),
            body: ReportBody::Measurement {
                service: "web".to_owned(),
                run: "run-1".to_owned(),
                metric: "success-rate".to_owned(),
                phase: "Successful".to_owned(),
                value: Some(value.to_owned()),
                message: None,
            },
        }
    }

    fn event(kind: &str) -> NewReport {
        NewReport {
            at: Timestamp::from_millis(2_000),
            body: ReportBody::Rollout {
                service: "web".to_owned(),
                kind: kind.to_owned(),
                message: "m".to_owned(),
                phase: "Progressing".to_owned(),
                completion: None,
                stable: None,
                canary: None,
                serial: Some(3),
            },
        }
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_reports: 100,
        max_bytes: 1 << 20,
    };

    #[test]
    fn numbers_are_never_reused_after_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.outbox_batch("s", None, LIMITS).unwrap(), None);
        assert_eq!(
            store.append_reports(&[event("A"), event("B")]).unwrap(),
            [1, 2]
        );
        let batch = store.outbox_batch("s", None, LIMITS).unwrap().unwrap();
        assert_eq!((batch.first, batch.last, batch.reports.len()), (1, 2, 2));
        let now = Timestamp::from_millis(5);
        assert_eq!(
            store
                .outbox_acknowledge(2, &BTreeMap::new(), now, "ok")
                .unwrap(),
            2
        );
        assert_eq!(store.outbox_batch("s", None, LIMITS).unwrap(), None);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.append_reports(&[event("C")]).unwrap(), [3]);
        let status = store.outbox_status().unwrap();
        assert_eq!((status.depth, status.acked, status.last_seq), (1, 2, 3));
        assert_eq!(status.last_result.as_deref(), Some("ok"));
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_measurements_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let size = serde_json::to_string(&measurement("[1]").body)
            .unwrap()
            .len() as u64;
        let event_size = serde_json::to_string(&event("Started").body).unwrap().len() as u64;
        store.set_outbox_max_bytes(event_size + 2 * size);
        store.append_reports(&[event("Started")]).unwrap();
        for value in ["[1]", "[2]", "[3]", "[4]"] {
            store.append_reports(&[measurement(value)]).unwrap();
        }
        let status = store.outbox_status().unwrap();
        assert_eq!(status.bytes, event_size + 2 * size, "{status:?}");
        assert_eq!(status.dropped["measurement"], 2);
        let batch = store.outbox_batch("s", None, LIMITS).unwrap().unwrap();
        let seqs: Vec<u64> = batch.reports.iter().map(|report| report.seq).collect();
        assert_eq!(seqs, [1, 4, 5]);
        assert_eq!((batch.first, batch.last), (1, 5));
        assert_eq!(batch.dropped["measurement"], 2);
        store
            .outbox_acknowledge(5, &batch.dropped, Timestamp::from_millis(9), "ok")
            .unwrap();
        // Reported once: the next batch does not count them again.
        store.append_reports(&[event("Done")]).unwrap();
        let batch = store.outbox_batch("s", None, LIMITS).unwrap().unwrap();
        assert!(batch.dropped.is_empty());
        // Events are never dropped, even past the bound.
        store.set_outbox_max_bytes(1);
        store.append_reports(&[event("X"), event("Y")]).unwrap();
        assert_eq!(store.outbox_status().unwrap().depth, 3);
        assert_eq!(store.outbox_status().unwrap().dropped["measurement"], 2);
    }

    #[test]
    fn a_resend_from_below_the_mark_covers_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .append_reports(&[event("A"), event("B"), event("C")])
            .unwrap();
        store
            .outbox_acknowledge(2, &BTreeMap::new(), Timestamp::from_millis(1), "ok")
            .unwrap();
        let batch = store.outbox_batch("s", Some(1), LIMITS).unwrap().unwrap();
        assert_eq!((batch.first, batch.last, batch.reports.len()), (1, 3, 1));
    }

    #[test]
    fn a_receiver_ahead_of_a_reset_store_gets_the_reports_renumbered_after_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .append_reports(&[event("A"), event("B"), event("C")])
            .unwrap();
        store
            .outbox_acknowledge(1, &BTreeMap::new(), Timestamp::from_millis(1), "ok")
            .unwrap();
        // The receiver knew this site up to 1000 before its store was wiped.
        let kept = store
            .outbox_acknowledge(1000, &BTreeMap::new(), Timestamp::from_millis(2), "ok")
            .unwrap();
        assert_eq!(kept, 1000);
        let batch = store.outbox_batch("s", None, LIMITS).unwrap().unwrap();
        let seqs: Vec<u64> = batch.reports.iter().map(|report| report.seq).collect();
        assert_eq!(
            (batch.first, batch.last, seqs),
            (1001, 1002, vec![1001, 1002])
        );
        let kinds: Vec<&ReportBody> = batch.reports.iter().map(|report| &report.body).collect();
        assert_eq!(kinds, [&event("B").body, &event("C").body]);
        assert_eq!(store.append_reports(&[event("D")]).unwrap(), [1003]);
        let status = store.outbox_status().unwrap();
        assert!(status.last_result.unwrap().contains("renumbered"));
    }

    #[test]
    fn batches_respect_count_and_bytes_but_always_carry_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for value in ["[1]", "[2]", "[3]", "[4]", "[5]"] {
            store.append_reports(&[measurement(value)]).unwrap();
        }
        let by_count = BatchLimits {
            max_reports: 2,
            max_bytes: 1 << 20,
        };
        let batch = store.outbox_batch("s", None, by_count).unwrap().unwrap();
        assert_eq!((batch.first, batch.last), (1, 2));
        let tiny = BatchLimits {
            max_reports: 100,
            max_bytes: 1,
        };
        let batch = store.outbox_batch("s", Some(3), tiny).unwrap().unwrap();
        assert_eq!((batch.first, batch.last, batch.reports.len()), (3, 3, 1));
    }
}
