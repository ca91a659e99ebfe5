//! Workloads and their supervision: the [`Runtime`] trait, its process backend, and the supervisor
//! that keeps each service's instances as desired.
//!
//! This module is the only one that starts or stops workloads. The supervisor ([`start`]) owns every
//! instance: it starts and stops them through a [`Runtime`], probes their readiness, restarts the
//! ones that die with an exponential backoff, bounds their log files, and reports every change of a
//! service's instances as an [`InstancesChanged`]. Every instance is journaled (through
//! [`InstanceJournal`]) right after it is started and forgotten only once it is gone, so a restarted
//! agent adopts the workloads that are still running instead of restarting them.
//!
//! It never decides *which* revisions run or how many: that comes from the shell through
//! [`SupervisorHandle::set_desired`]. It never stops an adopted instance before the shell has said
//! what it wants for that service, and shutting the agent down never stops a workload.

pub mod containerd;
pub mod docker;
pub mod images;
mod probe;
pub mod process;
pub mod registry;
mod supervisor;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::spec::Template;
use crate::time::Timestamp;

pub use images::{ImageEvent, ImageJournal, ImagesDesired, ImagesHandle};
pub use process::ProcessRuntime;
pub use supervisor::SupervisorHandle;

/// A started instance, as persisted so that a restarted agent can adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Unique id, e.g. `web-r3-1a2b3c`.
    pub id: String,
    /// Service it belongs to.
    pub service: String,
    /// Revision number it runs.
    pub revision: u64,
    /// What it runs (version, command, …).
    pub template: Template,
    /// Loopback address it serves on.
    pub address: SocketAddr,
    /// Process id (process runtime).
    pub pid: u32,
    /// Process start time in clock ticks since boot (from /proc), to recognise pid reuse.
    pub start_ticks: u64,
    /// When it was started.
    pub started_at: Timestamp,
    /// Its log file (process runtime; container logs stay with the engine).
    pub log_path: PathBuf,
    /// Container runtimes: the engine's id of its container (`None` for a process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// What the shell and the API see of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Unique id.
    pub id: String,
    /// Revision number it runs.
    pub revision: u64,
    /// Version label.
    pub version: String,
    /// Loopback address it serves on.
    pub address: SocketAddr,
    /// Whether its readiness check passes.
    pub ready: bool,
    /// How many times it was restarted after dying.
    pub restarts: u32,
    /// Where to read its logs: a file, or the engine command that prints them.
    pub logs: String,
}

/// All instances of one service changed (started, became ready, died, stopped).
///
/// `instances` lists every instance that is not being stopped: an instance leaves the list as soon
/// as its stop begins, so no traffic is sent to it any more. An instance that died and waits for
/// its restart stays in the list with `ready == false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancesChanged {
    /// The service.
    pub service: String,
    /// Every instance of the service now.
    pub instances: Vec<InstanceStatus>,
}

/// How many instances of one revision a service should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRevision {
    /// Revision number.
    pub revision: u64,
    /// What its instances run.
    pub template: Template,
    /// How many instances.
    pub count: u32,
}

/// Where the supervisor persists instance records (implemented by `store::Store`).
pub trait InstanceJournal: Send + Sync {
    /// Insert or replace a record.
    fn save_instance(&self, record: &InstanceRecord) -> Result<(), String>;
    /// Forget a record.
    fn remove_instance(&self, id: &str) -> Result<(), String>;
    /// Every record, for adoption at start.
    fn load_instances(&self) -> Result<Vec<InstanceRecord>, String>;
}

/// Settings of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Directory for per-instance log files.
    pub log_dir: PathBuf,
    /// Upper bound of one log file, bytes.
    pub log_max_bytes: u64,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

