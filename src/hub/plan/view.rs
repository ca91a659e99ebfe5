//! What a plan looks like from outside: the JSON of `GET /v1/plans` and `edgeroll hub get -o
//! json`, and what the fleet page and `hub get` render.
//!
//! Owns these shapes only. It is pure data: the plan engine fills it, the page, the CLI and the
//! HTTP API read it, and none of them decides anything from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A plan's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanPhase {
    /// Not started: the message says why (it selects no site the hub knows, its file is
    /// invalid).
    Pending,
    /// A wave is rolling (or baking).
    Progressing,
    /// Waiting at a manual gate (`pause = {}`) or paused by `hub pause`.
    Paused,
    /// Every wave completed.
    Completed,
    /// `maxAborted` was crossed: nothing further is published until a human decides.
    Stopped,
    /// Rolled back by `hub abort`: the started waves were given the previous revision.
    Aborted,
}

/// A wave's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WavePhase {
    /// Not started: its members still have what they had before the plan.
    Pending,
    /// Waiting for `hub promote` (its manual gate) or a timed gate.
    Gated,
    /// Its document is published; not yet `minHealthy` of its reachable members.
    Progressing,
    /// `minHealthy` is met; waiting out `bake`.
    Baking,
    /// Done: it stayed healthy for `bake` (or was promoted by hand).
    Completed,
    /// `maxAborted` was crossed in this wave.
    Stopped,
    /// Given the previous revision back by `hub abort`.
    RolledBack,
}

/// Where a member site stands in its wave, judged against what its wave was last given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Reports Healthy on the wave's serial (or later) and the release's versions, after it.
    Healthy,
    /// Follows the wave's serial but is not (yet) Healthy on the release.
    Progressing,
    /// Aborted, Degraded, or refused the wave's document: it needs a human.
    Aborted,
    /// Not heard from for `unknownAfter` (or never): not counted as reachable.
    Unknown,
    /// Reachable, but still reports an older serial (it has not taken the wave's document yet).
    Stale,
}

/// A count per member state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateCounts {
    /// Healthy on the new serial and revision.
    pub healthy: u64,
    /// On the new serial, not yet healthy.
    pub progressing: u64,
    /// Aborted, Degraded or refused.
    pub aborted: u64,
    /// Not heard from for `unknownAfter`.
    pub unknown: u64,
    /// Reachable, still on an older serial.
    pub stale: u64,
}

/// One member site of a wave that blocks or breaks it (everything but Healthy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// The site's name.
    pub site: String,
    /// Its state in the wave.
    pub state: MemberState,
    /// Why, in words (e.g. `telemetry-ingest: RolloutAborted: analysis failed`, `last seen
    /// 14m ago`, `follows serial 30, the wave's is 31`).
    pub reason: String,
    /// When the hub last heard from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveView {
    /// The wave's name.
    pub name: String,
    /// Its label selector (empty: every site not in an earlier wave).
    pub selector: BTreeMap<String, String>,
    /// Its phase.
    pub phase: WavePhase,
    /// The serial of the document its members were last given (none before it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Its members (sites that this wave selects first): every one, reachable or not.
    pub members: u64,
    /// Members heard from within `unknownAfter`.
    pub reachable: u64,
    /// Members per state.
    pub counts: StateCounts,
    /// Healthy members it needs to complete, out of the reachable ones (from `minHealthy`).
    pub needed: u64,
    /// Aborted members that stop the plan (from `maxAborted`): the plan stops above this.
    pub max_aborted: u64,
    /// How long the wave must stay healthy, in seconds.
    pub bake_seconds: u64,
    /// Since when it has met `minHealthy`, while it bakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Timestamp>,
    /// When its document was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// The members that block or break it (not Healthy), worst first, at most 50.
    pub sites: Vec<MemberView>,
}

/// Something that happened to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEvent {
    /// When, on the hub's clock.
    pub at: Timestamp,
    /// The kind: `WaveStarted`, `WaveHealthy`, `WaveCompleted`, `PlanStopped`, `PlanPaused`,
    /// `PlanResumed`, `GatePromoted`, `PlanAborted`, `PlanCompleted`.
    pub kind: String,
    /// In words, with the figures.
    pub message: String,
}

/// One plan, as `GET /v1/plans/{name}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    /// The plan's name.
    pub name: String,
    /// The plan file.
    pub file: String,
    /// Its phase.
    pub phase: PlanPhase,
    /// What it waits for or why it stopped, in words.
    pub message: String,
    /// The release it rolls out: service name → version.
    pub release: BTreeMap<String, String>,
    /// The index of the wave it is at (the one rolling, baking or gated).
    pub current_wave: usize,
    /// Every wave, in order.
    pub waves: Vec<WaveView>,
    /// The last events, oldest first (at most 100).
    pub events: Vec<PlanEvent>,
}
