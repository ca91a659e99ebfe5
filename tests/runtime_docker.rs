//! The docker runtime against real engines: Docker Engine and podman's Docker-compatible API,
//! each test once per engine. The real supervisor drives `DockerRuntime` with an in-memory
//! journal: revisions side by side on their own ports, restarts of a container killed behind the
//! agent's back, adoption by a restarted agent, the sweep, stop signals and the grace, resource
//! limits, images (load, present, remove, pull from a registry on loopback) and jobs.
//!
//! The engines come from `tests/engines/docker.sh` and `tests/engines/podman.sh` (their `start`
//! prints the `EDGEROLL_TEST_DOCKER`, `EDGEROLL_TEST_REGISTRY` and `EDGEROLL_TEST_PODMAN` to
//! export). A test fails, never skips, when its engine is not there.
// These tests drive real engines in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod container_support;

mod journal_support;

use journal_support::MemJournal;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::Docker;
use container_support::{build_image, http_get, http_template, StopBehaviour};
use edgeroll::runtime::docker::DockerRuntime;
use edgeroll::runtime::images::{self, ImageJournal, ImagesDesired};
use edgeroll::runtime::{
    self, ContainerJob, DesiredRevision, EngineConfig, ImageEvent, Images, InstanceJournal,
    InstanceRecord, InstanceStatus, InstancesChanged, PullProgress, Runtime, StartRequest,
    SupervisorConfig, SupervisorHandle,
};
use edgeroll::spec::{ContainerSpec, PullPolicy};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Generous: the machine running the tests may be busy.
const DEADLINE: Duration = Duration::from_secs(60);
const SERVICE: &str = "web";
/// The image every instance test runs.
const IMAGE: &str = "docker.io/edgeroll-test/busybox:1";
/// A container of someone else, which the agent must never touch.
const FOREIGN: &str = "edgeroll-test-foreign";

/// Tests of one engine run one at a time: the sweep removes every container of ours that its
/// journal does not name, including another test's.
static DOCKER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static PODMAN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One engine under test.
struct Engine {
    name: &'static str,
    socket: String,
    /// The test's own client, for what happens behind the agent's back.
    docker: Docker,
    _serial: tokio::sync::MutexGuard<'static, ()>,
    images: tempfile::TempDir,
}

impl Engine {
    async fn get(name: &'static str) -> Engine {
        let (variable, lock) = match name {
            "docker" => ("EDGEROLL_TEST_DOCKER", &DOCKER_LOCK),
            _ => ("EDGEROLL_TEST_PODMAN", &PODMAN_LOCK),
        };
        let socket = std::env::var(variable).unwrap_or_else(|_| {
            panic!(
                "{variable} is not set: run `eval \"$(tests/engines/{name}.sh start)\"` first \
                 (.ci/run does)"
            )
        });
        let serial = lock.lock().await;
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
            .unwrap_or_else(|error| panic!("{name} at {socket}: {error}"))
            .negotiate_version()
            .await
            .unwrap_or_else(|error| panic!("{name} at {socket} does not answer: {error}"));
        let engine = Engine {
            name,
            socket,
            docker,
            _serial: serial,
            images: tempfile::tempdir().unwrap(),
        };
        engine.remove_all_ours().await;
        engine
    }

    /// A new runtime on this engine, as a (re)started agent makes one.
    fn runtime(&self) -> Arc<DockerRuntime> {
        let config = EngineConfig {
            socket: Some(self.socket.clone()),
            namespace: String::new(),
            state_dir: PathBuf::from("/nonexistent"),
            log_max_bytes: 1 << 20,
        };
        Arc::new(DockerRuntime::connect(&config).expect("connect is lazy"))
    }

    /// Make `reference` present from a busybox tarball (no registry).
    async fn ensure_image(&self, reference: &str) {
        let runtime = self.runtime();
        if runtime.present(reference).await.unwrap() {
            return;
        }
        let archive = build_image(self.images.path(), reference, &[]);
        let (progress, _) = watch::channel(PullProgress::default());
        runtime.load(&archive, &progress).await.unwrap();
        assert!(runtime.present(reference).await.unwrap());
    }

