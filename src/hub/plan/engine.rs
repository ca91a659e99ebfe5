//! The rule that moves a plan: which wave runs, when the next starts, when the plan stops, and
//! what each member site counts as.
//!
//! Pure: no I/O and no clock (`now` is passed in). The plan task hands it what the hub knows
//! of every site and commits the [`PlanState`] it returns before publishing the documents
//! [`documents`] derives from it, so a crash at any instant leaves a state that was either
//! never served or fully recorded.
//!
//! The rules, which are the point of the whole feature:
//! - a member of a wave is the site the wave selects *first* (earlier waves win);
//! - a member counts as Healthy only when every service of the release reports `Healthy` on the
//!   wave's serial or a later one, with the release's version stable and no canary: an earlier
//!   Healthy never counts;
//! - a member not heard from for `unknownAfter` is Unknown (even if its last word was Healthy)
//!   and is left out of the reachable members that `minHealthy` and `maxAborted` are shares of
//!   (an abort on the new serial is a fact, so an aborted member is never Unknown);
//! - a wave completes when it has met `minHealthy` (at least one healthy member, when it has
//!   members) for `bake` without a break; it stops the plan when its aborted members exceed
//!   `maxAborted`, and a stopped plan publishes nothing further.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::spec::{Gate, PlanSpec, WaveSpec};
use super::view::{
    MemberState, MemberView, PlanEvent, PlanPhase, PlanView, StateCounts, WavePhase, WaveView,
};
use crate::hub::summary::SiteSummary;
use crate::time::Timestamp;

/// The most events a plan keeps.
pub const MAX_EVENTS: usize = 100;
/// The most blocking members a wave's view lists.
pub const MAX_LISTED: usize = 50;

/// Which document a started wave was last given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The plan's release.
    Release,
    /// The plan's previous document (after `hub abort`).
    Previous,
}

/// The state of one wave, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveState {
    /// Its phase.
    pub phase: WavePhase,
    /// The serial of the document its members were last given.
    #[serde(default)]
    pub serial: Option<u64>,
    /// Which document that was.
    pub target: Target,
    /// A human released its gate (`hub promote`).
    #[serde(default)]
    pub gate_released: bool,
    /// When its document was published.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// Since when it has met `minHealthy` without a break.
    #[serde(default)]
    pub healthy_since: Option<Timestamp>,
    /// When it completed.
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
}

/// The state of one run of a plan, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanState {
    /// Whether `hub pause` holds it.
    pub paused: bool,
    /// `maxAborted` was crossed.
    pub stopped: bool,
    /// `hub abort` rolled it back.
    pub aborted: bool,
    /// The wave it is at.
    pub current: usize,
    /// Every wave.
    pub waves: Vec<WaveState>,
    /// The last events.
    pub events: Vec<PlanEvent>,
    /// When the run began.
    pub started_at: Timestamp,
}

impl PlanState {
    /// A new run of `spec` at `now`: every wave pending.
    pub fn new(spec: &PlanSpec, now: Timestamp) -> PlanState {
        PlanState {
            paused: false,
            stopped: false,
            aborted: false,
            current: 0,
            waves: spec
                .waves
                .iter()
                .map(|_| WaveState {
                    phase: WavePhase::Pending,
                    serial: None,
                    target: Target::Release,
                    gate_released: false,
                    started_at: None,
                    healthy_since: None,
                    completed_at: None,
                })
                .collect(),
            events: Vec::new(),
            started_at: now,
        }
    }

    /// Whether every wave completed.
    pub fn completed(&self) -> bool {
        self.current >= self.waves.len() && !self.aborted && !self.stopped
    }

    /// Whether nothing more will happen without a new plan file: completed or rolled back.
    pub fn finished(&self) -> bool {
        self.aborted || self.completed()
    }

    /// The highest serial this run has published.
    pub fn highest_serial(&self) -> Option<u64> {
        self.waves.iter().filter_map(|wave| wave.serial).max()
    }

    fn record(&mut self, at: Timestamp, kind: &str, message: String) {
        self.events.push(PlanEvent {
            at,
            kind: kind.to_owned(),
            message,
        });
        if self.events.len() > MAX_EVENTS {
            let excess = self.events.len() - MAX_EVENTS;
            self.events.drain(..excess);
        }
    }
}

