//! Model test: random sequences of save, delete, load and reopen agree with an in-memory model.

use std::collections::BTreeMap;
use std::path::Path;

use edgeroll::store::{EventRecord, Store};
use edgeroll::time::Timestamp;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const SERVICES: [&str; 3] = ["web", "api", "checkout"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    phase: String,
    weight_percent: u8,
}

#[derive(Debug, Clone)]
enum Operation {
    Save {
        service: usize,
        state: State,
        n_events: usize,
    },
    Delete {
        service: usize,
    },
    Load,
    Reopen,
}

fn operation() -> impl Strategy<Value = Operation> {
    let service = 0..SERVICES.len();
    prop_oneof![
        4 => (service.clone(), "[A-Za-z]{0,12}", any::<u8>(), 0..3usize).prop_map(
            |(service, phase, weight_percent, n_events)| Operation::Save {
                service,
                state: State { phase, weight_percent },
                n_events,
            }
        ),
        1 => service.prop_map(|service| Operation::Delete { service }),
        2 => Just(Operation::Load),
        1 => Just(Operation::Reopen),
    ]
}

/// What the store should hold.
#[derive(Debug, Default)]
struct Model {
    states: BTreeMap<String, State>,
    events: BTreeMap<String, Vec<EventRecord>>,
}

fn check(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    let loaded: Vec<(String, State)> = store
        .load_rollouts()
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let expected: Vec<(String, State)> = model
        .states
        .iter()
        .map(|(service, state)| (service.clone(), state.clone()))
        .collect();
    prop_assert_eq!(loaded, expected);
    for service in SERVICES {
        let events = store
            .recent_events(service, usize::MAX)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        let expected = model.events.get(service).cloned().unwrap_or_default();
        prop_assert_eq!(events, expected, "events of {}", service);
    }
    Ok(())
}

fn open(dir: &Path) -> Result<Store, TestCaseError> {
    Store::open(dir).map_err(|error| TestCaseError::fail(error.to_string()))
}

proptest! {
    // Every commit is fsynced, so the case count is kept modest for a busy CI machine.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn store_agrees_with_a_map(operations in proptest::collection::vec(operation(), 1..40)) {
        let temp = tempfile::tempdir().map_err(|error| TestCaseError::fail(error.to_string()))?;
        let mut store = open(temp.path())?;
        let mut model = Model::default();
        let mut clock = 0u64;
        for operation in operations {
            match operation {
                Operation::Save { service, state, n_events } => {
                    let service = SERVICES[service];
                    let events: Vec<EventRecord> = (0..n_events)
                        .map(|n| {
                            clock += 1;
                            EventRecord {
                                service: service.to_owned(),
                                at: Timestamp::from_millis(clock),
                                kind: "PhaseChanged".to_owned(),
                                message: format!("{} event {n}", state.phase),
                            }
                        })
                        .collect();
                    store
                        .save_rollout(service, &state, &events)
                        .map_err(|error| TestCaseError::fail(error.to_string()))?;
                    model.states.insert(service.to_owned(), state);
                    model.events.entry(service.to_owned()).or_default().extend(events);
                }
                Operation::Delete { service } => {
                    let service = SERVICES[service];
                    store
                        .delete_rollout(service)
                        .map_err(|error| TestCaseError::fail(error.to_string()))?;
                    model.states.remove(service);
                    model.events.remove(service);
                }
                Operation::Load => check(&store, &model)?,
                Operation::Reopen => {
                    drop(store);
                    store = open(temp.path())?;
                }
            }
        }
        check(&store, &model)?;
    }
}