    /// Every container carrying our label, and the foreign one: gone.
    async fn remove_all_ours(&self) {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec!["io.edgeroll.managed=true".to_string()],
            )])),
            ..ListContainersOptions::default()
        };
        let containers = self.docker.list_containers(Some(options)).await.unwrap();
        let ids = containers.into_iter().filter_map(|container| container.id);
        for id in ids.chain([FOREIGN.to_string()]) {
            let _ = self.docker.remove_container(&id, Some(force())).await;
        }
    }

    /// The container's inspection, `None` once the engine does not know it.
    async fn inspect(&self, target: &str) -> Option<bollard::models::ContainerInspectResponse> {
        self.docker.inspect_container(target, None).await.ok()
    }

    async fn wait_container_gone(&self, target: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.inspect(target).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "{}: container {target} is still there",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn cli(&self) -> &'static str {
        self.name
    }
}

fn force() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    }
}

/// Run `$scenario(engine)` once against dockerd and once against podman.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs dockerd; .ci/run starts it (tests/engines/docker.sh) and runs --ignored"]
            async fn docker() {
                super::$scenario(super::Engine::get("docker").await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs podman; .ci/run starts it (tests/engines/podman.sh) and runs --ignored"]
            async fn podman() {
                super::$scenario(super::Engine::get("podman").await).await;
            }
        }
    )*};
}

on_both_engines!(
    two_revisions_run_side_by_side_on_their_own_ports,
    a_container_killed_behind_the_agents_back_is_restarted,
    a_restarted_agent_adopts_running_containers_without_restarting_them,
    the_sweep_removes_unnamed_containers_of_ours_and_never_touches_others,
    the_stop_signal_is_sent_and_sigkill_follows_after_the_grace,
    resource_limits_reach_the_engine,
    images_load_present_remove_and_a_wrong_archive_fails_clearly,
    jobs_end_with_their_exit_code_or_at_their_deadline,
    a_pull_from_a_registry_reports_its_bytes,
    an_engine_that_comes_up_late_is_reached_on_the_next_call,
);

/// One supervisor on a runtime of the engine.
struct Harness {
    handle: SupervisorHandle,
    updates: mpsc::Receiver<InstancesChanged>,
    shutdown: CancellationToken,
    journal: Arc<MemJournal>,
    runtime: Arc<DockerRuntime>,
}

impl Harness {
    fn start(engine: &Engine, journal: Arc<MemJournal>, stop_grace: Duration) -> Harness {
        let (sender, updates) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let config = SupervisorConfig {
            log_dir: PathBuf::from("/nonexistent"),
            log_max_bytes: 1 << 20,
            stop_grace,
        };
        let runtime = engine.runtime();
        let handle = runtime::start_shared(
            Arc::clone(&runtime),
            config,
            journal.clone(),
            sender,
            shutdown.clone(),
        );
        Harness {
            handle,
            updates,
            shutdown,
            journal,
            runtime,
        }
    }

    /// Wait for a report of `SERVICE` whose instances satisfy `predicate`.
    async fn wait_for(
        &mut self,
        what: &str,
        predicate: impl Fn(&[InstanceStatus]) -> bool,
    ) -> Vec<InstanceStatus> {
        let deadline = Instant::now() + DEADLINE;
        let mut last = None;
        loop {
            match tokio::time::timeout_at(deadline, self.updates.recv()).await {
                Ok(Some(changed)) if changed.service == SERVICE => {
                    if predicate(&changed.instances) {
                        return changed.instances;
                    }
                    last = Some(changed.instances);
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("the supervisor closed its updates while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; last report: {last:#?}"),
            }
        }
    }

    fn container_of(&self, id: &str) -> String {
        self.journal.record(id).container.expect("a container id")
    }
}

fn desired(revisions: &[(u64, &edgeroll::spec::Template)]) -> Vec<DesiredRevision> {
    revisions
        .iter()
        .map(|(revision, template)| DesiredRevision {
            revision: *revision,
            template: (*template).clone(),
            count: 1,
        })
        .collect()
}

fn all_ready(count: usize) -> impl Fn(&[InstanceStatus]) -> bool {
    move |instances| instances.len() == count && instances.iter().all(|instance| instance.ready)
}

async fn get(address: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http_get(address, &path))
        .await
        .unwrap()
}

