//! `[reports]`: where the site's reports go (`url`: https:// or mqtt://), the outbox bound and
//! the sender's batch and retry limits.

use super::*;

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

pub(super) fn read_reports(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
) -> Option<ReportsConfig> {
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
pub(super) fn read_reports_url(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<ReportsUrl> {
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
