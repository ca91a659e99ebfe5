//! The Docker runtime: instances as containers of Docker Engine or of podman's Docker-compatible
//! API, through `bollard` over the engine's unix socket.
//!
//! It owns the containers it creates (named [`container_name`], labelled [`ContainerLabels`]):
//! host networking on the port it allocates, no engine restart policy (restarts are the
//! supervisor's), engine-side `json-file` logs bounded by `log_max_bytes`, and the template's
//! stop signal. Stopping is `kill(stop signal)`, a wait of `grace`, `kill(SIGKILL)`, then
//! removal: the same sequence on Docker and podman, whose compat `stop` ignores a signal.
//! Images ([`Images`], in `docker/images.rs`) are inspected, pulled, loaded and removed here too.
//!
//! It never touches a container without the `io.edgeroll.managed` label, never pulls while
//! starting an instance (the image preparation task does that before a revision is desired),
//! and never reads a workload's output into the agent (logs stay with the engine; `logs_hint`
//! says how to read them). The engine may be down when the agent starts: connecting is lazy and
//! every call made while it is unreachable fails transiently, so the supervisor retries.

mod images;
mod jobs;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, HostConfigLogConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::process::free_loopback_port;
use super::{
    container_name, container_process, Adoption, ContainerJob, ContainerLabels, EngineConfig,
    Error, InstanceRecord, JobOutcome, Runtime, StartRequest,
};
use crate::spec::StopSignal;
use crate::time::Timestamp;

/// How long one request may wait for the engine's answer (a pull or load streams for longer).
const REQUEST_TIMEOUT_SECONDS: u64 = 120;
/// How long a container may take to go away after SIGKILL before the stop is an error.
const AFTER_KILL: Duration = Duration::from_secs(10);
/// Between two inspections of a running instance (the wait endpoint usually answers first).
const POLL_RUNNING: Duration = Duration::from_secs(5);
/// Between two inspections of a container that was just signalled.
const POLL_STOPPING: Duration = Duration::from_millis(250);
/// How often, and how long apart, an inspection that met podman's `stopped` is asked again.
const STOPPED_RETRIES: u32 = 40;
const STOPPED_RETRY: Duration = Duration::from_millis(250);
/// Before asking the wait endpoint again after it failed.
const WAIT_RETRY: Duration = Duration::from_secs(1);

/// A connected engine: the client (API version negotiated) and what kind of engine it is.
#[derive(Debug)]
struct Engine {
    docker: Docker,
    podman: bool,
}

/// Instances as containers of a Docker-compatible engine (Docker Engine, podman).
#[derive(Debug)]
pub struct DockerRuntime {
    /// The socket path; `None` is bollard's local default (`DOCKER_HOST`, `/var/run/docker.sock`).
    socket: Option<String>,
    /// Connected on first use, so that an engine that is down at start does not stop the agent.
    engine: OnceCell<Engine>,
    log_max_bytes: u64,
}

impl DockerRuntime {
    /// A runtime for the engine at `config.socket` (`unix:///path` or a path; `None`: bollard's
    /// local defaults). Nothing is contacted yet: the API version is negotiated on first use.
    pub fn connect(config: &EngineConfig) -> Result<Self, Error> {
        let socket = config
            .socket
            .as_deref()
            .map(str::trim)
            .filter(|socket| !socket.is_empty())
            .map(|socket| socket.strip_prefix("unix://").unwrap_or(socket).to_string());
        if let Some(socket) = &socket {
            if socket.contains("://") {
                return Err(Error::Unsupported {
                    runtime: "docker",
                    what: format!("reach {socket}: only a local unix socket is supported"),
                });
            }
        }
        Ok(DockerRuntime {
            socket,
            engine: OnceCell::new(),
            log_max_bytes: config.log_max_bytes.max(4096),
        })
    }

