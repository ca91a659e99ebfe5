//! The pull of the desired document: fetching it from its source, checking it against the trust
//! rules, recording the verdict, and handing the shell only what it may apply.
//!
//! Owns the desired source: a `file://` document (re-read when it or its `.minisig` changes, and
//! when woken by SIGHUP) or an `https://` one (polled every `poll_interval` with `If-None-Match`,
//! a first poll at a random instant within one interval after boot, full-jitter exponential
//! backoff on failures, `Retry-After` honoured, a body size limit and connect/answer timeouts,
//! rustls with ring, the system CAs plus `ca_file`, optional mutual TLS). The signature comes
//! from the `edgeroll-signature` header, else from the URL with `.minisig`.
//!
//! It runs as its own task and talks to the shell over a channel ([`PullEvent`]). Every
//! candidate goes through `trust::judge`; an accepted document is committed to the store
//! (`store::trust`) **before** it is sent to the shell, and a refusal is recorded before it is
//! reported. It must never apply a document itself, decide anything about a rollout, or read
//! the system clock (it is handed the shell's `Clock`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::{jitter, Backoff};
use crate::config::{Config, DesiredSource, DesiredTrust};
use crate::shell::Clock;
use crate::spec::{parse, Document};
use crate::store::trust::{RefusalRecord, SourceRecord};
use crate::store::Store;
use crate::time::Timestamp;
use crate::trust::{self, Candidate, Decision, Policy, Rule, Site, SourceKind, TrustState};
use crate::wire;
use crate::wire::signature::TrustedKey;

mod client;
mod file;

use self::client::{GetError, PullClient};
pub use self::file::signature_path;
use self::file::{fingerprint, read_limited, ReadError};

/// How long connecting (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a `file://` source is checked for changes.
pub const FILE_POLL: Duration = Duration::from_secs(1);
/// The first backoff after a failed pull; it doubles per failure up to [`backoff_cap`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// What the pull tells the shell.
#[derive(Debug)]
pub enum PullEvent {
    /// A document passed every rule and its acceptance is committed: apply it. A `stale` one
    /// (already accepted earlier, now expired) keeps what runs and starts nothing new.
    Apply {
        /// The document.
        document: Box<Document>,
        /// Whether it has expired.
        stale: bool,
    },
    /// A document was refused (already recorded in the store); nothing that runs changes.
    Refused(RefusalRecord),
    /// A pull failed (unreachable, timeout, an error status); shown once per new reason.
    Failed(RefusalRecord),
    /// The source's status changed.
    Source(Box<SourceView>),
}

/// The source's status with the serial the site runs, as the shell shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceView {
    /// What the store keeps.
    pub record: SourceRecord,
    /// The highest accepted serial.
    pub serial: Option<u64>,
}

