//! The agent configuration: `/etc/edgeroll/edgeroll.toml`, then `edgeroll.d/*.toml` next to it
//! merged in name order, validated into a [`Config`].
//!
//! Later files override earlier ones key by key, and tables merge deeply, so a drop-in can
//! change one setting without repeating the rest. Every problem in every file is reported at
//! once, naming the file the bad value came from. Relative paths are resolved against the
//! directory of the file that set them. This module reads its files when asked to and never
//! at any other time (startup and reload); it never writes anything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Diagnostic;
use crate::spec::parse::parse_tree;
use crate::spec::parse::reader::{Reader, Table};
use crate::spec::parse::tree::{Format, Node, Source, Value};

mod desired;
mod reports;

use self::desired::read_desired;
pub use self::desired::{
    DesiredSource, DesiredTrust, DEFAULT_MAX_DOCUMENT_BYTES, DEFAULT_PULL_TIMEOUT,
};
use self::reports::read_reports;
pub use self::reports::{
    ReportsConfig, ReportsUrl, DEFAULT_BATCH_MAX_BYTES, DEFAULT_BATCH_MAX_REPORTS,
    DEFAULT_REPORT_TIMEOUT, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
};

/// Default config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgeroll/edgeroll.toml";
/// Default socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/edgeroll/edgeroll.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/edgeroll";
/// The drop-in directory, next to the main config file.
pub const DROP_IN_DIR: &str = "edgeroll.d";
/// Where the default site name comes from.
pub const HOSTNAME_FILE: &str = "/etc/hostname";
/// The site name when neither the config nor [`HOSTNAME_FILE`] gives one.
pub const DEFAULT_SITE: &str = "localhost";
/// Default `agent.socket_mode`: root and the `edgeroll` group may connect.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Default `agent.worker_threads`: the proxy keeps serving while the event loop commits state.
pub const DEFAULT_WORKER_THREADS: usize = 2;
/// Upper bound of `agent.worker_threads`.
pub const MAX_WORKER_THREADS: i64 = 64;
/// Default `agent.shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default `runtime.stop_grace`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Default `runtime.log_max_bytes`: 1 MiB per instance.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 1024 * 1024;
/// Default `desired.poll_interval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// The largest config file read, in bytes; a real one is a few hundred bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

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
    /// Permission bits of the socket (default 0660; 0666 lets every local user read status).
    pub socket_mode: u32,
    /// Threads that run the proxies, the API and the event loop (default 2).
    pub worker_threads: usize,
    /// Which runtime runs instances.
    pub runtime: RuntimeKind,
    /// Where the desired document comes from.
    pub desired: DesiredSource,
    /// How often the desired source is checked.
    pub poll_interval: Duration,
    /// What the site trusts of its desired source, and how it reaches an `https://` one.
    pub desired_trust: DesiredTrust,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// How long an instance gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Upper bound of one instance's log file, bytes.
    pub log_max_bytes: u64,
    /// `metrics.listen`: where the agent serves its own `/metrics`; `None` (the default) serves
    /// nothing.
    pub metrics_listen: Option<SocketAddr>,
    /// Where reports go (`[reports]`); `None`: the site reports nothing and keeps no outbox.
    pub reports: Option<ReportsConfig>,
    /// The files that were merged into this configuration, in merge order (the main file, then
    /// the drop-ins); `validate` shows them and a reload re-reads the same set of places.
    pub files: Vec<PathBuf>,
}

/// `runtime.kind` and where its engine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Child processes.
    Process,
    /// Docker Engine, or podman's Docker-compatible API.
    Docker {
        /// `runtime.socket`, e.g. `unix:///run/podman/podman.sock`; `None` takes what bollard
        /// finds (`DOCKER_HOST`, then `/var/run/docker.sock`).
        socket: Option<String>,
    },
    /// containerd's gRPC API (also the containerd inside k3s).
    Containerd {
        /// `runtime.socket` (default `/run/containerd/containerd.sock`).
        socket: PathBuf,
        /// `runtime.namespace` (default `edgeroll`; never `k8s.io`).
        namespace: String,
    },
}

impl RuntimeKind {
    /// `process`, `docker` or `containerd`.
    pub fn name(&self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker { .. } => "docker",
            RuntimeKind::Containerd { .. } => "containerd",
        }
    }
}

/// Default `runtime.socket` of containerd.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// Default `runtime.namespace` of containerd.
pub const DEFAULT_CONTAINERD_NAMESPACE: &str = "edgeroll";

