//! The blue-green strategy (Argo's `strategy.blueGreen`), as transitions of the same core.
//!
//! The new revision is the *preview*: it serves only the preview listener until the switch. The
//! switch moves the active listener's traffic to it at once (`weight_percent` 0 → 100) while the
//! old revision stays at full scale, so an abort during `postPromotionAnalysis` switches back
//! instantly to warm instances. After promotion the old revision keeps running for
//! `scaleDownDelaySeconds` (`Rollout::retiring`). Like the rest of `rollout`: pure, no I/O.

use std::time::Duration;

use super::{Canary, Effect, Phase, StepProgress, Transition};

impl Transition<'_> {
    /// A new revision (or a retry): start its preview instances.
    pub(super) fn start_preview(&mut self) {
        if let Some(canary) = &mut self.state.canary {
            canary.progress = StepProgress::PreviewStarting { since: self.now };
            canary.weight_percent = 0;
        }
        self.blue_green_progress();
    }

    /// Re-check the waits of the blue-green strategy against the ready instances.
    pub(super) fn blue_green_progress(&mut self) {
        let Some(canary) = &self.state.canary else {
            return;
        };
        let ready = self.state.ready_count(canary.revision);
        let needed = self.state.canary_instances_needed(canary);
        match canary.progress {
            StepProgress::PreviewStarting { .. } if ready >= needed => {
                self.state.progress_deadline_exceeded = false;
                self.record(
                    "PreviewReady",
                    format!(
                        "preview revision {} ready ({ready} instances)",
                        canary.revision
                    ),
                );
                self.preview_ready();
            }
            StepProgress::ScalingUpForSwitch { .. } if ready >= self.state.spec.replicas => {
                self.state.progress_deadline_exceeded = false;
                self.switch();
            }
            _ => {}
        }
    }

    fn preview_ready(&mut self) {
        let Some(canary) = &self.state.canary else {
            return;
        };
        let revision = canary.revision;
        let analysis = self
            .state
            .blue_green()
            .and_then(|blue_green| blue_green.pre_promotion_analysis.clone());
        match analysis {
            Some(analysis) if !canary.full_promotion => {
                let run_id = self.next_run_id(revision, "pre");
                if let Some(canary) = &mut self.state.canary {
                    canary.progress = StepProgress::PrePromotionAnalysis {
                        run_id: run_id.clone(),
                    };
                }
                self.effects
                    .push(Effect::StartAnalysis { run_id, analysis });
            }
            _ => self.after_pre_promotion(),
        }
    }

    fn after_pre_promotion(&mut self) {
        let Some(blue_green) = self.state.blue_green().cloned() else {
            return;
        };
        let full = self
            .state
            .canary
            .as_ref()
            .is_some_and(|canary| canary.full_promotion);
        let until = match (
            full,
            blue_green.auto_promotion_enabled,
            blue_green.auto_promotion_seconds,
        ) {
            (true, _, _) | (false, true, None | Some(0)) => {
                self.begin_switch();
                return;
            }
            (false, true, Some(seconds)) => {
                Some(self.now.plus(Duration::from_secs(u64::from(seconds))))
            }
            (false, false, _) => None,
        };
        if let Some(canary) = &mut self.state.canary {
            canary.progress = StepProgress::AwaitingPromotion { until };
        }
    }

    /// Scale the new revision to full size (if the preview was smaller), then switch.
    pub(super) fn begin_switch(&mut self) {
        if let Some(canary) = &mut self.state.canary {
            canary.progress = StepProgress::ScalingUpForSwitch { since: self.now };
        }
        self.blue_green_progress();
    }

    /// Move all active traffic to the new revision at once; the old one stays warm.
    fn switch(&mut self) {
        let Some(canary) = &mut self.state.canary else {
            return;
        };
        canary.weight_percent = 100;
        let revision = canary.revision;
        let full = canary.full_promotion;
        self.record(
            "Switched",
            format!("active traffic switched to revision {revision}; the old revision stays warm"),
        );
        let analysis = self
            .state
            .blue_green()
            .and_then(|blue_green| blue_green.post_promotion_analysis.clone());
        match analysis {
            Some(analysis) if !full => {
                let run_id = self.next_run_id(revision, "post");
                if let Some(canary) = &mut self.state.canary {
                    canary.progress = StepProgress::PostPromotionAnalysis {
                        run_id: run_id.clone(),
                    };
                }
                self.effects
                    .push(Effect::StartAnalysis { run_id, analysis });
            }
            _ => self.finish(),
        }
    }

    /// The new revision is stable; the old one is scaled down after `scaleDownDelaySeconds`.
    fn finish(&mut self) {
        let delay = self
            .state
            .blue_green()
            .map_or(0, |blue_green| blue_green.scale_down_delay_seconds);
        let keep = (delay > 0).then(|| Duration::from_secs(u64::from(delay)));
        self.complete_promotion(keep);
    }

    /// A pre- or post-promotion analysis succeeded.
    pub(super) fn blue_green_analysis_succeeded(&mut self) {
        match self.state.canary.as_ref().map(|canary| &canary.progress) {
            Some(StepProgress::PrePromotionAnalysis { .. }) => self.after_pre_promotion(),
            Some(StepProgress::PostPromotionAnalysis { .. }) => self.finish(),
            _ => {}
        }
    }

    /// `promote` for blue-green: switch now (skipping the pre-promotion wait), or, once switched,
    /// finish (skipping the post-promotion analysis). `full` skips every analysis still to come.
    pub(super) fn promote_blue_green(&mut self, full: bool) -> Result<String, String> {
        let Some(canary) = &self.state.canary else {
            return Err("no rollout in progress".to_owned());
        };
        if matches!(canary.progress, StepProgress::ScalingUpForSwitch { .. }) && !full {
            return Err(
                "already switching: waiting for the new version to run at full scale".to_owned(),
            );
        }
        let switched = canary.weight_percent == 100;
        self.state.manual_pause_since = None;
        self.stop_running_analysis("skipped by promote");
        if let Some(canary) = &mut self.state.canary {
            canary.full_promotion |= full;
        }
        if switched {
            self.finish();
            return Ok("promoted: the new version is stable".to_owned());
        }
        self.begin_switch();
        Ok("switching active traffic to the new version".to_owned())
    }
}

/// The status message of a blue-green rollout in progress.
pub(super) fn describe(
    canary: &Canary,
    ready: u32,
    needed: u32,
    replicas: u32,
) -> Option<(Phase, String)> {
    let described = match &canary.progress {
        StepProgress::PreviewStarting { .. } => (
            Phase::Progressing,
            format!("waiting for preview instances: {ready}/{needed} ready"),
        ),
        StepProgress::PrePromotionAnalysis { run_id } => (
            Phase::Progressing,
            format!("running pre-promotion analysis {run_id}"),
        ),
        StepProgress::AwaitingPromotion { .. } => (Phase::Paused, "BlueGreenPause".to_owned()),
        StepProgress::ScalingUpForSwitch { .. } => (
            Phase::Progressing,
            format!("scaling the new version up before the switch: {ready}/{replicas} ready"),
        ),
        StepProgress::PostPromotionAnalysis { run_id } => (
            Phase::Progressing,
            format!("running post-promotion analysis {run_id}"),
        ),
        _ => return None,
    };
    Some(described)
}
