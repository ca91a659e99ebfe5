//! The embedded store: the agent's durable state in SQLite under the state directory.
//!
//! Owns `state_dir` (default `/var/lib/edgeroll`): the single-agent lock (`agent.lock`, see
//! `store/lock.rs`) and the database `state.db` (WAL, `synchronous=FULL`, versioned by `store/schema.rs`).
//! It keeps rollout states with their events, instance records, analysis runs and the report
//! outbox (`store/outbox.rs`, appended in the same transaction as the change it reports), each as JSON
//! with a record schema number, so that `sqlite3 state.db` can inspect a gateway in the field and
//! later releases can convert old rows.
//!
//! Invariants:
//! - It is the only module that touches the state directory.
//! - A rollout state and the events it produced commit in one transaction, and a call returns only
//!   after the commit is durable: the rollout core's rule is "persist, then act".
//! - It never silently drops state: a row that no longer deserialises is an error naming it.
//! - It never blocks on the lock of another agent (a held lock is an immediate refusal) and never
//!   holds its connection mutex longer than one statement batch, and never across an `.await`.

mod images;
mod lock;
mod outbox;
mod schema;
pub mod trust;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::runtime::{InstanceJournal, InstanceRecord};
use crate::time::Timestamp;

pub use lock::LOCK_FILE_NAME;
pub use outbox::{BatchLimits, NewReport, OutboxStatus, DEFAULT_OUTBOX_MAX_BYTES};
pub use schema::SCHEMA_VERSION;

/// Name of the database file inside the state directory.
pub const DATABASE_FILE_NAME: &str = "state.db";

/// Mode of a state directory the store creates (owner all, group read and enter).
pub const STATE_DIR_MODE: u32 = 0o750;

/// How long a statement waits for a lock held by another connection (e.g. an operator's
/// `sqlite3` session) before failing with a transient error.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many events the store keeps per service; older ones are deleted as new ones arrive.
pub const EVENTS_KEPT_PER_SERVICE: usize = 1_000;

/// How many analysis runs the store keeps per service; older ones are deleted as new ones arrive.
pub const ANALYSIS_RUNS_KEPT_PER_SERVICE: usize = 20;

/// Record schema of the rollout states this binary writes (see [`migrate_rollout`]).
pub const ROLLOUT_RECORD_SCHEMA: u32 = 1;

/// Record schema of the analysis runs this binary writes.
pub const ANALYSIS_RUN_RECORD_SCHEMA: u32 = 1;

/// Record schema of the instance records this binary writes.
pub const INSTANCE_RECORD_SCHEMA: u32 = 1;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another agent holds the state directory.
    #[error(
        "another edgeroll agent{} is using {}; stop it first",
        .pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        .state_dir.display()
    )]
    Locked {
        /// The state directory.
        state_dir: PathBuf,
        /// The holder's pid, when it had written it.
        pid: Option<u32>,
    },
    /// A file system operation on the state directory failed.
    #[error("{action} {}: {cause}", .path.display())]
    Io {
        /// What the store was doing, e.g. `create state directory`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A database operation failed.
    #[error("{action}: {cause}")]
    Sqlite {
        /// What the store was doing, naming the object, e.g. `save rollout of web`.
        action: String,
        /// The cause.
        cause: rusqlite::Error,
    },
    /// The database was written by a newer edgeroll.
    #[error(
        "state database {} has schema version {found}, newer than this edgeroll supports \
         ({supported}); run the newer edgeroll or restore a matching backup",
        .path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this binary understands.
        supported: u32,
    },
    /// A record could not be turned into JSON.
    #[error("encode {what}: {cause}")]
    Encode {
        /// The record, e.g. `rollout state of web`.
        what: String,
        /// The cause.
        cause: serde_json::Error,
    },
    /// A stored record could not be read back.
    #[error("decode {what}: {cause}")]
    Decode {
        /// The record, e.g. `rollout state of web`.
        what: String,
        /// The cause.
        cause: serde_json::Error,
    },
    /// A stored record has a schema this binary cannot convert.
    #[error("migrate {what} from record schema {schema}: {reason}")]
    Migrate {
        /// The record, e.g. `rollout state of web`.
        what: String,
        /// The record schema found in the row.
        schema: u32,
        /// Why it cannot be converted.
        reason: String,
    },
    /// A thread panicked while it held the connection, so its state is unknown.
    #[error("use the state database: a thread panicked while holding the connection")]
    Poisoned,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether retrying the same operation later may succeed (the database was busy or locked
    /// by another connection).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Sqlite { cause, .. } => matches!(
                cause.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

/// One entry of a service's event history (and, later, the report outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EventRecord {
    /// Service.
    pub service: String,
    /// When.
    pub at: Timestamp,
    /// Short kind, e.g. `RolloutAborted`.
    pub kind: String,
    /// Human message.
    pub message: String,
}

