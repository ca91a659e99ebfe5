//! STUB (helper F replaces this file and adds `api/`): the local API on the unix socket.

pub mod types;

use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::rollout::OperatorAction;

/// An operator action for the shell, with the channel for its answer.
#[derive(Debug)]
pub struct ApiCommand {
    /// The service acted on.
    pub service: String,
    /// The action.
    pub action: OperatorAction,
    /// `Ok(message)` when applied, `Err(reason)` when refused.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Bind the socket (removing a stale one) with mode 0660.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    UnixListener::bind(path)
}

/// Serve the API on `listener` until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    status: watch::Receiver<Arc<types::Status>>,
    commands: mpsc::Sender<ApiCommand>,
    shutdown: CancellationToken,
) {
    let _ = (listener, status, commands);
    shutdown.cancelled().await;
}
