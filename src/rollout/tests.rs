//! Scenario tables for the rollout core: events in, states and effects out.
//!
//! Each scenario is a list of `(seconds, event)`; `check` renders every state and effect as text
//! and compares it with an `expect!` snapshot (`UPDATE_EXPECT=1 cargo test` rewrites them).
//! Time is just a number here, so a ten-minute pause costs nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use expect_test::{expect, Expect};
use proptest::prelude::{
    any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
};
use proptest::strategy::Strategy as Generator;

use super::*;
use crate::spec::{CanaryStrategy, Readiness, Traffic};

fn template(version: &str) -> Template {
    Template {
        version: version.to_owned(),
        command: vec!["app".to_owned(), "--port".to_owned(), "{port}".to_owned()],
        env: BTreeMap::new(),
        readiness: Readiness::Tcp,
        args: Vec::new(),
        stop_signal: None,
        container: None,
    }
}

fn spec_with(version: &str, replicas: u32, steps: Vec<CanaryStep>) -> ServiceSpec {
    ServiceSpec {
        name: "web".to_owned(),
        replicas,
        revision_history_limit: 2,
        progress_deadline_seconds: 600,
        progress_deadline_abort: false,
        traffic: Traffic::Http {
            listen: "127.0.0.1:8080".to_owned(),
        },
        template: template(version),
        strategy: crate::spec::Strategy::Canary(CanaryStrategy {
            steps,
            analysis: None,
        }),
    }
}

fn pause(seconds: Option<u64>) -> CanaryStep {
    CanaryStep::Pause {
        duration: seconds.map(Duration::from_secs),
    }
}

fn analysis(template: &str) -> CanaryStep {
    CanaryStep::Analysis(AnalysisStep {
        templates: vec![template.to_owned()],
        args: BTreeMap::new(),
    })
}

fn standard_steps() -> Vec<CanaryStep> {
    vec![
        CanaryStep::SetWeight(20),
        pause(Some(30)),
        analysis("success-rate"),
        CanaryStep::SetWeight(60),
        pause(None),
    ]
}

fn ready(pairs: &[(u64, u32)]) -> Event {
    Event::InstancesObserved {
        ready: pairs.iter().copied().collect(),
    }
}

fn desired(version: &str, replicas: u32, steps: Vec<CanaryStep>) -> Event {
    Event::DesiredSpecChanged(Box::new(spec_with(version, replicas, steps)))
}

fn op(action: OperatorAction) -> Event {
    Event::OperatorRequested(action)
}

fn analysis_done(run_id: &str, outcome: AnalysisOutcome) -> Event {
    Event::AnalysisCompleted {
        run_id: run_id.to_owned(),
        outcome,
        message: "metric \"success-rate\" assessed".to_owned(),
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::DesiredSpecChanged(spec) => {
            format!("desired {} x{}", spec.template.version, spec.replicas)
        }
        Event::InstancesObserved { ready } => {
            let parts: Vec<String> = ready.iter().map(|(rev, n)| format!("r{rev}={n}")).collect();
            format!("ready {}", parts.join(" "))
        }
        Event::AnalysisCompleted {
            run_id, outcome, ..
        } => format!("analysis {run_id} {outcome:?}"),
        Event::DeadlineReached => "deadline".to_owned(),
        Event::OperatorRequested(action) => format!("operator {}", action.verb()),
    }
}

fn describe_state(state: &Rollout) -> String {
    let canary = match &state.canary {
        None => "-".to_owned(),
        Some(canary) => {
            let progress = match &canary.progress {
                StepProgress::WaitingForInstances { .. } => "waiting".to_owned(),
                StepProgress::Paused { until: None } => "paused".to_owned(),
                StepProgress::Paused { until: Some(until) } => {
                    format!("paused until {}s", until.as_millis() / 1000)
                }
                StepProgress::Analyzing { run_id } => format!("analyzing {run_id}"),
                StepProgress::AnalysisInconclusive { .. } => "inconclusive".to_owned(),
                StepProgress::Aborted { .. } => "aborted".to_owned(),
                StepProgress::PreviewStarting { .. } => "preview starting".to_owned(),
                StepProgress::PrePromotionAnalysis { run_id } => format!("pre-analysis {run_id}"),
                StepProgress::AwaitingPromotion { until: None } => "awaiting promotion".to_owned(),
                StepProgress::AwaitingPromotion { until: Some(until) } => {
                    format!("awaiting promotion until {}s", until.as_millis() / 1000)
                }
                StepProgress::ScalingUpForSwitch { .. } => "scaling up for the switch".to_owned(),
                StepProgress::PostPromotionAnalysis { run_id } => format!("post-analysis {run_id}"),
            };
            format!("r{} step {} {progress}", canary.revision, canary.step_index)
        }
    };
    let revisions: Vec<String> = state
        .revisions
        .iter()
        .map(|r| r.number.to_string())
        .collect();
    format!(
        "{:?} {:?} | stable {} canary {} w{} | kept [{}] | completion {:?}",
        state.phase,
        state.message,
        state.stable.map_or("-".to_owned(), |n| format!("r{n}")),
        canary,
        state.weights().canary_percent,
        revisions.join(","),
        state.completion,
    )
}

fn describe_effect(effect: &Effect) -> String {
    match effect {
        Effect::SetInstances(targets) => {
            let parts: Vec<String> = targets
                .iter()
                .map(|t| format!("r{}x{}", t.revision, t.count))
                .collect();
            format!("instances {}", parts.join(" "))
        }
        Effect::SetWeights(weights) => format!(
            "weights stable {} canary {} {}%",
            weights.stable.map_or("-".to_owned(), |n| format!("r{n}")),
            weights.canary.map_or("-".to_owned(), |n| format!("r{n}")),
            weights.canary_percent
        ),
        Effect::StartAnalysis { run_id, .. } => format!("start analysis {run_id}"),
        Effect::StopAnalysis { run_id, reason } => format!("stop analysis {run_id} ({reason})"),
        Effect::Record { kind, message } => format!("record {kind}: {message}"),
        Effect::Reply(Ok(message)) => format!("reply ok: {message}"),
        Effect::Reply(Err(reason)) => format!("reply refused: {reason}"),
    }
}

