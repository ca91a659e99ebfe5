//! Reports to the center: what each state change says ([`Reporting`]) and the sender task that
//! delivers the outbox ([`spawn`]).
//!
//! Owns two things. First, the mapping from the agent's state to report bodies: a rollout
//! event with the state it left the service in, each new analysis measurement, a run's verdict.
//! The shell hands these to the store call that commits the change, so a report exists exactly
//! when its change is committed. Second, the sender: its own task that reads batches from the
//! store's outbox, delivers them over HTTPS (`report/http.rs`) or MQTT 5 (`report/mqtt.rs`) in
//! order, and deletes what the receiver acknowledged. Failures are retried with full-jitter
//! exponential backoff (a receiver's `Retry-After` is honoured); a receiver that says it is
//! missing reports (a gap) gets them again from where it says.
//!
//! It must never read or change the shell's state (it reads the store only), never decide
//! anything about a rollout, and never delete a report a receiver has not acknowledged
//! (dropping measurements from a full outbox is the store's rule, not the sender's).

mod http;
mod mqtt;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::analysis::{AnalysisRun, MetricRun, RunPhase};
use crate::api::types::{self, completion_name, phase_name};
use crate::backoff::Backoff;
use crate::config::{Config, ReportsConfig, ReportsUrl};
use crate::rollout::{Completion, Phase, Revision, Rollout};
use crate::shell::Clock;
use crate::store::{BatchLimits, EventRecord, NewReport, OutboxStatus, Store};
use crate::time::Timestamp;
use crate::wire::report::{self, ReportBatch, ReportBody, RevisionRef, MAX_BATCH_BYTES};

/// Which reports the agent makes: none when no `[reports]` receiver is configured (then the
/// outbox stays empty, rather than growing with nobody to deliver it to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reporting {
    enabled: bool,
}

/// The kind of the report that a service follows a new document with nothing to roll.
pub const DOCUMENT_FOLLOWED: &str = "DocumentFollowed";

impl Reporting {
    /// Reporting as `config` says.
    pub fn new(config: &Config) -> Reporting {
        Reporting {
            enabled: config.reports.is_some(),
        }
    }

    /// Reporting on (tests, benchmarks).
    pub fn enabled() -> Reporting {
        Reporting { enabled: true }
    }

    /// The report of what the site did with a desired document: `outcome` is `applied` or
    /// `refused`, `rule` the rule that refused it.
    pub fn for_document(
        &self,
        at: Timestamp,
        serial: Option<u64>,
        outcome: &str,
        rule: Option<&str>,
        message: &str,
        key_id: Option<&str>,
    ) -> Vec<NewReport> {
        if !self.enabled {
            return Vec::new();
        }
        vec![NewReport {
            at,
            body: ReportBody::Document {
                serial,
                outcome: outcome.to_owned(),
                rule: rule.map(str::to_owned),
                message: message.to_owned(),
                key_id: key_id.map(str::to_owned),
            },
        }]
    }

    /// The reports of a rollout step from `before` to `after`: one per recorded event, each with
    /// the state the step left the service in and the serial of the desired document it
    /// follows; a step that recorded nothing but changed what the center sees (phase,
    /// completion, the stable or canary revision, e.g. instances becoming ready) reports it as
    /// a `StateChanged` event, so the center always knows what runs.
    pub fn for_rollout(
        &self,
        events: &[EventRecord],
        before: &Rollout,
        after: &Rollout,
        serial: Option<u64>,
        now: Timestamp,
    ) -> Vec<NewReport> {
        if !self.enabled {
            return Vec::new();
        }
        let report = |at: Timestamp, service: &str, kind: &str, message: &str| NewReport {
            at,
            body: ReportBody::Rollout {
                service: service.to_owned(),
                kind: kind.to_owned(),
                message: message.to_owned(),
                phase: phase_name(after.phase).to_owned(),
                completion: after
                    .completion
                    .map(|completion| completion_name(completion).to_owned()),
                stable: after.stable_revision().map(revision_ref),
                canary: after.canary_revision().map(revision_ref),
                serial,
            },
        };
        if events.is_empty() {
            if seen_by_center(before) == seen_by_center(after) {
                return Vec::new();
            }
            let message = format!("phase {}", phase_name(after.phase));
            return vec![report(now, &after.service, STATE_CHANGED, &message)];
        }
        events
            .iter()
            .map(|event| report(event.at, &event.service, &event.kind, &event.message))
            .collect()
    }

