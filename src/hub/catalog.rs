//! The hub's catalog of desired documents: what it serves, to whom, with which ETag and
//! signature.
//!
//! Owns the documents directory (read, never written): every `*.toml` / `*.json` in it but the
//! plan files (`*.plan.toml`, read by `plan`) is a desired document, validated with the agent's own parser (`spec::parse`, as `edgeroll
//! validate` does), served byte for byte as found. Its signature is the `.minisig` next to it
//! when there is one (signed offline), else one the hub makes with its own key, else none.
//! The ETag of each document is computed once, when it is loaded, so answering a poll is a
//! lookup in memory: choosing a document and comparing ETags never touches the store.
//!
//! It must never change a document's bytes, and a directory with any invalid document is
//! refused whole (the catalog served before stays), so a typo in one file never changes what a
//! site is told. The hub serves the directory's documents merged with the plans' wave documents
//! ([`Catalog::from_shared`]); the selection rule is [`Catalog::choose`].

use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::time::Timestamp;
use crate::wire::signature::SigningKey;

/// Who signed a served document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// The `.minisig` next to the document (signed elsewhere, e.g. offline).
    File,
    /// The hub, with the key of this id.
    Hub(String),
    /// Nobody: served without a signature.
    Unsigned,
}

/// One document as the hub serves it.
#[derive(Debug, Clone)]
pub struct ServedDocument {
    /// The file name in the documents directory.
    pub name: String,
    /// The document's serial.
    pub serial: u64,
    /// The document's selector (`site` matches the site's name, other keys its labels).
    pub selector: BTreeMap<String, String>,
    /// The bytes served, exactly as in the file.
    pub body: Bytes,
    /// `application/toml` or `application/json`.
    pub content_type: &'static str,
    /// The ETag, quoted: `"{serial}-{16 hex digits of SHA-256 over the body and the signer}"`
    /// (the signer: the `.minisig` text, or the hub's key id).
    pub etag: String,
    /// The text of the `.minisig` signature, if the document is signed.
    pub signature: Option<String>,
    /// The signature as the [`crate::wire::SIGNATURE_HEADER`] carries it (base64).
    pub signature_header: Option<String>,
    /// [`ServedDocument::etag`] as a header value, made once so a poll does not validate it.
    pub etag_value: Option<http::HeaderValue>,
    /// [`ServedDocument::signature_header`] as a header value, made once.
    pub signature_value: Option<http::HeaderValue>,
    /// Who signed it.
    pub signer: Signer,
}

impl ServedDocument {
    /// A document served as `name` with these bytes and signature (which the caller vouches
    /// for); `serial` and `selector` come from the validated document.
    pub fn new(
        name: String,
        document: &crate::spec::Document,
        body: Bytes,
        signature: Option<String>,
        signer: Signer,
    ) -> ServedDocument {
        let content_type = if body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{') {
            "application/json"
        } else {
            "application/toml"
        };
        // minisign signatures are randomised (hedged), so a document the hub signs again after
        // a restart gets another signature. The ETag names the hub's key instead of its
        // signature: a site holding the earlier signature holds a valid one for the same bytes.
        let identity = match &signer {
            Signer::File => signature.clone().unwrap_or_default(),
            Signer::Hub(key_id) => format!("hub:{key_id}"),
            Signer::Unsigned => String::new(),
        };
        let etag = etag_of(document.serial, &body, Some(&identity));
        let signature_header = signature
            .as_deref()
            .map(|text| base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
        ServedDocument {
            name,
            serial: document.serial,
            selector: document.selector.clone(),
            body,
            content_type,
            etag_value: http::HeaderValue::from_str(&etag).ok(),
            signature_value: signature_header
                .as_deref()
                .and_then(|value| http::HeaderValue::from_str(value).ok()),
            etag,
            signature,
            signature_header,
            signer,
        }
    }

    /// Whether the document's selector selects the site `site` with `labels`: every key must
    /// match, `site` against the name, any other against the label of that key.
    pub fn selects(&self, site: &str, labels: &BTreeMap<String, String>) -> bool {
        crate::wire::selects(&self.selector, site, labels)
    }
}

/// The ETag of a document: its serial, and a digest of its bytes and of who signed it (so a
/// new `.minisig` next to the same bytes is a new ETag too).
pub fn etag_of(serial: u64, body: &[u8], signature: Option<&str>) -> String {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    hasher.update(body);
    hasher.update(&[0]);
    hasher.update(signature.unwrap_or("").as_bytes());
    let digest = hasher.finish();
    let hex: String = digest
        .as_ref()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("\"{serial}-{hex}\"")
}

/// Every document the hub serves, highest serial first.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    documents: Vec<Arc<ServedDocument>>,
}

