//! Where fetched blobs go: the [`BlobSink`] trait a backend implements (containerd's content
//! store: `Content.Write` with a ref per digest, its `STAT` offset, `Commit` with the expected
//! digest, `Abort`), and [`DirSink`], a directory of partial and complete blobs.
//!
//! A sink keeps partial downloads across attempts; that is what makes a fetch resumable. It
//! must never make a blob visible as complete unless its bytes have the descriptor's size and
//! digest.

use std::future::Future;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::manifest::Descriptor;
use super::reference::Digest;

/// How much of a blob a sink holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The blob is complete (committed): nothing to fetch.
    Complete,
    /// The first `n` bytes of a download are held (0: nothing).
    Partial(u64),
}

/// A sink's failure (disk full, content store down); the fetch reports it as not resumable by
/// the network alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Storage for blobs being fetched. Calls for one blob come in order from one fetch at a time:
/// `held`, then `write`s at increasing offsets (the first at what `held` said, or at 0 after
/// a `discard`), then `commit` or `discard`.
pub trait BlobSink: Send + Sync {
    /// How much of `blob` is held. containerd: `Info(digest)` exists → `Complete`, else the
    /// ingest's `Status(ref).offset`.
    fn held(&self, blob: &Descriptor) -> impl Future<Output = Result<Held, SinkError>> + Send;

    /// Store `bytes` at offset `at` of `blob`'s download; `at` is always the length held.
    fn write(
        &self,
        blob: &Descriptor,
        at: u64,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Make the download complete. It must refuse (and keep nothing visible) unless what is
    /// held is `blob.size` bytes whose sha256 is `blob.digest`: the fetch checks what it
    /// streamed, but only the sink has the bytes of an earlier attempt.
    fn commit(&self, blob: &Descriptor) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Drop what is held of an unfinished download (it was corrupt, or the registry restarted
    /// from byte 0). containerd: `Abort(ref)`.
    fn discard(&self, blob: &Descriptor) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// A directory of blobs: `<dir>/sha256/<hex>` complete, `<dir>/partial/<hex>` in progress.
#[derive(Debug, Clone)]
pub struct DirSink {
    dir: PathBuf,
}

impl DirSink {
    /// A sink under `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> DirSink {
        DirSink { dir: dir.into() }
    }

    /// Where a complete blob is.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    /// Where a partial download is.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("partial").join(digest.hex())
    }
}

fn failed(what: &str, path: &Path, error: std::io::Error) -> SinkError {
    SinkError(format!("{what} {}: {error}", path.display()))
}

impl BlobSink for DirSink {
    async fn held(&self, blob: &Descriptor) -> Result<Held, SinkError> {
        if tokio::fs::try_exists(self.blob_path(&blob.digest))
            .await
            .unwrap_or(false)
        {
            return Ok(Held::Complete);
        }
        let partial = self.partial_path(&blob.digest);
        match tokio::fs::metadata(&partial).await {
            Ok(metadata) => Ok(Held::Partial(metadata.len())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Held::Partial(0)),
            Err(error) => Err(failed("read", &partial, error)),
        }
    }

    async fn write(&self, blob: &Descriptor, at: u64, bytes: &[u8]) -> Result<(), SinkError> {
        let partial = self.partial_path(&blob.digest);
        if let Some(parent) = partial.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|error| failed("create", parent, error))?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial)
            .await
            .map_err(|error| failed("open", &partial, error))?;
        let length = file
            .metadata()
            .await
            .map_err(|error| failed("read", &partial, error))?
            .len();
        if length != at {
            return Err(SinkError(format!(
                "write at {at} of {}, which holds {length} bytes",
                partial.display()
            )));
        }
        file.seek(SeekFrom::Start(at))
            .await
            .map_err(|error| failed("seek", &partial, error))?;
        file.write_all(bytes)
            .await
            .map_err(|error| failed("write", &partial, error))?;
        file.flush()
            .await
            .map_err(|error| failed("write", &partial, error))
    }

    async fn commit(&self, blob: &Descriptor) -> Result<(), SinkError> {
        let partial = self.partial_path(&blob.digest);
        if blob.size == 0 {
            // An empty blob gets no write: commit creates it.
            self.write(blob, 0, &[]).await?;
        }
        let mut file = tokio::fs::File::open(&partial)
            .await
            .map_err(|error| failed("open", &partial, error))?;
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buffer = vec![0u8; 64 * 1024];
        let mut length = 0u64;
        loop {
            let read = file
                .read(&mut buffer)
                .await
                .map_err(|error| failed("read", &partial, error))?;
            if read == 0 {
                break;
            }
            context.update(&buffer[..read]);
            length += read as u64;
        }
        let digest = Digest::from_ring(context.finish());
        if length != blob.size || digest != blob.digest {
            return Err(SinkError(format!(
                "{} holds {length} bytes with digest {digest}, not {} bytes with {}",
                partial.display(),
                blob.size,
                blob.digest
            )));
        }
        file.sync_all()
            .await
            .map_err(|error| failed("sync", &partial, error))?;
        let complete = self.blob_path(&blob.digest);
        if let Some(parent) = complete.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|error| failed("create", parent, error))?;
        }
        tokio::fs::rename(&partial, &complete)
            .await
            .map_err(|error| failed("rename", &partial, error))
    }

    async fn discard(&self, blob: &Descriptor) -> Result<(), SinkError> {
        let partial = self.partial_path(&blob.digest);
        match tokio::fs::remove_file(&partial).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(failed("remove", &partial, error)),
        }
    }
}
