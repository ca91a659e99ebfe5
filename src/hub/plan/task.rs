//! The plan task: reads the plan files, evaluates every plan on a tick, commits each change to
//! the store, and only then publishes the plans' wave documents into the catalog.
//!
//! Owns the runs in memory (one per plan name) and the operator actions, which reach it over a
//! channel. It reads site summaries from the store and poll times from presence; it never
//! writes anything but its own `plans` rows, and it never publishes a state the store does not
//! hold (a failed commit leaves the state as it was, to be tried again on the next tick).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::engine::{self, Action, PlanState, SiteFacts};
use super::spec::{self, PlanSpec};
use super::view::{PlanPhase, PlanView, StateCounts, WavePhase, WaveView};
use crate::hub::catalog::{ServedDocument, Signer};
use crate::hub::store::HubStore;
use crate::hub::Shared;
use crate::time::Timestamp;
use crate::wire::signature::SigningKey;

/// An operator's action, with where to send the answer.
#[derive(Debug)]
pub struct ActionRequest {
    /// The plan's name.
    pub plan: String,
    /// The action.
    pub action: Action,
    /// The answer: what was done, or why not.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// One run of a plan: the spec it runs (kept, so a changed file never changes a running plan)
/// and its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The spec the run started with.
    pub spec: PlanSpec,
    /// Its state.
    pub state: PlanState,
}

/// The plan task's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The documents directory (plan files are `*.plan.toml` in it).
    pub documents: PathBuf,
    /// How often plans are evaluated.
    pub interval: Duration,
    /// How often the plan files are read again.
    pub reload_interval: Duration,
}

/// What the task holds.
pub struct Plans {
    runs: BTreeMap<String, Run>,
    /// Why a plan's file is not what runs (changed under a running plan, removed, invalid).
    problems: BTreeMap<String, String>,
    /// Plans whose file is valid but that have not started (they select no known site).
    waiting: BTreeMap<String, (PlanSpec, String)>,
    signer: Arc<Option<SigningKey>>,
    /// Documents already made, by serial: signed once, served the same afterwards.
    made: BTreeMap<u64, Arc<ServedDocument>>,
}

impl Plans {
    /// The runs the store holds.
    pub async fn recover(
        store: &HubStore,
        signer: Arc<Option<SigningKey>>,
    ) -> Result<Plans, crate::hub::store::StoreError> {
        let mut runs = BTreeMap::new();
        let mut problems = BTreeMap::new();
        for (name, text) in store.plans().await? {
            match serde_json::from_str::<Run>(&text) {
                Ok(run) => {
                    runs.insert(name, run);
                }
                Err(error) => {
                    tracing::error!(plan = %name, %error, "cannot read the plan's stored run; it is not served");
                    problems.insert(name, format!("its stored run cannot be read: {error}"));
                }
            }
        }
        Ok(Plans {
            runs,
            problems,
            waiting: BTreeMap::new(),
            signer,
            made: BTreeMap::new(),
        })
    }

    /// The wave documents of every run, signed by the hub when it has a key.
    pub fn documents(&mut self) -> Vec<Arc<ServedDocument>> {
        let mut documents = Vec::new();
        for (name, run) in &self.runs {
            for wave in engine::documents(&run.spec, &run.state) {
                if let Some(made) = self.made.get(&wave.serial) {
                    documents.push(Arc::clone(made));
                    continue;
                }
                let file = format!("{name}/{}@{}.json", wave.wave, wave.serial);
                let text = String::from_utf8_lossy(&wave.body).into_owned();
                let document = match crate::spec::parse::parse_document(Path::new(&file), &text) {
                    Ok(document) => document,
                    Err(diagnostics) => {
                        // The release parsed when the plan was read; this would be a bug.
                        for diagnostic in diagnostics {
                            tracing::error!(plan = %name, "{diagnostic}");
                        }
                        continue;
                    }
                };
                let (signature, signer) = match self.signer.as_ref() {
                    Some(key) => {
                        let comment =
                            format!("serial:{} plan:{name} wave:{}", wave.serial, wave.wave);
                        match key.sign(&wave.body, &comment) {
                            Ok(signature) => (Some(signature), Signer::Hub(key.key_id.clone())),
                            Err(error) => {
                                tracing::error!(plan = %name, %error, "cannot sign a wave document; it is not served");
                                continue;
                            }
                        }
                    }
                    None => (None, Signer::Unsigned),
                };
                let served = Arc::new(ServedDocument::new(
                    file,
                    &document,
                    Bytes::from(wave.body),
                    signature,
                    signer,
                ));
                self.made.insert(wave.serial, Arc::clone(&served));
                documents.push(served);
            }
        }
        documents
    }

