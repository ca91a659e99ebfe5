//! Image preparation: one task that makes the images of desired revisions present on the site
//! before the shell lets their rollouts start, and removes this agent's images that nothing the
//! shell keeps needs any more.
//!
//! It owns the `images` table (through [`ImageJournal`]): every image it pulled or loaded, so that
//! only those are ever removed. It pulls (or loads an `imageArchive`) with full-jitter backoff
//! between failed attempts, publishes each image's progress for status, and tells the shell
//! [`ImageEvent::Ready`] once an image is present and [`ImageEvent::Failed`] after each failed
//! attempt.
//!
//! It never starts or stops a workload and never decides a rollout. It never removes an image
//! it did not put on the site, one the shell keeps (stable, canary, the revisions kept for
//! `undo`, anything still running), or one being prepared; an image an engine still uses is
//! refused by the engine and tried again later.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Error, Images, PullProgress};
use crate::backoff::Backoff;
use crate::spec::{ContainerSpec, PullPolicy};

/// First wait after a failed pull; doubles up to [`RETRY_MAX`], with full jitter.
pub const RETRY_INITIAL: Duration = Duration::from_secs(2);
/// Longest wait between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Where the images this agent put on the site are recorded (implemented by `store::Store`).
pub trait ImageJournal: Send + Sync {
    /// Remember that this agent pulled or loaded `image`.
    fn record_image(&self, image: &str) -> Result<(), String>;
    /// Forget `image` (it was removed).
    fn forget_image(&self, image: &str) -> Result<(), String>;
    /// Every image this agent put on the site.
    fn load_images(&self) -> Result<Vec<String>, String>;
}

/// What the shell wants of the site's images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesDesired {
    /// Images to make present (a rollout waits for each).
    pub prepare: Vec<ContainerSpec>,
    /// Images in use or kept for `undo`: never removed.
    pub keep: BTreeSet<String>,
}

/// What the task tells the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageEvent {
    /// `image` is present: a rollout that waits for it may start.
    Ready {
        /// The image reference.
        image: String,
    },
    /// An attempt to make `image` present failed; the next one follows after `retry_in`.
    Failed {
        /// The image reference.
        image: String,
        /// Why, as the engine said it.
        reason: String,
        /// Attempts so far.
        attempt: u32,
        /// Wait before the next attempt.
        retry_in: Duration,
    },
}

/// Where one image's preparation stands, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePreparation {
    /// The image reference.
    pub image: String,
    /// `Pulling`, `Loading`, `Waiting` (for the next attempt) or `Present`.
    pub phase: PreparationPhase,
    /// Bytes so far of the current attempt.
    pub progress: PullProgress,
    /// Failed attempts so far.
    pub failures: u32,
    /// The last failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The phase of an image's preparation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PreparationPhase {
    /// Checking whether it is present.
    Checking,
    /// Fetching it from its registry.
    Pulling,
    /// Loading its `imageArchive`.
    Loading,
    /// Waiting for the next attempt after a failure.
    Waiting,
    /// Present.
    Present,
}

/// Each image's preparation, by reference, as it changes.
pub type ProgressReceiver = watch::Receiver<BTreeMap<String, ImagePreparation>>;

/// The shell's side of the task.
#[derive(Debug, Clone)]
pub struct ImagesHandle {
    desired: Arc<watch::Sender<ImagesDesired>>,
    progress: watch::Receiver<BTreeMap<String, ImagePreparation>>,
}

impl ImagesHandle {
    /// Say what the site's images must be; the task acts on the latest value only.
    pub fn set_desired(&self, desired: ImagesDesired) {
        self.desired.send_if_modified(|current| {
            if *current == desired {
                false
            } else {
                *current = desired;
                true
            }
        });
    }

    /// A receiver that changes whenever an image's preparation moves.
    pub fn subscribe(&self) -> ProgressReceiver {
        self.progress.clone()
    }

    /// Every image being prepared (or prepared and still wanted), by reference.
    pub fn progress(&self) -> BTreeMap<String, ImagePreparation> {
        self.progress.borrow().clone()
    }
}

/// Start the task for `runtime`'s images; it ends at `shutdown` (a pull in flight is dropped and
/// starts again, or resumes where the engine allows, after the next start).
pub fn spawn<R: Images>(
    runtime: Arc<R>,
    journal: Arc<dyn ImageJournal>,
    events: mpsc::Sender<ImageEvent>,
    shutdown: CancellationToken,
) -> ImagesHandle {
    let (desired_tx, desired_rx) = watch::channel(ImagesDesired::default());
    let (progress_tx, progress_rx) = watch::channel(BTreeMap::new());
    let task = Task {
        runtime,
        journal,
        events,
        progress: Arc::new(progress_tx),
        attempts: BTreeMap::new(),
        shutdown,
    };
    tokio::spawn(task.run(desired_rx));
    ImagesHandle {
        desired: Arc::new(desired_tx),
        progress: progress_rx,
    }
}

