//! The `published` table: every serial the hub has ever served, with the document's name.
//!
//! Owns that table and nothing else. A serial is recorded before the document is served (the
//! catalog publishes only after the write is durable), so a site's report of a serial the hub
//! never published can be told from a real one, counted, and never believed by a plan.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension};

/// The table's definition.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS published (
    serial INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    first_at INTEGER NOT NULL
);";

/// Record `serial` as served under `name` at `at` (milliseconds), if it is new.
pub(super) fn record(
    connection: &Connection,
    serial: u64,
    name: &str,
    at: u64,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO published (serial, name, first_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![serial as i64, name, at as i64])?;
    Ok(())
}

/// Whether the hub ever served `serial`.
pub(super) fn contains(connection: &Connection, serial: u64) -> rusqlite::Result<bool> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM published WHERE serial = ?1")?
        .query_row(params![serial as i64], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Every serial the hub ever served.
pub(super) fn all(connection: &Connection) -> rusqlite::Result<BTreeSet<u64>> {
    let mut statement = connection.prepare_cached("SELECT serial FROM published")?;
    let rows = statement.query_map([], |row| row.get::<_, i64>(0))?;
    rows.map(|row| row.map(|serial| serial as u64)).collect()
}