/// A handle on the running pull task.
#[derive(Debug)]
pub struct Handle {
    wake: mpsc::Sender<()>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Handle {
    /// Re-read the source now (SIGHUP, `Agent::reload`).
    pub fn wake(&self) {
        // A wake-up already pending covers this one too.
        let _ = self.wake.try_send(());
    }

    /// Stop the task and wait until it has ended (the source changed, or the agent stops).
    pub async fn stopped(self) {
        self.stop.cancel();
        // A task that ended on its own, or was cancelled, is just as stopped.
        let _ = self.task.await;
    }
}

/// The pull's state: one per configured source.
pub struct Puller {
    site: String,
    labels: std::collections::BTreeMap<String, String>,
    /// `runtime.kind`, for the trust rule `runtime`.
    runtime: &'static str,
    source: DesiredSource,
    url: String,
    trust: DesiredTrust,
    keys: Vec<TrustedKey>,
    poll_interval: Duration,
    store: Arc<Store>,
    clock: Clock,
    /// Whether documents are reported to a center (`[reports]`).
    reporting: crate::report::Reporting,
    state: TrustState,
    view: SourceView,
    client: Option<Result<PullClient, String>>,
    /// Modification times and lengths of the file and its signature last read.
    file_seen: Option<Fingerprint>,
    /// Whether a document was handed to the shell since the task started.
    applied: bool,
    /// The expiry of the document handed to the shell.
    running_expires: Option<Timestamp>,
    floor_warned: bool,
    /// The last failure reported, so a source that keeps failing the same way is one event.
    last_failure: Option<String>,
    /// The last refusal reported (rule and candidate), for the same reason.
    last_refusal: Option<(Rule, String)>,
    backoff: Backoff,
}

type Fingerprint = [(Option<SystemTime>, u64); 2];

impl std::fmt::Debug for Puller {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Puller")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What one https attempt gave, besides a document.
enum Attempt {
    /// 304: the document is the one accepted.
    NotModified,
    /// A candidate: bytes, signature, ETag and `Date`.
    Fetched {
        body: Bytes,
        signature: Option<String>,
        etag: Option<String>,
        date: Option<Timestamp>,
        /// The file changed in the second of the answer, so its tag was dropped.
        same_second: bool,
    },
    /// The body was larger than the limit.
    TooLarge(String),
    /// It failed; retry after the backoff, or after `retry_after` when the server said so.
    Failed {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl Puller {
    /// The pull of `config`'s desired source, with what the store remembers.
    pub fn new(config: &Config, store: Arc<Store>, clock: Clock) -> Puller {
        let url = match &config.desired {
            DesiredSource::None => String::new(),
            DesiredSource::File(path) => format!("file://{}", path.display()),
            DesiredSource::Https(url) => url.replace("{site}", &config.site),
        };
        let keys = config
            .desired_trust
            .trusted_keys
            .iter()
            .filter_map(|text| TrustedKey::parse(text).ok())
            .collect();
        let mut puller = Puller {
            site: config.site.clone(),
            labels: config.labels.clone(),
            runtime: config.runtime.name(),
            source: config.desired.clone(),
            url,
            trust: config.desired_trust.clone(),
            keys,
            poll_interval: config.poll_interval,
            store,
            clock,
            reporting: crate::report::Reporting::new(config),
            state: TrustState::default(),
            view: SourceView::default(),
            client: None,
            file_seen: None,
            applied: false,
            running_expires: None,
            floor_warned: false,
            last_failure: None,
            last_refusal: None,
            backoff: pull_backoff(config.poll_interval),
        };
        match puller.store.load_trust() {
            Ok(record) => {
                puller.state = record.state;
                puller.view.record = record.source;
            }
            Err(error) => warn!(%error, "cannot read the trust table; starting from nothing"),
        }
        // The ETag belongs to the URL it came from.
        if puller.view.record.url != puller.url {
            puller.view.record.etag = None;
        }
        puller.view.record.url = puller.url.clone();
        puller.view.serial = puller.state.accepted.as_ref().map(|(serial, _)| *serial);
        puller
    }

    /// What the source says at start-up, synchronously, before anything serves: a `file://`
    /// document is read and judged; for `https://` the last verified document in the store is
    /// applied (with no network), and the first poll comes later.
    pub fn initial(&mut self) -> Vec<PullEvent> {
        let mut events = Vec::new();
        match self.source.clone() {
            DesiredSource::None => {}
            DesiredSource::File(path) => self.check_file(&path, true, &mut events),
            DesiredSource::Https(_) => match self.store.load_trust() {
                Ok(record) => {
                    if let Some(bytes) = record.document {
                        info!(url = %self.url, "applying the last verified desired document from the store");
                        self.judge_and_record(
                            &bytes,
                            record.signature.as_deref(),
                            None,
                            None,
                            &mut events,
                        );
                    }
                }
                Err(error) => warn!(%error, "cannot read the last verified desired document"),
            },
        }
        events.push(PullEvent::Source(Box::new(self.view.clone())));
        events
    }

    /// Run the pull as its own task, sending what it finds to `events`.
    pub fn spawn(mut self, events: mpsc::Sender<PullEvent>, shutdown: CancellationToken) -> Handle {
        let (wake_tx, mut wake_rx) = mpsc::channel(1);
        let stop = shutdown.child_token();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut delay = self.first_delay();
            loop {
                let forced = tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(delay) => false,
                    Some(()) = wake_rx.recv() => true,
                };
                let mut out = Vec::new();
                delay = tokio::select! {
                    () = token.cancelled() => break,
                    delay = self.poll(forced, &mut out) => delay,
                };
                for event in out {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        Handle {
            wake: wake_tx,
            stop,
            task,
        }
    }

    /// A random instant within one interval, so sites that boot together do not poll together.
    fn first_delay(&self) -> Duration {
        match self.source {
            DesiredSource::Https(_) => jitter(self.poll_interval),
            _ => FILE_POLL,
        }
    }

    fn now(&mut self) -> Timestamp {
        let (now, behind) = trust::effective_now(self.clock.now(), self.state.clock_floor);
        if behind && !self.floor_warned {
            self.floor_warned = true;
            warn!(
                clock = %self.clock.now(),
                floor = %self.state.clock_floor,
                "the system clock reads earlier than the newest trusted time seen; using that time instead"
            );
        }
        now
    }

    /// One round; returns how long to wait before the next.
    async fn poll(&mut self, forced: bool, events: &mut Vec<PullEvent>) -> Duration {
        // A wake-up (SIGHUP) re-reads a CA or client key file that could not be loaded.
        if forced && matches!(self.client, Some(Err(_))) {
            self.client = None;
        }
        let delay = match self.source.clone() {
            DesiredSource::None => FILE_POLL,
            DesiredSource::File(path) => {
                self.check_file(&path, forced, events);
                FILE_POLL
            }
            DesiredSource::Https(_) => self.check_https(events).await,
        };
        self.check_stale(events);
        delay
    }

    /// Mark the running document stale once it expires.
    fn check_stale(&mut self, events: &mut Vec<PullEvent>) {
        let now = self.now();
        let stale = trust::is_stale(self.running_expires, now);
        if stale != self.view.record.stale {
            self.view.record.stale = stale;
            if stale {
                warn!(
                    "the running desired document expired: it keeps running, and no new rollout starts from it"
                );
            }
            self.save_source();
            events.push(PullEvent::Source(Box::new(self.view.clone())));
        }
    }

    fn save_source(&mut self) {
        if let Err(error) = self
            .store
            .save_source(self.state.clock_floor, &self.view.record)
        {
            warn!(%error, "cannot record the desired source status");
        }
    }

    fn check_file(&mut self, path: &Path, forced: bool, events: &mut Vec<PullEvent>) {
        let signature_path = signature_path(path);
        let fingerprint = [fingerprint(path), fingerprint(&signature_path)];
        if !forced && self.file_seen == Some(fingerprint) {
            return;
        }
        self.file_seen = Some(fingerprint);
        let now = self.now();
        self.view.record.last_attempt = Some(now);
        let bytes = match read_limited(path, self.trust.max_document_bytes) {
            Ok(bytes) => bytes,
            Err(ReadError::TooLarge(message)) => {
                self.refuse(Rule::Size, message.clone(), message, None, events);
                return;
            }
            Err(ReadError::Io(error)) => {
                self.fail(format!("cannot read {}: {error}", path.display()), events);
                return;
            }
        };
        let signature = if self.keys.is_empty() {
            None
        } else {
            match read_limited(&signature_path, self.trust.max_document_bytes) {
                Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Err(_) => None,
            }
        };
        self.judge_and_record(&bytes, signature.as_deref(), None, None, events);
        events.push(PullEvent::Source(Box::new(self.view.clone())));
    }

    async fn check_https(&mut self, events: &mut Vec<PullEvent>) -> Duration {
        let now = self.now();
        self.view.record.last_attempt = Some(now);
        let attempt = self.fetch().await;
        let delay = match attempt {
            Attempt::NotModified => {
                self.view.record.last_success = Some(now);
                self.view.record.last_result = match self.view.serial {
                    Some(serial) => format!("not modified (serial {serial})"),
                    None => "not modified".to_owned(),
                };
                self.succeeded();
                self.save_source();
                self.poll_interval
            }
            Attempt::Fetched {
                body,
                signature,
                etag,
                date,
                same_second,
            } => {
                if same_second {
                    // No tag tells this version apart: the next poll must not send the last one.
                    self.view.record.etag = None;
                }
                let verified =
                    self.judge_and_record(&body, signature.as_deref(), etag, date, events);
                if verified {
                    self.succeeded();
                    self.poll_interval
                } else {
                    self.backoff(None)
                }
            }
            Attempt::TooLarge(message) => {
                self.refuse(Rule::Size, message.clone(), message, None, events);
                self.backoff(None)
            }
            Attempt::Failed {
                message,
                retry_after,
            } => {
                self.fail(message, events);
                self.backoff(retry_after)
            }
        };
        events.push(PullEvent::Source(Box::new(self.view.clone())));
        delay
    }

    fn succeeded(&mut self) {
        self.backoff.reset();
        self.last_failure = None;
        self.last_refusal = None;
    }

    /// Full jitter: a random delay between zero and `BACKOFF_BASE × 2^failures`, capped; at
    /// least `retry_after` when the server asked for it.
    fn backoff(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self.backoff.next_delay();
        match retry_after {
            Some(after) => delay.max(after),
            None => delay,
        }
    }

    fn fail(&mut self, message: String, events: &mut Vec<PullEvent>) {
        warn!(url = %self.url, "desired document pull failed: {message}");
        self.view.record.last_result = format!("error: {message}");
        self.save_source();
        // The same failure again is not news; a new one is.
        if self.last_failure.as_deref() != Some(message.as_str()) {
            self.last_failure = Some(message.clone());
            events.push(PullEvent::Failed(RefusalRecord {
                at: self.now(),
                rule: "pull".to_owned(),
                message,
            }));
        }
    }

    /// Refuse a candidate. `candidate` identifies it (its digest, or the message when there
    /// are no bytes): the same candidate refused by the same rule again, as a center that keeps
    /// serving it causes at every poll, is one event, not one per poll.
    fn refuse(
        &mut self,
        rule: Rule,
        message: String,
        candidate: String,
        serial: Option<u64>,
        events: &mut Vec<PullEvent>,
    ) {
        self.view.record.last_result = format!("refused ({rule})");
        let key = (rule, candidate);
        if self.last_refusal.as_ref() == Some(&key) {
            self.save_source();
            return;
        }
        self.last_refusal = Some(key);
        if rule == Rule::Invalid {
            // The document's own errors, with their FILE:LINE:COLUMN, as `edgeroll validate`
            // prints them: an operator must fix the file.
            error!(url = %self.url, "{message}");
        }
        warn!(url = %self.url, %rule, "desired document refused: {message}");
        let refusal = RefusalRecord {
            at: self.now(),
            rule: rule.as_str().to_owned(),
            message,
        };
        let reports = self.reporting.for_document(
            refusal.at,
            serial,
            "refused",
            Some(&refusal.rule),
            &refusal.message,
            None,
        );
        if let Err(error) = self
            .store
            .refuse_document(&refusal, &self.view.record, &reports)
        {
            warn!(%error, "cannot record the refusal");
        }
        events.push(PullEvent::Refused(refusal));
    }

    /// Judge a candidate, record the verdict, and queue what the shell must do. Returns whether
    /// the candidate was verified (applied or the same as the accepted one).
    fn judge_and_record(
        &mut self,
        bytes: &[u8],
        signature: Option<&str>,
        etag: Option<String>,
        date: Option<Timestamp>,
        events: &mut Vec<PullEvent>,
    ) -> bool {
        let now = self.now();
        let kind = match self.source {
            DesiredSource::Https(_) => SourceKind::Https,
            _ => SourceKind::File,
        };
        let text = String::from_utf8_lossy(bytes);
        let path = PathBuf::from(&self.url);
        let parsed = parse::parse_document(&path, &text).map_err(|diagnostics| {
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        });
        let decision = trust::judge(
            Candidate {
                bytes,
                signature,
                document: parsed.as_ref().map_err(String::as_str),
            },
            Policy {
                trusted_keys: &self.keys,
                allow_unsigned: self.trust.allow_unsigned,
                kind,
                max_bytes: usize::try_from(self.trust.max_document_bytes).unwrap_or(usize::MAX),
            },
            Site {
                name: &self.site,
                labels: &self.labels,
                runtime: self.runtime,
            },
            &self.state,
            now,
        );
        let (accepted, new) = match decision {
            Decision::Refuse(refusal) => {
                // The center is told which serial was refused when the signature held (the
                // rules checked after it), never a number only an unverified document claims.
                let serial = match refusal.rule {
                    Rule::Selector
                    | Rule::Runtime
                    | Rule::Serial
                    | Rule::SerialConflict
                    | Rule::Expired => parsed.as_ref().ok().map(|document| document.serial),
                    _ => None,
                };
                self.refuse(
                    refusal.rule,
                    refusal.message,
                    trust::digest(bytes),
                    serial,
                    events,
                );
                return false;
            }
            Decision::Apply(accepted) => (accepted, true),
            Decision::NoOp(accepted) => (accepted, false),
        };
        let Ok(document) = parsed else {
            return false;
        };
        // Trusted time: the signing time, and the verified answer's `Date`.
        let floor = [Some(self.state.clock_floor), accepted.signed_at, date]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default();
        self.view.record.last_success = Some(now);
        if etag.is_some() {
            self.view.record.etag = etag;
        }
        self.view.record.key_id = accepted.key_id.clone();
        self.view.record.expires = accepted.expires;
        let stale = trust::is_stale(accepted.expires, now.max(floor));
        self.view.record.stale = stale;
        let trusted = !self.keys.is_empty() || kind == SourceKind::Https;
        if new {
            self.view.record.last_result = format!("applied serial {}", accepted.serial);
            if trusted {
                // Persist, then apply: the serial is durable before anything runs.
                let reports = self.reporting.for_document(
                    now,
                    Some(accepted.serial),
                    "applied",
                    None,
                    &format!("desired document serial {} accepted", accepted.serial),
                    accepted.key_id.as_deref(),
                );
                if let Err(error) = self.store.accept_document(
                    &accepted,
                    bytes,
                    signature,
                    floor,
                    &self.view.record,
                    &reports,
                ) {
                    warn!(%error, "cannot record the accepted document; it is not applied");
                    self.view.record.last_result = format!("error: {error}");
                    return false;
                }
                self.state.accepted = Some((accepted.serial, accepted.digest.clone()));
            } else {
                self.save_source();
            }
            self.state.clock_floor = floor;
            self.view.serial = Some(accepted.serial);
            info!(serial = accepted.serial, key = ?accepted.key_id, "desired document accepted");
        } else {
            self.view.record.last_result = format!("unchanged (serial {})", accepted.serial);
            self.state.clock_floor = floor;
            self.save_source();
        }
        if new || !self.applied {
            self.applied = true;
            self.running_expires = accepted.expires;
            events.push(PullEvent::Apply {
                document: Box::new(document),
                stale,
            });
        }
        true
    }

    fn client(&mut self) -> Result<PullClient, String> {
        if self.client.is_none() {
            self.client = Some(PullClient::new(&self.trust));
        }
        match &self.client {
            Some(result) => result.clone(),
            None => Err("no client".to_owned()),
        }
    }

    async fn fetch(&mut self) -> Attempt {
        let client = match self.client() {
            Ok(client) => client,
            Err(message) => {
                return Attempt::Failed {
                    message,
                    retry_after: None,
                }
            }
        };
        let limit = usize::try_from(self.trust.max_document_bytes).unwrap_or(usize::MAX);
        let headers = self.request_headers();
        let etag = self
            .view
            .record
            .etag
            .clone()
            .filter(|_| self.state.accepted.is_some());
        let timeout = self.trust.timeout;
        let answer = match client
            .get(&self.url, &headers, etag.as_deref(), limit, timeout)
            .await
        {
            Ok(answer) => answer,
            Err(GetError::TooLarge(message)) => return Attempt::TooLarge(message),
            Err(GetError::Failed(message)) => {
                return Attempt::Failed {
                    message,
                    retry_after: None,
                }
            }
        };
        match answer.status {
            StatusCode::NOT_MODIFIED => return Attempt::NotModified,
            StatusCode::OK => {}
            status @ (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => {
                let retry_after = answer.retry_after(self.clock.now());
                return Attempt::Failed {
                    message: format!(
                        "{} answered {status}{}",
                        self.url,
                        retry_after
                            .map(|after| format!(", retry after {}s", after.as_secs()))
                            .unwrap_or_default()
                    ),
                    retry_after,
                };
            }
            status => {
                return Attempt::Failed {
                    message: format!(
                        "{} answered {status}: {}",
                        self.url,
                        crate::provider::http_client::quote(&answer.body)
                    ),
                    retry_after: answer.retry_after(self.clock.now()),
                }
            }
        }
        let signature = match answer.header(wire::SIGNATURE_HEADER) {
            Some(encoded) => match base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            {
                Ok(decoded) => Some(String::from_utf8_lossy(&decoded).into_owned()),
                Err(_) => Some(String::new()),
            },
            None if self.keys.is_empty() => None,
            None => {
                let url = format!("{}{}", self.url, wire::SIGNATURE_SUFFIX);
                match client.get(&url, &headers, None, limit, timeout).await {
                    Ok(signature) if signature.status == StatusCode::OK => {
                        Some(String::from_utf8_lossy(&signature.body).into_owned())
                    }
                    Ok(signature) if signature.status == StatusCode::NOT_FOUND => None,
                    Ok(signature) => {
                        return Attempt::Failed {
                            message: format!("{url} answered {}", signature.status),
                            retry_after: signature.retry_after(self.clock.now()),
                        }
                    }
                    Err(GetError::TooLarge(message)) => return Attempt::TooLarge(message),
                    Err(GetError::Failed(message)) => {
                        return Attempt::Failed {
                            message,
                            retry_after: None,
                        }
                    }
                }
            }
        };
        let http_date = |name: header::HeaderName| {
            answer
                .header(name.as_str())
                .and_then(|date| httpdate::parse_http_date(date).ok())
        };
        let date = http_date(header::DATE);
        // A tag made from a file's modification time in seconds and its size (nginx's, Apache's)
        // is the same for two versions of one size written within one second; so a tag served
        // in the second the file changed (or before it) is not kept, and the next poll fetches
        // the document again instead of being answered 304 (RFC 9110, 8.8.2.2).
        let same_second = match (date, http_date(header::LAST_MODIFIED)) {
            (Some(date), Some(modified)) => date
                .duration_since(modified)
                .map_or(true, |age| age < Duration::from_secs(1)),
            _ => false,
        };
        Attempt::Fetched {
            etag: answer
                .header(header::ETAG.as_str())
                .filter(|_| !same_second)
                .map(str::to_owned),
            date: date
                .and_then(|date| date.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|since| Timestamp::from_millis(since.as_secs().saturating_mul(1000))),
            body: answer.body,
            signature,
            same_second,
        }
    }

    fn request_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (wire::SITE_HEADER, self.site.clone()),
            (wire::LABELS_HEADER, wire::labels_header_value(&self.labels)),
            (
                header::USER_AGENT.as_str(),
                format!("edgeroll/{}", env!("CARGO_PKG_VERSION")),
            ),
        ]
    }
}

/// The longest backoff: ten poll intervals.
pub fn backoff_cap(poll_interval: Duration) -> Duration {
    poll_interval.saturating_mul(10).max(BACKOFF_BASE)
}

/// The pull's backoff: the first failure waits up to twice `BACKOFF_BASE` (or the poll
/// interval, when shorter), doubling per failure up to [`backoff_cap`].
fn pull_backoff(poll_interval: Duration) -> Backoff {
    Backoff::new(
        BACKOFF_BASE.min(poll_interval).saturating_mul(2),
        backoff_cap(poll_interval),
    )
}

/// The upper bound of the random delay after `failures` failures in a row (full jitter: the
/// delay is uniform in `[0, ceiling]`, so sites that failed together do not retry together).
pub fn backoff_ceiling(failures: u32, poll_interval: Duration) -> Duration {
    pull_backoff(poll_interval).ceiling(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_ceiling_doubles_up_to_ten_poll_intervals() {
        let poll = Duration::from_secs(30);
        let ceilings: Vec<u64> = (1..=10)
            .map(|failures| backoff_ceiling(failures, poll).as_secs())
            .collect();
        assert_eq!(ceilings, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_ceiling(u32::MAX, poll), Duration::from_secs(300));
        // A short poll interval shortens the base too.
        assert_eq!(
            backoff_ceiling(1, Duration::from_millis(100)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let ceiling = Duration::from_secs(8);
        let delays: Vec<Duration> = (0..200).map(|_| jitter(ceiling)).collect();
        assert!(delays.iter().all(|delay| *delay <= ceiling));
        let below_half = delays.iter().filter(|delay| **delay < ceiling / 2).count();
        assert!(
            (40..160).contains(&below_half),
            "{below_half} of 200 below half"
        );
    }

    #[test]
    fn the_signature_sits_next_to_the_file() {
        assert_eq!(
            signature_path(Path::new("/etc/edgeroll/desired.toml")),
            PathBuf::from("/etc/edgeroll/desired.toml.minisig")
        );
    }
}
