//! The agent's event loop: the I/O shell around the pure rollout core.
//!
//! One task owns every service's `Rollout` and is the only caller of `rollout::step`. Everything
//! else (the runtime supervisor, the proxies, analysis tasks, the API, the desired-document
//! watcher) sends it inputs over bounded channels and receives commands or `watch` values back.
//! For each input the loop calls `step`, **commits the new state and its events to the store, and
//! only then executes the effects**; a state that cannot be saved is not applied.
//! Start-up takes the same path as every update: persisted state is loaded, its effects are
//! re-derived with `rollout::resume_effects`, and the desired document is applied as an event.
//!
//! This module must never decide anything about a rollout (that is `rollout` and `analysis`), and
//! it is the only place that reads the clock (`shell::clock`).

mod analysis_task;
pub mod clock;
mod desired;
mod document;
mod images;
mod listeners;
mod status;
mod test_hooks;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::analysis::AnalysisRun;
use crate::api::types::Status;
use crate::api::ApiCommand;
use crate::config::Config;
use crate::metrics::ProxyMetrics;
use crate::proxy::{Metrics, Pool, RouteTable};
use crate::pull::{self, PullEvent, Puller};
use crate::rollout::{self, Effect, Event, Rollout};
use crate::runtime::{
    self, DesiredRevision, InstanceStatus, InstancesChanged, SupervisorConfig, SupervisorHandle,
};
use crate::spec::Document;
use crate::store::{EventRecord, Store};

pub use clock::Clock;

/// Capacity of the loop's input channels; senders wait when it is full (backpressure).
const INPUT_CHANNEL_CAPACITY: usize = 256;
/// Recent events kept in memory per service for status.
const RECENT_EVENTS: usize = 20;
/// Analysis runs shown per service.
const RECENT_RUNS: usize = 5;
/// Delay before an analysis measurement that failed to be scheduled is retried.
const ANALYSIS_IDLE_RECHECK: Duration = Duration::from_secs(1);

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened.
    #[error("cannot open the state store: {0}")]
    Store(#[from] crate::store::Error),
    /// A proxy listener could not be bound.
    #[error("cannot listen on {listen} for service {service}: {source}")]
    Listen {
        /// The service.
        service: String,
        /// Its listener address.
        listen: String,
        /// Why.
        source: std::io::Error,
    },
    /// The `/metrics` listener (`metrics.listen`) could not be bound.
    #[error("cannot listen on {listen} for /metrics (metrics.listen): {source}")]
    MetricsListen {
        /// The configured address.
        listen: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The API socket could not be bound.
    #[error("cannot bind the API socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The report sender could not start.
    #[error("cannot start the report sender: {0}")]
    Reports(#[from] crate::report::SenderError),
    /// The runtime could not start (a container engine's socket that cannot be used).
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] runtime::Error),
    /// The loop task ended abnormally.
    #[error("the agent's event loop stopped: {0}")]
    Loop(String),
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    /// Live status, as served by the API.
    pub status: watch::Receiver<Arc<Status>>,
    /// Operator actions, as the API sends them.
    pub commands: mpsc::Sender<ApiCommand>,
    /// Ask for the desired document to be re-read (as SIGHUP does).
    pub reload: mpsc::Sender<()>,
    /// The workloads' supervisor (the demo stops every workload at the end).
    pub supervisor: SupervisorHandle,
    task: JoinHandle<()>,
}

impl Agent {
    /// Wait until the agent has stopped (after `shutdown` was cancelled).
    pub async fn stopped(self) -> Result<(), Error> {
        self.task
            .await
            .map_err(|error| Error::Loop(error.to_string()))
    }
}

/// Run the agent until `shutdown` (SIGTERM in `edgeroll run`).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let agent = start(config, shutdown).await?;
    crate::systemd::ready(&status::summary(&agent.status.borrow()));
    agent.stopped().await
}