async fn two_revisions_run_side_by_side_on_their_own_ports(engine: Engine) {
    engine.ensure_image(IMAGE).await;
    let mut harness = Harness::start(&engine, Arc::default(), Duration::from_secs(5));
    let v1 = http_template(IMAGE, "1.0", StopBehaviour::ExitOnTerm);
    let v2 = http_template(IMAGE, "2.0", StopBehaviour::ExitOnTerm);
    harness
        .handle
        .set_desired(SERVICE, desired(&[(1, &v1), (2, &v2)]));
    let mut instances = harness.wait_for("two ready instances", all_ready(2)).await;
    instances.sort_by_key(|instance| instance.revision);
    assert_ne!(instances[0].address.port(), instances[1].address.port());
    for (instance, version) in instances.iter().zip(["1.0", "2.0"]) {
        assert_eq!(
            get(instance.address, "/version").await,
            Some((200, format!("{version}\n"))),
            "{}: revision {} on {}",
            engine.name,
            instance.revision,
            instance.address
        );
        let name = format!("edgeroll-{}", instance.id);
        assert_eq!(instance.logs, format!("{} logs {name}", engine.cli()));

        let inspect = engine.inspect(&name).await.expect("the container exists");
        let host = inspect.host_config.clone().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        let restart = host.restart_policy.and_then(|policy| policy.name);
        assert!(
            matches!(
                restart,
                None | Some(bollard::models::RestartPolicyNameEnum::NO)
                    | Some(bollard::models::RestartPolicyNameEnum::EMPTY)
            ),
            "{}: restart policy {restart:?}",
            engine.name
        );
        if engine.name == "docker" {
            // podman keeps only the size (`podman inspect` shows `"Size": "1.049MB"`).
            let logs = host.log_config.clone().unwrap();
            assert_eq!(logs.typ.as_deref(), Some("json-file"));
            let options = logs.config.unwrap();
            assert_eq!(options["max-size"], (1u64 << 20).to_string());
            assert_eq!(options["max-file"], "2");
        }
        let labels = inspect.config.unwrap().labels.unwrap();
        assert_eq!(labels["io.edgeroll.managed"], "true");
        assert_eq!(labels["io.edgeroll.instance"], instance.id);
        assert_eq!(
            labels["io.edgeroll.revision"],
            instance.revision.to_string()
        );
        assert_eq!(labels["io.edgeroll.role"], "instance");
        let record = harness.journal.record(&instance.id);
        assert_eq!(labels["io.edgeroll.spec-hash"], runtime::spec_hash(&record));
        assert!(
            record.pid > 0,
            "{}: the container's pid is recorded",
            engine.name
        );
        assert_eq!(record.log_path, PathBuf::new());
        println!(
            "{}: {} serves {version} on {} ({}), log config {:?}",
            engine.name, name, instance.address, instance.logs, host.log_config
        );
    }

    let containers: Vec<String> = instances
        .iter()
        .map(|instance| harness.container_of(&instance.id))
        .collect();
    harness.handle.stop_all().await;
    for container in containers {
        assert!(
            engine.inspect(&container).await.is_none(),
            "{}: a stopped instance's container is removed",
            engine.name
        );
    }
    assert!(harness.journal.ids().is_empty());
}