/// What the hub knows of one site.
#[derive(Debug, Clone, Copy)]
pub struct SiteFacts<'a> {
    /// Its summary (labels, services, last document).
    pub summary: &'a SiteSummary,
    /// When it was last heard from (a poll or a report), on the hub's clock.
    pub last_heard: Option<Timestamp>,
}

/// A plan's wave documents: what each started wave's members are served.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveDocument {
    /// The wave's name.
    pub wave: String,
    /// Its serial.
    pub serial: u64,
    /// Its selector (the wave's).
    pub selector: BTreeMap<String, String>,
    /// The document, as JSON: the release (or previous) with this serial and selector.
    pub body: Vec<u8>,
}

/// The documents `state` publishes: one per started wave.
pub fn documents(spec: &PlanSpec, state: &PlanState) -> Vec<WaveDocument> {
    spec.waves
        .iter()
        .zip(&state.waves)
        .filter_map(|(wave, wave_state)| {
            let serial = wave_state.serial?;
            let source = match wave_state.target {
                Target::Release => &spec.release.json,
                Target::Previous => &spec.previous.as_ref()?.json,
            };
            let mut json = source.clone();
            if let serde_json::Value::Object(map) = &mut json {
                map.insert("serial".to_owned(), serde_json::Value::from(serial));
                map.insert(
                    "selector".to_owned(),
                    serde_json::Value::Object(
                        wave.selector
                            .iter()
                            .map(|(key, value)| {
                                (key.clone(), serde_json::Value::from(value.clone()))
                            })
                            .collect(),
                    ),
                );
            }
            let mut body = serde_json::to_vec_pretty(&json).ok()?;
            body.push(b'\n');
            Some(WaveDocument {
                wave: wave.name.clone(),
                serial,
                selector: wave.selector.clone(),
                body,
            })
        })
        .collect()
}

/// An operator's action on a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Release the gate of the wave the plan waits at, or complete the running wave now.
    Promote,
    /// Give every started wave the previous document back, under a new serial.
    Abort,
    /// Start no new wave until `Resume`.
    Pause,
    /// Clear `Pause`.
    Resume,
}

impl Action {
    /// The verb, as the CLI spells it.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Abort => "abort",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    /// The action named `verb`.
    pub fn from_verb(verb: &str) -> Option<Action> {
        [
            Action::Promote,
            Action::Abort,
            Action::Pause,
            Action::Resume,
        ]
        .into_iter()
        .find(|action| action.verb() == verb)
    }
}

