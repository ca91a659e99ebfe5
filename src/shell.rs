//! STUB (replaced by the lead): the agent's event loop.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::types::Status;
use crate::api::ApiCommand;
use crate::config::Config;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] crate::store::Error),
    /// Anything else at start.
    #[error("{0}")]
    Start(String),
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    /// Live status.
    pub status: watch::Receiver<Arc<Status>>,
    /// Operator actions.
    pub commands: mpsc::Sender<ApiCommand>,
}

/// Run the agent until `shutdown` (SIGTERM in `edgeroll run`).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let _ = config;
    shutdown.cancelled().await;
    Ok(())
}
