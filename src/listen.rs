//! Accepting connections for the HTTP servers of the agent (the local API, `/metrics`) and of
//! the hub: a connection permit first, so a flood of clients waits in the kernel's backlog
//! instead of each getting a task, then the connection, backing off briefly after an accept
//! error (EMFILE and the like are transient) so a full file table never becomes a busy loop.
//!
//! It owns nothing but that loop step: serving a connection is each server's own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long to wait after a failed accept before the next one.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The next connection and the permit that must live as long as it: waits for a permit, then
/// calls `accept` until it gives a connection. `None` once `shutdown` is cancelled (or the
/// permits are closed). `what` names the server in the log line of an accept error.
pub async fn next_connection<S, A, F>(
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    what: &str,
    mut accept: A,
) -> Option<(S, OwnedSemaphorePermit)>
where
    A: FnMut() -> F,
    F: Future<Output = std::io::Result<S>>,
{
    let permit = tokio::select! {
        () = shutdown.cancelled() => return None,
        permit = Arc::clone(permits).acquire_owned() => permit.ok()?,
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = accept() => match accepted {
                Ok(stream) => return Some((stream, permit)),
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection for {what}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
}