async fn a_container_killed_behind_the_agents_back_is_restarted(engine: Engine) {
    engine.ensure_image(IMAGE).await;
    let mut harness = Harness::start(&engine, Arc::default(), Duration::from_secs(5));
    let template = http_template(IMAGE, "1.0", StopBehaviour::ExitOnTerm);
    harness
        .handle
        .set_desired(SERVICE, desired(&[(1, &template)]));
    let first = harness.wait_for("one ready instance", all_ready(1)).await;
    let old = harness.container_of(&first[0].id);

    let kill = KillContainerOptions {
        signal: "SIGKILL".to_string(),
    };
    engine
        .docker
        .kill_container(&old, Some(kill))
        .await
        .unwrap();
    let restarted = harness
        .wait_for("the instance restarted and ready", |instances| {
            instances.len() == 1 && instances[0].ready && instances[0].restarts == 1
        })
        .await;
    assert_ne!(restarted[0].id, first[0].id);
    let new = harness.container_of(&restarted[0].id);
    assert_ne!(new, old);
    assert_eq!(
        get(restarted[0].address, "/healthz").await,
        Some((200, "ok\n".to_string()))
    );
    // The dead container does not pile up.
    engine.wait_container_gone(&old).await;
    assert_eq!(harness.journal.ids(), vec![restarted[0].id.clone()]);
    harness.handle.stop_all().await;
    engine.wait_container_gone(&new).await;
}

async fn a_restarted_agent_adopts_running_containers_without_restarting_them(engine: Engine) {
    engine.ensure_image(IMAGE).await;
    let journal: Arc<MemJournal> = Arc::default();
    let template = http_template(IMAGE, "1.0", StopBehaviour::ExitOnTerm);
    let mut first = Harness::start(&engine, journal.clone(), Duration::from_secs(5));
    first
        .handle
        .set_desired(SERVICE, desired(&[(1, &template)]));
    let started = first.wait_for("one ready instance", all_ready(1)).await;
    let record = journal.record(&started[0].id);
    let container = record.container.clone().unwrap();
    let started_at = |inspect: bollard::models::ContainerInspectResponse| {
        inspect.state.and_then(|state| state.started_at)
    };
    let before = started_at(engine.inspect(&container).await.unwrap());

    // The agent stops (or is killed): supervision ends, the container keeps running.
    first.shutdown.cancel();
    tokio::time::timeout(DEADLINE, first.handle.finished())
        .await
        .expect("the supervisor ends on shutdown");
    assert_eq!(
        get(record.address, "/healthz")
            .await
            .map(|(status, _)| status),
        Some(200)
    );

    // A new agent: a new runtime (nothing in memory), the same journal.
    let mut second = Harness::start(&engine, journal.clone(), Duration::from_secs(5));
    let adopted = second
        .wait_for("the adopted instance ready", all_ready(1))
        .await;
    assert_eq!(adopted[0].id, record.id);
    assert_eq!(adopted[0].restarts, 0);
    second
        .handle
        .set_desired(SERVICE, desired(&[(1, &template)]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = second.handle.instances(SERVICE).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].id, record.id);
    assert_eq!(
        journal.record(&record.id).container,
        Some(container.clone())
    );
    let after = started_at(engine.inspect(&container).await.expect("still there"));
    assert_eq!(
        after, before,
        "{}: the container was not restarted",
        engine.name
    );
    println!("{}: adopted {container} started at {after:?}", engine.name);

    second.handle.stop_all().await;
    engine.wait_container_gone(&container).await;
    assert!(journal.ids().is_empty());
    drop(first);
}

/// Create and start a long-running busybox container outside the agent.
async fn run_outside(engine: &Engine, name: &str, labels: HashMap<String, String>) -> String {
    let body = ContainerCreateBody {
        image: Some(IMAGE.to_string()),
        entrypoint: Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            "trap 'exit 0' TERM; while :; do sleep 1; done".to_string(),
        ]),
        labels: Some(labels),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("host".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        platform: String::new(),
    };
    let created = engine
        .docker
        .create_container(Some(options), body)
        .await
        .unwrap();
    engine
        .docker
        .start_container(&created.id, None)
        .await
        .unwrap();
    created.id
}

