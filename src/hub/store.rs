//! The hub's store: `hub.db` (SQLite, WAL, `synchronous=FULL`) in the hub's state directory.
//!
//! Owns the state directory (its lock file `hub.lock` and the database) and the one writer:
//! a thread that takes ingest and poll jobs from a queue, commits each group of them in one
//! transaction (group commit: one fsync for every batch waiting, not one each), and only then
//! answers each job. So an acknowledgement is never sent for a batch that is not durable, and
//! a `kill -9` at any instant loses nothing acknowledged. Each table has one owner submodule
//! (`reports`, `sites`, `plans`, `published`). Reads for the API go through a second connection and never wait for
//! the writer (WAL).
//!
//! It must never decide what a batch means beyond [`crate::wire::report::judge`] and
//! [`SiteSummary::accept`]; it never touches the agent's store.

mod plans;
mod published;
mod reports;
mod sites;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

pub use reports::StoredReport;

use super::summary::SiteSummary;
use crate::time::Timestamp;
use crate::wire::report::{judge, Judgement, ReportBatch, ReportBody};

/// The database file in the hub's state directory.
pub const HUB_DATABASE_FILE: &str = "hub.db";
/// The lock file that keeps two hubs off one state directory.
pub const HUB_LOCK_FILE: &str = "hub.lock";
/// The schema version this binary writes (`PRAGMA user_version`).
pub const HUB_SCHEMA_VERSION: i64 = 2;
/// How many jobs may wait for the writer; beyond that, HTTP ingest answers 503.
pub const QUEUE_CAPACITY: usize = 1024;
/// The most jobs committed in one transaction.
pub const MAX_GROUP: usize = 256;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{action} {}: {cause}", .path.display())]
    Io {
        /// What the store was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// Another hub holds the state directory.
    #[error("another edgeroll hub is using {}; stop it first", .0.display())]
    Locked(PathBuf),
    /// A database operation failed.
    #[error("{action}: {cause}")]
    Sqlite {
        /// What the store was doing.
        action: String,
        /// The cause.
        cause: rusqlite::Error,
    },
    /// The database was written by a newer edgeroll.
    #[error("{} has schema version {found}, newer than this edgeroll supports", .path.display())]
    TooNew {
        /// The version found.
        found: i64,
        /// The database file.
        path: PathBuf,
    },
    /// The writer could not commit the transaction that held the job.
    #[error("cannot commit to the hub's store: {0}")]
    Commit(String),
    /// The writer has stopped (the hub is shutting down) or its queue is full.
    #[error("the store is not accepting writes right now")]
    Unavailable,
}

fn sqlite(action: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let action = action.into();
    move |cause| StoreError::Sqlite { action, cause }
}

/// What the hub did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New reports were stored; `ack` is the new high-water mark.
    Accepted {
        /// The high-water mark.
        ack: u64,
        /// How many reports were new.
        new: u64,
    },
    /// Everything in it was held already.
    Duplicate {
        /// The high-water mark.
        ack: u64,
    },
    /// It starts after a gap and was not stored.
    Gap {
        /// The high-water mark.
        ack: u64,
        /// The sequence number the hub expects next.
        expected: u64,
    },
}

impl Outcome {
    /// The high-water mark to acknowledge.
    pub fn ack(self) -> u64 {
        match self {
            Outcome::Accepted { ack, .. }
            | Outcome::Duplicate { ack }
            | Outcome::Gap { ack, .. } => ack,
        }
    }
}

/// A batch queued for the writer ([`HubStore::submit`]).
#[derive(Debug)]
pub struct PendingIngest(oneshot::Receiver<Result<Outcome, String>>);

impl PendingIngest {
    /// Wait until the batch's outcome is durable.
    pub async fn outcome(self) -> Result<Outcome, StoreError> {
        match self.0.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(message)) => Err(StoreError::Commit(message)),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

/// A site's poll, kept in memory and written in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// The site.
    pub site: String,
    /// Its labels, when it sent them.
    pub labels: Option<BTreeMap<String, String>>,
    /// When it polled last.
    pub at: Timestamp,
}

