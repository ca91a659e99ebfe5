//! The [`Images`] side of the containerd backend: presence (the image record and its
//! unpacked snapshot), loading a tarball, pulling from a registry, removal. The content,
//! snapshot and lease work itself is `image.rs`'s; the registry protocol is
//! `runtime::registry`'s.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::Path;

use tokio::io::AsyncSeekExt;

use tokio::sync::watch;

use super::api::services::containers::v1 as containers;
use super::client::{self, engine_error};
use super::image::{normalize_reference, sha256_digest, BlobSource, BoxedReader, Descriptor};
use super::{tarball, ContainerdRuntime};
use crate::runtime::registry::{self, DirSink, Options, Reference, RegistryClient};
use crate::runtime::{Error, Images, PullProgress};

impl Images for ContainerdRuntime {
    async fn present(&self, image: &str) -> Result<bool, Error> {
        match self.inner.resolve_image(image).await {
            Ok(_) => Ok(true),
            Err(Error::ImageMissing { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn pull(&self, image: &str, progress: &watch::Sender<PullProgress>) -> Result<(), Error> {
        let reference = Reference::parse(image).map_err(|message| Error::Engine {
            what: format!("pull image {image}"),
            message,
            transient: false,
        })?;
        // The download is staged under the agent's state directory, keyed by the reference:
        // a link that drops (or an agent that restarts) resumes it with `Range` requests.
        let staging = self
            .inner
            .staging_dir
            .join(sha256_digest(reference.to_string().as_bytes()).replace(':', "-"));
        let sink = DirSink::new(&staging);
        let client = RegistryClient::new(Options::default())?;
        let pulled = client.pull(&reference, &sink, progress).await?;
        let target = pulled.target();
        let top = Descriptor {
            media_type: target.media_type.clone(),
            digest: target.digest.to_string(),
            size: i64::try_from(target.size).unwrap_or(i64::MAX),
            annotations: HashMap::new(),
            platform: None,
        };
        let names = [normalize_reference(image)];
        self.inner
            .images()
            .await?
            .import(&names, &top, &Staged(&sink), progress)
            .await?;
        // In containerd now; a staging directory left by a failed removal is only disk.
        if let Err(error) = tokio::fs::remove_dir_all(&staging).await {
            tracing::warn!(path = %staging.display(), %error, "cannot remove a pulled image's staging directory");
        }
        Ok(())
    }

    async fn load(
        &self,
        archive: &Path,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<Vec<String>, Error> {
        let path = archive.to_path_buf();
        let tarball = tokio::task::spawn_blocking(move || tarball::Tarball::open(&path))
            .await
            .map_err(|error| {
                client::local_error(
                    format!("read image archive {}", archive.display()),
                    error.to_string(),
                )
            })??;
        progress.send_replace(PullProgress {
            done_bytes: 0,
            total_bytes: Some(tarball.size),
            detail: format!("Loading {}", archive.display()),
        });
        let store = self.inner.images().await?;
        let mut names = Vec::new();
        for found in &tarball.images {
            store
                .import(&found.names, &found.target, &tarball, progress)
                .await?;
            names.extend(found.names.iter().cloned());
        }
        Ok(names)
    }

    async fn remove(&self, image: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let name = normalize_reference(image);
        let users = containers::containers_client::ContainersClient::new(inner.client.channel())
            .list(inner.client.request(containers::ListContainersRequest {
                filters: vec![format!("image=={name}")],
            }))
            .await
            .map_err(|status| engine_error("list containers", &status))?
            .into_inner()
            .containers;
        if let Some(user) = users.first() {
            return Err(Error::Engine {
                what: format!("remove image {name}"),
                message: format!("container {} uses it", user.id),
                transient: false,
            });
        }
        inner.images().await?.delete_image(&name).await
    }
}

/// The blobs a pull staged, read back for the import into containerd.
struct Staged<'a>(&'a DirSink);

impl BlobSource for Staged<'_> {
    async fn open(&self, digest: &str, offset: u64) -> Result<BoxedReader, Error> {
        let what = format!("read pulled blob {digest}");
        let digest = registry::Digest::parse(digest)
            .map_err(|message| client::local_error(&what, message))?;
        let path = self.0.blob_path(&digest);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|error| client::local_error(&what, format!("{}: {error}", path.display())))?;
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|error| client::local_error(&what, error.to_string()))?;
        Ok(Box::new(file))
    }
}
