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
/// Default `desired.max_document_bytes`: 1 MiB, hundreds of times a real document.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;
/// Default `desired.timeout`.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `reports.batch_max_reports`.
pub const DEFAULT_BATCH_MAX_REPORTS: usize = 500;
/// Default `reports.batch_max_bytes` (report JSON before compression).
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1024 * 1024;
/// Default `reports.timeout`: one delivery attempt, connect to acknowledgement.
pub const DEFAULT_REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `reports.retry_initial`: the first retry waits up to this long (full jitter).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Default `reports.retry_max`: retries wait up to this long at most.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
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
    /// An `https://` URL, pulled every `poll_interval`; `{site}` stands for the site name.
    Https(String),
}

/// The trust settings of `[desired]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTrust {
    /// `trusted_keys`: minisign public keys (the base64 line), read from `.pub` files where the
    /// config named a path. Empty means no key is pinned.
    pub trusted_keys: Vec<String>,
    /// `allow_unsigned`: accept an unsigned `https://` document when no key is pinned.
    pub allow_unsigned: bool,
    /// `ca_file`: extra CA certificates (PEM) for `https://`; the system store is always used.
    pub ca_file: Option<PathBuf>,
    /// `client_cert`: the site's certificate chain (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// `client_key`: its private key (PEM).
    pub client_key: Option<PathBuf>,
    /// `max_document_bytes`: the largest document (and signature) read.
    pub max_document_bytes: u64,
    /// `timeout`: how long one `https://` answer may take once connected (connecting has its
    /// own 10 s limit).
    pub timeout: Duration,
}

impl Default for DesiredTrust {
    fn default() -> Self {
        DesiredTrust {
            trusted_keys: Vec::new(),
            allow_unsigned: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            timeout: DEFAULT_PULL_TIMEOUT,
        }
    }
}

/// `[reports]`: the report outbox and its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportsConfig {
    /// The receiver.
    pub url: ReportsUrl,
    /// Bound of the outbox in bytes of report JSON (default 64 MiB); when full, the oldest
    /// measurements are dropped.
    pub outbox_max_bytes: u64,
    /// At most this many reports per batch.
    pub batch_max_reports: usize,
    /// At most this many bytes of report JSON per batch (before compression).
    pub batch_max_bytes: usize,
    /// Deadline of one delivery attempt.
    pub timeout: Duration,
    /// Upper bound of the first retry's wait (full jitter, doubling per failure).
    pub retry_initial: Duration,
    /// Upper bound of any retry's wait.
    pub retry_max: Duration,
    /// Extra CA certificates (PEM) for `https://` and `mqtts://`; the system store is always used.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

/// `reports.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportsUrl {
    /// `https://…` (or `http://` to a loopback address): POST batches there.
    Http(String),
    /// `mqtt://host:port` or `mqtts://host:port`: publish batches with QoS 1 (MQTT 5).
    Mqtt {
        /// Broker host.
        host: String,
        /// Broker port (default 1883, or 8883 for `mqtts`).
        port: u16,
        /// TLS (`mqtts://`).
        tls: bool,
    },
}

impl std::fmt::Display for ReportsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportsUrl::Http(url) => f.write_str(url),
            ReportsUrl::Mqtt { host, port, tls } => {
                let scheme = if *tls { "mqtts" } else { "mqtt" };
                write!(f, "{scheme}://{host}:{port}")
            }
        }
    }
}

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
    let kind = match field(&mut table, "kind") {
        Some((path, value)) => reader.string(&path, value).and_then(|kind| match kind {
            "process" => Some(RuntimeKind::Process),
            "docker" | "containerd" => {
                reader.error(
                    value,
                    &path,
                    format!("runtime `{kind}` is not supported yet"),
                );
                None
            }
            _ => {
                reader.error(
                    value,
                    &path,
                    format!("unknown runtime `{kind}`, expected process, docker or containerd"),
                );
                None
            }
        }),
        None => Some(RuntimeKind::Process),
    };
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

fn read_desired(
    reader: &mut Reader<'_>,
    mut table: Option<&mut Table<'_>>,
) -> Option<(DesiredSource, Duration, DesiredTrust)> {
    let source = match field(&mut table, "source") {
        Some((path, value)) => read_desired_source(reader, &path, value),
        None => Some(DesiredSource::None),
    };
    let poll_interval = match field(&mut table, "poll_interval") {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(DEFAULT_POLL_INTERVAL),
    };
    let trust = read_desired_trust(reader, &mut table);
    Some((source?, poll_interval?, trust?))
}

