//! STUB (helper A replaces this file): the agent configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Diagnostic;

/// Default config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgeroll/edgeroll.toml";
/// Default socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/edgeroll/edgeroll.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/edgeroll";

/// A validated agent configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Site name.
    pub site: String,
    /// Site labels (cohort, region, …).
    pub labels: BTreeMap<String, String>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Local API socket.
    pub socket: PathBuf,
    /// Which runtime runs instances.
    pub runtime: RuntimeKind,
    /// Where the desired document comes from.
    pub desired: DesiredSource,
    /// How often the desired source is checked.
    pub poll_interval: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// How long an instance gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Upper bound of one instance's log file, bytes.
    pub log_max_bytes: u64,
}

/// `runtime.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Child processes.
    Process,
}

/// `desired.source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredSource {
    /// No source configured: nothing runs until one is.
    None,
    /// A local file, re-read when it changes and on SIGHUP.
    File(PathBuf),
}

/// Load `path` and then `<dir of path>/edgeroll.d/*.toml` in name order, merged.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let _ = path;
    Err(vec![])
}
