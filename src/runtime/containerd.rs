//! PLACEHOLDER for the containerd backend (being written this session; replaced before it lands).

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use super::{
    Adoption, ContainerJob, Error, Images, InstanceRecord, JobOutcome, PullProgress, Runtime,
    StartRequest,
};

fn unsupported(what: &str) -> Error {
    Error::Unsupported {
        runtime: "containerd",
        what: what.to_string(),
    }
}

/// The containerd runtime.
#[derive(Debug)]
pub struct ContainerdRuntime;

impl ContainerdRuntime {
    /// Connect (lazily) to the engine.
    pub fn connect(_config: &super::EngineConfig) -> Result<Self, Error> {
        Err(unsupported("run yet: this build has no containerd backend"))
    }
}

impl Runtime for ContainerdRuntime {
    async fn start(&self, _request: &StartRequest) -> Result<InstanceRecord, Error> {
        Err(unsupported("start"))
    }
    async fn stop(&self, _record: &InstanceRecord, _grace: Duration) -> Result<(), Error> {
        Err(unsupported("stop"))
    }
    async fn adopt(&self, _record: &InstanceRecord) -> Result<Adoption, Error> {
        Err(unsupported("adopt"))
    }
    async fn wait_exited(&self, _record: &InstanceRecord) {}
    async fn bound_logs(&self, _record: &InstanceRecord) -> Result<(), Error> {
        Ok(())
    }
    fn release(&self, _record: &InstanceRecord) {}
    fn logs_hint(&self, _record: &InstanceRecord) -> String {
        String::new()
    }
    async fn sweep(&self, _known: &[InstanceRecord]) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
    async fn run_job(&self, _job: &ContainerJob) -> Result<JobOutcome, Error> {
        Err(unsupported("run jobs"))
    }
}

impl Images for ContainerdRuntime {
    async fn present(&self, _image: &str) -> Result<bool, Error> {
        Err(unsupported("inspect images"))
    }
    async fn pull(
        &self,
        _image: &str,
        _progress: &watch::Sender<PullProgress>,
    ) -> Result<(), Error> {
        Err(unsupported("pull"))
    }
    async fn load(
        &self,
        _archive: &Path,
        _progress: &watch::Sender<PullProgress>,
    ) -> Result<Vec<String>, Error> {
        Err(unsupported("load"))
    }
    async fn remove(&self, _image: &str) -> Result<(), Error> {
        Err(unsupported("remove images"))
    }
}
