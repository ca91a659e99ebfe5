//! Routing between the image preparation task and the rollouts: a spec that names an image not
//! yet on the site waits here, and is applied (so its rollout starts) once the image is present.
//! What to pull, when to retry and what to remove are `runtime::images`'s.

use tracing::{info, warn};

use super::Shell;
use crate::runtime::ImageEvent;

impl Shell {
    pub(super) async fn image_event(&mut self, event: ImageEvent) {
        match event {
            ImageEvent::Ready { image } => info!(%image, "image ready"),
            ImageEvent::Failed { image, reason, .. } => warn!(%image, "{reason}"),
        }
    }
}
