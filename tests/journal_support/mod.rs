//! The instance journal as a map, standing in for the store in the supervisor and runtime tests
//! (the store's own journal is tested in `tests/store_records.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use edgeroll::runtime::{InstanceJournal, InstanceRecord};

/// Records by instance id.
#[derive(Default)]
pub struct MemJournal(Mutex<BTreeMap<String, InstanceRecord>>);

impl InstanceJournal for MemJournal {
    fn save_instance(&self, record: &InstanceRecord) -> Result<(), String> {
        let mut records = self.0.lock().unwrap();
        records.insert(record.id.clone(), record.clone());
        Ok(())
    }

    fn remove_instance(&self, id: &str) -> Result<(), String> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }

    fn load_instances(&self) -> Result<Vec<InstanceRecord>, String> {
        Ok(self.0.lock().unwrap().values().cloned().collect())
    }
}

impl MemJournal {
    /// The record of `id`; it must be journaled.
    pub fn record(&self, id: &str) -> InstanceRecord {
        self.0.lock().unwrap().get(id).cloned().expect("journaled")
    }

    /// Every journaled id.
    pub fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap().keys().cloned().collect()
    }
}
