//! The supervisor: one task that owns every instance, and one task per instance *slot*.
//!
//! The supervisor task keeps the desired state (a `watch` written by [`SupervisorHandle`]) and the
//! slots, starts and stops slots so that each service runs what is desired, and reports every
//! change of a service's instances. A slot task runs one instance at a time: it starts it (or
//! watches an adopted one), probes its readiness, bounds its logs, restarts it with a backoff when
//! it dies, and stops it when asked.
//!
//! Invariants: a record is journaled right after its process starts and removed only once the
//! process is gone; a service's adopted instances are left alone until the shell has said what it
//! wants for that service; cancelling `shutdown` ends supervision and leaves every workload running.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{
    Adoption, DesiredRevision, InstanceJournal, InstanceRecord, InstanceStatus, InstancesChanged,
    Runtime, SupervisorConfig,
};
use crate::spec::Template;

mod slot;
#[cfg(test)]
use slot::Backoff;
use slot::{journal_remove, status_of, SlotContext, SlotTask};

/// Capacity of the channel from slot tasks to the supervisor task.
const SLOT_EVENTS_CAPACITY: usize = 64;
/// Capacity of the channel of handle commands (`stop_all`, `instances`).
const COMMANDS_CAPACITY: usize = 16;
/// How many instances may be stopping at the same time.
pub const MAX_CONCURRENT_STOPS: usize = 8;
/// Delay before the first restart of an instance that died.
pub const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay between restarts.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An instance that ran at least this long before dying is restarted after the initial delay again.
pub const RESTART_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// How often each instance's log file is checked against its bound.
pub const LOG_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// An instance that exits this soon after its start, before it was ever ready, while its port is
/// held by someone else, lost a race for its port: it is started again at once on a new port.
pub const PORT_CONFLICT_WINDOW: Duration = Duration::from_secs(5);
/// How many times in a row a start is retried on a new port.
pub const PORT_CONFLICT_RETRIES: u32 = 3;
/// Exclusive upper bound of the random suffix of instance ids (six hex digits).
const ID_SUFFIX_BOUND: u32 = 0x100_0000;

/// What the shell wants, as last told through the handle.
#[derive(Debug, Clone, Default)]
struct DesiredState {
    /// Desired revisions of every service the shell has spoken for.
    services: BTreeMap<String, Vec<DesiredRevision>>,
    /// The services that may keep instances; every other one runs nothing. `None` until
    /// `retain_services` (or `stop_all`) is called.
    retained: Option<BTreeSet<String>>,
}

impl DesiredState {
    /// What `service` should run, or `None` while the shell has not said (adopted instances of
    /// such a service are left alone).
    fn for_service(&self, service: &str) -> Option<&[DesiredRevision]> {
        if let Some(desired) = self.services.get(service) {
            return Some(desired);
        }
        match &self.retained {
            Some(retained) if !retained.contains(service) => Some(&[]),
            _ => None,
        }
    }
}

/// A request from the handle that needs an answer.
#[derive(Debug)]
enum Command {
    /// Answer once no instance is stopping any more (the desired state is already empty).
    StopAll(oneshot::Sender<()>),
    /// Answer with the instances of a service.
    Instances(String, oneshot::Sender<Vec<InstanceStatus>>),
}

/// Handle to the running supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    /// The desired state; the supervisor reconciles whenever it changes.
    desired: Arc<watch::Sender<DesiredState>>,
    /// Requests that need an answer from the supervisor task.
    commands: mpsc::Sender<Command>,
    /// The supervisor task and every slot task.
    tasks: TaskTracker,
}

impl SupervisorHandle {
    /// Replace the desired instances of `service`. Never blocks; the supervisor reconciles soon
    /// after. Instances whose revision and template match a desired revision are kept, including
    /// adopted ones.
    pub fn set_desired(&self, service: &str, desired: Vec<DesiredRevision>) {
        self.desired.send_modify(|state| {
            state.services.insert(service.to_string(), desired);
        });
    }