    /// The lowest serial nobody has served: above the directory's, every run's and `floor`.
    fn next_serial(&self, directory_highest: u64, floor: u64) -> u64 {
        let runs = self
            .runs
            .values()
            .filter_map(|run| run.state.highest_serial())
            .max()
            .unwrap_or(0);
        directory_highest.max(runs).max(floor) + 1
    }

    /// Read the plan files of `dir` again: start plans that are new (or whose finished run's
    /// file changed), and note what cannot be run.
    pub fn reload(&mut self, dir: &Path) {
        let mut seen = Vec::new();
        let mut problems = BTreeMap::new();
        let mut waiting = BTreeMap::new();
        for path in plan_files(dir) {
            match spec::load(&path) {
                Ok(spec) => {
                    let name = spec.name.clone();
                    if seen.contains(&name) {
                        problems.insert(
                            name.clone(),
                            format!("{}: another plan file has the name {name}", path.display()),
                        );
                        continue;
                    }
                    seen.push(name.clone());
                    match self.runs.get(&name) {
                        Some(run) if run.spec.digest == spec.digest => {}
                        Some(run) if !run.state.finished() => {
                            problems.insert(
                                name,
                                format!(
                                    "{} changed while the plan runs: the run keeps the plan it started with; abort it (or let it finish) to run the new one",
                                    path.display()
                                ),
                            );
                        }
                        _ => {
                            waiting.insert(name, (spec, String::new()));
                        }
                    }
                }
                Err(diagnostics) => {
                    let name = path
                        .file_name()
                        .and_then(|name| name.to_str())
                        .and_then(|name| name.strip_suffix(spec::PLAN_SUFFIX))
                        .unwrap_or("plan")
                        .to_owned();
                    for diagnostic in &diagnostics {
                        tracing::error!("{diagnostic}");
                    }
                    let first = diagnostics
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    problems.insert(
                        name,
                        format!(
                            "the plan file is invalid ({} problems; the first: {first})",
                            diagnostics.len()
                        ),
                    );
                    seen.push(String::new());
                }
            }
        }
        for name in self.runs.keys() {
            if !seen.contains(name) && !problems.contains_key(name) {
                problems.insert(
                    name.clone(),
                    "its plan file was removed: its documents are still served; put the file back and abort it to roll back".to_owned(),
                );
            }
        }
        self.problems = problems;
        self.waiting = waiting;
    }

