//! The rollout core: one service's canary rollout as a pure state machine.
//!
//! `step(state, event, now) -> (state, effects)` decides everything about a rollout: which
//! revision is stable, which is the canary, the step, the weights, how many instances each revision
//! needs, when analysis runs, and the phase users see. The semantics follow Argo Rollouts' canary
//! strategy (`setWeight`, `pause`, `analysis`, `setCanaryScale`, promote, abort, retry, undo).
//!
//! **Invariants.** This module performs no I/O, reads no clock (`now` is an argument), spawns
//! nothing and cannot fail: an illegal operator action is refused with a reason in the returned
//! effects and leaves the state unchanged. The shell persists the returned state *before* it
//! executes any effect, and effects are idempotent, so after a crash [`resume_effects`] re-derives
//! what must be true of the world from the persisted state alone.

mod blue_green;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{
    AnalysisStep, BackgroundAnalysis, BlueGreenStrategy, CanaryScale, CanaryStep, ServiceSpec,
    Strategy, Template,
};
use crate::time::Timestamp;

/// What an operator asked for (the CLI verbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum OperatorAction {
    /// Skip the current pause or analysis step; with `full`, skip every remaining step.
    Promote {
        /// Promote to 100 % at once.
        full: bool,
    },
    /// Send all traffic back to stable and scale the canary down.
    Abort,
    /// Start an aborted rollout again from the first step.
    Retry,
    /// Roll back to an earlier revision (default: the one before the stable one).
    Undo {
        /// Which revision.
        to_revision: Option<u64>,
    },
    /// Stop progressing until resumed.
    Pause,
    /// Clear a manual pause.
    Resume,
}

impl OperatorAction {
    /// The CLI verb.
    pub fn verb(self) -> &'static str {
        match self {
            OperatorAction::Promote { full: false } => "promote",
            OperatorAction::Promote { full: true } => "promote --full",
            OperatorAction::Abort => "abort",
            OperatorAction::Retry => "retry",
            OperatorAction::Undo { .. } => "undo",
            OperatorAction::Pause => "pause",
            OperatorAction::Resume => "resume",
        }
    }
}

/// Argo's four rollout phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Everything runs the stable revision and is ready.
    Healthy,
    /// Moving towards the desired state.
    Progressing,
    /// Waiting for time to pass or for an operator.
    Paused,
    /// Aborted, or no progress within the deadline.
    Degraded,
}

/// How the last rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Completion {
    /// The canary became stable.
    Promoted,
    /// The canary was aborted; traffic went back to stable.
    Aborted,
    /// A newer desired version replaced the canary before it finished.
    Superseded,
}

/// One revision: a template with a number that only ever grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Revision number (1, 2, …).
    pub number: u64,
    /// What its instances run.
    pub template: Template,
}

/// Where the current canary step stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepProgress {
    /// The canary instances the step needs are starting; the step goes on once they are ready.
    WaitingForInstances {
        /// When the wait began (the progress deadline counts from here).
        since: Timestamp,
    },
    /// In a `pause` step.
    Paused {
        /// When the pause ends; `None` waits for `promote`.
        until: Option<Timestamp>,
    },
    /// An analysis run gates the step.
    Analyzing {
        /// The run.
        run_id: String,
    },
    /// The step's analysis ended Inconclusive or Error: a human decides (`promote` or `abort`).
    AnalysisInconclusive {
        /// The run.
        run_id: String,
        /// What the run said.
        message: String,
    },
    /// The canary was aborted; all traffic is on stable until `retry` or a new version.
    Aborted {
        /// Why.
        reason: String,
    },
    /// Blue-green: the preview's instances are starting.
    PreviewStarting {
        /// When the wait began (the progress deadline counts from here).
        since: Timestamp,
    },
    /// Blue-green: `prePromotionAnalysis` runs against the preview, before any user traffic.
    PrePromotionAnalysis {
        /// The run.
        run_id: String,
    },
    /// Blue-green: the preview is ready; the switch happens at `until`, or on `promote` when
    /// `None` (`autoPromotionEnabled: false`).
    AwaitingPromotion {
        /// When the automatic switch happens.
        until: Option<Timestamp>,
    },
    /// Blue-green: the new version scales to full size before the switch.
    ScalingUpForSwitch {
        /// When the wait began.
        since: Timestamp,
    },
    /// Blue-green: switched; `postPromotionAnalysis` runs while the old version is still warm.
    PostPromotionAnalysis {
        /// The run.
        run_id: String,
    },
}

/// How long an aborted blue-green preview keeps running (`abortScaleDownDelaySeconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KeepWarm {
    /// Scaled down (the canary strategy scales an aborted canary down at once).
    #[default]
    No,
    /// Until this time.
    Until(Timestamp),
    /// Until retried or replaced (`abortScaleDownDelaySeconds: 0`).
    Forever,
}

/// Background analysis of the current canary (`strategy.canary.analysis`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackgroundRun {
    /// The run.
    pub run_id: String,
    /// Where it stands.
    pub state: BackgroundState,
}

/// Where a background analysis run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackgroundState {
    /// Measuring.
    Running,
    /// Ended Successful (every metric had a count); nothing more to do.
    Successful,
    /// Ended Inconclusive or Error: the rollout waits for `promote` (or `abort`).
    Inconclusive {
        /// What the run said.
        message: String,
    },
}

/// An old revision kept running for a while after it stopped receiving traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retiring {
    /// The revision.
    pub revision: u64,
    /// When its instances are stopped.
    pub until: Timestamp,
}

/// The canary in progress (or aborted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// Its revision.
    pub revision: u64,
    /// Index of the current step; equal to the number of steps while the final promotion scales up.
    pub step_index: usize,
    /// Where that step stands.
    pub progress: StepProgress,
    /// Percentage of requests the canary receives.
    pub weight_percent: u8,
    /// Instance count override from `setCanaryScale`; `None` follows the weight.
    pub scale: Option<CanaryScale>,
    /// Background analysis, once started.
    #[serde(default)]
    pub background: Option<BackgroundRun>,
    /// Blue-green: how long an aborted preview keeps running.
    #[serde(default)]
    pub keep_warm: KeepWarm,
    /// Blue-green: `promote --full` asked to skip every remaining analysis.
    #[serde(default)]
    pub full_promotion: bool,
}