async fn the_sweep_removes_unnamed_containers_of_ours_and_never_touches_others(engine: Engine) {
    engine.ensure_image(IMAGE).await;
    // Ours, but no record names it (a crash between create and journal).
    let orphan_labels = HashMap::from([
        ("io.edgeroll.managed".to_string(), "true".to_string()),
        ("io.edgeroll.service".to_string(), SERVICE.to_string()),
        (
            "io.edgeroll.instance".to_string(),
            "web-r9-orphan".to_string(),
        ),
        ("io.edgeroll.role".to_string(), "instance".to_string()),
    ]);
    let orphan = run_outside(&engine, "edgeroll-web-r9-orphan", orphan_labels).await;
    // Someone else's: no label of ours (it even looks like one of ours by name).
    let foreign_labels = HashMap::from([("io.edgeroll.service".to_string(), SERVICE.to_string())]);
    let foreign = run_outside(&engine, FOREIGN, foreign_labels).await;

    // Ours and journaled, but not what the record asked for (its spec-hash differs): not
    // adopted, and removed by the sweep.
    let stale_record = InstanceRecord {
        id: "web-r1-stale".to_string(),
        service: SERVICE.to_string(),
        revision: 1,
        template: http_template(IMAGE, "1.0", StopBehaviour::ExitOnTerm),
        address: "127.0.0.1:1".parse().unwrap(),
        pid: 0,
        start_ticks: 0,
        started_at: Default::default(),
        log_path: PathBuf::new(),
        container: None,
    };
    let stale_labels = HashMap::from([
        ("io.edgeroll.managed".to_string(), "true".to_string()),
        ("io.edgeroll.instance".to_string(), stale_record.id.clone()),
        ("io.edgeroll.spec-hash".to_string(), "0000".to_string()),
        ("io.edgeroll.role".to_string(), "instance".to_string()),
    ]);
    let stale = run_outside(&engine, "edgeroll-web-r1-stale", stale_labels).await;
    let journal: Arc<MemJournal> = Arc::default();
    journal.save_instance(&stale_record).unwrap();

    let harness = Harness::start(&engine, journal.clone(), Duration::from_secs(5));
    engine.wait_container_gone(&orphan).await;
    engine.wait_container_gone(&stale).await;
    assert!(journal.ids().is_empty(), "{:?}", journal.ids());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = engine
        .inspect(&foreign)
        .await
        .and_then(|inspect| inspect.state)
        .and_then(|state| state.running);
    assert_eq!(
        running,
        Some(true),
        "{}: the foreign container runs on",
        engine.name
    );

    // Neither does an explicit sweep, nor adoption of a record that names it.
    let removed = harness.runtime.sweep(&[]).await.unwrap();
    assert!(removed.is_empty(), "{removed:?}");
    let mut record = InstanceRecord {
        id: "web-r1-foreign".to_string(),
        service: SERVICE.to_string(),
        revision: 1,
        template: http_template(IMAGE, "1.0", StopBehaviour::ExitOnTerm),
        address: "127.0.0.1:1".parse().unwrap(),
        pid: 0,
        start_ticks: 0,
        started_at: Default::default(),
        log_path: PathBuf::new(),
        container: Some(foreign.clone()),
    };
    assert_eq!(
        harness.runtime.adopt(&record).await.unwrap(),
        runtime::Adoption::Foreign
    );
    record.container = None;
    assert_eq!(
        harness.runtime.adopt(&record).await.unwrap(),
        runtime::Adoption::Gone
    );
    assert!(engine.inspect(&foreign).await.is_some());
    engine
        .docker
        .remove_container(&foreign, Some(force()))
        .await
        .unwrap();
}