fn read_desired_trust(
    reader: &mut Reader<'_>,
    table: &mut Option<&mut Table<'_>>,
) -> Option<DesiredTrust> {
    let defaults = DesiredTrust::default();
    let trusted_keys = match field(table, "trusted_keys") {
        Some((path, value)) => read_trusted_keys(reader, &path, value),
        None => Some(Vec::new()),
    };
    let allow_unsigned = match field(table, "allow_unsigned") {
        Some((path, value)) => reader.boolean(&path, value),
        None => Some(defaults.allow_unsigned),
    };
    let mut optional_path = |key: &'static str| match field(table, key) {
        Some((path, value)) => read_path(reader, &path, value).map(Some),
        None => Some(None),
    };
    let ca_file = optional_path("ca_file");
    let client_cert = optional_path("client_cert");
    let client_key = optional_path("client_key");
    let max_document_bytes = match field(table, "max_document_bytes") {
        Some((path, value)) => reader.int::<u64>(&path, value, 1..=i64::from(u32::MAX)),
        None => Some(defaults.max_document_bytes),
    };
    let timeout = match field(table, "timeout") {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(defaults.timeout),
    };
    let (client_cert, client_key) = (client_cert?, client_key?);
    if client_cert.is_some() != client_key.is_some() {
        let (present, missing) = if client_cert.is_some() {
            ("client_cert", "client_key")
        } else {
            ("client_key", "client_cert")
        };
        if let Some((path, value)) = field(table, present) {
            reader.error(
                value,
                &path,
                format!("mutual TLS needs both: set desired.{missing} too"),
            );
        }
        return None;
    }
    Some(DesiredTrust {
        trusted_keys: trusted_keys?,
        allow_unsigned: allow_unsigned?,
        ca_file: ca_file?,
        client_cert,
        client_key,
        max_document_bytes: max_document_bytes?,
        timeout: timeout?,
    })
}

