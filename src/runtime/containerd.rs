//! The containerd backend: instances as containerd containers and tasks, spoken to over its gRPC
//! API on a unix socket (client code generated from vendored protos, see `api`), in the agent's
//! own namespace (default `edgeroll`, never `k8s.io`).
//!
//! It owns the containers, tasks and snapshots labelled `io.edgeroll.managed=true` in that
//! namespace, and the image records it loaded there. It builds the OCI runtime spec itself (host
//! network on the allocated port, containerd's default mounts and capabilities, the template's
//! limits), has the *shim* write each task's output to `<state_dir>/logs/<service>/<id>.log`
//! (`file://`), so a task keeps running while the agent is down and never blocks on a reader,
//! and leaves restarts to the supervisor (no restart labels). It never touches a container
//! without our label, nor anything in another namespace.

mod api;
mod client;
mod image;
mod images;
mod jobs;
mod spec;
mod tarball;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use self::api::services::containers::v1 as containers;
use self::api::services::snapshots::v1 as snapshots;
use self::api::services::tasks::v1 as tasks;
use self::api::services::version::v1 as version;
use self::api::v1::types::Status as TaskStatus;
use self::client::{engine_error, is_already_exists, is_not_found, Client};
pub use self::image::normalize_reference;
use self::image::ImageStore;
use super::process::{bound_log_file, free_loopback_port, read_stat, KILL_DEADLINE};
use super::{
    container_name, container_process, spec_hash, Adoption, ContainerJob, ContainerLabels,
    EngineConfig, Error, InstanceRecord, JobOutcome, Runtime, StartRequest,
};
use crate::shell::clock::Clock;

/// The namespace when the configuration names none.
pub const DEFAULT_NAMESPACE: &str = "edgeroll";
/// The socket when the configuration names none (Debian's and containerd's default).
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The runtime (shim) every container runs under.
pub const RUNTIME_NAME: &str = "io.containerd.runc.v2";
/// The snapshotter used when the engine has it, and the fallback.
pub const PREFERRED_SNAPSHOTTER: &str = "overlayfs";
/// See [`PREFERRED_SNAPSHOTTER`].
pub const FALLBACK_SNAPSHOTTER: &str = "native";
/// How often a task is polled for its exit when `Tasks.Wait` cannot be had (engine down).
const WAIT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a job's container may take to go after SIGKILL at its deadline.
const JOB_KILL_WAIT: Duration = Duration::from_secs(5);
/// The end of a job's output that is kept, per stream.
const JOB_OUTPUT_TAIL: u64 = 4096;
/// Short-lived leases (a container being created) are collected after this long if left over.
const START_LEASE_EXPIRY: Duration = Duration::from_secs(3600);
/// Directory (under `<state_dir>/logs/`) of job output files.
const JOB_LOG_DIR: &str = "jobs";

/// Runs instances as containerd containers.
#[derive(Debug, Clone)]
pub struct ContainerdRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    log_dir: PathBuf,
    /// Where pulls stage their blobs (`<state_dir>/images/`), so a cut download resumes.
    staging_dir: PathBuf,
    log_max_bytes: u64,
    snapshotter: OnceCell<String>,
    /// The agent's clock (`started_at`, lease expiries).
    clock: Clock,
}

impl ContainerdRuntime {
    /// A runtime for the containerd at `config.socket` (default [`DEFAULT_SOCKET`]) in
    /// `config.namespace` (default [`DEFAULT_NAMESPACE`]). Nothing is connected yet: an engine
    /// that is down makes calls fail transiently, not this. Namespace `k8s.io` is refused
    /// (kubelet owns it and garbage-collects images it did not pull).
    pub fn connect(config: &EngineConfig) -> Result<Self, Error> {
        let namespace = match config.namespace.trim() {
            "" => DEFAULT_NAMESPACE.to_string(),
            "k8s.io" => {
                return Err(Error::Unsupported {
                    runtime: "containerd",
                    what: "use namespace k8s.io: kubelet owns it (its image GC deletes images it \
                           did not pull); keep the default \"edgeroll\""
                        .to_string(),
                })
            }
            namespace => namespace.to_string(),
        };
        let socket = config
            .socket
            .clone()
            .filter(|socket| !socket.is_empty())
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        let socket = socket
            .strip_prefix("unix://")
            .unwrap_or(&socket)
            .to_string();
        Ok(ContainerdRuntime {
            inner: Arc::new(Inner {
                client: Client::new(PathBuf::from(socket), namespace),
                log_dir: config.state_dir.join("logs"),
                staging_dir: config.state_dir.join("images"),
                log_max_bytes: config.log_max_bytes,
                snapshotter: OnceCell::new(),
                clock: Clock::system(),
            }),
        })
    }