    /// The report that `rollout` follows the document `serial` with nothing to roll (its spec
    /// did not change): a `DocumentFollowed` event with the state it is in.
    pub fn for_serial(&self, rollout: &Rollout, serial: u64, now: Timestamp) -> Vec<NewReport> {
        let event = EventRecord {
            service: rollout.service.clone(),
            at: now,
            kind: DOCUMENT_FOLLOWED.to_owned(),
            message: format!("follows serial {serial}; its spec is unchanged"),
        };
        self.for_rollout(&[event], rollout, rollout, Some(serial), now)
    }

    /// The reports of an analysis run saved as `after` when it was `before` (`None`: it is new):
    /// each measurement taken in between, and the verdict when the run has just ended.
    pub fn for_analysis(
        &self,
        before: Option<&AnalysisRun>,
        after: &AnalysisRun,
        now: Timestamp,
    ) -> Vec<NewReport> {
        if !self.enabled {
            return Vec::new();
        }
        let mut reports = Vec::new();
        for (index, metric) in after.metrics.iter().enumerate() {
            let taken_before = before
                .and_then(|run| run.metrics.get(index))
                .map_or(0, taken);
            // Old measurements are trimmed (measurementRetention), so count, then take the tail.
            let new = taken(metric).saturating_sub(taken_before) as usize;
            let start = metric.measurements.len().saturating_sub(new);
            for measurement in &metric.measurements[start..] {
                reports.push(NewReport {
                    at: measurement.at,
                    body: ReportBody::Measurement {
                        service: after.service.clone(),
                        run: after.id.clone(),
                        metric: metric.metric.name.clone(),
                        phase: measurement.phase.as_str().to_owned(),
                        value: measurement.value.clone(),
                        message: measurement.message.clone(),
                    },
                });
            }
        }
        let ended = |run: &AnalysisRun| !matches!(run.phase, RunPhase::Pending | RunPhase::Running);
        if ended(after) && !before.is_some_and(ended) {
            reports.push(NewReport {
                at: after.ended_at.unwrap_or(now),
                body: ReportBody::Verdict {
                    service: after.service.clone(),
                    run: after.id.clone(),
                    phase: after.phase.as_str().to_owned(),
                    message: after.message.clone().unwrap_or_default(),
                },
            });
        }
        reports
    }
}

/// The kind of the report of a step that changed what runs without recording an event.
pub const STATE_CHANGED: &str = "StateChanged";

fn revision_ref(revision: &Revision) -> RevisionRef {
    RevisionRef {
        revision: revision.number,
        version: revision.template.version.clone(),
    }
}

/// What a rollout report tells the center about a service's state.
fn seen_by_center(
    rollout: &Rollout,
) -> (
    Phase,
    Option<Completion>,
    Option<RevisionRef>,
    Option<RevisionRef>,
) {
    (
        rollout.phase,
        rollout.completion,
        rollout.stable_revision().map(revision_ref),
        rollout.canary_revision().map(revision_ref),
    )
}

/// Measurements a metric has ever taken.
fn taken(metric: &MetricRun) -> u32 {
    metric.successful + metric.failed + metric.inconclusive + metric.error
}

/// What one delivery attempt gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The receiver holds everything up to this number.
    Acked(u64),
    /// The receiver misses reports after this number (HTTP 409): resend from the next one.
    Gap(u64),
    /// The batch is too large for the receiver (HTTP 413): send smaller ones.
    TooLarge,
    /// Not delivered; try again later, not before `after` when the receiver said so.
    Retry {
        /// The receiver's `Retry-After`.
        after: Option<Duration>,
        /// What went wrong, for status and the log.
        reason: String,
    },
}