/// One service's rollout: the whole persisted state of the core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Service name.
    pub service: String,
    /// The spec in force (replicas, strategy, limits).
    pub spec: ServiceSpec,
    /// The last template the desired document asked for; an `undo` does not change it, so the
    /// same document does not undo the undo.
    pub desired_template: Option<Template>,
    /// Revisions kept: stable, canary, and up to `revisionHistoryLimit` older ones, ascending.
    pub revisions: Vec<Revision>,
    /// The highest revision number ever given out.
    pub last_revision: u64,
    /// The stable revision.
    pub stable: Option<u64>,
    /// The canary (blue-green: the preview), if a rollout is in progress or aborted.
    pub canary: Option<Canary>,
    /// Old revisions still running after the switch (blue-green `scaleDownDelaySeconds`).
    #[serde(default)]
    pub retiring: Vec<Retiring>,
    /// Since when an operator paused the rollout.
    pub manual_pause_since: Option<Timestamp>,
    /// When the stable revision began to wait for its instances (first deploy, scale-up).
    pub stable_waiting_since: Option<Timestamp>,
    /// Ready instances per revision, as last observed.
    pub ready: BTreeMap<u64, u32>,
    /// Counter that makes analysis run ids unique.
    pub analysis_runs_started: u64,
    /// Set when the progress deadline passed without progress.
    pub progress_deadline_exceeded: bool,
    /// Phase users see.
    pub phase: Phase,
    /// Why the phase is what it is.
    pub message: String,
    /// How the last rollout ended.
    pub completion: Option<Completion>,
}

/// Something that happened, fed into [`step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The desired document's spec for this service was loaded or changed.
    DesiredSpecChanged(Box<ServiceSpec>),
    /// The runtime observed how many instances of each revision are ready.
    InstancesObserved {
        /// Ready instance count per revision.
        ready: BTreeMap<u64, u32>,
    },
    /// An analysis run reached a terminal phase.
    AnalysisCompleted {
        /// The run.
        run_id: String,
        /// Its outcome.
        outcome: AnalysisOutcome,
        /// What the run said.
        message: String,
    },
    /// The time from [`next_deadline`] has come.
    DeadlineReached,
    /// An operator asked for something.
    OperatorRequested(OperatorAction),
}

/// The terminal phases of an analysis run, as far as the rollout cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnalysisOutcome {
    /// Go on.
    Successful,
    /// Abort.
    Failed,
    /// No verdict: pause for a human.
    Inconclusive,
    /// The measurements kept erroring: no evidence, so pause for a human rather than abort.
    Error,
}

/// How many instances one revision should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceTarget {
    /// Revision number.
    pub revision: u64,
    /// Its template.
    pub template: Template,
    /// Instance count.
    pub count: u32,
}

/// Where traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// Stable revision.
    pub stable: Option<u64>,
    /// Canary revision, `None` when no canary may receive traffic.
    pub canary: Option<u64>,
    /// Percentage of the main listener's requests to the canary (blue-green: 0 before the switch,
    /// 100 after it).
    pub canary_percent: u8,
    /// Blue-green: the revision the preview listener serves.
    pub preview: Option<u64>,
}

/// What the shell must do; every effect is idempotent.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Run exactly these instances for the service (revisions not listed run none).
    SetInstances(Vec<InstanceTarget>),
    /// Route traffic like this.
    SetWeights(Weights),
    /// Start (or, after a restart, resume) an analysis run for the current step.
    StartAnalysis {
        /// The run.
        run_id: String,
        /// Templates and arguments.
        analysis: AnalysisStep,
    },
    /// Stop an analysis run that no longer gates anything.
    StopAnalysis {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// Record an event in the history and in reports, in the same transaction as the state.
    Record {
        /// Short kind, e.g. `RolloutAborted`.
        kind: String,
        /// Human message.
        message: String,
    },
    /// The answer to an operator action: `Ok(message)` applied, `Err(reason)` refused.
    Reply(Result<String, String>),
}

// === impl Rollout ===

impl Rollout {
    /// A service seen for the first time; nothing runs until its spec is applied with [`step`].
    pub fn new(spec: ServiceSpec) -> Self {
        Rollout {
            service: spec.name.clone(),
            spec,
            desired_template: None,
            revisions: Vec::new(),
            last_revision: 0,
            stable: None,
            canary: None,
            retiring: Vec::new(),
            manual_pause_since: None,
            stable_waiting_since: None,
            ready: BTreeMap::new(),
            analysis_runs_started: 0,
            progress_deadline_exceeded: false,
            phase: Phase::Progressing,
            message: "waiting for the first revision".to_owned(),
            completion: None,
        }
    }

    /// The canary steps of the spec in force.
    pub fn steps(&self) -> &[CanaryStep] {
        match &self.spec.strategy {
            Strategy::Canary(canary) => &canary.steps,
            Strategy::BlueGreen(_) => &[],
        }
    }

    /// The blue-green strategy, if the service uses it.
    pub fn blue_green(&self) -> Option<&BlueGreenStrategy> {
        match &self.spec.strategy {
            Strategy::BlueGreen(blue_green) => Some(blue_green),
            Strategy::Canary(_) => None,
        }
    }

    /// Background analysis of the canary strategy, if configured.
    pub fn background_analysis(&self) -> Option<&BackgroundAnalysis> {
        match &self.spec.strategy {
            Strategy::Canary(canary) => canary.analysis.as_ref(),
            Strategy::BlueGreen(_) => None,
        }
    }

    /// Whether progress is held: by an operator's pause, or by an inconclusive background analysis.
    pub fn is_halted(&self) -> bool {
        self.manual_pause_since.is_some()
            || matches!(
                self.canary,
                Some(Canary {
                    background: Some(BackgroundRun {
                        state: BackgroundState::Inconclusive { .. },
                        ..
                    }),
                    ..
                })
            )
    }

    /// The revision with this number, if it is kept.
    pub fn revision(&self, number: u64) -> Option<&Revision> {
        self.revisions
            .iter()
            .find(|revision| revision.number == number)
    }

    /// The stable revision.
    pub fn stable_revision(&self) -> Option<&Revision> {
        self.stable.and_then(|number| self.revision(number))
    }

    /// The canary revision.
    pub fn canary_revision(&self) -> Option<&Revision> {
        self.canary
            .as_ref()
            .and_then(|canary| self.revision(canary.revision))
    }

    /// Whether the canary was aborted.
    pub fn is_aborted(&self) -> bool {
        matches!(
            self.canary,
            Some(Canary {
                progress: StepProgress::Aborted { .. },
                ..
            })
        )
    }

    /// The instances every revision should run now.
    pub fn instance_targets(&self) -> Vec<InstanceTarget> {
        let mut targets = Vec::new();
        if let Some(stable) = self.stable_revision() {
            targets.push(InstanceTarget {
                revision: stable.number,
                template: stable.template.clone(),
                count: self.spec.replicas,
            });
        }
        if let (Some(canary), Some(revision)) = (&self.canary, self.canary_revision()) {
            targets.push(InstanceTarget {
                revision: revision.number,
                template: revision.template.clone(),
                count: self.canary_instances_needed(canary),
            });
        }
        for retiring in &self.retiring {
            let already = targets
                .iter()
                .any(|target| target.revision == retiring.revision);
            if let (false, Some(revision)) = (already, self.revision(retiring.revision)) {
                targets.push(InstanceTarget {
                    revision: revision.number,
                    template: revision.template.clone(),
                    count: self.spec.replicas,
                });
            }
        }
        targets
    }