/// Convert a persisted rollout state from record schema `schema` to the current one
/// ([`ROLLOUT_RECORD_SCHEMA`]). Schema 1 is the current one, so this is the identity for now;
/// when the state type changes, bump the constant and add an arm that rewrites the JSON.
pub fn migrate_rollout(schema: u32, state: Value) -> Result<Value, String> {
    match schema {
        ROLLOUT_RECORD_SCHEMA => Ok(state),
        newer if newer > ROLLOUT_RECORD_SCHEMA => Err(format!(
            "written by a newer edgeroll (this one understands up to {ROLLOUT_RECORD_SCHEMA})"
        )),
        older => Err(format!("no conversion from record schema {older} is known")),
    }
}

/// Check that a record of a kind without conversions yet has the schema this binary writes.
fn check_record_schema(schema: u32, current: u32, what: &str) -> Result<(), Error> {
    if schema == current {
        Ok(())
    } else {
        Err(Error::Migrate {
            what: what.to_owned(),
            schema,
            reason: format!("this edgeroll reads record schema {current} only"),
        })
    }
}

/// The store. `Send + Sync`: share it as an `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    /// The one connection. A std mutex is right here: every use is a short synchronous
    /// transaction, never held across an `.await`. Declared before `_lock` so that the
    /// connection closes before the directory lock is released.
    connection: Mutex<Connection>,
    /// The single-agent lock; released when the store is dropped or the process dies.
    _lock: lock::AgentLock,
    /// The state directory.
    state_dir: PathBuf,
    /// The report outbox's bound and the sender's wake-up (see `store/outbox.rs`).
    outbox: outbox::OutboxHandle,
}

impl Store {
    /// Open (create, migrate) the store in `state_dir`, taking the single-agent lock.
    ///
    /// Fails with [`Error::Locked`] at once if another agent (in this or another process) has the
    /// directory open, and with [`Error::SchemaTooNew`] if a newer edgeroll wrote the database.
    pub fn open(state_dir: &Path) -> Result<Store, Error> {
        create_state_dir(state_dir)?;
        let lock = lock::acquire(state_dir)?;
        let path = state_dir.join(DATABASE_FILE_NAME);
        let mut connection = open_connection(&path)?;
        schema::migrate(&mut connection, &path)?;
        Ok(Store {
            connection: Mutex::new(connection),
            _lock: lock,
            state_dir: state_dir.to_path_buf(),
            outbox: outbox::OutboxHandle::default(),
        })
    }

    /// The state directory this store holds.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Commit a service's rollout state and the events it produced, in one transaction.
    ///
    /// Each event is filed under its own `service` field. Returns once the commit is durable.
    pub fn save_rollout<T: Serialize>(
        &self,
        service: &str,
        state: &T,
        events: &[EventRecord],
    ) -> Result<(), Error> {
        self.save_rollout_with(service, state, events, |_| Ok(()))
    }