async fn the_stop_signal_is_sent_and_sigkill_follows_after_the_grace(engine: Engine) {
    engine.ensure_image(IMAGE).await;
    // SIGUSR1 stops this one (it ignores SIGTERM): a stop well before the grace proves it was
    // the signal sent.
    let grace = Duration::from_secs(20);
    let mut harness = Harness::start(&engine, Arc::default(), grace);
    let usr1 = http_template(IMAGE, "usr1", StopBehaviour::ExitOnUsr1);
    harness.handle.set_desired(SERVICE, desired(&[(1, &usr1)]));
    let started = harness.wait_for("one ready instance", all_ready(1)).await;
    let container = harness.container_of(&started[0].id);
    let inspect = engine.inspect(&container).await.unwrap();
    // podman shows the number.
    let stop_signal = inspect.config.unwrap().stop_signal;
    assert!(
        matches!(stop_signal.as_deref(), Some("SIGUSR1" | "10")),
        "{}: {stop_signal:?}",
        engine.name
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    harness.handle.stop_all().await;
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "{}: SIGUSR1 stop took {took:?} (grace {grace:?})",
        engine.name
    );
    assert!(engine.inspect(&container).await.is_none());
    println!("{}: stopped by SIGUSR1 in {took:?}", engine.name);
    harness.shutdown.cancel();

    // This one ignores every signal: SIGKILL after the grace.
    let grace = Duration::from_secs(2);
    let mut harness = Harness::start(&engine, Arc::default(), grace);
    let stubborn = http_template(IMAGE, "stubborn", StopBehaviour::IgnoreAll);
    harness
        .handle
        .set_desired(SERVICE, desired(&[(1, &stubborn)]));
    let started = harness.wait_for("one ready instance", all_ready(1)).await;
    let container = harness.container_of(&started[0].id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    harness.handle.stop_all().await;
    let took = stopping.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(10),
        "{}: a stubborn stop took {took:?} (grace {grace:?})",
        engine.name
    );
    assert!(engine.inspect(&container).await.is_none());
    assert!(harness.journal.ids().is_empty());
    println!(
        "{}: SIGKILLed after the grace, stop took {took:?}",
        engine.name
    );
}

async fn resource_limits_reach_the_engine(engine: Engine) {
    engine.ensure_image(IMAGE).await;
    let runtime = engine.runtime();
    let mut template = http_template(IMAGE, "limited", StopBehaviour::ExitOnTerm);
    let container = template.container.as_mut().unwrap();
    container.cpu_millis = Some(500);
    container.memory_bytes = Some(64 << 20);
    let request = StartRequest {
        id: "web-r1-limits".to_string(),
        service: SERVICE.to_string(),
        revision: 1,
        template,
    };
    let record = runtime.start(&request).await.unwrap();
    let inspect = engine
        .inspect(record.container.as_deref().unwrap())
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000), "{}", engine.name);
    assert_eq!(host.memory, Some(64 << 20), "{}", engine.name);
    runtime.stop(&record, Duration::from_secs(5)).await.unwrap();
    assert!(engine.inspect(&container_name(&record)).await.is_none());
}

fn container_name(record: &InstanceRecord) -> String {
    runtime::container_name(&record.id)
}

/// The image journal as a set, standing in for the store.
#[derive(Default)]
struct MemImages(Mutex<Vec<String>>);

impl ImageJournal for MemImages {
    fn record_image(&self, image: &str) -> Result<(), String> {
        self.0.lock().unwrap().push(image.to_string());
        Ok(())
    }
    fn forget_image(&self, image: &str) -> Result<(), String> {
        self.0.lock().unwrap().retain(|known| known != image);
        Ok(())
    }
    fn load_images(&self) -> Result<Vec<String>, String> {
        Ok(self.0.lock().unwrap().clone())
    }
}

