//! The [`Images`] side of the containerd backend: presence (the image record and its
//! unpacked snapshot), loading a tarball, pulling from a registry, removal. The content,
//! snapshot and lease work itself is `image.rs`'s; the registry protocol is
//! `runtime::registry`'s.

use std::path::Path;

use tokio::sync::watch;

use super::api::services::containers::v1 as containers;
use super::client::{self, engine_error};
use super::image::normalize_reference;
use super::{tarball, ContainerdRuntime};
use crate::runtime::{Error, Images, PullProgress};

impl Images for ContainerdRuntime {
    async fn present(&self, image: &str) -> Result<bool, Error> {
        match self.inner.resolve_image(image).await {
            Ok(_) => Ok(true),
            Err(Error::ImageMissing { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn pull(
        &self,
        image: &str,
        _progress: &watch::Sender<PullProgress>,
    ) -> Result<(), Error> {
        Err(Error::Unsupported {
            runtime: "containerd",
            what: format!(
                "pull {image} yet (no registry client in this build): load it from an imageArchive"
            ),
        })
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