    /// [`Store::save_rollout`] with `more` run in the same transaction (the outbox's rows).
    fn save_rollout_with<T: Serialize, R>(
        &self,
        service: &str,
        state: &T,
        events: &[EventRecord],
        more: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, Error> {
        let state_json = serde_json::to_string(state).map_err(|cause| Error::Encode {
            what: format!("rollout state of {service}"),
            cause,
        })?;
        self.write(format!("save rollout of {service}"), |transaction| {
            transaction.execute(
                "INSERT INTO rollouts (service, schema, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (service) DO UPDATE SET schema = excluded.schema, state = excluded.state",
                params![service, ROLLOUT_RECORD_SCHEMA, state_json],
            )?;
            insert_events(transaction, events)?;
            more(transaction)
        })
    }

    /// Every persisted rollout state, by service name, converted to the current record schema.
    ///
    /// A row that cannot be converted or deserialised is an error naming its service: the agent
    /// must not start as if a service had no rollout in progress.
    pub fn load_rollouts<T: DeserializeOwned>(&self) -> Result<Vec<(String, T)>, Error> {
        let rows: Vec<(String, u32, String)> =
            self.read("load rollouts".to_owned(), |connection| {
                let mut statement = connection
                    .prepare("SELECT service, schema, state FROM rollouts ORDER BY service")?;
                let rows = statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })?;
        rows.into_iter()
            .map(|(service, schema, state_json)| {
                let what = format!("rollout state of {service}");
                let value: Value =
                    serde_json::from_str(&state_json).map_err(|cause| Error::Decode {
                        what: what.clone(),
                        cause,
                    })?;
                let value = migrate_rollout(schema, value).map_err(|reason| Error::Migrate {
                    what: what.clone(),
                    schema,
                    reason,
                })?;
                let state = serde_json::from_value(value).map_err(|cause| Error::Decode {
                    what: what.clone(),
                    cause,
                })?;
                Ok((service, state))
            })
            .collect()
    }

    /// Forget a service: its rollout state, its events and its analysis runs, in one
    /// transaction. Instance records stay: they belong to the runtime until it removes them.
    pub fn delete_rollout(&self, service: &str) -> Result<(), Error> {
        self.write(format!("delete rollout of {service}"), |transaction| {
            transaction.execute("DELETE FROM rollouts WHERE service = ?1", [service])?;
            transaction.execute("DELETE FROM events WHERE service = ?1", [service])?;
            transaction.execute("DELETE FROM analysis_runs WHERE service = ?1", [service])?;
            Ok(())
        })
    }

    /// Commit an analysis run. Saving an existing `run_id` again replaces it in place (a run is
    /// saved as its measurements arrive); only the latest
    /// [`ANALYSIS_RUNS_KEPT_PER_SERVICE`] runs of a service are kept.
    pub fn save_analysis_run<T: Serialize>(
        &self,
        run_id: &str,
        service: &str,
        run: &T,
    ) -> Result<(), Error> {
        self.save_analysis_run_with(run_id, service, run, |_| Ok(()))
    }

    /// [`Store::save_analysis_run`] with `more` run in the same transaction (the outbox's rows).
    fn save_analysis_run_with<T: Serialize, R>(
        &self,
        run_id: &str,
        service: &str,
        run: &T,
        more: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, Error> {
        let run_json = serde_json::to_string(run).map_err(|cause| Error::Encode {
            what: format!("analysis run {run_id} of {service}"),
            cause,
        })?;
        self.write(
            format!("save analysis run {run_id} of {service}"),
            |transaction| {
                transaction.execute(
                    "INSERT INTO analysis_runs (id, service, schema, run) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET
                         service = excluded.service, schema = excluded.schema, run = excluded.run",
                    params![run_id, service, ANALYSIS_RUN_RECORD_SCHEMA, run_json],
                )?;
                transaction.execute(
                    "DELETE FROM analysis_runs WHERE service = ?1 AND seq < (
                         SELECT seq FROM analysis_runs WHERE service = ?1
                         ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                    params![service, ANALYSIS_RUNS_KEPT_PER_SERVICE - 1],
                )?;
                more(transaction)
            },
        )
    }

    /// Every persisted analysis run of `service`, oldest first.
    pub fn load_analysis_runs<T: DeserializeOwned>(&self, service: &str) -> Result<Vec<T>, Error> {
        let rows: Vec<(String, u32, String)> =
            self.read(format!("load analysis runs of {service}"), |connection| {
                let mut statement = connection.prepare(
                    "SELECT id, schema, run FROM analysis_runs WHERE service = ?1 ORDER BY seq",
                )?;
                let rows = statement
                    .query_map([service], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })?;
        rows.into_iter()
            .map(|(run_id, schema, run_json)| {
                let what = format!("analysis run {run_id} of {service}");
                check_record_schema(schema, ANALYSIS_RUN_RECORD_SCHEMA, &what)?;
                serde_json::from_str(&run_json).map_err(|cause| Error::Decode { what, cause })
            })
            .collect()
    }

    /// The latest `limit` events of `service`, oldest first.
    pub fn recent_events(&self, service: &str, limit: usize) -> Result<Vec<EventRecord>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut events = self.read(format!("read events of {service}"), |connection| {
            let mut statement = connection.prepare(
                "SELECT service, at, kind, message FROM events WHERE service = ?1
                 ORDER BY seq DESC LIMIT ?2",
            )?;
            let events = statement
                .query_map(params![service, limit], |row| {
                    Ok(EventRecord {
                        service: row.get(0)?,
                        at: Timestamp::from_millis(row.get(1)?),
                        kind: row.get(2)?,
                        message: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(events)
        })?;
        events.reverse();
        Ok(events)
    }

    /// Run `body` in an immediate (write-locking) transaction and commit it.
    fn write<R>(
        &self,
        action: String,
        body: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, Error> {
        let mut connection = self.connection()?;
        let run = |connection: &mut Connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let result = body(&transaction)?;
            transaction.commit()?;
            Ok(result)
        };
        run(&mut connection).map_err(|cause| Error::Sqlite { action, cause })
    }

    /// Run the reads in `body` on the connection.
    fn read<R>(
        &self,
        action: String,
        body: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, Error> {
        let connection = self.connection()?;
        body(&connection).map_err(|cause| Error::Sqlite { action, cause })
    }

    /// The connection, for one short critical section.
    fn connection(&self) -> Result<MutexGuard<'_, Connection>, Error> {
        self.connection.lock().map_err(|_| Error::Poisoned)
    }
}

/// Append `events` and trim each touched service's history to the last
/// [`EVENTS_KEPT_PER_SERVICE`].
fn insert_events(transaction: &Transaction<'_>, events: &[EventRecord]) -> rusqlite::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut insert = transaction.prepare_cached(
        "INSERT INTO events (service, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for event in events {
        insert.execute(params![
            event.service,
            event.at.as_millis(),
            event.kind,
            event.message
        ])?;
    }
    let services: BTreeSet<&str> = events.iter().map(|event| event.service.as_str()).collect();
    let mut trim = transaction.prepare_cached(
        "DELETE FROM events WHERE service = ?1 AND seq < (
             SELECT seq FROM events WHERE service = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
    )?;
    for service in services {
        trim.execute(params![service, EVENTS_KEPT_PER_SERVICE - 1])?;
    }
    Ok(())
}

/// Create the state directory (mode [`STATE_DIR_MODE`]) if it is missing.
fn create_state_dir(state_dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(STATE_DIR_MODE)
        .create(state_dir)
        .map_err(|cause| Error::Io {
            action: "create state directory",
            path: state_dir.to_path_buf(),
            cause,
        })
}

/// Open `path` with the settings every connection of the store uses.
fn open_connection(path: &Path) -> Result<Connection, Error> {
    let sqlite_error = |action: &str| {
        let action = format!("{action} {}", path.display());
        move |cause: rusqlite::Error| Error::Sqlite { action, cause }
    };
    let connection = Connection::open(path).map_err(sqlite_error("open state database"))?;
    connection
        .busy_timeout(DEFAULT_BUSY_TIMEOUT)
        .map_err(sqlite_error("set busy timeout on"))?;
    // WAL lets an operator read the database with `sqlite3` while the agent writes, and with
    // `synchronous=FULL` every commit is on disk before the call returns, even after power loss.
    let journal_mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite_error("enable write-ahead logging on"))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Other(format!(
            "enable write-ahead logging on {}: the database stayed in {journal_mode} mode",
            path.display()
        )));
    }
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_error("set synchronous=FULL on"))?;
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite_error("enable foreign keys on"))?;
    Ok(connection)
}