    /// The engine, connecting (and negotiating the API version) on first use. A failure is
    /// not remembered: the next call tries again.
    async fn engine(&self) -> Result<&Engine, Error> {
        self.engine
            .get_or_try_init(|| async {
                let what = "connect to the container engine";
                let docker = match &self.socket {
                    Some(socket) => Docker::connect_with_unix(
                        socket,
                        REQUEST_TIMEOUT_SECONDS,
                        bollard::API_DEFAULT_VERSION,
                    ),
                    None => Docker::connect_with_local_defaults(),
                }
                .map_err(|error| engine_error(what, error))?;
                let docker = docker
                    .negotiate_version()
                    .await
                    .map_err(|error| engine_error(what, error))?;
                let version = docker
                    .version()
                    .await
                    .map_err(|error| engine_error(what, error))?;
                let podman = version
                    .components
                    .iter()
                    .flatten()
                    .map(|component| component.name.as_str())
                    .chain(
                        version
                            .platform
                            .iter()
                            .map(|platform| platform.name.as_str()),
                    )
                    .any(|name| name.to_ascii_lowercase().contains("podman"));
                tracing::info!(
                    engine = if podman { "podman" } else { "docker" },
                    version = version.version.as_deref().unwrap_or("?"),
                    api = %docker.client_version(),
                    "connected to the container engine"
                );
                Ok(Engine { docker, podman })
            })
            .await
    }

    async fn docker(&self) -> Result<&Docker, Error> {
        Ok(&self.engine().await?.docker)
    }

    /// The engine's handle of an instance's container: its id when known, else its name.
    fn target(record: &InstanceRecord) -> String {
        record
            .container
            .clone()
            .unwrap_or_else(|| container_name(&record.id))
    }

    fn host_config(&self, cpu_millis: Option<u32>, memory_bytes: Option<u64>) -> HostConfig {
        HostConfig {
            network_mode: Some("host".to_string()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_string()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), self.log_max_bytes.to_string()),
                    ("max-file".to_string(), "2".to_string()),
                ])),
            }),
            nano_cpus: cpu_millis.map(|millis| i64::from(millis) * 1_000_000),
            memory: memory_bytes.map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
            ..HostConfig::default()
        }
    }

    /// Inspect a container; `None` when the engine does not know it.
    ///
    /// podman shows a container that has just exited, before its cleanup, in a state
    /// `stopped` that the Docker API (and bollard) does not know, so the answer does not parse;
    /// it turns `exited` within moments, so that answer is asked again for a while.
    async fn inspect(&self, target: &str) -> Result<Option<ContainerInspectResponse>, Error> {
        let docker = self.docker().await?;
        let mut attempts = 0;
        loop {
            match docker.inspect_container(target, None).await {
                Ok(inspect) => return Ok(Some(inspect)),
                Err(error) if status_of(&error) == Some(404) => return Ok(None),
                Err(error) if is_podman_stopped(&error) && attempts < STOPPED_RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(STOPPED_RETRY).await;
                }
                Err(error) => {
                    return Err(engine_error(&format!("inspect container {target}"), error))
                }
            }
        }
    }

    /// Send `signal` to a container; a container that is gone or not running is no error.
    async fn kill(&self, target: &str, signal: &str) -> Result<(), Error> {
        let docker = self.docker().await?;
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        match docker.kill_container(target, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if matches!(status_of(&error), Some(404 | 409)) => Ok(()),
            // podman answers 500 "container state improper" for a container that just exited.
            Err(error) if is_not_running(&error) => Ok(()),
            Err(error) => Err(engine_error(&format!("kill {target} with {signal}"), error)),
        }
    }

    /// Remove a container (killing it if it still runs); gone already is success.
    async fn remove(&self, target: &str) -> Result<(), Error> {
        let docker = self.docker().await?;
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match docker.remove_container(target, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if status_of(&error) == Some(404) => Ok(()),
            // Docker: "removal of container … is already in progress".
            Err(error) if status_of(&error) == Some(409) => Ok(()),
            Err(error) => Err(engine_error(&format!("remove container {target}"), error)),
        }
    }

    /// Resolve once the container is not running: the wait endpoint, raced against inspecting
    /// it every `poll` (the wait request can fail, time out, or under load answer late on
    /// podman; inspection settles it).
    async fn wait_not_running(&self, target: &str, poll: Duration) {
        let waited = async {
            loop {
                if let Ok(docker) = self.docker().await {
                    let options = WaitContainerOptions {
                        condition: "not-running".to_string(),
                    };
                    let mut stream = docker.wait_container(target, Some(options));
                    match stream.next().await {
                        Some(Ok(_)) => return,
                        // A non-zero exit code comes as this error: it exited.
                        Some(Err(BollardError::DockerContainerWaitError { .. })) => return,
                        Some(Err(error)) if status_of(&error) == Some(404) => return,
                        Some(Err(error)) => {
                            tracing::debug!(%target, %error, "wait failed; inspecting instead");
                        }
                        None => {}
                    }
                }
                // Only the polling below ends this now, until the next attempt.
                tokio::time::sleep(WAIT_RETRY).await;
            }
        };
        let polled = async {
            loop {
                tokio::time::sleep(poll).await;
                match self.inspect(target).await {
                    Ok(None) => return,
                    Ok(Some(inspect)) if !is_running(&inspect) => return,
                    Ok(Some(_)) | Err(_) => {}
                }
            }
        };
        tokio::select! {
            () = waited => {}
            () = polled => {}
        }
    }

    /// Create and start a container; on a failed start the container is removed again.
    async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
        image: &str,
    ) -> Result<ContainerInspectResponse, Error> {
        let docker = self.docker().await?;
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            platform: String::new(),
        };
        let created = match docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(error) if status_of(&error) == Some(404) => {
                return Err(Error::ImageMissing {
                    image: image.to_string(),
                })
            }
            Err(error) => return Err(engine_error(&format!("create container {name}"), error)),
        };
        if let Err(error) = docker.start_container(&created.id, None).await {
            let error = engine_error(&format!("start container {name}"), error);
            if let Err(cleanup) = self.remove(&created.id).await {
                tracing::warn!(%name, %cleanup, "could not remove a container that failed to start");
            }
            return Err(error);
        }
        match self.inspect(&created.id).await? {
            Some(inspect) => Ok(inspect),
            None => Err(Error::Engine {
                what: format!("start container {name}"),
                message: "the container vanished right after it started".to_string(),
                transient: true,
            }),
        }
    }
}

