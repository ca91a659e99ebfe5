//! systemd integration through `sd_notify`: READY once the agent serves, readable STATUS lines,
//! WATCHDOG keep-alives from the event loop, STOPPING on shutdown.
//!
//! Every function is a no-op when the agent is not started by systemd (`NOTIFY_SOCKET` unset), so
//! `edgeroll run` in a terminal, the demo and the tests behave the same. This module never decides
//! when to notify; the shell does.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        debug!(%error, "sd_notify failed");
    }
}

/// The agent serves: the store is open and every listener is bound.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line status for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The agent is shutting down.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight requests"),
    ]);
}

/// How often to send a watchdog keep-alive: half of `WatchdogSec`, or `None` when disabled.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Tell systemd the event loop is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