    /// The namespace every call is made in.
    pub fn namespace(&self) -> &str {
        self.inner.client.namespace()
    }

    /// The engine's version (e.g. `1.6.20~ds1`): a cheap check that it answers.
    pub async fn version(&self) -> Result<String, Error> {
        let client = &self.inner.client;
        version::version_client::VersionClient::new(client.channel())
            .version(client.request(()))
            .await
            .map(|response| response.into_inner().version)
            .map_err(|status| engine_error("ask containerd its version", &status))
    }

    /// The snapshotter images are unpacked with and containers run on: `overlayfs` when the
    /// engine has that plugin loaded, else `native` (decided on first use, then kept).
    pub async fn snapshotter(&self) -> Result<String, Error> {
        self.inner.snapshotter().await.map(str::to_string)
    }
}

impl Inner {
    async fn snapshotter(&self) -> Result<&str, Error> {
        self.snapshotter
            .get_or_try_init(|| async {
                let request = snapshots::StatSnapshotRequest {
                    snapshotter: PREFERRED_SNAPSHOTTER.to_string(),
                    key: "edgeroll-probe-snapshotter".to_string(),
                };
                let answer = snapshots::snapshots_client::SnapshotsClient::new(self.client.channel())
                    .stat(self.client.request(request))
                    .await;
                match answer {
                    Ok(_) => Ok(PREFERRED_SNAPSHOTTER.to_string()),
                    Err(status) if status.message().contains("snapshotter not loaded") => {
                        tracing::warn!(
                            "containerd has no overlayfs snapshotter loaded; using the native one (full copies per layer)"
                        );
                        Ok(FALLBACK_SNAPSHOTTER.to_string())
                    }
                    Err(status) if is_not_found(&status) => Ok(PREFERRED_SNAPSHOTTER.to_string()),
                    Err(status) => Err(engine_error("find containerd's snapshotters", &status)),
                }
            })
            .await
            .map(String::as_str)
    }

