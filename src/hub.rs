//! `edgeroll hub`: the reference center. It serves each site its desired document, ingests the
//! sites' report batches (over HTTPS and from an MQTT broker) exactly once, moves fleet plans
//! from wave to wave, and shows what each site last reported.
//!
//! Owns the hub's own modules, tasks and state directory: `config` (`hub.toml`), `catalog`
//! (documents, signatures, ETags, the selection rule), `presence` (poll times in memory),
//! `store` (`hub.db`, one writer with group commit), `summary` (the per-site fold), `http`
//! (the protocol, the read API and the operator socket), `mqtt` (broker ingest), `plan` (fleet
//! plans: files, the rule, the task), `page` (the fleet page), `export` (documents written for a
//! static server) and `limit` (report batches per site). It speaks to sites only through
//! `crate::wire`, and validates documents with `crate::spec`.
//!
//! It must never use the agent's shell or store (it is a separate program that happens to
//! share the binary), and it must never acknowledge a report batch before the store has made
//! it durable. The catalog served is the documents directory's part and the plans' part
//! ([`Shared::publish_directory`], [`Shared::publish_plans`]); a serial is recorded in the store
//! before either serves it.

pub mod catalog;
pub mod clock;
pub mod config;
pub mod export;
pub mod http;
pub mod limit;
pub mod mqtt;
pub mod page;
pub mod plan;
pub mod presence;
pub mod store;
pub mod summary;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::catalog::{Catalog, ServedDocument};
use self::clock::Clock;
use self::config::HubConfig;
use self::plan::view::PlanView;
use self::presence::Presence;
use self::store::HubStore;
use crate::wire::signature::SigningKey;

/// Why the hub cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The documents (or the signing key) are invalid: one line per problem.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The listener or the TLS files.
    #[error("{0}")]
    Io(String),
}

/// What every task of the hub shares.
pub struct Shared {
    catalog: RwLock<Arc<Catalog>>,
    /// The two parts the catalog is made of: the documents directory's and the plans'.
    parts: Mutex<CatalogParts>,
    /// What every plan looks like, as the plan task last evaluated it.
    plans: RwLock<Arc<Vec<PlanView>>>,
    /// Operator actions for the plan task.
    plan_actions: mpsc::Sender<plan::task::ActionRequest>,
    /// Woken whenever the catalog served changes (the export writes the new documents).
    pub catalog_changed: tokio::sync::Notify,
    /// Poll times and labels.
    pub presence: Presence,
    /// Report batches per site.
    pub report_limit: limit::ReportLimit,
    /// The store.
    pub store: HubStore,
    /// The hub's clock.
    pub clock: Clock,
    /// Cancelled when the hub stops.
    pub shutdown: CancellationToken,
}

impl Shared {
    /// The catalog served now.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(catalog) => Arc::clone(&catalog),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Serve `directory` (the documents directory, loaded) with the plans' documents from now
    /// on. Refused, and nothing changes, when a serial of it is one a plan published.
    pub fn publish_directory(&self, directory: Catalog) -> Result<(), Vec<String>> {
        let mut parts = lock(&self.parts);
        let catalog = merge(&directory, &parts.planned)?;
        parts.directory = Arc::new(directory);
        self.serve(catalog);
        Ok(())
    }

    /// Serve `planned` (every plan's wave documents) with the directory's from now on.
    pub fn publish_plans(&self, planned: Vec<Arc<ServedDocument>>) -> Result<(), Vec<String>> {
        let mut parts = lock(&self.parts);
        let catalog = merge(&parts.directory, &planned)?;
        parts.planned = planned;
        self.serve(catalog);
        Ok(())
    }

    /// The documents directory's part of the catalog.
    pub fn directory(&self) -> Arc<Catalog> {
        Arc::clone(&lock(&self.parts).directory)
    }

