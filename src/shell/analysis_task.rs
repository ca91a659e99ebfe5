//! Analysis runs as tasks: each run measures its due metrics in rounds, persists itself after
//! every round and tells the loop; the loop feeds a run's end to the rollout core as an event.
//! The rules (verdicts, limits, phases) are `crate::analysis`; this file only schedules and
//! carries answers.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Clock, Internal, ServiceSlot, Shell, ANALYSIS_IDLE_RECHECK, RECENT_RUNS};
use crate::analysis::{self, AnalysisRun, RunPhase};
use crate::provider::{self, ProviderContext};
use crate::rollout::{AnalysisOutcome, Event};
use crate::spec::AnalysisStep;

impl Shell {
    pub(super) fn start_analysis(&mut self, name: &str, run_id: &str, step: &AnalysisStep) {
        let Some(slot) = self.services.get(name) else {
            return;
        };
        let now = self.clock.now();
        let existing = slot.runs.iter().find(|run| run.id == run_id).cloned();
        let run = match existing {
            Some(run) => run,
            None => match self.new_run(name, run_id, step) {
                Ok(run) => run,
                Err(message) => {
                    // A run that cannot even be built is no evidence either way: a human decides.
                    warn!(service = %name, run = %run_id, %message, "cannot start analysis");
                    self.apply(
                        name,
                        Event::AnalysisCompleted {
                            run_id: run_id.to_owned(),
                            outcome: AnalysisOutcome::Error,
                            message,
                        },
                    );
                    return;
                }
            },
        };
        let reports = self.reporting.for_analysis(None, &run, now);
        if let Err(error) = self
            .store
            .save_analysis_run_reporting(&run.id, name, &run, &reports)
        {
            error!(service = %name, %error, "cannot save the analysis run");
        }
        if is_terminal(run.phase) {
            self.analysis_updated(run);
            return;
        }
        let Some(slot) = self.services.get_mut(name) else {
            return;
        };
        let context = ProviderContext {
            metrics: slot.metrics.clone(),
            stable_version: slot
                .rollout
                .stable_revision()
                .map(|r| r.template.version.clone()),
            canary_version: slot
                .rollout
                .canary_revision()
                .map(|r| r.template.version.clone()),
            jobs: self.jobs.clone(),
        };
        remember_run(slot, run.clone());
        let cancel = self.shutdown.child_token();
        self.analysis_tasks.insert(run.id.clone(), cancel.clone());
        info!(service = %name, run = %run.id, started = %now, "analysis started");
        tokio::spawn(run_analysis(
            run,
            context,
            self.clock,
            self.internal_tx.clone(),
            cancel,
        ));
    }

    pub(super) fn new_run(
        &self,
        name: &str,
        run_id: &str,
        step: &AnalysisStep,
    ) -> Result<AnalysisRun, String> {
        let document = self
            .document
            .as_ref()
            .ok_or("no desired document is loaded")?;
        let mut templates = Vec::new();
        for template_name in &step.templates {
            let template = document
                .analysis_templates
                .get(template_name)
                .ok_or_else(|| format!("unknown analysis template {template_name}"))?;
            templates.push(template);
        }
        analysis::new_run(run_id, name, &templates, &step.args, self.clock.now())
    }

    pub(super) fn stop_analysis(&mut self, name: &str, run_id: &str, reason: &str) {
        if let Some(token) = self.analysis_tasks.remove(run_id) {
            token.cancel();
        }
        let now = self.clock.now();
        let Some(slot) = self.services.get_mut(name) else {
            return;
        };
        if let Some(run) = slot.runs.iter_mut().find(|run| run.id == run_id) {
            if !is_terminal(run.phase) {
                let before = run.clone();
                analysis::terminate(run, now, reason);
                let reports = self.reporting.for_analysis(Some(&before), run, now);
                if let Err(error) = self
                    .store
                    .save_analysis_run_reporting(run_id, name, &*run, &reports)
                {
                    error!(service = %name, %error, "cannot save the analysis run");
                }
            }
        }
    }

