//! The supervisor with the process runtime, driving real processes on loopback: starting,
//! replacing, restarting, killing, adopting, and bounding logs.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod journal_support;

use journal_support::MemJournal;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgeroll::runtime::{
    self, DesiredRevision, InstanceJournal, InstanceRecord, InstanceStatus, InstancesChanged,
    SupervisorConfig, SupervisorHandle,
};
use edgeroll::spec::{Readiness, Template};
use edgeroll::time::Timestamp;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Generous: the machine running the tests may be busy.
const DEADLINE: Duration = Duration::from_secs(30);
const SERVICE: &str = "web";

/// One supervisor with its journal and log directory; kills leftover workloads when dropped,
/// so a failing test does not leave processes behind.
struct Harness {
    handle: SupervisorHandle,
    updates: mpsc::Receiver<InstancesChanged>,
    shutdown: CancellationToken,
    journal: Arc<MemJournal>,
    log_dir: tempfile::TempDir,
}

impl Harness {
    fn start(stop_grace: Duration) -> Harness {
        Harness::start_with(
            Arc::new(MemJournal::default()),
            tempfile::tempdir().unwrap(),
            stop_grace,
            1 << 20,
        )
    }

    fn start_with(
        journal: Arc<MemJournal>,
        log_dir: tempfile::TempDir,
        stop_grace: Duration,
        log_max_bytes: u64,
    ) -> Harness {
        let (sender, updates) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let config = SupervisorConfig {
            log_dir: log_dir.path().to_path_buf(),
            log_max_bytes,
            stop_grace,
        };
        let runtime = runtime::ProcessRuntime::new(config.log_dir.clone(), config.log_max_bytes);
        let handle =
            runtime::start_with(runtime, config, journal.clone(), sender, shutdown.clone());
        Harness {
            handle,
            updates,
            shutdown,
            journal,
            log_dir,
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

    fn pid_of(&self, id: &str) -> u32 {
        self.journal.record(id).pid
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for record in self.journal.load_instances().unwrap_or_default() {
            if let Ok(pid) = i32::try_from(record.pid) {
                if pid > 1 {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

fn http_server(version: &str) -> Template {
    Template {
        version: version.to_string(),
        command: [
            env!("CARGO_BIN_EXE_edgeroll"),
            "sample-app",
            "--port",
            "{port}",
            "--version",
            version,
        ]
        .map(String::from)
        .to_vec(),
        env: BTreeMap::new(),
        readiness: Readiness::HttpGet {
            path: "/".to_string(),
        },
        args: Vec::new(),
        stop_signal: None,
        container: None,
    }
}

fn shell(version: &str, script: &str, readiness: Readiness) -> Template {
    Template {
        version: version.to_string(),
        command: vec!["sh".to_string(), "-c".to_string(), script.to_string()],
        env: BTreeMap::new(),
        readiness,
        args: Vec::new(),
        stop_signal: None,
        container: None,
    }
}

fn desired(revision: u64, template: &Template, count: u32) -> Vec<DesiredRevision> {
    vec![DesiredRevision {
        revision,
        template: template.clone(),
        count,
    }]
}

fn all_ready(count: usize, revision: u64) -> impl Fn(&[InstanceStatus]) -> bool {
    move |instances| {
        instances.len() == count
            && instances
                .iter()
                .all(|instance| instance.ready && instance.revision == revision)
    }
}

/// The status code of `GET /`.
async fn http_status(address: SocketAddr) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Whether `/proc/<pid>` exists: a zombie still has one, so gone means exited *and* reaped.
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_until_gone(pid: u32) {
    let deadline = Instant::now() + DEADLINE;
    while process_exists(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still exists (or is an unreaped zombie)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn starts_instances_that_serve_and_stops_them_without_zombies() {
    let mut harness = Harness::start(Duration::from_secs(10));
    harness
        .handle
        .set_desired(SERVICE, desired(1, &http_server("1.0"), 2));
    let instances = harness
        .wait_for("two ready instances", all_ready(2, 1))
        .await;

    for instance in &instances {
        assert_eq!(instance.version, "1.0");
        assert_eq!(instance.restarts, 0);
        assert!(instance.address.ip().is_loopback());
        assert_eq!(http_status(instance.address).await, Some(200));
        assert!(instance.id.starts_with("web-r1-"), "{}", instance.id);
    }
    assert_eq!(harness.handle.instances(SERVICE).await, instances);
    // The start time comes from the process table; it must agree with the wall clock.
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started_at = harness.journal.record(&instances[0].id).started_at;
    assert!(
        Timestamp::from_millis(now_millis).since(started_at) < Duration::from_secs(120),
        "started_at {started_at} is far from now"
    );
    assert!(started_at.as_millis() <= now_millis + 2_000);
    let pids: Vec<u32> = instances.iter().map(|i| harness.pid_of(&i.id)).collect();

    harness.handle.stop_all().await;
    for pid in pids {
        wait_until_gone(pid).await;
    }
    assert!(harness.journal.ids().is_empty());
    assert!(harness.handle.instances(SERVICE).await.is_empty());
}

#[tokio::test]
async fn a_new_revision_replaces_the_old_instances() {
    // A long grace: the old instances must go on SIGTERM, well before it runs out.
    let stop_grace = Duration::from_secs(20);
    let mut harness = Harness::start(stop_grace);
    let old = http_server("1.0");
    harness.handle.set_desired(SERVICE, desired(1, &old, 2));
    let before = harness.wait_for("revision 1 ready", all_ready(2, 1)).await;
    let old_pids: Vec<u32> = before.iter().map(|i| harness.pid_of(&i.id)).collect();

    let replaced_at = Instant::now();
    harness
        .handle
        .set_desired(SERVICE, desired(2, &http_server("2.0"), 2));
    let after = harness.wait_for("revision 2 ready", all_ready(2, 2)).await;
    for pid in old_pids {
        wait_until_gone(pid).await;
    }
    assert!(
        replaced_at.elapsed() < stop_grace,
        "old instances were not stopped by SIGTERM"
    );
    for instance in &after {
        assert_eq!(instance.version, "2.0");
        assert_eq!(http_status(instance.address).await, Some(200));
    }
    let journaled = harness.journal.ids();
    assert_eq!(journaled.len(), 2);
    assert!(journaled.iter().all(|id| id.starts_with("web-r2-")));
    harness.handle.stop_all().await;
}

#[tokio::test]
async fn a_killed_instance_is_restarted() {
    let mut harness = Harness::start(Duration::from_secs(5));
    harness
        .handle
        .set_desired(SERVICE, desired(1, &http_server("1.0"), 1));
    let first = harness
        .wait_for("one ready instance", all_ready(1, 1))
        .await;
    let old_pid = harness.pid_of(&first[0].id);

    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).unwrap();
    let restarted = harness
        .wait_for("the instance restarted and ready", |instances| {
            instances.len() == 1 && instances[0].ready && instances[0].restarts == 1
        })
        .await;
    wait_until_gone(old_pid).await;
    assert_ne!(restarted[0].id, first[0].id);
    assert_ne!(harness.pid_of(&restarted[0].id), old_pid);
    assert_eq!(http_status(restarted[0].address).await, Some(200));
    assert_eq!(harness.journal.ids(), vec![restarted[0].id.clone()]);
    harness.handle.stop_all().await;
}

#[tokio::test]
async fn an_instance_ignoring_sigterm_is_killed_after_the_grace_period() {
    let stop_grace = Duration::from_millis(1500);
    let mut harness = Harness::start(stop_grace);
    let stubborn = shell(
        "stubborn",
        // A workload that ignores SIGTERM; it never listens, and readiness does not matter here.
        "trap '' TERM; while :; do sleep 0.2; done",
        Readiness::Tcp,
    );
    harness
        .handle
        .set_desired(SERVICE, desired(1, &stubborn, 1));
    let instances = harness
        .wait_for("the instance started", |instances| instances.len() == 1)
        .await;
    let pid = harness.pid_of(&instances[0].id);
    // Give the shell time to run `trap` before the SIGTERM, or it simply dies of it.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stopping_at = Instant::now();
    harness.handle.stop_all().await;
    let took = stopping_at.elapsed();
    assert!(
        took >= stop_grace,
        "stopped after {took:?}, before the grace period"
    );
    wait_until_gone(pid).await;
    assert!(harness.journal.ids().is_empty());
}

#[tokio::test]
async fn a_restarted_agent_adopts_running_instances() {
    let template = http_server("1.0");
    let mut first = Harness::start(Duration::from_secs(5));
    first.handle.set_desired(SERVICE, desired(1, &template, 1));
    let started = first.wait_for("one ready instance", all_ready(1, 1)).await;
    let record = first.journal.record(&started[0].id);

    // The agent stops: supervision ends, the workload keeps running.
    first.shutdown.cancel();
    tokio::time::timeout(DEADLINE, first.handle.finished())
        .await
        .expect("the supervisor ends on shutdown");
    assert!(process_exists(record.pid));
    assert_eq!(http_status(record.address).await, Some(200));

    let journal = first.journal.clone();
    let log_dir = tempfile::tempdir().unwrap();
    let mut second = Harness::start_with(journal, log_dir, Duration::from_secs(5), 1 << 20);
    let adopted = second
        .wait_for("the adopted instance ready", |instances| {
            instances.len() == 1 && instances[0].ready
        })
        .await;
    assert_eq!(adopted[0].id, record.id);
    assert_eq!(adopted[0].restarts, 0);
    assert_eq!(second.pid_of(&record.id), record.pid);
    assert_eq!(http_status(record.address).await, Some(200));

    // The shell re-sends the same desired state: the adopted instance is kept.
    second.handle.set_desired(SERVICE, desired(1, &template, 1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = second.handle.instances(SERVICE).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].id, record.id);
    assert!(process_exists(record.pid));
    assert_eq!(second.journal.ids(), vec![record.id.clone()]);

    second.handle.stop_all().await;
    wait_until_gone(record.pid).await;
    assert!(second.journal.ids().is_empty());
    drop(first);
}

#[tokio::test]
async fn records_of_other_or_dead_processes_are_not_adopted() {
    // A live process that is not ours, in its own group so nothing can reach the test's group.
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .process_group(0)
        .spawn()
        .unwrap();
    let bystander_pid = bystander.id();
    let stat = std::fs::read_to_string(format!("/proc/{bystander_pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    let start_ticks: u64 = after_name
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();

    let mut finished = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = finished.id();
    finished.wait().unwrap();

    let record = |id: &str, pid: u32, start_ticks: u64| InstanceRecord {
        id: id.to_string(),
        service: SERVICE.to_string(),
        revision: 1,
        template: http_server("1.0"),
        address: "127.0.0.1:1".parse().unwrap(),
        pid,
        start_ticks,
        started_at: Timestamp::from_millis(0),
        log_path: "/nonexistent/web.log".into(),
        container: None,
    };
    let journal = Arc::new(MemJournal::default());
    // The pid was reused by another process: different start time.
    journal
        .save_instance(&record("web-r1-aaaaaa", bystander_pid, start_ticks + 1))
        .unwrap();
    // Same pid and start time, but not started as this instance (no instance id in its env).
    journal
        .save_instance(&record("web-r1-bbbbbb", bystander_pid, start_ticks))
        .unwrap();
    // The process is gone.
    journal
        .save_instance(&record("web-r1-cccccc", dead_pid, 1))
        .unwrap();

    let harness = Harness::start_with(
        journal.clone(),
        tempfile::tempdir().unwrap(),
        Duration::from_secs(1),
        1 << 20,
    );
    let deadline = Instant::now() + DEADLINE;
    while !journal.ids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "records left: {:?}",
            journal.ids()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(harness.handle.instances(SERVICE).await.is_empty());
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was signalled"
    );

    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[tokio::test]
async fn instance_output_lands_in_a_bounded_log_file() {
    let log_max_bytes = 8 * 1024;
    let mut harness = Harness::start_with(
        Arc::new(MemJournal::default()),
        tempfile::tempdir().unwrap(),
        Duration::from_secs(2),
        log_max_bytes,
    );
    // About 5 KB/s, so the log passes its bound within a few seconds.
    let chatty = shell(
        "chatty",
        "echo hello-from-$PORT; while :; do printf '%0500d\\n' 0; sleep 0.1; done",
        Readiness::Tcp,
    );
    harness.handle.set_desired(SERVICE, desired(1, &chatty, 1));
    let instances = harness
        .wait_for("the instance started", |instances| instances.len() == 1)
        .await;
    let record = harness.journal.record(&instances[0].id);
    assert!(record
        .log_path
        .starts_with(harness.log_dir.path().join(SERVICE)));
    assert_eq!(
        record.log_path.file_name().unwrap().to_string_lossy(),
        format!("{}.log", record.id)
    );
    let greeting = format!("hello-from-{}", record.address.port());
    let rotated = record.log_path.with_extension("log.1");

    // Generous against a slow machine: the bound is checked every few seconds.
    let slack = 48 * 1024;
    let deadline = Instant::now() + DEADLINE;
    let mut greeted = false;
    loop {
        let log = std::fs::read(&record.log_path).unwrap_or_default();
        greeted |= String::from_utf8_lossy(&log).contains(&greeting);
        assert!(
            log.len() as u64 <= log_max_bytes + slack,
            "log grew to {}",
            log.len()
        );
        if let Ok(metadata) = std::fs::metadata(&rotated) {
            assert!(metadata.len() <= log_max_bytes + slack);
            let rotated_text = std::fs::read_to_string(&rotated).unwrap_or_default();
            greeted |= rotated_text.contains(&greeting);
            if greeted && metadata.len() > 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the log was never rotated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    harness.handle.stop_all().await;
    wait_until_gone(record.pid).await;
}

#[tokio::test]
async fn retain_services_stops_every_other_service_and_nobody_listening_is_fine() {
    let mut harness = Harness::start(Duration::from_secs(5));
    // Nobody reads the reports any more: supervision must go on regardless.
    harness.updates.close();
    let template = http_server("1.0");
    harness
        .handle
        .set_desired(SERVICE, desired(1, &template, 1));
    harness.handle.set_desired("api", desired(1, &template, 1));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let web = harness.handle.instances(SERVICE).await;
        let api = harness.handle.instances("api").await;
        if web.iter().chain(&api).filter(|i| i.ready).count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "instances never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let web = harness.handle.instances(SERVICE).await;
    let web_pid = harness.pid_of(&web[0].id);

    harness.handle.retain_services(vec!["api".to_string()]);
    wait_until_gone(web_pid).await;
    assert!(harness.handle.instances(SERVICE).await.is_empty());
    let api = harness.handle.instances("api").await;
    assert_eq!(api.len(), 1);
    assert_eq!(harness.journal.ids(), vec![api[0].id.clone()]);
    harness.handle.stop_all().await;
    assert!(harness.journal.ids().is_empty());
}
