//! The containerd backend against a real containerd 1.6 + runc (Debian), started by
//! `tests/engines/containerd.sh` with its own root, state and socket (`EDGEROLL_TEST_CONTAINERD`).
//! Images are busybox tarballs built by `container_support` (no registry). Each test works in its
//! own namespace, so one test's sweep never sees another's containers.
// These tests drive a real engine in real time; a panic is the right answer to a broken fixture.
#![allow(clippy::disallowed_methods)]

#[path = "container_support/mod.rs"]
mod container_support;
#[path = "journal_support/mod.rs"]
mod journal_support;

use journal_support::MemJournal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use container_support::{build_image, http_get, http_template, StopBehaviour};
use edgeroll::runtime::containerd::ContainerdRuntime;
use edgeroll::runtime::{
    self, Adoption, ContainerJob, DesiredRevision, EngineConfig, Images, InstanceJournal,
    InstanceRecord, InstanceStatus, InstancesChanged, PullProgress, Runtime, StartRequest,
    SupervisorConfig, SupervisorHandle,
};
use edgeroll::spec::Template;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const IGNORE: &str = "needs containerd; .ci/run starts it and runs --ignored";
const IMAGE: &str = "docker.io/edgeroll-test/busybox:1";
const SERVICE: &str = "web";
/// Generous: the machine running the tests may be busy.
const DEADLINE: Duration = Duration::from_secs(60);

fn socket() -> String {
    std::env::var("EDGEROLL_TEST_CONTAINERD").unwrap_or_else(|_| {
        panic!(
            "EDGEROLL_TEST_CONTAINERD is not set: run eval \"$(tests/engines/containerd.sh start)\" first"
        )
    })
}

fn ctr(namespace: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new("ctr")
        .args(["--address", &socket(), "--namespace", namespace])
        .args(args)
        .output()
        .expect("run ctr");
    output
}