    async fn images(&self) -> Result<ImageStore<'_>, Error> {
        Ok(ImageStore {
            client: &self.client,
            snapshotter: self.snapshotter().await?,
            now: self.clock.now(),
        })
    }

    /// A lease that protects what a start creates until the container record holds it.
    async fn short_lease(&self, id: &str) -> Result<String, Error> {
        let lease = format!("edgeroll-start-{id}");
        let expires = self.clock.now().plus(START_LEASE_EXPIRY).rfc3339();
        self.client.create_lease(&lease, &expires).await?;
        Ok(lease)
    }

    async fn drop_lease(&self, lease: &str) {
        self.client.drop_lease(lease).await;
    }

    /// Create container `id` from `image_name` with `spec` and `labels` on a fresh rw snapshot,
    /// then its task with its output going where `stdio` says, and start it. Returns the task's pid. Whatever was created is removed again when a step fails.
    async fn create_and_start(
        &self,
        id: &str,
        image_name: &str,
        chain_id: &str,
        spec: serde_json::Value,
        labels: HashMap<String, String>,
        stdio: Stdio<'_>,
    ) -> Result<u32, Error> {
        let snapshotter = self.snapshotter().await?.to_string();
        let lease = self.short_lease(id).await?;
        let result = self
            .create_container(id, image_name, chain_id, &snapshotter, spec, labels, &lease)
            .await;
        self.drop_lease(&lease).await;
        let mounts = match result {
            Ok(mounts) => mounts,
            Err(error) => {
                self.remove_container(id).await;
                return Err(error);
            }
        };
        let tasks_client = || tasks::tasks_client::TasksClient::new(self.client.channel());
        let created = tasks_client()
            .create(self.client.request(tasks::CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdout: stdio.stdout(),
                stderr: stdio.stderr(),
                ..Default::default()
            }))
            .await;
        if let Err(status) = created {
            self.remove_container(id).await;
            return Err(engine_error(format!("create task {id}"), &status));
        }
        match tasks_client()
            .start(self.client.request(tasks::StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(started) => Ok(started.into_inner().pid),
            Err(status) => {
                self.remove_container(id).await;
                Err(engine_error(format!("start task {id}"), &status))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_container(
        &self,
        id: &str,
        image_name: &str,
        chain_id: &str,
        snapshotter: &str,
        spec: serde_json::Value,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<Vec<api::types::Mount>, Error> {
        let mut snapshots_client =
            snapshots::snapshots_client::SnapshotsClient::new(self.client.channel());
        let prepared = snapshots_client
            .prepare(self.client.leased(
                snapshots::PrepareSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: id.to_string(),
                    parent: chain_id.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await;
        let mounts = match prepared {
            Ok(prepared) => prepared.into_inner().mounts,
            Err(status) if is_already_exists(&status) => {
                snapshots_client
                    .mounts(self.client.request(snapshots::MountsRequest {
                        snapshotter: snapshotter.to_string(),
                        key: id.to_string(),
                    }))
                    .await
                    .map_err(|status| engine_error(format!("mount snapshot {id}"), &status))?
                    .into_inner()
                    .mounts
            }
            Err(status) => return Err(engine_error(format!("prepare snapshot {id}"), &status)),
        };
        let spec = serde_json::to_vec(&spec).map_err(|error| {
            client::local_error(format!("encode the spec of {id}"), error.to_string())
        })?;
        let container = containers::Container {
            id: id.to_string(),
            labels,
            image: image_name.to_string(),
            runtime: Some(containers::container::Runtime {
                name: RUNTIME_NAME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: spec::SPEC_TYPE_URL.to_string(),
                value: spec,
            }),
            snapshotter: snapshotter.to_string(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        containers::containers_client::ContainersClient::new(self.client.channel())
            .create(self.client.leased(
                containers::CreateContainerRequest {
                    container: Some(container),
                },
                lease,
            ))
            .await
            .map_err(|status| engine_error(format!("create container {id}"), &status))?;
        Ok(mounts)
    }

    /// The task of container `id`: `None` when it has none.
    async fn task(&self, id: &str) -> Result<Option<api::v1::types::Process>, Error> {
        match tasks::tasks_client::TasksClient::new(self.client.channel())
            .get(self.client.request(tasks::GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(response) => Ok(response.into_inner().process),
            Err(status) if is_not_found(&status) => Ok(None),
            Err(status) => Err(engine_error(format!("inspect task {id}"), &status)),
        }
    }

    async fn container(&self, id: &str) -> Result<Option<containers::Container>, Error> {
        match containers::containers_client::ContainersClient::new(self.client.channel())
            .get(
                self.client
                    .request(containers::GetContainerRequest { id: id.to_string() }),
            )
            .await
        {
            Ok(response) => Ok(response.into_inner().container),
            Err(status) if is_not_found(&status) => Ok(None),
            Err(status) => Err(engine_error(format!("inspect container {id}"), &status)),
        }
    }

    /// Resolve once the task of `id` has exited or is gone: `Tasks.Wait`, and while the engine
    /// cannot be reached, polling until it can.
    async fn wait_task(&self, id: &str) -> Result<Option<u32>, Error> {
        loop {
            let waited = tasks::tasks_client::TasksClient::new(self.client.channel())
                .wait(self.client.streaming(
                    tasks::WaitRequest {
                        container_id: id.to_string(),
                        exec_id: String::new(),
                    },
                    None,
                ))
                .await;
            match waited {
                Ok(response) => return Ok(Some(response.into_inner().exit_status)),
                Err(status) if is_not_found(&status) => return Ok(None),
                Err(status) => {
                    let error = engine_error(format!("wait for task {id}"), &status);
                    if !error.is_transient() {
                        return Err(error);
                    }
                    tracing::debug!(id, %error, "waiting for a task: retrying");
                    tokio::time::sleep(WAIT_POLL_INTERVAL).await;
                }
            }
        }
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<(), Error> {
        match tasks::tasks_client::TasksClient::new(self.client.channel())
            .kill(self.client.request(tasks::KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // No task, or it has exited already.
            Err(status)
                if is_not_found(&status) || status.code() == tonic::Code::FailedPrecondition =>
            {
                Ok(())
            }
            Err(status) => Err(engine_error(format!("signal task {id}"), &status)),
        }
    }

    /// Signal `signal`, wait `grace`, SIGKILL, wait [`KILL_DEADLINE`], then remove everything.
    async fn stop_container(&self, id: &str, signal: u32, grace: Duration) -> Result<(), Error> {
        if self.task(id).await?.is_some() {
            self.kill(id, signal).await?;
            if tokio::time::timeout(grace, self.wait_task(id))
                .await
                .is_err()
            {
                self.kill(id, SIGKILL).await?;
                if tokio::time::timeout(KILL_DEADLINE, self.wait_task(id))
                    .await
                    .is_err()
                {
                    return Err(Error::StopTimedOut {
                        id: id.to_string(),
                        waited: KILL_DEADLINE,
                    });
                }
            }
        }
        self.delete(id).await
    }

    /// Delete the (stopped) task, the container and its snapshot; what is gone already is fine.
    async fn delete(&self, id: &str) -> Result<(), Error> {
        let snapshotter = match self.container(id).await? {
            Some(container) if !container.snapshotter.is_empty() => container.snapshotter,
            _ => self.snapshotter().await?.to_string(),
        };
        match tasks::tasks_client::TasksClient::new(self.client.channel())
            .delete(self.client.request(tasks::DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(_) => {}
            Err(status) if is_not_found(&status) => {}
            Err(status) => return Err(engine_error(format!("delete task {id}"), &status)),
        }
        match containers::containers_client::ContainersClient::new(self.client.channel())
            .delete(
                self.client
                    .request(containers::DeleteContainerRequest { id: id.to_string() }),
            )
            .await
        {
            Ok(_) => {}
            Err(status) if is_not_found(&status) => {}
            Err(status) => return Err(engine_error(format!("delete container {id}"), &status)),
        }
        let store = ImageStore {
            client: &self.client,
            snapshotter: &snapshotter,
            now: self.clock.now(),
        };
        store.remove_snapshot(id).await;
        Ok(())
    }

    /// Best-effort removal after a failed start (nothing of it may be left running).
    async fn remove_container(&self, id: &str) {
        let _ = self.kill(id, SIGKILL).await;
        let _ = tokio::time::timeout(KILL_DEADLINE, self.wait_task(id)).await;
        if let Err(error) = self.delete(id).await {
            tracing::warn!(id, %error, "could not remove a container after a failed start");
        }
    }

    /// Remove container `id` when its task is not running (a dead instance's leftovers).
    async fn remove_if_dead(&self, id: &str) -> Result<(), Error> {
        let Some(container) = self.container(id).await? else {
            return Ok(());
        };
        if !is_ours(&container) {
            return Ok(());
        }
        match self.task(id).await? {
            Some(task) if task.status == TaskStatus::Running as i32 => Ok(()),
            _ => self.delete(id).await,
        }
    }

    async fn resolve_image(&self, image: &str) -> Result<(String, image::Resolved), Error> {
        let name = normalize_reference(image);
        let store = self.images().await?;
        match store.resolve(&name).await? {
            Some(resolved) if store.snapshot_exists(&resolved.chain_id).await? => {
                Ok((name, resolved))
            }
            _ => Err(Error::ImageMissing {
                image: image.to_string(),
            }),
        }
    }
}

const SIGKILL: u32 = 9;

/// Where a task's output goes.
#[derive(Debug, Clone, Copy)]
enum Stdio<'a> {
    /// An instance: the shim appends stdout and stderr to this file itself (`file://`; it writes
    /// both streams to the one path), so the task never depends on the agent reading anything.
    File(&'a Path),
    /// A job: FIFOs the agent reads while it waits for the job, so that stdout and stderr stay
    /// apart. A job whose agent dies is killed by the next agent's sweep.
    Fifos { stdout: &'a Path, stderr: &'a Path },
}

impl Stdio<'_> {
    fn stdout(self) -> String {
        match self {
            Stdio::File(path) => format!("file://{}", path.display()),
            Stdio::Fifos { stdout, .. } => stdout.display().to_string(),
        }
    }

    fn stderr(self) -> String {
        match self {
            Stdio::File(path) => format!("file://{}", path.display()),
            Stdio::Fifos { stderr, .. } => stderr.display().to_string(),
        }
    }
}

fn is_ours(container: &containers::Container) -> bool {
    container
        .labels
        .get(ContainerLabels::MANAGED)
        .is_some_and(|value| value == "true")
}

fn container_id(record: &InstanceRecord) -> String {
    record
        .container
        .clone()
        .unwrap_or_else(|| container_name(&record.id))
}

fn log_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::LogFile {
        path: path.to_path_buf(),
        source,
    }
}

impl Runtime for ContainerdRuntime {
    async fn start(&self, request: &StartRequest) -> Result<InstanceRecord, Error> {
        let inner = &self.inner;
        let Some(container) = &request.template.container else {
            return Err(Error::Unsupported {
                runtime: "containerd",
                what: format!(
                    "run instance {} without an image (set the template's image)",
                    request.id
                ),
            });
        };
        let (image_name, resolved) = inner.resolve_image(&container.image).await?;
        let port = free_loopback_port()?;
        let id = container_name(&request.id);
        let service_dir = inner.log_dir.join(&request.service);
        tokio::fs::create_dir_all(&service_dir)
            .await
            .map_err(log_error(&service_dir))?;
        let log_path = service_dir.join(format!("{}.log", request.id));
        tokio::fs::write(&log_path, b"")
            .await
            .map_err(log_error(&log_path))?;
        let mut record = InstanceRecord {
            id: request.id.clone(),
            service: request.service.clone(),
            revision: request.revision,
            template: request.template.clone(),
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            pid: 0,
            start_ticks: 0,
            started_at: inner.clock.now(),
            log_path: log_path.clone(),
            container: Some(id.clone()),
        };
        let (command, args, mut env) = container_process(&request.template, port);
        env.push((
            super::process::INSTANCE_ID_ENV.to_string(),
            request.id.clone(),
        ));
        let process = spec::Process::of(
            &resolved.config.config.clone().unwrap_or_default(),
            command,
            args,
            &env,
        );
        if process.args.is_empty() {
            return Err(Error::EmptyCommand {
                id: request.id.clone(),
            });
        }
        let spec = spec::runtime_spec(&id, &process, Some(container));
        let labels = ContainerLabels::of(&record)
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect();
        let pid = inner
            .create_and_start(
                &id,
                &image_name,
                &resolved.chain_id,
                spec,
                labels,
                Stdio::File(&log_path),
            )
            .await?;
        record.pid = pid;
        record.start_ticks = read_stat(pid).map_or(0, |stat| stat.start_ticks);
        Ok(record)
    }

    async fn stop(&self, record: &InstanceRecord, grace: Duration) -> Result<(), Error> {
        let id = container_id(record);
        match self.inner.container(&id).await? {
            None => return Ok(()),
            Some(container) if !is_ours(&container) => return Ok(()),
            Some(_) => {}
        }
        let signal = u32::try_from(record.template.stop_signal().number()).unwrap_or(15);
        self.inner.stop_container(&id, signal, grace).await
    }

    async fn adopt(&self, record: &InstanceRecord) -> Result<Adoption, Error> {
        let id = container_id(record);
        let Some(container) = self.inner.container(&id).await? else {
            return Ok(Adoption::Gone);
        };
        if !is_ours(&container) {
            return Ok(Adoption::Foreign);
        }
        let running = self
            .inner
            .task(&id)
            .await?
            .is_some_and(|task| task.status == TaskStatus::Running as i32);
        if !running {
            self.inner.delete(&id).await?;
            return Ok(Adoption::Gone);
        }
        let hash = container.labels.get(ContainerLabels::SPEC_HASH);
        if hash.map(String::as_str) == Some(spec_hash(record).as_str()) {
            Ok(Adoption::Adopted)
        } else {
            Ok(Adoption::Foreign)
        }
    }

    async fn wait_exited(&self, record: &InstanceRecord) {
        let id = container_id(record);
        if let Err(error) = self.inner.wait_task(&id).await {
            // A refusal that is not transient (e.g. a bad id): poll its state instead.
            tracing::debug!(id, %error, "could not wait for a task; polling it");
            loop {
                match self.inner.task(&id).await {
                    Ok(None) => return,
                    Ok(Some(task)) if task.status == TaskStatus::Stopped as i32 => return,
                    _ => tokio::time::sleep(WAIT_POLL_INTERVAL).await,
                }
            }
        }
    }

    async fn bound_logs(&self, record: &InstanceRecord) -> Result<(), Error> {
        bound_log_file(&record.log_path, self.inner.log_max_bytes).await
    }

    fn release(&self, record: &InstanceRecord) {
        // A dead instance leaves its container; remove it (a stopped one is gone already).
        let inner = Arc::clone(&self.inner);
        let id = container_id(record);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(error) = inner.remove_if_dead(&id).await {
                    tracing::warn!(id, %error, "could not remove a dead instance's container");
                }
            });
        }
    }

    fn logs_hint(&self, record: &InstanceRecord) -> String {
        record.log_path.display().to_string()
    }

    async fn sweep(&self, known: &[InstanceRecord]) -> Result<Vec<String>, Error> {
        let inner = &self.inner;
        let listed = containers::containers_client::ContainersClient::new(inner.client.channel())
            .list(inner.client.request(containers::ListContainersRequest {
                filters: vec![format!("labels.\"{}\"==true", ContainerLabels::MANAGED)],
            }))
            .await
            .map_err(|status| engine_error("list containers", &status))?
            .into_inner()
            .containers;
        let known: Vec<String> = known.iter().map(container_id).collect();
        let mut removed = Vec::new();
        for container in listed {
            if !is_ours(&container) || known.contains(&container.id) {
                continue;
            }
            inner
                .stop_container(&container.id, SIGKILL, Duration::ZERO)
                .await?;
            removed.push(container.id);
        }
        Ok(removed)
    }

    async fn run_job(&self, job: &ContainerJob) -> Result<JobOutcome, Error> {
        jobs::run(self, job).await
    }
}