/// A transport: delivers one encoded batch and says what the receiver answered.
enum Transport {
    Http(Box<http::HttpTransport>),
    Mqtt(Box<mqtt::MqttTransport>),
}

impl Transport {
    async fn deliver(
        &mut self,
        batch: &ReportBatch,
        body: bytes::Bytes,
        now: Timestamp,
    ) -> Outcome {
        match self {
            Transport::Http(transport) => transport.deliver(batch, body, now).await,
            Transport::Mqtt(transport) => transport.deliver(batch, body).await,
        }
    }
}

/// Why the sender could not start.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// A TLS file could not be read or used.
    #[error("reports: {0}")]
    Tls(String),
}

/// The sender's handle: its task and the outbox status it publishes for `edgeroll get`.
#[derive(Debug)]
pub struct Sender {
    /// The outbox's status, updated after every attempt and every append.
    pub status: watch::Receiver<Option<types::ReportsStatus>>,
    /// The task; it ends when `shutdown` is cancelled.
    pub task: JoinHandle<()>,
}

/// Start the sender for `config.reports` (nothing when it is not configured).
pub fn spawn(
    config: &Config,
    store: Arc<Store>,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<Option<Sender>, SenderError> {
    let Some(reports) = config.reports.clone() else {
        return Ok(None);
    };
    store.set_outbox_max_bytes(reports.outbox_max_bytes);
    let transport = match &reports.url {
        ReportsUrl::Http(url) => Transport::Http(Box::new(http::HttpTransport::new(
            url,
            &config.site,
            &config.labels,
            &reports,
        )?)),
        ReportsUrl::Mqtt { host, port, tls } => {
            Transport::Mqtt(Box::new(mqtt::MqttTransport::new(
                host,
                *port,
                *tls,
                &config.site,
                &config.labels,
                &reports,
                shutdown.child_token(),
            )?))
        }
    };
    let initial = store
        .outbox_status()
        .ok()
        .map(|status| status_document(&reports.url, &status));
    let (status_tx, status_rx) = watch::channel(initial);
    let sender = SenderTask {
        site: config.site.clone(),
        config: reports,
        store,
        clock,
        transport,
        status: status_tx,
        shutdown,
    };
    Ok(Some(Sender {
        status: status_rx,
        task: tokio::spawn(sender.run()),
    }))
}

struct SenderTask {
    site: String,
    config: ReportsConfig,
    store: Arc<Store>,
    clock: Clock,
    transport: Transport,
    status: watch::Sender<Option<types::ReportsStatus>>,
    shutdown: CancellationToken,
}

impl SenderTask {
    async fn run(mut self) {
        let configured = BatchLimits {
            max_reports: self.config.batch_max_reports,
            max_bytes: self.config.batch_max_bytes,
        };
        let mut limits = configured;
        let mut backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        // A region's power coming back boots every site at once: do not all send in the same
        // second.
        if !self
            .pause(crate::backoff::jitter(self.config.retry_initial))
            .await
        {
            return;
        }
        let mut from: Option<u64> = None;
        info!(url = %self.config.url, "report sender started");
        loop {
            self.publish_status();
            let batch = match self.store.outbox_batch(&self.site, from, limits) {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = self.store.outbox_appended() => continue,
                    }
                }
                Err(error) => {
                    warn!(%error, "cannot read the report outbox");
                    if !self.pause(backoff.next_delay()).await {
                        return;
                    }
                    continue;
                }
            };
            let body = bytes::Bytes::from(report::encode(&batch));
            if body.len() > MAX_BATCH_BYTES && limits.max_reports > 1 {
                limits.max_reports = (batch.reports.len() / 2).max(1);
                continue;
            }
            let outcome = tokio::select! {
                () = self.shutdown.cancelled() => return,
                outcome = self.transport.deliver(&batch, body.clone(), self.clock.now()) => outcome,
            };
            let now = self.clock.now();
            debug!(
                first = batch.first,
                last = batch.last,
                bytes = body.len(),
                ?outcome,
                "report batch"
            );
            // A "gap" at or beyond the batch's end is no gap: take it as the acknowledgement.
            let outcome = match outcome {
                Outcome::Gap(ack) if ack >= batch.last => Outcome::Acked(ack),
                other => other,
            };
            match outcome {
                Outcome::Acked(ack) => {
                    let result = format!("acknowledged up to {ack}");
                    if let Err(error) =
                        self.store
                            .outbox_acknowledge(ack, &batch.dropped, now, &result)
                    {
                        warn!(%error, "cannot note an acknowledgement; the batch will be sent again");
                    }
                    if ack >= batch.last {
                        from = None;
                        limits = configured;
                        backoff.reset();
                    } else {
                        // The receiver did not take all of it: resend from where it stands,
                        // but slowly, in case it never does.
                        from = Some(ack + 1);
                        if !self.pause(backoff.next_delay()).await {
                            return;
                        }
                    }
                }
                Outcome::Gap(ack) => {
                    let result = format!("receiver misses reports after {ack}; resending");
                    warn!(first = batch.first, ack, "{result}");
                    self.note_failure(now, &result);
                    let again = from == Some(ack + 1);
                    from = Some(ack + 1);
                    if again && !self.pause(backoff.next_delay()).await {
                        return;
                    }
                }
                Outcome::TooLarge => {
                    let result = format!(
                        "batch of {} reports ({} bytes) too large for the receiver",
                        batch.reports.len(),
                        body.len()
                    );
                    warn!("{result}; sending smaller batches");
                    self.note_failure(now, &result);
                    if limits.max_reports <= 1 {
                        if !self.pause(backoff.next_delay()).await {
                            return;
                        }
                    } else {
                        limits.max_reports = (batch.reports.len() / 2).max(1);
                        limits.max_bytes = (limits.max_bytes / 2).max(1);
                    }
                }
                Outcome::Retry { after, reason } => {
                    warn!(first = batch.first, last = batch.last, %reason, "report delivery failed; retrying");
                    self.note_failure(now, &reason);
                    let delay = backoff.next_delay();
                    let delay = after.map_or(delay, |after| after.max(delay));
                    if !self.pause(delay).await {
                        return;
                    }
                }
            }
        }
    }

    fn note_failure(&self, now: Timestamp, result: &str) {
        if let Err(error) = self.store.outbox_attempt_failed(now, result) {
            warn!(%error, "cannot note a failed report delivery");
        }
        self.publish_status();
    }

    /// Sleep `delay`; false when the agent shuts down meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        self.publish_status();
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    fn publish_status(&self) {
        match self.store.outbox_status() {
            Ok(status) => {
                let document = status_document(&self.config.url, &status);
                self.status.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&document);
                    if changed {
                        *current = Some(document);
                    }
                    changed
                });
            }
            Err(error) => warn!(%error, "cannot read the report outbox's status"),
        }
    }
}

/// The outbox's status as the API shows it.
pub fn status_document(url: &ReportsUrl, status: &OutboxStatus) -> types::ReportsStatus {
    types::ReportsStatus {
        url: url.to_string(),
        depth: status.depth,
        bytes: status.bytes,
        max_bytes: status.max_bytes,
        last_seq: status.last_seq,
        acked: status.acked,
        oldest_seq: status.oldest.map(|(seq, _)| seq),
        oldest_at: status.oldest.map(|(_, at)| at.rfc3339()),
        last_attempt_at: status.last_attempt.map(Timestamp::rfc3339),
        last_success_at: status.last_success.map(Timestamp::rfc3339),
        last_result: status.last_result.clone(),
        last_ok: status.last_ok,
        dropped: status.dropped.clone(),
    }
}
