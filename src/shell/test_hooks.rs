//! Hidden hooks for tests of the service manager integration; inert unless the environment
//! variable `EDGEROLL_TEST_HOOKS=1` is set when the agent starts.
//!
//! With it, SIGUSR2 wedges the event loop (it blocks forever, as a deadlock would), so a test can
//! check that systemd's watchdog restarts a loop that is stuck, not only a process that died.
//! Never enable this in production.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, warn};

/// The environment variable that enables the hooks.
pub(super) const ENABLE_VARIABLE: &str = "EDGEROLL_TEST_HOOKS";

/// A channel that yields on SIGUSR2 when the hooks are enabled, and never otherwise.
pub(super) fn wedge_signal() -> mpsc::Receiver<()> {
    let (sender, receiver) = mpsc::channel(1);
    if std::env::var(ENABLE_VARIABLE).as_deref() != Ok("1") {
        // Keep the sender alive so the receiver simply never yields.
        std::mem::forget(sender);
        return receiver;
    }
    warn!("{ENABLE_VARIABLE}=1: test hooks are enabled; SIGUSR2 wedges the event loop");
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) {
        Ok(mut signal) => {
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    let _ = sender.try_send(());
                }
            });
        }
        Err(error) => error!(%error, "cannot listen for SIGUSR2"),
    }
    receiver
}

/// Block the calling thread forever, as a deadlocked event loop would.
pub(super) fn wedge() {
    error!("test hook: wedging the event loop now");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