/// Start the agent: open the store, adopt workloads, listen, and run the loop in a task.
/// Returns once every listener is bound, so the agent is ready when this returns.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Agent, Error> {
    let clock = Clock::system();
    let store = Arc::new(Store::open(&config.state_dir)?);
    let persisted: Vec<(String, Rollout)> = store.load_rollouts()?;
    // Bound once the store's lock is held (a second agent is refused by that, with its pid) and
    // before any proxy or workload runs, so a taken address changes nothing.
    let metrics_listener = match config.metrics_listen {
        Some(listen) => Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|source| Error::MetricsListen { listen, source })?,
        ),
        None => None,
    };

    let (instances_tx, instances_rx) = mpsc::channel(INPUT_CHANNEL_CAPACITY);
    let supervisor_shutdown = shutdown.child_token();
    let (image_events_tx, image_events_rx) = mpsc::channel(INPUT_CHANNEL_CAPACITY);
    let started = runtime::start(
        &config.runtime,
        SupervisorConfig {
            log_dir: config.state_dir.join("logs"),
            log_max_bytes: config.log_max_bytes,
            stop_grace: config.stop_grace,
        },
        &config.state_dir,
        store.clone(),
        store.clone(),
        instances_tx,
        image_events_tx,
        supervisor_shutdown,
    )?;
    let supervisor = started.supervisor;

    let (status_tx, status_rx) = watch::channel(Arc::new(status::empty(&config.site)));
    let (commands_tx, commands_rx) = mpsc::channel(INPUT_CHANNEL_CAPACITY);
    let (internal_tx, internal_rx) = mpsc::channel(INPUT_CHANNEL_CAPACITY);
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let (proxy_metrics_tx, proxy_metrics_rx) = watch::channel(Arc::new(ProxyMetrics::new()));
    let sender = crate::report::spawn(&config, store.clone(), clock, shutdown.child_token())?;
    let reports_rx = sender.map(|sender| sender.status);

    let mut shell = Shell {
        config: config.clone(),
        clock,
        store,
        supervisor: supervisor.clone(),
        images: started.images,
        jobs: started.jobs,
        waiting_for_images: BTreeMap::new(),
        services: BTreeMap::new(),
        order: Vec::new(),
        document: None,
        pull: None,
        source: None,
        site_events: VecDeque::new(),
        analysis_tasks: BTreeMap::new(),
        reporting: crate::report::Reporting::new(&config),
        reports: reports_rx.clone(),
        status_tx,
        proxy_metrics_tx,
        internal_tx,
        shutdown: shutdown.clone(),
    };

    // Persisted services first: they serve again before anything is re-read.
    for (name, rollout) in persisted {
        shell.open_service(rollout).await?;
        shell.order.push(name);
    }
    for name in shell.order.clone() {
        shell.resume(&name);
    }
    // Refusals survive a restart, so `edgeroll get` still says why a document was refused.
    match shell.store.recent_refusals(RECENT_EVENTS) {
        Ok(refusals) => {
            for refusal in refusals {
                shell.site_events.push_back(EventRecord {
                    service: String::new(),
                    at: refusal.at,
                    kind: desired::DOCUMENT_REFUSED.to_owned(),
                    message: format!("{}: {}", refusal.rule, refusal.message),
                });
            }
        }
        Err(error) => warn!(%error, "cannot read the refused documents"),
    }
    let mut puller = Puller::new(&config, shell.store.clone(), clock);
    for event in puller.initial() {
        shell.pull_event(event, true).await?;
    }
    let (pull_tx, pull_rx) = mpsc::channel(INPUT_CHANNEL_CAPACITY);
    shell.pull = Some(puller.spawn(pull_tx.clone(), shutdown.clone()));

    let api_listener =
        crate::api::bind_with_mode(&config.socket, config.socket_mode).map_err(|source| {
            Error::Socket {
                path: config.socket.clone(),
                source,
            }
        })?;
    tokio::spawn(crate::api::serve(
        api_listener,
        status_rx.clone(),
        commands_tx.clone(),
        shutdown.child_token(),
    ));
    if let Some(listener) = metrics_listener {
        let sources = crate::metrics::Sources {
            status: status_rx.clone(),
            proxies: proxy_metrics_rx,
        };
        if let Ok(listen) = listener.local_addr() {
            info!(%listen, "serving the agent's own /metrics");
        }
        tokio::spawn(crate::metrics::serve(
            listener,
            sources,
            shutdown.child_token(),
        ));
    }
    shell.sync_images();
    shell.publish_status();
    info!(site = %config.site, services = shell.services.len(), "edgeroll agent ready");

    let inputs = Inputs {
        instances: instances_rx,
        commands: commands_rx,
        internal: internal_rx,
        reload: reload_rx,
        pull: pull_rx,
        pull_tx,
        reports: reports_rx,
        images: image_events_rx,
        image_progress: shell.images.as_ref().map(runtime::ImagesHandle::subscribe),
    };
    let task = tokio::spawn(async move { shell.run(inputs).await });
    Ok(Agent {
        status: status_rx,
        commands: commands_tx,
        reload: reload_tx,
        supervisor,
        task,
    })
}