// === impl InstanceJournal ===

impl InstanceJournal for Store {
    fn save_instance(&self, record: &InstanceRecord) -> Result<(), String> {
        let record_json = serde_json::to_string(record)
            .map_err(|cause| Error::Encode {
                what: format!("instance record {}", record.id),
                cause,
            })
            .map_err(|error| error.to_string())?;
        self.write(format!("save instance record {}", record.id), |transaction| {
            transaction.execute(
                "INSERT INTO instances (id, service, schema, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET
                     service = excluded.service, schema = excluded.schema, record = excluded.record",
                params![record.id, record.service, INSTANCE_RECORD_SCHEMA, record_json],
            )?;
            Ok(())
        })
        .map_err(|error| error.to_string())
    }

    fn remove_instance(&self, id: &str) -> Result<(), String> {
        self.write(format!("remove instance record {id}"), |transaction| {
            transaction.execute("DELETE FROM instances WHERE id = ?1", [id])?;
            Ok(())
        })
        .map_err(|error| error.to_string())
    }

    fn load_instances(&self) -> Result<Vec<InstanceRecord>, String> {
        let rows: Vec<(String, u32, String)> = self
            .read("load instance records".to_owned(), |connection| {
                let mut statement =
                    connection.prepare("SELECT id, schema, record FROM instances ORDER BY id")?;
                let rows = statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .map_err(|error| error.to_string())?;
        rows.into_iter()
            .map(|(id, schema, record_json)| {
                let what = format!("instance record {id}");
                check_record_schema(schema, INSTANCE_RECORD_SCHEMA, &what)?;
                serde_json::from_str(&record_json).map_err(|cause| Error::Decode { what, cause })
            })
            .collect::<Result<Vec<_>, Error>>()
            .map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_locked_are_transient() {
        let busy = Error::Sqlite {
            action: "save rollout of web".to_owned(),
            cause: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        };
        let locked = Error::Sqlite {
            action: "save rollout of web".to_owned(),
            cause: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_LOCKED),
                None,
            ),
        };
        let full = Error::Sqlite {
            action: "save rollout of web".to_owned(),
            cause: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                None,
            ),
        };
        assert!(busy.is_transient());
        assert!(locked.is_transient());
        assert!(!full.is_transient());
        assert!(!Error::Poisoned.is_transient());
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
    }

    #[test]
    fn unknown_rollout_schemas_are_refused() {
        let state = serde_json::json!({"phase": "Promoted"});
        assert_eq!(migrate_rollout(1, state.clone()), Ok(state.clone()));
        assert!(migrate_rollout(2, state.clone()).is_err());
        assert!(migrate_rollout(0, state).is_err());
    }
}