struct Task<R> {
    runtime: Arc<R>,
    journal: Arc<dyn ImageJournal>,
    events: mpsc::Sender<ImageEvent>,
    progress: Arc<watch::Sender<BTreeMap<String, ImagePreparation>>>,
    /// The preparations running, by image, with what they were asked to do.
    attempts: BTreeMap<String, (ContainerSpec, CancellationToken)>,
    shutdown: CancellationToken,
}

impl<R: Images> Task<R> {
    async fn run(mut self, mut desired: watch::Receiver<ImagesDesired>) {
        // The initial (empty) value is not the shell's word: acting on it would remove every
        // image the agent recorded, the revisions kept for `undo` among them, right after a
        // restart. Nothing happens until the shell has said what it prepares and keeps.
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                changed = desired.changed() => if changed.is_err() { break },
            }
            let wanted = desired.borrow_and_update().clone();
            self.reconcile(&wanted);
            self.collect_garbage(&wanted).await;
        }
        for (_, (_, token)) in std::mem::take(&mut self.attempts) {
            token.cancel();
        }
    }

    /// Start a preparation for every image newly asked for; cancel those no longer asked for.
    fn reconcile(&mut self, wanted: &ImagesDesired) {
        let asked: BTreeMap<&str, &ContainerSpec> = wanted
            .prepare
            .iter()
            .map(|spec| (spec.image.as_str(), spec))
            .collect();
        let gone: Vec<String> = self
            .attempts
            .iter()
            .filter(|(image, (spec, _))| asked.get(image.as_str()) != Some(&spec))
            .map(|(image, _)| image.clone())
            .collect();
        for image in gone {
            if let Some((_, token)) = self.attempts.remove(&image) {
                token.cancel();
            }
        }
        self.progress.send_modify(|progress| {
            progress.retain(|image, _| asked.contains_key(image.as_str()));
        });
        for (image, spec) in asked {
            if self.attempts.contains_key(image) {
                continue;
            }
            let token = self.shutdown.child_token();
            self.attempts
                .insert(image.to_string(), (spec.clone(), token.clone()));
            let preparation = Preparation {
                runtime: Arc::clone(&self.runtime),
                journal: Arc::clone(&self.journal),
                events: self.events.clone(),
                progress: Arc::clone(&self.progress),
                spec: spec.clone(),
            };
            tokio::spawn(async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    () = preparation.run() => {}
                }
            });
        }
    }

    /// Remove the images this agent put on the site that nothing kept or asked for names.
    async fn collect_garbage(&self, wanted: &ImagesDesired) {
        let journal = Arc::clone(&self.journal);
        let recorded = match tokio::task::spawn_blocking(move || journal.load_images()).await {
            Ok(Ok(recorded)) => recorded,
            Ok(Err(error)) => {
                warn!(%error, "cannot read the images this agent put on the site; removing none");
                return;
            }
            Err(error) => {
                warn!(%error, "cannot read the images this agent put on the site; removing none");
                return;
            }
        };
        for image in recorded {
            if wanted.keep.contains(&image) || self.attempts.contains_key(&image) {
                continue;
            }
            match self.runtime.remove(&image).await {
                Ok(()) => {
                    info!(%image, "removed an image no kept revision uses");
                    let journal = Arc::clone(&self.journal);
                    let forgotten = image.clone();
                    match tokio::task::spawn_blocking(move || journal.forget_image(&forgotten))
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => warn!(%image, %error, "cannot forget a removed image"),
                        Err(error) => warn!(%image, %error, "cannot forget a removed image"),
                    }
                }
                // In use (a container still runs it) or the engine is down: next time.
                Err(error) => {
                    info!(%image, %error, "an unused image was not removed; trying later")
                }
            }
        }
    }
}

/// One image's preparation: attempts with backoff until it is present.
struct Preparation<R> {
    runtime: Arc<R>,
    journal: Arc<dyn ImageJournal>,
    events: mpsc::Sender<ImageEvent>,
    progress: Arc<watch::Sender<BTreeMap<String, ImagePreparation>>>,
    spec: ContainerSpec,
}