fn ctr_ok(namespace: &str, args: &[&str]) -> String {
    let output = ctr(namespace, args);
    assert!(
        output.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A runtime in `namespace` with its state (logs) under `state`.
fn runtime_in(namespace: &str, state: &Path, log_max_bytes: u64) -> ContainerdRuntime {
    ContainerdRuntime::connect(&EngineConfig {
        socket: Some(socket()),
        namespace: namespace.to_string(),
        state_dir: state.to_path_buf(),
        log_max_bytes,
    })
    .expect("connect")
}

/// The test image, loaded into `runtime`'s namespace.
async fn load_image(runtime: &ContainerdRuntime, dir: &Path) -> Vec<String> {
    let tarball = build_image(dir, IMAGE, &[]);
    let (progress, _) = watch::channel(PullProgress::default());
    runtime.load(&tarball, &progress).await.expect("load")
}

/// Our containers in `namespace`, by `ctr`.
fn containers(namespace: &str) -> Vec<String> {
    ctr_ok(namespace, &["containers", "list", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn request(id: &str, template: &Template) -> StartRequest {
    StartRequest {
        id: id.to_string(),
        service: SERVICE.to_string(),
        revision: 1,
        template: template.clone(),
    }
}

async fn wait_http(address: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = tokio::task::spawn_blocking(move || http_get(address, "/version"))
            .await
            .unwrap();
        if let Some((200, body)) = answer {
            return body;
        }
        assert!(Instant::now() < deadline, "{address}{path} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn load_present_remove() {
    let _ = IGNORE;
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in("edgeroll-t-images", state.path(), 1 << 20);
    // What a failed earlier run may have left.
    runtime.remove(IMAGE).await.unwrap();
    assert!(!runtime.present(IMAGE).await.unwrap());
    let names = load_image(&runtime, state.path()).await;
    assert_eq!(names, [IMAGE]);
    assert!(runtime.present(IMAGE).await.unwrap());
    // Docker's short form names the same image.
    assert!(runtime.present("edgeroll-test/busybox:1").await.unwrap());
    // Loading again is harmless (every blob and snapshot is there already).
    assert_eq!(load_image(&runtime, state.path()).await, [IMAGE]);
    // ctr sees it in our namespace, unpacked for our snapshotter.
    let snapshotter = runtime.snapshotter().await.unwrap();
    let listed = ctr_ok(
        "edgeroll-t-images",
        &["images", "check", "--snapshotter", &snapshotter],
    );
    assert!(
        listed.contains(IMAGE) && listed.contains("complete"),
        "{listed}"
    );
    runtime.remove(IMAGE).await.unwrap();
    assert!(!runtime.present(IMAGE).await.unwrap());
    runtime.remove(IMAGE).await.unwrap();
    // Removing the record is enough: containerd's GC takes its blobs and snapshots (no lease of
    // ours holds them any more).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let content = ctr_ok("edgeroll-t-images", &["content", "list", "-q"]);
        let snapshots = ctr_ok(
            "edgeroll-t-images",
            &["snapshots", "--snapshotter", &snapshotter, "list"],
        );
        if content.trim().is_empty() && snapshots.lines().count() <= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after GC: {content}{snapshots}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn an_image_a_container_uses_is_not_removed_and_start_needs_the_image() {
    let namespace = "edgeroll-t-inuse";
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in(namespace, state.path(), 1 << 20);
    let template = http_template(IMAGE, "v1", StopBehaviour::ExitOnTerm);
    // start never fetches: without the image it fails, transiently (images may come later).
    let error = runtime
        .start(&request("web-r1-early", &template))
        .await
        .unwrap_err();
    assert!(
        matches!(error, edgeroll::runtime::Error::ImageMissing { .. }),
        "{error}"
    );
    assert!(containers(namespace).is_empty());
    load_image(&runtime, state.path()).await;
    let record = runtime
        .start(&request("web-r1-user", &template))
        .await
        .unwrap();
    let error = runtime.remove(IMAGE).await.unwrap_err();
    assert!(
        !error.is_transient() && error.to_string().contains("edgeroll-web-r1-user"),
        "{error}"
    );
    assert!(runtime.present(IMAGE).await.unwrap());
    runtime.stop(&record, Duration::from_secs(5)).await.unwrap();
    runtime.remove(IMAGE).await.unwrap();
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn start_serves_and_stop_removes() {
    let namespace = "edgeroll-t-start";
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in(namespace, state.path(), 1 << 20);
    load_image(&runtime, state.path()).await;
    let template = http_template(IMAGE, "v1", StopBehaviour::ExitOnTerm);
    let record = runtime
        .start(&request("web-r1-a", &template))
        .await
        .unwrap();
    assert_eq!(record.container.as_deref(), Some("edgeroll-web-r1-a"));
    assert_eq!(wait_http(record.address, "/version").await.trim(), "v1");
    assert!(pid_alive(record.pid));
    assert_eq!(runtime.adopt(&record).await.unwrap(), Adoption::Adopted);
    runtime
        .stop(&record, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!pid_alive(record.pid));
    assert!(containers(namespace).is_empty());
    assert_eq!(runtime.adopt(&record).await.unwrap(), Adoption::Gone);
}

/// The real supervisor on a containerd runtime of its own.
struct Agent {
    handle: SupervisorHandle,
    updates: mpsc::Receiver<InstancesChanged>,
    shutdown: CancellationToken,
}

impl Agent {
    fn start(
        runtime: ContainerdRuntime,
        journal: Arc<MemJournal>,
        state: &Path,
        grace: Duration,
    ) -> Agent {
        let (sender, updates) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let config = SupervisorConfig {
            log_dir: state.join("logs"),
            log_max_bytes: 1 << 20,
            stop_grace: grace,
        };
        let handle =
            runtime::start_shared(Arc::new(runtime), config, journal, sender, shutdown.clone());
        Agent {
            handle,
            updates,
            shutdown,
        }
    }

    async fn wait_for(
        &mut self,
        what: &str,
        predicate: impl Fn(&[InstanceStatus]) -> bool,
    ) -> Vec<InstanceStatus> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
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
                Ok(None) => panic!("the supervisor ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; last report: {last:#?}"),
            }
        }
    }

    /// End the agent, leaving its workloads running.
    async fn exit(self) {
        self.shutdown.cancel();
        self.handle.finished().await;
    }
}

fn desired(revisions: &[(u64, &Template)]) -> Vec<DesiredRevision> {
    revisions
        .iter()
        .map(|(revision, template)| DesiredRevision {
            revision: *revision,
            template: (*template).clone(),
            count: 1,
        })
        .collect()
}

fn ready_revisions(revisions: &'static [u64]) -> impl Fn(&[InstanceStatus]) -> bool {
    move |instances| {
        instances.len() == revisions.len()
            && revisions.iter().all(|revision| {
                instances
                    .iter()
                    .any(|instance| instance.revision == *revision && instance.ready)
            })
    }
}

/// A serving template that also prints a line every 100 ms, so its log grows while it runs.
fn ticking_template(version: &str) -> Template {
    let mut template = http_template(IMAGE, version, StopBehaviour::ExitOnTerm);
    let script = r#"[ -n "$VERSION" ] && echo "$VERSION" >/www/version; busybox httpd -f -p 127.0.0.1:$PORT -h /www & P=$!; trap "kill $P; exit 0" TERM; while kill -0 $P 2>/dev/null; do echo tick; sleep 0.1; done"#;
    template.command = vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
    template
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn the_supervisor_runs_two_revisions_restarts_a_killed_task_and_a_new_agent_adopts() {
    let namespace = "edgeroll-t-supervisor";
    let state = tempfile::tempdir().unwrap();
    let journal = Arc::new(MemJournal::default());
    let first = runtime_in(namespace, state.path(), 1 << 20);
    load_image(&first, state.path()).await;
    let stable = ticking_template("v1");
    let canary = ticking_template("v2");
    let mut agent = Agent::start(first, journal.clone(), state.path(), Duration::from_secs(5));
    agent
        .handle
        .set_desired(SERVICE, desired(&[(1, &stable), (2, &canary)]));
    let instances = agent
        .wait_for("both revisions ready", ready_revisions(&[1, 2]))
        .await;
    for instance in &instances {
        let body = wait_http(instance.address, "/version").await;
        assert_eq!(body.trim(), instance.version);
        assert!(
            instance
                .logs
                .ends_with(&format!("logs/{SERVICE}/{}.log", instance.id)),
            "{}",
            instance.logs
        );
    }

    // Kill the canary's task behind the agent's back: it comes back (a new instance).
    let canary_id = instances
        .iter()
        .find(|i| i.revision == 2)
        .unwrap()
        .id
        .clone();
    let canary_pid = journal
        .load_instances()
        .unwrap()
        .into_iter()
        .find(|r| r.id == canary_id)
        .unwrap()
        .pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(canary_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let instances = agent
        .wait_for("the killed canary restarted", |instances| {
            ready_revisions(&[1, 2])(instances)
                && instances
                    .iter()
                    .any(|i| i.revision == 2 && i.id != canary_id && i.restarts >= 1)
        })
        .await;
    // Its dead container is removed; only the two live ones are left.
    let deadline = Instant::now() + DEADLINE;
    while containers(namespace).len() != 2 {
        assert!(
            Instant::now() < deadline,
            "containers: {:?}",
            containers(namespace)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The agent goes away; the tasks keep running and writing (the shim owns their output).
    let before: Vec<InstanceRecord> = journal.load_instances().unwrap();
    agent.exit().await;
    let sizes: Vec<u64> = before.iter().map(|r| file_size(&r.log_path)).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (record, size) in before.iter().zip(&sizes) {
        assert!(pid_alive(record.pid), "{} died without an agent", record.id);
        assert!(
            file_size(&record.log_path) > *size,
            "{}'s log stopped growing without an agent",
            record.id
        );
    }

    // A container of ours that no record names (an agent that crashed between create and
    // journal): the next agent's sweep removes it.
    let stray = runtime_in(namespace, state.path(), 1 << 20)
        .start(&request("web-r9-stray", &stable))
        .await
        .unwrap();

    // A new runtime and supervisor with the same journal adopt them: same pids, no restart.
    let second = runtime_in(namespace, state.path(), 1 << 20);
    let mut agent = Agent::start(
        second,
        journal.clone(),
        state.path(),
        Duration::from_secs(5),
    );
    agent
        .handle
        .set_desired(SERVICE, desired(&[(1, &stable), (2, &canary)]));
    let adopted = agent
        .wait_for("both adopted and ready", ready_revisions(&[1, 2]))
        .await;
    let ids = |list: &[InstanceStatus]| {
        let mut ids: Vec<String> = list.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&adopted), ids(&instances));
    let after = journal.load_instances().unwrap();
    assert_eq!(
        after
            .iter()
            .map(|r| (r.id.clone(), r.pid))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|r| (r.id.clone(), r.pid))
            .collect::<Vec<_>>()
    );
    let deadline = Instant::now() + DEADLINE;
    while containers(namespace).contains(&"edgeroll-web-r9-stray".to_string()) {
        assert!(
            Instant::now() < deadline,
            "the stray container was not swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!pid_alive(stray.pid));

    // The shell drops the canary: it is stopped and its container removed.
    agent.handle.set_desired(SERVICE, desired(&[(1, &stable)]));
    agent
        .wait_for("only the stable left", ready_revisions(&[1]))
        .await;
    let deadline = Instant::now() + DEADLINE;
    while containers(namespace).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "containers: {:?}",
            containers(namespace)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.handle.stop_all().await;
    assert!(
        containers(namespace).is_empty(),
        "{:?}",
        containers(namespace)
    );
    agent.exit().await;
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn stop_sends_the_stop_signal_then_sigkill_after_the_grace() {
    let namespace = "edgeroll-t-stop";
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in(namespace, state.path(), 1 << 20);
    load_image(&runtime, state.path()).await;

    let polite = http_template(IMAGE, "v1", StopBehaviour::ExitOnUsr1);
    let record = runtime
        .start(&request("web-r1-usr1", &polite))
        .await
        .unwrap();
    wait_http(record.address, "/version").await;
    let began = Instant::now();
    runtime
        .stop(&record, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "SIGUSR1 did not stop it: {:?}",
        began.elapsed()
    );
    let log = std::fs::read_to_string(&record.log_path).unwrap();
    assert!(log.contains("got USR1"), "{log}");

    let stubborn = http_template(IMAGE, "v1", StopBehaviour::IgnoreAll);
    let record = runtime
        .start(&request("web-r1-stubborn", &stubborn))
        .await
        .unwrap();
    wait_http(record.address, "/version").await;
    let began = Instant::now();
    runtime.stop(&record, Duration::from_secs(2)).await.unwrap();
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(!pid_alive(record.pid));
    assert!(
        containers(namespace).is_empty(),
        "{:?}",
        containers(namespace)
    );
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn sweep_removes_only_unrecorded_containers_of_ours_in_our_namespace() {
    let namespace = "edgeroll-t-sweep";
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in(namespace, state.path(), 1 << 20);
    load_image(&runtime, state.path()).await;
    let template = http_template(IMAGE, "v1", StopBehaviour::ExitOnTerm);
    let kept = runtime
        .start(&request("web-r1-kept", &template))
        .await
        .unwrap();
    let lost = runtime
        .start(&request("web-r1-lost", &template))
        .await
        .unwrap();

    // Not ours: an unlabelled container in our namespace, and ours-looking ones elsewhere.
    let tarball = build_image(state.path(), IMAGE, &[]);
    let tarball = tarball.to_str().unwrap();
    for other in [namespace, "other", "k8s.io"] {
        if other != namespace {
            ctr_ok(other, &["images", "import", tarball]);
        }
        let mut args = vec!["run", "-d", "--net-host"];
        if other != namespace {
            args.extend(["--label", "io.edgeroll.managed=true"]);
        }
        args.extend([IMAGE, "foreign-sleeper", "/bin/sh", "-c", "sleep 600"]);
        ctr_ok(other, &args);
    }

    let removed = runtime.sweep(std::slice::from_ref(&kept)).await.unwrap();
    assert_eq!(removed, ["edgeroll-web-r1-lost"]);
    assert!(!pid_alive(lost.pid));
    assert!(pid_alive(kept.pid));
    let mut left = containers(namespace);
    left.sort();
    assert_eq!(left, ["edgeroll-web-r1-kept", "foreign-sleeper"]);
    for other in [namespace, "other", "k8s.io"] {
        let tasks = ctr_ok(other, &["tasks", "list"]);
        assert!(
            tasks.contains("foreign-sleeper") && tasks.contains("RUNNING"),
            "{other}: {tasks}"
        );
    }

    // Clean up what the test made.
    runtime.stop(&kept, Duration::from_secs(5)).await.unwrap();
    for other in [namespace, "other", "k8s.io"] {
        ctr(
            other,
            &["tasks", "kill", "-s", "SIGKILL", "foreign-sleeper"],
        );
        let deadline = Instant::now() + DEADLINE;
        while !ctr(other, &["tasks", "delete", "foreign-sleeper"])
            .status
            .success()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ctr_ok(other, &["containers", "delete", "foreign-sleeper"]);
    }
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn run_job_reports_exit_codes_output_and_the_deadline_and_removes_its_container() {
    let namespace = "edgeroll-t-jobs";
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in(namespace, state.path(), 1 << 20);
    load_image(&runtime, state.path()).await;
    let job = |name: &str, script: &str, deadline: Duration| ContainerJob {
        name: name.to_string(),
        image: IMAGE.to_string(),
        command: vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()],
        deadline,
    };
    let ok = runtime
        .run_job(&job(
            "edgeroll-job-ok",
            "echo measured 0.98; echo warn >&2",
            DEADLINE,
        ))
        .await
        .unwrap();
    assert_eq!(ok.exit_code, Some(0));
    assert_eq!(ok.stdout, "measured 0.98\n");
    assert_eq!(ok.stderr, "warn\n");
    let failed = runtime
        .run_job(&job(
            "edgeroll-job-fail",
            "busybox seq 1 2000 >&2; echo bad; exit 1",
            DEADLINE,
        ))
        .await
        .unwrap();
    assert_eq!(failed.exit_code, Some(1));
    assert_eq!(failed.stdout, "bad\n");
    // Only the end of a long output is kept (4 KiB).
    assert!(
        failed.stderr.len() <= 4096 && failed.stderr.ends_with("1999\n2000\n"),
        "{:?}",
        failed.stderr
    );
    let began = Instant::now();
    let slow = runtime
        .run_job(&job(
            "edgeroll-job-slow",
            "echo started; sleep 600",
            Duration::from_secs(2),
        ))
        .await
        .unwrap();
    assert_eq!(slow.exit_code, None);
    assert_eq!(slow.stdout, "started\n");
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    assert!(
        containers(namespace).is_empty(),
        "{:?}",
        containers(namespace)
    );
    // A job of an image that is not there fails (pull is not available yet), and leaves nothing.
    let missing = ContainerJob {
        image: "docker.io/edgeroll-test/missing:1".to_string(),
        ..job("edgeroll-job-missing", "true", DEADLINE)
    };
    assert!(runtime.run_job(&missing).await.is_err());
    assert!(containers(namespace).is_empty());
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn limits_host_network_and_labels_are_in_the_spec() {
    let namespace = "edgeroll-t-spec";
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in(namespace, state.path(), 1 << 20);
    load_image(&runtime, state.path()).await;
    let mut template = http_template(IMAGE, "v1", StopBehaviour::ExitOnTerm);
    if let Some(container) = template.container.as_mut() {
        container.cpu_millis = Some(500);
        container.memory_bytes = Some(64 << 20);
    }
    let record = runtime
        .start(&request("web-r1-limited", &template))
        .await
        .unwrap();
    wait_http(record.address, "/version").await;
    let info: serde_json::Value = serde_json::from_str(&ctr_ok(
        namespace,
        &["containers", "info", "edgeroll-web-r1-limited"],
    ))
    .unwrap();
    let spec = &info["Spec"];
    assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
    assert_eq!(spec["linux"]["resources"]["cpu"]["period"], 100_000);
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        "/edgeroll/edgeroll-web-r1-limited"
    );
    let namespaces: Vec<&str> = spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ns| ns["type"].as_str().unwrap())
        .collect();
    assert!(!namespaces.contains(&"network"), "{namespaces:?}");
    assert_eq!(info["Runtime"]["Name"], "io.containerd.runc.v2");
    assert_eq!(info["Snapshotter"], "overlayfs");
    assert_eq!(info["Labels"]["io.edgeroll.managed"], "true");
    assert_eq!(
        info["Labels"]["io.edgeroll.spec-hash"],
        runtime::spec_hash(&record)
    );
    // The kernel enforces them (cgroup v1 here, v2 elsewhere).
    let v1 = PathBuf::from(
        "/sys/fs/cgroup/memory/edgeroll/edgeroll-web-r1-limited/memory.limit_in_bytes",
    );
    let v2 = PathBuf::from("/sys/fs/cgroup/edgeroll/edgeroll-web-r1-limited/memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    // A record whose spec differs (another port) is not adopted as ours.
    let mut moved = record.clone();
    moved
        .address
        .set_port(record.address.port().wrapping_add(1));
    assert_eq!(runtime.adopt(&moved).await.unwrap(), Adoption::Foreign);
    runtime.stop(&record, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn bound_logs_truncates_the_shim_written_log_and_writing_goes_on() {
    let namespace = "edgeroll-t-logs";
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in(namespace, state.path(), 2000);
    load_image(&runtime, state.path()).await;
    let record = runtime
        .start(&request("web-r1-chatty", &ticking_template("v1")))
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while file_size(&record.log_path) <= 2000 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runtime.bound_logs(&record).await.unwrap();
    assert!(
        file_size(&record.log_path) < 2000,
        "{}",
        file_size(&record.log_path)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The shim appends (O_APPEND): after the truncation the file starts small again, no hole.
    let log = std::fs::read(&record.log_path).unwrap();
    assert!(
        !log.is_empty() && log.len() < 2000 && !log.contains(&0),
        "{} bytes",
        log.len()
    );
    assert_eq!(
        runtime.logs_hint(&record),
        record.log_path.display().to_string()
    );
    runtime.stop(&record, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn connecting_is_lazy_and_k8s_io_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let config = |namespace: &str| EngineConfig {
        socket: Some(state.path().join("no.sock").display().to_string()),
        namespace: namespace.to_string(),
        state_dir: state.path().to_path_buf(),
        log_max_bytes: 1 << 20,
    };
    assert!(ContainerdRuntime::connect(&config("k8s.io")).is_err());
    let runtime = ContainerdRuntime::connect(&config("")).unwrap();
    assert_eq!(runtime.namespace(), "edgeroll");
    let error = runtime.present(IMAGE).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn a_docker_save_archive_without_an_oci_index_loads_and_runs() {
    let namespace = "edgeroll-t-docker-archive";
    let state = tempfile::tempdir().unwrap();
    let runtime = runtime_in(namespace, state.path(), 1 << 20);
    // The same image as a docker-archive only: manifest.json with RepoTags, no index.json.
    let reference = "edgeroll-test/archive:2";
    let tarball = build_image(state.path(), reference, &[]);
    let unpacked = state.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let run = |args: &[&str]| {
        let status = Command::new("tar").args(args).status().unwrap();
        assert!(status.success(), "tar {args:?}");
    };
    run(&[
        "-xf",
        tarball.to_str().unwrap(),
        "-C",
        unpacked.to_str().unwrap(),
    ]);
    std::fs::remove_file(unpacked.join("index.json")).unwrap();
    let _ = std::fs::remove_file(unpacked.join("oci-layout"));
    let archive = state.path().join("docker-archive.tar");
    run(&[
        "-cf",
        archive.to_str().unwrap(),
        "-C",
        unpacked.to_str().unwrap(),
        ".",
    ]);
    let (progress, watcher) = watch::channel(PullProgress::default());
    let names = runtime.load(&archive, &progress).await.unwrap();
    assert_eq!(names, ["docker.io/edgeroll-test/archive:2"]);
    let last = watcher.borrow().clone();
    assert_eq!(last.detail, "Done");
    assert!(
        last.done_bytes > 1_000_000 && Some(last.done_bytes) == last.total_bytes,
        "{last:?}"
    );
    assert!(runtime.present(reference).await.unwrap());
    let template = http_template(reference, "v9", StopBehaviour::ExitOnTerm);
    let record = runtime
        .start(&request("web-r1-archive", &template))
        .await
        .unwrap();
    assert_eq!(wait_http(record.address, "/version").await.trim(), "v9");
    runtime.stop(&record, Duration::from_secs(5)).await.unwrap();
}

/// A containerd of this test's own (the shared one must not be restarted under other tests),
/// killed (and its mounts released) when dropped.
struct OwnEngine {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnEngine {
    fn start() -> OwnEngine {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let config = format!(
            "version = 2\nroot = \"{path}/root\"\nstate = \"{path}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{path}/c.sock\"\n[ttrpc]\n  address = \"{path}/c.sock.ttrpc\"\n\
             [debug]\n  address = \"{path}/c.sock.debug\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut engine = OwnEngine { dir, child: None };
        engine.run();
        engine
    }

    fn socket(&self) -> String {
        self.dir.path().join("c.sock").display().to_string()
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run containerd (apt-get install containerd runc)");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while !Command::new("ctr")
            .args(["--address", &self.socket(), "version"])
            .output()
            .is_ok_and(|output| output.status.success())
        {
            assert!(Instant::now() < deadline, "containerd did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop containerd itself (SIGTERM); its shims and tasks stay.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        self.stop();
        let prefix = format!("{}/", self.dir.path().display());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .filter(|point| point.starts_with(&prefix))
            .collect();
        points.sort_unstable_by(|a, b| b.cmp(a));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}

#[tokio::test]
#[ignore = "needs containerd; .ci/run starts it and runs --ignored"]
async fn tasks_outlive_a_containerd_restart_and_are_still_watched_and_adopted() {
    // Fails, never skips, without the engine script's environment (as every test here).
    let _ = socket();
    let mut engine = OwnEngine::start();
    let state = tempfile::tempdir().unwrap();
    let runtime = ContainerdRuntime::connect(&EngineConfig {
        socket: Some(engine.socket()),
        namespace: "edgeroll".to_string(),
        state_dir: state.path().to_path_buf(),
        log_max_bytes: 1 << 20,
    })
    .unwrap();
    load_image(&runtime, state.path()).await;
    let record = runtime
        .start(&request("web-r1-survivor", &ticking_template("v1")))
        .await
        .unwrap();
    wait_http(record.address, "/version").await;
    let watcher = {
        let runtime = runtime.clone();
        let record = record.clone();
        tokio::spawn(async move { runtime.wait_exited(&record).await })
    };

    engine.stop();
    // The engine is down: the task runs on (its shim owns it), calls fail transiently, and the
    // wait does not mistake the outage for an exit.
    let size = file_size(&record.log_path);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pid_alive(record.pid));
    assert!(file_size(&record.log_path) > size);
    assert_eq!(wait_http(record.address, "/version").await.trim(), "v1");
    let error = runtime.present(IMAGE).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(!watcher.is_finished());

    engine.run();
    assert_eq!(runtime.adopt(&record).await.unwrap(), Adoption::Adopted);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !watcher.is_finished(),
        "the wait ended while the task still ran"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(record.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::timeout(DEADLINE, watcher)
        .await
        .expect("the wait saw the exit after the engine came back")
        .unwrap();
    assert_eq!(runtime.adopt(&record).await.unwrap(), Adoption::Gone);
}

/// A loopback relay to `upstream` that counts the bytes it carries towards the client and,
/// once, cuts the connection that carries byte `cut_at`: a cellular link dropping mid-layer.
fn cutting_link(upstream: String, cut_at: usize) -> (SocketAddr, Arc<Mutex<usize>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let relayed = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&relayed);
    std::thread::spawn(move || {
        let cut = Arc::new(Mutex::new(false));
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut from_client, mut to_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
            });
            let (mut from_server, mut to_client) = (server, client);
            let (counter, cut) = (Arc::clone(&counter), Arc::clone(&cut));
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 16 * 1024];
                while let Ok(read) = from_server.read(&mut buffer) {
                    if read == 0 {
                        break;
                    }
                    let mut total = counter.lock().unwrap();
                    let mut cut_now = cut.lock().unwrap();
                    let send = if !*cut_now && *total + read >= cut_at {
                        *cut_now = true;
                        cut_at - *total
                    } else {
                        read
                    };
                    if to_client.write_all(&buffer[..send]).is_err() {
                        break;
                    }
                    *total += send;
                    if send < read {
                        // The link drops: both directions, at once.
                        let _ = to_client.flush();
                        let _ = to_client.shutdown(std::net::Shutdown::Both);
                        let _ = from_server.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    (address, relayed)
}

#[tokio::test]
#[ignore = "needs containerd and a registry; .ci/run starts them and runs --ignored"]
async fn a_pull_cut_by_the_link_resumes_where_it_stopped_and_the_image_runs() {
    let registry = std::env::var("EDGEROLL_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!("EDGEROLL_TEST_REGISTRY is not set: run eval \"$(tests/engines/docker.sh start)\" (or registry.sh)")
    });
    let namespace = "edgeroll-t-pull";
    let state = tempfile::tempdir().unwrap();
    let filler: Vec<u8> = (0..4 << 20).map(|_| fastrand::u8(..)).collect();
    let pushed_name = format!(
        "{registry}/edgeroll-t/pull:{:06x}",
        fastrand::u32(..1 << 24)
    );
    let archive = build_image(state.path(), &pushed_name, &[("filler", &filler)]);
    let pushed = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{pushed_name}"))
        .status()
        .expect("skopeo (apt-get install skopeo)");
    assert!(pushed.success(), "skopeo copy");

    // Through a link that drops after 3 MB: the first attempt breaks off mid-layer.
    let (link, relayed) = cutting_link(registry.clone(), 3 << 20);
    let image = pushed_name.replacen(&registry, &link.to_string(), 1);
    let runtime = runtime_in(namespace, state.path(), 1 << 20);
    let (progress, seen) = watch::channel(PullProgress::default());
    let first = runtime.pull(&image, &progress).await;
    let error = first.expect_err("the cut link must fail the first attempt");
    assert!(
        error.is_transient(),
        "a cut link is worth another attempt: {error}"
    );
    assert!(!runtime.present(&image).await.unwrap());
    let after_first = *relayed.lock().unwrap();
    runtime
        .pull(&image, &progress)
        .await
        .expect("the second attempt resumes");
    let total = *relayed.lock().unwrap();
    let image_bytes = seen.borrow().total_bytes.expect("the pull knows its size") as usize;
    assert_eq!(
        seen.borrow().done_bytes as usize,
        image_bytes,
        "{:?}",
        *seen.borrow()
    );
    eprintln!(
        "pull of {image}: the first attempt broke off after {after_first} bytes; {total} bytes \
         relayed in all (HTTP included) for {image_bytes} bytes of blobs ({:.4}x)",
        total as f64 / image_bytes as f64,
    );
    // Resumed, not restarted: the bytes of the first attempt were not fetched again (starting
    // over would relay 1.6x).
    assert!(
        (total as f64) < image_bytes as f64 * 1.05,
        "{total} bytes relayed for {image_bytes} bytes of blobs: the download restarted"
    );
    assert!(runtime.present(&image).await.unwrap());

    // The pulled image runs.
    let template = http_template(&image, "pulled", StopBehaviour::ExitOnTerm);
    let record = runtime
        .start(&request("web-pull-1", &template))
        .await
        .expect("start");
    assert_eq!(wait_http(record.address, "/version").await.trim(), "pulled");
    runtime.stop(&record, Duration::from_secs(5)).await.unwrap();
    runtime.remove(&image).await.unwrap();
}
