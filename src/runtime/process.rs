//! The process backend: every instance is a plain child process in its own process group,
//! serving on a loopback port allocated for it, with its output appended to a log file.
//!
//! It owns the processes it starts (their exit is awaited by a task, so none is left a zombie)
//! and watches adopted ones through `/proc`. A process is identified by its pid *and* its start
//! time in clock ticks, so a reused pid is never mistaken for an instance; it never signals a
//! process whose start time does not match its record, and never signals pid 0 or 1.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::{Adoption, ContainerJob, Error, InstanceRecord, JobOutcome, Runtime, StartRequest};
use crate::time::Timestamp;

/// Placeholder in a template's argv that is replaced by the allocated port.
pub const PORT_PLACEHOLDER: &str = "{port}";
/// Environment variable that carries the allocated port.
pub const PORT_ENV: &str = "PORT";
/// Environment variable that carries the instance id; adoption checks it to recognise a workload.
pub const INSTANCE_ID_ENV: &str = "EDGEROLL_INSTANCE_ID";
/// How often an adopted process (not our child) is checked for having exited.
pub const ADOPTED_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a process being stopped is checked for having exited.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a process may take to disappear after SIGKILL before the stop is reported as failed.
pub const KILL_DEADLINE: Duration = Duration::from_secs(5);
/// How many instance log files one service keeps at most (the oldest of dead instances go first).
pub const MAX_LOG_FILES_PER_SERVICE: usize = 16;
/// Suffix of the rotated copy of a log file.
const ROTATED_SUFFIX: &str = ".1";
/// Clock ticks per second assumed when `sysconf` cannot tell (Linux's `USER_HZ` everywhere).
const DEFAULT_CLOCK_TICKS_PER_SECOND: u64 = 100;
/// Field of `/proc/<pid>/stat` (1-based) that holds the start time in clock ticks.
const STAT_FIELD_START_TICKS: usize = 22;
/// Field of `/proc/<pid>/stat` (1-based) that holds the state letter.
const STAT_FIELD_STATE: usize = 3;

/// Runs instances as child processes.
#[derive(Debug)]
pub struct ProcessRuntime {
    /// Root of the per-service log directories.
    log_dir: PathBuf,
    /// Bound of one log file, bytes.
    log_max_bytes: u64,
    /// Instances this runtime started or adopted, by id. An own child carries a receiver that
    /// turns `true` once its reaper task has awaited its exit; an adopted one carries `None` and
    /// is watched through `/proc`. Never held across an `.await`.
    instances: Mutex<HashMap<String, Option<watch::Receiver<bool>>>>,
}

impl ProcessRuntime {
    /// A runtime that writes logs under `log_dir/<service>/` and bounds each to `log_max_bytes`.
    pub fn new(log_dir: PathBuf, log_max_bytes: u64) -> Self {
        ProcessRuntime {
            log_dir,
            log_max_bytes,
            instances: Mutex::new(HashMap::new()),
        }
    }

    fn exit_receiver(&self, id: &str) -> Option<watch::Receiver<bool>> {
        let instances = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        instances.get(id).cloned().flatten()
    }

    fn tracked_ids(&self) -> Vec<String> {
        let instances = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        instances.keys().cloned().collect()
    }

    /// Wait until the process of `record` is gone, checking `/proc` every `poll_interval` for
    /// processes that are not our children.
    async fn wait_gone(&self, record: &InstanceRecord, poll_interval: Duration) {
        if let Some(mut exited) = self.exit_receiver(&record.id) {
            // An error means the reaper task is gone, which happens only when the tokio runtime
            // shuts down; there is nothing left to wait for then.
            let _ = exited.wait_for(|exited| *exited).await;
            return;
        }
        while is_running(record) {
            tokio::time::sleep(poll_interval).await;
        }
        // The leader is gone; kill what is left of its group so nothing keeps holding the port.
        kill_leftovers(record.pid);
    }