    /// Where traffic goes now.
    pub fn weights(&self) -> Weights {
        match &self.canary {
            Some(canary) if !self.is_aborted() => Weights {
                stable: self.stable,
                canary: Some(canary.revision),
                canary_percent: canary.weight_percent,
                preview: self.blue_green().map(|_| canary.revision),
            },
            _ => Weights {
                stable: self.stable,
                canary: None,
                canary_percent: 0,
                preview: None,
            },
        }
    }

    /// How many canary instances the current step needs.
    fn canary_instances_needed(&self, canary: &Canary) -> u32 {
        let replicas = self.spec.replicas;
        if let Some(blue_green) = self.blue_green() {
            let preview = blue_green
                .preview_replica_count
                .unwrap_or(replicas)
                .min(replicas);
            return match &canary.progress {
                StepProgress::Aborted { .. } => match canary.keep_warm {
                    KeepWarm::No => 0,
                    KeepWarm::Until(_) | KeepWarm::Forever => preview,
                },
                StepProgress::PreviewStarting { .. }
                | StepProgress::PrePromotionAnalysis { .. }
                | StepProgress::AwaitingPromotion { .. } => preview,
                StepProgress::AnalysisInconclusive { .. } if canary.weight_percent == 0 => preview,
                _ => replicas,
            };
        }
        if matches!(canary.progress, StepProgress::Aborted { .. }) {
            return 0;
        }
        if canary.step_index >= self.steps().len() {
            return replicas;
        }
        // While a setWeight step waits for its instances, size the canary for the new weight.
        let weight = match self.steps().get(canary.step_index) {
            Some(CanaryStep::SetWeight(weight)) => *weight,
            _ => canary.weight_percent,
        };
        let scale = match self.steps().get(canary.step_index) {
            Some(CanaryStep::SetCanaryScale(scale)) => Some(*scale),
            _ => canary.scale,
        };
        match scale {
            Some(CanaryScale::Replicas(count)) => count,
            Some(CanaryScale::Weight(percent)) => share_of(replicas, percent),
            Some(CanaryScale::MatchTrafficWeight) | None => share_of(replicas, weight),
        }
    }

    fn ready_count(&self, revision: u64) -> u32 {
        self.ready.get(&revision).copied().unwrap_or(0)
    }

    fn next_revision(&mut self, template: Template) -> u64 {
        // A template that ran before gets a new number, as Argo does when it rolls back to an old
        // ReplicaSet: numbers only grow, so "revision N" always means one thing.
        self.revisions
            .retain(|revision| revision.template != template);
        self.last_revision += 1;
        self.revisions.push(Revision {
            number: self.last_revision,
            template,
        });
        self.last_revision
    }

    /// Keep stable, canary and the latest `revisionHistoryLimit` other revisions.
    fn prune_history(&mut self) {
        let mut keep_current = vec![
            self.stable,
            self.canary.as_ref().map(|canary| canary.revision),
        ];
        keep_current.extend(self.retiring.iter().map(|retiring| Some(retiring.revision)));
        let limit = usize::try_from(self.spec.revision_history_limit).unwrap_or(usize::MAX);
        let mut others: Vec<u64> = self
            .revisions
            .iter()
            .map(|revision| revision.number)
            .filter(|number| !keep_current.contains(&Some(*number)))
            .collect();
        others.sort_unstable();
        let drop_count = others.len().saturating_sub(limit);
        let dropped: Vec<u64> = others.into_iter().take(drop_count).collect();
        self.revisions
            .retain(|revision| !dropped.contains(&revision.number));
        // A ready count of a revision that is gone would only confuse later decisions.
        let kept: Vec<u64> = self
            .revisions
            .iter()
            .map(|revision| revision.number)
            .collect();
        self.ready.retain(|number, _| kept.contains(number));
    }
}

/// `ceil(replicas * percent / 100)`: at least one instance for any weight above zero.
fn share_of(replicas: u32, percent: u8) -> u32 {
    let product = u64::from(replicas) * u64::from(percent);
    u32::try_from(product.div_ceil(100)).unwrap_or(u32::MAX)
}

// === the transition function ===

/// Apply `event` at `now`: the new state and what the shell must do, in order.
pub fn step(state: &Rollout, event: Event, now: Timestamp) -> (Rollout, Vec<Effect>) {
    let mut next = state.clone();
    let mut effects = Vec::new();
    let mut transition = Transition {
        state: &mut next,
        effects: &mut effects,
        now,
    };
    transition.apply(event);
    transition.refresh_status();
    // Effects that follow from the new state are derived, not hand-written in each arm, so no
    // transition can forget one.
    let mut derived = Vec::new();
    if next.weights() != state.weights() || next.stable != state.stable {
        derived.push(Effect::SetWeights(next.weights()));
    }
    if next.instance_targets() != state.instance_targets() {
        derived.push(Effect::SetInstances(next.instance_targets()));
    }
    // Traffic moves before instances are stopped, so no request is sent to an instance that is
    // going away; new instances are only routed to once ready, so the order is safe both ways.
    let mut ordered = derived;
    ordered.extend(effects);
    (next, ordered)
}

/// What must be true of the world for `state`, re-issued after the agent restarts.
pub fn resume_effects(state: &Rollout) -> Vec<Effect> {
    let mut effects = vec![
        Effect::SetWeights(state.weights()),
        Effect::SetInstances(state.instance_targets()),
    ];
    let Some(canary) = &state.canary else {
        return effects;
    };
    let step_run = match (&canary.progress, state.blue_green()) {
        (StepProgress::Analyzing { run_id }, None) => match state.steps().get(canary.step_index) {
            Some(CanaryStep::Analysis(analysis)) => Some((run_id, analysis)),
            _ => None,
        },
        (StepProgress::PrePromotionAnalysis { run_id }, Some(blue_green)) => blue_green
            .pre_promotion_analysis
            .as_ref()
            .map(|analysis| (run_id, analysis)),
        (StepProgress::PostPromotionAnalysis { run_id }, Some(blue_green)) => blue_green
            .post_promotion_analysis
            .as_ref()
            .map(|analysis| (run_id, analysis)),
        _ => None,
    };
    if let Some((run_id, analysis)) = step_run {
        effects.push(Effect::StartAnalysis {
            run_id: run_id.clone(),
            analysis: analysis.clone(),
        });
    }
    if let (
        Some(BackgroundRun {
            run_id,
            state: BackgroundState::Running,
        }),
        Some(background),
    ) = (&canary.background, state.background_analysis())
    {
        effects.push(Effect::StartAnalysis {
            run_id: run_id.clone(),
            analysis: background.analysis.clone(),
        });
    }
    effects
}