/// `trusted_keys`: each entry is a minisign public key's base64 line, or the path of a `.pub`
/// file holding one (relative to the config file).
fn read_trusted_keys(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<Vec<String>> {
    let entries = reader.array(path, value)?;
    let mut keys = Vec::new();
    let mut valid = true;
    for (index, entry) in entries.iter().enumerate() {
        let entry_path = format!("{path}[{index}]");
        let Some(text) = reader.non_empty_string(&entry_path, entry) else {
            valid = false;
            continue;
        };
        let key_text = if crate::wire::signature::TrustedKey::parse(text).is_ok() {
            text.to_owned()
        } else {
            let Some(file) = resolve(reader, entry, text) else {
                valid = false;
                continue;
            };
            match read_file(&file) {
                Ok(contents) => contents,
                Err(message) => {
                    reader.error(
                        entry,
                        &entry_path,
                        format!(
                            "{text:?} is neither a minisign public key nor a readable .pub file ({}: {message})",
                            file.display()
                        ),
                    );
                    valid = false;
                    continue;
                }
            }
        };
        match crate::wire::signature::TrustedKey::parse(&key_text) {
            Ok(key) => keys.push(key.to_base64()),
            Err(error) => {
                reader.error(entry, &entry_path, error.to_string());
                valid = false;
            }
        }
    }
    valid.then_some(keys)
}

/// The `[metrics]` section. Only `listen` exists so far; the recording rules and remote write
/// of the contract are not implemented, so their keys are reported as unknown.
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

fn read_desired_source(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<DesiredSource> {
    let text = reader.non_empty_string(path, value)?;
    if let Some(rest) = text.strip_prefix("file://") {
        if !rest.starts_with('/') {
            reader.error(value, path, format!("{text:?} must be an absolute file url such as file:///etc/edgeroll/desired.toml"));
            return None;
        }
        return match percent_decode(rest) {
            Some(decoded) => Some(DesiredSource::File(PathBuf::from(decoded))),
            None => {
                reader.error(value, path, format!("{text:?} has an invalid %-escape"));
                None
            }
        };
    }
    if text.starts_with("https://") {
        // `{site}` is replaced at pull time; check the rest is a URL with a host.
        let probe = text.replace("{site}", "site");
        return match probe.parse::<http::Uri>() {
            Ok(uri) if uri.host().is_some_and(|host| !host.is_empty()) => {
                Some(DesiredSource::Https(text.to_owned()))
            }
            _ => {
                reader.error(value, path, format!("{text:?} is not a valid https:// URL"));
                None
            }
        };
    }
    if let Some((scheme, _)) = text.split_once("://") {
        reader.error(
            value,
            path,
            format!("unsupported source `{scheme}://`, expected https://…, file:///path or an absolute path"),
        );
        return None;
    }
    resolve(reader, value, text).map(DesiredSource::File)
}

fn read_reports(reader: &mut Reader<'_>, table: &mut Table<'_>) -> Option<ReportsConfig> {
    let url = table
        .required(reader, "url")
        .and_then(|(path, value)| read_reports_url(reader, &path, value));
    let mut table = Some(table);
    let outbox_max_bytes = match field(&mut table, "outbox_max_bytes") {
        Some((path, value)) => reader.int::<u64>(&path, value, 4096..=i64::MAX),
        None => Some(crate::store::DEFAULT_OUTBOX_MAX_BYTES),
    };
    let batch_max_reports = match field(&mut table, "batch_max_reports") {
        Some((path, value)) => reader.int::<usize>(&path, value, 1..=100_000),
        None => Some(DEFAULT_BATCH_MAX_REPORTS),
    };
    // The compressed batch must stay under the receiver's limit; JSON compresses well, but a
    // limit of the receiver's own size keeps even incompressible batches acceptable.
    let max_batch = crate::wire::report::MAX_BATCH_BYTES as i64;
    let batch_max_bytes = match field(&mut table, "batch_max_bytes") {
        Some((path, value)) => reader.int::<usize>(&path, value, 1024..=max_batch),
        None => Some(DEFAULT_BATCH_MAX_BYTES),
    };
    let duration =
        |reader: &mut Reader<'_>, table: &mut Option<&mut Table<'_>>, key, default| match field(
            table, key,
        ) {
            Some((path, value)) => reader.duration(&path, value).and_then(|duration| {
                if duration.is_zero() {
                    reader.error(value, &path, "must be longer than 0s");
                    None
                } else {
                    Some(duration)
                }
            }),
            None => Some(default),
        };
    let timeout = duration(reader, &mut table, "timeout", DEFAULT_REPORT_TIMEOUT);
    let retry_initial = duration(reader, &mut table, "retry_initial", DEFAULT_RETRY_INITIAL);
    let retry_max = duration(reader, &mut table, "retry_max", DEFAULT_RETRY_MAX);
    let mut optional_path = |key| match field(&mut table, key) {
        Some((path, value)) => read_path(reader, &path, value).map(Some),
        None => Some(None),
    };
    let ca_file = optional_path("ca_file");
    let client_cert = optional_path("client_cert");
    let client_key = optional_path("client_key");
    let (client_cert, client_key) = (client_cert?, client_key?);
    if client_cert.is_some() != client_key.is_some() {
        let table = table.as_ref()?;
        reader.error(
            table.value(),
            table.path(),
            "client_cert and client_key go together: set both or neither",
        );
        return None;
    }
    Some(ReportsConfig {
        url: url?,
        outbox_max_bytes: outbox_max_bytes?,
        batch_max_reports: batch_max_reports?,
        batch_max_bytes: batch_max_bytes?,
        timeout: timeout?,
        retry_initial: retry_initial?,
        retry_max: retry_max?,
        ca_file: ca_file?,
        client_cert,
        client_key,
    })
}

/// `reports.url`: `https://host[:port]/path`, `http://` to a loopback host (tests, a local
/// relay), or `mqtt[s]://host[:port]`.
fn read_reports_url(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<ReportsUrl> {
    let text = reader.non_empty_string(path, value)?;
    let uri: Result<http::Uri, _> = text.parse();
    let parsed = uri.ok().and_then(|uri| {
        let scheme = uri.scheme_str()?.to_owned();
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Some((scheme, host, uri.port_u16()))
    });
    let Some((scheme, host, port)) = parsed else {
        reader.error(
            value,
            path,
            format!("{text:?} is not a url such as https://hub.example.com/v1/reports or mqtt://broker:1883"),
        );
        return None;
    };
    match scheme.as_str() {
        "https" => Some(ReportsUrl::Http(text.to_owned())),
        "http" => {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|address| address.is_loopback());
            if loopback {
                Some(ReportsUrl::Http(text.to_owned()))
            } else {
                reader.error(
                    value,
                    path,
                    format!("{text:?}: reports leave the site only over https:// (http:// is for a loopback receiver)"),
                );
                None
            }
        }
        "mqtt" | "mqtts" => {
            let tls = scheme == "mqtts";
            Some(ReportsUrl::Mqtt {
                host,
                port: port.unwrap_or(if tls { 8883 } else { 1883 }),
                tls,
            })
        }
        other => {
            reader.error(
                value,
                path,
                format!("unsupported scheme `{other}://`, expected https://, mqtt:// or mqtts://"),
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
