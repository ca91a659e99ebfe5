//! STUB (helper C replaces this file and adds `runtime/`): workloads and their supervision.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::spec::Template;
use crate::time::Timestamp;

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

/// Handle to the running supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {}

impl SupervisorHandle {
    /// Replace the desired instances of `service`.
    pub fn set_desired(&self, service: &str, desired: Vec<DesiredRevision>) {
        let _ = (service, desired);
    }

    /// Stop the instances of every service not named.
    pub fn retain_services(&self, services: Vec<String>) {
        let _ = services;
    }

    /// Stop every instance of every service and wait for them (used by `demo`, not by `run`).
    pub async fn stop_all(&self) {}
}

/// Start the supervisor: adopt journaled instances that are still healthy, then keep each
/// service's instances as desired until `shutdown` (which leaves workloads running).
pub fn start(
    config: SupervisorConfig,
    journal: Arc<dyn InstanceJournal>,
    updates: mpsc::Sender<InstancesChanged>,
    shutdown: CancellationToken,
) -> SupervisorHandle {
    let _ = (config, journal, updates, shutdown);
    SupervisorHandle {}
}
