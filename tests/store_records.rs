//! Round trips, caps, the single-agent lock and refusals of the embedded store.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use edgeroll::runtime::{InstanceJournal, InstanceRecord};
use edgeroll::spec::{Readiness, Template};
use edgeroll::store::{self, EventRecord, Store};
use edgeroll::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RolloutState {
    phase: String,
    step: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    name: String,
    measurements: Vec<f64>,
}

fn event(service: &str, at: u64, message: &str) -> EventRecord {
    EventRecord {
        service: service.to_owned(),
        at: Timestamp::from_millis(at),
        kind: "StepCompleted".to_owned(),
        message: message.to_owned(),
    }
}

fn instance(id: &str, service: &str) -> InstanceRecord {
    InstanceRecord {
        id: id.to_owned(),
        service: service.to_owned(),
        revision: 3,
        template: Template {
            version: "2.0.0".to_owned(),
            command: vec!["edgeroll".to_owned(), "sample-app".to_owned()],
            env: BTreeMap::from([("MODE".to_owned(), "demo".to_owned())]),
            readiness: Readiness::HttpGet {
                path: "/healthz".to_owned(),
            },
            args: Vec::new(),
            stop_signal: None,
            container: None,
        },
        address: "127.0.0.1:40123".parse().expect("address"),
        pid: 4242,
        start_ticks: 123_456,
        started_at: Timestamp::from_millis(1_795_773_600_000),
        log_path: "/var/log/edgeroll/web.log".into(),
        container: None,
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir).expect("open store")
}

#[test]
fn rollout_states_survive_reopen_and_overwrite() {
    let temp = tempfile::tempdir().expect("tempdir");
    let state_dir = temp.path().join("state");
    {
        let store = open(&state_dir);
        let web = RolloutState {
            phase: "CanaryObserving".to_owned(),
            step: 2,
        };
        let api = RolloutState {
            phase: "Promoted".to_owned(),
            step: 4,
        };
        store.save_rollout("web", &web, &[]).expect("save web");
        store.save_rollout("api", &api, &[]).expect("save api");
        let web = RolloutState { step: 3, ..web };
        store.save_rollout("web", &web, &[]).expect("overwrite web");
    }
    let store = open(&state_dir);
    let loaded: Vec<(String, RolloutState)> = store.load_rollouts().expect("load");
    assert_eq!(
        loaded,
        vec![
            (
                "api".to_owned(),
                RolloutState {
                    phase: "Promoted".to_owned(),
                    step: 4
                }
            ),
            (
                "web".to_owned(),
                RolloutState {
                    phase: "CanaryObserving".to_owned(),
                    step: 3
                }
            ),
        ]
    );

    store.delete_rollout("web").expect("delete");
    let loaded: Vec<(String, RolloutState)> = store.load_rollouts().expect("load");
    assert_eq!(
        loaded
            .iter()
            .map(|(service, _)| service.as_str())
            .collect::<Vec<_>>(),
        ["api"]
    );
}

#[test]
fn state_dir_is_created_private_to_the_agent_group() {
    let temp = tempfile::tempdir().expect("tempdir");
    let state_dir = temp.path().join("var/lib/edgeroll");
    let _store = open(&state_dir);
    let mode = std::fs::metadata(&state_dir)
        .expect("state dir")
        .permissions()
        .mode();
    // The umask may only remove bits, so the group and other bits are at most 0750's.
    assert_eq!(mode & 0o027, 0, "mode {mode:o}");
    assert!(state_dir.join(store::DATABASE_FILE_NAME).exists());
    let pid = std::fs::read_to_string(state_dir.join(store::LOCK_FILE_NAME)).expect("lock file");
    assert_eq!(pid.trim(), std::process::id().to_string());
}

#[test]
fn events_are_kept_in_order_and_capped_per_service() {
    let temp = tempfile::tempdir().expect("tempdir");
    let store = open(temp.path());
    let state = RolloutState {
        phase: "Pending".to_owned(),
        step: 0,
    };
    let first_batch: Vec<EventRecord> = (0..1_005)
        .map(|n| event("web", n, &format!("web {n}")))
        .collect();
    store
        .save_rollout("web", &state, &first_batch)
        .expect("save first batch");
    store
        .save_rollout("api", &state, &[event("api", 7, "api 0")])
        .expect("save api");
    let second_batch: Vec<EventRecord> = (1_005..1_015)
        .map(|n| event("web", n, &format!("web {n}")))
        .collect();
    store
        .save_rollout("web", &state, &second_batch)
        .expect("save second batch");

    let web = store.recent_events("web", usize::MAX).expect("web events");
    assert_eq!(web.len(), store::EVENTS_KEPT_PER_SERVICE);
    assert_eq!(web.first().map(|e| e.message.as_str()), Some("web 15"));
    assert_eq!(web.last().map(|e| e.message.as_str()), Some("web 1014"));
    assert!(web.windows(2).all(|pair| pair[0].at < pair[1].at));

    let latest = store.recent_events("web", 3).expect("latest web events");
    assert_eq!(
        latest
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["web 1012", "web 1013", "web 1014"]
    );
    assert_eq!(latest[2], event("web", 1_014, "web 1014"));

    // One service's cap never trims another's history.
    assert_eq!(
        store.recent_events("api", 10).expect("api events"),
        vec![event("api", 7, "api 0")]
    );

    // Forgetting a service forgets its history too.
    store.delete_rollout("web").expect("delete");
    assert!(store.recent_events("web", 10).expect("events").is_empty());
}