    fn serve(&self, catalog: Catalog) {
        let catalog = Arc::new(catalog);
        match self.catalog.write() {
            Ok(mut current) => *current = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
        self.catalog_changed.notify_waiters();
    }

    /// Every site the hub knows (the store's summaries, and sites that polled or reported
    /// since the last flush), with its labels and when it was last heard from.
    pub async fn known_sites(
        &self,
    ) -> Result<Vec<(summary::SiteSummary, Option<crate::time::Timestamp>)>, String> {
        let stored = self
            .store
            .sites()
            .await
            .map_err(|error| error.to_string())?;
        let mut sites: std::collections::BTreeMap<String, (summary::SiteSummary, Option<_>)> =
            stored
                .into_iter()
                .map(|summary| {
                    let heard = summary.last_seen;
                    (summary.site.clone(), (summary, heard))
                })
                .collect();
        for known in self.presence.snapshot() {
            let entry = sites
                .entry(known.site.clone())
                .or_insert_with(|| (summary::SiteSummary::new(&known.site), None));
            if !known.labels.is_empty() || entry.0.labels.is_empty() {
                entry.0.labels.clone_from(&known.labels);
            }
            entry.1 = entry.1.max(known.polled);
        }
        Ok(sites.into_values().collect())
    }

    /// Every plan, as last evaluated.
    pub fn plan_views(&self) -> Arc<Vec<PlanView>> {
        match self.plans.read() {
            Ok(plans) => Arc::clone(&plans),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Show `views` from now on.
    pub fn set_plan_views(&self, views: Vec<PlanView>) {
        let views = Arc::new(views);
        match self.plans.write() {
            Ok(mut current) => *current = views,
            Err(poisoned) => *poisoned.into_inner() = views,
        }
    }

    /// Ask the plan task to apply `action` to plan `name`; the answer comes once it is durable.
    pub async fn plan_action(
        &self,
        name: &str,
        action: plan::engine::Action,
    ) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let request = plan::task::ActionRequest {
            plan: name.to_owned(),
            action,
            reply,
        };
        self.plan_actions
            .send(request)
            .await
            .map_err(|_| "the hub is stopping".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the hub is stopping".to_owned()))
    }
}

/// The documents directory's documents and the plans', kept apart so either can be replaced.
#[derive(Debug, Default)]
struct CatalogParts {
    directory: Arc<Catalog>,
    planned: Vec<Arc<ServedDocument>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The serial and name of every document of `catalog`.
fn served(catalog: &Catalog) -> Vec<(u64, String)> {
    catalog
        .documents()
        .iter()
        .map(|document| (document.serial, document.name.clone()))
        .collect()
}

fn merge(directory: &Catalog, planned: &[Arc<ServedDocument>]) -> Result<Catalog, Vec<String>> {
    let mut documents: Vec<Arc<ServedDocument>> = directory.documents().to_vec();
    documents.extend(planned.iter().cloned());
    Catalog::from_shared(documents)
}

/// A running hub.
pub struct RunningHub {
    /// Where it listens.
    pub address: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningHub {
    /// What the hub's tasks share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Wait until the hub has stopped (its shutdown token was cancelled), writing the last poll
    /// times and closing the store.
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        let polls = self.shared.presence.take_dirty(usize::MAX);
        if !polls.is_empty() {
            if let Err(error) = self.shared.store.record_polls(polls).await {
                tracing::warn!(%error, "cannot write the last poll times");
            }
        }
    }
}

/// Read the signing key of `[signing]`.
fn signing_key(config: &HubConfig) -> Result<Option<SigningKey>, HubError> {
    let Some(signing) = &config.signing else {
        return Ok(None);
    };
    let path = signing.key.display();
    let text = std::fs::read_to_string(&signing.key)
        .map_err(|error| HubError::Invalid(vec![format!("{path}: cannot read: {error}")]))?;
    let password = if SigningKey::is_encrypted(&text) {
        let Some(variable) = &signing.password_env else {
            return Err(HubError::Invalid(vec![format!(
                "{path}: the key is encrypted; name the environment variable with its password \
                 in signing.password_env"
            )]));
        };
        match std::env::var(variable) {
            Ok(password) => Some(password),
            Err(_) => {
                return Err(HubError::Invalid(vec![format!(
                    "{path}: the key is encrypted and ${variable} is not set"
                )]))
            }
        }
    } else {
        None
    };
    SigningKey::parse(&text, password)
        .map(Some)
        .map_err(|error| HubError::Invalid(vec![format!("{path}: {error}")]))
}

/// The TLS acceptor of `[tls]`.
fn tls_acceptor(config: &HubConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, HubError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| HubError::Io(format!("{}: {error}", path.display())))
    };
    let cert_pem = read(&tls.cert)?;
    let key_pem = read(&tls.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| HubError::Io(format!("{}: {error}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(HubError::Io(format!(
            "{}: no certificate in the file",
            tls.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|error| HubError::Io(format!("{}: {error}", tls.key.display())))?
        .ok_or_else(|| {
            HubError::Io(format!("{}: no private key in the file", tls.key.display()))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| HubError::Io(format!("TLS: {error}")))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = read(path)?;
            let mut roots = rustls::RootCertStore::empty();
            for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
                let certificate = certificate
                    .map_err(|error| HubError::Io(format!("{}: {error}", path.display())))?;
                roots
                    .add(certificate)
                    .map_err(|error| HubError::Io(format!("{}: {error}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(HubError::Io(format!(
                    "{}: no CA certificate in the file",
                    path.display()
                )));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if tls.client_auth_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|error| HubError::Io(format!("{}: {error}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|error| HubError::Io(format!("{}: {error}", tls.cert.display())))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// Start the hub: load the documents (every problem at once), open the store, bind, and spawn
/// the server, the reload, the poll flush and (when configured) the MQTT ingest. Stops when
/// `shutdown` is cancelled; [`RunningHub::wait`] waits for that.
pub async fn start(config: HubConfig, shutdown: CancellationToken) -> Result<RunningHub, HubError> {
    let clock = Clock::system();
    let signer = Arc::new(signing_key(&config)?);
    let catalog = Catalog::load(&config.documents, signer.as_ref().as_ref(), clock.now())
        .map_err(HubError::Invalid)?;
    let tls = tls_acceptor(&config)?;
    let state_dir = config.state_dir.clone();
    let store = tokio::task::spawn_blocking(move || HubStore::open(&state_dir))
        .await
        .map_err(|error| HubError::Io(error.to_string()))??;
    let known = store
        .sites()
        .await?
        .into_iter()
        .map(|summary| (summary.site, summary.labels));
    store
        .record_published(served(&catalog), clock.now())
        .await?;
    let mut plans = plan::task::Plans::recover(&store, Arc::clone(&signer)).await?;
    plans.reload(&config.documents);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| HubError::Io(format!("cannot listen on {}: {error}", config.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|error| HubError::Io(error.to_string()))?;
    let socket = bind_socket(&config.socket)?;
    tracing::info!(
        %address,
        socket = %config.socket.display(),
        tls = tls.is_some(),
        documents = catalog.documents().len(),
        signing_key = signer.as_ref().as_ref().map(|key| key.key_id.as_str()),
        "edgeroll hub listening"
    );
    let (plan_actions, actions) = mpsc::channel(16);
    let shared = Arc::new(Shared {
        catalog: RwLock::new(Arc::new(catalog.clone())),
        parts: Mutex::new(CatalogParts {
            directory: Arc::new(catalog),
            planned: Vec::new(),
        }),
        plans: RwLock::new(Arc::new(Vec::new())),
        plan_actions,
        catalog_changed: tokio::sync::Notify::new(),
        presence: Presence::with_labels(known),
        report_limit: limit::ReportLimit::new(config.report_rate, config.report_burst),
        store,
        clock,
        shutdown: shutdown.clone(),
    });
    // The plans' documents are served from the first poll on: a site that holds a wave's
    // document must never be offered an older serial after a restart.
    plan::task::publish(&shared, &mut plans).await;
    plan::task::tick(&shared, &mut plans).await;
    let mut tasks = vec![tokio::spawn(http::serve(
        listener,
        tls,
        Arc::clone(&shared),
    ))];
    tasks.push(tokio::spawn(http::serve_socket(
        socket,
        Arc::clone(&shared),
    )));
    tasks.push(tokio::spawn(plan::task::run(
        plan::task::Settings {
            documents: config.documents.clone(),
            interval: config.plan_interval,
            reload_interval: config.reload_interval,
        },
        Arc::clone(&shared),
        plans,
        actions,
    )));
    tasks.push(tokio::spawn(reload(
        config.clone(),
        signer,
        Arc::clone(&shared),
    )));
    tasks.push(tokio::spawn(flush_polls(
        config.last_seen_flush,
        Arc::clone(&shared),
    )));
    if let Some(mqtt) = config.mqtt.clone() {
        tasks.push(tokio::spawn(mqtt::run(mqtt, Arc::clone(&shared))));
    }
    if let Some(dir) = config.export.clone() {
        tasks.push(tokio::spawn(export::run(
            dir,
            config.reload_interval,
            Arc::clone(&shared),
        )));
    }
    Ok(RunningHub {
        address,
        shared,
        tasks,
    })
}

/// Bind the operator socket at `path` (a stale file from a hub that died is replaced; the
/// state directory's lock already proved no other hub runs), mode 0660.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, HubError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| HubError::Io(format!("{}: {error}", parent.display())))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(HubError::Io(format!("{}: {error}", path.display()))),
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|error| HubError::Io(format!("cannot listen on {}: {error}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|error| HubError::Io(format!("{}: {error}", path.display())))?;
    Ok(listener)
}

/// Reload the documents on SIGHUP and whenever the directory changes (checked every
/// `reload_interval`). A directory with any invalid document keeps the catalog served before.
async fn reload(config: HubConfig, signer: Arc<Option<SigningKey>>, shared: Arc<Shared>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::warn!(%error, "cannot handle SIGHUP; documents reload only by polling");
            None
        }
    };
    let dir = config.documents.clone();
    let mut seen = catalog::fingerprint(&dir);
    loop {
        let forced = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(config.reload_interval) => false,
            Some(()) = async { match hangup.as_mut() { Some(signal) => signal.recv().await, None => std::future::pending().await } } => true,
        };
        let dir_now = dir.clone();
        let Ok(fingerprint) =
            tokio::task::spawn_blocking(move || catalog::fingerprint(&dir_now)).await
        else {
            continue;
        };
        if !forced && fingerprint == seen {
            continue;
        }
        seen = fingerprint;
        let dir_now = dir.clone();
        let signer_now = Arc::clone(&signer);
        let now = shared.clock.now();
        let loaded = tokio::task::spawn_blocking(move || {
            Catalog::load(&dir_now, signer_now.as_ref().as_ref(), now)
        })
        .await;
        match loaded {
            Ok(Ok(catalog)) => {
                // Recorded before served: a site's report of a served serial is never "unknown".
                if let Err(error) = shared
                    .store
                    .record_published(served(&catalog), shared.clock.now())
                    .await
                {
                    tracing::error!(%error, "cannot record the documents' serials; still serving the previous ones");
                    continue;
                }
                tracing::info!(
                    documents = catalog.documents().len(),
                    highest_serial = catalog.documents().first().map(|document| document.serial),
                    "documents reloaded"
                );
                if let Err(problems) = shared.publish_directory(catalog) {
                    for problem in &problems {
                        tracing::error!("{problem}");
                    }
                    tracing::error!("a document's serial is one a plan published; still serving the previous documents");
                }
            }
            Ok(Err(problems)) => {
                for problem in &problems {
                    tracing::error!("{problem}");
                }
                tracing::error!(
                    problems = problems.len(),
                    "the documents directory has invalid documents; still serving the previous ones"
                );
            }
            Err(error) => tracing::error!(%error, "the document reload failed"),
        }
    }
}

/// Write the poll times kept in memory every `interval`.
async fn flush_polls(interval: std::time::Duration, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        // In chunks: a report batch queued to the store waits for one chunk, not the fleet.
        loop {
            let polls = shared.presence.take_dirty(POLL_FLUSH_CHUNK);
            if polls.is_empty() {
                break;
            }
            if let Err(error) = shared.store.record_polls(polls.clone()).await {
                tracing::warn!(%error, "cannot write poll times; will try again");
                shared.presence.restore(polls);
                break;
            }
        }
    }
}

/// Poll times written per store job.
const POLL_FLUSH_CHUNK: usize = 1000;
