//! The pull's file source: the document and its `.minisig` next to it, read within the size
//! limit, and the fingerprints that tell when either changed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::wire;

/// `desired.toml` → `desired.toml.minisig`.
pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(wire::SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

pub(super) fn fingerprint(path: &Path) -> (Option<SystemTime>, u64) {
    std::fs::metadata(path)
        .map(|metadata| (metadata.modified().ok(), metadata.len()))
        .unwrap_or((None, 0))
}

pub(super) enum ReadError {
    TooLarge(String),
    Io(std::io::Error),
}

pub(super) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let metadata = std::fs::metadata(path).map_err(ReadError::Io)?;
    if metadata.len() > limit {
        return Err(ReadError::TooLarge(format!(
            "{} is {} bytes, more than the limit of {limit} (desired.max_document_bytes)",
            path.display(),
            metadata.len()
        )));
    }
    std::fs::read(path).map_err(ReadError::Io)
}