/// Why the runtime could not do what the supervisor asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template's command has no program.
    #[error("start instance {id}: the template's command is empty")]
    EmptyCommand {
        /// The instance.
        id: String,
    },
    /// No free loopback port could be found.
    #[error("allocate a loopback port: {source}")]
    Port {
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The log file (or its directory) could not be created or rotated.
    #[error("prepare log file {path}: {source}")]
    LogFile {
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("start instance {id} ({program}): {source}")]
    Spawn {
        /// The instance.
        id: String,
        /// The program of its command.
        program: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The process table could not be read.
    #[error("read the process state of pid {pid}: {source}")]
    ProcessState {
        /// The process.
        pid: u32,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A signal could not be sent.
    #[error("signal instance {id} (pid {pid}): {source}")]
    Signal {
        /// The instance.
        id: String,
        /// Its process.
        pid: u32,
        /// Why it failed.
        source: nix::Error,
    },
    /// The container engine refused or failed a call.
    #[error("{what}: {message}")]
    Engine {
        /// What was asked, e.g. `create container edgeroll-web-r3-1a2b3c`.
        what: String,
        /// The engine's answer.
        message: String,
        /// Whether asking again later may succeed (engine down, network) or not (bad spec).
        transient: bool,
    },
    /// The image is not on the site (and the runtime was not asked to fetch it).
    #[error("image {image} is not present on this site")]
    ImageMissing {
        /// The image reference.
        image: String,
    },
    /// The runtime cannot run this template (a container template on the process runtime, …).
    #[error("the {runtime} runtime cannot {what}")]
    Unsupported {
        /// The runtime's name.
        runtime: &'static str,
        /// What it cannot do.
        what: String,
    },
    /// The instance was still running after SIGKILL and its deadline.
    #[error("stop instance {id}: still running {waited:?} after SIGKILL")]
    StopTimedOut {
        /// The instance.
        id: String,
        /// How long it was waited for after SIGKILL.
        waited: Duration,
    },
}

impl Error {
    /// Whether trying again later may succeed (a retry decision, not a diagnosis).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::EmptyCommand { .. } | Error::Unsupported { .. } => false,
            Error::Engine { transient, .. } => *transient,
            Error::ImageMissing { .. } => true,
            Error::Spawn { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            Error::Port { .. }
            | Error::LogFile { .. }
            | Error::ProcessState { .. }
            | Error::Signal { .. }
            | Error::StopTimedOut { .. } => true,
        }
    }
}

/// What the supervisor asks a runtime to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    /// The new instance's unique id.
    pub id: String,
    /// Its service.
    pub service: String,
    /// The revision it runs.
    pub revision: u64,
    /// What it runs.
    pub template: Template,
}

/// What a runtime found when asked to adopt a persisted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The same workload is still running; the runtime now watches it.
    Adopted,
    /// The workload is gone.
    Gone,
    /// Something else runs under the recorded identity (e.g. a reused pid); it must not be touched.
    Foreign,
}

/// A way to run instances: plain processes, or containers on Docker (and podman) or containerd.
///
/// Every method takes the instance's [`InstanceRecord`], so a runtime needs no memory of its own
/// to act on an instance it adopted after a restart of the agent. Futures are `Send` so that the
/// supervisor can drive each instance from its own task.
pub trait Runtime: Send + Sync + 'static {
    /// Start an instance and return its record; the caller journals it right away. A container
    /// runtime creates the container with the labels of [`ContainerLabels`], host networking on
    /// the allocated port, no engine restart policy and bounded engine-side logs, then starts it.
    /// It never fetches an image: that is [`Images`]'s, before the revision is desired.
    fn start(
        &self,
        request: &StartRequest,
    ) -> impl Future<Output = Result<InstanceRecord, Error>> + Send;

    /// Ask the instance to stop with the template's stop signal, kill it after `grace`, and
    /// return once it is gone (a container is removed too).
    fn stop(
        &self,
        record: &InstanceRecord,
        grace: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Decide whether a persisted record still describes the same running workload and, if so,
    /// take it over. A container is adopted only when it runs and its spec-hash label equals
    /// [`spec_hash`] of the record; a dead one of ours is removed and is `Gone`.
    fn adopt(
        &self,
        record: &InstanceRecord,
    ) -> impl Future<Output = Result<Adoption, Error>> + Send;

    /// Resolve once the instance has exited (whoever stopped it). Dropping the future is harmless.
    fn wait_exited(&self, record: &InstanceRecord) -> impl Future<Output = ()> + Send;

    /// Keep the instance's logs within the runtime's bound; called every few seconds.
    fn bound_logs(&self, record: &InstanceRecord)
        -> impl Future<Output = Result<(), Error>> + Send;

    /// Forget an instance that is gone (stopped or dead).
    fn release(&self, record: &InstanceRecord);

    /// Where to read the instance's logs (a path, or the engine's command for them).
    fn logs_hint(&self, record: &InstanceRecord) -> String;

    /// After adoption: stop and remove every workload carrying this agent's labels that no
    /// journaled record names (a crash between create and journal, a lost store). Workloads
    /// that are not ours are never touched. Returns the ids it removed.
    fn sweep(
        &self,
        known: &[InstanceRecord],
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Run an analysis job in a container of `job.image` and remove it afterwards, killing it
    /// at `job.deadline`.
    fn run_job(&self, job: &ContainerJob)
        -> impl Future<Output = Result<JobOutcome, Error>> + Send;
}

/// An analysis job to run as a container (the `job` provider with an `image`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerJob {
    /// A unique name for its container, e.g. `edgeroll-job-web-r3-1-0`.
    pub name: String,
    /// The image; it is pulled first when it is not present (policy `IfNotPresent`).
    pub image: String,
    /// Its command (empty keeps the image's entrypoint and `CMD`).
    pub command: Vec<String>,
    /// Killed (and an error) after this long.
    pub deadline: Duration,
}

