//! The `reports` table: every report the hub holds, exactly one row per (site, sequence).
//!
//! Owns that table and nothing else. Rows are only ever inserted (`INSERT OR IGNORE` on the
//! primary key, so a second copy can never appear, whatever the caller does) and read back in
//! sequence order; it never updates or deletes one.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::wire::report::Report;

/// The table's definition.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS reports (
    site TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    received INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (site, seq)
) WITHOUT ROWID;";

/// A report as the hub holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredReport {
    /// When the hub received it, on the hub's clock.
    pub received: Timestamp,
    /// The report as the site sent it.
    #[serde(flatten)]
    pub report: Report,
}

/// Insert `report` of `site`; returns whether it was new.
pub(super) fn insert(
    connection: &Connection,
    site: &str,
    report: &Report,
    received: Timestamp,
) -> rusqlite::Result<bool> {
    let body = serde_json::to_string(report)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
    let inserted = connection
        .prepare_cached(
            "INSERT OR IGNORE INTO reports (site, seq, at, kind, received, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            site,
            to_sql(report.seq),
            to_sql(report.at.as_millis()),
            report.body.kind(),
            to_sql(received.as_millis()),
            body
        ])?;
    Ok(inserted == 1)
}

/// The reports of `site` after sequence number `after`, at most `limit`, in order.
pub(super) fn after(
    connection: &Connection,
    site: &str,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<StoredReport>> {
    let mut statement = connection.prepare_cached(
        "SELECT received, body FROM reports WHERE site = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map(params![site, to_sql(after), limit], |row| {
        let received: i64 = row.get(0)?;
        let body: String = row.get(1)?;
        Ok((received, body))
    })?;
    let mut reports = Vec::new();
    for row in rows {
        let (received, body) = row?;
        let report: Report = serde_json::from_str(&body).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                Box::new(error),
            )
        })?;
        reports.push(StoredReport {
            received: Timestamp::from_millis(u64::try_from(received).unwrap_or(0)),
            report,
        });
    }
    Ok(reports)
}

/// How many reports of `site` are held, and the highest sequence number among them.
pub(super) fn count(connection: &Connection, site: &str) -> rusqlite::Result<(u64, Option<u64>)> {
    connection
        .query_row(
            "SELECT COUNT(*), MAX(seq) FROM reports WHERE site = ?1",
            params![site],
            |row| {
                let count: i64 = row.get(0)?;
                let max: Option<i64> = row.get(1)?;
                Ok((
                    u64::try_from(count).unwrap_or(0),
                    max.and_then(|max| u64::try_from(max).ok()),
                ))
            },
        )
        .optional()
        .map(|found| found.unwrap_or((0, None)))
}

/// SQLite integers are signed; sequence numbers and times beyond `i64::MAX` are clamped.
pub(super) fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