    /// Delete the oldest log files of `service` beyond [`MAX_LOG_FILES_PER_SERVICE`], never those
    /// of an instance this runtime still tracks.
    async fn prune_logs(&self, service_dir: &Path) {
        let tracked = self.tracked_ids();
        let Ok(mut entries) = tokio::fs::read_dir(service_dir).await else {
            return;
        };
        let mut logs = Vec::new();
        let mut n_tracked_logs = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".log") else {
                continue;
            };
            if tracked.iter().any(|tracked| tracked == id) {
                n_tracked_logs += 1;
                continue;
            }
            let modified = match entry.metadata().await.and_then(|meta| meta.modified()) {
                Ok(modified) => modified,
                Err(_) => continue,
            };
            logs.push((modified, entry.path()));
        }
        let excess = (logs.len() + n_tracked_logs).saturating_sub(MAX_LOG_FILES_PER_SERVICE);
        logs.sort();
        for (_, path) in logs.into_iter().take(excess) {
            let _ = tokio::fs::remove_file(rotated_path(&path)).await;
            if let Err(error) = tokio::fs::remove_file(&path).await {
                tracing::debug!(path = %path.display(), %error, "could not prune an old log file");
            }
        }
    }
}

impl Runtime for ProcessRuntime {
    async fn start(&self, request: &StartRequest) -> Result<InstanceRecord, Error> {
        if let Some(container) = &request.template.container {
            return Err(Error::Unsupported {
                runtime: "process",
                what: format!(
                    "run image {} (set [runtime] kind = \"docker\" or \"containerd\")",
                    container.image
                ),
            });
        }
        let Some((program, args)) = request.template.command.split_first() else {
            return Err(Error::EmptyCommand {
                id: request.id.clone(),
            });
        };
        let port = free_loopback_port()?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

        let service_dir = self.log_dir.join(&request.service);
        tokio::fs::create_dir_all(&service_dir)
            .await
            .map_err(|source| Error::LogFile {
                path: service_dir.clone(),
                source,
            })?;
        let log_path = service_dir.join(format!("{}.log", request.id));
        let (stdout, stderr) = open_log(&log_path).map_err(|source| Error::LogFile {
            path: log_path.clone(),
            source,
        })?;

        let program = substitute_port(program, port);
        let mut command = tokio::process::Command::new(&program);
        command
            .args(args.iter().map(|arg| substitute_port(arg, port)))
            .envs(&request.template.env)
            // Set after the template's env so that PORT always agrees with `{port}`.
            .env(PORT_ENV, port.to_string())
            .env(INSTANCE_ID_ENV, &request.id)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the agent's terminal must not reach workloads,
            // and stopping an instance signals everything it started.
            .process_group(0)
            // Workloads outlive the agent; they are adopted on its next start.
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            id: request.id.clone(),
            program: program.clone(),
            source,
        })?;

        // The child cannot be reaped before `wait` is called below, so its pid and /proc entry
        // stay valid here even if it has already exited.
        let pid = child.id().unwrap_or_default();
        let stat = read_stat(pid);
        let (exited_sender, exited) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(error) = child.wait().await {
                tracing::warn!(pid, %error, "could not await an instance process");
            }
            kill_leftovers(pid);
            let _ = exited_sender.send(true);
        });
        let stat = stat.map_err(|source| {
            // Without its start time the process could never be recognised again, so it must
            // not be left running unjournaled.
            kill_leftovers(pid);
            Error::ProcessState { pid, source }
        })?;
        {
            let mut instances = self
                .instances
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            instances.insert(request.id.clone(), Some(exited));
        }
        self.prune_logs(&service_dir).await;

        Ok(InstanceRecord {
            id: request.id.clone(),
            service: request.service.clone(),
            revision: request.revision,
            template: request.template.clone(),
            address,
            pid,
            start_ticks: stat.start_ticks,
            started_at: wall_clock_of_ticks(stat.start_ticks),
            log_path,
            container: None,
        })
    }

    async fn stop(&self, record: &InstanceRecord, grace: Duration) -> Result<(), Error> {
        if !is_running(record) {
            self.wait_gone(record, STOP_POLL_INTERVAL).await;
            return Ok(());
        }
        let signal =
            Signal::try_from(record.template.stop_signal().number()).unwrap_or(Signal::SIGTERM);
        signal_instance(record, signal)?;
        if tokio::time::timeout(grace, self.wait_gone(record, STOP_POLL_INTERVAL))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::info!(id = %record.id, ?grace, %signal, "instance ignored its stop signal; sending SIGKILL");
        // Checked again because the process may have exited (and its pid been reused) meanwhile.
        if is_running(record) {
            signal_instance(record, Signal::SIGKILL)?;
        }
        tokio::time::timeout(KILL_DEADLINE, self.wait_gone(record, STOP_POLL_INTERVAL))
            .await
            .map_err(|_| Error::StopTimedOut {
                id: record.id.clone(),
                waited: KILL_DEADLINE,
            })
    }

    async fn adopt(&self, record: &InstanceRecord) -> Result<Adoption, Error> {
        let stat = match read_stat(record.pid) {
            Ok(stat) => stat,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Adoption::Gone),
            Err(source) => {
                return Err(Error::ProcessState {
                    pid: record.pid,
                    source,
                })
            }
        };
        if stat.start_ticks != record.start_ticks {
            return Ok(Adoption::Foreign);
        }
        if stat.is_dead() {
            return Ok(Adoption::Gone);
        }
        // Same pid and start time can still be a different process after a reboot; the instance
        // id in its environment settles it. An unreadable environment (another user's process)
        // leaves the start time as the only evidence.
        match tokio::fs::read(format!("/proc/{}/environ", record.pid)).await {
            Ok(environ) => {
                let expected = format!("{INSTANCE_ID_ENV}={}", record.id);
                if !environ
                    .split(|byte| *byte == 0)
                    .any(|entry| entry == expected.as_bytes())
                {
                    return Ok(Adoption::Foreign);
                }
            }
            Err(error) => {
                tracing::debug!(id = %record.id, %error, "cannot read the environment of an adopted instance");
            }
        }
        let mut instances = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        instances.insert(record.id.clone(), None);
        Ok(Adoption::Adopted)
    }

    async fn wait_exited(&self, record: &InstanceRecord) {
        self.wait_gone(record, ADOPTED_POLL_INTERVAL).await;
    }

    async fn bound_logs(&self, record: &InstanceRecord) -> Result<(), Error> {
        bound_log_file(&record.log_path, self.log_max_bytes).await
    }

    fn release(&self, record: &InstanceRecord) {
        let mut instances = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        instances.remove(&record.id);
    }

    fn logs_hint(&self, record: &InstanceRecord) -> String {
        record.log_path.display().to_string()
    }

    async fn sweep(&self, _known: &[InstanceRecord]) -> Result<Vec<String>, Error> {
        // A process carries no label to find it by: one started just before a crash, before
        // its record was journaled, is not found here (container runtimes find theirs by label).
        Ok(Vec::new())
    }

    async fn run_job(&self, job: &ContainerJob) -> Result<JobOutcome, Error> {
        Err(Error::Unsupported {
            runtime: "process",
            what: format!("run a job in image {}", job.image),
        })
    }
}

