//! The hub's configuration: `hub.toml`, validated into a [`HubConfig`].
//!
//! Owns the keys of `hub.toml` and their defaults. It uses the same spanned reader as the
//! agent's config, so every problem in the file is reported at once as `FILE:LINE:COLUMN`.
//! Relative paths are taken relative to the directory of `hub.toml`. It reads the file when
//! asked to and never at any other time; it never writes anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Diagnostic;
use crate::spec::parse::parse_tree;
use crate::spec::parse::reader::{Reader, Table};
use crate::spec::parse::tree::{Format, Source, Value};

/// Default config file of `edgeroll hub`.
pub const DEFAULT_HUB_CONFIG_PATH: &str = "/etc/edgeroll/hub.toml";
/// Default `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8440";
/// Default `state_dir`.
pub const DEFAULT_HUB_STATE_DIR: &str = "/var/lib/edgeroll-hub";
/// Default `documents`.
pub const DEFAULT_DOCUMENTS_DIR: &str = "/etc/edgeroll/hub.d";
/// Default `reload_interval`: how often the documents directory is checked for changes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Default `last_seen_flush`: how often poll times kept in memory are written to the store.
pub const DEFAULT_LAST_SEEN_FLUSH: Duration = Duration::from_secs(10);
/// Default `plan_interval`: how often fleet plans are evaluated.
pub const DEFAULT_PLAN_INTERVAL: Duration = Duration::from_secs(2);
/// The operator socket's file in the state directory, when `socket` is not set.
pub const DEFAULT_SOCKET_FILE: &str = "hub.sock";
/// Default `report_rate`: batches per second one site may send on average (the agent sends one
/// at a time and waits for its answer, so a healthy site stays far below it).
pub const DEFAULT_REPORT_RATE: f64 = 50.0;
/// Default `report_burst`: batches one site may send at once.
pub const DEFAULT_REPORT_BURST: u32 = 500;
/// Default `mqtt.client_id`.
pub const DEFAULT_MQTT_CLIENT_ID: &str = "edgeroll-hub";
/// The largest `hub.toml` read, in bytes.
pub const MAX_HUB_CONFIG_BYTES: u64 = 1024 * 1024;

/// A validated hub configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// Where the HTTP(S) server listens.
    pub listen: SocketAddr,
    /// The hub's state directory (holds `hub.db`).
    pub state_dir: PathBuf,
    /// The directory of desired documents (`*.toml`, `*.json`, each with an optional
    /// `.minisig`).
    pub documents: PathBuf,
    /// How often the documents directory is checked for changes (SIGHUP reloads at once).
    pub reload_interval: Duration,
    /// How often the last-seen times of polls are written to the store.
    pub last_seen_flush: Duration,
    /// Serve HTTPS with this certificate chain and key; plain HTTP without.
    pub tls: Option<TlsFiles>,
    /// Sign documents that have no `.minisig` with this key.
    pub signing: Option<SigningFiles>,
    /// Ingest report batches from this MQTT broker too.
    pub mqtt: Option<MqttSettings>,
    /// How often fleet plans are evaluated.
    pub plan_interval: Duration,
    /// The operator socket (`edgeroll hub get|promote|abort|pause|resume`); default
    /// `{state_dir}/hub.sock`.
    pub socket: PathBuf,
    /// Write each known site's document here too, for a static HTTPS server or a CDN.
    pub export: Option<PathBuf>,
    /// Report batches one site may send per second, on average.
    pub report_rate: f64,
    /// Report batches one site may send at once.
    pub report_burst: u32,
}

/// `[tls]`: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Sites authenticate with client certificates signed by these CAs (mutual TLS); a
    /// certificate must be valid for the site's name (a DNS name in its subjectAltName) to
    /// poll that site's document or report for it.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (`true`, the default with `client_ca`) or only
    /// checked when one is presented.
    pub client_auth_required: bool,
}

/// `[signing]`: the minisign secret key the hub signs unsigned documents with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningFiles {
    /// The secret key file (minisign format).
    pub key: PathBuf,
    /// The environment variable holding the key's password, for an encrypted key.
    pub password_env: Option<String>,
}

/// `[mqtt]`: the broker the hub subscribes to for report batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// Host of the broker.
    pub host: String,
    /// Port of the broker.
    pub port: u16,
    /// Client id; the broker keeps the hub's session (and its undelivered messages) under it.
    pub client_id: String,
}

