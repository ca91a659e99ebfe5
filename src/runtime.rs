//! Workloads and their supervision: the [`Runtime`] trait, its process backend, and the supervisor
//! that keeps each service's instances as desired.
//!
//! This module is the only one that starts or stops workloads. The supervisor ([`start`]) owns every
//! instance: it starts and stops them through a [`Runtime`], probes their readiness, restarts the
//! ones that die with an exponential backoff, bounds their log files, and reports every change of a
//! service's instances as an [`InstancesChanged`]. Every instance is journaled (through
//! [`InstanceJournal`]) right after it is started and forgotten only once it is gone, so a restarted
//! agent adopts the workloads that are still running instead of restarting them.
//!
//! It never decides *which* revisions run or how many: that comes from the shell through
//! [`SupervisorHandle::set_desired`]. It never stops an adopted instance before the shell has said
//! what it wants for that service, and shutting the agent down never stops a workload.

mod probe;
pub mod process;
mod supervisor;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::spec::Template;
use crate::time::Timestamp;

pub use process::ProcessRuntime;
pub use supervisor::SupervisorHandle;

/// A started instance, as persisted so that a restarted agent can adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Unique id, e.g. `web-r3-1a2b3c`.
    pub id: String,
    /// Service it belongs to.
    pub service: String,
    /// Revision number it runs.
    pub revision: u64,
    /// What it runs (version, command, …).
    pub template: Template,
    /// Loopback address it serves on.
    pub address: SocketAddr,
    /// Process id (process runtime).
    pub pid: u32,
    /// Process start time in clock ticks since boot (from /proc), to recognise pid reuse.
    pub start_ticks: u64,
    /// When it was started.
    pub started_at: Timestamp,
    /// Its log file.
    pub log_path: PathBuf,
}

/// What the shell and the API see of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Unique id.
    pub id: String,
    /// Revision number it runs.
    pub revision: u64,
    /// Version label.
    pub version: String,
    /// Loopback address it serves on.
    pub address: SocketAddr,
    /// Whether its readiness check passes.
    pub ready: bool,
    /// How many times it was restarted after dying.
    pub restarts: u32,
}

/// All instances of one service changed (started, became ready, died, stopped).
///
/// `instances` lists every instance that is not being stopped: an instance leaves the list as soon
/// as its stop begins, so no traffic is sent to it any more. An instance that died and waits for
/// its restart stays in the list with `ready == false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancesChanged {
    /// The service.
    pub service: String,
    /// Every instance of the service now.
    pub instances: Vec<InstanceStatus>,
}

/// How many instances of one revision a service should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRevision {
    /// Revision number.
    pub revision: u64,
    /// What its instances run.
    pub template: Template,
    /// How many instances.
    pub count: u32,
}

/// Where the supervisor persists instance records (implemented by `store::Store`).
pub trait InstanceJournal: Send + Sync {
    /// Insert or replace a record.
    fn save_instance(&self, record: &InstanceRecord) -> Result<(), String>;
    /// Forget a record.
    fn remove_instance(&self, id: &str) -> Result<(), String>;
    /// Every record, for adoption at start.
    fn load_instances(&self) -> Result<Vec<InstanceRecord>, String>;
}

/// Settings of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Directory for per-instance log files.
    pub log_dir: PathBuf,
    /// Upper bound of one log file, bytes.
    pub log_max_bytes: u64,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

