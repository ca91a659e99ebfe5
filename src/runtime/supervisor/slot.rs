//! Slot tasks: each runs one instance at a time. It starts it (or watches an adopted one),
//! probes its readiness, bounds its logs, restarts it with a backoff when it dies, and stops it
//! when asked. It journals every record it starts and forgets it only once the instance is gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::super::probe::{
    probe, FAILURES_TO_NOT_READY, PROBE_INTERVAL_NOT_READY, PROBE_INTERVAL_READY,
};
use super::super::process::address_taken;
use super::super::{InstanceJournal, InstanceRecord, InstanceStatus, Runtime, StartRequest};
use super::*;
use crate::spec::Template;

/// What every slot task shares.
pub(super) struct SlotContext<R> {
    pub(super) runtime: Arc<R>,
    pub(super) journal: Arc<dyn InstanceJournal>,
    pub(super) stop_grace: Duration,
    /// Reports to the supervisor task.
    pub(super) events: mpsc::Sender<SlotEvent>,
    /// Bounds how many instances stop at the same time.
    pub(super) stop_permits: Semaphore,
    pub(super) shutdown: CancellationToken,
}

/// How a supervised instance ended.
pub(super) enum Outcome {
    /// The slot was told to stop.
    StopRequested(InstanceRecord),
    /// The agent shuts down; the instance keeps running.
    ShutDown,
    /// The instance exited by itself.
    Exited {
        record: InstanceRecord,
        ran_for: Duration,
        was_ready: bool,
    },
}

/// Restart delays: 1 s, 2 s, 4 s … up to 30 s, back to 1 s after a long enough run.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    /// Deaths since the last long run.
    consecutive: u32,
}

impl Backoff {
    /// The delay before restarting an instance that ran for `ran_for`.
    pub(super) fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= RESTART_BACKOFF_RESET_AFTER {
            self.consecutive = 0;
        }
        let factor = 2u32.saturating_pow(self.consecutive);
        self.consecutive = self.consecutive.saturating_add(1);
        RESTART_BACKOFF_INITIAL
            .saturating_mul(factor)
            .min(RESTART_BACKOFF_MAX)
    }
}

pub(super) struct SlotTask<R> {
    pub(super) context: Arc<SlotContext<R>>,
    pub(super) slot: u64,
    pub(super) service: String,
    pub(super) revision: u64,
    pub(super) template: Template,
    pub(super) stop: CancellationToken,
    pub(super) restarts: u32,
}