/// What analysis tasks tell the loop.
#[derive(Debug)]
enum Internal {
    /// A run recorded a round of measurements (not yet persisted: the loop commits it).
    AnalysisUpdated(Box<AnalysisRun>),
}

struct Inputs {
    instances: mpsc::Receiver<InstancesChanged>,
    commands: mpsc::Receiver<ApiCommand>,
    internal: mpsc::Receiver<Internal>,
    reload: mpsc::Receiver<()>,
    pull: mpsc::Receiver<PullEvent>,
    /// Handed to a new pull task when the desired settings change.
    pull_tx: mpsc::Sender<PullEvent>,
    /// The report outbox's status, from the sender task.
    reports: Option<watch::Receiver<Option<crate::api::types::ReportsStatus>>>,
    /// What the image preparation task says (container runtimes only).
    images: mpsc::Receiver<runtime::ImageEvent>,
    /// Its progress, so status follows a download (container runtimes only).
    image_progress: Option<runtime::images::ProgressReceiver>,
}

/// One service and everything the shell keeps for it.
struct ServiceSlot {
    rollout: Rollout,
    instances: Vec<InstanceStatus>,
    routes: watch::Sender<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    listen: String,
    proxy_stop: CancellationToken,
    proxy_task: JoinHandle<()>,
    /// Blue-green: the preview listener, serving only the preview revision.
    preview: Option<PreviewListener>,
    runs: VecDeque<AnalysisRun>,
    events: VecDeque<EventRecord>,
    /// The document serial of the last report made for this service since the agent started.
    reported_serial: Option<u64>,
}