/// When [`step`] must next be called with [`Event::DeadlineReached`], if ever.
pub fn next_deadline(state: &Rollout) -> Option<Timestamp> {
    let retiring = state.retiring.iter().map(|retiring| retiring.until).min();
    let keep_warm = match &state.canary {
        Some(Canary {
            keep_warm: KeepWarm::Until(until),
            progress: StepProgress::Aborted { .. },
            ..
        }) => Some(*until),
        _ => None,
    };
    let housekeeping = [retiring, keep_warm].into_iter().flatten().min();
    if state.is_halted() {
        return housekeeping;
    }
    let progress_deadline = |since: Timestamp| {
        if state.progress_deadline_exceeded {
            None
        } else {
            Some(since.plus(std::time::Duration::from_secs(u64::from(
                state.spec.progress_deadline_seconds,
            ))))
        }
    };
    let stable_deadline = state.stable_waiting_since.and_then(progress_deadline);
    let canary_deadline = match state.canary.as_ref().map(|canary| &canary.progress) {
        Some(StepProgress::Paused { until } | StepProgress::AwaitingPromotion { until }) => *until,
        Some(
            StepProgress::WaitingForInstances { since }
            | StepProgress::PreviewStarting { since }
            | StepProgress::ScalingUpForSwitch { since },
        ) => progress_deadline(*since),
        _ => None,
    };
    [stable_deadline, canary_deadline, housekeeping]
        .into_iter()
        .flatten()
        .min()
}

/// One application of an event, with the effects it adds.
struct Transition<'a> {
    state: &'a mut Rollout,
    effects: &'a mut Vec<Effect>,
    now: Timestamp,
}