impl<R: Runtime> SlotTask<R> {
    pub(super) async fn run(mut self, adopted: Option<InstanceRecord>) {
        let mut next = adopted;
        let mut backoff = Backoff::default();
        let mut port_conflicts = 0;
        loop {
            let running = match next.take() {
                Some(record) => Some(record),
                None => self.start_instance().await,
            };
            let Some(record) = running else {
                let delay = backoff.next_delay(Duration::ZERO);
                if !self.wait_before_restart(delay).await {
                    return;
                }
                continue;
            };
            match self.supervise(record).await {
                Outcome::ShutDown => return,
                Outcome::StopRequested(record) => {
                    self.stop_instance(record).await;
                    self.send(SlotEvent::Gone { slot: self.slot }).await;
                    return;
                }
                Outcome::Exited {
                    record,
                    ran_for,
                    was_ready,
                } => {
                    self.context.runtime.release(&record);
                    journal_remove(&self.context.journal, &record.id).await;
                    if !was_ready
                        && ran_for < PORT_CONFLICT_WINDOW
                        && port_conflicts < PORT_CONFLICT_RETRIES
                        && address_taken(record.address)
                    {
                        port_conflicts += 1;
                        tracing::warn!(id = %record.id, address = %record.address, "instance lost its port to another process; starting it on a new port");
                        continue;
                    }
                    port_conflicts = 0;
                    let delay = backoff.next_delay(ran_for);
                    tracing::warn!(id = %record.id, ?ran_for, ?delay, "instance exited unexpectedly; restarting it");
                    let status =
                        status_of(self.context.runtime.as_ref(), &record, false, self.restarts);
                    self.send(SlotEvent::Status {
                        slot: self.slot,
                        status,
                    })
                    .await;
                    if !self.wait_before_restart(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Start a new instance and journal it; `None` (logged) when it could not be started.
    async fn start_instance(&self) -> Option<InstanceRecord> {
        let suffix = fastrand::u32(..ID_SUFFIX_BOUND);
        let request = StartRequest {
            id: format!("{}-r{}-{suffix:06x}", self.service, self.revision),
            service: self.service.clone(),
            revision: self.revision,
            template: self.template.clone(),
        };
        match self.context.runtime.start(&request).await {
            Ok(record) => {
                tracing::info!(id = %record.id, pid = record.pid, address = %record.address, "started an instance");
                journal_save(&self.context.journal, &record).await;
                Some(record)
            }
            Err(error) => {
                tracing::warn!(id = %request.id, %error, "could not start an instance");
                None
            }
        }
    }

    /// Wait `delay` before a restart; `false` when the slot must end instead.
    async fn wait_before_restart(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => {
                self.restarts = self.restarts.saturating_add(1);
                true
            }
            () = self.stop.cancelled() => {
                self.send(SlotEvent::Gone { slot: self.slot }).await;
                false
            }
            () = self.context.shutdown.cancelled() => false,
        }
    }

    /// Watch a running instance: readiness, logs and exit, until it exits or the slot must end.
    async fn supervise(&self, record: InstanceRecord) -> Outcome {
        let runtime = Arc::clone(&self.context.runtime);
        let started = Instant::now();
        let mut ready = false;
        let mut was_ready = false;
        let mut failures = 0u32;
        self.send_status(&record, ready).await;

        let watched = record.clone();
        let exited = runtime.wait_exited(&watched);
        tokio::pin!(exited);
        let mut next_probe = Instant::now();
        let mut log_check = tokio::time::interval(LOG_CHECK_INTERVAL);
        log_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return Outcome::StopRequested(record),
                () = self.context.shutdown.cancelled() => return Outcome::ShutDown,
                () = &mut exited => {
                    return Outcome::Exited { record, ran_for: started.elapsed(), was_ready };
                }
                () = tokio::time::sleep_until(next_probe) => {
                    let passed = probe(&record.template.readiness, record.address).await;
                    if passed {
                        failures = 0;
                        if !ready {
                            ready = true;
                            was_ready = true;
                            self.send_status(&record, ready).await;
                        }
                    } else {
                        failures = failures.saturating_add(1);
                        if ready && failures >= FAILURES_TO_NOT_READY {
                            ready = false;
                            tracing::info!(id = %record.id, failures, "instance is no longer ready");
                            self.send_status(&record, ready).await;
                        }
                    }
                    let interval = if ready { PROBE_INTERVAL_READY } else { PROBE_INTERVAL_NOT_READY };
                    next_probe = Instant::now() + interval;
                }
                _ = log_check.tick() => {
                    if let Err(error) = runtime.bound_logs(&record).await {
                        tracing::warn!(id = %record.id, %error, "could not bound an instance's log");
                    }
                }
            }
        }
    }

    /// Stop the instance (bounded concurrency), then forget it. A failed stop keeps the record,
    /// so the next start of the agent finds the process again.
    async fn stop_instance(&self, record: InstanceRecord) {
        let stopped = async {
            // The semaphore is never closed, so acquiring only waits for a free permit.
            let _permit = self.context.stop_permits.acquire().await;
            self.context
                .runtime
                .stop(&record, self.context.stop_grace)
                .await
        };
        let result = tokio::select! {
            result = stopped => result,
            // The agent shuts down: the record stays, and the next start adopts or forgets it.
            () = self.context.shutdown.cancelled() => return,
        };
        match result {
            Ok(()) => {
                tracing::info!(id = %record.id, "stopped an instance");
                self.context.runtime.release(&record);
                journal_remove(&self.context.journal, &record.id).await;
            }
            Err(error) => {
                tracing::warn!(id = %record.id, %error, "could not stop an instance; keeping its record");
            }
        }
    }

    async fn send_status(&self, record: &InstanceRecord, ready: bool) {
        let status = status_of(self.context.runtime.as_ref(), record, ready, self.restarts);
        self.send(SlotEvent::Status {
            slot: self.slot,
            status,
        })
        .await;
    }

    async fn send(&self, event: SlotEvent) {
        // The supervisor task always receives until it ends, which only happens at shutdown;
        // a lost event does not matter then.
        let _ = self.context.events.send(event).await;
    }
}

pub(super) fn status_of<R: Runtime>(
    runtime: &R,
    record: &InstanceRecord,
    ready: bool,
    restarts: u32,
) -> InstanceStatus {
    InstanceStatus {
        logs: runtime.logs_hint(record),
        id: record.id.clone(),
        revision: record.revision,
        version: record.template.version.clone(),
        address: record.address,
        ready,
        restarts,
    }
}

pub(super) async fn journal_save(journal: &Arc<dyn InstanceJournal>, record: &InstanceRecord) {
    let journal = Arc::clone(journal);
    let saved = record.clone();
    match tokio::task::spawn_blocking(move || journal.save_instance(&saved)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(id = %record.id, %error, "could not journal an instance");
        }
        Err(error) => {
            tracing::warn!(id = %record.id, %error, "could not journal an instance");
        }
    }
}

pub(super) async fn journal_remove(journal: &Arc<dyn InstanceJournal>, id: &str) {
    let journal = Arc::clone(journal);
    let removed = id.to_string();
    match tokio::task::spawn_blocking(move || journal.remove_instance(&removed)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(id, %error, "could not remove an instance from the journal");
        }
        Err(error) => {
            tracing::warn!(id, %error, "could not remove an instance from the journal");
        }
    }
}