/// The preview listener of a blue-green service (Argo's `previewService`).
struct PreviewListener {
    listen: String,
    routes: watch::Sender<Arc<RouteTable>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Shell {
    config: Config,
    clock: Clock,
    store: Arc<Store>,
    supervisor: SupervisorHandle,
    /// Image preparation (container runtimes only).
    images: Option<runtime::ImagesHandle>,
    /// Container jobs for the `job` provider (container runtimes only).
    jobs: Option<Arc<dyn runtime::JobRunner>>,
    /// Specs that name an image not yet on the site: applied once it is (their rollout has not
    /// started, so no pause or deadline measures a download).
    waiting_for_images: BTreeMap<String, crate::spec::ServiceSpec>,
    services: BTreeMap<String, ServiceSlot>,
    /// Service names in document order, for status.
    order: Vec<String>,
    document: Option<Arc<Document>>,
    /// The pull task of the desired source.
    pull: Option<pull::Handle>,
    /// The desired source's status, as the pull last reported it.
    source: Option<pull::SourceView>,
    /// Site-level events (refused documents, failed pulls), oldest first.
    site_events: VecDeque<EventRecord>,
    analysis_tasks: BTreeMap<String, CancellationToken>,
    /// Which reports state changes make (none without `[reports]`).
    reporting: crate::report::Reporting,
    /// The report outbox's status, shown by `edgeroll get`.
    reports: Option<watch::Receiver<Option<crate::api::types::ReportsStatus>>>,
    status_tx: watch::Sender<Arc<Status>>,
    /// Each service's proxy counters, for `/metrics`.
    proxy_metrics_tx: watch::Sender<Arc<ProxyMetrics>>,
    internal_tx: mpsc::Sender<Internal>,
    shutdown: CancellationToken,
}

impl Shell {
    async fn run(mut self, mut inputs: Inputs) {
        let mut hangup = desired::hangup_signal();
        let mut wedge = test_hooks::wedge_signal();
        // The keep-alive comes from this loop itself, so systemd restarts a loop that is wedged,
        // not only a process that died.
        let watchdog_period = crate::systemd::watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_period.unwrap_or(Duration::from_secs(3600)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_summary = String::new();
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(self.clock.instant_at(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                Some(change) = inputs.instances.recv() => self.instances_changed(change),
                Some(command) = inputs.commands.recv() => self.command(command),
                Some(internal) = inputs.internal.recv() => match internal {
                    Internal::AnalysisUpdated(run) => self.analysis_measured(*run),
                },
                Some(()) = inputs.reload.recv() => self.wake_pull(),
                Some(event) = inputs.images.recv() => self.image_event(event).await,
                Some(event) = inputs.pull.recv() => {
                    // Not starting: a document that cannot be applied is logged, not fatal.
                    let _ = self.pull_event(event, false).await;
                }
                Some(()) = hangup.recv() => {
                    info!("SIGHUP: re-reading the config and the desired document");
                    if self.reload_config() {
                        self.restart_pull(&inputs.pull_tx).await;
                    }
                    self.wake_pull();
                }
                _ = watchdog.tick(), if watchdog_period.is_some() => crate::systemd::watchdog(),
                Some(()) = wedge.recv() => test_hooks::wedge(),
                Ok(()) = reports_changed(&mut inputs.reports) => {}
                Ok(()) = images_changed(&mut inputs.image_progress) => {}
                () = sleep => self.deadlines_reached(),
            }
            self.sync_images();
            self.publish_status();
            let summary = status::summary(&self.status_tx.borrow());
            if summary != last_summary {
                crate::systemd::status(&summary);
                last_summary = summary;
            }
        }
        crate::systemd::stopping();
        self.stop().await;
    }

    async fn stop(&mut self) {
        info!("shutting down: finishing in-flight requests, leaving workloads running");
        for token in self.analysis_tasks.values() {
            token.cancel();
        }
        let mut proxies = Vec::new();
        for slot in self.services.values_mut() {
            slot.proxy_stop.cancel();
            proxies.push(std::mem::replace(
                &mut slot.proxy_task,
                tokio::spawn(async {}),
            ));
            if let Some(preview) = slot.preview.take() {
                preview.stop.cancel();
                proxies.push(preview.task);
            }
        }
        for proxy in proxies {
            if let Err(error) = proxy.await {
                warn!(%error, "a proxy task ended abnormally");
            }
        }
        info!("agent stopped; state is saved");
    }

    fn wake_pull(&self) {
        if let Some(pull) = &self.pull {
            pull.wake();
        }
    }

    /// The desired settings changed: a new pull task with them (the store keeps what was
    /// accepted, so the new one starts where the old one stopped).
    async fn restart_pull(&mut self, events: &mpsc::Sender<PullEvent>) {
        if let Some(old) = self.pull.take() {
            old.stopped().await;
        }
        let mut puller = Puller::new(&self.config, self.store.clone(), self.clock);
        for event in puller.initial() {
            let _ = self.pull_event(event, false).await;
        }
        self.pull = Some(puller.spawn(events.clone(), self.shutdown.clone()));
    }

    fn next_deadline(&self) -> Option<crate::time::Timestamp> {
        self.services
            .values()
            .filter_map(|slot| rollout::next_deadline(&slot.rollout))
            .min()
    }

    fn deadlines_reached(&mut self) {
        let now = self.clock.now();
        let due: Vec<String> = self
            .services
            .iter()
            .filter(|(_, slot)| rollout::next_deadline(&slot.rollout).is_some_and(|at| at <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.apply(&name, Event::DeadlineReached);
        }
    }

    /// Re-issue what a persisted state says must be true of the world.
    fn resume(&mut self, name: &str) {
        let Some(slot) = self.services.get(name) else {
            return;
        };
        let effects = rollout::resume_effects(&slot.rollout);
        self.execute(name, effects);
    }

    fn instances_changed(&mut self, change: InstancesChanged) {
        let Some(slot) = self.services.get_mut(&change.service) else {
            return;
        };
        slot.instances = change.instances;
        let mut ready: BTreeMap<u64, u32> = BTreeMap::new();
        for instance in slot.instances.iter().filter(|instance| instance.ready) {
            *ready.entry(instance.revision).or_default() += 1;
        }
        let name = change.service;
        self.publish_routes(&name);
        let unchanged = self
            .services
            .get(&name)
            .is_some_and(|slot| slot.rollout.ready == ready);
        if !unchanged {
            self.apply(&name, Event::InstancesObserved { ready });
        }
    }

    fn command(&mut self, command: ApiCommand) {
        let reply = if self.services.contains_key(&command.service) {
            self.apply(&command.service, Event::OperatorRequested(command.action))
                .unwrap_or_else(|| Err("the action had no answer".to_owned()))
        } else {
            let known: Vec<&str> = self.order.iter().map(String::as_str).collect();
            Err(format!(
                "unknown service {} (known: {})",
                command.service,
                known.join(", ")
            ))
        };
        // The caller may have given up waiting; that is not an error here.
        let _ = command.reply.send(reply);
    }

    /// Step one service's rollout, commit, then execute the effects. Returns the operator reply.
    fn apply(&mut self, name: &str, event: Event) -> Option<Result<String, String>> {
        let now = self.clock.now();
        let slot = self.services.get_mut(name)?;
        let (next, effects) = rollout::step(&slot.rollout, event, now);
        let records: Vec<EventRecord> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Record { kind, message } => Some(EventRecord {
                    service: name.to_owned(),
                    at: now,
                    kind: kind.clone(),
                    message: message.clone(),
                }),
                _ => None,
            })
            .collect();
        if next != slot.rollout || !records.is_empty() {
            let serial = self.document.as_ref().map(|document| document.serial);
            let reports = self
                .reporting
                .for_rollout(&records, &slot.rollout, &next, serial, now);
            if let Err(error) = self
                .store
                .save_rollout_reporting(name, &next, &records, &reports)
            {
                // Not saved means not applied: effects of an unsaved state could not be replayed.
                error!(service = %name, %error, "cannot save the rollout state; the change is not applied");
                return Some(Err(format!("the state could not be saved: {error}")));
            }
            if !reports.is_empty() {
                slot.reported_serial = serial;
            }
        }
        slot.rollout = next;
        for record in records {
            info!(service = %name, kind = %record.kind, "{}", record.message);
            slot.events.push_back(record);
            if slot.events.len() > RECENT_EVENTS {
                slot.events.pop_front();
            }
        }
        self.execute(name, effects)
    }