/// Run `script` from an empty rollout and compare the whole trace with `expected`.
fn check(script: Vec<(u64, Event)>, expected: Expect) {
    let first_spec = match &script[0].1 {
        Event::DesiredSpecChanged(spec) => (**spec).clone(),
        _ => spec_with("1.0.0", 1, vec![]),
    };
    let mut state = Rollout::new(first_spec);
    let mut trace = String::new();
    for (seconds, event) in script {
        let now = Timestamp::from_millis(seconds * 1000);
        let _ = writeln!(trace, "t={seconds}s {}", describe_event(&event));
        let (next, effects) = step(&state, event, now);
        if let Err(broken) = check_invariants(&next) {
            panic!("invariant broken after t={seconds}s: {broken}\n{trace}");
        }
        for effect in &effects {
            let _ = writeln!(trace, "  {}", describe_effect(effect));
        }
        let deadline = next_deadline(&next).map_or(String::new(), |t| {
            format!(" | next {}s", t.as_millis() / 1000)
        });
        let _ = writeln!(trace, "  = {}{deadline}", describe_state(&next));
        state = next;
    }
    expected.assert_eq(&trace);
}

#[test]
fn first_revision_becomes_stable_without_steps() {
    check(
        vec![
            (0, desired("1.0.0", 2, standard_steps())),
            (3, ready(&[(1, 1)])),
            (4, ready(&[(1, 2)])),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x2
              weights stable r1 canary - 0%
              instances r1x2
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/2 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=3s ready r1=1
              = Progressing "waiting for stable instances: 1/2 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=4s ready r1=2
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
        "#]],
    );
}

#[test]
fn canary_walks_every_step_and_is_promoted() {
    check(
        vec![
            (0, desired("1.0.0", 2, standard_steps())),
            (1, ready(&[(1, 2)])),
            (10, desired("2.0.0", 2, standard_steps())),
            (12, ready(&[(1, 2), (2, 1)])),
            (42, Event::DeadlineReached),
            (
                50,
                analysis_done("web-r2-s2-1", AnalysisOutcome::Successful),
            ),
            (52, ready(&[(1, 2), (2, 2)])),
            (600, op(OperatorAction::Promote { full: false })),
            (601, ready(&[(1, 0), (2, 2)])),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x2
              weights stable r1 canary - 0%
              instances r1x2
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/2 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=2
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x2
              weights stable r1 canary r2 0%
              instances r1x2 r2x1
              record RolloutStarted: canary revision 2 (2.0.0) started with 5 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 610s
            t=12s ready r1=2 r2=1
              weights stable r1 canary r2 20%
              record WeightChanged: step 1: canary weight 20%
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 1 paused until 42s w20 | kept [1,2] | completion None | next 42s
            t=42s deadline
              record PauseEnded: step 2: pause ended
              start analysis web-r2-s2-1
              = Progressing "running analysis web-r2-s2-1" | stable r1 canary r2 step 2 analyzing web-r2-s2-1 w20 | kept [1,2] | completion None
            t=50s analysis web-r2-s2-1 Successful
              instances r1x2 r2x2
              record AnalysisSuccessful: analysis run web-r2-s2-1 succeeded
              = Progressing "waiting for canary instances: 1/2 ready" | stable r1 canary r2 step 3 waiting w20 | kept [1,2] | completion None | next 650s
            t=52s ready r1=2 r2=2
              weights stable r1 canary r2 60%
              record WeightChanged: step 4: canary weight 60%
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 4 paused w60 | kept [1,2] | completion None
            t=600s operator promote
              weights stable r2 canary - 0%
              instances r2x2
              record RolloutPromoted: revision 2 (2.0.0) is stable, replacing revision 1
              record OperatorAction: promote: promoted past step 5 of 5
              reply ok: promoted past step 5 of 5
              = Healthy "" | stable r2 canary - w0 | kept [1,2] | completion Some(Promoted)
            t=601s ready r1=0 r2=2
              = Healthy "" | stable r2 canary - w0 | kept [1,2] | completion Some(Promoted)
        "#]],
    );
}

#[test]
fn failed_analysis_aborts_at_once_and_retry_starts_over() {
    check(
        vec![
            (0, desired("1.0.0", 1, standard_steps())),
            (1, ready(&[(1, 1)])),
            (
                10,
                desired(
                    "3.0.0",
                    1,
                    vec![CanaryStep::SetWeight(20), analysis("success-rate")],
                ),
            ),
            (11, ready(&[(1, 1), (2, 1)])),
            (13, analysis_done("web-r2-s1-1", AnalysisOutcome::Failed)),
            (14, op(OperatorAction::Promote { full: false })),
            (20, op(OperatorAction::Retry)),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x1
              weights stable r1 canary - 0%
              instances r1x1
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/1 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=1
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 3.0.0 x1
              weights stable r1 canary r2 0%
              instances r1x1 r2x1
              record RolloutStarted: canary revision 2 (3.0.0) started with 2 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 610s
            t=11s ready r1=1 r2=1
              weights stable r1 canary r2 20%
              record WeightChanged: step 1: canary weight 20%
              start analysis web-r2-s1-1
              = Progressing "running analysis web-r2-s1-1" | stable r1 canary r2 step 1 analyzing web-r2-s1-1 w20 | kept [1,2] | completion None
            t=13s analysis web-r2-s1-1 Failed
              weights stable r1 canary - 0%
              instances r1x1 r2x0
              record AnalysisFailed: analysis run web-r2-s1-1 failed: metric "success-rate" assessed
              stop analysis web-r2-s1-1 (the rollout was aborted)
              record RolloutAborted: Rollout aborted update to revision 2: analysis run web-r2-s1-1 failed: metric "success-rate" assessed
              = Degraded "RolloutAborted: Rollout aborted update to revision 2: analysis run web-r2-s1-1 failed: metric \"success-rate\" assessed" | stable r1 canary r2 step 1 aborted w0 | kept [1,2] | completion Some(Aborted)
            t=14s operator promote
              record OperatorActionRefused: promote: the rollout is already aborted (use retry, or undo)
              reply refused: the rollout is already aborted (use retry, or undo)
              = Degraded "RolloutAborted: Rollout aborted update to revision 2: analysis run web-r2-s1-1 failed: metric \"success-rate\" assessed" | stable r1 canary r2 step 1 aborted w0 | kept [1,2] | completion Some(Aborted)
            t=20s operator retry
              weights stable r1 canary r2 20%
              instances r1x1 r2x1
              record WeightChanged: step 1: canary weight 20%
              start analysis web-r2-s1-2
              record OperatorAction: retry: retrying the rollout from the first step
              reply ok: retrying the rollout from the first step
              = Progressing "running analysis web-r2-s1-2" | stable r1 canary r2 step 1 analyzing web-r2-s1-2 w20 | kept [1,2] | completion None
        "#]],
    );
}

#[test]
fn manual_pause_freezes_a_timed_pause_and_resume_keeps_the_remaining_time() {
    check(
        vec![
            (0, desired("1.0.0", 1, vec![])),
            (1, ready(&[(1, 1)])),
            (
                10,
                desired(
                    "2.0.0",
                    1,
                    vec![CanaryStep::SetWeight(50), pause(Some(600))],
                ),
            ),
            (11, ready(&[(1, 1), (2, 1)])),
            (111, op(OperatorAction::Pause)),
            (611, Event::DeadlineReached),
            (711, op(OperatorAction::Resume)),
            (1311, Event::DeadlineReached),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x1
              weights stable r1 canary - 0%
              instances r1x1
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/1 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=1
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x1
              weights stable r1 canary r2 0%
              instances r1x1 r2x1
              record RolloutStarted: canary revision 2 (2.0.0) started with 2 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 610s
            t=11s ready r1=1 r2=1
              weights stable r1 canary r2 50%
              record WeightChanged: step 1: canary weight 50%
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 1 paused until 611s w50 | kept [1,2] | completion None | next 611s
            t=111s operator pause
              record OperatorAction: pause: paused
              reply ok: paused
              = Paused "manually paused" | stable r1 canary r2 step 1 paused until 611s w50 | kept [1,2] | completion None
            t=611s deadline
              = Paused "manually paused" | stable r1 canary r2 step 1 paused until 611s w50 | kept [1,2] | completion None
            t=711s operator resume
              record OperatorAction: resume: resumed
              reply ok: resumed
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 1 paused until 1211s w50 | kept [1,2] | completion None | next 1211s
            t=1311s deadline
              weights stable r2 canary - 0%
              instances r2x1
              record PauseEnded: step 2: pause ended
              record RolloutPromoted: revision 2 (2.0.0) is stable, replacing revision 1
              = Healthy "" | stable r2 canary - w0 | kept [1,2] | completion Some(Promoted)
        "#]],
    );
}

#[test]
fn a_new_version_supersedes_the_canary_and_reverting_the_document_rolls_back_at_once() {
    check(
        vec![
            (0, desired("1.0.0", 1, vec![])),
            (1, ready(&[(1, 1)])),
            (10, desired("2.0.0", 1, standard_steps())),
            (11, ready(&[(1, 1), (2, 1)])),
            (20, desired("2.0.1", 1, standard_steps())),
            (30, desired("1.0.0", 1, standard_steps())),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x1
              weights stable r1 canary - 0%
              instances r1x1
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/1 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=1
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x1
              weights stable r1 canary r2 0%
              instances r1x1 r2x1
              record RolloutStarted: canary revision 2 (2.0.0) started with 5 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 610s
            t=11s ready r1=1 r2=1
              weights stable r1 canary r2 20%
              record WeightChanged: step 1: canary weight 20%
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 1 paused until 41s w20 | kept [1,2] | completion None | next 41s
            t=20s desired 2.0.1 x1
              weights stable r1 canary r3 0%
              instances r1x1 r3x1
              record RolloutSuperseded: canary revision 2: superseded by 2.0.1
              record RolloutStarted: canary revision 3 (2.0.1) started with 5 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r3 step 0 waiting w0 | kept [1,2,3] | completion None | next 620s
            t=30s desired 1.0.0 x1
              weights stable r1 canary - 0%
              instances r1x1
              record RolloutSuperseded: canary revision 3: desired version is the stable 1.0.0 again
              = Healthy "" | stable r1 canary - w0 | kept [1,2,3] | completion Some(Superseded)
        "#]],
    );
}

#[test]
fn promote_full_skips_steps_and_analysis() {
    check(
        vec![
            (0, desired("1.0.0", 2, vec![])),
            (1, ready(&[(1, 2)])),
            (10, desired("2.0.0", 2, standard_steps())),
            (11, ready(&[(1, 2), (2, 1)])),
            (12, op(OperatorAction::Promote { full: true })),
            (13, ready(&[(1, 2), (2, 2)])),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x2
              weights stable r1 canary - 0%
              instances r1x2
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/2 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=2
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x2
              weights stable r1 canary r2 0%
              instances r1x2 r2x1
              record RolloutStarted: canary revision 2 (2.0.0) started with 5 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 610s
            t=11s ready r1=2 r2=1
              weights stable r1 canary r2 20%
              record WeightChanged: step 1: canary weight 20%
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 1 paused until 41s w20 | kept [1,2] | completion None | next 41s
            t=12s operator promote --full
              instances r1x2 r2x2
              record OperatorAction: promote --full: promoting fully: skipping every remaining step
              reply ok: promoting fully: skipping every remaining step
              = Progressing "waiting for canary instances: 1/2 ready" | stable r1 canary r2 step 5 waiting w20 | kept [1,2] | completion None | next 612s
            t=13s ready r1=2 r2=2
              weights stable r2 canary - 0%
              instances r2x2
              record RolloutPromoted: revision 2 (2.0.0) is stable, replacing revision 1
              = Healthy "" | stable r2 canary - w0 | kept [1,2] | completion Some(Promoted)
        "#]],
    );
}

#[test]
fn progress_deadline_abort_aborts_a_canary_that_never_becomes_ready() {
    let mut spec = spec_with("2.0.0", 1, vec![CanaryStep::SetWeight(10)]);
    spec.progress_deadline_seconds = 60;
    spec.progress_deadline_abort = true;
    check(
        vec![
            (0, desired("1.0.0", 1, vec![])),
            (1, ready(&[(1, 1)])),
            (10, Event::DesiredSpecChanged(Box::new(spec))),
            (70, Event::DeadlineReached),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x1
              weights stable r1 canary - 0%
              instances r1x1
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/1 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=1
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x1
              weights stable r1 canary r2 0%
              instances r1x1 r2x1
              record RolloutStarted: canary revision 2 (2.0.0) started with 1 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 70s
            t=70s deadline
              weights stable r1 canary - 0%
              instances r1x1 r2x0
              record ProgressDeadlineExceeded: canary instances not ready within 60s
              record RolloutAborted: Rollout aborted update to revision 2: ProgressDeadlineExceeded: canary instances not ready within 60s
              = Degraded "RolloutAborted: Rollout aborted update to revision 2: ProgressDeadlineExceeded: canary instances not ready within 60s" | stable r1 canary r2 step 0 aborted w0 | kept [1,2] | completion Some(Aborted)
        "#]],
    );
}

#[test]
fn inconclusive_analysis_pauses_for_a_human_and_undo_rolls_back() {
    check(
        vec![
            (0, desired("1.0.0", 1, vec![])),
            (1, ready(&[(1, 1)])),
            (2, desired("2.0.0", 1, vec![])),
            (3, ready(&[(1, 1), (2, 1)])),
            (
                10,
                desired("3.0.0", 1, vec![CanaryStep::SetWeight(10), analysis("t")]),
            ),
            (11, ready(&[(2, 1), (3, 1)])),
            (
                20,
                analysis_done("web-r3-s1-1", AnalysisOutcome::Inconclusive),
            ),
            (
                21,
                op(OperatorAction::Undo {
                    to_revision: Some(7),
                }),
            ),
            (22, op(OperatorAction::Undo { to_revision: None })),
            (23, op(OperatorAction::Undo { to_revision: None })),
            (24, op(OperatorAction::Undo { to_revision: None })),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x1
              weights stable r1 canary - 0%
              instances r1x1
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/1 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=1
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=2s desired 2.0.0 x1
              weights stable r1 canary r2 0%
              instances r1x1 r2x1
              record RolloutStarted: canary revision 2 (2.0.0) started with 0 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 602s
            t=3s ready r1=1 r2=1
              weights stable r2 canary - 0%
              instances r2x1
              record RolloutPromoted: revision 2 (2.0.0) is stable, replacing revision 1
              = Healthy "" | stable r2 canary - w0 | kept [1,2] | completion Some(Promoted)
            t=10s desired 3.0.0 x1
              weights stable r2 canary r3 0%
              instances r2x1 r3x1
              record RolloutStarted: canary revision 3 (3.0.0) started with 2 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r2 canary r3 step 0 waiting w0 | kept [1,2,3] | completion None | next 610s
            t=11s ready r2=1 r3=1
              weights stable r2 canary r3 10%
              record WeightChanged: step 1: canary weight 10%
              start analysis web-r3-s1-1
              = Progressing "running analysis web-r3-s1-1" | stable r2 canary r3 step 1 analyzing web-r3-s1-1 w10 | kept [1,2,3] | completion None
            t=20s analysis web-r3-s1-1 Inconclusive
              record AnalysisInconclusive: analysis run web-r3-s1-1: metric "success-rate" assessed; waiting for promote or abort
              = Paused "InconclusiveAnalysisRun: metric \"success-rate\" assessed" | stable r2 canary r3 step 1 inconclusive w10 | kept [1,2,3] | completion None
            t=21s operator undo
              record OperatorActionRefused: undo: revision 7 is not kept (kept: 1, 2, 3)
              reply refused: revision 7 is not kept (kept: 1, 2, 3)
              = Paused "InconclusiveAnalysisRun: metric \"success-rate\" assessed" | stable r2 canary r3 step 1 inconclusive w10 | kept [1,2,3] | completion None
            t=22s operator undo
              weights stable r2 canary - 0%
              instances r2x1
              record RolloutSuperseded: canary revision 3: undo to the stable revision 2
              record OperatorAction: undo: rolled back to the stable revision 2
              reply ok: rolled back to the stable revision 2
              = Healthy "" | stable r2 canary - w0 | kept [1,2,3] | completion Some(Superseded)
            t=23s operator undo
              weights stable r2 canary r4 0%
              instances r2x1 r4x1
              record RolloutStarted: canary revision 4 (1.0.0) started with 2 steps
              record OperatorAction: undo: rolling back to revision 1 (1.0.0) as a new canary
              reply ok: rolling back to revision 1 (1.0.0) as a new canary
              = Progressing "waiting for canary instances: 0/1 ready" | stable r2 canary r4 step 0 waiting w0 | kept [2,3,4] | completion None | next 623s
            t=24s operator undo
              weights stable r2 canary - 0%
              instances r2x1
              record RolloutSuperseded: canary revision 4: undo to the stable revision 2
              record OperatorAction: undo: rolled back to the stable revision 2
              reply ok: rolled back to the stable revision 2
              = Healthy "" | stable r2 canary - w0 | kept [2,3,4] | completion Some(Superseded)
        "#]],
    );
}

#[test]
fn refusals_change_nothing() {
    let healthy = {
        let (state, _) = step(
            &Rollout::new(spec_with("1.0.0", 1, vec![])),
            desired("1.0.0", 1, vec![]),
            Timestamp(0),
        );
        step(&state, ready(&[(1, 1)]), Timestamp(1000)).0
    };
    for action in [
        OperatorAction::Promote { full: false },
        OperatorAction::Promote { full: true },
        OperatorAction::Abort,
        OperatorAction::Retry,
        OperatorAction::Undo { to_revision: None },
        OperatorAction::Undo {
            to_revision: Some(1),
        },
        OperatorAction::Pause,
        OperatorAction::Resume,
    ] {
        let (next, effects) = step(&healthy, op(action), Timestamp(2000));
        assert_eq!(next, healthy, "{action:?} changed the state");
        assert!(
            matches!(effects.last(), Some(Effect::Reply(Err(_)))),
            "{action:?} was not refused: {effects:?}"
        );
    }
}

#[test]
fn set_canary_scale_sizes_the_canary_independently_of_its_weight() {
    let steps = vec![
        CanaryStep::SetCanaryScale(CanaryScale::Replicas(3)),
        CanaryStep::SetWeight(10),
        CanaryStep::SetCanaryScale(CanaryScale::MatchTrafficWeight),
        pause(None),
    ];
    let (state, _) = step(
        &Rollout::new(spec_with("1", 4, vec![])),
        desired("1", 4, vec![]),
        Timestamp(0),
    );
    let (state, _) = step(&state, ready(&[(1, 4)]), Timestamp(0));
    let (state, effects) = step(&state, desired("2", 4, steps), Timestamp(0));
    assert!(effects.contains(&Effect::SetInstances(vec![
        InstanceTarget {
            revision: 1,
            template: template("1"),
            count: 4
        },
        InstanceTarget {
            revision: 2,
            template: template("2"),
            count: 3
        },
    ])));
    let (state, _) = step(&state, ready(&[(1, 4), (2, 3)]), Timestamp(1));
    assert_eq!(state.weights().canary_percent, 10);
    let targets = state.instance_targets();
    assert_eq!(targets[1].count, 1, "matchTrafficWeight: ceil(4 * 10%) = 1");
}

// === property test: no sequence of events drives the core into an illegal state ===

fn arbitrary_step() -> impl Generator<Value = CanaryStep> {
    prop_oneof![
        (0u8..=100).prop_map(CanaryStep::SetWeight),
        proptest::option::of(1u64..100).prop_map(pause),
        Just(analysis("t")),
        (0u32..4).prop_map(|n| CanaryStep::SetCanaryScale(CanaryScale::Replicas(n))),
        Just(CanaryStep::SetCanaryScale(CanaryScale::MatchTrafficWeight)),
    ]
}

/// Which strategy a generated spec uses.
#[derive(Debug, Clone)]
enum Flavour {
    Canary,
    CanaryWithBackground(usize),
    BlueGreen {
        auto_promotion: Option<u32>,
        pre: bool,
        post: bool,
        preview: u32,
        delay: u32,
    },
}

fn arbitrary_flavour() -> impl Generator<Value = Flavour> {
    prop_oneof![
        Just(Flavour::Canary),
        (0usize..4).prop_map(Flavour::CanaryWithBackground),
        (
            proptest::option::of(0u32..100),
            any::<bool>(),
            any::<bool>(),
            1u32..4,
            0u32..60
        )
            .prop_map(
                |(auto_promotion, pre, post, preview, delay)| Flavour::BlueGreen {
                    auto_promotion,
                    pre,
                    post,
                    preview,
                    delay
                }
            ),
    ]
}

#[derive(Debug, Clone)]
enum Input {
    Desired {
        version: u8,
        replicas: u32,
        steps: Vec<CanaryStep>,
        flavour: Flavour,
    },
    Ready {
        per_revision: Vec<u32>,
    },
    Analysis {
        current: bool,
        pick_last: bool,
        outcome: AnalysisOutcome,
    },
    Deadline,
    Operator(OperatorAction),
    Wait(u64),
}

fn arbitrary_input() -> impl Generator<Value = Input> {
    let outcome = prop_oneof![
        Just(AnalysisOutcome::Successful),
        Just(AnalysisOutcome::Failed),
        Just(AnalysisOutcome::Inconclusive),
        Just(AnalysisOutcome::Error),
    ];
    let action = prop_oneof![
        any::<bool>().prop_map(|full| OperatorAction::Promote { full }),
        Just(OperatorAction::Abort),
        Just(OperatorAction::Retry),
        proptest::option::of(0u64..8).prop_map(|to_revision| OperatorAction::Undo { to_revision }),
        Just(OperatorAction::Pause),
        Just(OperatorAction::Resume),
    ];
    prop_oneof![
        (
            0u8..4,
            1u32..4,
            proptest::collection::vec(arbitrary_step(), 0..6),
            arbitrary_flavour()
        )
            .prop_map(|(version, replicas, steps, flavour)| Input::Desired {
                version,
                replicas,
                steps,
                flavour
            }),
        proptest::collection::vec(0u32..5, 0..8)
            .prop_map(|per_revision| Input::Ready { per_revision }),
        (any::<bool>(), any::<bool>(), outcome).prop_map(|(current, pick_last, outcome)| {
            Input::Analysis {
                current,
                pick_last,
                outcome,
            }
        }),
        Just(Input::Deadline),
        action.prop_map(Input::Operator),
        (1u64..2000).prop_map(Input::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_event_sequence_reaches_an_illegal_state(inputs in proptest::collection::vec(arbitrary_input(), 1..60)) {
        let mut state = Rollout::new(spec_with("v0", 1, vec![]));
        let mut now = Timestamp(0);
        for input in inputs {
            let event = match input {
                Input::Desired { version, replicas, steps, flavour } => {
                    let mut spec = spec_with(&format!("v{version}"), replicas, steps);
                    match flavour {
                        Flavour::Canary => {}
                        Flavour::CanaryWithBackground(starting_step) => {
                            if let crate::spec::Strategy::Canary(canary) = &mut spec.strategy {
                                canary.analysis = Some(crate::spec::BackgroundAnalysis {
                                    analysis: AnalysisStep { templates: vec!["t".to_owned()], args: BTreeMap::new() },
                                    starting_step,
                                });
                            }
                        }
                        Flavour::BlueGreen { auto_promotion, pre, post, preview, delay } => {
                            let mut blue_green = blue_green_spec("x", auto_promotion, pre, post);
                            if let crate::spec::Strategy::BlueGreen(strategy) = &mut blue_green.strategy {
                                strategy.preview_replica_count = Some(preview);
                                strategy.scale_down_delay_seconds = delay;
                                strategy.abort_scale_down_delay_seconds = delay;
                            }
                            spec.strategy = blue_green.strategy;
                        }
                    }
                    Event::DesiredSpecChanged(Box::new(spec))
                }
                Input::Ready { per_revision } => Event::InstancesObserved {
                    ready: per_revision.iter().enumerate().map(|(i, n)| (i as u64 + 1, *n)).collect(),
                },
                Input::Analysis { current, pick_last, outcome } => {
                    let mut running = Vec::new();
                    if let Some(canary) = &state.canary {
                        if let StepProgress::Analyzing { run_id }
                        | StepProgress::PrePromotionAnalysis { run_id }
                        | StepProgress::PostPromotionAnalysis { run_id } = &canary.progress
                        {
                            running.push(run_id.clone());
                        }
                        if let Some(BackgroundRun { run_id, state: BackgroundState::Running }) = &canary.background {
                            running.push(run_id.clone());
                        }
                    }
                    let chosen = if pick_last { running.last() } else { running.first() };
                    let run_id = match (chosen, current) {
                        (Some(run_id), true) => run_id.clone(),
                        _ => "stale-run".to_owned(),
                    };
                    Event::AnalysisCompleted { run_id, outcome, message: "m".to_owned() }
                }
                Input::Deadline => {
                    if let Some(deadline) = next_deadline(&state) {
                        now = now.max(deadline);
                    }
                    Event::DeadlineReached
                }
                Input::Operator(action) => Event::OperatorRequested(action),
                Input::Wait(seconds) => {
                    now = now.plus(Duration::from_secs(seconds));
                    continue;
                }
            };
            let is_operator = matches!(event, Event::OperatorRequested(_));
            let (next, effects) = step(&state, event, now);
            prop_assert!(check_invariants(&next).is_ok(), "{:?}\n{:#?}", check_invariants(&next), next);
            if is_operator {
                let refused = matches!(effects.last(), Some(Effect::Reply(Err(_))));
                prop_assert!(matches!(effects.last(), Some(Effect::Reply(_))));
                if refused {
                    prop_assert_eq!(&next, &state, "a refused action changed the state");
                }
            }
            // Replaying the persisted state must ask for exactly the world the state describes.
            let resumed = resume_effects(&next);
            prop_assert!(resumed.contains(&Effect::SetWeights(next.weights())));
            prop_assert!(resumed.contains(&Effect::SetInstances(next.instance_targets())));
            state = next;
        }
    }
}

// === blue-green ===

fn blue_green_spec(
    version: &str,
    auto_promotion: Option<u32>,
    pre: bool,
    post: bool,
) -> ServiceSpec {
    let mut spec = spec_with(version, 2, vec![]);
    spec.strategy = crate::spec::Strategy::BlueGreen(crate::spec::BlueGreenStrategy {
        preview_listen: Some("127.0.0.1:8081".to_owned()),
        preview_replica_count: Some(1),
        auto_promotion_enabled: auto_promotion.is_some(),
        auto_promotion_seconds: auto_promotion,
        pre_promotion_analysis: pre.then(|| AnalysisStep {
            templates: vec!["smoke".to_owned()],
            args: BTreeMap::new(),
        }),
        post_promotion_analysis: post.then(|| AnalysisStep {
            templates: vec!["success-rate".to_owned()],
            args: BTreeMap::new(),
        }),
        scale_down_delay_seconds: 30,
        abort_scale_down_delay_seconds: 30,
    });
    spec
}

fn blue_green(version: &str, auto_promotion: Option<u32>, pre: bool, post: bool) -> Event {
    Event::DesiredSpecChanged(Box::new(blue_green_spec(
        version,
        auto_promotion,
        pre,
        post,
    )))
}

#[test]
fn blue_green_previews_analyses_switches_and_keeps_the_old_version_warm() {
    check(
        vec![
            (0, blue_green("1.0.0", Some(30), true, true)),
            (1, ready(&[(1, 2)])),
            (10, blue_green("2.0.0", Some(30), true, true)),
            (12, ready(&[(1, 2), (2, 1)])),
            (
                20,
                analysis_done("web-r2-pre-1", AnalysisOutcome::Successful),
            ),
            (50, Event::DeadlineReached),
            (52, ready(&[(1, 2), (2, 2)])),
            (
                60,
                analysis_done("web-r2-post-2", AnalysisOutcome::Successful),
            ),
            (90, Event::DeadlineReached),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x2
              weights stable r1 canary - 0%
              instances r1x2
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/2 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=2
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x2
              weights stable r1 canary r2 0%
              instances r1x2 r2x1
              record RolloutStarted: blue-green revision 2 (2.0.0) started as the preview
              = Progressing "waiting for preview instances: 0/1 ready" | stable r1 canary r2 step 0 preview starting w0 | kept [1,2] | completion None | next 610s
            t=12s ready r1=2 r2=1
              record PreviewReady: preview revision 2 ready (1 instances)
              start analysis web-r2-pre-1
              = Progressing "running pre-promotion analysis web-r2-pre-1" | stable r1 canary r2 step 0 pre-analysis web-r2-pre-1 w0 | kept [1,2] | completion None
            t=20s analysis web-r2-pre-1 Successful
              record AnalysisSuccessful: analysis run web-r2-pre-1 succeeded
              = Paused "BlueGreenPause" | stable r1 canary r2 step 0 awaiting promotion until 50s w0 | kept [1,2] | completion None | next 50s
            t=50s deadline
              instances r1x2 r2x2
              record AutoPromotion: autoPromotionSeconds elapsed: switching
              = Progressing "scaling the new version up before the switch: 1/2 ready" | stable r1 canary r2 step 0 scaling up for the switch w0 | kept [1,2] | completion None | next 650s
            t=52s ready r1=2 r2=2
              weights stable r1 canary r2 100%
              record Switched: active traffic switched to revision 2; the old revision stays warm
              start analysis web-r2-post-2
              = Progressing "running post-promotion analysis web-r2-post-2" | stable r1 canary r2 step 0 post-analysis web-r2-post-2 w100 | kept [1,2] | completion None
            t=60s analysis web-r2-post-2 Successful
              weights stable r2 canary - 0%
              instances r2x2 r1x2
              record AnalysisSuccessful: analysis run web-r2-post-2 succeeded
              record RolloutPromoted: revision 2 (2.0.0) is stable, replacing revision 1
              = Healthy "" | stable r2 canary - w0 | kept [1,2] | completion Some(Promoted) | next 90s
            t=90s deadline
              instances r2x2
              record ScaledDown: revision 1 scaled down after the scale-down delay
              = Healthy "" | stable r2 canary - w0 | kept [1,2] | completion Some(Promoted)
        "#]],
    );
}

#[test]
fn blue_green_post_promotion_failure_switches_back_to_the_warm_old_version() {
    check(
        vec![
            (0, blue_green("1.0.0", Some(0), false, true)),
            (1, ready(&[(1, 2)])),
            (10, blue_green("2.0.0", Some(0), false, true)),
            (12, ready(&[(1, 2), (2, 1)])),
            (13, ready(&[(1, 2), (2, 2)])),
            (20, analysis_done("web-r2-post-1", AnalysisOutcome::Failed)),
            (50, Event::DeadlineReached),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x2
              weights stable r1 canary - 0%
              instances r1x2
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/2 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=2
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x2
              weights stable r1 canary r2 0%
              instances r1x2 r2x1
              record RolloutStarted: blue-green revision 2 (2.0.0) started as the preview
              = Progressing "waiting for preview instances: 0/1 ready" | stable r1 canary r2 step 0 preview starting w0 | kept [1,2] | completion None | next 610s
            t=12s ready r1=2 r2=1
              instances r1x2 r2x2
              record PreviewReady: preview revision 2 ready (1 instances)
              = Progressing "scaling the new version up before the switch: 1/2 ready" | stable r1 canary r2 step 0 scaling up for the switch w0 | kept [1,2] | completion None | next 612s
            t=13s ready r1=2 r2=2
              weights stable r1 canary r2 100%
              record Switched: active traffic switched to revision 2; the old revision stays warm
              start analysis web-r2-post-1
              = Progressing "running post-promotion analysis web-r2-post-1" | stable r1 canary r2 step 0 post-analysis web-r2-post-1 w100 | kept [1,2] | completion None
            t=20s analysis web-r2-post-1 Failed
              weights stable r1 canary - 0%
              instances r1x2 r2x1
              record AnalysisFailed: analysis run web-r2-post-1 failed: metric "success-rate" assessed
              stop analysis web-r2-post-1 (the rollout was aborted)
              record RolloutAborted: Rollout aborted update to revision 2: analysis run web-r2-post-1 failed: metric "success-rate" assessed
              = Degraded "RolloutAborted: Rollout aborted update to revision 2: analysis run web-r2-post-1 failed: metric \"success-rate\" assessed" | stable r1 canary r2 step 0 aborted w0 | kept [1,2] | completion Some(Aborted) | next 50s
            t=50s deadline
              instances r1x2 r2x0
              = Degraded "RolloutAborted: Rollout aborted update to revision 2: analysis run web-r2-post-1 failed: metric \"success-rate\" assessed" | stable r1 canary r2 step 0 aborted w0 | kept [1,2] | completion Some(Aborted)
        "#]],
    );
}

#[test]
fn blue_green_without_auto_promotion_waits_for_promote() {
    check(
        vec![
            (0, blue_green("1.0.0", None, false, true)),
            (1, ready(&[(1, 2)])),
            (10, blue_green("2.0.0", None, false, true)),
            (12, ready(&[(1, 2), (2, 1)])),
            (100, op(OperatorAction::Promote { full: false })),
            (101, ready(&[(1, 2), (2, 2)])),
            (110, op(OperatorAction::Promote { full: false })),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x2
              weights stable r1 canary - 0%
              instances r1x2
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/2 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=2
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x2
              weights stable r1 canary r2 0%
              instances r1x2 r2x1
              record RolloutStarted: blue-green revision 2 (2.0.0) started as the preview
              = Progressing "waiting for preview instances: 0/1 ready" | stable r1 canary r2 step 0 preview starting w0 | kept [1,2] | completion None | next 610s
            t=12s ready r1=2 r2=1
              record PreviewReady: preview revision 2 ready (1 instances)
              = Paused "BlueGreenPause" | stable r1 canary r2 step 0 awaiting promotion w0 | kept [1,2] | completion None
            t=100s operator promote
              instances r1x2 r2x2
              record OperatorAction: promote: switching active traffic to the new version
              reply ok: switching active traffic to the new version
              = Progressing "scaling the new version up before the switch: 1/2 ready" | stable r1 canary r2 step 0 scaling up for the switch w0 | kept [1,2] | completion None | next 700s
            t=101s ready r1=2 r2=2
              weights stable r1 canary r2 100%
              record Switched: active traffic switched to revision 2; the old revision stays warm
              start analysis web-r2-post-1
              = Progressing "running post-promotion analysis web-r2-post-1" | stable r1 canary r2 step 0 post-analysis web-r2-post-1 w100 | kept [1,2] | completion None
            t=110s operator promote
              weights stable r2 canary - 0%
              instances r2x2 r1x2
              stop analysis web-r2-post-1 (skipped by promote)
              record RolloutPromoted: revision 2 (2.0.0) is stable, replacing revision 1
              record OperatorAction: promote: promoted: the new version is stable
              reply ok: promoted: the new version is stable
              = Healthy "" | stable r2 canary - w0 | kept [1,2] | completion Some(Promoted) | next 140s
        "#]],
    );
}

// === background analysis ===

fn with_background(version: &str, starting_step: usize) -> Event {
    let mut spec = spec_with(
        version,
        1,
        vec![
            CanaryStep::SetWeight(10),
            pause(Some(60)),
            CanaryStep::SetWeight(50),
            pause(None),
        ],
    );
    if let crate::spec::Strategy::Canary(canary) = &mut spec.strategy {
        canary.analysis = Some(crate::spec::BackgroundAnalysis {
            analysis: AnalysisStep {
                templates: vec!["success-rate".to_owned()],
                args: BTreeMap::new(),
            },
            starting_step,
        });
    }
    Event::DesiredSpecChanged(Box::new(spec))
}

#[test]
fn background_analysis_aborts_at_any_step() {
    check(
        vec![
            (0, with_background("1.0.0", 1)),
            (1, ready(&[(1, 1)])),
            (10, with_background("2.0.0", 1)),
            (11, ready(&[(1, 1), (2, 1)])),
            (30, analysis_done("web-r2-bg-1", AnalysisOutcome::Failed)),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x1
              weights stable r1 canary - 0%
              instances r1x1
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/1 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=1
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x1
              weights stable r1 canary r2 0%
              instances r1x1 r2x1
              record RolloutStarted: canary revision 2 (2.0.0) started with 4 steps
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 610s
            t=11s ready r1=1 r2=1
              weights stable r1 canary r2 10%
              record WeightChanged: step 1: canary weight 10%
              record BackgroundAnalysisStarted: background analysis web-r2-bg-1 runs until the rollout ends
              start analysis web-r2-bg-1
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 1 paused until 71s w10 | kept [1,2] | completion None | next 71s
            t=30s analysis web-r2-bg-1 Failed
              weights stable r1 canary - 0%
              instances r1x1 r2x0
              record AnalysisFailed: background analysis web-r2-bg-1 failed: metric "success-rate" assessed
              record RolloutAborted: Rollout aborted update to revision 2: background analysis web-r2-bg-1 failed: metric "success-rate" assessed
              = Degraded "RolloutAborted: Rollout aborted update to revision 2: background analysis web-r2-bg-1 failed: metric \"success-rate\" assessed" | stable r1 canary r2 step 1 aborted w0 | kept [1,2] | completion Some(Aborted)
        "#]],
    );
}

#[test]
fn inconclusive_background_analysis_halts_until_promote() {
    check(
        vec![
            (0, with_background("1.0.0", 0)),
            (1, ready(&[(1, 1)])),
            (10, with_background("2.0.0", 0)),
            (11, ready(&[(1, 1), (2, 1)])),
            (
                20,
                analysis_done("web-r2-bg-1", AnalysisOutcome::Inconclusive),
            ),
            (80, Event::DeadlineReached),
            (90, op(OperatorAction::Promote { full: false })),
        ],
        expect![[r#"
            t=0s desired 1.0.0 x1
              weights stable r1 canary - 0%
              instances r1x1
              record RevisionDeployed: revision 1 (1.0.0) deployed as the first stable revision
              = Progressing "waiting for stable instances: 0/1 ready" | stable r1 canary - w0 | kept [1] | completion None | next 600s
            t=1s ready r1=1
              = Healthy "" | stable r1 canary - w0 | kept [1] | completion None
            t=10s desired 2.0.0 x1
              weights stable r1 canary r2 0%
              instances r1x1 r2x1
              record RolloutStarted: canary revision 2 (2.0.0) started with 4 steps
              record BackgroundAnalysisStarted: background analysis web-r2-bg-1 runs until the rollout ends
              start analysis web-r2-bg-1
              = Progressing "waiting for canary instances: 0/1 ready" | stable r1 canary r2 step 0 waiting w0 | kept [1,2] | completion None | next 610s
            t=11s ready r1=1 r2=1
              weights stable r1 canary r2 10%
              record WeightChanged: step 1: canary weight 10%
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 1 paused until 71s w10 | kept [1,2] | completion None | next 71s
            t=20s analysis web-r2-bg-1 Inconclusive
              record AnalysisInconclusive: background analysis web-r2-bg-1: metric "success-rate" assessed; waiting for promote or abort
              = Paused "InconclusiveAnalysisRun: metric \"success-rate\" assessed" | stable r1 canary r2 step 1 paused until 71s w10 | kept [1,2] | completion None
            t=80s deadline
              = Paused "InconclusiveAnalysisRun: metric \"success-rate\" assessed" | stable r1 canary r2 step 1 paused until 71s w10 | kept [1,2] | completion None
            t=90s operator promote
              record OperatorAction: promote: background analysis was inconclusive: continuing as asked
              reply ok: background analysis was inconclusive: continuing as asked
              = Paused "CanaryPauseStep" | stable r1 canary r2 step 1 paused until 71s w10 | kept [1,2] | completion None | next 71s
        "#]],
    );
}
