//! Image tarballs on disk (an OCI image layout, or `docker save`'s archive) as a [`BlobSource`]:
//! one pass over the tar headers finds every file's offset, and each blob is then streamed from
//! its offset, so a tarball is never held in memory.
//!
//! It owns reading tarballs; it never talks to containerd. A `docker save` archive names blobs by
//! path, not digest: their digests are computed by streaming them once, and the manifest that
//! ties them together is synthesised (an OCI manifest) and held in memory (it is small).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::image::{
    self, BlobSource, BoxedReader, Descriptor, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST,
};
use crate::runtime::Error;

const BLOCK: u64 = 512;

/// Where a file of the tarball is.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    size: u64,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
enum Blob {
    InTar(Span),
    Memory(Vec<u8>),
}

/// One image found in a tarball: the references it is tagged with and its top descriptor (a
/// manifest or an index).
#[derive(Debug, Clone)]
pub(super) struct TarImage {
    pub(super) names: Vec<String>,
    pub(super) target: Descriptor,
}

/// A scanned tarball.
#[derive(Debug)]
pub(super) struct Tarball {
    path: PathBuf,
    blobs: HashMap<String, Blob>,
    /// The images it holds, in the order the archive lists them.
    pub(super) images: Vec<TarImage>,
    /// Bytes of the archive file.
    pub(super) size: u64,
}

impl Tarball {
    /// Scan `path` (blocking I/O; run it off the async threads).
    pub(super) fn open(path: &Path) -> Result<Tarball, Error> {
        let what = format!("read image archive {}", path.display());
        let fail = |message: String| image::bad_image(&what, message);
        let mut file = File::open(path).map_err(|error| fail(error.to_string()))?;
        let size = file
            .metadata()
            .map_err(|error| fail(error.to_string()))?
            .len();
        let files = scan(&mut file).map_err(|error| fail(error.to_string()))?;
        let read_small = |file: &mut File, name: &str| -> Result<Vec<u8>, Error> {
            let span = files
                .get(name)
                .ok_or_else(|| fail(format!("it has no {name}")))?;
            read_span(file, *span, image::MAX_METADATA_BYTES)
                .map_err(|error| fail(error.to_string()))
        };
        let mut blobs = HashMap::new();
        for (name, span) in &files {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                blobs.insert(format!("sha256:{hex}"), Blob::InTar(*span));
            }
        }
        let images = if files.contains_key("index.json") {
            let index: OciIndex = serde_json::from_slice(&read_small(&mut file, "index.json")?)
                .map_err(|error| fail(format!("index.json: {error}")))?;
            index
                .manifests
                .into_iter()
                .map(|target| TarImage {
                    names: image_names(&target),
                    target,
                })
                .collect()
        } else if files.contains_key("manifest.json") {
            let manifest: Vec<DockerManifest> =
                serde_json::from_slice(&read_small(&mut file, "manifest.json")?)
                    .map_err(|error| fail(format!("manifest.json: {error}")))?;
            let mut images = Vec::new();
            for entry in manifest {
                let config_span = *files
                    .get(entry.config.trim_start_matches("./"))
                    .ok_or_else(|| fail(format!("it has no {}", entry.config)))?;
                let config_digest =
                    digest_span(&mut file, config_span).map_err(|error| fail(error.to_string()))?;
                blobs.insert(config_digest.clone(), Blob::InTar(config_span));
                let mut layers = Vec::new();
                for layer in &entry.layers {
                    let span = *files
                        .get(layer.trim_start_matches("./"))
                        .ok_or_else(|| fail(format!("it has no {layer}")))?;
                    let digest =
                        digest_span(&mut file, span).map_err(|error| fail(error.to_string()))?;
                    let gzip = is_gzip(&mut file, span).map_err(|error| fail(error.to_string()))?;
                    blobs.insert(digest.clone(), Blob::InTar(span));
                    layers.push(serde_json::json!({
                        "mediaType": if gzip { MEDIA_OCI_LAYER_GZIP } else { MEDIA_OCI_LAYER },
                        "digest": digest,
                        "size": span.size,
                    }));
                }
                let manifest = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": MEDIA_OCI_MANIFEST,
                    "config": {
                        "mediaType": MEDIA_OCI_CONFIG,
                        "digest": config_digest,
                        "size": config_span.size,
                    },
                    "layers": layers,
                }))
                .map_err(|error| fail(error.to_string()))?;
                let digest = image::sha256_digest(&manifest);
                let target = Descriptor {
                    media_type: MEDIA_OCI_MANIFEST.to_string(),
                    digest: digest.clone(),
                    size: manifest.len() as i64,
                    annotations: HashMap::new(),
                    platform: None,
                };
                blobs.insert(digest, Blob::Memory(manifest));
                images.push(TarImage {
                    names: entry
                        .repo_tags
                        .unwrap_or_default()
                        .iter()
                        .map(|tag| image::normalize_reference(tag))
                        .collect(),
                    target,
                });
            }
            images
        } else {
            return Err(fail(
                "it is neither an OCI image layout (index.json) nor a docker archive (manifest.json)"
                    .to_string(),
            ));
        };
        Ok(Tarball {
            path: path.to_path_buf(),
            blobs,
            images,
            size,
        })
    }
}

