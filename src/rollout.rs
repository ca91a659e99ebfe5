//! STUB (replaced by the lead): the pure rollout core.

use serde::{Deserialize, Serialize};

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