/// Load `path` and then `<dir of path>/edgeroll.d/*.toml` in name order, merged.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let mut files = vec![(
        path.to_path_buf(),
        read_file(path).map_err(|message| {
            vec![diagnostic_at_start(
                path,
                format!("cannot read config: {message}"),
            )]
        })?,
    )];
    let mut diagnostics = Vec::new();
    let drop_in_dir = path
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(DROP_IN_DIR);
    match drop_in_files(&drop_in_dir) {
        Ok(drop_ins) => {
            for drop_in in drop_ins {
                match read_file(&drop_in) {
                    Ok(text) => files.push((drop_in, text)),
                    Err(message) => diagnostics.push(diagnostic_at_start(
                        &drop_in,
                        format!("cannot read config: {message}"),
                    )),
                }
            }
        }
        Err(message) => diagnostics.push(diagnostic_at_start(&drop_in_dir, message)),
    }

    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|(path, text)| Source::new(path, text, Format::Toml))
        .collect();
    let mut merged: Option<Value> = None;
    for (index, source) in sources.iter().enumerate() {
        match parse_tree(source, index) {
            Ok(tree) => match &mut merged {
                Some(base) => merge(base, tree),
                None => merged = Some(tree),
            },
            Err(errors) => diagnostics.extend(errors),
        }
    }
    // Values from a file with syntax errors are unknown, so validating the rest would report
    // problems that are not there (a missing override, say).
    let Some(merged) = merged.filter(|_| diagnostics.is_empty()) else {
        return Err(diagnostics);
    };
    let mut reader = Reader::new(sources);
    let config = read_config(
        &mut reader,
        &merged,
        files.iter().map(|(path, _)| path.clone()),
    );
    match config {
        Some(config) if !reader.has_errors() => Ok(config),
        _ => Err(reader.into_diagnostics()),
    }
}

/// The site name the machine has: the first line of [`HOSTNAME_FILE`], else [`DEFAULT_SITE`].
pub fn default_site() -> String {
    std::fs::read_to_string(HOSTNAME_FILE)
        .ok()
        .and_then(|text| text.lines().next().map(|line| line.trim().to_string()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_SITE.to_string())
}

fn diagnostic_at_start(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message,
    }
}

fn read_file(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if metadata.len() > MAX_CONFIG_FILE_BYTES {
        return Err(format!(
            "the file is {} bytes, more than the limit of {MAX_CONFIG_FILE_BYTES}",
            metadata.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|error| error.to_string())
}

/// The `*.toml` files of the drop-in directory, sorted by name; none when it does not exist.
fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("cannot read config directory: {error}")),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| format!("cannot read config directory: {error}"))?;
        let path = entry.path();
        // Package managers leave `*.dpkg-old` and editors `*.swp` here; only `*.toml` counts.
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Merge `overlay` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut Value, overlay: Value) {
    match (&mut base.node, overlay.node) {
        (Node::Table(base_entries), Node::Table(overlay_entries)) => {
            for overlay_entry in overlay_entries {
                match base_entries
                    .iter_mut()
                    .find(|entry| entry.key == overlay_entry.key)
                {
                    Some(base_entry) => {
                        if matches!(
                            (&base_entry.value.node, &overlay_entry.value.node),
                            (Node::Table(_), Node::Table(_))
                        ) {
                            merge(&mut base_entry.value, overlay_entry.value);
                        } else {
                            *base_entry = overlay_entry;
                        }
                    }
                    None => base_entries.push(overlay_entry),
                }
            }
        }
        (_, node) => {
            *base = Value {
                span: overlay.span,
                source: overlay.source,
                node,
            };
        }
    }
}

fn read_config(
    reader: &mut Reader<'_>,
    root: &Value,
    files: impl Iterator<Item = PathBuf>,
) -> Option<Config> {
    let mut table = reader.table("", root)?;
    let agent = section(reader, &mut table, "agent", read_agent);
    let runtime = section(reader, &mut table, "runtime", read_runtime);
    let desired = section(reader, &mut table, "desired", read_desired);
    let metrics_listen = section(reader, &mut table, "metrics", read_metrics);
    let reports = match table.get("reports") {
        None => Some(None),
        Some((path, value)) => reader.table(&path, value).and_then(|mut reports| {
            let config = read_reports(reader, &mut reports);
            reports.finish(reader);
            config.map(Some)
        }),
    };
    table.finish(reader);
    let (site, labels, state_dir, socket, socket_mode, shutdown_grace, worker_threads) = agent?;
    let (runtime, stop_grace, log_max_bytes) = runtime?;
    let (desired, poll_interval, desired_trust) = desired?;
    let metrics_listen = metrics_listen?;
    let reports = reports?;
    Some(Config {
        site,
        labels,
        state_dir,
        socket,
        socket_mode,
        worker_threads,
        runtime,
        desired,
        poll_interval,
        desired_trust,
        shutdown_grace,
        stop_grace,
        log_max_bytes,
        metrics_listen,
        reports,
        files: files.collect(),
    })
}