/// Load and validate `path`.
pub fn load(path: &Path) -> Result<HubConfig, Vec<Diagnostic>> {
    let at_start = |message: String| {
        vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message,
        }]
    };
    let metadata = std::fs::metadata(path)
        .map_err(|error| at_start(format!("cannot read hub config: {error}")))?;
    if metadata.len() > MAX_HUB_CONFIG_BYTES {
        return Err(at_start(format!(
            "the file is {} bytes, more than the limit of {MAX_HUB_CONFIG_BYTES}",
            metadata.len()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| at_start(format!("cannot read hub config: {error}")))?;
    parse(path, &text)
}

/// Validate the text of a `hub.toml` found at `path`.
pub fn parse(path: &Path, text: &str) -> Result<HubConfig, Vec<Diagnostic>> {
    let source = Source::new(path, text, Format::Toml);
    let root = parse_tree(&source, 0)?;
    let mut reader = Reader::new(vec![source]);
    let config = read_root(&mut reader, &root, path);
    match config {
        Some(config) if !reader.has_errors() => Ok(config),
        _ => Err(reader.into_diagnostics()),
    }
}

fn read_root(reader: &mut Reader<'_>, root: &Value, file: &Path) -> Option<HubConfig> {
    let base = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let base = base
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .to_path_buf();
    let mut table = reader.table("", root)?;
    let listen = match table.get("listen") {
        Some((path, value)) => read_listen(reader, &path, value),
        None => DEFAULT_LISTEN.parse().ok(),
    };
    let state_dir = path_or(
        reader,
        &mut table,
        "state_dir",
        &base,
        DEFAULT_HUB_STATE_DIR,
    );
    let documents = path_or(
        reader,
        &mut table,
        "documents",
        &base,
        DEFAULT_DOCUMENTS_DIR,
    );
    let reload_interval = match table.get("reload_interval") {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(DEFAULT_RELOAD_INTERVAL),
    };
    let last_seen_flush = match table.get("last_seen_flush") {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(DEFAULT_LAST_SEEN_FLUSH),
    };
    let tls = match table.get("tls") {
        Some((path, value)) => read_tls(reader, &path, value, &base).map(Some),
        None => Some(None),
    };
    let signing = match table.get("signing") {
        Some((path, value)) => read_signing(reader, &path, value, &base).map(Some),
        None => Some(None),
    };
    let mqtt = match table.get("mqtt") {
        Some((path, value)) => read_mqtt(reader, &path, value).map(Some),
        None => Some(None),
    };
    let plan_interval = match table.get("plan_interval") {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(DEFAULT_PLAN_INTERVAL),
    };
    let socket = match table.get("socket") {
        Some((path, value)) => read_path(reader, &path, value, &base).map(Some),
        None => Some(None),
    };
    let export = match table.get("export") {
        Some((path, value)) => read_path(reader, &path, value, &base).map(Some),
        None => Some(None),
    };
    let report_rate = match table.get("report_rate") {
        Some((path, value)) => read_rate(reader, &path, value),
        None => Some(DEFAULT_REPORT_RATE),
    };
    let report_burst = match table.get("report_burst") {
        Some((path, value)) => reader.int::<u32>(&path, value, 1..=1_000_000),
        None => Some(DEFAULT_REPORT_BURST),
    };
    table.finish(reader);
    let state_dir = state_dir?;
    Some(HubConfig {
        listen: listen?,
        socket: socket?.unwrap_or_else(|| state_dir.join(DEFAULT_SOCKET_FILE)),
        state_dir,
        plan_interval: plan_interval?,
        export: export?,
        report_rate: report_rate?,
        report_burst: report_burst?,
        documents: documents?,
        reload_interval: reload_interval?,
        last_seen_flush: last_seen_flush?,
        tls: tls?,
        signing: signing?,
        mqtt: mqtt?,
    })
}

/// A rate such as `"10/s"` or `"600/m"`, in events per second.
fn read_rate(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<f64> {
    let text = reader.non_empty_string(path, value)?;
    let parsed = text.split_once('/').and_then(|(count, unit)| {
        let count: f64 = count.trim().parse().ok()?;
        let per = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        (count.is_finite() && count > 0.0).then_some(count / per)
    });
    if parsed.is_none() {
        reader.error(
            value,
            path,
            format!("{text:?} is not a rate such as \"10/s\" or \"600/m\""),
        );
    }
    parsed
}

fn read_listen(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<SocketAddr> {
    let text = reader.non_empty_string(path, value)?;
    match text.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            reader.error(
                value,
                path,
                format!("{text:?} is not an address and port such as \"0.0.0.0:8440\""),
            );
            None
        }
    }
}

/// `key` as a path (relative to `base`), or `default`.
fn path_or(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
    key: &'static str,
    base: &Path,
    default: &str,
) -> Option<PathBuf> {
    match table.get(key) {
        Some((path, value)) => read_path(reader, &path, value, base),
        None => Some(PathBuf::from(default)),
    }
}

fn read_path(reader: &mut Reader<'_>, path: &str, value: &Value, base: &Path) -> Option<PathBuf> {
    let text = reader.non_empty_string(path, value)?;
    Some(base.join(text))
}

fn required_path(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
    key: &'static str,
    base: &Path,
) -> Option<PathBuf> {
    let (path, value) = table.required(reader, key)?;
    read_path(reader, &path, value, base)
}

fn read_tls(reader: &mut Reader<'_>, path: &str, value: &Value, base: &Path) -> Option<TlsFiles> {
    let mut table = reader.table(path, value)?;
    let cert = required_path(reader, &mut table, "cert", base);
    let key = required_path(reader, &mut table, "key", base);
    let client_ca = match table.get("client_ca") {
        Some((path, value)) => read_path(reader, &path, value, base).map(Some),
        None => Some(None),
    };
    let client_auth = match table.get("client_auth") {
        Some((path, value)) => match reader.string(&path, value) {
            Some("required") => Some(true),
            Some("optional") => Some(false),
            Some(other) => {
                reader.error(
                    value,
                    &path,
                    format!("{other:?} is not \"required\" or \"optional\""),
                );
                None
            }
            None => None,
        }
        .map(|required| (Some(required), Some(value), path)),
        None => Some((None, None, String::new())),
    };
    table.finish(reader);
    let (client_auth, client_auth_value, client_auth_path) = client_auth?;
    let client_ca = client_ca?;
    if let (None, Some(value)) = (&client_ca, client_auth_value) {
        reader.error(value, &client_auth_path, "needs tls.client_ca");
        return None;
    }
    Some(TlsFiles {
        cert: cert?,
        key: key?,
        client_auth_required: client_auth.unwrap_or(true),
        client_ca,
    })
}

fn read_signing(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    base: &Path,
) -> Option<SigningFiles> {
    let mut table = reader.table(path, value)?;
    let key = required_path(reader, &mut table, "key", base);
    let password_env = match table.get("password_env") {
        Some((path, value)) => reader
            .non_empty_string(&path, value)
            .map(|name| Some(name.to_owned())),
        None => Some(None),
    };
    table.finish(reader);
    Some(SigningFiles {
        key: key?,
        password_env: password_env?,
    })
}

fn read_mqtt(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<MqttSettings> {
    let mut table = reader.table(path, value)?;
    let broker = table
        .required(reader, "broker")
        .and_then(|(path, value)| read_broker(reader, &path, value));
    let client_id = match table.get("client_id") {
        Some((path, value)) => reader.non_empty_string(&path, value).map(str::to_owned),
        None => Some(DEFAULT_MQTT_CLIENT_ID.to_owned()),
    };
    table.finish(reader);
    let (host, port) = broker?;
    Some(MqttSettings {
        host,
        port,
        client_id: client_id?,
    })
}

/// `mqtt://HOST[:PORT]` (port 1883 by default).
fn read_broker(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<(String, u16)> {
    let text = reader.non_empty_string(path, value)?;
    let Some(rest) = text.strip_prefix("mqtt://") else {
        let message = if text.starts_with("mqtts://") {
            format!("{text:?}: mqtts:// is not supported yet; use mqtt:// on a trusted network")
        } else {
            format!("{text:?} is not a broker url such as \"mqtt://127.0.0.1:1883\"")
        };
        reader.error(value, path, message);
        return None;
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) if port > 0 => (host, port),
            _ => {
                reader.error(value, path, format!("{text:?} has an invalid port"));
                return None;
            }
        },
        None => (rest, 1883),
    };
    if host.is_empty() || host.contains('/') {
        reader.error(value, path, format!("{text:?} has no host"));
        return None;
    }
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the text, parsing returns (never panics), and every problem points inside
        /// the file.
        #[test]
        fn any_text_gives_a_config_or_problems_inside_the_file(text in "(?s).{0,200}") {
            if let Err(diagnostics) = parse(Path::new("hub.toml"), &text) {
                prop_assert!(!diagnostics.is_empty());
                let lines = text.split('\n').count();
                for diagnostic in diagnostics {
                    prop_assert!(diagnostic.line >= 1 && diagnostic.line <= lines, "{diagnostic}");
                    prop_assert!(diagnostic.column >= 1, "{diagnostic}");
                }
            }
        }

        /// Any listen address and broker port round-trip.
        #[test]
        fn addresses_and_ports_round_trip(a in 0u8.., b in 0u8.., port in 1u16.., broker_port in 1u16..) {
            let text = format!(
                "listen = \"{a}.{b}.0.1:{port}\"\n[mqtt]\nbroker = \"mqtt://broker:{broker_port}\"\n"
            );
            let config = parse(Path::new("hub.toml"), &text).expect("valid");
            prop_assert_eq!(config.listen.port(), port);
            prop_assert_eq!(config.mqtt.map(|mqtt| mqtt.port), Some(broker_port));
        }
    }

    fn parse_text(text: &str) -> Result<HubConfig, Vec<String>> {
        parse(Path::new("/etc/edgeroll/hub.toml"), text)
            .map_err(|diagnostics| diagnostics.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = parse_text("").expect("valid");
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().expect("address"));
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_HUB_STATE_DIR));
        assert_eq!(config.tls, None);
        assert_eq!(config.mqtt, None);
    }

    #[test]
    fn paths_are_relative_to_the_file_and_the_broker_is_parsed() {
        let config = parse_text(
            "listen = \"0.0.0.0:9000\"\ndocuments = \"docs\"\n[signing]\nkey = \"hub.key\"\n\
             password_env = \"PW\"\n[mqtt]\nbroker = \"mqtt://broker.local:1884\"\n",
        )
        .expect("valid");
        assert_eq!(config.documents, PathBuf::from("/etc/edgeroll/docs"));
        let signing = config.signing.expect("signing");
        assert_eq!(signing.key, PathBuf::from("/etc/edgeroll/hub.key"));
        assert_eq!(signing.password_env.as_deref(), Some("PW"));
        let mqtt = config.mqtt.expect("mqtt");
        assert_eq!((mqtt.host.as_str(), mqtt.port), ("broker.local", 1884));
    }

    #[test]
    fn client_certificates_are_required_unless_said_otherwise() {
        let tls = |extra: &str| {
            parse_text(&format!(
                "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{extra}"
            ))
            .map(|config| config.tls.expect("tls"))
        };
        let required = tls("client_ca = \"ca.pem\"\n").expect("valid");
        assert_eq!(
            required.client_ca,
            Some(PathBuf::from("/etc/edgeroll/ca.pem"))
        );
        assert!(required.client_auth_required);
        let optional = tls("client_ca = \"ca.pem\"\nclient_auth = \"optional\"\n").expect("valid");
        assert!(!optional.client_auth_required);
        let errors = tls("client_auth = \"optional\"\n").expect_err("no CA");
        assert!(
            errors[0].contains("tls.client_auth: needs tls.client_ca"),
            "{errors:?}"
        );
        let errors = tls("client_ca = \"ca.pem\"\nclient_auth = \"maybe\"\n").expect_err("bad");
        assert!(errors[0].contains("\"maybe\" is not"), "{errors:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_line_and_column() {
        let errors = parse_text(
            "listen = \"nowhere\"\nreload_interval = \"soon\"\nlisten_port = 3\n[tls]\ncert = \"c.pem\"\n\
             [mqtt]\nbroker = \"http://x\"\n",
        )
        .expect_err("invalid");
        let joined = errors.join("\n");
        assert!(joined.contains("hub.toml:1:10: listen:"), "{joined}");
        assert!(
            joined.contains("hub.toml:2:19: reload_interval:"),
            "{joined}"
        );
        assert!(
            joined.contains("hub.toml:3:1: listen_port: unknown field"),
            "{joined}"
        );
        assert!(
            joined.contains("tls.key: required field is missing"),
            "{joined}"
        );
        assert!(joined.contains("hub.toml:7:10: mqtt.broker:"), "{joined}");
        assert_eq!(errors.len(), 5, "{joined}");
    }
}