enum Job {
    Ingest {
        batch: ReportBatch,
        received: Timestamp,
        over_gaps: bool,
        reply: oneshot::Sender<Result<Outcome, String>>,
    },
    Polls {
        polls: Vec<Poll>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Plan {
        name: String,
        run: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Published {
        documents: Vec<(u64, String)>,
        at: Timestamp,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The hub's store: a queue to the writer and a connection for reads.
#[derive(Clone)]
pub struct HubStore {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    // Held for as long as any handle lives; dropping the last releases the directory.
    _lock: Arc<nix::fcntl::Flock<std::fs::File>>,
}

impl std::fmt::Debug for HubStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStore").finish_non_exhaustive()
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(sqlite(format!("open {}", path.display())))?;
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite("set busy timeout"))?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite("set WAL mode"))?;
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite("set synchronous=FULL"))?;
    Ok(connection)
}

impl HubStore {
    /// Open (creating) the store in `state_dir` and start its writer thread.
    pub fn open(state_dir: &Path) -> Result<HubStore, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|cause| StoreError::Io {
            action: "create state directory",
            path: state_dir.to_path_buf(),
            cause,
        })?;
        let lock_path = state_dir.join(HUB_LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|cause| StoreError::Io {
                action: "open lock file",
                path: lock_path.clone(),
                cause,
            })?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| StoreError::Locked(state_dir.to_path_buf()))?;
        let path = state_dir.join(HUB_DATABASE_FILE);
        let mut writer = open_connection(&path)?;
        let version: i64 = writer
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite("read schema version"))?;
        if version > HUB_SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found: version,
                path,
            });
        }
        let transaction = writer
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite("begin schema transaction"))?;
        transaction
            .execute_batch(reports::SCHEMA)
            .and_then(|()| transaction.execute_batch(sites::SCHEMA))
            .and_then(|()| transaction.execute_batch(plans::SCHEMA))
            .and_then(|()| transaction.execute_batch(published::SCHEMA))
            .and_then(|()| transaction.pragma_update(None, "user_version", HUB_SCHEMA_VERSION))
            .map_err(sqlite("create tables"))?;
        transaction.commit().map_err(sqlite("commit schema"))?;
        let reader = open_connection(&path)?;
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("hub-store".to_owned())
            .spawn(move || write_loop(writer, queue))
            .map_err(|cause| StoreError::Io {
                action: "start the store's writer thread for",
                path: path.clone(),
                cause,
            })?;
        Ok(HubStore {
            jobs,
            reader: Arc::new(Mutex::new(reader)),
            writer: Arc::new(Mutex::new(Some(thread))),
            _lock: Arc::new(lock),
        })
    }

    /// Ingest a (valid) batch received at `received`; returns once the outcome is durable.
    /// With `wait = false` a full queue is refused at once ([`StoreError::Unavailable`]), for
    /// callers that can ask the sender to come back later (HTTP 503). With `over_gaps` a batch
    /// after a gap is stored anyway and the skipped numbers are counted as lost (MQTT, where the
    /// hub cannot ask the site to resend); without, it is refused ([`Outcome::Gap`]).
    pub async fn ingest(
        &self,
        batch: ReportBatch,
        received: Timestamp,
        wait: bool,
        over_gaps: bool,
    ) -> Result<Outcome, StoreError> {
        self.submit(batch, received, wait, over_gaps)
            .await?
            .outcome()
            .await
    }

    /// Queue a batch like [`HubStore::ingest`] without waiting for its commit. Jobs are
    /// committed in the order they were queued, so a caller that queues a site's batches in
    /// order and waits for the outcomes in that order sees them judged in order, while the
    /// writer commits many of them together.
    pub async fn submit(
        &self,
        batch: ReportBatch,
        received: Timestamp,
        wait: bool,
        over_gaps: bool,
    ) -> Result<PendingIngest, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Ingest {
            batch,
            received,
            over_gaps,
            reply,
        };
        if wait {
            self.jobs
                .send(job)
                .await
                .map_err(|_| StoreError::Unavailable)?;
        } else {
            self.jobs
                .try_send(job)
                .map_err(|_| StoreError::Unavailable)?;
        }
        Ok(PendingIngest(answer))
    }

    /// Record polls (last seen, labels); returns once they are durable.
    pub async fn record_polls(&self, polls: Vec<Poll>) -> Result<(), StoreError> {
        self.commit(|reply| Job::Polls { polls, reply }).await
    }

    /// Write the run of plan `name` (JSON the plan task owns); returns once it is durable.
    pub async fn save_plan(&self, name: String, run: String) -> Result<(), StoreError> {
        self.commit(|reply| Job::Plan { name, run, reply }).await
    }

    /// Record the serials of `documents` (serial, name) as served; returns once durable, so
    /// the caller can serve them after.
    pub async fn record_published(
        &self,
        documents: Vec<(u64, String)>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.commit(|reply| Job::Published {
            documents,
            at,
            reply,
        })
        .await
    }

    /// Queue the job `make` builds and wait until the writer has committed it.
    async fn commit(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Job,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Unavailable)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::Commit(message)),
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    /// Every serial the hub ever served.
    pub async fn published(&self) -> Result<std::collections::BTreeSet<u64>, StoreError> {
        self.read(|connection| published::all(connection).map_err(sqlite("read published serials")))
            .await
    }

    /// Every plan's run (name, JSON).
    pub async fn plans(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|connection| plans::all(connection).map_err(sqlite("read plans")))
            .await
    }

    /// Every site's summary.
    pub async fn sites(&self) -> Result<Vec<SiteSummary>, StoreError> {
        self.read(|connection| sites::all(connection).map_err(sqlite("read sites")))
            .await
    }

    /// One site's summary.
    pub async fn site(&self, site: String) -> Result<Option<SiteSummary>, StoreError> {
        self.read(move |connection| {
            sites::get(connection, &site).map_err(sqlite(format!("read site {site}")))
        })
        .await
    }

    /// Reports of `site` after `after`, at most `limit`.
    pub async fn reports(
        &self,
        site: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredReport>, StoreError> {
        self.read(move |connection| {
            reports::after(connection, &site, after, limit)
                .map_err(sqlite(format!("read reports of {site}")))
        })
        .await
    }

    /// How many reports of `site` are held and the highest sequence number among them.
    pub async fn report_count(&self, site: String) -> Result<(u64, Option<u64>), StoreError> {
        self.read(move |connection| {
            reports::count(connection, &site).map_err(sqlite(format!("count reports of {site}")))
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let connection = reader.lock().map_err(|_| StoreError::Unavailable)?;
            query(&connection)
        })
        .await
        .map_err(|_| StoreError::Unavailable)?
    }

    /// Stop accepting jobs and wait for the writer to finish the ones queued (blocking).
    pub fn close(self) {
        let HubStore { jobs, writer, .. } = self;
        drop(jobs);
        let handle = writer.lock().ok().and_then(|mut handle| handle.take());
        if let Some(handle) = handle {
            // The writer ends when every sender is gone; other clones may still hold one.
            if Arc::strong_count(&writer) == 1 {
                let _ = handle.join();
            }
        }
    }
}