/// Read the table `key` with `read`; an absent table reads as an empty one, so every default
/// comes from one place.
fn section<T>(
    reader: &mut Reader<'_>,
    root: &mut Table<'_>,
    key: &'static str,
    read: impl FnOnce(&mut Reader<'_>, Option<&mut Table<'_>>) -> Option<T>,
) -> Option<T> {
    match root.get(key) {
        None => read(reader, None),
        Some((path, value)) => {
            let mut table = reader.table(&path, value)?;
            let result = read(reader, Some(&mut table));
            table.finish(reader);
            result
        }
    }
}

/// `(path, value)` of `key`, when the section exists and holds it.
fn field<'v>(table: &mut Option<&mut Table<'v>>, key: &'static str) -> Option<(String, &'v Value)> {
    table.as_mut().and_then(|table| table.get(key))
}

type Agent = (
    String,
    BTreeMap<String, String>,
    PathBuf,
    PathBuf,
    u32,
    Duration,
    usize,
);

fn read_agent(reader: &mut Reader<'_>, mut table: Option<&mut Table<'_>>) -> Option<Agent> {
    let site = match field(&mut table, "site") {
        Some((path, value)) => read_site(reader, &path, value),
        None => Some(default_site()),
    };
    let labels = match field(&mut table, "labels") {
        Some((path, value)) => reader.string_map(&path, value),
        None => Some(BTreeMap::new()),
    };
    let state_dir = match field(&mut table, "state_dir") {
        Some((path, value)) => read_path(reader, &path, value),
        None => Some(PathBuf::from(DEFAULT_STATE_DIR)),
    };
    let socket = match field(&mut table, "socket") {
        Some((path, value)) => read_path(reader, &path, value),
        None => Some(PathBuf::from(DEFAULT_SOCKET_PATH)),
    };
    let socket_mode = match field(&mut table, "socket_mode") {
        Some((path, value)) => read_socket_mode(reader, &path, value),
        None => Some(DEFAULT_SOCKET_MODE),
    };
    let shutdown_grace = match field(&mut table, "shutdown_grace") {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(DEFAULT_SHUTDOWN_GRACE),
    };
    let worker_threads = match field(&mut table, "worker_threads") {
        Some((path, value)) => reader.int::<usize>(&path, value, 1..=MAX_WORKER_THREADS),
        None => Some(DEFAULT_WORKER_THREADS),
    };
    Some((
        site?,
        labels?,
        state_dir?,
        socket?,
        socket_mode?,
        shutdown_grace?,
        worker_threads?,
    ))
}