async fn images_load_present_remove_and_a_wrong_archive_fails_clearly(engine: Engine) {
    let runtime = engine.runtime();
    let image = "docker.io/edgeroll-test/images:1";
    runtime.remove(image).await.unwrap();
    assert!(!runtime.present(image).await.unwrap());
    let archive = build_image(engine.images.path(), image, &[("www/extra", b"x")]);
    let size = std::fs::metadata(&archive).unwrap().len();
    let (progress, seen) = watch::channel(PullProgress::default());
    let loaded = runtime.load(&archive, &progress).await.unwrap();
    assert!(
        loaded
            .iter()
            .any(|name| name.ends_with("edgeroll-test/images:1")),
        "{}: loaded {loaded:?}",
        engine.name
    );
    assert_eq!(seen.borrow().done_bytes, size);
    assert_eq!(seen.borrow().total_bytes, Some(size));
    println!("{}: loaded {loaded:?} ({size} bytes)", engine.name);
    assert!(runtime.present(image).await.unwrap());
    runtime.remove(image).await.unwrap();
    assert!(!runtime.present(image).await.unwrap());
    runtime.remove(image).await.unwrap();

    // Starting an instance never pulls: a missing image is an error, and no container is left.
    let request = StartRequest {
        id: "web-r1-missing".to_string(),
        service: SERVICE.to_string(),
        revision: 1,
        template: http_template(image, "1.0", StopBehaviour::ExitOnTerm),
    };
    let error = runtime.start(&request).await.unwrap_err();
    assert!(
        matches!(&error, runtime::Error::ImageMissing { image: missing } if missing == image),
        "{}: {error}",
        engine.name
    );
    assert!(engine.inspect("edgeroll-web-r1-missing").await.is_none());

    // An imageArchive that holds another name: the preparation fails and says both names.
    let other = build_image(engine.images.path(), "docker.io/edgeroll-test/other:1", &[]);
    let (events, mut received) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let handle = images::spawn(
        Arc::clone(&runtime),
        Arc::new(MemImages::default()),
        events,
        shutdown.clone(),
    );
    let wanted = "docker.io/edgeroll-test/wanted:1";
    handle.set_desired(ImagesDesired {
        prepare: vec![ContainerSpec {
            image: wanted.to_string(),
            image_archive: Some(other),
            pull_policy: PullPolicy::IfNotPresent,
            cpu_millis: None,
            memory_bytes: None,
        }],
        keep: Default::default(),
    });
    let event = tokio::time::timeout(DEADLINE, received.recv())
        .await
        .expect("an image event")
        .unwrap();
    let ImageEvent::Failed { reason, .. } = event else {
        panic!("{}: expected a failure, got {event:?}", engine.name)
    };
    assert!(
        reason.contains("edgeroll-test/other:1") && reason.contains(wanted),
        "{}: {reason}",
        engine.name
    );
    println!("{}: {reason}", engine.name);
    shutdown.cancel();
    runtime
        .remove("docker.io/edgeroll-test/other:1")
        .await
        .unwrap();
}

fn job(name: &str, script: &str, deadline: Duration) -> ContainerJob {
    ContainerJob {
        name: format!("edgeroll-job-{name}"),
        image: IMAGE.to_string(),
        command: vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()],
        deadline,
    }
}

async fn jobs_end_with_their_exit_code_or_at_their_deadline(engine: Engine) {
    engine.ensure_image(IMAGE).await;
    let runtime = engine.runtime();
    let passed = runtime
        .run_job(&job("ok", "echo checked 42 rows; exit 0", DEADLINE))
        .await
        .unwrap();
    assert_eq!(passed.exit_code, Some(0));
    assert_eq!(passed.stdout, "checked 42 rows\n");

    let failed = runtime
        .run_job(&job("fail", "echo bad rows >&2; exit 1", DEADLINE))
        .await
        .unwrap();
    assert_eq!(failed.exit_code, Some(1));
    assert_eq!(failed.stderr, "bad rows\n");

    let started = Instant::now();
    let late = runtime
        .run_job(&job(
            "late",
            "echo started; trap '' TERM; while :; do sleep 1; done",
            Duration::from_secs(2),
        ))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        late.exit_code, None,
        "{}: killed at its deadline",
        engine.name
    );
    assert_eq!(late.stdout, "started\n");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    for name in ["ok", "fail", "late"] {
        assert!(engine
            .inspect(&format!("edgeroll-job-{name}"))
            .await
            .is_none());
    }
    println!(
        "{}: jobs exit 0, 1, and killed at 2 s after {took:?}",
        engine.name
    );
}

