//! Crash durability: an agent killed with SIGKILL at random moments loses no committed state,
//! leaves no lock behind, and never separates a state from the events committed with it.
//!
//! The test re-runs its own binary as the "writer" child (selected by an environment variable),
//! which commits an increasing counter in a tight loop and prints each value after its commit
//! returned. The parent kills it, then checks the store against what the child reported.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edgeroll::store::{EventRecord, Store, EVENTS_KEPT_PER_SERVICE};
use edgeroll::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Environment variable that turns this test into the writer child; its value is the state dir.
const WRITER_ENV: &str = "EDGEROLL_STORE_CRASH_WRITER_DIR";
const TEST_NAME: &str = "sigkill_at_random_moments_loses_no_committed_state";
const SERVICE: &str = "counter";
const ROUNDS: usize = 20;
const KILL_AFTER_MS: std::ops::Range<u64> = 20..150;
/// Generous bound for the child to start and commit once on a busy machine.
const CHILD_START_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Counter {
    value: u64,
}

#[test]
fn sigkill_at_random_moments_loses_no_committed_state() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        write_forever(Path::new(&dir));
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut seen_progress = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
            .env(WRITER_ENV, temp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("child stdout");
        let mut child = KillOnDrop(child);
        let (committed_tx, committed_rx) = mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(value) = line.strip_prefix("committed ") {
                    let value: u64 = value.parse().expect("committed value");
                    last = Some(value);
                    // The parent may have stopped listening; that is fine.
                    let _ = committed_tx.send(value);
                }
            }
            last
        });
        // Start the random timer only once the child is committing, so every round kills a
        // writer mid-loop rather than one still starting up.
        let first = committed_rx
            .recv_timeout(CHILD_START_DEADLINE)
            .unwrap_or_else(|_| panic!("round {round}: writer committed nothing"));
        std::thread::sleep(Duration::from_millis(fastrand::u64(KILL_AFTER_MS)));
        child.0.kill().expect("SIGKILL writer");
        let status = child.0.wait().expect("reap writer");
        assert!(!status.success(), "round {round}: writer exited by itself");
        let last_reported = reader
            .join()
            .expect("reader thread")
            .expect("at least one commit");
        assert!(last_reported >= first);
        seen_progress += last_reported - first;

        // The lock died with the writer, so the store opens at once.
        let store = Store::open(temp.path())
            .unwrap_or_else(|error| panic!("round {round}: reopen after SIGKILL: {error}"));
        let states: Vec<(String, Counter)> = store
            .load_rollouts()
            .unwrap_or_else(|error| panic!("round {round}: load after SIGKILL: {error}"));
        let [(service, counter)] = states.as_slice() else {
            panic!("round {round}: expected one state, found {}", states.len());
        };
        assert_eq!(service, SERVICE);
        // Everything reported was committed; at most one more commit finished unreported.
        assert!(
            counter.value == last_reported || counter.value == last_reported + 1,
            "round {round}: stored {} but the writer reported {last_reported}",
            counter.value
        );
        // Each commit of value n added the event "n" in the same transaction, so the history
        // is exactly the last values up to the stored one, with no gap and nothing extra.
        let events = store
            .recent_events(SERVICE, usize::MAX)
            .expect("read events");
        let expected_len = usize::try_from(counter.value)
            .expect("counter fits")
            .min(EVENTS_KEPT_PER_SERVICE);
        assert_eq!(events.len(), expected_len, "round {round}");
        let messages: Vec<u64> = events
            .iter()
            .map(|event| event.message.parse().expect("numeric event"))
            .collect();
        let expected: Vec<u64> =
            (counter.value + 1 - expected_len as u64..=counter.value).collect();
        assert_eq!(messages, expected, "round {round}");
        drop(store);
    }
    eprintln!("{ROUNDS} rounds, {seen_progress} commits observed while racing SIGKILL");
}

/// Kills the writer if the test fails before reaping it, so no writer outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The child: open the store and commit an increasing counter until killed.
fn write_forever(dir: &Path) -> ! {
    let store = Store::open(dir).unwrap_or_else(|error| panic!("writer: open: {error}"));
    let states: Vec<(String, Counter)> = store
        .load_rollouts()
        .unwrap_or_else(|error| panic!("writer: load: {error}"));
    let mut value = states.first().map_or(0, |(_, counter)| counter.value);
    let mut stdout = std::io::stdout().lock();
    loop {
        value += 1;
        let event = EventRecord {
            service: SERVICE.to_owned(),
            at: Timestamp::from_millis(value),
            kind: "CounterIncremented".to_owned(),
            message: value.to_string(),
        };
        store
            .save_rollout(SERVICE, &Counter { value }, &[event])
            .unwrap_or_else(|error| panic!("writer: save {value}: {error}"));
        writeln!(stdout, "committed {value}").expect("report commit");
        stdout.flush().expect("flush report");
    }
}