#[test]
fn analysis_runs_are_kept_oldest_first_and_capped() {
    let temp = tempfile::tempdir().expect("tempdir");
    let store = open(temp.path());
    for n in 0..25 {
        let run = Run {
            name: format!("run-{n}"),
            measurements: vec![f64::from(n)],
        };
        store
            .save_analysis_run(&format!("run-{n}"), "web", &run)
            .expect("save run");
    }
    let other = Run {
        name: "other".to_owned(),
        measurements: vec![],
    };
    store
        .save_analysis_run("other", "api", &other)
        .expect("save other");
    // Saving a run again updates it where it is.
    let updated = Run {
        name: "run-10".to_owned(),
        measurements: vec![10.0, 0.5],
    };
    store
        .save_analysis_run("run-10", "web", &updated)
        .expect("update run");

    let runs: Vec<Run> = store.load_analysis_runs("web").expect("load runs");
    assert_eq!(runs.len(), store::ANALYSIS_RUNS_KEPT_PER_SERVICE);
    assert_eq!(
        runs.iter().map(|run| run.name.clone()).collect::<Vec<_>>(),
        (5..25).map(|n| format!("run-{n}")).collect::<Vec<_>>()
    );
    assert_eq!(runs[5], updated);
    let api_runs: Vec<Run> = store.load_analysis_runs("api").expect("load api runs");
    assert_eq!(api_runs, vec![other]);
}

#[test]
fn instance_records_round_trip() {
    let temp = tempfile::tempdir().expect("tempdir");
    {
        let store = open(temp.path());
        store
            .save_instance(&instance("web-r3-aaaa", "web"))
            .expect("save");
        store
            .save_instance(&instance("web-r3-bbbb", "web"))
            .expect("save");
        let mut moved = instance("api-r1-cccc", "api");
        store.save_instance(&moved).expect("save");
        moved.pid = 5151;
        store.save_instance(&moved).expect("replace");
        store.remove_instance("web-r3-aaaa").expect("remove");
        store
            .remove_instance("never-existed")
            .expect("remove unknown");
    }
    let store = open(temp.path());
    let mut expected_api = instance("api-r1-cccc", "api");
    expected_api.pid = 5151;
    assert_eq!(
        store.load_instances().expect("load"),
        vec![expected_api, instance("web-r3-bbbb", "web")]
    );
}

#[test]
fn a_second_agent_is_refused_until_the_first_stops() {
    let temp = tempfile::tempdir().expect("tempdir");
    let first = open(temp.path());
    let error = Store::open(temp.path()).expect_err("second open must fail");
    assert!(
        matches!(error, store::Error::Locked { pid: Some(pid), .. } if pid == std::process::id()),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "another edgeroll agent (pid {}) is using {}; stop it first",
            std::process::id(),
            temp.path().display()
        )
    );
    assert!(!error.is_transient());
    drop(first);
    let _second = open(temp.path());
}

#[test]
fn a_database_from_a_newer_edgeroll_is_refused() {
    let temp = tempfile::tempdir().expect("tempdir");
    drop(open(temp.path()));
    let database = temp.path().join(store::DATABASE_FILE_NAME);
    {
        let connection = rusqlite::Connection::open(&database).expect("raw open");
        connection
            .pragma_update(None, "user_version", store::SCHEMA_VERSION + 1)
            .expect("bump version");
    }
    let error = Store::open(temp.path()).expect_err("newer schema must be refused");
    assert!(
        matches!(error, store::Error::SchemaTooNew { found, .. } if found == store::SCHEMA_VERSION + 1),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("newer than this edgeroll supports"),
        "{message}"
    );
    assert!(
        message.contains(&database.display().to_string()),
        "{message}"
    );
}

#[test]
fn an_unreadable_rollout_row_is_an_error_naming_the_service() {
    let temp = tempfile::tempdir().expect("tempdir");
    let database = temp.path().join(store::DATABASE_FILE_NAME);
    let state = RolloutState {
        phase: "Pending".to_owned(),
        step: 0,
    };
    {
        let store = open(temp.path());
        store.save_rollout("web", &state, &[]).expect("save");
        store.save_rollout("checkout", &state, &[]).expect("save");
    }
    let raw = |sql: &str| {
        let connection = rusqlite::Connection::open(&database).expect("raw open");
        connection.execute(sql, []).expect("raw update");
    };

    raw("UPDATE rollouts SET state = '{\"phase\": 7}' WHERE service = 'checkout'");
    let error = open(temp.path())
        .load_rollouts::<RolloutState>()
        .expect_err("a corrupt row must not be dropped");
    assert!(
        error.to_string().contains("rollout state of checkout"),
        "{error}"
    );

    raw("UPDATE rollouts SET state = '{\"phase\":\"Pending\",\"step\":0}', schema = 9 WHERE service = 'checkout'");
    let error = open(temp.path())
        .load_rollouts::<RolloutState>()
        .expect_err("an unknown record schema must not be guessed");
    let message = error.to_string();
    assert!(message.contains("rollout state of checkout"), "{message}");
    assert!(message.contains("record schema 9"), "{message}");
}