/// Apply `action` to `state` at `now`; `next_serial` is the lowest serial not yet served by
/// anyone (abort publishes from it). Returns the message for the operator, or why it was refused.
pub fn act(
    spec: &PlanSpec,
    state: &mut PlanState,
    action: Action,
    now: Timestamp,
    next_serial: u64,
) -> Result<String, String> {
    let name = &spec.name;
    if state.aborted {
        return Err(format!("plan {name} was rolled back already"));
    }
    match action {
        Action::Pause => {
            if state.completed() {
                return Err(format!("plan {name} has completed"));
            }
            if state.paused {
                return Ok(format!("plan {name} is paused already"));
            }
            state.paused = true;
            state.record(
                now,
                "PlanPaused",
                "paused by an operator: no new wave starts".to_owned(),
            );
            Ok(format!(
                "plan {name} paused: no new wave starts until `edgeroll hub resume {name}`"
            ))
        }
        Action::Resume => {
            if !state.paused {
                return Ok(format!("plan {name} is not paused"));
            }
            state.paused = false;
            state.record(now, "PlanResumed", "resumed by an operator".to_owned());
            Ok(format!("plan {name} resumed"))
        }
        Action::Promote => {
            if state.completed() {
                return Err(format!("plan {name} has completed"));
            }
            if state.stopped {
                return Err(format!(
                    "plan {name} stopped because too many sites aborted; roll it back with `edgeroll hub abort {name}`"
                ));
            }
            if state.paused {
                return Err(format!(
                    "plan {name} is paused; `edgeroll hub resume {name}` first"
                ));
            }
            let index = state.current;
            let wave_name = &spec.waves[index].name;
            let wave = &mut state.waves[index];
            match wave.phase {
                WavePhase::Pending | WavePhase::Gated => {
                    wave.gate_released = true;
                    state.record(
                        now,
                        "GatePromoted",
                        format!("the gate of wave {wave_name} was released by an operator"),
                    );
                    Ok(format!("plan {name}: wave {wave_name} starts"))
                }
                WavePhase::Progressing | WavePhase::Baking => {
                    wave.phase = WavePhase::Completed;
                    wave.completed_at = Some(now);
                    state.current += 1;
                    state.record(
                        now,
                        "WaveCompleted",
                        format!("wave {wave_name} was promoted by an operator"),
                    );
                    Ok(format!(
                        "plan {name}: wave {wave_name} promoted; the next wave starts"
                    ))
                }
                _ => Err(format!(
                    "plan {name}: wave {wave_name} cannot be promoted now"
                )),
            }
        }
        Action::Abort => {
            if spec.previous.is_none() {
                return Err(format!(
                    "plan {name} names no `previous` document to roll back to; add one to {} or publish a document by hand",
                    spec.file.display()
                ));
            }
            let mut serial = next_serial;
            let mut rolled = Vec::new();
            for (wave, wave_state) in spec.waves.iter().zip(state.waves.iter_mut()) {
                if wave_state.serial.is_some() {
                    wave_state.serial = Some(serial);
                    wave_state.target = Target::Previous;
                    wave_state.phase = WavePhase::RolledBack;
                    wave_state.healthy_since = None;
                    rolled.push(format!("{} (serial {serial})", wave.name));
                    serial += 1;
                }
            }
            state.aborted = true;
            let message = if rolled.is_empty() {
                "rolled back before any wave started: nothing to publish".to_owned()
            } else {
                format!(
                    "rolled back by an operator: {} get the previous revision",
                    rolled.join(", ")
                )
            };
            state.record(now, "PlanAborted", message.clone());
            Ok(format!("plan {name}: {message}"))
        }
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Whether the state changed (it must be committed, and the documents published).
    pub changed: bool,
    /// What the plan looks like now.
    pub view: PlanView,
}

/// One member's state, and why.
fn classify(
    wave: &WaveSpec,
    wave_state: &WaveState,
    versions: &BTreeMap<String, String>,
    site: &SiteFacts<'_>,
    published: &BTreeSet<u64>,
    now: Timestamp,
) -> (MemberState, String) {
    let summary = site.summary;
    let Some(serial) = wave_state.serial else {
        return (MemberState::Stale, "its wave has not started".to_owned());
    };
    if let Some(document) = &summary.last_document {
        let about_this = document.serial.is_none_or(|refused| refused >= serial)
            && summary.serial.is_none_or(|held| held < serial);
        if document.outcome == "refused" && about_this {
            return (
                MemberState::Aborted,
                format!(
                    "refused the document ({}): {}",
                    document.rule.as_deref().unwrap_or("refused"),
                    document.message
                ),
            );
        }
    }
    let mut follows = false;
    let mut healthy = true;
    let mut waiting = Vec::new();
    for (service, version) in versions {
        let Some(state) = summary.services.get(service) else {
            healthy = false;
            waiting.push(format!("{service}: not reported yet"));
            continue;
        };
        let on_new = state
            .serial
            .is_some_and(|held| held >= serial && published.contains(&held));
        if let Some(held) = state.serial.filter(|held| !published.contains(held)) {
            waiting.push(format!(
                "{service}: claims serial {held}, which this hub never published"
            ));
        }
        follows |= on_new;
        if on_new && (state.completion.as_deref() == Some("Aborted") || state.phase == "Degraded") {
            return (
                MemberState::Aborted,
                format!("{service}: {}: {}", state.last_event, state.message),
            );
        }
        let on_version = state
            .stable
            .as_ref()
            .is_some_and(|stable| &stable.version == version);
        if !(on_new && state.phase == "Healthy" && on_version && state.canary.is_none()) {
            healthy = false;
            if on_new {
                waiting.push(format!("{service}: {} ({})", state.phase, state.last_event));
            }
        }
    }
    let silent = site
        .last_heard
        .is_none_or(|heard| now.since(heard) >= wave.unknown_after);
    // A silent site is Unknown even if it was Healthy: a wave bakes on sites it still hears.
    if silent {
        let reason = match site.last_heard {
            Some(heard) => format!("not heard from for {}", human(now.since(heard))),
            None => "never heard from".to_owned(),
        };
        return (MemberState::Unknown, reason);
    }
    if healthy {
        return (MemberState::Healthy, String::new());
    }
    if follows {
        return (MemberState::Progressing, waiting.join("; "));
    }
    if !waiting.is_empty() {
        return (MemberState::Stale, waiting.join("; "));
    }
    let held = summary.serial.map_or_else(
        || "no serial yet".to_owned(),
        |held| format!("serial {held}"),
    );
    (
        MemberState::Stale,
        format!("follows {held}, the wave's is {serial}"),
    )
}

/// A duration for people: `14m`, `2h 5m`, `40s`.
pub fn human(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..=119 => format!("{seconds}s"),
        120..=7199 => format!("{}m", seconds / 60),
        _ => format!("{}h {}m", seconds / 3600, seconds / 60 % 60),
    }
}

