//! The database schema and its migrations.
//!
//! Owns the table layout of `state.db`. `PRAGMA user_version` is the number of migrations
//! applied; each migration runs in its own transaction together with the version bump, so a crash
//! leaves the database at a whole version. Migrations are append-only: never edit one that has
//! shipped, add the next one instead. A database newer than this binary is refused, never
//! downgraded.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::Error;

/// The ordered migrations; migration `i` takes the database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1: the first layout.
    "
    CREATE TABLE rollouts (
        service TEXT PRIMARY KEY NOT NULL,
        schema  INTEGER NOT NULL,
        state   TEXT NOT NULL
    );
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        service TEXT NOT NULL,
        at      INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_by_service ON events (service, seq);
    CREATE TABLE instances (
        id      TEXT PRIMARY KEY NOT NULL,
        service TEXT NOT NULL,
        schema  INTEGER NOT NULL,
        record  TEXT NOT NULL
    );
    CREATE TABLE analysis_runs (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        id      TEXT NOT NULL UNIQUE,
        service TEXT NOT NULL,
        schema  INTEGER NOT NULL,
        run     TEXT NOT NULL
    );
    CREATE INDEX analysis_runs_by_service ON analysis_runs (service, seq);
    ",
    // Version 2: the report outbox (owned by `store/outbox.rs`). AUTOINCREMENT, so a sequence
    // number is never given out twice, even after its row is deleted.
    "
    CREATE TABLE outbox (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        at   INTEGER NOT NULL,
        kind TEXT NOT NULL,
        size INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX outbox_by_kind ON outbox (kind, seq);
    CREATE TABLE outbox_state (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        acked           INTEGER NOT NULL,
        rows            INTEGER NOT NULL,
        bytes           INTEGER NOT NULL,
        last_attempt_at INTEGER,
        last_success_at INTEGER,
        last_result     TEXT,
        last_ok         INTEGER
    );
    INSERT INTO outbox_state (id, acked, rows, bytes) VALUES (1, 0, 0, 0);
    CREATE TABLE outbox_dropped (
        kind    TEXT PRIMARY KEY NOT NULL,
        pending INTEGER NOT NULL,
        total   INTEGER NOT NULL
    );
    ",
    // Version 3 (the pull; the outbox's version 2 comes before it): what the site trusts
    // about its desired document (one row, owned by `store::trust`) and the documents it
    // refused.
    "
    CREATE TABLE trust (
        id             INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
        highest_serial INTEGER,
        digest         TEXT,
        document       BLOB,
        signature      TEXT,
        clock_floor    INTEGER NOT NULL DEFAULT 0,
        source         TEXT NOT NULL DEFAULT '{}'
    );
    INSERT INTO trust (id) VALUES (1);
    CREATE TABLE document_refusals (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        rule    TEXT NOT NULL,
        message TEXT NOT NULL
    );
    ",
    // Version 4: the images this agent put on the site (owned by `store::images`), so that it
    // only ever removes its own.
    "
    CREATE TABLE images (
        image       TEXT PRIMARY KEY NOT NULL,
        recorded_at INTEGER NOT NULL
    );
    ",
];

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Bring the database at `path` up to [`SCHEMA_VERSION`], refusing a newer one.
pub(crate) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), Error> {
    let sqlite_error = |action: &str| {
        let action = format!("{action} of {}", path.display());
        move |cause: rusqlite::Error| Error::Sqlite { action, cause }
    };
    let found: u32 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite_error("read schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let target = index as u32 + 1;
        let action = format!("apply schema migration {target}");
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&action))?;
        transaction
            .execute_batch(migration)
            .map_err(sqlite_error(&action))?;
        // `user_version` lives in the database header, which SQLite writes as part of the
        // transaction, so the layout and its version number commit together.
        transaction
            .pragma_update(None, "user_version", target)
            .map_err(sqlite_error(&action))?;
        transaction.commit().map_err(sqlite_error(&action))?;
    }
    Ok(())
}
