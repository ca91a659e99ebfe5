//! The `sites` table: one row per site, with its high-water mark and its summary.
//!
//! Owns that table and `site_polls` (each site's last poll time, kept apart so a poll is a
//! one-column write), and nothing else; a summary read here carries its poll time merged in. The high-water mark is its own column (the number the
//! idempotency of ingest rests on); the summary is JSON of [`SiteSummary`]. Both are written
//! only inside the transaction that inserts the reports they describe (or, for poll times, in
//! the periodic flush), never on their own.

use rusqlite::{params, Connection, OptionalExtension};

use super::reports::to_sql;
use crate::hub::summary::SiteSummary;

/// The tables' definitions: the summaries, and the poll times apart from them (a poll, nearly
/// all of a fleet's traffic, then writes one small row instead of re-encoding a summary).
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sites (
    site TEXT PRIMARY KEY NOT NULL,
    high_water INTEGER NOT NULL,
    summary TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS site_polls (
    site TEXT PRIMARY KEY NOT NULL,
    at INTEGER NOT NULL
) WITHOUT ROWID;";

/// The summary of `site`, if the hub knows it; its high-water mark is the column's.
pub(super) fn get(connection: &Connection, site: &str) -> rusqlite::Result<Option<SiteSummary>> {
    let row = connection
        .prepare_cached(
            "SELECT s.high_water, s.summary, p.at FROM sites s
             LEFT JOIN site_polls p ON p.site = s.site WHERE s.site = ?1",
        )?
        .query_row(params![site], |row| {
            let high_water: i64 = row.get(0)?;
            let summary: String = row.get(1)?;
            let polled: Option<i64> = row.get(2)?;
            Ok((high_water, summary, polled))
        })
        .optional()?;
    row.map(|(high_water, summary, polled)| {
        decode(site, high_water, &summary).map(|summary| with_poll(summary, polled))
    })
    .transpose()
}

/// Whether the store has a summary of `site`.
pub(super) fn exists(connection: &Connection, site: &str) -> rusqlite::Result<bool> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM sites WHERE site = ?1")?
        .query_row(params![site], |_| Ok(()))
        .optional()?
        .is_some())
}

/// `site` polled at `at` (milliseconds): only the poll time is written.
pub(super) fn touch(connection: &Connection, site: &str, at: u64) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO site_polls (site, at) VALUES (?1, ?2)
             ON CONFLICT (site) DO UPDATE SET at = max(at, excluded.at)",
        )?
        .execute(params![site, to_sql(at)])?;
    Ok(())
}

/// The summary with the poll time of `site_polls` merged in.
fn with_poll(mut summary: SiteSummary, polled: Option<i64>) -> SiteSummary {
    if let Some(at) = polled
        .and_then(|at| u64::try_from(at).ok())
        .filter(|at| *at > 0)
    {
        let at = crate::time::Timestamp::from_millis(at);
        summary.last_poll = Some(summary.last_poll.map_or(at, |held| held.max(at)));
        summary.heard_from(at);
    }
    summary
}

/// Every site's summary, by name.
pub(super) fn all(connection: &Connection) -> rusqlite::Result<Vec<SiteSummary>> {
    let mut statement = connection.prepare_cached(
        "SELECT s.site, s.high_water, s.summary, p.at FROM sites s
         LEFT JOIN site_polls p ON p.site = s.site ORDER BY s.site",
    )?;
    let rows = statement.query_map([], |row| {
        let site: String = row.get(0)?;
        let high_water: i64 = row.get(1)?;
        let summary: String = row.get(2)?;
        let polled: Option<i64> = row.get(3)?;
        Ok((site, high_water, summary, polled))
    })?;
    let mut sites = Vec::new();
    for row in rows {
        let (site, high_water, summary, polled) = row?;
        sites.push(with_poll(decode(&site, high_water, &summary)?, polled));
    }
    Ok(sites)
}

/// Write `summary` (and its high-water mark).
pub(super) fn put(connection: &Connection, summary: &SiteSummary) -> rusqlite::Result<()> {
    let text = serde_json::to_string(summary)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
    connection
        .prepare_cached(
            "INSERT INTO sites (site, high_water, summary) VALUES (?1, ?2, ?3)
             ON CONFLICT (site) DO UPDATE SET high_water = excluded.high_water,
             summary = excluded.summary",
        )?
        .execute(params![summary.site, to_sql(summary.high_water), text])?;
    Ok(())
}

fn decode(site: &str, high_water: i64, text: &str) -> rusqlite::Result<SiteSummary> {
    let mut summary: SiteSummary = serde_json::from_str(text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(error))
    })?;
    summary.site = site.to_owned();
    summary.high_water = u64::try_from(high_water).unwrap_or(0);
    Ok(summary)
}
