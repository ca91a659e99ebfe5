//! Container jobs of the Docker runtime (the `job` analysis provider with an `image`): run one
//! container to its end or its deadline, keep the end of its output, remove it.
//!
//! It pulls the job's image first when it is missing, and never leaves a job's container behind,
//! whatever happens after it was created.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{engine_error, DockerRuntime, AFTER_KILL, POLL_STOPPING};
use crate::runtime::{ContainerJob, ContainerLabels, Error, Images, JobOutcome, PullProgress};
use crate::spec::StopSignal;

/// How much of a job's output is kept, per stream.
const JOB_OUTPUT_BYTES: usize = 4096;
/// Lines of output asked of the engine (the bytes are cut to [`JOB_OUTPUT_BYTES`] after).
const JOB_OUTPUT_LINES: &str = "500";
/// Between two inspections of a running job.
const POLL_JOB: Duration = Duration::from_secs(1);

impl DockerRuntime {
    /// [`crate::runtime::Runtime::run_job`].
    pub(super) async fn job(&self, job: &ContainerJob) -> Result<JobOutcome, Error> {
        if !self.present(&job.image).await? {
            let (progress, _) = watch::channel(PullProgress::default());
            self.pull(&job.image, &progress).await?;
        }
        // A container of the same name is a leftover of an earlier run of this job.
        self.remove(&job.name).await?;
        let labels = HashMap::from([
            (ContainerLabels::MANAGED.to_string(), "true".to_string()),
            (ContainerLabels::ROLE.to_string(), "job".to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(job.image.clone()),
            entrypoint: (!job.command.is_empty()).then(|| job.command.clone()),
            labels: Some(labels),
            host_config: Some(self.host_config(None, None)),
            ..ContainerCreateBody::default()
        };
        let inspect = self.create_and_start(&job.name, body, &job.image).await?;
        let target = inspect.id.unwrap_or_else(|| job.name.clone());
        let outcome = self.finish_job(job, &target).await;
        let removed = self.remove(&target).await;
        let outcome = outcome?;
        removed?;
        Ok(outcome)
    }

    /// Wait for a started job (killing it at its deadline) and read its output.
    async fn finish_job(&self, job: &ContainerJob, target: &str) -> Result<JobOutcome, Error> {
        let finished =
            tokio::time::timeout(job.deadline, self.wait_not_running(target, POLL_JOB)).await;
        let exit_code = match finished {
            Ok(()) => self
                .inspect(target)
                .await?
                .and_then(|inspect| inspect.state)
                .and_then(|state| state.exit_code)
                .and_then(|code| i32::try_from(code).ok()),
            Err(_) => {
                tracing::warn!(job = %job.name, deadline = ?job.deadline, "job ran past its deadline; killing it");
                self.kill(target, StopSignal::Kill.name()).await?;
                let waited = self.wait_not_running(target, POLL_STOPPING);
                let _ = tokio::time::timeout(AFTER_KILL, waited).await;
                None
            }
        };
        let (stdout, stderr) = self.output_tail(target).await?;
        Ok(JobOutcome {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// The end of a container's output, stdout and stderr.
    async fn output_tail(&self, target: &str) -> Result<(String, String), Error> {
        let docker = self.docker().await?;
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: JOB_OUTPUT_LINES.to_string(),
            ..LogsOptions::default()
        };
        let mut stream = docker.logs(target, Some(options));
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(item) = stream.next().await {
            match item {
                Ok(LogOutput::StdErr { message }) => stderr.extend_from_slice(&message),
                Ok(
                    LogOutput::StdOut { message }
                    | LogOutput::Console { message }
                    | LogOutput::StdIn { message },
                ) => stdout.extend_from_slice(&message),
                Err(error) => return Err(engine_error(&format!("read logs of {target}"), error)),
            }
        }
        Ok((tail_text(&stdout), tail_text(&stderr)))
    }
}

/// The last [`JOB_OUTPUT_BYTES`] of `bytes`, lossily decoded.
fn tail_text(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(JOB_OUTPUT_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_of_long_output_is_kept() {
        let long = "x".repeat(JOB_OUTPUT_BYTES) + "the end\n";
        let kept = tail_text(long.as_bytes());
        assert_eq!(kept.len(), JOB_OUTPUT_BYTES);
        assert!(kept.ends_with("the end\n"));
        assert_eq!(tail_text(b"short\n"), "short\n");
    }
}