/// The writer: one transaction per group of waiting jobs, answers after the commit.
fn write_loop(mut connection: Connection, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        match commit_group(&mut connection, &group) {
            Ok(outcomes) => {
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    match (job, outcome) {
                        (Job::Ingest { reply, .. }, Some(outcome)) => {
                            let _ = reply.send(Ok(outcome));
                        }
                        (
                            Job::Polls { reply, .. }
                            | Job::Plan { reply, .. }
                            | Job::Published { reply, .. },
                            _,
                        ) => {
                            let _ = reply.send(Ok(()));
                        }
                        (Job::Ingest { reply, .. }, None) => {
                            let _ = reply.send(Err("no outcome".to_owned()));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot commit to the hub's store");
                let message = error.to_string();
                for job in group {
                    match job {
                        Job::Ingest { reply, .. } => {
                            let _ = reply.send(Err(message.clone()));
                        }
                        Job::Polls { reply, .. }
                        | Job::Plan { reply, .. }
                        | Job::Published { reply, .. } => {
                            let _ = reply.send(Err(message.clone()));
                        }
                    }
                }
            }
        }
    }
}

fn commit_group(
    connection: &mut Connection,
    group: &[Job],
) -> rusqlite::Result<Vec<Option<Outcome>>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group {
        outcomes.push(match job {
            Job::Ingest {
                batch,
                received,
                over_gaps,
                ..
            } => Some(apply_batch(&transaction, batch, *received, *over_gaps)?),
            Job::Polls { polls, .. } => {
                for poll in polls {
                    // Nearly every poll changes only the poll time: one small row.
                    if poll.labels.is_none() && sites::exists(&transaction, &poll.site)? {
                        if poll.at.as_millis() > 0 {
                            sites::touch(&transaction, &poll.site, poll.at.as_millis())?;
                        }
                        continue;
                    }
                    let mut summary = sites::get(&transaction, &poll.site)?
                        .unwrap_or_else(|| SiteSummary::new(&poll.site));
                    // A site known only from its reports' labels has no poll time (0).
                    if poll.at.as_millis() > 0 {
                        summary.heard_from(poll.at);
                        summary.last_poll =
                            Some(summary.last_poll.map_or(poll.at, |at| at.max(poll.at)));
                    }
                    if let Some(labels) = &poll.labels {
                        summary.labels.clone_from(labels);
                    }
                    sites::put(&transaction, &summary)?;
                }
                None
            }
            Job::Plan { name, run, .. } => {
                plans::put(&transaction, name, run)?;
                None
            }
            Job::Published { documents, at, .. } => {
                for (serial, name) in documents {
                    published::record(&transaction, *serial, name, at.as_millis())?;
                }
                None
            }
        });
    }
    transaction.commit()?;
    Ok(outcomes)
}

