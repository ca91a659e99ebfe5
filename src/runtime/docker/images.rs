//! Images of the Docker runtime: inspect, pull (with byte progress summed over layers), load a
//! tarball (streamed from disk, never read whole into memory) and remove.
//!
//! It never removes an image by force (an image a container uses stays, and that is an error)
//! and never decides which images to fetch: the image preparation task does.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bollard::models::{BuildInfo, CreateImageInfo};
use bollard::query_parameters::{CreateImageOptions, ImportImageOptions, RemoveImageOptions};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{engine_error, status_of, DockerRuntime};
use crate::runtime::{Error, Images, PullProgress};

/// A pull or load may stream for this long before its answer starts (the engine answers a load
/// only once it has read the whole tarball).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Bytes read from a tarball at a time.
const CHUNK: usize = 256 * 1024;

impl Images for DockerRuntime {
    async fn present(&self, image: &str) -> Result<bool, Error> {
        let docker = self.docker().await?;
        match docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(error) if status_of(&error) == Some(404) => Ok(false),
            Err(error) => Err(engine_error(&format!("inspect image {image}"), error)),
        }
    }

    async fn pull(&self, image: &str, progress: &watch::Sender<PullProgress>) -> Result<(), Error> {
        let what = format!("pull {image}");
        let docker = self.docker().await?.clone().with_timeout(TRANSFER_TIMEOUT);
        let (repository, tag) = split_reference(image);
        let options = CreateImageOptions {
            from_image: Some(repository.to_string()),
            tag: Some(tag.to_string()),
            ..CreateImageOptions::default()
        };
        let mut layers = Layers::default();
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|error| pull_error(&what, error))?;
            if let Some(message) = info
                .error_detail
                .as_ref()
                .and_then(|detail| detail.message.clone())
            {
                return Err(stream_error(&what, message));
            }
            layers.update(&info);
            progress.send_replace(layers.progress());
        }
        Ok(())
    }

    async fn load(
        &self,
        archive: &Path,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<Vec<String>, Error> {
        let what = format!("load {}", archive.display());
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|error| Error::Engine {
                what: what.clone(),
                message: error.to_string(),
                transient: false,
            })?;
        let total = file.metadata().await.ok().map(|metadata| metadata.len());
        progress.send_replace(PullProgress {
            done_bytes: 0,
            total_bytes: total,
            detail: "sending the archive to the engine".to_string(),
        });
        let sender = progress.clone();
        let body = futures_util::stream::unfold((file, 0u64), move |(mut file, done)| {
            let sender = sender.clone();
            async move {
                let mut buffer = vec![0u8; CHUNK];
                match file.read(&mut buffer).await {
                    Ok(0) => None,
                    Ok(read) => {
                        buffer.truncate(read);
                        let done = done + read as u64;
                        sender.send_modify(|progress| progress.done_bytes = done);
                        Some((Ok(bytes::Bytes::from(buffer)), (file, done)))
                    }
                    Err(error) => Some((Err(error), (file, done))),
                }
            }
        });
        let docker = self.docker().await?.clone().with_timeout(TRANSFER_TIMEOUT);
        let options = ImportImageOptions {
            quiet: true,
            platform: None,
        };
        let mut stream = docker.import_image_stream(options, body, None);
        let mut loaded = Vec::new();
        while let Some(item) = stream.next().await {
            let info: BuildInfo = item.map_err(|error| pull_error(&what, error))?;
            if let Some(message) = info
                .error_detail
                .as_ref()
                .and_then(|detail| detail.message.clone())
            {
                return Err(stream_error(&what, message));
            }
            for line in info.stream.iter().flat_map(|text| text.lines()) {
                if let Some(reference) = line.trim().strip_prefix("Loaded image: ") {
                    loaded.push(reference.trim().to_string());
                }
            }
        }
        progress.send_modify(|progress| progress.detail = format!("loaded {}", loaded.join(", ")));
        Ok(loaded)
    }

    async fn remove(&self, image: &str) -> Result<(), Error> {
        let docker = self.docker().await?;
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            platforms: None,
        };
        match docker.remove_image(image, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(error) if status_of(&error) == Some(404) => Ok(()),
            Err(error) => Err(engine_error(&format!("remove image {image}"), error)),
        }
    }
}

/// `registry/name:tag` or `name@sha256:…` as the create-image endpoint takes it: the repository
/// and the tag (or digest); no tag is `latest` (an empty tag would pull every tag).
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((repository, digest)) = image.split_once('@') {
        return (repository, digest);
    }
    match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (image, "latest"),
    }
}

/// A failed pull: the engine's refusal (no such image, no access) is not transient; a broken
/// connection or an engine error is.
fn pull_error(what: &str, error: bollard::errors::Error) -> Error {
    if let bollard::errors::Error::DockerStreamError { error } = &error {
        return stream_error(what, error.clone());
    }
    engine_error(what, error)
}