struct Tally {
    members: u64,
    counts: StateCounts,
    listed: Vec<MemberView>,
}

impl Tally {
    fn reachable(&self) -> u64 {
        self.members - self.counts.unknown
    }
}

fn tally_waves(
    spec: &PlanSpec,
    state: &PlanState,
    sites: &[SiteFacts<'_>],
    published: &BTreeSet<u64>,
    now: Timestamp,
) -> Vec<Tally> {
    let mut tallies: Vec<Tally> = spec
        .waves
        .iter()
        .map(|_| Tally {
            members: 0,
            counts: StateCounts::default(),
            listed: Vec::new(),
        })
        .collect();
    for site in sites {
        let summary = site.summary;
        let Some(index) = spec.wave_of(&summary.site, &summary.labels) else {
            continue;
        };
        let wave = &spec.waves[index];
        let wave_state = &state.waves[index];
        let tally = &mut tallies[index];
        tally.members += 1;
        let versions = match wave_state.target {
            Target::Release => &spec.release.versions,
            Target::Previous => spec
                .previous
                .as_ref()
                .map_or(&spec.release.versions, |previous| &previous.versions),
        };
        let (member, reason) = if wave_state.serial.is_none() {
            let silent = site
                .last_heard
                .is_none_or(|heard| now.since(heard) >= wave.unknown_after);
            if silent {
                (MemberState::Unknown, String::new())
            } else {
                (MemberState::Stale, String::new())
            }
        } else {
            classify(wave, wave_state, versions, site, published, now)
        };
        let count = match member {
            MemberState::Healthy => &mut tally.counts.healthy,
            MemberState::Progressing => &mut tally.counts.progressing,
            MemberState::Aborted => &mut tally.counts.aborted,
            MemberState::Unknown => &mut tally.counts.unknown,
            MemberState::Stale => &mut tally.counts.stale,
        };
        *count += 1;
        if member != MemberState::Healthy && wave_state.serial.is_some() {
            tally.listed.push(MemberView {
                site: summary.site.clone(),
                state: member,
                reason,
                last_seen: site.last_heard,
            });
        }
    }
    for tally in &mut tallies {
        // Worst first: aborted, then progressing, unknown, stale; by name within a state.
        let rank = |state: MemberState| match state {
            MemberState::Aborted => 0,
            MemberState::Progressing => 1,
            MemberState::Unknown => 2,
            MemberState::Stale => 3,
            MemberState::Healthy => 4,
        };
        tally.listed.sort_by(|left, right| {
            rank(left.state)
                .cmp(&rank(right.state))
                .then_with(|| left.site.cmp(&right.site))
        });
        tally.listed.truncate(MAX_LISTED);
    }
    tallies
}

/// Healthy members wave `wave` needs of `tally`: its `minHealthy` of the reachable ones, and
/// at least one when it has members (a wave of sleepers proves nothing).
fn needed(wave: &WaveSpec, tally: &Tally) -> u64 {
    let share = wave
        .min_healthy
        .of_ceil(tally.reachable())
        .min(tally.members);
    if tally.members > 0 {
        share.max(1)
    } else {
        0
    }
}

/// Evaluate `state` at `now` against what the hub knows of `sites`, moving it by the rules;
/// `published` holds every serial the hub ever served (a site's claim of another is not
/// believed), and `next_serial` is the lowest serial not yet served by anyone (a new wave is
/// published from it).
pub fn evaluate(
    spec: &PlanSpec,
    state: &mut PlanState,
    sites: &[SiteFacts<'_>],
    published: &BTreeSet<u64>,
    now: Timestamp,
    next_serial: u64,
) -> Evaluation {
    let before = state.clone();
    let mut next_serial = next_serial;
    // Each pass may complete a wave and start the next: at most one pass per wave, plus one.
    for _ in 0..=spec.waves.len() {
        let tallies = tally_waves(spec, state, sites, published, now);
        if !step(spec, state, &tallies, now, &mut next_serial) {
            break;
        }
    }
    let tallies = tally_waves(spec, state, sites, published, now);
    let view = view(spec, state, &tallies);
    Evaluation {
        changed: *state != before,
        view,
    }
}

/// One move of the plan; returns whether it moved.
fn step(
    spec: &PlanSpec,
    state: &mut PlanState,
    tallies: &[Tally],
    now: Timestamp,
    next_serial: &mut u64,
) -> bool {
    if state.aborted || state.stopped {
        return false;
    }
    // Any started wave (earlier ones too: a pilot site can abort late) crossing maxAborted
    // stops the plan.
    for (index, (wave, tally)) in spec.waves.iter().zip(tallies).enumerate() {
        if state.waves[index].serial.is_none() {
            continue;
        }
        let limit = wave.max_aborted.of_floor(tally.reachable());
        if tally.counts.aborted > limit {
            state.stopped = true;
            state.waves[index].phase = WavePhase::Stopped;
            state.waves[index].healthy_since = None;
            state.record(
                now,
                "PlanStopped",
                format!(
                    "wave {}: {} of {} reachable sites aborted, more than maxAborted {} allows ({limit}); nothing further is published",
                    wave.name,
                    tally.counts.aborted,
                    tally.reachable(),
                    wave.max_aborted
                ),
            );
            return true;
        }
    }
    let index = state.current;
    let Some(wave) = spec.waves.get(index) else {
        return false;
    };
    let tally = &tallies[index];
    let previous_completed = index
        .checked_sub(1)
        .and_then(|previous| state.waves[previous].completed_at)
        .unwrap_or(state.started_at);
    let wave_state = &mut state.waves[index];
    match wave_state.phase {
        WavePhase::Pending | WavePhase::Gated => {
            if state.paused {
                return false;
            }
            let gate_open = wave_state.gate_released
                || match wave.pause {
                    None => true,
                    Some(Gate::Manual) => false,
                    Some(Gate::For(duration)) => now.since(previous_completed) >= duration,
                };
            if !gate_open {
                if wave_state.phase == WavePhase::Pending {
                    wave_state.phase = WavePhase::Gated;
                    let message = match wave.pause {
                        Some(Gate::For(duration)) => {
                            format!("wave {} waits {} at its gate", wave.name, human(duration))
                        }
                        _ => format!(
                            "wave {} waits at its gate: `edgeroll hub promote {}`",
                            wave.name, spec.name
                        ),
                    };
                    state.record(now, "WaveGated", message);
                    return true;
                }
                return false;
            }
            let serial = *next_serial;
            *next_serial += 1;
            wave_state.phase = WavePhase::Progressing;
            wave_state.serial = Some(serial);
            wave_state.started_at = Some(now);
            let message = format!(
                "wave {} started: serial {serial} for {} members ({} reachable)",
                wave.name,
                tally.members,
                tally.reachable()
            );
            state.record(now, "WaveStarted", message);
            true
        }
        WavePhase::Progressing | WavePhase::Baking => {
            let needed = needed(wave, tally);
            let healthy = tally.counts.healthy >= needed;
            if !healthy {
                if wave_state.phase == WavePhase::Baking {
                    wave_state.phase = WavePhase::Progressing;
                    wave_state.healthy_since = None;
                    let message = format!(
                        "wave {}: {} of {} reachable healthy, fewer than the {needed} needed; the bake starts again when it recovers",
                        wave.name,
                        tally.counts.healthy,
                        tally.reachable()
                    );
                    state.record(now, "WaveUnhealthy", message);
                    return true;
                }
                return false;
            }
            let Some(since) = wave_state.healthy_since else {
                wave_state.phase = WavePhase::Baking;
                wave_state.healthy_since = Some(now);
                let message = format!(
                    "wave {}: {} of {} reachable healthy ({} unknown, not counted); baking {}",
                    wave.name,
                    tally.counts.healthy,
                    tally.reachable(),
                    tally.counts.unknown,
                    human(wave.bake)
                );
                state.record(now, "WaveHealthy", message);
                return true;
            };
            if state.paused || now.since(since) < wave.bake {
                return false;
            }
            wave_state.phase = WavePhase::Completed;
            wave_state.completed_at = Some(now);
            state.current += 1;
            let message = format!(
                "wave {} completed: {} of {} reachable healthy for {} ({} unknown)",
                wave.name,
                tally.counts.healthy,
                tally.reachable(),
                human(wave.bake),
                tally.counts.unknown
            );
            state.record(now, "WaveCompleted", message);
            if state.current >= spec.waves.len() {
                state.record(now, "PlanCompleted", "every wave completed".to_owned());
            }
            true
        }
        _ => false,
    }
}

fn view(spec: &PlanSpec, state: &PlanState, tallies: &[Tally]) -> PlanView {
    let waves: Vec<WaveView> = spec
        .waves
        .iter()
        .zip(&state.waves)
        .zip(tallies)
        .map(|((wave, wave_state), tally)| WaveView {
            name: wave.name.clone(),
            selector: wave.selector.clone(),
            phase: wave_state.phase,
            serial: wave_state.serial,
            members: tally.members,
            reachable: tally.reachable(),
            counts: tally.counts.clone(),
            needed: needed(wave, tally),
            max_aborted: wave.max_aborted.of_floor(tally.reachable()),
            bake_seconds: wave.bake.as_secs(),
            healthy_since: wave_state.healthy_since,
            started_at: wave_state.started_at,
            completed_at: wave_state.completed_at,
            sites: tally.listed.clone(),
        })
        .collect();
    let (phase, message) = phase_and_message(spec, state, &waves);
    PlanView {
        name: spec.name.clone(),
        file: spec.file.display().to_string(),
        phase,
        message,
        release: spec.release.versions.clone(),
        current_wave: state.current.min(spec.waves.len().saturating_sub(1)),
        waves,
        events: state.events.clone(),
    }
}

fn phase_and_message(
    spec: &PlanSpec,
    state: &PlanState,
    waves: &[WaveView],
) -> (PlanPhase, String) {
    if state.aborted {
        return (
            PlanPhase::Aborted,
            "rolled back: the started waves were given the previous revision".to_owned(),
        );
    }
    if state.stopped {
        let wave = waves.iter().find(|wave| wave.phase == WavePhase::Stopped);
        let message = wave.map_or_else(String::new, |wave| {
            format!(
                "stopped in wave {}: {} aborted of {} reachable (maxAborted allows {}); roll back with `edgeroll hub abort {}`",
                wave.name, wave.counts.aborted, wave.reachable, wave.max_aborted, spec.name
            )
        });
        return (PlanPhase::Stopped, message);
    }
    if state.completed() {
        return (PlanPhase::Completed, "every wave completed".to_owned());
    }
    let Some(wave) = waves.get(state.current) else {
        return (PlanPhase::Completed, String::new());
    };
    if state.paused {
        return (
            PlanPhase::Paused,
            format!(
                "paused by an operator at wave {}: `edgeroll hub resume {}`",
                wave.name, spec.name
            ),
        );
    }
    match wave.phase {
        WavePhase::Gated => (PlanPhase::Paused, format!("wave {} waits at its gate: `edgeroll hub promote {}`", wave.name, spec.name)),
        WavePhase::Baking => (
            PlanPhase::Progressing,
            format!("wave {}: {} of {} reachable healthy, baking {}", wave.name, wave.counts.healthy, wave.reachable, human(std::time::Duration::from_secs(wave.bake_seconds))),
        ),
        _ => (
            PlanPhase::Progressing,
            format!(
                "wave {}: {} of {} reachable healthy, {} needed ({} progressing, {} stale, {} unknown)",
                wave.name, wave.counts.healthy, wave.reachable, wave.needed, wave.counts.progressing, wave.counts.stale, wave.counts.unknown
            ),
        ),
    }
}