/// When a log file is above `max_bytes`, copy it to `<file>.1` (replacing the previous copy) and
/// truncate it. The process keeps writing at the new end because the file is opened with
/// O_APPEND, so a log never takes more than about twice the bound. Lines written between the copy
/// and the truncation are lost; that is the price of not interrupting the process.
pub async fn bound_log_file(path: &Path, max_bytes: u64) -> Result<(), Error> {
    let log_error = |source| Error::LogFile {
        path: path.to_path_buf(),
        source,
    };
    let length = match tokio::fs::metadata(path).await {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(log_error(error)),
    };
    if length <= max_bytes {
        return Ok(());
    }
    tokio::fs::copy(path, rotated_path(path))
        .await
        .map_err(log_error)?;
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await
        .map_err(log_error)?;
    file.set_len(0).await.map_err(log_error)
}

/// `<file>.1`.
fn rotated_path(path: &Path) -> PathBuf {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(ROTATED_SUFFIX);
    PathBuf::from(rotated)
}

fn open_log(path: &Path) -> io::Result<(std::fs::File, std::fs::File)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let second = file.try_clone()?;
    Ok((file, second))
}

/// A free loopback port: bind port 0, take what the kernel chose, and close. Another process may
/// take it before the instance binds it; the supervisor recognises that and retries.
pub fn free_loopback_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Port { source })?;
    let address = listener
        .local_addr()
        .map_err(|source| Error::Port { source })?;
    Ok(address.port())
}

