//! Analysis jobs as containerd containers (`job = { image, command, deadline }`): their output
//! goes to FIFOs that the agent reads while it waits (stdout and stderr apart), unlike an
//! instance's, which the shim writes to a file. It owns nothing that outlives the job: a job
//! whose agent dies is killed by the next agent's sweep.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{
    is_ours, log_error, spec, ContainerdRuntime, Stdio, JOB_KILL_WAIT, JOB_LOG_DIR,
    JOB_OUTPUT_TAIL, SIGKILL,
};
use crate::runtime::{ContainerJob, ContainerLabels, Error, Images, JobOutcome, PullProgress};

/// Run `job` in a container of its image (pulled first when missing) with its output in FIFOs
/// the agent reads, to its end or its deadline; everything of it is deleted afterwards.
pub(super) async fn run(
    runtime: &ContainerdRuntime,
    job: &ContainerJob,
) -> Result<JobOutcome, Error> {
    let inner = &runtime.inner;
    let (image_name, resolved) = match inner.resolve_image(&job.image).await {
        Ok(found) => found,
        Err(Error::ImageMissing { .. }) => {
            let (progress, _) = watch::channel(PullProgress::default());
            runtime.pull(&job.image, &progress).await?;
            inner.resolve_image(&job.image).await?
        }
        Err(error) => return Err(error),
    };
    let dir = inner.log_dir.join(JOB_LOG_DIR);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(log_error(&dir))?;
    let stdout = JobStream::open(&dir.join(format!("{}.stdout", job.name)))?;
    let stderr = JobStream::open(&dir.join(format!("{}.stderr", job.name)))?;
    let id = job.name.clone();
    // A leftover of an earlier run of the same job (an agent killed mid-job).
    if inner.container(&id).await?.as_ref().is_some_and(is_ours) {
        inner.stop_container(&id, SIGKILL, Duration::ZERO).await?;
    }
    let process = spec::Process::of(
        &resolved.config.config.clone().unwrap_or_default(),
        job.command.clone(),
        Vec::new(),
        &[],
    );
    if process.args.is_empty() {
        return Err(Error::EmptyCommand { id });
    }
    let spec = spec::runtime_spec(&id, &process, None);
    let labels = HashMap::from([
        (ContainerLabels::MANAGED.to_string(), "true".to_string()),
        (ContainerLabels::ROLE.to_string(), "job".to_string()),
        (ContainerLabels::INSTANCE.to_string(), job.name.clone()),
    ]);
    inner
        .create_and_start(
            &id,
            &image_name,
            &resolved.chain_id,
            spec,
            labels,
            Stdio::Fifos {
                stdout: &stdout.path,
                stderr: &stderr.path,
            },
        )
        .await?;
    let exit_code = match tokio::time::timeout(job.deadline, inner.wait_task(&id)).await {
        Ok(Ok(status)) => status.map(|status| i32::try_from(status).unwrap_or(i32::MAX)),
        Ok(Err(error)) => {
            inner.remove_container(&id).await;
            return Err(error);
        }
        Err(_) => {
            inner.kill(&id, SIGKILL).await?;
            let _ = tokio::time::timeout(JOB_KILL_WAIT, inner.wait_task(&id)).await;
            None
        }
    };
    // Deleting the task first: the shim may report the exit before it has copied the last
    // output, and its delete waits for the copy (containerd 1.6 `pkg/process/init.go`).
    let deleted = inner.delete(&id).await;
    let outcome = JobOutcome {
        exit_code,
        stdout: stdout.finish().await,
        stderr: stderr.finish().await,
    };
    deleted?;
    Ok(outcome)
}

/// One output stream of a job: a FIFO the shim writes and a task of ours that keeps its last
/// [`JOB_OUTPUT_TAIL`] bytes.
struct JobStream {
    path: PathBuf,
    done: tokio::sync::oneshot::Sender<()>,
    reader: tokio::task::JoinHandle<Vec<u8>>,
}

impl JobStream {
    fn open(path: &Path) -> Result<JobStream, Error> {
        let io_error = |source| Error::LogFile {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(error)),
        }
        nix::unistd::mkfifo(
            path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .map_err(|errno| io_error(std::io::Error::from(errno)))?;
        // Read-write, so that the FIFO never reads as ended before the shim opens it.
        let mut receiver = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(path)
            .map_err(io_error)?;
        let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buffer = vec![0u8; 8192];
            let keep = |kept: &mut Vec<u8>, bytes: &[u8]| {
                kept.extend_from_slice(bytes);
                let excess = kept.len().saturating_sub(JOB_OUTPUT_TAIL as usize);
                kept.drain(..excess);
            };
            loop {
                tokio::select! {
                    read = receiver.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => keep(&mut kept, &buffer[..n]),
                    },
                    _ = &mut finished => {
                        // The task is deleted: what the shim copied is in the FIFO; drain it.
                        while let Ok(n) = receiver.try_read(&mut buffer) {
                            if n == 0 {
                                break;
                            }
                            keep(&mut kept, &buffer[..n]);
                        }
                        break;
                    }
                }
            }
            kept
        });
        Ok(JobStream {
            path: path.to_path_buf(),
            done,
            reader,
        })
    }

    /// Stop reading (the task is gone) and return the end of what was read.
    async fn finish(self) -> String {
        let _ = self.done.send(());
        let kept = self.reader.await.unwrap_or_default();
        let _ = std::fs::remove_file(&self.path);
        String::from_utf8_lossy(&kept).into_owned()
    }
}
