//! The listeners the shell owns for each service: binding the proxy (and, for blue-green, the
//! preview listener), moving it when the document changes its address, and spawning the proxy
//! task that serves it. It never decides weights: the routes come from the rollout state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Error, PreviewListener, ServiceSlot, Shell, RECENT_EVENTS, RECENT_RUNS};
use crate::analysis::AnalysisRun;
use crate::proxy::{self, Metrics, RouteTable};
use crate::rollout::Rollout;
use crate::spec::ServiceSpec;

impl Shell {
    /// Bind the proxy of a service and start serving it with an empty route table.
    pub(super) async fn open_service(&mut self, rollout: Rollout) -> Result<(), Error> {
        let name = rollout.service.clone();
        let listen = rollout.spec.traffic.listen().to_owned();
        let listener = bind_listener(&name, &listen).await?;
        let (routes, routes_rx) = watch::channel(Arc::new(RouteTable::default()));
        let metrics = Arc::new(Metrics::new());
        let (proxy_stop, proxy_task) = spawn_proxy(
            listener,
            routes_rx,
            metrics.clone(),
            &self.shutdown,
            self.config.shutdown_grace,
        );
        info!(service = %name, %listen, "proxy listening");
        let runs = self
            .store
            .load_analysis_runs::<AnalysisRun>(&name)
            .unwrap_or_else(|error| {
                warn!(service = %name, %error, "cannot load analysis runs");
                Vec::new()
            });
        let events = self
            .store
            .recent_events(&name, RECENT_EVENTS)
            .unwrap_or_default();
        let runs: VecDeque<AnalysisRun> = runs.into_iter().rev().take(RECENT_RUNS).rev().collect();
        let preview_listen = preview_listen(&rollout.spec);
        self.services.insert(
            name.clone(),
            ServiceSlot {
                rollout,
                instances: Vec::new(),
                routes,
                metrics,
                listen,
                proxy_stop,
                proxy_task,
                preview: None,
                runs,
                events: events.into_iter().collect(),
                reported_serial: None,
            },
        );
        self.sync_preview_listener(&name, preview_listen).await
    }

    /// Open, move or close the preview listener of a blue-green service.
    pub(super) async fn sync_preview_listener(
        &mut self,
        name: &str,
        wanted: Option<String>,
    ) -> Result<(), Error> {
        let Some(slot) = self.services.get_mut(name) else {
            return Ok(());
        };
        if slot.preview.as_ref().map(|preview| &preview.listen) == wanted.as_ref() {
            return Ok(());
        }
        let listener = match &wanted {
            Some(listen) => Some(bind_listener(name, listen).await?),
            None => None,
        };
        if let Some(old) = slot.preview.take() {
            old.stop.cancel();
        }
        if let (Some(listener), Some(listen)) = (listener, wanted) {
            let (routes, routes_rx) = watch::channel(Arc::new(RouteTable::default()));
            let (stop, task) = spawn_proxy(
                listener,
                routes_rx,
                slot.metrics.clone(),
                &self.shutdown,
                self.config.shutdown_grace,
            );
            info!(service = %name, %listen, "preview listener open");
            slot.preview = Some(PreviewListener {
                listen,
                routes,
                stop,
                task,
            });
        }
        self.publish_routes(name);
        Ok(())
    }
}

/// Bind a listener of `service`, naming both in the error.
pub(super) async fn bind_listener(service: &str, listen: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            service: service.to_owned(),
            listen: listen.to_owned(),
            source,
        })
}

/// Serve `listener` with the routes of `routes` until the returned token is cancelled.
pub(super) fn spawn_proxy(
    listener: TcpListener,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = shutdown.child_token();
    let task = tokio::spawn(proxy::serve(listener, routes, metrics, stop.clone(), grace));
    (stop, task)
}

/// The preview listener a spec asks for.
pub(super) fn preview_listen(spec: &ServiceSpec) -> Option<String> {
    match &spec.strategy {
        crate::spec::Strategy::BlueGreen(blue_green) => blue_green.preview_listen.clone(),
        crate::spec::Strategy::Canary(_) => None,
    }
}