async fn a_pull_from_a_registry_reports_its_bytes(engine: Engine) {
    let registry = std::env::var("EDGEROLL_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!("EDGEROLL_TEST_REGISTRY is not set: run `eval \"$(tests/engines/docker.sh start)\"`")
    });
    let image = format!("{registry}/edgeroll-test/pull:1");
    // A layer of its own: one the engine already holds (other tests' images share busybox's)
    // would be reported as "Already exists", with no bytes to count.
    let unique: Vec<u8> = (0..64 * 1024).map(|_| fastrand::u8(..)).collect();
    let archive = build_image(engine.images.path(), &image, &[("unique", &unique)]);
    let pushed = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{image}"))
        .status()
        .expect("skopeo (apt-get install skopeo)");
    assert!(pushed.success(), "skopeo copy to {image}");

    let runtime = engine.runtime();
    runtime.remove(&image).await.unwrap();
    assert!(!runtime.present(&image).await.unwrap());
    let (progress, mut seen) = watch::channel(PullProgress::default());
    let watcher = tokio::spawn(async move {
        let mut most = PullProgress::default();
        while seen.changed().await.is_ok() {
            let now = seen.borrow_and_update().clone();
            if now.done_bytes >= most.done_bytes {
                most = now;
            }
        }
        most
    });
    runtime.pull(&image, &progress).await.unwrap();
    drop(progress);
    let most = watcher.await.unwrap();
    println!("{}: pulled {image}, progress {most:?}", engine.name);
    if engine.name == "podman" {
        // podman 4.3's compat pull reports no bytes, only each layer's completion.
        assert!(
            most.detail.ends_with("2 of 2 layers downloaded"),
            "{}: {most:?}",
            engine.name
        );
    } else {
        assert!(
            most.done_bytes > 0,
            "{}: no byte progress: {most:?}",
            engine.name
        );
        assert_eq!(most.total_bytes, Some(most.done_bytes));
    }
    assert!(runtime.present(&image).await.unwrap());

    // A job pulls its image first when it is missing.
    runtime.remove(&image).await.unwrap();
    let mut pulled_job = job("pulled", "cat /www/version", DEADLINE);
    pulled_job.image = image.clone();
    let outcome = runtime.run_job(&pulled_job).await.unwrap();
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.stdout, format!("{image}\n"));
    runtime.remove(&image).await.unwrap();

    // A name the registry does not have is a final error, not one to retry.
    let (progress, _) = watch::channel(PullProgress::default());
    let error = runtime
        .pull(&format!("{registry}/edgeroll-test/absent:1"), &progress)
        .await
        .unwrap_err();
    println!("{}: {error}", engine.name);
    assert!(!error.is_transient(), "{}: {error}", engine.name);
}

async fn an_engine_that_comes_up_late_is_reached_on_the_next_call(engine: Engine) {
    engine.ensure_image(IMAGE).await;
    // The agent starts before the engine: its socket is not there yet.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engine.sock");
    let config = EngineConfig {
        socket: Some(format!("unix://{}", socket.display())),
        namespace: String::new(),
        state_dir: PathBuf::from("/nonexistent"),
        log_max_bytes: 1 << 20,
    };
    let runtime = DockerRuntime::connect(&config).expect("connect is lazy");
    let error = runtime.present(IMAGE).await.unwrap_err();
    assert!(error.is_transient(), "{}: {error}", engine.name);
    let error = runtime.sweep(&[]).await.unwrap_err();
    assert!(error.is_transient(), "{}: {error}", engine.name);

    // The engine comes up: the same runtime reaches it, nothing remembered the failure.
    let path = engine
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&engine.socket);
    std::os::unix::fs::symlink(path, &socket).unwrap();
    assert!(runtime.present(IMAGE).await.unwrap(), "{}", engine.name);
}
