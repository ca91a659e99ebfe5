//! The JSON shapes of the local API and of `edgeroll get -o json` (see the contract).
//!
//! This is the only place these wire types are defined; the CLI and the shell both use them.
//! Field names are camelCase on the wire. Changing a name here breaks users' scripts.

use crate::rollout::{Completion, Phase};
use serde::{Deserialize, Serialize};

/// The `apiVersion` of every status document.
pub const STATUS_API_VERSION: &str = "edgeroll/v1";

/// `GET /v1/status`: every service of the site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always [`STATUS_API_VERSION`].
    pub api_version: String,
    /// The site name from the config.
    pub site: String,
    /// One entry per service, in document order.
    pub services: Vec<ServiceStatus>,
    /// The desired source; null when none is configured.
    #[serde(default)]
    pub source: Option<SourceStatus>,
    /// Site-level events (`DocumentRefused`, `DocumentPullFailed`), oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
    /// The report outbox and its delivery; absent when no `[reports]` receiver is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<ReportsStatus>,
}

/// The desired source: where the document comes from and what the last pull gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// `https://…` (with `{site}` replaced) or `file:///…`.
    pub url: String,
    /// When the source was last tried (RFC 3339).
    pub last_attempt: Option<String>,
    /// What it gave: `applied serial 5`, `not modified (serial 5)`, `refused (serial)`,
    /// `error: …`.
    pub last_result: String,
    /// When it last answered with a verified or unchanged document (RFC 3339).
    pub last_success: Option<String>,
    /// The highest serial the site accepted.
    pub serial: Option<u64>,
    /// The ETag sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// The id of the key that signed the running document; null when unsigned.
    pub key_id: Option<String>,
    /// The running document's expiry (RFC 3339).
    pub expires: Option<String>,
    /// Whether it has expired: it keeps running, and no new rollout starts from it.
    pub stale: bool,
}

/// The report outbox: what the site still owes its center and how delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportsStatus {
    /// The receiver (`reports.url`).
    pub url: String,
    /// Reports not yet acknowledged.
    pub depth: u64,
    /// Their size, bytes of JSON.
    pub bytes: u64,
    /// The bound (`reports.outbox_max_bytes`).
    pub max_bytes: u64,
    /// The highest sequence number given out.
    pub last_seq: u64,
    /// The receiver's acknowledged high-water mark.
    pub acked: u64,
    /// Sequence number of the oldest undelivered report.
    #[serde(default)]
    pub oldest_seq: Option<u64>,
    /// When the oldest undelivered report happened (RFC 3339).
    #[serde(default)]
    pub oldest_at: Option<String>,
    /// The last delivery attempt (RFC 3339).
    #[serde(default)]
    pub last_attempt_at: Option<String>,
    /// The last acknowledged delivery (RFC 3339).
    #[serde(default)]
    pub last_success_at: Option<String>,
    /// What the last attempt gave.
    #[serde(default)]
    pub last_result: Option<String>,
    /// Whether the last attempt was acknowledged.
    #[serde(default)]
    pub last_ok: bool,
    /// Reports dropped because the outbox was full, by kind (only measurements are dropped).
    #[serde(default)]
    pub dropped: std::collections::BTreeMap<String, u64>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// `canary` (or `blueGreen`).
    pub strategy: String,
    /// `Healthy`, `Progressing`, `Paused` or `Degraded`.
    pub phase: String,
    /// Why, e.g. `CanaryPauseStep` or `RolloutAborted: …`.
    pub message: String,
    /// `Promoted`, `Aborted`, `Superseded`, or null.
    pub completion: Option<String>,
    /// The stable revision.
    pub stable: Option<RevisionRef>,
    /// The canary revision; null when no canary exists.
    pub canary: Option<RevisionRef>,
    /// The current step; null when no canary exists.
    pub step: Option<StepRef>,
    /// When the current timed pause ends (RFC 3339); null when not in a timed pause.
    #[serde(default)]
    pub pause_ends_at: Option<String>,
    /// Traffic percentages.
    pub weights: Weights,
    /// Every instance.
    pub instances: Vec<Instance>,
    /// Analysis runs, oldest first.
    pub analysis_runs: Vec<AnalysisRun>,
    /// Revisions kept for undo, oldest first.
    #[serde(default)]
    pub revisions: Vec<RevisionRef>,
    /// Recent events, oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Container runtimes: the image the next revision waits for, while it is made present
    /// (its rollout starts only once it is); null otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageStatus>,
}