/// Whether something else is listening on `address` now (binding it fails with "in use").
pub fn address_taken(address: SocketAddr) -> bool {
    matches!(
        TcpListener::bind(address),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse
    )
}

fn substitute_port(text: &str, port: u16) -> String {
    text.replace(PORT_PLACEHOLDER, &port.to_string())
}

/// The fields of `/proc/<pid>/stat` that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// State letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

impl ProcessStat {
    /// Whether the process has exited (a zombie waiting to be reaped counts as exited).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parse the text of `/proc/<pid>/stat`. The command name (field 2) may contain spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcessStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let first_field = STAT_FIELD_STATE;
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields
        .nth(STAT_FIELD_START_TICKS - first_field - 1)?
        .parse()
        .ok()?;
    Some(ProcessStat { state, start_ticks })
}

/// Read `/proc/<pid>/stat`.
pub fn read_stat(pid: u32) -> io::Result<ProcessStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })
}

/// Whether the process of `record` is still alive and still the same process.
fn is_running(record: &InstanceRecord) -> bool {
    match read_stat(record.pid) {
        Ok(stat) => stat.start_ticks == record.start_ticks && !stat.is_dead(),
        Err(_) => false,
    }
}

/// The pid as nix wants it, refusing the values that would signal ourselves or every process.
fn checked_pid(pid: u32) -> Option<Pid> {
    match i32::try_from(pid) {
        Ok(raw) if raw > 1 => Some(Pid::from_raw(raw)),
        _ => None,
    }
}

/// Signal the instance's process group, or only its process if it left the group we made.
fn signal_instance(record: &InstanceRecord, signal: Signal) -> Result<(), Error> {
    let Some(pid) = checked_pid(record.pid) else {
        return Ok(());
    };
    let error = |source| Error::Signal {
        id: record.id.clone(),
        pid: record.pid,
        source,
    };
    match killpg(pid, signal) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ESRCH) => match kill(pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(source) => Err(error(source)),
        },
        Err(source) => Err(error(source)),
    }
}

/// SIGKILL whatever is left in the process group of an exited leader. The group id stays
/// reserved while any member lives, so this cannot reach an unrelated process group.
fn kill_leftovers(pid: u32) {
    if let Some(pid) = checked_pid(pid) {
        let _ = killpg(pid, Signal::SIGKILL);
    }
}

/// The wall-clock time of a start time in clock ticks: boot time plus ticks.
fn wall_clock_of_ticks(start_ticks: u64) -> Timestamp {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS_PER_SECOND);
    let boot_seconds = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|value| value.trim().parse::<u64>().ok())
        })
        .unwrap_or_default();
    let millis_since_boot = start_ticks.saturating_mul(1000) / ticks_per_second;
    Timestamp::from_millis(
        boot_seconds
            .saturating_mul(1000)
            .saturating_add(millis_since_boot),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let text = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 155 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(ProcessStat {
                state: 'S',
                start_ticks: 987654
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1"), None);
    }

    #[test]
    fn reads_own_stat() {
        let stat = read_stat(std::process::id()).unwrap();
        assert!(!stat.is_dead());
        assert!(stat.start_ticks > 0);
    }

    #[test]
    fn substitutes_every_placeholder() {
        assert_eq!(
            substitute_port("127.0.0.1:{port}/{port}", 8080),
            "127.0.0.1:8080/8080"
        );
    }

    #[test]
    fn refuses_to_signal_init_or_our_group() {
        assert!(checked_pid(0).is_none());
        assert!(checked_pid(1).is_none());
        assert!(checked_pid(u32::MAX).is_none());
        assert!(checked_pid(4242).is_some());
    }

    #[test]
    fn sees_a_taken_address() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        assert!(address_taken(address));
        drop(listener);
        assert!(!address_taken(address));
    }

    #[tokio::test]
    async fn bounds_a_log_file_by_rotating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-r1-abcdef.log");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        bound_log_file(&path, 200).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100);
        bound_log_file(&path, 50).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(rotated_path(&path)).unwrap().len(), 100);
    }
}