impl Transition<'_> {
    fn record(&mut self, kind: &str, message: String) {
        self.effects.push(Effect::Record {
            kind: kind.to_owned(),
            message,
        });
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::DesiredSpecChanged(spec) => self.desired_spec_changed(*spec),
            Event::InstancesObserved { ready } => {
                self.state.ready = ready;
                self.progress();
            }
            Event::AnalysisCompleted {
                run_id,
                outcome,
                message,
            } => self.analysis_completed(&run_id, outcome, message),
            Event::DeadlineReached => self.deadline_reached(),
            Event::OperatorRequested(action) => {
                let reply = self.operator(action);
                match &reply {
                    Ok(message) => {
                        self.record("OperatorAction", format!("{}: {message}", action.verb()))
                    }
                    Err(reason) => self.record(
                        "OperatorActionRefused",
                        format!("{}: {reason}", action.verb()),
                    ),
                }
                self.effects.push(Effect::Reply(reply));
            }
        }
    }

    fn desired_spec_changed(&mut self, spec: ServiceSpec) {
        let template = spec.template.clone();
        let steps_changed = self.state.spec.strategy != spec.strategy;
        let kind_changed = std::mem::discriminant(&self.state.spec.strategy)
            != std::mem::discriminant(&spec.strategy);
        self.state.spec = spec;
        let canary_template = self
            .state
            .canary_revision()
            .map(|revision| revision.template.clone());
        // Same template as last time (or an operator's undo is in force), or the canary's own
        // template: the rollout goes on; only replicas or the strategy may have changed.
        let same_rollout = self.state.desired_template.as_ref() == Some(&template)
            || canary_template.as_ref() == Some(&template);
        if same_rollout {
            self.state.desired_template = Some(template);
            // A changed blue-green setting applies from the next state on; changed canary steps
            // (or a different strategy) start the current step again.
            let restart = steps_changed && (kind_changed || self.state.blue_green().is_none());
            if self.state.canary.is_some() && !self.state.is_aborted() && restart {
                self.restart_current_step(kind_changed);
            } else {
                self.clamp_step_index();
            }
            self.progress();
            return;
        }
        self.state.desired_template = Some(template.clone());
        let stable_template = self
            .state
            .stable_revision()
            .map(|revision| revision.template.clone());
        if stable_template.as_ref() == Some(&template) {
            if self.state.canary.is_some() {
                self.supersede_canary(format!(
                    "desired version is the stable {} again",
                    template.version
                ));
            }
            self.progress();
        } else if self.state.stable.is_none() {
            let number = self.state.next_revision(template.clone());
            self.state.stable = Some(number);
            self.state.stable_waiting_since = Some(self.now);
            self.record(
                "RevisionDeployed",
                format!(
                    "revision {number} ({}) deployed as the first stable revision",
                    template.version
                ),
            );
            self.progress();
        } else {
            if self.state.canary.is_some() {
                self.supersede_canary(format!("superseded by {}", template.version));
            }
            self.start_canary(template);
        }
    }

    /// The steps changed under a running canary: the current step may no longer exist or be a
    /// different step, so start it again at the same index (the end of a shorter list promotes).
    /// When the strategy's kind changed (canary ↔ blue-green), the rollout starts over under
    /// the new one, with no traffic on the new version.
    fn restart_current_step(&mut self, kind_changed: bool) {
        self.stop_running_analysis("the strategy changed");
        self.stop_background_analysis("the strategy changed");
        self.clamp_step_index();
        if let Some(canary) = &mut self.state.canary {
            canary.progress = StepProgress::WaitingForInstances { since: self.now };
            canary.background = None;
            if kind_changed {
                canary.step_index = 0;
                canary.weight_percent = 0;
                canary.scale = None;
                canary.full_promotion = false;
            }
        }
        if self.state.blue_green().is_some() {
            self.start_preview();
        } else {
            self.enter_step();
        }
    }

    fn clamp_step_index(&mut self) {
        let steps = self.state.steps().len();
        if let Some(canary) = &mut self.state.canary {
            canary.step_index = canary.step_index.min(steps);
        }
    }

    fn supersede_canary(&mut self, why: String) {
        self.stop_running_analysis("the canary was superseded");
        self.stop_background_analysis("the canary was superseded");
        if let Some(revision) = self.state.canary_revision().map(|revision| revision.number) {
            self.record(
                "RolloutSuperseded",
                format!("canary revision {revision}: {why}"),
            );
        }
        self.state.canary = None;
        self.state.manual_pause_since = None;
        self.state.progress_deadline_exceeded = false;
        self.state.completion = Some(Completion::Superseded);
        self.state.prune_history();
    }

    fn start_canary(&mut self, template: Template) {
        let version = template.version.clone();
        let number = self.state.next_revision(template);
        self.state.canary = Some(Canary {
            revision: number,
            step_index: 0,
            progress: StepProgress::WaitingForInstances { since: self.now },
            weight_percent: 0,
            scale: None,
            background: None,
            keep_warm: KeepWarm::No,
            full_promotion: false,
        });
        self.state.completion = None;
        self.state.manual_pause_since = None;
        self.state.progress_deadline_exceeded = false;
        if self.state.blue_green().is_some() {
            self.record(
                "RolloutStarted",
                format!("blue-green revision {number} ({version}) started as the preview"),
            );
            self.start_preview();
        } else {
            self.record(
                "RolloutStarted",
                format!(
                    "canary revision {number} ({version}) started with {} steps",
                    self.state.steps().len()
                ),
            );
            self.enter_step();
        }
        self.state.prune_history();
    }

    fn next_run_id(&mut self, revision: u64, what: &str) -> String {
        self.state.analysis_runs_started += 1;
        format!(
            "{}-r{revision}-{what}-{}",
            self.state.service, self.state.analysis_runs_started
        )
    }

    /// Start background analysis once the canary has reached its `startingStep`.
    fn maybe_start_background(&mut self) {
        let Some(background) = self.state.background_analysis().cloned() else {
            return;
        };
        let Some(canary) = &self.state.canary else {
            return;
        };
        if canary.background.is_some()
            || canary.step_index < background.starting_step
            || matches!(canary.progress, StepProgress::Aborted { .. })
        {
            return;
        }
        let run_id = self.next_run_id(canary.revision, "bg");
        if let Some(canary) = &mut self.state.canary {
            canary.background = Some(BackgroundRun {
                run_id: run_id.clone(),
                state: BackgroundState::Running,
            });
        }
        self.record(
            "BackgroundAnalysisStarted",
            format!("background analysis {run_id} runs until the rollout ends"),
        );
        self.effects.push(Effect::StartAnalysis {
            run_id,
            analysis: background.analysis,
        });
    }

    fn stop_background_analysis(&mut self, reason: &str) {
        if let Some(Canary {
            background:
                Some(BackgroundRun {
                    run_id,
                    state: BackgroundState::Running,
                }),
            ..
        }) = &self.state.canary
        {
            self.effects.push(Effect::StopAnalysis {
                run_id: run_id.clone(),
                reason: reason.to_owned(),
            });
        }
        if let Some(Canary {
            background: Some(background),
            ..
        }) = &mut self.state.canary
        {
            background.state = BackgroundState::Successful;
        }
    }

    /// Start the step at the current index, and go on through every step that completes at once.
    fn enter_step(&mut self) {
        loop {
            let Some(canary) = &self.state.canary else {
                return;
            };
            let index = canary.step_index;
            let revision = canary.revision;
            let Some(step) = self.state.steps().get(index).cloned() else {
                self.enter_full_promotion();
                return;
            };
            let progress = match step {
                CanaryStep::SetWeight(_) | CanaryStep::SetCanaryScale(_) => {
                    StepProgress::WaitingForInstances { since: self.now }
                }
                CanaryStep::Pause { duration } => StepProgress::Paused {
                    until: duration.map(|duration| self.now.plus(duration)),
                },
                CanaryStep::Analysis(analysis) => {
                    let run_id = self.next_run_id(revision, &format!("s{index}"));
                    self.effects.push(Effect::StartAnalysis {
                        run_id: run_id.clone(),
                        analysis,
                    });
                    StepProgress::Analyzing { run_id }
                }
            };
            if let Some(canary) = &mut self.state.canary {
                canary.progress = progress;
            }
            self.maybe_start_background();
            if !self.try_complete_waiting_step() {
                return;
            }
        }
    }

    /// If the current step waits for instances and they are ready, apply it and move the index on.
    /// Returns whether the index moved.
    fn try_complete_waiting_step(&mut self) -> bool {
        let Some(canary) = &self.state.canary else {
            return false;
        };
        if !matches!(canary.progress, StepProgress::WaitingForInstances { .. }) {
            return false;
        }
        if canary.step_index >= self.state.steps().len() {
            return false;
        }
        let needed = self.state.canary_instances_needed(canary);
        if self.state.ready_count(canary.revision) < needed {
            return false;
        }
        let step = self.state.steps().get(canary.step_index).cloned();
        let Some(canary) = &mut self.state.canary else {
            return false;
        };
        let index = canary.step_index;
        match step {
            Some(CanaryStep::SetWeight(weight)) => {
                canary.weight_percent = weight;
                let message = format!("step {}: canary weight {weight}%", index + 1);
                self.state.progress_deadline_exceeded = false;
                self.advance_index();
                self.record("WeightChanged", message);
            }
            Some(CanaryStep::SetCanaryScale(scale)) => {
                canary.scale = match scale {
                    CanaryScale::MatchTrafficWeight => None,
                    other => Some(other),
                };
                self.state.progress_deadline_exceeded = false;
                self.advance_index();
            }
            _ => return false,
        }
        true
    }

    fn advance_index(&mut self) {
        if let Some(canary) = &mut self.state.canary {
            canary.step_index += 1;
            canary.progress = StepProgress::WaitingForInstances { since: self.now };
        }
    }

    fn enter_full_promotion(&mut self) {
        let steps = self.state.steps().len();
        let Some(canary) = &mut self.state.canary else {
            return;
        };
        canary.step_index = steps;
        canary.progress = StepProgress::WaitingForInstances { since: self.now };
        self.try_finish_promotion();
    }

    /// The last step is done: once the canary runs at full scale it becomes stable.
    fn try_finish_promotion(&mut self) {
        let Some(canary) = &self.state.canary else {
            return;
        };
        if canary.step_index < self.state.steps().len()
            || !matches!(canary.progress, StepProgress::WaitingForInstances { .. })
        {
            return;
        }
        if self.state.ready_count(canary.revision) < self.state.spec.replicas {
            return;
        }
        self.stop_background_analysis("the rollout was promoted");
        self.complete_promotion(None);
    }

    /// The canary (or preview) becomes stable. `keep_previous_for` keeps the old stable running
    /// for a while (blue-green `scaleDownDelaySeconds`).
    fn complete_promotion(&mut self, keep_previous_for: Option<std::time::Duration>) {
        let Some(canary) = &self.state.canary else {
            return;
        };
        let revision = canary.revision;
        let previous = self.state.stable;
        if let (Some(previous), Some(delay)) = (previous, keep_previous_for) {
            self.state.retiring.push(Retiring {
                revision: previous,
                until: self.now.plus(delay),
            });
        }
        self.state.stable = Some(revision);
        self.state.canary = None;
        self.state.stable_waiting_since = None;
        self.state.manual_pause_since = None;
        self.state.progress_deadline_exceeded = false;
        self.state.completion = Some(Completion::Promoted);
        let version = self
            .state
            .stable_revision()
            .map(|revision| revision.template.version.clone())
            .unwrap_or_default();
        let previous_text = previous.map_or(String::new(), |number| {
            format!(", replacing revision {number}")
        });
        self.record(
            "RolloutPromoted",
            format!("revision {revision} ({version}) is stable{previous_text}"),
        );
        self.state.prune_history();
    }

    /// Re-check everything that waits on observations.
    fn progress(&mut self) {
        if self.state.stable_waiting_since.is_some() {
            if let Some(stable) = self.state.stable {
                if self.state.ready_count(stable) >= self.state.spec.replicas {
                    self.state.stable_waiting_since = None;
                    if self.state.canary.is_none() {
                        self.state.progress_deadline_exceeded = false;
                    }
                }
            }
        } else if let Some(stable) = self.state.stable {
            // Scaling the stable revision up (more replicas) is progress to wait for, too.
            if self.state.ready_count(stable) < self.state.spec.replicas
                && self.state.canary.is_none()
            {
                self.state.stable_waiting_since = Some(self.now);
            }
        }
        if self.state.is_halted() {
            return;
        }
        if self.state.blue_green().is_some() {
            self.blue_green_progress();
        } else if self.try_complete_waiting_step() {
            self.enter_step();
        } else {
            self.try_finish_promotion();
        }
    }

    fn analysis_completed(&mut self, run_id: &str, outcome: AnalysisOutcome, message: String) {
        let Some(canary) = &self.state.canary else {
            return;
        };
        if let Some(BackgroundRun {
            run_id: background,
            state: BackgroundState::Running,
        }) = &canary.background
        {
            if background == run_id {
                self.background_completed(run_id, outcome, message);
                return;
            }
        }
        let current = match &canary.progress {
            StepProgress::Analyzing { run_id: current }
            | StepProgress::PrePromotionAnalysis { run_id: current }
            | StepProgress::PostPromotionAnalysis { run_id: current } => current.clone(),
            // A run that no longer gates anything (superseded, promoted past, aborted) is history.
            _ => return,
        };
        if current != run_id {
            return;
        }
        if self.state.blue_green().is_some() && outcome == AnalysisOutcome::Successful {
            self.record(
                "AnalysisSuccessful",
                format!("analysis run {run_id} succeeded"),
            );
            self.blue_green_analysis_succeeded();
            return;
        }
        match outcome {
            AnalysisOutcome::Successful => {
                self.record(
                    "AnalysisSuccessful",
                    format!("analysis run {run_id} succeeded"),
                );
                self.advance_index();
                self.enter_step();
            }
            AnalysisOutcome::Failed => {
                self.record(
                    "AnalysisFailed",
                    format!("analysis run {run_id} failed: {message}"),
                );
                self.abort(format!("analysis run {run_id} failed: {message}"));
            }
            AnalysisOutcome::Inconclusive | AnalysisOutcome::Error => {
                let kind = if outcome == AnalysisOutcome::Error {
                    "AnalysisError"
                } else {
                    "AnalysisInconclusive"
                };
                self.record(
                    kind,
                    format!("analysis run {run_id}: {message}; waiting for promote or abort"),
                );
                if let Some(canary) = &mut self.state.canary {
                    canary.progress = StepProgress::AnalysisInconclusive {
                        run_id: run_id.to_owned(),
                        message,
                    };
                }
            }
        }
    }

    fn background_completed(&mut self, run_id: &str, outcome: AnalysisOutcome, message: String) {
        let state = match outcome {
            AnalysisOutcome::Successful => {
                self.record(
                    "AnalysisSuccessful",
                    format!("background analysis {run_id} succeeded"),
                );
                BackgroundState::Successful
            }
            AnalysisOutcome::Failed => {
                self.record(
                    "AnalysisFailed",
                    format!("background analysis {run_id} failed: {message}"),
                );
                if let Some(Canary {
                    background: Some(background),
                    ..
                }) = &mut self.state.canary
                {
                    background.state = BackgroundState::Successful;
                }
                self.abort(format!("background analysis {run_id} failed: {message}"));
                return;
            }
            AnalysisOutcome::Inconclusive | AnalysisOutcome::Error => {
                self.record(
                    "AnalysisInconclusive",
                    format!(
                        "background analysis {run_id}: {message}; waiting for promote or abort"
                    ),
                );
                BackgroundState::Inconclusive { message }
            }
        };
        if let Some(Canary {
            background: Some(background),
            ..
        }) = &mut self.state.canary
        {
            background.state = state;
        }
    }

    fn deadline_reached(&mut self) {
        let now = self.now;
        let expired: Vec<u64> = self
            .state
            .retiring
            .iter()
            .filter(|retiring| retiring.until <= now)
            .map(|retiring| retiring.revision)
            .collect();
        for revision in expired {
            self.state
                .retiring
                .retain(|retiring| retiring.revision != revision);
            self.record(
                "ScaledDown",
                format!("revision {revision} scaled down after the scale-down delay"),
            );
        }
        if let Some(canary) = &mut self.state.canary {
            if matches!(canary.keep_warm, KeepWarm::Until(until) if until <= now) {
                canary.keep_warm = KeepWarm::No;
            }
        }
        if self.state.is_halted() {
            return;
        }
        let deadline =
            std::time::Duration::from_secs(u64::from(self.state.spec.progress_deadline_seconds));
        if let Some(since) = self.state.stable_waiting_since {
            if now >= since.plus(deadline) && !self.state.progress_deadline_exceeded {
                self.state.progress_deadline_exceeded = true;
                self.record(
                    "ProgressDeadlineExceeded",
                    format!("stable instances not ready within {}s", deadline.as_secs()),
                );
            }
        }
        let Some(canary) = &self.state.canary else {
            return;
        };
        match canary.progress.clone() {
            StepProgress::AwaitingPromotion { until: Some(until) } if now >= until => {
                self.record(
                    "AutoPromotion",
                    "autoPromotionSeconds elapsed: switching".to_owned(),
                );
                self.begin_switch();
            }
            StepProgress::PreviewStarting { since }
            | StepProgress::ScalingUpForSwitch { since }
                if now >= since.plus(deadline) && !self.state.progress_deadline_exceeded =>
            {
                self.state.progress_deadline_exceeded = true;
                let message = format!("new instances not ready within {}s", deadline.as_secs());
                self.record("ProgressDeadlineExceeded", message.clone());
                if self.state.spec.progress_deadline_abort {
                    self.abort(format!("ProgressDeadlineExceeded: {message}"));
                }
            }
            StepProgress::Paused { until: Some(until) } if now >= until => {
                let index = canary.step_index;
                self.record("PauseEnded", format!("step {}: pause ended", index + 1));
                self.advance_index();
                self.enter_step();
            }
            StepProgress::WaitingForInstances { since }
                if now >= since.plus(deadline) && !self.state.progress_deadline_exceeded =>
            {
                self.state.progress_deadline_exceeded = true;
                let message = format!("canary instances not ready within {}s", deadline.as_secs());
                self.record("ProgressDeadlineExceeded", message.clone());
                if self.state.spec.progress_deadline_abort {
                    self.abort(format!("ProgressDeadlineExceeded: {message}"));
                }
            }
            _ => {}
        }
    }

    /// Stop the analysis that gates the current step (not the background analysis).
    fn stop_running_analysis(&mut self, reason: &str) {
        if let Some(Canary {
            progress:
                StepProgress::Analyzing { run_id }
                | StepProgress::PrePromotionAnalysis { run_id }
                | StepProgress::PostPromotionAnalysis { run_id },
            ..
        }) = &self.state.canary
        {
            self.effects.push(Effect::StopAnalysis {
                run_id: run_id.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    fn abort(&mut self, reason: String) {
        self.stop_running_analysis("the rollout was aborted");
        self.stop_background_analysis("the rollout was aborted");
        let keep_warm = match self.state.blue_green() {
            None => KeepWarm::No,
            Some(blue_green) if blue_green.abort_scale_down_delay_seconds == 0 => KeepWarm::Forever,
            Some(blue_green) => KeepWarm::Until(self.now.plus(std::time::Duration::from_secs(
                u64::from(blue_green.abort_scale_down_delay_seconds),
            ))),
        };
        let Some(canary) = &mut self.state.canary else {
            return;
        };
        canary.progress = StepProgress::Aborted {
            reason: reason.clone(),
        };
        canary.weight_percent = 0;
        canary.scale = None;
        canary.keep_warm = keep_warm;
        let revision = canary.revision;
        self.state.manual_pause_since = None;
        self.state.completion = Some(Completion::Aborted);
        self.record(
            "RolloutAborted",
            format!("Rollout aborted update to revision {revision}: {reason}"),
        );
    }

    /// An operator action: `Ok(what happened)` or `Err(why not)`; a refusal changes nothing.
    fn operator(&mut self, action: OperatorAction) -> Result<String, String> {
        match action {
            OperatorAction::Promote { full } => self.promote(full),
            OperatorAction::Abort => {
                self.require_active_canary()?;
                self.abort("aborted by an operator".to_owned());
                Ok("aborted: all traffic is back on stable".to_owned())
            }
            OperatorAction::Retry => {
                let Some(canary) = &mut self.state.canary else {
                    return Err("nothing to retry: no canary exists".to_owned());
                };
                if !matches!(canary.progress, StepProgress::Aborted { .. }) {
                    return Err("nothing to retry: the rollout is not aborted".to_owned());
                }
                canary.step_index = 0;
                canary.weight_percent = 0;
                canary.scale = None;
                canary.background = None;
                canary.keep_warm = KeepWarm::No;
                canary.full_promotion = false;
                canary.progress = StepProgress::WaitingForInstances { since: self.now };
                self.state.completion = None;
                self.state.progress_deadline_exceeded = false;
                if self.state.blue_green().is_some() {
                    self.start_preview();
                    return Ok("retrying: the preview starts again".to_owned());
                }
                self.enter_step();
                Ok("retrying the rollout from the first step".to_owned())
            }
            OperatorAction::Undo { to_revision } => self.undo(to_revision),
            OperatorAction::Pause => {
                self.require_active_canary()?;
                if self.state.manual_pause_since.is_some() {
                    return Err("already paused".to_owned());
                }
                self.state.manual_pause_since = Some(self.now);
                Ok("paused".to_owned())
            }
            OperatorAction::Resume => {
                let Some(since) = self.state.manual_pause_since else {
                    return Err("not paused: nothing to resume".to_owned());
                };
                self.state.manual_pause_since = None;
                // Time spent paused by hand does not count against a timed pause or the deadline.
                let paused_for = self.now.since(since);
                if let Some(canary) = &mut self.state.canary {
                    match &mut canary.progress {
                        StepProgress::Paused { until: Some(until) }
                        | StepProgress::AwaitingPromotion { until: Some(until) } => {
                            *until = until.plus(paused_for)
                        }
                        StepProgress::WaitingForInstances { since }
                        | StepProgress::PreviewStarting { since }
                        | StepProgress::ScalingUpForSwitch { since } => {
                            *since = since.plus(paused_for)
                        }
                        _ => {}
                    }
                }
                self.progress();
                self.deadline_reached();
                Ok("resumed".to_owned())
            }
        }
    }

    fn require_active_canary(&self) -> Result<(), String> {
        match &self.state.canary {
            None => Err("no rollout in progress".to_owned()),
            Some(Canary {
                progress: StepProgress::Aborted { .. },
                ..
            }) => Err("the rollout is already aborted (use retry, or undo)".to_owned()),
            Some(_) => Ok(()),
        }
    }

    fn promote(&mut self, full: bool) -> Result<String, String> {
        self.require_active_canary()?;
        if self.state.blue_green().is_some() {
            return self.promote_blue_green(full);
        }
        if let Some(Canary {
            background:
                Some(BackgroundRun {
                    state: background @ BackgroundState::Inconclusive { .. },
                    ..
                }),
            ..
        }) = &mut self.state.canary
        {
            // Argo: promoting past an inconclusive analysis is the human's verdict "go on".
            *background = BackgroundState::Successful;
            self.state.manual_pause_since = None;
            self.progress();
            return Ok("background analysis was inconclusive: continuing as asked".to_owned());
        }
        let steps = self.state.steps().len();
        let Some(canary) = &self.state.canary else {
            return Err("no rollout in progress".to_owned());
        };
        if canary.step_index >= steps {
            return Err(
                "already promoting: waiting for the canary to run at full scale".to_owned(),
            );
        }
        let index = canary.step_index;
        self.state.manual_pause_since = None;
        self.stop_running_analysis("skipped by promote");
        if full {
            self.enter_full_promotion();
            return Ok("promoting fully: skipping every remaining step".to_owned());
        }
        // Skipping a setWeight/setCanaryScale step still applies it, as Argo does: promote means
        // "this step is done", not "pretend it never existed".
        match self.state.steps().get(index).cloned() {
            Some(CanaryStep::SetWeight(weight)) => {
                if let Some(canary) = &mut self.state.canary {
                    canary.weight_percent = weight;
                }
            }
            Some(CanaryStep::SetCanaryScale(scale)) => {
                if let Some(canary) = &mut self.state.canary {
                    canary.scale = match scale {
                        CanaryScale::MatchTrafficWeight => None,
                        other => Some(other),
                    };
                }
            }
            _ => {}
        }
        self.advance_index();
        self.enter_step();
        Ok(format!("promoted past step {} of {steps}", index + 1))
    }

    fn undo(&mut self, to_revision: Option<u64>) -> Result<String, String> {
        let stable = self
            .state
            .stable
            .ok_or("nothing to undo: no stable revision")?;
        let canary_revision = self.state.canary.as_ref().map(|canary| canary.revision);
        let target = match to_revision {
            Some(number) => number,
            // As Argo: "the previous revision" is the stable one while a canary runs (an instant
            // rollback), else the newest revision older than the stable one.
            None if canary_revision.is_some() => stable,
            None => self
                .state
                .revisions
                .iter()
                .map(|revision| revision.number)
                .filter(|number| *number < stable)
                .max()
                .ok_or("nothing to undo: no earlier revision is kept")?,
        };
        let template = self
            .state
            .revision(target)
            .map(|revision| revision.template.clone())
            .ok_or_else(|| {
                let kept: Vec<String> = self
                    .state
                    .revisions
                    .iter()
                    .map(|r| r.number.to_string())
                    .collect();
                format!("revision {target} is not kept (kept: {})", kept.join(", "))
            })?;
        if Some(target) == canary_revision {
            return Err(format!("revision {target} is the canary already"));
        }
        if target == stable {
            if self.state.canary.is_none() {
                return Err(format!("revision {target} is already stable"));
            }
            // Rolling back to stable is immediate: no steps, no analysis.
            self.supersede_canary(format!("undo to the stable revision {target}"));
            return Ok(format!("rolled back to the stable revision {target}"));
        }
        if self.state.canary.is_some() {
            self.supersede_canary(format!("undo to revision {target}"));
        }
        let version = template.version.clone();
        self.start_canary(template);
        Ok(format!(
            "rolling back to revision {target} ({version}) as a new canary"
        ))
    }

    /// Derive phase and message from the state, so they can never disagree with it.
    fn refresh_status(&mut self) {
        let state = &*self.state;
        let (phase, message) = match &state.canary {
            None => match state.stable {
                None => (
                    Phase::Progressing,
                    "waiting for the first revision".to_owned(),
                ),
                Some(stable) if state.ready_count(stable) < state.spec.replicas => {
                    let ready = state.ready_count(stable);
                    if state.progress_deadline_exceeded {
                        (
                            Phase::Degraded,
                            format!(
                                "ProgressDeadlineExceeded: stable instances {ready}/{} ready",
                                state.spec.replicas
                            ),
                        )
                    } else {
                        (
                            Phase::Progressing,
                            format!(
                                "waiting for stable instances: {ready}/{} ready",
                                state.spec.replicas
                            ),
                        )
                    }
                }
                Some(_) => (Phase::Healthy, String::new()),
            },
            Some(canary) => match &canary.progress {
                StepProgress::Aborted { reason } => (
                    Phase::Degraded,
                    format!(
                        "RolloutAborted: Rollout aborted update to revision {}: {reason}",
                        canary.revision
                    ),
                ),
                _ if state.manual_pause_since.is_some() => {
                    (Phase::Paused, "manually paused".to_owned())
                }
                _ if state.is_halted() => {
                    let message = match &canary.background {
                        Some(BackgroundRun {
                            state: BackgroundState::Inconclusive { message },
                            ..
                        }) => message.clone(),
                        _ => String::new(),
                    };
                    (Phase::Paused, format!("InconclusiveAnalysisRun: {message}"))
                }
                StepProgress::PreviewStarting { .. } | StepProgress::ScalingUpForSwitch { .. }
                    if state.progress_deadline_exceeded =>
                {
                    (
                        Phase::Degraded,
                        format!(
                            "ProgressDeadlineExceeded: new instances {}/{} ready",
                            state.ready_count(canary.revision),
                            state.canary_instances_needed(canary)
                        ),
                    )
                }
                StepProgress::PreviewStarting { .. }
                | StepProgress::PrePromotionAnalysis { .. }
                | StepProgress::AwaitingPromotion { .. }
                | StepProgress::ScalingUpForSwitch { .. }
                | StepProgress::PostPromotionAnalysis { .. } => blue_green::describe(
                    canary,
                    state.ready_count(canary.revision),
                    state.canary_instances_needed(canary),
                    state.spec.replicas,
                )
                .unwrap_or((Phase::Progressing, String::new())),
                StepProgress::Paused { .. } => (Phase::Paused, "CanaryPauseStep".to_owned()),
                StepProgress::AnalysisInconclusive { message, .. } => {
                    (Phase::Paused, format!("InconclusiveAnalysisRun: {message}"))
                }
                StepProgress::WaitingForInstances { .. } if state.progress_deadline_exceeded => (
                    Phase::Degraded,
                    format!(
                        "ProgressDeadlineExceeded: canary instances {}/{} ready",
                        state.ready_count(canary.revision),
                        state.canary_instances_needed(canary)
                    ),
                ),
                StepProgress::WaitingForInstances { .. } => (
                    Phase::Progressing,
                    format!(
                        "waiting for canary instances: {}/{} ready",
                        state.ready_count(canary.revision),
                        state.canary_instances_needed(canary)
                    ),
                ),
                StepProgress::Analyzing { run_id } => {
                    (Phase::Progressing, format!("running analysis {run_id}"))
                }
            },
        };
        self.state.phase = phase;
        self.state.message = message;
    }
}

/// Check the invariants that must hold for every reachable state; `Err` names the broken one.
pub fn check_invariants(state: &Rollout) -> Result<(), String> {
    let kept = |number: u64| state.revision(number).is_some();
    if let Some(stable) = state.stable {
        if !kept(stable) {
            return Err(format!("stable revision {stable} is not kept"));
        }
    }
    if let Some(canary) = &state.canary {
        if !kept(canary.revision) {
            return Err(format!("canary revision {} is not kept", canary.revision));
        }
        if Some(canary.revision) == state.stable {
            return Err("canary and stable are the same revision".to_owned());
        }
        if state.stable.is_none() {
            return Err("a canary without a stable revision".to_owned());
        }
        if canary.weight_percent > 100 {
            return Err(format!("weight {} above 100", canary.weight_percent));
        }
        if canary.step_index > state.steps().len() {
            return Err("step index past the end".to_owned());
        }
        let step = state.steps().get(canary.step_index);
        if state.blue_green().is_some() {
            if !matches!(canary.weight_percent, 0 | 100) {
                return Err(format!("blue-green weight {}", canary.weight_percent));
            }
            if matches!(
                canary.progress,
                StepProgress::WaitingForInstances { .. }
                    | StepProgress::Paused { .. }
                    | StepProgress::Analyzing { .. }
            ) {
                return Err("a canary step in a blue-green rollout".to_owned());
            }
        } else if matches!(
            canary.progress,
            StepProgress::PreviewStarting { .. }
                | StepProgress::PrePromotionAnalysis { .. }
                | StepProgress::AwaitingPromotion { .. }
                | StepProgress::ScalingUpForSwitch { .. }
                | StepProgress::PostPromotionAnalysis { .. }
        ) {
            return Err("a blue-green state in a canary rollout".to_owned());
        }
        match &canary.progress {
            StepProgress::Aborted { .. } => {
                if canary.weight_percent != 0 || state.weights().canary_percent != 0 {
                    return Err("an aborted canary receives traffic".to_owned());
                }
                if state.completion != Some(Completion::Aborted) {
                    return Err("aborted without completion Aborted".to_owned());
                }
            }
            StepProgress::Paused { .. } if !matches!(step, Some(CanaryStep::Pause { .. })) => {
                return Err("paused outside a pause step".to_owned());
            }
            StepProgress::Analyzing { .. } | StepProgress::AnalysisInconclusive { .. }
                if state.blue_green().is_none()
                    && !matches!(step, Some(CanaryStep::Analysis(_))) =>
            {
                return Err("analysing outside an analysis step".to_owned());
            }
            _ => {}
        }
    } else if state.manual_pause_since.is_some() {
        return Err("manually paused without a rollout".to_owned());
    }
    if state.completion == Some(Completion::Aborted)
        && !state.is_aborted()
        && state.canary.is_none()
    {
        // After an abort the canary stays (Degraded) until retry or a new version.
        return Err("completion Aborted without an aborted canary".to_owned());
    }
    let numbers: Vec<u64> = state
        .revisions
        .iter()
        .map(|revision| revision.number)
        .collect();
    if numbers.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(format!("revisions not ascending: {numbers:?}"));
    }
    let limit = usize::try_from(state.spec.revision_history_limit).unwrap_or(usize::MAX);
    if state.revisions.len() > limit + 2 + state.retiring.len() {
        return Err(format!(
            "{} revisions kept, limit {limit}",
            state.revisions.len()
        ));
    }
    let total: u32 = state
        .instance_targets()
        .iter()
        .map(|target| target.count)
        .sum();
    if state.stable.is_some() && total < state.spec.replicas {
        return Err("fewer instances than replicas".to_owned());
    }
    Ok(())
}