/// An error reported inside the progress stream. The engine gives no code: names that do not
/// exist and refused access are final, everything else (a cut link, a registry down) may pass.
fn stream_error(what: &str, message: String) -> Error {
    let lower = message.to_ascii_lowercase();
    let transient = ![
        "not found",
        "manifest unknown",
        "unauthorized",
        "denied",
        "invalid reference",
        "does not exist",
    ]
    .iter()
    .any(|final_word| lower.contains(final_word));
    Error::Engine {
        what: what.to_string(),
        message,
        transient,
    }
}

/// Download progress per layer id, from the pull stream's `progressDetail`. podman's compat API
/// (4.3) reports no bytes at all, only each layer's "Pulling fs layer" and "Download complete":
/// then only the layer count moves.
#[derive(Default)]
struct Layers {
    layers: BTreeMap<String, Layer>,
    status: String,
}

#[derive(Default)]
struct Layer {
    done: u64,
    total: Option<u64>,
    complete: bool,
}

impl Layers {
    fn update(&mut self, info: &CreateImageInfo) {
        let status = info.status.clone().unwrap_or_default();
        let layer_id = info.id.clone().filter(|_| {
            // The tag's "Pulling from …" line carries the tag as its id: not a layer.
            !status.starts_with("Pulling from")
                && !status.starts_with("Digest:")
                && !status.starts_with("Status:")
        });
        let Some(id) = layer_id else {
            self.status = status;
            return;
        };
        let layer = self.layers.entry(id).or_default();
        let detail = info.progress_detail.as_ref();
        let current = detail
            .and_then(|detail| detail.current)
            .and_then(|n| u64::try_from(n).ok());
        let total = detail
            .and_then(|detail| detail.total)
            .and_then(|n| u64::try_from(n).ok())
            .filter(|total| *total > 0);
        match status.as_str() {
            // Extraction reports its own current/total: not bytes fetched.
            "Extracting" | "Pull complete" => {}
            "Download complete" | "Already exists" => {
                layer.complete = true;
                if let Some(total) = layer.total {
                    layer.done = total;
                }
            }
            _ => {
                if let Some(current) = current {
                    layer.done = current;
                }
                if total.is_some() {
                    layer.total = total;
                }
            }
        }
        self.status = status;
    }

    fn progress(&self) -> PullProgress {
        let done_bytes = self.layers.values().map(|layer| layer.done).sum();
        let totals: Vec<u64> = self
            .layers
            .values()
            .filter_map(|layer| layer.total)
            .collect();
        let complete = self.layers.values().filter(|layer| layer.complete).count();
        PullProgress {
            done_bytes,
            total_bytes: (!totals.is_empty()).then(|| totals.iter().sum()),
            detail: if self.layers.is_empty() {
                self.status.clone()
            } else {
                format!(
                    "{}: {complete} of {} layers downloaded",
                    self.status,
                    self.layers.len()
                )
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            split_reference("127.0.0.1:5000/x:1"),
            ("127.0.0.1:5000/x", "1")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/x"),
            ("127.0.0.1:5000/x", "latest")
        );
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_reference("r.example/a/b@sha256:abcd"),
            ("r.example/a/b", "sha256:abcd")
        );
    }

    fn info(id: &str, status: &str, current: i64, total: i64) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.to_string()),
            status: Some(status.to_string()),
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..CreateImageInfo::default()
        }
    }

    #[test]
    fn progress_sums_the_bytes_of_every_layer_and_ignores_extraction() {
        let mut layers = Layers::default();
        layers.update(&info("a", "Downloading", 100, 1000));
        layers.update(&info("b", "Downloading", 50, 500));
        layers.update(&info("a", "Downloading", 600, 1000));
        layers.update(&info("b", "Download complete", 0, 0));
        layers.update(&info("b", "Extracting", 10, 500));
        let progress = layers.progress();
        assert_eq!(progress.done_bytes, 1100);
        assert_eq!(progress.total_bytes, Some(1500));
        assert_eq!(progress.detail, "Extracting: 1 of 2 layers downloaded");
    }

    #[test]
    fn without_bytes_the_layer_count_moves_and_the_tag_is_no_layer() {
        let mut layers = Layers::default();
        layers.update(&CreateImageInfo {
            id: Some("1".to_string()),
            status: Some("Pulling from edgeroll-test/pull".to_string()),
            ..CreateImageInfo::default()
        });
        layers.update(&info("a", "Pulling fs layer", 0, 0));
        layers.update(&info("b", "Pulling fs layer", 0, 0));
        layers.update(&info("a", "Download complete", 0, 0));
        let progress = layers.progress();
        assert_eq!(progress.done_bytes, 0);
        assert_eq!(progress.total_bytes, None);
        assert_eq!(
            progress.detail,
            "Download complete: 1 of 2 layers downloaded"
        );
    }

    #[test]
    fn missing_images_are_final_and_cut_links_are_not() {
        assert!(!stream_error("pull", "manifest unknown: manifest unknown".into()).is_transient());
        assert!(stream_error("pull", "read tcp: connection reset by peer".into()).is_transient());
    }
}