    /// A round of a running analysis, recorded by its task: commit it, then act on it. A run
    /// that was stopped meanwhile (its step was promoted past, the rollout aborted) is history
    /// and keeps the phase it was terminated with: the task's late copy is dropped.
    pub(super) fn analysis_measured(&mut self, run: AnalysisRun) {
        if !self.analysis_tasks.contains_key(&run.id) {
            debug!(run = %run.id, "a round arrived after its run was stopped; dropped");
            return;
        }
        // The run and the reports of its new measurements (and verdict) commit together; the
        // copy the loop holds is the one last committed.
        let now = self.clock.now();
        let before = self
            .services
            .get(&run.service)
            .and_then(|slot| slot.runs.iter().find(|existing| existing.id == run.id));
        let reports = self.reporting.for_analysis(before, &run, now);
        if let Err(error) =
            self.store
                .save_analysis_run_reporting(&run.id, &run.service, &run, &reports)
        {
            error!(run = %run.id, %error, "cannot save the analysis run");
        }
        self.analysis_updated(run);
    }

    pub(super) fn analysis_updated(&mut self, run: AnalysisRun) {
        let name = run.service.clone();
        let Some(slot) = self.services.get_mut(&name) else {
            return;
        };
        let terminal = is_terminal(run.phase);
        let run_id = run.id.clone();
        let phase = run.phase;
        let message = run.message.clone().unwrap_or_default();
        remember_run(slot, run);
        if terminal {
            self.analysis_tasks.remove(&run_id);
            let outcome = match phase {
                RunPhase::Successful => AnalysisOutcome::Successful,
                RunPhase::Failed => AnalysisOutcome::Failed,
                RunPhase::Inconclusive => AnalysisOutcome::Inconclusive,
                _ => AnalysisOutcome::Error,
            };
            self.apply(
                &name,
                Event::AnalysisCompleted {
                    run_id,
                    outcome,
                    message,
                },
            );
        }
    }
}

pub(super) fn is_terminal(phase: RunPhase) -> bool {
    !matches!(phase, RunPhase::Pending | RunPhase::Running)
}

pub(super) fn remember_run(slot: &mut ServiceSlot, run: AnalysisRun) {
    if let Some(existing) = slot.runs.iter_mut().find(|existing| existing.id == run.id) {
        *existing = run;
    } else {
        slot.runs.push_back(run);
        if slot.runs.len() > RECENT_RUNS {
            slot.runs.pop_front();
        }
    }
}

/// Take an analysis run's measurements when they are due, persisting each, until it ends.
pub(super) async fn run_analysis(
    mut run: AnalysisRun,
    context: ProviderContext,
    clock: Clock,
    updates: mpsc::Sender<Internal>,
    cancel: CancellationToken,
) {
    while !is_terminal(run.phase) {
        let Some(due) = analysis::next_due(&run) else {
            // Nothing scheduled but not finished: wait to be stopped by the rollout (a metric
            // without count runs until its step ends).
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(ANALYSIS_IDLE_RECHECK) => continue,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(clock.instant_at(due)) => {}
        }
        // Every metric due now is one round: measured together, and the run decided only once
        // every answer is in, so the worst verdict wins whatever order they arrive in.
        let now = clock.now();
        let mut round = tokio::task::JoinSet::new();
        for index in analysis::due_metrics(&run, now) {
            if let Some(metric_run) = run.metrics.get(index) {
                let metric = metric_run.metric.clone();
                let context = context.clone();
                round.spawn(async move {
                    let query = provider::describe(&metric, &context);
                    let outcome = provider::measure(&metric, &context).await;
                    analysis::Answer {
                        index,
                        outcome,
                        query: Some(query),
                    }
                });
            }
        }
        let mut answers = Vec::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                joined = round.join_next() => match joined {
                    Some(Ok(answer)) => answers.push(answer),
                    Some(Err(error)) => error!(run = %run.id, %error, "a measurement task failed"),
                    None => break,
                },
            }
        }
        analysis::record_round(&mut run, answers, clock.now());
        if cancel.is_cancelled() {
            return;
        }
        // The loop commits the run: it alone knows whether the run was stopped meanwhile.
        if updates
            .send(Internal::AnalysisUpdated(Box::new(run.clone())))
            .await
            .is_err()
        {
            return;
        }
    }
}