impl Runtime for DockerRuntime {
    async fn start(&self, request: &StartRequest) -> Result<InstanceRecord, Error> {
        let template = &request.template;
        let Some(container) = &template.container else {
            return Err(Error::Unsupported {
                runtime: "docker",
                what: format!(
                    "run instance {} without an image (set the template's image)",
                    request.id
                ),
            });
        };
        let port = free_loopback_port()?;
        let mut record = InstanceRecord {
            id: request.id.clone(),
            service: request.service.clone(),
            revision: request.revision,
            template: template.clone(),
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            pid: 0,
            start_ticks: 0,
            started_at: Timestamp::default(),
            log_path: PathBuf::new(),
            container: None,
        };
        let name = container_name(&request.id);
        let (command, args, env) = container_process(template, port);
        let labels = ContainerLabels::of(&record)
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect();
        let body = ContainerCreateBody {
            image: Some(container.image.clone()),
            entrypoint: (!command.is_empty()).then_some(command),
            cmd: (!args.is_empty()).then_some(args),
            env: Some(
                env.into_iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect(),
            ),
            labels: Some(labels),
            stop_signal: Some(template.stop_signal().name().to_string()),
            host_config: Some(self.host_config(container.cpu_millis, container.memory_bytes)),
            ..ContainerCreateBody::default()
        };
        let inspect = self.create_and_start(&name, body, &container.image).await?;
        let state = inspect.state.as_ref();
        record.pid = state
            .and_then(|state| state.pid)
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(0);
        record.started_at = state
            .and_then(|state| state.started_at.as_deref())
            .and_then(parse_engine_time)
            .unwrap_or_default();
        record.container = inspect.id;
        tracing::info!(id = %record.id, %name, %port, pid = record.pid, "started a container");
        Ok(record)
    }

    async fn stop(&self, record: &InstanceRecord, grace: Duration) -> Result<(), Error> {
        let target = Self::target(record);
        let signal = record.template.stop_signal();
        if signal != StopSignal::Kill {
            self.kill(&target, signal.name()).await?;
            if tokio::time::timeout(grace, self.wait_not_running(&target, POLL_STOPPING))
                .await
                .is_err()
            {
                tracing::info!(id = %record.id, ?grace, "still running after the grace; killing it");
            }
        }
        self.kill(&target, StopSignal::Kill.name()).await?;
        if tokio::time::timeout(AFTER_KILL, self.wait_not_running(&target, POLL_STOPPING))
            .await
            .is_err()
        {
            return Err(Error::StopTimedOut {
                id: record.id.clone(),
                waited: AFTER_KILL,
            });
        }
        self.remove(&target).await
    }