/// `socket_mode`: `"0660"` (the default: root and group `edgeroll`) or `"0666"` (every local user
/// may read status; actions are still limited by peer credentials), or `"0600"`.
fn read_socket_mode(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<u32> {
    let text = reader.string(path, value)?;
    match text {
        "0600" => Some(0o600),
        "0660" => Some(0o660),
        "0666" => Some(0o666),
        _ => {
            reader.error(
                value,
                path,
                format!(
                    "{text:?} is not a supported socket mode; use \"0660\", \"0666\" or \"0600\""
                ),
            );
            None
        }
    }
}

fn read_site(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<String> {
    let site = reader.non_empty_string(path, value)?;
    // The site name goes into reports and logs as one token.
    if site.chars().any(|c| c.is_whitespace() || c.is_control()) {
        reader.error(
            value,
            path,
            format!("{site:?} must not contain spaces or control characters"),
        );
        return None;
    }
    Some(site.to_string())
}

fn read_runtime(
    reader: &mut Reader<'_>,
    mut table: Option<&mut Table<'_>>,
) -> Option<(RuntimeKind, Duration, u64)> {
    let kind_name = match field(&mut table, "kind") {
        Some((path, value)) => reader.string(&path, value).and_then(|kind| match kind {
            "process" | "docker" | "containerd" => Some(kind.to_string()),
            _ => {
                reader.error(
                    value,
                    &path,
                    format!("unknown runtime `{kind}`, expected process, docker or containerd"),
                );
                None
            }
        }),
        None => Some("process".to_string()),
    };
    let socket = field(&mut table, "socket").map(|(path, value)| {
        (
            path.clone(),
            value,
            reader.non_empty_string(&path, value).map(str::to_string),
        )
    });
    let namespace = field(&mut table, "namespace").map(|(path, value)| {
        (
            path.clone(),
            value,
            reader.non_empty_string(&path, value).map(str::to_string),
        )
    });
    let kind = kind_name.and_then(|kind_name| match kind_name.as_str() {
        "docker" => {
            if let Some((path, value, _)) = &namespace {
                reader.error(value, path, "only the containerd runtime has namespaces");
                return None;
            }
            match socket {
                Some((_, _, socket)) => socket.map(|socket| RuntimeKind::Docker { socket: Some(socket) }),
                None => Some(RuntimeKind::Docker { socket: None }),
            }
        }
        "containerd" => {
            let socket = match socket {
                Some((path, value, socket)) => {
                    let socket = socket?;
                    let socket = socket.strip_prefix("unix://").unwrap_or(&socket).to_string();
                    if !socket.starts_with('/') {
                        reader.error(value, &path, format!("{socket:?} must be the absolute path of containerd's socket"));
                        return None;
                    }
                    PathBuf::from(socket)
                }
                None => PathBuf::from(DEFAULT_CONTAINERD_SOCKET),
            };
            let namespace = match namespace {
                Some((path, value, namespace)) => {
                    let namespace = namespace?;
                    if namespace == "k8s.io" {
                        reader.error(value, &path, "k8s.io belongs to Kubernetes (kubelet stops containers and deletes images there that it did not create): keep the default `edgeroll`");
                        return None;
                    }
                    if !namespace.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                        reader.error(value, &path, format!("{namespace:?} is not a containerd namespace (letters, digits, `.`, `_`, `-`)"));
                        return None;
                    }
                    namespace
                }
                None => DEFAULT_CONTAINERD_NAMESPACE.to_string(),
            };
            Some(RuntimeKind::Containerd { socket, namespace })
        }
        _ => {
            for (path, value, _) in [socket, namespace].into_iter().flatten() {
                reader.error(value, &path, "the process runtime has no engine: set `kind = \"docker\"` or `\"containerd\"`, or remove this");
            }
            Some(RuntimeKind::Process)
        }
    });
    let stop_grace = match field(&mut table, "stop_grace") {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(DEFAULT_STOP_GRACE),
    };
    let log_max_bytes = match field(&mut table, "log_max_bytes") {
        Some((path, value)) => reader.int::<u64>(&path, value, 1..=i64::MAX),
        None => Some(DEFAULT_LOG_MAX_BYTES),
    };
    Some((kind?, stop_grace?, log_max_bytes?))
}

fn read_metrics(
    reader: &mut Reader<'_>,
    mut table: Option<&mut Table<'_>>,
) -> Option<Option<SocketAddr>> {
    let Some((path, value)) = field(&mut table, "listen") else {
        return Some(None);
    };
    let text = reader.non_empty_string(&path, value)?;
    match text.parse::<SocketAddr>() {
        Ok(address) => Some(Some(address)),
        Err(_) => {
            reader.error(
                value,
                &path,
                format!("{text:?} is not an address with a port, such as \"127.0.0.1:9469\""),
            );
            None
        }
    }
}

/// Decode `%XX` escapes of a file url path.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn read_path(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<PathBuf> {
    let text = reader.non_empty_string(path, value)?;
    resolve(reader, value, text)
}

/// `text` as a path; a relative one is taken relative to the directory of the file that set it.
fn resolve(reader: &mut Reader<'_>, value: &Value, text: &str) -> Option<PathBuf> {
    let relative = Path::new(text);
    if relative.is_absolute() {
        return Some(relative.to_path_buf());
    }
    let file = reader
        .source(value.source)
        .map_or_else(PathBuf::new, |source| source.path.clone());
    // An absolute base keeps the meaning of the path when the daemon later changes directory.
    let file = std::path::absolute(&file).unwrap_or(file);
    let dir = file.parent().unwrap_or_else(|| Path::new("/"));
    Some(dir.join(relative))
}