    /// Stop the instances of every service not named in `services` (adopted ones included), and
    /// forget their desired state. Never blocks.
    pub fn retain_services(&self, services: Vec<String>) {
        let retained: BTreeSet<String> = services.into_iter().collect();
        self.desired.send_modify(|state| {
            state
                .services
                .retain(|service, _| retained.contains(service));
            state.retained = Some(retained);
        });
    }

    /// The instances of `service` now (empty once the supervisor has ended).
    pub async fn instances(&self, service: &str) -> Vec<InstanceStatus> {
        let (answer, answered) = oneshot::channel();
        let command = Command::Instances(service.to_string(), answer);
        if self.commands.send(command).await.is_err() {
            return Vec::new();
        }
        answered.await.unwrap_or_default()
    }

    /// Stop every instance of every service and wait for them (used by `demo`, not by `run`).
    /// Each stop is bounded by the stop grace plus the kill deadline. Returns at once if the
    /// supervisor has already ended.
    pub async fn stop_all(&self) {
        self.desired.send_modify(|state| {
            state.services.clear();
            state.retained = Some(BTreeSet::new());
        });
        let (answer, answered) = oneshot::channel();
        if self.commands.send(Command::StopAll(answer)).await.is_ok() {
            let _ = answered.await;
        }
    }

    /// Resolve once the supervisor and all its instance tasks have ended (after `shutdown`).
    pub async fn finished(&self) {
        self.tasks.wait().await;
    }
}

/// Start the supervisor task and return its handle.
pub(super) fn spawn<R: Runtime>(
    runtime: Arc<R>,
    config: SupervisorConfig,
    journal: Arc<dyn InstanceJournal>,
    updates: mpsc::Sender<InstancesChanged>,
    shutdown: CancellationToken,
) -> SupervisorHandle {
    let (desired_sender, desired) = watch::channel(DesiredState::default());
    let (commands_sender, commands) = mpsc::channel(COMMANDS_CAPACITY);
    let (events_sender, events) = mpsc::channel(SLOT_EVENTS_CAPACITY);
    let tasks = TaskTracker::new();
    let context = Arc::new(SlotContext {
        runtime,
        journal,
        stop_grace: config.stop_grace,
        events: events_sender,
        stop_permits: Semaphore::new(MAX_CONCURRENT_STOPS),
        shutdown: shutdown.clone(),
    });
    let supervisor = Supervisor {
        context,
        slots: BTreeMap::new(),
        next_slot: 0,
        events,
        desired,
        commands,
        updates,
        dirty: BTreeSet::new(),
        stop_waiters: Vec::new(),
        tasks: tasks.clone(),
        shutdown,
    };
    tasks.spawn(
        supervisor
            .run()
            .instrument(tracing::info_span!("supervisor")),
    );
    // Closing only means `wait` may resolve once every task has ended; the supervisor task is
    // tracked, so slot tasks it spawns later are still waited for.
    tasks.close();
    SupervisorHandle {
        desired: Arc::new(desired_sender),
        commands: commands_sender,
        tasks,
    }
}

// === supervisor task ===

/// What the supervisor task knows of one slot.
#[derive(Debug)]
struct Slot {
    service: String,
    revision: u64,
    template: Template,
    /// The slot's current instance as last reported; `None` until one has started.
    status: Option<InstanceStatus>,
    /// Set once the slot was told to stop; it no longer counts or appears in reports.
    stopping: bool,
    /// Tells the slot task to stop its instance and end.
    stop: CancellationToken,
}

/// What a slot task tells the supervisor task.
#[derive(Debug)]
enum SlotEvent {
    /// The slot's instance is now this.
    Status { slot: u64, status: InstanceStatus },
    /// The slot stopped its instance and ended.
    Gone { slot: u64 },
}

