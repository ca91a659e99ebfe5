//! The `sites` table: one row per site, with its high-water mark and its summary.
//!
//! Owns that table and nothing else. The high-water mark is its own column (the number the
//! idempotency of ingest rests on); the summary is JSON of [`SiteSummary`]. Both are written
//! only inside the transaction that inserts the reports they describe (or, for poll times, in
//! the periodic flush), never on their own.

use rusqlite::{params, Connection, OptionalExtension};

use super::reports::to_sql;
use crate::hub::summary::SiteSummary;

/// The table's definition.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sites (
    site TEXT PRIMARY KEY NOT NULL,
    high_water INTEGER NOT NULL,
    summary TEXT NOT NULL
) WITHOUT ROWID;";

/// The summary of `site`, if the hub knows it; its high-water mark is the column's.
pub(super) fn get(connection: &Connection, site: &str) -> rusqlite::Result<Option<SiteSummary>> {
    let row = connection
        .prepare_cached("SELECT high_water, summary FROM sites WHERE site = ?1")?
        .query_row(params![site], |row| {
            let high_water: i64 = row.get(0)?;
            let summary: String = row.get(1)?;
            Ok((high_water, summary))
        })
        .optional()?;
    row.map(|(high_water, summary)| decode(site, high_water, &summary))
        .transpose()
}

/// Every site's summary, by name.
pub(super) fn all(connection: &Connection) -> rusqlite::Result<Vec<SiteSummary>> {
    let mut statement =
        connection.prepare_cached("SELECT site, high_water, summary FROM sites ORDER BY site")?;
    let rows = statement.query_map([], |row| {
        let site: String = row.get(0)?;
        let high_water: i64 = row.get(1)?;
        let summary: String = row.get(2)?;
        Ok((site, high_water, summary))
    })?;
    let mut sites = Vec::new();
    for row in rows {
        let (site, high_water, summary) = row?;
        sites.push(decode(&site, high_water, &summary)?);
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
