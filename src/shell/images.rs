//! Routing between the image preparation task and the rollouts: a spec that names an image not
//! yet on the site waits here, and is applied (so its rollout starts) once the task says the
//! image is present. So step 0 never starts, and no pause or progress deadline runs, while an
//! image downloads. What to pull, when to retry and what to remove are `runtime::images`'s.

use std::collections::BTreeSet;

use tracing::{error, info, warn};

use super::Shell;
use crate::runtime::{ImageEvent, ImagesDesired};
use crate::spec::ServiceSpec;
use crate::store::EventRecord;

/// The event of a failed attempt to make an image present.
pub(super) const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
/// The event of an image that became present for a waiting revision.
pub(super) const IMAGE_READY: &str = "ImageReady";

impl Shell {
    /// Whether `spec` must wait for its image: it names one (on a container runtime) and it is
    /// a template the service has not been asked to run before. A spec that no longer waits
    /// leaves the waiting list.
    pub(super) fn must_wait_for_image(&mut self, spec: &ServiceSpec) -> bool {
        let waits = self.images.is_some()
            && spec.template.container.is_some()
            && self
                .services
                .get(&spec.name)
                .and_then(|slot| slot.rollout.desired_template.as_ref())
                != Some(&spec.template);
        if waits {
            if self.waiting_for_images.get(&spec.name) != Some(spec) {
                info!(
                    service = %spec.name,
                    version = %spec.template.version,
                    image = spec.template.container.as_ref().map_or("", |c| c.image.as_str()),
                    "waiting for the image before the rollout starts"
                );
            }
            self.waiting_for_images
                .insert(spec.name.clone(), spec.clone());
        } else {
            self.waiting_for_images.remove(&spec.name);
        }
        waits
    }

    /// Tell the image task what to prepare (every waiting spec's image) and what to keep (every
    /// image a kept revision, the desired template or a waiting spec names).
    pub(super) fn sync_images(&self) {
        let Some(images) = &self.images else {
            return;
        };
        let prepare = self
            .waiting_for_images
            .values()
            .filter_map(|spec| spec.template.container.clone())
            .collect::<Vec<_>>();
        let mut keep: BTreeSet<String> = prepare.iter().map(|spec| spec.image.clone()).collect();
        for slot in self.services.values() {
            let rollout = &slot.rollout;
            let templates = rollout
                .revisions
                .iter()
                .map(|revision| &revision.template)
                .chain(rollout.desired_template.as_ref());
            keep.extend(
                templates
                    .filter_map(|template| template.container.as_ref())
                    .map(|container| container.image.clone()),
            );
        }
        images.set_desired(ImagesDesired { prepare, keep });
    }

    /// What the image task said: apply the specs that waited for a ready image; record a
    /// failed attempt as an event of every service waiting for it.
    pub(super) async fn image_event(&mut self, event: ImageEvent) {
        let now = self.clock.now();
        match event {
            ImageEvent::Ready { image } => {
                for spec in self.waiting_for(&image) {
                    self.waiting_for_images.remove(&spec.name);
                    self.service_event(
                        &spec.name,
                        IMAGE_READY,
                        now,
                        format!(
                            "image {image} is present: the rollout of {} starts",
                            spec.template.version
                        ),
                    );
                    let name = spec.name.clone();
                    if let Err(error) = self.apply_spec_now(spec).await {
                        error!(service = %name, %error, "service not applied");
                    }
                }
            }
            ImageEvent::Failed {
                image,
                reason,
                attempt,
                retry_in,
            } => {
                for name in self.waiting_for(&image).into_iter().map(|spec| spec.name) {
                    warn!(service = %name, %image, attempt, "image not ready: {reason}");
                    self.service_event(
                        &name,
                        IMAGE_PULL_FAILED,
                        now,
                        format!(
                            "image {image}, attempt {attempt}: {reason}; next attempt in {:.1}s \
                             (what runs keeps running)",
                            retry_in.as_secs_f64()
                        ),
                    );
                }
            }
        }
    }

    /// The specs waiting for `image`.
    fn waiting_for(&self, image: &str) -> Vec<ServiceSpec> {
        self.waiting_for_images
            .values()
            .filter(|spec| {
                spec.template
                    .container
                    .as_ref()
                    .is_some_and(|container| container.image == image)
            })
            .cloned()
            .collect()
    }

    /// An event of one service that the core did not make (kept in memory for status; a
    /// service that does not run yet keeps it with the site's events).
    fn service_event(
        &mut self,
        name: &str,
        kind: &str,
        at: crate::time::Timestamp,
        message: String,
    ) {
        let record = EventRecord {
            service: name.to_owned(),
            at,
            kind: kind.to_owned(),
            message,
        };
        match self.services.get_mut(name) {
            Some(slot) => {
                slot.events.push_back(record);
                if slot.events.len() > super::RECENT_EVENTS {
                    slot.events.pop_front();
                }
            }
            None => {
                let message = format!("service {name}: {}", record.message);
                self.site_event(record.kind, at, message);
            }
        }
    }
}