/// Judge `batch` against the site's high-water mark and store what is new, with the summary
/// and the new high-water mark, in the caller's transaction.
fn apply_batch(
    connection: &Connection,
    batch: &ReportBatch,
    received: Timestamp,
    over_gaps: bool,
) -> rusqlite::Result<Outcome> {
    let mut summary =
        sites::get(connection, &batch.site)?.unwrap_or_else(|| SiteSummary::new(&batch.site));
    let high_water = summary.high_water;
    let mut judgement = judge(high_water, batch);
    if let (Judgement::Gap { expected }, true) = (judgement, over_gaps) {
        let lost = batch.first - expected;
        tracing::warn!(
            site = batch.site,
            from = expected,
            to = batch.first - 1,
            "reports were never received (a gap over MQTT); storing the batch after it"
        );
        summary.gaps += 1;
        summary.lost = summary.lost.saturating_add(lost);
        judgement = Judgement::Accept { from: batch.first };
    }
    let outcome = match judgement {
        Judgement::Duplicate => {
            summary.duplicates += 1;
            summary.heard_from(received);
            summary.last_report = Some(received);
            Outcome::Duplicate { ack: high_water }
        }
        Judgement::Gap { expected } => {
            summary.gaps += 1;
            summary.heard_from(received);
            summary.last_report = Some(received);
            Outcome::Gap {
                ack: high_water,
                expected,
            }
        }
        Judgement::Accept { from } => {
            let mut unknown = 0;
            for report in batch.reports.iter().filter(|report| report.seq >= from) {
                let serial = match &report.body {
                    ReportBody::Rollout { serial, .. } | ReportBody::Document { serial, .. } => {
                        *serial
                    }
                    _ => None,
                };
                if let Some(serial) = serial {
                    if !published::contains(connection, serial)? {
                        unknown += 1;
                        summary.last_unknown_serial = Some(serial);
                    }
                }
            }
            if unknown > 0 {
                tracing::warn!(
                    site = batch.site,
                    serial = summary.last_unknown_serial,
                    reports = unknown,
                    "reports claim a serial this hub never published; kept, counted, and not believed by plans"
                );
                summary.unknown_serials = summary.unknown_serials.saturating_add(unknown);
            }
            let mut new = 0;
            for report in batch.reports.iter().filter(|report| report.seq >= from) {
                if reports::insert(connection, &batch.site, report, received)? {
                    new += 1;
                }
            }
            summary.accept(batch, from, received);
            Outcome::Accepted {
                ack: summary.high_water,
                new,
            }
        }
    };
    sites::put(connection, &summary)?;
    Ok(outcome)
}
