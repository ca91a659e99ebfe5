//! `[desired]`: where the desired document comes from (`source`, `poll_interval`) and what the
//! site trusts (`trusted_keys`, `allow_unsigned`, `ca_file`, mutual TLS, size and time limits).

use super::*;

/// Default `desired.max_document_bytes`: 1 MiB, hundreds of times a real document.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;
/// Default `desired.timeout`.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(30);
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

pub(super) fn read_desired(
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

pub(super) fn read_desired_trust(
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
pub(super) fn read_trusted_keys(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<Vec<String>> {
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
pub(super) fn read_desired_source(
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