impl<R: Images> Preparation<R> {
    async fn run(self) {
        let image = self.spec.image.clone();
        let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
        let mut failures = 0u32;
        let mut last_error = None;
        loop {
            self.show(
                PreparationPhase::Checking,
                PullProgress::default(),
                failures,
                &last_error,
            );
            match self.attempt(failures, &last_error).await {
                Ok(()) => break,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let retry_in = backoff.next_delay();
                    let reason = error.to_string();
                    warn!(%image, attempt = failures, retry_in = ?retry_in, "image not ready: {reason}");
                    last_error = Some(reason.clone());
                    self.show(
                        PreparationPhase::Waiting,
                        PullProgress::default(),
                        failures,
                        &last_error,
                    );
                    let _ = self
                        .events
                        .send(ImageEvent::Failed {
                            image: image.clone(),
                            reason,
                            attempt: failures,
                            retry_in,
                        })
                        .await;
                    tokio::time::sleep(retry_in).await;
                }
            }
        }
        let journal = Arc::clone(&self.journal);
        let recorded = image.clone();
        match tokio::task::spawn_blocking(move || journal.record_image(&recorded)).await {
            Ok(Ok(())) => {}
            // Not fatal: an unrecorded image is only never removed by this agent.
            Ok(Err(error)) => warn!(%image, %error, "cannot record an image this agent prepared"),
            Err(error) => warn!(%image, %error, "cannot record an image this agent prepared"),
        }
        self.show(
            PreparationPhase::Present,
            PullProgress::default(),
            failures,
            &last_error,
        );
        info!(%image, "image present");
        let _ = self.events.send(ImageEvent::Ready { image }).await;
    }

    /// Make the image present once: per `pullPolicy` and `imageArchive`.
    async fn attempt(&self, failures: u32, last_error: &Option<String>) -> Result<(), Error> {
        let spec = &self.spec;
        let present = self.runtime.present(&spec.image).await?;
        match (&spec.image_archive, spec.pull_policy) {
            (Some(archive), PullPolicy::Always) => self.load(archive, failures, last_error).await,
            (None, PullPolicy::Always) => self.pull(failures, last_error).await,
            _ if present => Ok(()),
            (Some(archive), _) => self.load(archive, failures, last_error).await,
            (None, PullPolicy::Never) => Err(Error::ImageMissing {
                image: spec.image.clone(),
            }),
            (None, PullPolicy::IfNotPresent) => self.pull(failures, last_error).await,
        }
    }

    async fn pull(&self, failures: u32, last_error: &Option<String>) -> Result<(), Error> {
        let (sender, receiver) = watch::channel(PullProgress::default());
        let work = self.runtime.pull(&self.spec.image, &sender);
        self.follow(
            work,
            receiver,
            PreparationPhase::Pulling,
            failures,
            last_error,
        )
        .await
    }

    async fn load(
        &self,
        archive: &Path,
        failures: u32,
        last_error: &Option<String>,
    ) -> Result<(), Error> {
        let (sender, receiver) = watch::channel(PullProgress::default());
        let work = self.runtime.load(archive, &sender);
        let loaded = self
            .follow(
                work,
                receiver,
                PreparationPhase::Loading,
                failures,
                last_error,
            )
            .await?;
        if self.runtime.present(&self.spec.image).await? {
            return Ok(());
        }
        Err(Error::Engine {
            what: format!("load {}", archive.display()),
            message: format!(
                "the archive holds {}, not {}",
                if loaded.is_empty() {
                    "no named image".to_string()
                } else {
                    loaded.join(", ")
                },
                self.spec.image
            ),
            transient: false,
        })
    }

    /// Drive `work` while showing its progress.
    async fn follow<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, Error>>,
        mut receiver: watch::Receiver<PullProgress>,
        phase: PreparationPhase,
        failures: u32,
        last_error: &Option<String>,
    ) -> Result<T, Error> {
        self.show(phase, PullProgress::default(), failures, last_error);
        tokio::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => return result,
                changed = receiver.changed() => {
                    if changed.is_err() {
                        return work.await;
                    }
                    let progress = receiver.borrow_and_update().clone();
                    self.show(phase, progress, failures, last_error);
                }
            }
        }
    }

    fn show(
        &self,
        phase: PreparationPhase,
        progress: PullProgress,
        failures: u32,
        last_error: &Option<String>,
    ) {
        let image = self.spec.image.clone();
        let entry = ImagePreparation {
            image: image.clone(),
            phase,
            progress,
            failures,
            last_error: last_error.clone(),
        };
        self.progress.send_modify(|progress| {
            progress.insert(image, entry);
        });
    }
}

