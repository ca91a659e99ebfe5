//! The `plans` table: one row per plan, holding its current run (the validated spec it runs
//! and its state) as JSON that the plan task writes and reads.
//!
//! Owns that table and nothing else. A row is written only through the writer, in a
//! transaction of its own group, and the plan task publishes a run's documents only after that
//! commit: so what sites are served is always what a restart recovers.

use rusqlite::{params, Connection};

/// The table's definition.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS plans (
    name TEXT PRIMARY KEY NOT NULL,
    run TEXT NOT NULL
) WITHOUT ROWID;";

/// Every plan's run, by name.
pub(super) fn all(connection: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = connection.prepare_cached("SELECT name, run FROM plans ORDER BY name")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// Write the run of plan `name`.
pub(super) fn put(connection: &Connection, name: &str, run: &str) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO plans (name, run) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET run = excluded.run",
        )?
        .execute(params![name, run])?;
    Ok(())
}