/// A file's name, size and modification time: what tells the reload poll that a directory
/// changed.
pub type Fingerprint = Vec<(String, u64, Option<std::time::SystemTime>)>;

impl Catalog {
    /// A catalog of these documents; two with the same serial are refused (a site could not
    /// tell them apart).
    pub fn from_documents(documents: Vec<ServedDocument>) -> Result<Catalog, Vec<String>> {
        Catalog::from_shared(documents.into_iter().map(Arc::new).collect())
    }

    /// [`Catalog::from_documents`] of documents already shared (the directory's and the
    /// plans', merged on every publish).
    pub fn from_shared(mut documents: Vec<Arc<ServedDocument>>) -> Result<Catalog, Vec<String>> {
        documents.sort_by(|left, right| {
            right
                .serial
                .cmp(&left.serial)
                .then_with(|| left.name.cmp(&right.name))
        });
        let problems: Vec<String> = documents
            .windows(2)
            .filter(|pair| pair[0].serial == pair[1].serial)
            .map(|pair| {
                format!(
                    "{} and {} both have serial {}: every document needs its own serial",
                    pair[1].name, pair[0].name, pair[0].serial
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(Catalog { documents })
        } else {
            Err(problems)
        }
    }

    /// Load every document of `dir`, signing the unsigned ones with `signer` when there is
    /// one. `now` bounds the signing time written into the trusted comment. Every problem of
    /// every file is returned at once (`FILE:LINE:COLUMN: message`).
    pub fn load(
        dir: &Path,
        signer: Option<&SigningKey>,
        now: Timestamp,
    ) -> Result<Catalog, Vec<String>> {
        let files = document_files(dir).map_err(|message| vec![message])?;
        let mut problems = Vec::new();
        let mut documents = Vec::new();
        for path in files {
            match load_one(&path, signer, now) {
                Ok(document) => documents.push(document),
                Err(mut errors) => problems.append(&mut errors),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Catalog::from_documents(documents)
    }

    /// The document for the site `site` with `labels`: among those whose selector selects it,
    /// the one with the highest serial.
    pub fn choose(
        &self,
        site: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&Arc<ServedDocument>> {
        self.documents
            .iter()
            .find(|document| document.selects(site, labels))
    }

    /// Every document, highest serial first.
    pub fn documents(&self) -> &[Arc<ServedDocument>] {
        &self.documents
    }

    /// The highest serial of any document (0 when there is none).
    pub fn highest_serial(&self) -> u64 {
        self.documents.first().map_or(0, |document| document.serial)
    }
}

/// The fingerprint of `dir`: name, size and modification time of every file in it.
pub fn fingerprint(dir: &Path) -> Fingerprint {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Fingerprint = entries
        .flatten()
        .filter_map(|entry| {
            let metadata = entry.metadata().ok()?;
            Some((
                entry.file_name().to_string_lossy().into_owned(),
                metadata.len(),
                metadata.modified().ok(),
            ))
        })
        .collect();
    files.sort();
    files
}

/// The `*.toml` and `*.json` files of `dir`, by name.
fn document_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|error| {
        format!(
            "{}: cannot read documents directory: {error}",
            dir.display()
        )
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let document = path
            .extension()
            .is_some_and(|extension| extension == "toml" || extension == "json");
        let plan = crate::hub::plan::spec::is_plan_file(&path);
        if document && !plan && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The largest signature file read, in bytes (a real one is about 300).
const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

fn load_one(
    path: &Path,
    signer: Option<&SigningKey>,
    now: Timestamp,
) -> Result<ServedDocument, Vec<String>> {
    let lines = |diagnostics: Vec<crate::diag::Diagnostic>| {
        diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let metadata = std::fs::metadata(path)
        .map_err(|error| vec![format!("{}:1:1: cannot read: {error}", path.display())])?;
    let limit = crate::spec::parse::MAX_DOCUMENT_BYTES as u64;
    if metadata.len() > limit {
        return Err(vec![format!(
            "{}:1:1: the document is {} bytes, more than the limit of {limit}",
            path.display(),
            metadata.len()
        )]);
    }
    let body = std::fs::read(path)
        .map_err(|error| vec![format!("{}:1:1: cannot read: {error}", path.display())])?;
    let text = std::str::from_utf8(&body)
        .map_err(|error| vec![format!("{}:1:1: not UTF-8: {error}", path.display())])?;
    let document = crate::spec::parse::parse_document(path, text).map_err(lines)?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut signature_path = path.as_os_str().to_owned();
    signature_path.push(crate::wire::SIGNATURE_SUFFIX);
    let signature_path = PathBuf::from(signature_path);
    let (signature, who) = match std::fs::metadata(&signature_path) {
        Ok(metadata) => {
            if metadata.len() > MAX_SIGNATURE_BYTES {
                return Err(vec![format!(
                    "{}:1:1: the signature is {} bytes; a minisign signature is a few hundred",
                    signature_path.display(),
                    metadata.len()
                )]);
            }
            let text = std::fs::read_to_string(&signature_path).map_err(|error| {
                vec![format!(
                    "{}:1:1: cannot read: {error}",
                    signature_path.display()
                )]
            })?;
            if !text.starts_with("untrusted comment:") {
                return Err(vec![format!(
                    "{}:1:1: not a minisign signature (it must start with `untrusted comment:`)",
                    signature_path.display()
                )]);
            }
            (Some(text), Signer::File)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => match signer {
            Some(key) => {
                let signed_at = signing_time(&metadata, now);
                let comment = format!("timestamp:{signed_at} serial:{}", document.serial);
                let text = key.sign(&body, &comment).map_err(|error| {
                    vec![format!("{}:1:1: cannot sign: {error}", path.display())]
                })?;
                (Some(text), Signer::Hub(key.key_id.clone()))
            }
            None => (None, Signer::Unsigned),
        },
        Err(error) => {
            return Err(vec![format!(
                "{}:1:1: cannot read: {error}",
                signature_path.display()
            )])
        }
    };
    Ok(ServedDocument::new(
        name,
        &document,
        Bytes::from(body),
        signature,
        who,
    ))
}

/// The signing time the hub writes into a signature it makes, in seconds: when the file was
/// last written, but never later than `now`. Ed25519 signatures are deterministic, so the same
/// file signed again after a restart gets the same signature, and sites keep their ETag.
fn signing_time(metadata: &std::fs::Metadata, now: Timestamp) -> u64 {
    let now_seconds = now.as_millis() / 1000;
    metadata
        .modified()
        .ok()
        .and_then(|modified| modified.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(now_seconds, |since| since.as_secs().min(now_seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(serial: u64, selector: &[(&str, &str)]) -> ServedDocument {
        let parsed = crate::spec::Document {
            expires: None,
            serial,
            selector: selector
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            services: Vec::new(),
            analysis_templates: BTreeMap::new(),
        };
        ServedDocument::new(
            format!("doc-{serial}.toml"),
            &parsed,
            Bytes::from(format!("serial = {serial}\n")),
            None,
            Signer::Unsigned,
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn the_highest_serial_that_selects_the_site_wins() {
        let catalog = Catalog::from_documents(vec![
            document(3, &[]),
            document(5, &[("cohort", "pilot")]),
            document(7, &[("site", "store-9")]),
        ])
        .expect("catalog");
        let pilot = labels(&[("cohort", "pilot")]);
        let serial = |site: &str, labels: &BTreeMap<String, String>| {
            catalog.choose(site, labels).map(|document| document.serial)
        };
        assert_eq!(serial("store-1", &pilot), Some(5));
        assert_eq!(serial("store-1", &labels(&[])), Some(3));
        assert_eq!(serial("store-9", &labels(&[])), Some(7));
        // A label named `site` does not make a site another one.
        assert_eq!(serial("store-1", &labels(&[("site", "store-9")])), Some(3));
        let none =
            Catalog::from_documents(vec![document(5, &[("cohort", "pilot")])]).expect("catalog");
        assert!(none.choose("store-1", &labels(&[])).is_none());
    }

    #[test]
    fn two_documents_with_one_serial_are_refused() {
        let problems =
            Catalog::from_documents(vec![document(4, &[]), document(4, &[])]).expect_err("refused");
        assert!(problems[0].contains("both have serial 4"), "{problems:?}");
    }

    #[test]
    fn the_etag_changes_with_the_bytes_and_the_signature() {
        let base = etag_of(4, b"serial = 4", None);
        assert!(base.starts_with("\"4-") && base.ends_with('"'), "{base}");
        assert_ne!(base, etag_of(4, b"serial = 4 ", None));
        assert_ne!(base, etag_of(4, b"serial = 4", Some("sig")));
        assert_eq!(base, etag_of(4, b"serial = 4", None));
    }
}
