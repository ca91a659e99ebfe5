//! The trust table: what the site believes about its desired document, durably.
//!
//! Owns the tables `trust` (one row: the highest serial ever accepted and the digest of its
//! bytes, the last verified document's bytes and signature, the clock floor, and the source's
//! status) and `document_refusals` (the documents the site refused, newest kept).
//!
//! Invariants:
//! - An acceptance (serial, digest, bytes, signature, floor, status) commits in one transaction,
//!   and the caller applies nothing before it returns: a crash can never leave a site running a
//!   document whose serial it has not recorded, so a replay after a restart is still refused.
//! - A refusal (its row and the source's status) commits in one transaction.
//! - The clock floor only moves forward, whatever the caller passes.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::outbox::NewReport;
use super::{Error, Store};
use crate::time::Timestamp;
use crate::trust::{Accepted, TrustState};

/// How many refusals the store keeps; older ones are deleted as new ones arrive.
pub const REFUSALS_KEPT: usize = 100;

/// The status of the desired source, as `edgeroll get` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceRecord {
    /// The source URL (`{site}` already replaced).
    pub url: String,
    /// When the source was last tried.
    pub last_attempt: Option<Timestamp>,
    /// What the last attempt gave, e.g. `applied serial 5`, `not modified`, `refused (serial)`,
    /// `error: …`.
    pub last_result: String,
    /// When the source last answered with a verified (or unchanged) document.
    pub last_success: Option<Timestamp>,
    /// The ETag of the last verified answer, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// The key that signed the running document.
    pub key_id: Option<String>,
    /// The running document's expiry.
    pub expires: Option<Timestamp>,
    /// Whether the running document has expired (it keeps running; no new rollout starts).
    pub stale: bool,
}

/// Everything the trust table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustRecord {
    /// The highest accepted serial with its digest, and the clock floor.
    pub state: TrustState,
    /// The last verified document's bytes (applied at start-up with no network).
    pub document: Option<Vec<u8>>,
    /// Its signature text, when it had one.
    pub signature: Option<String>,
    /// The source's status.
    pub source: SourceRecord,
}

/// One refused document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRecord {
    /// When.
    pub at: Timestamp,
    /// The rule's name (`signature`, `serial`, …).
    pub rule: String,
    /// Why, in words.
    pub message: String,
}

fn encode_source(source: &SourceRecord) -> Result<String, Error> {
    serde_json::to_string(source).map_err(|cause| Error::Encode {
        what: "desired source status".to_owned(),
        cause,
    })
}

fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// The trust table's row.
    pub fn load_trust(&self) -> Result<TrustRecord, Error> {
        type Row = (
            Option<i64>,
            Option<String>,
            Option<Vec<u8>>,
            Option<String>,
            i64,
            String,
        );
        let row: Option<Row> = self.read("load the trust table".to_owned(), |connection| {
            connection
                .query_row(
                    "SELECT highest_serial, digest, document, signature, clock_floor, source
                     FROM trust WHERE id = 1",
                    [],
                    |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                            row.get(5)?,
                        ))
                    },
                )
                .optional()
        })?;
        let Some((serial, digest, document, signature, floor, source)) = row else {
            return Ok(TrustRecord::default());
        };
        let source: SourceRecord =
            serde_json::from_str(&source).map_err(|cause| Error::Decode {
                what: "desired source status".to_owned(),
                cause,
            })?;
        let accepted = match (serial, digest) {
            (Some(serial), Some(digest)) => Some((u64::try_from(serial).unwrap_or(0), digest)),
            _ => None,
        };
        Ok(TrustRecord {
            state: TrustState {
                accepted,
                clock_floor: Timestamp::from_millis(u64::try_from(floor).unwrap_or(0)),
            },
            document,
            signature,
            source,
        })
    }

    /// Record an accepted document in one transaction: its serial and digest, its bytes and
    /// signature, the clock floor raised to `floor`, the source's status and `reports` (the
    /// document's report, for the outbox). Returns once the commit is durable; only then may the
    /// document be applied.
    pub fn accept_document(
        &self,
        accepted: &Accepted,
        bytes: &[u8],
        signature: Option<&str>,
        floor: Timestamp,
        source: &SourceRecord,
        reports: &[NewReport],
    ) -> Result<(), Error> {
        let source = encode_source(source)?;
        let serial = i64::try_from(accepted.serial).unwrap_or(i64::MAX);
        let prepared = self.prepare_reports(reports)?;
        let seqs = self.write(
            format!(
                "record accepted desired document serial {}",
                accepted.serial
            ),
            |transaction| {
                transaction.execute(
                    "UPDATE trust SET highest_serial = ?1, digest = ?2, document = ?3,
                         signature = ?4, clock_floor = MAX(clock_floor, ?5), source = ?6
                     WHERE id = 1",
                    params![
                        serial,
                        accepted.digest,
                        bytes,
                        signature,
                        millis(floor),
                        source
                    ],
                )?;
                super::outbox::append(transaction, &prepared)
            },
        )?;
        self.reports_committed(&seqs);
        Ok(())
    }

    /// Record a refused document in one transaction: its row, the source's status and `reports`
    /// (the `DocumentRefused` report, for the outbox).
    pub fn refuse_document(
        &self,
        refusal: &RefusalRecord,
        source: &SourceRecord,
        reports: &[NewReport],
    ) -> Result<(), Error> {
        let source = encode_source(source)?;
        let prepared = self.prepare_reports(reports)?;
        let seqs = self.write(
            format!("record refused desired document ({})", refusal.rule),
            |transaction| {
                transaction.execute(
                    "INSERT INTO document_refusals (at, rule, message) VALUES (?1, ?2, ?3)",
                    params![millis(refusal.at), refusal.rule, refusal.message],
                )?;
                transaction.execute(
                    "DELETE FROM document_refusals WHERE seq <= (SELECT MAX(seq) FROM document_refusals) - ?1",
                    params![REFUSALS_KEPT as i64],
                )?;
                transaction.execute(
                    "UPDATE trust SET source = ?1 WHERE id = 1",
                    params![source],
                )?;
                super::outbox::append(transaction, &prepared)
            },
        )?;
        self.reports_committed(&seqs);
        Ok(())
    }

    /// Record the source's status (an attempt that brought no new document), raising the clock
    /// floor to `floor`.
    pub fn save_source(&self, floor: Timestamp, source: &SourceRecord) -> Result<(), Error> {
        let source = encode_source(source)?;
        self.write(
            "record the desired source status".to_owned(),
            |transaction| {
                transaction.execute(
                    "UPDATE trust SET clock_floor = MAX(clock_floor, ?1), source = ?2 WHERE id = 1",
                    params![millis(floor), source],
                )?;
                Ok(())
            },
        )
    }

    /// The `limit` most recent refusals, oldest first.
    pub fn recent_refusals(&self, limit: usize) -> Result<Vec<RefusalRecord>, Error> {
        let mut rows = self.read("load document refusals".to_owned(), |connection| {
            let mut statement = connection.prepare(
                "SELECT at, rule, message FROM document_refusals ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = statement
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                    let at: i64 = row.get(0)?;
                    Ok(RefusalRecord {
                        at: Timestamp::from_millis(u64::try_from(at).unwrap_or(0)),
                        rule: row.get(1)?,
                        message: row.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.reverse();
        Ok(rows)
    }
}