    /// Evaluate every plan at `now`; returns the runs that changed (to be committed).
    fn evaluate(
        &mut self,
        sites: &[SiteFacts<'_>],
        published: &BTreeSet<u64>,
        now: Timestamp,
        directory_highest: u64,
    ) -> (Vec<String>, Vec<PlanView>) {
        let mut changed = Vec::new();
        let mut views = Vec::new();
        // Plans that wait to start begin when some site the hub knows is a member.
        let waiting = std::mem::take(&mut self.waiting);
        for (name, (spec, _)) in waiting {
            let members = sites
                .iter()
                .filter(|site| {
                    spec.wave_of(&site.summary.site, &site.summary.labels)
                        .is_some()
                })
                .count();
            if members == 0 {
                let message = format!(
                    "not started: it selects none of the {} sites the hub knows",
                    sites.len()
                );
                self.waiting.insert(name, (spec, message));
                continue;
            }
            tracing::info!(plan = %name, members, "plan starts");
            let state = PlanState::new(&spec, now);
            self.runs.insert(name.clone(), Run { spec, state });
            changed.push(name);
        }
        let names: Vec<String> = self.runs.keys().cloned().collect();
        for name in names {
            let next = {
                let Some(run) = self.runs.get(&name) else {
                    continue;
                };
                self.next_serial(directory_highest, run.spec.release.serial.saturating_sub(1))
            };
            let Some(run) = self.runs.get_mut(&name) else {
                continue;
            };
            let evaluation =
                engine::evaluate(&run.spec, &mut run.state, sites, published, now, next);
            if evaluation.changed && !changed.contains(&name) {
                changed.push(name.clone());
            }
            let mut view = evaluation.view;
            if let Some(problem) = self.problems.get(&name) {
                view.message = format!("{problem}. {}", view.message);
            }
            views.push(view);
        }
        for (spec, message) in self.waiting.values() {
            views.push(pending_view(spec, message));
        }
        for (name, problem) in &self.problems {
            if !views.iter().any(|view| &view.name == name) {
                views.push(PlanView {
                    name: name.clone(),
                    file: String::new(),
                    phase: PlanPhase::Pending,
                    message: problem.clone(),
                    release: BTreeMap::new(),
                    current_wave: 0,
                    waves: Vec::new(),
                    events: Vec::new(),
                });
            }
        }
        views.sort_by(|left, right| left.name.cmp(&right.name));
        (changed, views)
    }
}

fn pending_view(spec: &PlanSpec, message: &str) -> PlanView {
    PlanView {
        name: spec.name.clone(),
        file: spec.file.display().to_string(),
        phase: PlanPhase::Pending,
        message: message.to_owned(),
        release: spec.release.versions.clone(),
        current_wave: 0,
        waves: spec
            .waves
            .iter()
            .map(|wave| WaveView {
                name: wave.name.clone(),
                selector: wave.selector.clone(),
                phase: WavePhase::Pending,
                serial: None,
                members: 0,
                reachable: 0,
                counts: StateCounts::default(),
                needed: 0,
                max_aborted: 0,
                bake_seconds: wave.bake.as_secs(),
                healthy_since: None,
                started_at: None,
                completed_at: None,
                sites: Vec::new(),
            })
            .collect(),
        events: Vec::new(),
    }
}

/// The plan files of `dir`, by name.
pub fn plan_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| spec::is_plan_file(path) && path.is_file())
        .collect();
    files.sort();
    files
}

/// Commit the runs named in `changed`; on failure, the runs go back to `before`.
async fn commit(
    shared: &Shared,
    plans: &mut Plans,
    changed: &[String],
    before: &BTreeMap<String, Run>,
) -> bool {
    for name in changed {
        let Some(run) = plans.runs.get(name) else {
            continue;
        };
        let text = match serde_json::to_string(run) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(plan = %name, %error, "cannot encode the plan's run");
                restore(plans, changed, before);
                return false;
            }
        };
        if let Err(error) = shared.store.save_plan(name.clone(), text).await {
            tracing::error!(plan = %name, %error, "cannot save the plan's run; it is not published, and is tried again");
            restore(plans, changed, before);
            return false;
        }
    }
    true
}

fn restore(plans: &mut Plans, changed: &[String], before: &BTreeMap<String, Run>) {
    for name in changed {
        match before.get(name) {
            Some(run) => {
                plans.runs.insert(name.clone(), run.clone());
            }
            None => {
                if let Some(run) = plans.runs.remove(name) {
                    plans
                        .waiting
                        .insert(name.clone(), (run.spec, String::new()));
                }
            }
        }
    }
}

/// Publish every run's documents into the catalog, once their serials are recorded.
pub async fn publish(shared: &Shared, plans: &mut Plans) {
    let documents = plans.documents();
    let served = documents
        .iter()
        .map(|document| (document.serial, document.name.clone()))
        .collect();
    if let Err(error) = shared
        .store
        .record_published(served, shared.clock.now())
        .await
    {
        tracing::error!(%error, "cannot record the plans' serials; their documents are published on the next change");
        return;
    }
    if let Err(problems) = shared.publish_plans(documents) {
        for problem in problems {
            tracing::error!("cannot publish the plans' documents: {problem}");
        }
    }
}