/// An image being made present on the site before a rollout may start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// The image reference.
    pub image: String,
    /// The version that waits for it.
    pub version: String,
    /// `Checking`, `Pulling`, `Loading`, `Waiting` (for the next attempt) or `Present`.
    pub phase: String,
    /// Bytes fetched or read so far in this attempt.
    pub done_bytes: u64,
    /// Bytes in total, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Failed attempts so far.
    pub failures: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A revision and its version label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRef {
    /// Version label.
    pub version: String,
    /// Revision number.
    pub revision: u64,
}

/// The current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRef {
    /// 0-based index of the current step (== count when all steps are done).
    pub index: usize,
    /// Number of steps.
    pub count: usize,
}

/// Traffic split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Weights {
    /// Percent to stable.
    pub stable: u8,
    /// Percent to canary.
    pub canary: u8,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Unique id.
    pub id: String,
    /// Version label.
    pub version: String,
    /// `stable`, `canary` (or `active`, `preview`), or `old` while being scaled down.
    pub role: String,
    /// Readiness.
    pub ready: bool,
    /// Loopback address.
    pub address: String,
    /// Restarts after the instance died.
    #[serde(default)]
    pub restarts: u32,
    /// Where to read its logs: a file, or the engine's command (`docker logs edgeroll-…`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub logs: String,
}

/// One analysis run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRun {
    /// Run name.
    pub name: String,
    /// Run phase.
    pub phase: String,
    /// Why it ended.
    #[serde(default)]
    pub message: Option<String>,
    /// Its metrics.
    pub metrics: Vec<MetricRun>,
}

/// One metric of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricRun {
    /// Metric name.
    pub name: String,
    /// Metric phase.
    pub phase: String,
    /// Why the metric is in its phase (limits reached, waiting for evidence, …).
    #[serde(default)]
    pub message: Option<String>,
    /// Measurements, oldest first.
    pub measurements: Vec<Measurement>,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// RFC 3339 time.
    pub at: String,
    /// `Successful`, `Failed`, `Inconclusive` or `Error`.
    pub phase: String,
    /// The measured value, e.g. `[0.995]`.
    pub value: Option<String>,
    /// Why (errors, no data).
    #[serde(default)]
    pub message: Option<String>,
    /// What was asked, after argument substitution, e.g. `builtin success_rate{version="2.0.0"}[30s]`.
    #[serde(default)]
    pub query: Option<String>,
}

/// A rollout event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// RFC 3339 time.
    pub at: String,
    /// Short kind, e.g. `RolloutAborted`.
    pub kind: String,
    /// Human message.
    pub message: String,
}

/// `POST /v1/services/{name}/{action}` body (all fields optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRequest {
    /// `promote --full`.
    #[serde(default)]
    pub full: bool,
    /// `undo --to-revision N`.
    #[serde(default)]
    pub to_revision: Option<u64>,
}

/// Answer to an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionResponse {
    /// Whether it was applied.
    pub ok: bool,
    /// What happened, or why it was refused.
    pub message: String,
}

/// The contract's phase names.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Healthy => "Healthy",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Degraded => "Degraded",
    }
}

/// The contract's completion names.
pub fn completion_name(completion: Completion) -> &'static str {
    match completion {
        Completion::Promoted => "Promoted",
        Completion::Aborted => "Aborted",
        Completion::Superseded => "Superseded",
    }
}
