//! Applying what the site is told to run: the desired document (new, changed and removed
//! services) and the config reloaded on SIGHUP. Reading and validating the document is
//! `desired`; deciding what a changed spec means for a rollout is the core's.

use tracing::{error, info, warn};

use super::listeners::{bind_listener, preview_listen, spawn_proxy};
use super::{Error, Shell};
use crate::rollout::{Event, Rollout};
use crate::spec::{Document, ServiceSpec};
use std::sync::Arc;

impl Shell {
    /// Re-read the config files (SIGHUP). Settings the running agent can take are applied; the
    /// others are reported as needing a restart. An invalid config changes nothing. Returns
    /// whether the pull's settings (site, labels, source, trust) changed.
    pub(super) fn reload_config(&mut self) -> bool {
        let Some(path) = self.config.files.first().cloned() else {
            return false;
        };
        let new = match crate::config::load(&path) {
            Ok(config) => config,
            Err(diagnostics) => {
                for diagnostic in &diagnostics {
                    error!("{diagnostic}");
                }
                warn!(
                    errors = diagnostics.len(),
                    "the config is invalid; keeping the running one"
                );
                return false;
            }
        };
        let old = &self.config;
        let needs_restart: Vec<&str> = [
            ("agent.state_dir", old.state_dir != new.state_dir),
            ("agent.socket", old.socket != new.socket),
            ("agent.socket_mode", old.socket_mode != new.socket_mode),
            (
                "agent.worker_threads",
                old.worker_threads != new.worker_threads,
            ),
            ("runtime.kind", old.runtime != new.runtime),
            ("runtime.stop_grace", old.stop_grace != new.stop_grace),
            (
                "runtime.log_max_bytes",
                old.log_max_bytes != new.log_max_bytes,
            ),
            ("metrics.listen", old.metrics_listen != new.metrics_listen),
            // The sender runs with the settings (and the site name) it started with.
            ("reports", old.reports != new.reports),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect();
        if !needs_restart.is_empty() {
            warn!(keys = %needs_restart.join(", "), "changed settings take effect after a restart");
        }
        let source_changed = old.desired != new.desired
            || old.desired_trust != new.desired_trust
            || old.poll_interval != new.poll_interval
            || old.site != new.site
            || old.labels != new.labels;
        // What the running agent takes at once: identity and labels (a document may now select
        // this site or no longer), the desired source, and the drain grace of new listeners.
        self.config.site = new.site;
        self.config.labels = new.labels;
        self.config.desired = new.desired;
        self.config.desired_trust = new.desired_trust;
        self.config.poll_interval = new.poll_interval;
        self.config.shutdown_grace = new.shutdown_grace;
        self.config.files = new.files;
        info!(site = %self.config.site, "config reloaded");
        source_changed
    }

    /// Apply a desired document the pull accepted (valid, and selecting this site): new
    /// services, changed specs, removed services.
    pub(super) async fn apply_document(
        &mut self,
        document: Document,
        starting: bool,
    ) -> Result<(), Error> {
        info!(
            serial = document.serial,
            services = document.services.len(),
            "applying the desired document"
        );
        let document = Arc::new(document);
        self.document = Some(document.clone());
        let wanted: Vec<String> = document
            .services
            .iter()
            .map(|spec| spec.name.clone())
            .collect();
        for spec in &document.services {
            if let Err(error) = self.apply_spec(spec.clone()).await {
                if starting {
                    return Err(error);
                }
                error!(%error, "service not applied");
            }
        }
        for name in &wanted {
            self.report_following(name, document.serial);
        }
        let removed: Vec<String> = self
            .services
            .keys()
            .filter(|name| !wanted.contains(name))
            .cloned()
            .collect();
        for name in removed {
            self.remove_service(&name);
        }
        self.waiting_for_images
            .retain(|name, _| wanted.contains(name));
        self.order = wanted;
        self.supervisor.retain_services(self.order.clone());
        Ok(())
    }

    /// Tell the center that `name` follows the document `serial`, when applying it changed
    /// nothing the service reported (its spec was the same): so a fleet plan knows the service
    /// is on the new serial, and never counts an earlier Healthy for it.
    fn report_following(&mut self, name: &str, serial: u64) {
        let now = self.clock.now();
        let Some(slot) = self.services.get_mut(name) else {
            return;
        };
        if slot.reported_serial == Some(serial) {
            return;
        }
        let reports = self.reporting.for_serial(&slot.rollout, serial, now);
        if reports.is_empty() {
            return;
        }
        match self
            .store
            .save_rollout_reporting(name, &slot.rollout, &[], &reports)
        {
            Ok(_) => slot.reported_serial = Some(serial),
            Err(error) => {
                error!(service = %name, %error, "cannot record that the service follows the new document");
            }
        }
    }

    /// Apply a service's spec, unless it must first wait for its image (then it is applied
    /// once the image is present: `shell::images`).
    pub(super) async fn apply_spec(&mut self, spec: ServiceSpec) -> Result<(), Error> {
        if self.must_wait_for_image(&spec) {
            return Ok(());
        }
        self.apply_spec_now(spec).await
    }

    /// Apply a service's spec: open the service or move its listeners, then tell its rollout.
    pub(super) async fn apply_spec_now(&mut self, spec: ServiceSpec) -> Result<(), Error> {
        let name = spec.name.clone();
        let listen = spec.traffic.listen().to_owned();
        match self.services.get(&name) {
            None => {
                self.open_service(Rollout::new(spec.clone())).await?;
            }
            Some(slot) if slot.listen != listen => {
                // Bind the new address first; only then stop the old listener gracefully.
                let listener = bind_listener(&name, &listen).await?;
                if let Some(slot) = self.services.get_mut(&name) {
                    slot.proxy_stop.cancel();
                    (slot.proxy_stop, slot.proxy_task) = spawn_proxy(
                        listener,
                        slot.routes.subscribe(),
                        slot.metrics.clone(),
                        &self.shutdown,
                        self.config.shutdown_grace,
                    );
                    slot.listen = listen.clone();
                    info!(service = %name, %listen, "proxy moved");
                }
            }
            Some(_) => {}
        }
        self.sync_preview_listener(&name, preview_listen(&spec))
            .await?;
        self.apply(&name, Event::DesiredSpecChanged(Box::new(spec)));
        Ok(())
    }

    pub(super) fn remove_service(&mut self, name: &str) {
        self.waiting_for_images.remove(name);
        let Some(slot) = self.services.remove(name) else {
            return;
        };
        info!(service = %name, "service removed from the desired document");
        slot.proxy_stop.cancel();
        if let Some(preview) = &slot.preview {
            preview.stop.cancel();
        }
        self.supervisor.set_desired(name, Vec::new());
        for run in &slot.runs {
            if let Some(token) = self.analysis_tasks.remove(&run.id) {
                token.cancel();
            }
        }
        if let Err(error) = self.store.delete_rollout(name) {
            error!(service = %name, %error, "cannot delete the service's state");
        }
    }
}