/// Evaluate, commit, publish: one tick.
pub async fn tick(shared: &Shared, plans: &mut Plans) {
    if plans.runs.is_empty() && plans.waiting.is_empty() {
        // No plan: nothing to read the fleet for (a hub without plans pays nothing per tick).
        let (_, views) = plans.evaluate(&[], &BTreeSet::new(), shared.clock.now(), 0);
        shared.set_plan_views(views);
        return;
    }
    let sites = match shared.known_sites().await {
        Ok(sites) => sites,
        Err(error) => {
            tracing::warn!(%error, "cannot read the sites; plans are evaluated on the next tick");
            return;
        }
    };
    let facts: Vec<SiteFacts<'_>> = sites
        .iter()
        .map(|(summary, heard)| SiteFacts {
            summary,
            last_heard: *heard,
        })
        .collect();
    let published = match shared.store.published().await {
        Ok(published) => published,
        Err(error) => {
            tracing::warn!(%error, "cannot read the published serials; plans are evaluated on the next tick");
            return;
        }
    };
    let before = plans.runs.clone();
    let now = shared.clock.now();
    let directory_highest = shared.directory().highest_serial();
    let (changed, views) = plans.evaluate(&facts, &published, now, directory_highest);
    if !changed.is_empty() {
        if commit(shared, plans, &changed, &before).await {
            for name in &changed {
                if let Some(run) = plans.runs.get(name) {
                    if let Some(event) = run.state.events.last() {
                        tracing::info!(plan = %name, kind = %event.kind, "{}", event.message);
                    }
                }
            }
            publish(shared, plans).await;
        } else {
            return;
        }
    }
    shared.set_plan_views(views);
}

/// Apply one operator action: act, commit, publish, then evaluate at once.
async fn apply(shared: &Shared, plans: &mut Plans, request: ActionRequest) {
    let ActionRequest {
        plan,
        action,
        reply,
    } = request;
    let directory_highest = shared.directory().highest_serial();
    let next = match plans.runs.get(&plan) {
        Some(run) => {
            plans.next_serial(directory_highest, run.spec.release.serial.saturating_sub(1))
        }
        None => {
            let message = if plans.waiting.contains_key(&plan) {
                format!("plan {plan} has not started: it selects none of the sites the hub knows")
            } else {
                format!("no plan named {plan}")
            };
            let _ = reply.send(Err(message));
            return;
        }
    };
    let before = plans.runs.clone();
    let Some(run) = plans.runs.get_mut(&plan) else {
        return;
    };
    let now = shared.clock.now();
    match engine::act(&run.spec, &mut run.state, action, now, next) {
        Ok(message) => {
            if commit(shared, plans, std::slice::from_ref(&plan), &before).await {
                tracing::info!(plan = %plan, action = action.verb(), "{message}");
                publish(shared, plans).await;
                let _ = reply.send(Ok(message));
                tick(shared, plans).await;
            } else {
                let _ = reply.send(Err(format!(
                    "plan {plan}: the hub's store did not take the change; nothing was done"
                )));
            }
        }
        Err(message) => {
            let _ = reply.send(Err(message));
        }
    }
}

/// Run the plan task until the hub stops.
pub async fn run(
    settings: Settings,
    shared: Arc<Shared>,
    mut plans: Plans,
    mut actions: mpsc::Receiver<ActionRequest>,
) {
    let mut evaluate = tokio::time::interval(settings.interval);
    evaluate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reread = tokio::time::interval(settings.reload_interval);
    reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            Some(request) = actions.recv() => apply(&shared, &mut plans, request).await,
            _ = reread.tick() => {
                // A few small files: read in place rather than moving the plans to a thread.
                plans.reload(&settings.documents);
                tick(&shared, &mut plans).await;
            }
            _ = evaluate.tick() => tick(&shared, &mut plans).await,
        }
    }
}