#[cfg(test)]
mod tests {
    //! The task's policy (which call each `pullPolicy` makes, retries with backoff, what is
    //! removed) with a paused clock, over an in-memory image store: retry timing cannot be
    //! driven through a real engine. The engines themselves are tested in
    //! `tests/runtime_docker.rs` and `tests/runtime_containerd.rs`.

    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Engine {
        present: Mutex<BTreeSet<String>>,
        /// Pulls that fail before one succeeds.
        failing_pulls: Mutex<u32>,
        calls: Mutex<Vec<String>>,
        /// What a load of any archive yields.
        archive_holds: Mutex<Vec<String>>,
    }

    impl Engine {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        fn call(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl Images for Engine {
        async fn present(&self, image: &str) -> Result<bool, Error> {
            Ok(self.present.lock().unwrap().contains(image))
        }
        async fn pull(
            &self,
            image: &str,
            progress: &watch::Sender<PullProgress>,
        ) -> Result<(), Error> {
            self.call(format!("pull {image}"));
            {
                let mut failing = self.failing_pulls.lock().unwrap();
                if *failing > 0 {
                    *failing -= 1;
                    return Err(Error::Engine {
                        what: format!("pull {image}"),
                        message: "connection reset".into(),
                        transient: true,
                    });
                }
            }
            let _ = progress.send(PullProgress {
                done_bytes: 10,
                total_bytes: Some(10),
                detail: String::new(),
            });
            self.present.lock().unwrap().insert(image.to_owned());
            Ok(())
        }
        async fn load(
            &self,
            archive: &Path,
            _progress: &watch::Sender<PullProgress>,
        ) -> Result<Vec<String>, Error> {
            self.call(format!("load {}", archive.display()));
            let holds = self.archive_holds.lock().unwrap().clone();
            self.present.lock().unwrap().extend(holds.iter().cloned());
            Ok(holds)
        }
        async fn remove(&self, image: &str) -> Result<(), Error> {
            self.call(format!("remove {image}"));
            self.present.lock().unwrap().remove(image);
            Ok(())
        }
    }

    #[derive(Default)]
    struct Journal(Mutex<BTreeSet<String>>);

    impl ImageJournal for Journal {
        fn record_image(&self, image: &str) -> Result<(), String> {
            self.0.lock().unwrap().insert(image.to_owned());
            Ok(())
        }
        fn forget_image(&self, image: &str) -> Result<(), String> {
            self.0.lock().unwrap().remove(image);
            Ok(())
        }
        fn load_images(&self) -> Result<Vec<String>, String> {
            Ok(self.0.lock().unwrap().iter().cloned().collect())
        }
    }

    fn spec(image: &str, policy: PullPolicy, archive: Option<&str>) -> ContainerSpec {
        ContainerSpec {
            image: image.to_owned(),
            image_archive: archive.map(Into::into),
            pull_policy: policy,
            cpu_millis: None,
            memory_bytes: None,
        }
    }

    struct Harness {
        engine: Arc<Engine>,
        journal: Arc<Journal>,
        handle: ImagesHandle,
        events: mpsc::Receiver<ImageEvent>,
        _shutdown: tokio_util::sync::DropGuard,
    }

    fn harness(engine: Engine) -> Harness {
        harness_with(engine, Journal::default())
    }

    fn harness_with(engine: Engine, journal: Journal) -> Harness {
        let engine = Arc::new(engine);
        let journal = Arc::new(journal);
        let (sender, events) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let handle = spawn(
            Arc::clone(&engine),
            Arc::clone(&journal) as Arc<dyn ImageJournal>,
            sender,
            shutdown.clone(),
        );
        Harness {
            engine,
            journal,
            handle,
            events,
            _shutdown: shutdown.drop_guard(),
        }
    }

    fn prepare(harness: &Harness, specs: Vec<ContainerSpec>) {
        let keep = specs.iter().map(|spec| spec.image.clone()).collect();
        harness.handle.set_desired(ImagesDesired {
            prepare: specs,
            keep,
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_present_image_is_ready_without_a_pull() {
        let engine = Engine::default();
        engine.present.lock().unwrap().insert("app:1".into());
        let mut harness = harness(engine);
        prepare(
            &harness,
            vec![spec("app:1", PullPolicy::IfNotPresent, None)],
        );
        let event = harness.events.recv().await.unwrap();
        assert_eq!(
            event,
            ImageEvent::Ready {
                image: "app:1".into()
            }
        );
        assert!(harness.engine.calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_pull_is_retried_with_growing_jittered_waits_until_it_succeeds() {
        let engine = Engine::default();
        *engine.failing_pulls.lock().unwrap() = 3;
        let mut harness = harness(engine);
        let started = tokio::time::Instant::now();
        prepare(
            &harness,
            vec![spec("app:2", PullPolicy::IfNotPresent, None)],
        );
        let mut retry_waits = Vec::new();
        loop {
            match harness.events.recv().await.unwrap() {
                ImageEvent::Failed {
                    attempt,
                    retry_in,
                    reason,
                    ..
                } => {
                    assert_eq!(attempt as usize, retry_waits.len() + 1);
                    assert!(reason.contains("connection reset"), "{reason}");
                    retry_waits.push(retry_in);
                }
                ImageEvent::Ready { image } => {
                    assert_eq!(image, "app:2");
                    break;
                }
            }
        }
        assert_eq!(retry_waits.len(), 3);
        for (index, wait) in retry_waits.iter().enumerate() {
            // Full jitter under a ceiling of 2 s, 4 s, 8 s.
            assert!(
                *wait <= RETRY_INITIAL * 2u32.pow(index as u32),
                "{retry_waits:?}"
            );
        }
        assert!(started.elapsed() >= retry_waits.iter().sum::<Duration>());
        assert_eq!(harness.engine.calls().len(), 4);
        assert_eq!(
            harness.journal.load_images().unwrap(),
            vec!["app:2".to_owned()]
        );
        let shown = harness.handle.progress();
        assert_eq!(shown["app:2"].phase, PreparationPhase::Present);
        assert_eq!(shown["app:2"].failures, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn policy_never_does_not_pull_and_always_pulls_a_present_image() {
        let engine = Engine::default();
        engine.present.lock().unwrap().insert("present:1".into());
        let mut harness = harness(engine);
        prepare(&harness, vec![spec("absent:1", PullPolicy::Never, None)]);
        let ImageEvent::Failed { reason, .. } = harness.events.recv().await.unwrap() else {
            panic!("expected a failure");
        };
        assert!(reason.contains("absent:1 is not present"), "{reason}");
        prepare(&harness, vec![spec("present:1", PullPolicy::Always, None)]);
        let event = harness.events.recv().await.unwrap();
        assert_eq!(
            event,
            ImageEvent::Ready {
                image: "present:1".into()
            }
        );
        assert_eq!(harness.engine.calls(), ["pull present:1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_archive_is_loaded_and_must_hold_the_image() {
        let engine = Engine::default();
        *engine.archive_holds.lock().unwrap() = vec!["other:9".into()];
        let mut harness = harness(engine);
        prepare(
            &harness,
            vec![spec(
                "app:3",
                PullPolicy::IfNotPresent,
                Some("/images/app.tar"),
            )],
        );
        let ImageEvent::Failed { reason, .. } = harness.events.recv().await.unwrap() else {
            panic!("expected a failure");
        };
        assert!(reason.contains("holds other:9, not app:3"), "{reason}");
        assert!(!harness
            .engine
            .calls()
            .iter()
            .any(|call| call.starts_with("pull")));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_removed_before_the_shell_says_what_it_keeps() {
        // A restarted agent: images recorded by its previous run, and no word from the shell
        // yet (it opens its services first).
        let engine = Engine::default();
        engine.present.lock().unwrap().insert("undo:1".into());
        let journal = Journal::default();
        journal.record_image("undo:1").unwrap();
        let harness = harness_with(engine, journal);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            harness.engine.calls().is_empty(),
            "{:?}",
            harness.engine.calls()
        );
        harness.handle.set_desired(ImagesDesired {
            prepare: Vec::new(),
            keep: ["undo:1".to_owned()].into(),
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            harness.engine.calls().is_empty(),
            "{:?}",
            harness.engine.calls()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_recorded_images_that_nothing_keeps_are_removed() {
        let engine = Engine::default();
        engine.present.lock().unwrap().extend([
            "old:1".to_owned(),
            "stable:2".to_owned(),
            "theirs:1".to_owned(),
        ]);
        let harness = harness(engine);
        harness.journal.record_image("old:1").unwrap();
        harness.journal.record_image("stable:2").unwrap();
        harness.handle.set_desired(ImagesDesired {
            prepare: Vec::new(),
            keep: ["stable:2".to_owned()].into(),
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(harness.engine.calls(), ["remove old:1"]);
        assert_eq!(
            harness.journal.load_images().unwrap(),
            vec!["stable:2".to_owned()]
        );
        assert!(harness.engine.present.lock().unwrap().contains("theirs:1"));
    }
}