struct Supervisor<R> {
    context: Arc<SlotContext<R>>,
    /// Every slot, by creation order (a higher number is newer).
    slots: BTreeMap<u64, Slot>,
    next_slot: u64,
    /// Reports from slot tasks; never closes because `context` holds a sender.
    events: mpsc::Receiver<SlotEvent>,
    /// The desired state written by the handles.
    desired: watch::Receiver<DesiredState>,
    /// Requests from the handles.
    commands: mpsc::Receiver<Command>,
    /// Where changes are reported; a full channel delays (and so coalesces) reports.
    updates: mpsc::Sender<InstancesChanged>,
    /// Services whose instances changed since they were last reported.
    dirty: BTreeSet<String>,
    /// `stop_all` callers waiting for the last stopping instance.
    stop_waiters: Vec<oneshot::Sender<()>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl<R: Runtime> Supervisor<R> {
    async fn run(mut self) {
        self.adopt_journaled().await;
        let mut desired_open = true;
        let mut commands_open = true;
        loop {
            let report_pending = !self.dirty.is_empty();
            // Slot events and desired-state changes go first, so that a burst of changes is
            // folded into one report per service.
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(event) = self.events.recv() => self.on_slot_event(event),
                changed = self.desired.changed(), if desired_open => match changed {
                    Ok(()) => self.reconcile_all(),
                    // Every handle is gone: keep supervising the last desired state.
                    Err(_) => desired_open = false,
                },
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(command),
                    None => commands_open = false,
                },
                // An owned permit, because a borrowed one would keep `self` borrowed in the arm.
                permit = self.updates.clone().reserve_owned(), if report_pending => match permit {
                    Ok(permit) => {
                        if let Some(service) = self.dirty.pop_first() {
                            let instances = self.instances_of(&service);
                            permit.send(InstancesChanged { service, instances });
                        }
                    }
                    // Nobody listens any more; supervision goes on regardless.
                    Err(_) => self.dirty.clear(),
                },
            }
        }
        tracing::info!("supervisor stopped; workloads keep running");
    }

    /// Adopt every journaled instance that still runs; forget the others.
    async fn adopt_journaled(&mut self) {
        let journal = Arc::clone(&self.context.journal);
        let records = match tokio::task::spawn_blocking(move || journal.load_instances()).await {
            Ok(Ok(records)) => records,
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not load journaled instances; adopting none");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "could not load journaled instances; adopting none");
                return;
            }
        };
        // What the sweep must leave alone: the adopted, and those that could not be inspected.
        let mut known = Vec::new();
        for record in records {
            match self.context.runtime.adopt(&record).await {
                Ok(Adoption::Adopted) => {
                    tracing::info!(id = %record.id, pid = record.pid, "adopted a running instance");
                    known.push(record.clone());
                    self.add_slot(
                        record.service.clone(),
                        record.revision,
                        record.template.clone(),
                        Some(record),
                    );
                }
                Ok(adoption) => {
                    tracing::info!(id = %record.id, ?adoption, "forgetting a journaled instance that no longer runs");
                    journal_remove(&self.context.journal, &record.id).await;
                }
                Err(error) => {
                    tracing::warn!(id = %record.id, %error, "could not inspect a journaled instance; keeping its record");
                    known.push(record);
                }
            }
        }
        // Ours that no record names (started just before a crash, or a store that was lost):
        // nothing would ever stop them otherwise.
        match self.context.runtime.sweep(&known).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(removed = %removed.join(", "), "removed workloads of this agent that no record names");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not look for unrecorded workloads of this agent")
            }
        }
    }

    fn on_slot_event(&mut self, event: SlotEvent) {
        match event {
            SlotEvent::Status { slot, status } => {
                if let Some(entry) = self.slots.get_mut(&slot) {
                    if entry.status.as_ref() != Some(&status) {
                        entry.status = Some(status);
                        if !entry.stopping {
                            self.dirty.insert(entry.service.clone());
                        }
                    }
                }
            }
            SlotEvent::Gone { slot } => {
                self.slots.remove(&slot);
                self.answer_stop_waiters();
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::StopAll(answer) => {
                self.reconcile_all();
                self.stop_waiters.push(answer);
                self.answer_stop_waiters();
            }
            Command::Instances(service, answer) => {
                let _ = answer.send(self.instances_of(&service));
            }
        }
    }

    fn answer_stop_waiters(&mut self) {
        if self.slots.values().any(|slot| slot.stopping) {
            return;
        }
        for waiter in self.stop_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Bring every service the shell has spoken for to its desired state.
    fn reconcile_all(&mut self) {
        let desired = self.desired.borrow_and_update().clone();
        let services: BTreeSet<String> = self
            .slots
            .values()
            .map(|slot| slot.service.clone())
            .chain(desired.services.keys().cloned())
            .collect();
        for service in services {
            if let Some(revisions) = desired.for_service(&service) {
                self.reconcile(&service, revisions);
            }
        }
    }

    fn reconcile(&mut self, service: &str, desired: &[DesiredRevision]) {
        let live: Vec<SlotView<'_>> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.service == service && !slot.stopping)
            .map(|(id, slot)| SlotView {
                slot: *id,
                revision: slot.revision,
                template: &slot.template,
                ready: slot.status.as_ref().is_some_and(|status| status.ready),
            })
            .collect();
        let plan = plan(&live, desired);
        for slot in plan.stop {
            if let Some(entry) = self.slots.get_mut(&slot) {
                tracing::info!(
                    service,
                    slot,
                    revision = entry.revision,
                    "stopping an instance"
                );
                entry.stopping = true;
                entry.stop.cancel();
                self.dirty.insert(service.to_string());
            }
        }
        for (index, missing) in plan.start {
            let Some(want) = desired.get(index) else {
                continue;
            };
            for _ in 0..missing {
                self.add_slot(
                    service.to_string(),
                    want.revision,
                    want.template.clone(),
                    None,
                );
            }
        }
    }

    /// Create a slot and its task; `adopted` is an instance that already runs.
    fn add_slot(
        &mut self,
        service: String,
        revision: u64,
        template: Template,
        adopted: Option<InstanceRecord>,
    ) {
        let slot = self.next_slot;
        self.next_slot += 1;
        let stop = CancellationToken::new();
        let status = adopted
            .as_ref()
            .map(|record| status_of(self.context.runtime.as_ref(), record, false, 0));
        if status.is_some() {
            self.dirty.insert(service.clone());
        }
        self.slots.insert(
            slot,
            Slot {
                service: service.clone(),
                revision,
                template: template.clone(),
                status,
                stopping: false,
                stop: stop.clone(),
            },
        );
        let span = tracing::info_span!("instance", %service, revision, slot);
        let task = SlotTask {
            context: Arc::clone(&self.context),
            slot,
            service,
            revision,
            template,
            stop,
            restarts: 0,
        };
        self.tasks.spawn(task.run(adopted).instrument(span));
    }

    fn instances_of(&self, service: &str) -> Vec<InstanceStatus> {
        self.slots
            .values()
            .filter(|slot| slot.service == service && !slot.stopping)
            .filter_map(|slot| slot.status.clone())
            .collect()
    }
}

/// A live slot as the reconciliation sees it.
#[derive(Debug, Clone)]
struct SlotView<'a> {
    slot: u64,
    revision: u64,
    template: &'a Template,
    ready: bool,
}