/// How a container job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// Exit code; `None` when it was killed at its deadline.
    pub exit_code: Option<i32>,
    /// The end of its output (stdout and stderr), at most 4 KiB each, lossily decoded.
    pub stdout: String,
    /// See `stdout`.
    pub stderr: String,
}

/// Images on the site, for the container runtimes (the process runtime has none).
pub trait Images: Send + Sync + 'static {
    /// Whether `image` is present (and unpacked for this platform, where the engine splits the two).
    fn present(&self, image: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Fetch `image` from its registry, sending progress as it goes. A containerd backend holds
    /// a lease across attempts so that a broken download resumes.
    fn pull(
        &self,
        image: &str,
        progress: &watch::Sender<PullProgress>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Load a tarball (OCI layout or `docker save`); returns the image references it held.
    fn load(
        &self,
        archive: &Path,
        progress: &watch::Sender<PullProgress>,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Remove `image` (not present is success; an image a container uses is an error).
    fn remove(&self, image: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

/// How far a pull or load has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullProgress {
    /// Bytes fetched (or read from the tarball) so far.
    pub done_bytes: u64,
    /// Bytes in total, when the engine knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// The engine's last word, e.g. `Downloading 3 of 5 layers`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The labels every container of this agent carries, so that a restarted agent knows its own.
pub struct ContainerLabels;

impl ContainerLabels {
    /// Present (value `true`) on every container of edgeroll.
    pub const MANAGED: &'static str = "io.edgeroll.managed";
    /// The service.
    pub const SERVICE: &'static str = "io.edgeroll.service";
    /// The revision number.
    pub const REVISION: &'static str = "io.edgeroll.revision";
    /// The instance id.
    pub const INSTANCE: &'static str = "io.edgeroll.instance";
    /// [`spec_hash`] of what the agent asked for.
    pub const SPEC_HASH: &'static str = "io.edgeroll.spec-hash";
    /// `instance` or `job`.
    pub const ROLE: &'static str = "io.edgeroll.role";

    /// Every label of an instance's container.
    pub fn of(record: &InstanceRecord) -> Vec<(&'static str, String)> {
        vec![
            (Self::MANAGED, "true".to_string()),
            (Self::SERVICE, record.service.clone()),
            (Self::REVISION, record.revision.to_string()),
            (Self::INSTANCE, record.id.clone()),
            (Self::SPEC_HASH, spec_hash(record)),
            (Self::ROLE, "instance".to_string()),
        ]
    }
}

/// A hash of *our* spec of an instance (its template, service, revision, id and port): the
/// adoption test, so that an engine's normalisation of a container's config never makes a
/// restarted agent recreate it. SHA-256, hex, first 16 bytes.
pub fn spec_hash(record: &InstanceRecord) -> String {
    let spec = serde_json::json!({
        "service": record.service,
        "revision": record.revision,
        "id": record.id,
        "port": record.address.port(),
        "template": record.template,
    });
    let digest = ring::digest::digest(&ring::digest::SHA256, spec.to_string().as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The name of an instance's container: `edgeroll-<instance id>`.
pub fn container_name(instance_id: &str) -> String {
    format!("edgeroll-{instance_id}")
}

/// The container's command and arguments after `{port}` substitution, and its environment
/// (`PORT` first, then the template's): what every container backend passes to its engine.
pub fn container_process(
    template: &Template,
    port: u16,
) -> (Vec<String>, Vec<String>, Vec<(String, String)>) {
    let substitute = |argument: &String| argument.replace("{port}", &port.to_string());
    let command = template.command.iter().map(substitute).collect();
    let args = template.args.iter().map(substitute).collect();
    let mut env = vec![("PORT".to_string(), port.to_string())];
    env.extend(
        template
            .env
            .iter()
            .filter(|(key, _)| key.as_str() != "PORT")
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    (command, args, env)
}

/// Where a container engine is, and what its backend needs besides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Docker: `runtime.socket` (`None`: bollard's defaults). containerd: the socket path.
    pub socket: Option<String>,
    /// containerd: the namespace (default `edgeroll`).
    pub namespace: String,
    /// The agent's state directory (containerd keeps its containers' log files under
    /// `<state_dir>/logs/<service>/`, written by the shim, not by the agent).
    pub state_dir: PathBuf,
    /// Upper bound of one instance's logs, bytes (the engine keeps them within it).
    pub log_max_bytes: u64,
}

/// What the shell holds of the running runtime.
pub struct Started {
    /// The supervisor.
    pub supervisor: SupervisorHandle,
    /// Image preparation (container runtimes only).
    pub images: Option<ImagesHandle>,
    /// Container jobs for the `job` provider (container runtimes only).
    pub jobs: Option<Arc<dyn JobRunner>>,
}

/// Start the runtime `kind` names: its supervisor (which adopts journaled instances that are
/// still running, then keeps each service's instances as desired until `shutdown`, leaving
/// workloads running) and, for a container runtime, its image preparation task.
#[allow(clippy::too_many_arguments)]
pub fn start(
    kind: &crate::config::RuntimeKind,
    config: SupervisorConfig,
    state_dir: &Path,
    journal: Arc<dyn InstanceJournal>,
    image_journal: Arc<dyn ImageJournal>,
    updates: mpsc::Sender<InstancesChanged>,
    image_events: mpsc::Sender<ImageEvent>,
    shutdown: CancellationToken,
) -> Result<Started, Error> {
    use crate::config::RuntimeKind;
    let engine = |socket: Option<String>, namespace: &str| EngineConfig {
        socket,
        namespace: namespace.to_string(),
        state_dir: state_dir.to_path_buf(),
        log_max_bytes: config.log_max_bytes,
    };
    match kind {
        RuntimeKind::Process => {
            let runtime = ProcessRuntime::new(config.log_dir.clone(), config.log_max_bytes);
            Ok(Started {
                supervisor: start_with(runtime, config, journal, updates, shutdown),
                images: None,
                jobs: None,
            })
        }
        RuntimeKind::Docker { socket } => {
            let runtime = Arc::new(docker::DockerRuntime::connect(&engine(socket.clone(), ""))?);
            Ok(start_containers(
                runtime,
                config,
                journal,
                image_journal,
                updates,
                image_events,
                shutdown,
            ))
        }
        RuntimeKind::Containerd { socket, namespace } => {
            let runtime = Arc::new(containerd::ContainerdRuntime::connect(&engine(
                Some(socket.display().to_string()),
                namespace,
            ))?);
            Ok(start_containers(
                runtime,
                config,
                journal,
                image_journal,
                updates,
                image_events,
                shutdown,
            ))
        }
    }
}

fn start_containers<R: Runtime + Images>(
    runtime: Arc<R>,
    config: SupervisorConfig,
    journal: Arc<dyn InstanceJournal>,
    image_journal: Arc<dyn ImageJournal>,
    updates: mpsc::Sender<InstancesChanged>,
    image_events: mpsc::Sender<ImageEvent>,
    shutdown: CancellationToken,
) -> Started {
    let images = images::spawn(
        Arc::clone(&runtime),
        image_journal,
        image_events,
        shutdown.clone(),
    );
    let jobs: Arc<dyn JobRunner> = Arc::new(RuntimeJobs(Arc::clone(&runtime)));
    Started {
        supervisor: start_shared(runtime, config, journal, updates, shutdown),
        images: Some(images),
        jobs: Some(jobs),
    }
}

/// Container jobs, for the `job` provider (object-safe, so a provider can hold one).
pub trait JobRunner: Send + Sync {
    /// Run `job` to its end or its deadline; its container is removed afterwards.
    fn run_job<'a>(
        &'a self,
        job: &'a ContainerJob,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<JobOutcome, Error>> + Send + 'a>>;
}

impl std::fmt::Debug for dyn JobRunner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("JobRunner")
    }
}

struct RuntimeJobs<R>(Arc<R>);

impl<R: Runtime> JobRunner for RuntimeJobs<R> {
    fn run_job<'a>(
        &'a self,
        job: &'a ContainerJob,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<JobOutcome, Error>> + Send + 'a>> {
        Box::pin(self.0.run_job(job))
    }
}

/// [`start`] with any [`Runtime`] (another backend, or a fake in tests).
pub fn start_with<R: Runtime>(
    runtime: R,
    config: SupervisorConfig,
    journal: Arc<dyn InstanceJournal>,
    updates: mpsc::Sender<InstancesChanged>,
    shutdown: CancellationToken,
) -> SupervisorHandle {
    start_shared(Arc::new(runtime), config, journal, updates, shutdown)
}

/// [`start_with`] for a runtime already shared (a test that also drives its images).
pub fn start_shared<R: Runtime>(
    runtime: Arc<R>,
    config: SupervisorConfig,
    journal: Arc<dyn InstanceJournal>,
    updates: mpsc::Sender<InstancesChanged>,
    shutdown: CancellationToken,
) -> SupervisorHandle {
    supervisor::spawn(runtime, config, journal, updates, shutdown)
}