/// Why the runtime could not do what the supervisor asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template's command has no program.
    #[error("start instance {id}: the template's command is empty")]
    EmptyCommand {
        /// The instance.
        id: String,
    },
    /// No free loopback port could be found.
    #[error("allocate a loopback port: {source}")]
    Port {
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The log file (or its directory) could not be created or rotated.
    #[error("prepare log file {path}: {source}")]
    LogFile {
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("start instance {id} ({program}): {source}")]
    Spawn {
        /// The instance.
        id: String,
        /// The program of its command.
        program: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The process table could not be read.
    #[error("read the process state of pid {pid}: {source}")]
    ProcessState {
        /// The process.
        pid: u32,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A signal could not be sent.
    #[error("signal instance {id} (pid {pid}): {source}")]
    Signal {
        /// The instance.
        id: String,
        /// Its process.
        pid: u32,
        /// Why it failed.
        source: nix::Error,
    },
    /// The instance was still running after SIGKILL and its deadline.
    #[error("stop instance {id}: still running {waited:?} after SIGKILL")]
    StopTimedOut {
        /// The instance.
        id: String,
        /// How long it was waited for after SIGKILL.
        waited: Duration,
    },
}

impl Error {
    /// Whether trying again later may succeed (a retry decision, not a diagnosis).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::EmptyCommand { .. } => false,
            Error::Spawn { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            Error::Port { .. }
            | Error::LogFile { .. }
            | Error::ProcessState { .. }
            | Error::Signal { .. }
            | Error::StopTimedOut { .. } => true,
        }
    }
}

/// What the supervisor asks a runtime to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    /// The new instance's unique id.
    pub id: String,
    /// Its service.
    pub service: String,
    /// The revision it runs.
    pub revision: u64,
    /// What it runs.
    pub template: Template,
}

/// What a runtime found when asked to adopt a persisted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The same workload is still running; the runtime now watches it.
    Adopted,
    /// The workload is gone.
    Gone,
    /// Something else runs under the recorded identity (e.g. a reused pid); it must not be touched.
    Foreign,
}

/// A way to run instances: plain processes now, Docker and containerd later.
///
/// Every method takes the instance's [`InstanceRecord`], so a runtime needs no memory of its own
/// to act on an instance it adopted after a restart of the agent. Futures are `Send` so that the
/// supervisor can drive each instance from its own task.
pub trait Runtime: Send + Sync + 'static {
    /// Start an instance and return its record; the caller journals it right away.
    fn start(
        &self,
        request: &StartRequest,
    ) -> impl Future<Output = Result<InstanceRecord, Error>> + Send;

    /// Ask the instance to stop, kill it after `grace`, and return once it is gone.
    fn stop(
        &self,
        record: &InstanceRecord,
        grace: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Decide whether a persisted record still describes the same running workload and, if so,
    /// take it over.
    fn adopt(
        &self,
        record: &InstanceRecord,
    ) -> impl Future<Output = Result<Adoption, Error>> + Send;

    /// Resolve once the instance has exited (whoever stopped it). Dropping the future is harmless.
    fn wait_exited(&self, record: &InstanceRecord) -> impl Future<Output = ()> + Send;

    /// Keep the instance's logs within the runtime's bound; called every few seconds.
    fn bound_logs(&self, record: &InstanceRecord)
        -> impl Future<Output = Result<(), Error>> + Send;

    /// Forget an instance that is gone (stopped or dead).
    fn release(&self, record: &InstanceRecord);
}

/// Start the supervisor with the process runtime: adopt journaled instances that are still
/// running, then keep each service's instances as desired until `shutdown` (which leaves
/// workloads running).
pub fn start(
    config: SupervisorConfig,
    journal: Arc<dyn InstanceJournal>,
    updates: mpsc::Sender<InstancesChanged>,
    shutdown: CancellationToken,
) -> SupervisorHandle {
    let runtime = ProcessRuntime::new(config.log_dir.clone(), config.log_max_bytes);
    start_with(runtime, config, journal, updates, shutdown)
}

/// [`start`] with any [`Runtime`] (another backend, or a fake in tests).
pub fn start_with<R: Runtime>(
    runtime: R,
    config: SupervisorConfig,
    journal: Arc<dyn InstanceJournal>,
    updates: mpsc::Sender<InstancesChanged>,
    shutdown: CancellationToken,
) -> SupervisorHandle {
    supervisor::spawn(Arc::new(runtime), config, journal, updates, shutdown)
}