impl BlobSource for Tarball {
    async fn open(&self, digest: &str, offset: u64) -> Result<BoxedReader, Error> {
        let what = format!("read blob {digest} from {}", self.path.display());
        match self.blobs.get(digest) {
            None => Err(image::bad_image(&what, "the archive does not hold it")),
            Some(Blob::Memory(bytes)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                Ok(Box::new(io::Cursor::new(bytes[start..].to_vec())))
            }
            Some(Blob::InTar(span)) => {
                let mut file = tokio::fs::File::open(&self.path)
                    .await
                    .map_err(|error| image::bad_image(&what, error.to_string()))?;
                let skip = offset.min(span.size);
                file.seek(SeekFrom::Start(span.offset + skip))
                    .await
                    .map_err(|error| image::bad_image(&what, error.to_string()))?;
                let reader: Box<dyn AsyncRead + Send + Unpin> =
                    Box::new(file.take(span.size - skip));
                Ok(reader)
            }
        }
    }
}

/// The names an OCI layout's index entry is tagged with (containerd's and the OCI annotation).
fn image_names(target: &Descriptor) -> Vec<String> {
    let mut names = Vec::new();
    for key in [
        "io.containerd.image.name",
        "org.opencontainers.image.ref.name",
    ] {
        if let Some(name) = target.annotations.get(key) {
            // A bare tag (`1.0`) in the OCI annotation names no repository.
            if key == "org.opencontainers.image.ref.name"
                && !name.contains(':')
                && !name.contains('/')
            {
                continue;
            }
            let name = image::normalize_reference(name);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[derive(Debug, Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Every regular file of the tar stream with its data's offset and size.
fn scan(file: &mut File) -> io::Result<HashMap<String, Span>> {
    let mut files = HashMap::new();
    let mut position = 0u64;
    let mut long_name: Option<String> = None;
    let mut pax_path: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    let mut header = [0u8; BLOCK as usize];
    loop {
        file.seek(SeekFrom::Start(position))?;
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error),
        }
        if header.iter().all(|byte| *byte == 0) {
            break;
        }
        let size = pax_size
            .take()
            .map_or_else(|| parse_size(&header[124..136]), Ok)?;
        let data = position + BLOCK;
        let kind = header[156];
        match kind {
            b'L' => {
                let bytes = read_span(file, Span { offset: data, size }, 1 << 16)?;
                long_name = Some(text(&bytes));
            }
            b'x' => {
                let bytes = read_span(file, Span { offset: data, size }, 1 << 20)?;
                for (key, value) in parse_pax(&bytes) {
                    match key.as_str() {
                        "path" => pax_path = Some(value),
                        "size" => pax_size = value.parse().ok(),
                        _ => {}
                    }
                }
            }
            b'0' | 0 | b'7' => {
                let name = match (pax_path.take(), long_name.take()) {
                    (Some(name), _) | (None, Some(name)) => name,
                    (None, None) => header_name(&header),
                };
                let name = name.trim_start_matches("./").to_string();
                files.insert(name, Span { offset: data, size });
            }
            _ => {
                pax_path = None;
                long_name = None;
            }
        }
        position = data + size.div_ceil(BLOCK) * BLOCK;
    }
    Ok(files)
}

fn header_name(header: &[u8]) -> String {
    let name = text(&header[0..100]);
    let ustar = &header[257..262] == b"ustar";
    let prefix = if ustar {
        text(&header[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

fn text(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A size field: octal text, or GNU base-256 when the high bit is set.
fn parse_size(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|byte| byte & 0x80 != 0) {
        let mut value = 0u64;
        for byte in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|value| value.checked_add(u64::from(*byte)))
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar size overflows"))?;
        }
        return Ok(value);
    }
    let digits = text(field);
    let digits = digits.trim_matches(|c: char| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 8)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad tar size field"))
}

/// `<length> <key>=<value>\n` records.
fn parse_pax(bytes: &[u8]) -> Vec<(String, String)> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|byte| *byte == b' ') else {
            break;
        };
        let Some(length) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|length| length.parse::<usize>().ok())
        else {
            break;
        };
        if length <= space || length > rest.len() {
            break;
        }
        let record = &rest[space + 1..length];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(equals) = record.iter().position(|byte| *byte == b'=') {
            records.push((
                String::from_utf8_lossy(&record[..equals]).into_owned(),
                String::from_utf8_lossy(&record[equals + 1..]).into_owned(),
            ));
        }
        rest = &rest[length..];
    }
    records
}

fn read_span(file: &mut File, span: Span, limit: u64) -> io::Result<Vec<u8>> {
    if span.size > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a metadata file of {} bytes is larger than {limit}",
                span.size
            ),
        ));
    }
    file.seek(SeekFrom::Start(span.offset))?;
    let mut bytes = Vec::with_capacity(span.size as usize);
    file.take(span.size).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn digest_span(file: &mut File, span: Span) -> io::Result<String> {
    file.seek(SeekFrom::Start(span.offset))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut reader = file.take(span.size);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(image::hex_digest(context.finish()))
}

fn is_gzip(file: &mut File, span: Span) -> io::Result<bool> {
    if span.size < 2 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(span.offset))?;
    let mut magic = [0u8; 2];
    file.read_exact(&mut magic)?;
    Ok(magic == [0x1f, 0x8b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_are_parsed() {
        let records = parse_pax(b"16 path=blobs/x\n11 size=42\n");
        assert_eq!(
            records,
            vec![
                ("path".to_string(), "blobs/x".to_string()),
                ("size".to_string(), "42".to_string())
            ]
        );
    }

    #[test]
    fn sizes_are_octal_or_base_256() {
        assert_eq!(parse_size(b"00000001750\0").ok(), Some(1000));
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 5;
        assert_eq!(parse_size(&field).ok(), Some(5));
    }
}
