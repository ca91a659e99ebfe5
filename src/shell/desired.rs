//! Where the desired document comes from: a `file://` source, re-read when it changes and on SIGHUP.
//!
//! This module only reads and validates; an invalid document is reported (every problem, with file,
//! line and column) and changes nothing that runs: the last valid document stays in force.

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::config::DesiredSource;
use crate::spec::{parse, Document};

/// Watches the desired source for changes.
#[derive(Debug)]
pub(super) struct Watcher {
    source: DesiredSource,
    /// Modification time and length of the file last read, to notice changes cheaply.
    seen: Option<(Option<SystemTime>, u64)>,
}

impl Watcher {
    pub(super) fn new(source: DesiredSource) -> Self {
        Watcher { source, seen: None }
    }

    fn path(&self) -> Option<&PathBuf> {
        match &self.source {
            DesiredSource::File(path) => Some(path),
            DesiredSource::None => None,
        }
    }

    fn fingerprint(&self) -> Option<(Option<SystemTime>, u64)> {
        let metadata = std::fs::metadata(self.path()?).ok()?;
        Some((metadata.modified().ok(), metadata.len()))
    }

    /// Read and validate the document now; `None` when there is none or it is invalid.
    pub(super) fn load(&mut self) -> Option<Document> {
        let path = self.path()?.clone();
        self.seen = self.fingerprint();
        match parse::load_document(&path) {
            Ok(document) => Some(document),
            Err(diagnostics) => {
                for diagnostic in &diagnostics {
                    error!("{diagnostic}");
                }
                warn!(
                    path = %path.display(),
                    errors = diagnostics.len(),
                    "the desired document is invalid; keeping the last valid one"
                );
                None
            }
        }
    }

    /// Read the document only if the file changed since the last read.
    pub(super) fn load_if_changed(&mut self) -> Option<Document> {
        if self.path().is_none() || self.fingerprint() == self.seen {
            return None;
        }
        self.load()
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
