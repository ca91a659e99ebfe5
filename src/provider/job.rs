//! The `job` provider: run a command and succeed on exit status 0, as Argo's job provider does
//! with a Kubernetes Job (whose `activeDeadlineSeconds` is our `deadline`).
//!
//! The command is run directly from its argv (no shell unless the user writes `sh -c`), in a
//! process group of its own, with stdin closed and the last [`KEPT_OUTPUT_BYTES`] of stdout and
//! stderr kept for the log. Exit 0 is `Value(true)`, any other exit (or a signal) is
//! `Value(false)`, so `successCondition = "result == true"` (which the parser fills in when a
//! job metric states no condition) decides. With an `image`, the command runs in a container on
//! the site's container runtime (`runtime::JobRunner`), which removes it afterwards. A job that outlives its deadline has its whole
//! process group killed and is an `Error`, as is a command that cannot be started: neither is
//! evidence about the release. A job never outlives its measurement: whatever it left running
//! in its process group is killed when it exits.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::analysis::Outcome;
use crate::runtime::{ContainerJob, JobOutcome, JobRunner};
use crate::spec::JobSpec;

/// How much of the end of stdout and of stderr is kept.
pub const KEPT_OUTPUT_BYTES: usize = 4 * 1024;
/// How long the output readers may go on after the job exits; a background process that keeps
/// the pipes open must not hold the measurement.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// How long reaping a killed job may take before it is given up on.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of one read from a pipe.
const READ_CHUNK_BYTES: usize = 1024;

/// What a finished job left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// Exit code, `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// The last [`KEPT_OUTPUT_BYTES`] of stdout, lossily decoded.
    pub stdout: String,
    /// The last [`KEPT_OUTPUT_BYTES`] of stderr, lossily decoded.
    pub stderr: String,
}

/// How running a job went wrong (none of these is evidence about the release).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The program could not be started.
    #[error("cannot start job `{program}`: {reason}")]
    Spawn {
        /// argv\[0\].
        program: String,
        /// Why.
        reason: String,
    },
    /// It ran longer than its deadline and was killed.
    #[error("job exceeded its {}s deadline", .deadline.as_secs_f64())]
    Deadline {
        /// The deadline.
        deadline: Duration,
    },
    /// Waiting for it failed.
    #[error("cannot wait for job `{program}`: {reason}")]
    Wait {
        /// argv\[0\].
        program: String,
        /// Why.
        reason: String,
    },
}

/// Run the job (in a container when it names an `image`, on `containers`) and turn its exit
/// into a measurement.
pub async fn measure(spec: &JobSpec, containers: Option<&dyn JobRunner>) -> Outcome {
    if let Some(image) = &spec.image {
        return measure_container(spec, image, containers).await;
    }
    match run(spec).await {
        Ok(report) => {
            let succeeded = report.exit_code == Some(0);
            if !succeeded {
                tracing::info!(
                    command = ?spec.command,
                    exit_code = ?report.exit_code,
                    stdout = %report.stdout,
                    stderr = %report.stderr,
                    "analysis job failed"
                );
            }
            Outcome::Value(Value::Bool(succeeded))
        }
        Err(error) => Outcome::Error(error.to_string()),
    }
}

/// Run the job in a container of `image` on the site's container runtime.
async fn measure_container(
    spec: &JobSpec,
    image: &str,
    containers: Option<&dyn JobRunner>,
) -> Outcome {
    let Some(containers) = containers else {
        return Outcome::Error(format!(
            "job image {image}: a container job needs [runtime] kind = \"docker\" or \"containerd\""
        ));
    };
    let job = ContainerJob {
        name: format!("edgeroll-job-{:06x}", fastrand::u32(..0x100_0000)),
        image: image.to_owned(),
        command: spec.command.clone(),
        deadline: spec.deadline,
    };
    match containers.run_job(&job).await {
        Ok(JobOutcome {
            exit_code: Some(code),
            stdout,
            stderr,
        }) => {
            if code != 0 {
                tracing::info!(%image, command = ?spec.command, exit_code = code, %stdout, %stderr, "analysis job failed");
            }
            Outcome::Value(Value::Bool(code == 0))
        }
        Ok(JobOutcome {
            exit_code: None, ..
        }) => Outcome::Error(
            JobError::Deadline {
                deadline: spec.deadline,
            }
            .to_string(),
        ),
        Err(error) => Outcome::Error(format!("job image {image}: {error}")),
    }
}

/// Run the job to completion or its deadline.
pub async fn run(spec: &JobSpec) -> Result<JobReport, JobError> {
    let program = spec.command.first().cloned().unwrap_or_default();
    let mut command = Command::new(&program);
    command
        .args(spec.command.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own lets one signal reach everything the job started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| JobError::Spawn {
        program: program.clone(),
        reason: error.to_string(),
    })?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let stdout = child
        .stdout
        .take()
        .map(|pipe| tokio::spawn(keep_tail(pipe)));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| tokio::spawn(keep_tail(pipe)));

    let waited = tokio::time::timeout(spec.deadline, child.wait()).await;
    // Whatever the job started in its group goes with it, finished or not.
    kill_group(group);
    let status = match waited {
        Ok(Ok(status)) => status,
        Ok(Err(error)) => {
            return Err(JobError::Wait {
                program,
                reason: error.to_string(),
            })
        }
        Err(_) => {
            reap(&mut child).await;
            return Err(JobError::Deadline {
                deadline: spec.deadline,
            });
        }
    };
    Ok(JobReport {
        exit_code: status.code(),
        stdout: collect(stdout).await,
        stderr: collect(stderr).await,
    })
}

/// SIGKILL the job's process group; it may already be gone, which is fine.
fn kill_group(group: Option<Pid>) {
    if let Some(group) = group {
        let _already_gone = killpg(group, Signal::SIGKILL);
    }
}

/// Wait (bounded) for a killed child so it does not linger as a zombie.
async fn reap(child: &mut Child) {
    if tokio::time::timeout(REAP_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        tracing::warn!("a killed analysis job did not exit within {REAP_TIMEOUT:?}");
    }
}

/// Read `pipe` to its end, keeping only the last [`KEPT_OUTPUT_BYTES`].
async fn keep_tail(mut pipe: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept: Vec<u8> = Vec::with_capacity(KEPT_OUTPUT_BYTES);
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                kept.extend_from_slice(&chunk[..read]);
                if kept.len() > KEPT_OUTPUT_BYTES {
                    let excess = kept.len() - KEPT_OUTPUT_BYTES;
                    kept.drain(..excess);
                }
            }
        }
    }
    kept
}

/// The output a reader kept, waiting at most [`OUTPUT_GRACE`] for it.
async fn collect(reader: Option<JoinHandle<Vec<u8>>>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    match tokio::time::timeout(OUTPUT_GRACE, &mut reader).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(Err(_)) => String::new(),
        Err(_) => {
            reader.abort();
            String::new()
        }
    }
}
