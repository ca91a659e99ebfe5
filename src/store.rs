//! STUB (helper D replaces this file): the embedded store (SQLite).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::runtime::{InstanceJournal, InstanceRecord};
use crate::time::Timestamp;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another agent holds the state directory.
    #[error("another edgeroll agent is using {0}")]
    Locked(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// One entry of a service's event history (and, later, the report outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EventRecord {
    /// Service.
    pub service: String,
    /// When.
    pub at: Timestamp,
    /// Short kind, e.g. `RolloutAborted`.
    pub kind: String,
    /// Human message.
    pub message: String,
}

/// The store.
#[derive(Debug)]
pub struct Store {}

impl Store {
    /// Open (create, migrate) the store in `state_dir`, taking the single-agent lock.
    pub fn open(state_dir: &Path) -> Result<Store, Error> {
        let _ = state_dir;
        Ok(Store {})
    }

    /// Commit a service's rollout state and the events it produced, in one transaction.
    pub fn save_rollout<T: Serialize>(
        &self,
        service: &str,
        state: &T,
        events: &[EventRecord],
    ) -> Result<(), Error> {
        let _ = (service, state, events);
        Ok(())
    }

    /// Every persisted rollout state.
    pub fn load_rollouts<T: DeserializeOwned>(&self) -> Result<Vec<(String, T)>, Error> {
        Ok(vec![])
    }

    /// Forget a service.
    pub fn delete_rollout(&self, service: &str) -> Result<(), Error> {
        let _ = service;
        Ok(())
    }

    /// Commit an analysis run.
    pub fn save_analysis_run<T: Serialize>(
        &self,
        run_id: &str,
        service: &str,
        run: &T,
    ) -> Result<(), Error> {
        let _ = (run_id, service, run);
        Ok(())
    }

    /// Every persisted analysis run of `service`, oldest first.
    pub fn load_analysis_runs<T: DeserializeOwned>(&self, service: &str) -> Result<Vec<T>, Error> {
        let _ = service;
        Ok(vec![])
    }

    /// The latest `limit` events of `service`, oldest first.
    pub fn recent_events(&self, service: &str, limit: usize) -> Result<Vec<EventRecord>, Error> {
        let _ = (service, limit);
        Ok(vec![])
    }
}

impl InstanceJournal for Store {
    fn save_instance(&self, record: &InstanceRecord) -> Result<(), String> {
        let _ = record;
        Ok(())
    }
    fn remove_instance(&self, id: &str) -> Result<(), String> {
        let _ = id;
        Ok(())
    }
    fn load_instances(&self) -> Result<Vec<InstanceRecord>, String> {
        Ok(vec![])
    }
}