    async fn adopt(&self, record: &InstanceRecord) -> Result<Adoption, Error> {
        let target = Self::target(record);
        let Some(inspect) = self.inspect(&target).await? else {
            return Ok(Adoption::Gone);
        };
        let labels = inspect
            .config
            .as_ref()
            .and_then(|config| config.labels.clone())
            .unwrap_or_default();
        let ours = labels.get(ContainerLabels::MANAGED).map(String::as_str) == Some("true")
            && labels.get(ContainerLabels::INSTANCE) == Some(&record.id);
        if !ours {
            return Ok(Adoption::Foreign);
        }
        if labels.get(ContainerLabels::SPEC_HASH) != Some(&super::spec_hash(record)) {
            return Ok(Adoption::Foreign);
        }
        if is_running(&inspect) {
            return Ok(Adoption::Adopted);
        }
        self.remove(&target).await?;
        Ok(Adoption::Gone)
    }

    async fn wait_exited(&self, record: &InstanceRecord) {
        self.wait_not_running(&Self::target(record), POLL_RUNNING)
            .await;
    }

    async fn bound_logs(&self, _record: &InstanceRecord) -> Result<(), Error> {
        // The engine keeps them within `max-size` × `max-file`.
        Ok(())
    }

    /// A dead instance's container is removed in the background (a stopped one is gone
    /// already): the supervisor restarts it under a new id, and a crash loop must not pile up
    /// exited containers. Never forced, so a container that still runs is left alone.
    fn release(&self, record: &InstanceRecord) {
        let (Some(engine), Ok(runtime)) =
            (self.engine.get(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let docker = engine.docker.clone();
        let target = Self::target(record);
        runtime.spawn(async move {
            let options = RemoveContainerOptions {
                force: false,
                v: true,
                link: false,
            };
            match docker.remove_container(&target, Some(options)).await {
                Ok(()) => tracing::debug!(%target, "removed a dead instance's container"),
                Err(error) if matches!(status_of(&error), Some(404 | 409)) => {}
                Err(error) => {
                    tracing::warn!(%target, %error, "could not remove a dead instance's container")
                }
            }
        });
    }

    fn logs_hint(&self, record: &InstanceRecord) -> String {
        let podman = self.engine.get().is_some_and(|engine| engine.podman);
        let cli = if podman { "podman" } else { "docker" };
        format!("{cli} logs {}", container_name(&record.id))
    }

    async fn sweep(&self, known: &[InstanceRecord]) -> Result<Vec<String>, Error> {
        let docker = self.docker().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{}=true", ContainerLabels::MANAGED)],
            )])),
            ..ListContainersOptions::default()
        };
        // podman lists a container that has just exited as `stopped` too (see `inspect`).
        let mut attempts = 0;
        let containers = loop {
            match docker.list_containers(Some(options.clone())).await {
                Ok(containers) => break containers,
                Err(error) if is_podman_stopped(&error) && attempts < STOPPED_RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(STOPPED_RETRY).await;
                }
                Err(error) => return Err(engine_error("list containers", error)),
            }
        };
        let mut removed = Vec::new();
        for container in containers {
            let labels = container.labels.unwrap_or_default();
            // Jobs are removed by the call that runs them.
            if labels.get(ContainerLabels::ROLE).map(String::as_str) == Some("job") {
                continue;
            }
            let Some(id) = container.id else { continue };
            let instance = labels.get(ContainerLabels::INSTANCE).cloned();
            let named = known.iter().any(|record| {
                record.container.as_deref() == Some(id.as_str())
                    || instance.as_deref() == Some(record.id.as_str())
            });
            if named {
                continue;
            }
            tracing::info!(container = %id, instance = ?instance, "removing a container of ours that no record names");
            self.remove(&id).await?;
            removed.push(instance.unwrap_or(id));
        }
        Ok(removed)
    }

    async fn run_job(&self, job: &ContainerJob) -> Result<JobOutcome, Error> {
        self.job(job).await
    }
}

fn is_running(inspect: &ContainerInspectResponse) -> bool {
    inspect
        .state
        .as_ref()
        .and_then(|state| state.running)
        .unwrap_or(false)
}