    fn execute(&mut self, name: &str, effects: Vec<Effect>) -> Option<Result<String, String>> {
        let mut reply = None;
        for effect in effects {
            match effect {
                Effect::SetInstances(targets) => {
                    let desired = targets
                        .into_iter()
                        .map(|target| DesiredRevision {
                            revision: target.revision,
                            template: target.template,
                            count: target.count,
                        })
                        .collect();
                    self.supervisor.set_desired(name, desired);
                }
                Effect::SetWeights(_) => self.publish_routes(name),
                Effect::StartAnalysis { run_id, analysis } => {
                    self.start_analysis(name, &run_id, &analysis)
                }
                Effect::StopAnalysis { run_id, reason } => {
                    self.stop_analysis(name, &run_id, &reason)
                }
                Effect::Record { .. } => {}
                Effect::Reply(answer) => reply = Some(answer),
            }
        }
        reply
    }

    /// Build the route table from the rollout's weights and the ready instances.
    fn publish_routes(&mut self, name: &str) {
        let Some(slot) = self.services.get(name) else {
            return;
        };
        let weights = slot.rollout.weights();
        let pool = |revision: Option<u64>| -> Pool {
            let Some(revision) = revision else {
                return Pool::default();
            };
            let version = slot
                .rollout
                .revision(revision)
                .map(|revision| revision.template.version.clone())
                .unwrap_or_default();
            let addrs = slot
                .instances
                .iter()
                .filter(|instance| instance.revision == revision && instance.ready)
                .map(|instance| instance.address)
                .collect();
            Pool { version, addrs }
        };
        let table = RouteTable {
            stable: pool(weights.stable),
            canary: pool(weights.canary),
            canary_weight_percent: weights.canary_percent,
        };
        if let Some(preview) = &slot.preview {
            let preview_table = RouteTable {
                stable: pool(weights.preview),
                canary: Pool::default(),
                canary_weight_percent: 0,
            };
            if **preview.routes.borrow() != preview_table {
                preview.routes.send_replace(Arc::new(preview_table));
            }
        }
        if **slot.routes.borrow() != table {
            // Keep measurements only for the versions that can still receive traffic, so the
            // proxy's memory stays bounded however many releases a site sees.
            slot.metrics
                .retain_versions(&[table.stable.version.as_str(), table.canary.version.as_str()]);
            slot.routes.send_replace(Arc::new(table));
        }
    }