/// What reconciling one service does.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Slots to stop.
    stop: Vec<u64>,
    /// (index into the desired revisions, how many new slots to start).
    start: Vec<(usize, u32)>,
}

/// Decide which slots of a service to keep, stop and start. A slot is kept when its revision and
/// template match a desired revision that still wants instances; ready and older slots are kept
/// first, so the ones stopped are not ready, then newest.
fn plan(live: &[SlotView<'_>], desired: &[DesiredRevision]) -> Plan {
    let mut kept = BTreeSet::new();
    let mut start = Vec::new();
    for (index, want) in desired.iter().enumerate() {
        let mut matching: Vec<&SlotView<'_>> = live
            .iter()
            .filter(|view| {
                view.revision == want.revision
                    && *view.template == want.template
                    && !kept.contains(&view.slot)
            })
            .collect();
        matching.sort_by_key(|view| (!view.ready, view.slot));
        let count = usize::try_from(want.count).unwrap_or(usize::MAX);
        kept.extend(matching.iter().take(count).map(|view| view.slot));
        let missing = want
            .count
            .saturating_sub(u32::try_from(matching.len()).unwrap_or(u32::MAX));
        if missing > 0 {
            start.push((index, missing));
        }
    }
    let stop = live
        .iter()
        .filter(|view| !kept.contains(&view.slot))
        .map(|view| view.slot)
        .collect();
    Plan { stop, start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Readiness;

    fn template(version: &str) -> Template {
        Template {
            version: version.to_string(),
            command: vec!["app".to_string()],
            env: BTreeMap::new(),
            readiness: Readiness::Tcp,
            args: Vec::new(),
            stop_signal: None,
            container: None,
        }
    }

    fn want(revision: u64, template: &Template, count: u32) -> DesiredRevision {
        DesiredRevision {
            revision,
            template: template.clone(),
            count,
        }
    }

    fn view(slot: u64, revision: u64, template: &Template, ready: bool) -> SlotView<'_> {
        SlotView {
            slot,
            revision,
            template,
            ready,
        }
    }

    #[test]
    fn plan_starts_missing_and_stops_undesired_revisions() {
        let one = template("1.0");
        let two = template("2.0");
        let live = [view(0, 1, &one, true), view(1, 1, &one, true)];
        let plan = plan(&live, &[want(2, &two, 2)]);
        assert_eq!(
            plan,
            Plan {
                stop: vec![0, 1],
                start: vec![(0, 2)]
            }
        );
    }

    #[test]
    fn plan_scales_down_not_ready_then_newest_first() {
        let one = template("1.0");
        let live = [
            view(0, 1, &one, true),
            view(1, 1, &one, false),
            view(2, 1, &one, true),
            view(3, 1, &one, true),
        ];
        assert_eq!(plan(&live, &[want(1, &one, 2)]).stop, vec![1, 3]);
    }

    #[test]
    fn plan_replaces_a_revision_whose_template_changed() {
        let one = template("1.0");
        let changed = template("1.0-hotfix");
        let live = [view(0, 1, &one, true)];
        let plan = plan(&live, &[want(1, &changed, 1)]);
        assert_eq!(
            plan,
            Plan {
                stop: vec![0],
                start: vec![(0, 1)]
            }
        );
    }

    #[test]
    fn plan_keeps_matching_instances() {
        let one = template("1.0");
        let two = template("2.0");
        let live = [view(0, 1, &one, true), view(1, 2, &two, false)];
        let plan = plan(&live, &[want(1, &one, 1), want(2, &two, 1)]);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_after_a_long_run() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.next_delay(Duration::from_secs(1)).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            backoff.next_delay(RESTART_BACKOFF_RESET_AFTER),
            RESTART_BACKOFF_INITIAL
        );
        assert_eq!(backoff.next_delay(Duration::ZERO).as_secs(), 2);
    }

    #[test]
    fn desired_state_leaves_unmentioned_services_alone_until_retained() {
        let mut state = DesiredState::default();
        assert!(state.for_service("web").is_none());
        state.retained = Some(BTreeSet::from(["api".to_string()]));
        assert_eq!(state.for_service("web"), Some(&[][..]));
        assert!(state.for_service("api").is_none());
    }
}