/// The HTTP status of an engine's refusal, if that is what `error` is.
fn status_of(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// podman's transient `stopped` state, which does not parse as a Docker container state.
fn is_podman_stopped(error: &BollardError) -> bool {
    matches!(error, BollardError::JsonDataError { message, .. } if message.contains("`stopped`"))
}

fn is_not_running(error: &BollardError) -> bool {
    matches!(error, BollardError::DockerResponseServerError { message, .. }
        if message.contains("not running") || message.contains("state improper"))
}

/// An engine failure as the supervisor sees it: 4xx is a refusal of what was asked (not
/// transient, except timeouts and rate limits); 5xx, an unreachable engine, a broken
/// connection or a timeout may pass.
fn engine_error(what: &str, error: BollardError) -> Error {
    let transient = match &error {
        BollardError::DockerResponseServerError { status_code, .. } => {
            *status_code >= 500 || matches!(status_code, 408 | 429)
        }
        BollardError::JsonDataError { .. }
        | BollardError::JsonSerdeError { .. }
        | BollardError::APIVersionParseError {}
        | BollardError::UnsupportedURISchemeError { .. } => false,
        _ => true,
    };
    let message = match &error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    };
    Error::Engine {
        what: what.to_string(),
        message,
        transient,
    }
}

/// An engine's RFC 3339 time (nanoseconds, `Z` or `+00:00`) as a [`Timestamp`].
fn parse_engine_time(text: &str) -> Option<Timestamp> {
    let text = text
        .strip_suffix("+00:00")
        .map_or_else(|| text.to_string(), |utc| format!("{utc}Z"));
    let time = humantime::parse_rfc3339_weak(&text).ok()?;
    let millis = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    Some(Timestamp::from_millis(u64::try_from(millis).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Images;

    fn config(socket: Option<&str>) -> EngineConfig {
        EngineConfig {
            socket: socket.map(String::from),
            namespace: String::new(),
            state_dir: PathBuf::from("/nonexistent"),
            log_max_bytes: 1 << 20,
        }
    }

    #[test]
    fn connect_is_lazy_and_takes_a_path_or_a_unix_url() {
        let runtime = DockerRuntime::connect(&config(Some("unix:///nonexistent/docker.sock")))
            .expect("no engine is contacted");
        assert_eq!(runtime.socket.as_deref(), Some("/nonexistent/docker.sock"));
        let runtime = DockerRuntime::connect(&config(Some("/run/podman/podman.sock"))).unwrap();
        assert_eq!(runtime.socket.as_deref(), Some("/run/podman/podman.sock"));
        assert!(DockerRuntime::connect(&config(None))
            .unwrap()
            .socket
            .is_none());
        assert!(DockerRuntime::connect(&config(Some("tcp://10.0.0.1:2375"))).is_err());
    }

    #[tokio::test]
    async fn an_engine_that_is_down_fails_transiently() {
        let runtime =
            DockerRuntime::connect(&config(Some("unix:///nonexistent/docker.sock"))).unwrap();
        let error = runtime.present("busybox:1").await.unwrap_err();
        assert!(error.is_transient(), "{error}");
    }

    #[test]
    fn engine_times_parse_with_nanoseconds_and_offsets() {
        let expected = Some(Timestamp::from_millis(1_795_773_600_123));
        assert_eq!(
            parse_engine_time("2026-11-27T10:00:00.123456789Z"),
            expected
        );
        assert_eq!(
            parse_engine_time("2026-11-27T10:00:00.123456789+00:00"),
            expected
        );
        assert_eq!(parse_engine_time("0001-01-01T00:00:00Z"), None);
    }

    #[test]
    fn podmans_stopped_state_is_recognised() {
        let stopped = BollardError::JsonDataError {
            message: "unknown variant `stopped`, expected one of ``, `created`".to_string(),
            column: 193,
        };
        assert!(is_podman_stopped(&stopped));
        assert!(!is_podman_stopped(&BollardError::RequestTimeoutError));
    }

    #[test]
    fn refusals_are_not_transient_but_engine_failures_are() {
        let refusal = BollardError::DockerResponseServerError {
            status_code: 400,
            message: "invalid reference format".to_string(),
        };
        assert!(!engine_error("create", refusal).is_transient());
        let failure = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "boom".to_string(),
        };
        assert!(engine_error("create", failure).is_transient());
        assert!(engine_error("create", BollardError::RequestTimeoutError).is_transient());
    }
}
