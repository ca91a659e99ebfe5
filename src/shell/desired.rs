//! What the shell does with what the pull (`crate::pull`) tells it, and the SIGHUP signal.
//!
//! The pull has already judged and recorded every document: this module only applies an
//! accepted one (a stale one keeps what runs and starts nothing new), keeps the refusals and
//! pull failures as site events, and keeps the source's status for `edgeroll get`.

use tokio::sync::mpsc;
use tracing::{error, warn};

use super::{Error, Shell, RECENT_EVENTS};
use crate::pull::PullEvent;
use crate::store::EventRecord;

/// The kind of the site event of a refused document.
pub(super) const DOCUMENT_REFUSED: &str = "DocumentRefused";
/// The kind of the site event of a failed pull.
pub(super) const DOCUMENT_PULL_FAILED: &str = "DocumentPullFailed";

impl Shell {
    /// Handle one event of the pull; `starting` makes a document that cannot be applied an
    /// error (the agent does not start half-configured).
    pub(super) async fn pull_event(
        &mut self,
        event: PullEvent,
        starting: bool,
    ) -> Result<(), Error> {
        match event {
            PullEvent::Apply { document, stale } => {
                if stale {
                    warn!(
                        serial = document.serial,
                        "the desired document has expired: what runs keeps running, and no new rollout starts from it"
                    );
                    if self.document.is_none() {
                        self.document = Some(std::sync::Arc::new(*document));
                    }
                    return Ok(());
                }
                match self.apply_document(*document, starting).await {
                    Err(error) if !starting => {
                        error!(%error, "cannot apply the desired document");
                    }
                    other => other?,
                }
            }
            PullEvent::Refused(refusal) => {
                self.site_event(
                    DOCUMENT_REFUSED.to_owned(),
                    refusal.at,
                    format!("{}: {}", refusal.rule, refusal.message),
                );
            }
            PullEvent::Failed(failure) => {
                self.site_event(DOCUMENT_PULL_FAILED.to_owned(), failure.at, failure.message);
            }
            PullEvent::Source(view) => self.source = Some(*view),
        }
        Ok(())
    }

    pub(super) fn site_event(&mut self, kind: String, at: crate::time::Timestamp, message: String) {
        self.site_events.push_back(EventRecord {
            service: String::new(),
            at,
            kind,
            message,
        });
        while self.site_events.len() > RECENT_EVENTS {
            self.site_events.pop_front();
        }
    }
}

/// A channel that yields once per SIGHUP.
pub(super) fn hangup_signal() -> mpsc::Receiver<()> {
    let (sender, receiver) = mpsc::channel(1);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut signal) => {
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = sender.try_send(());
                }
            });
        }
        Err(error) => warn!(%error, "cannot listen for SIGHUP; reload by editing the file instead"),
    }
    receiver
}