    fn publish_status(&self) {
        // Services come and go with documents; `/metrics` follows the same set.
        self.proxy_metrics_tx.send_if_modified(|current| {
            let same = current.len() == self.services.len()
                && current.iter().zip(&self.services).all(
                    |((name, metrics), (slot_name, slot))| {
                        name == slot_name && Arc::ptr_eq(metrics, &slot.metrics)
                    },
                );
            if !same {
                *current = Arc::new(
                    self.services
                        .iter()
                        .map(|(name, slot)| (name.clone(), Arc::clone(&slot.metrics)))
                        .collect(),
                );
            }
            !same
        });
        let mut status = status::build(&self.config.site, &self.order, &self.services);
        if !self.waiting_for_images.is_empty() {
            let progress = self
                .images
                .as_ref()
                .map(runtime::ImagesHandle::progress)
                .unwrap_or_default();
            for (name, spec) in &self.waiting_for_images {
                let image = spec
                    .template
                    .container
                    .as_ref()
                    .and_then(|container| status::image(spec, progress.get(&container.image)));
                match status
                    .services
                    .iter_mut()
                    .find(|service| &service.name == name)
                {
                    Some(service) => service.image = image,
                    None => status.services.push(status::waiting_service(spec, image)),
                }
            }
        }
        status.source = status::source(self.source.as_ref());
        status.events = status::events(&self.site_events);
        status.reports = self
            .reports
            .as_ref()
            .and_then(|reports| reports.borrow().clone());
        self.status_tx.send_if_modified(|current| {
            if **current == status {
                false
            } else {
                *current = Arc::new(status);
                true
            }
        });
    }
}

/// Resolves when an image's preparation moved (never without a container runtime).
async fn images_changed(
    progress: &mut Option<runtime::images::ProgressReceiver>,
) -> Result<(), watch::error::RecvError> {
    match progress {
        Some(progress) => progress.changed().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the report outbox's status changed (never without a sender).
async fn reports_changed(
    reports: &mut Option<watch::Receiver<Option<crate::api::types::ReportsStatus>>>,
) -> Result<(), watch::error::RecvError> {
    match reports {
        Some(reports) => reports.changed().await,
        None => std::future::pending().await,
    }
}
