//! The outbox under SIGKILL: a writer commits rollout states with their reports, and every so
//! often acknowledges a prefix, in a tight loop; it is killed at random moments. After each kill
//! every report it saw committed is still there (or acknowledged), each state has exactly its
//! report, and the sequence numbers given out after the restart are new.
//!
//! Like `store_crash.rs`, the test re-runs its own binary as the writer child.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edgeroll::store::{BatchLimits, NewReport, Store};
use edgeroll::time::Timestamp;
use edgeroll::wire::report::ReportBody;
use serde::{Deserialize, Serialize};

const WRITER_ENV: &str = "EDGEROLL_OUTBOX_CRASH_WRITER_DIR";
const TEST_NAME: &str = "sigkill_never_loses_or_reuses_a_report_number";
const SERVICE: &str = "counter";
const ROUNDS: usize = 15;
const KILL_AFTER_MS: std::ops::Range<u64> = 20..150;
const CHILD_START_DEADLINE: Duration = Duration::from_secs(60);
const ALL: BatchLimits = BatchLimits {
    max_reports: usize::MAX,
    max_bytes: usize::MAX,
};

#[derive(Debug, Serialize, Deserialize)]
struct Counter {
    value: u64,
}

fn report(value: u64) -> NewReport {
    NewReport {
        at: Timestamp::from_millis(value),
        body: ReportBody::Rollout {
            service: SERVICE.to_owned(),
            kind: "CounterIncremented".to_owned(),
            message: value.to_string(),
            phase: "Progressing".to_owned(),
            completion: None,
            stable: None,
            canary: None,
            serial: Some(value),
        },
    }
}

#[test]
fn sigkill_never_loses_or_reuses_a_report_number() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        write_forever(Path::new(&dir));
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    // Every sequence number ever seen committed, with the counter value it reported.
    let mut numbers: BTreeMap<u64, u64> = BTreeMap::new();
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
        let (first_tx, first_rx) = mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut committed: Vec<(u64, u64)> = Vec::new();
            let mut acked = 0;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["committed", value, seq] => {
                        committed.push((value.parse().unwrap(), seq.parse().unwrap()));
                        let _ = first_tx.send(());
                    }
                    ["acked", seq] => acked = seq.parse().unwrap(),
                    _ => {}
                }
            }
            (committed, acked)
        });
        first_rx
            .recv_timeout(CHILD_START_DEADLINE)
            .unwrap_or_else(|_| panic!("round {round}: writer committed nothing"));
        std::thread::sleep(Duration::from_millis(fastrand::u64(KILL_AFTER_MS)));
        child.0.kill().expect("SIGKILL writer");
        let status = child.0.wait().expect("reap writer");
        assert!(!status.success(), "round {round}: writer exited by itself");
        let (committed, acked_reported) = reader.join().expect("reader thread");

        let store = Store::open(temp.path()).expect("reopen after SIGKILL");
        let states: Vec<(String, Counter)> = store.load_rollouts().expect("load");
        let value = states.first().map_or(0, |(_, counter)| counter.value);
        let outbox = store.outbox_status().expect("status");
        assert!(
            outbox.acked >= acked_reported,
            "round {round}: ack went back"
        );
        for (reported_value, seq) in committed {
            assert!(
                numbers.insert(seq, reported_value).is_none(),
                "round {round}: sequence number {seq} given out twice"
            );
        }
        // The state and its report committed together: the newest report is the state's.
        let batch = store
            .outbox_batch("site", None, ALL)
            .expect("batch")
            .expect("reports are pending");
        let messages: Vec<(u64, u64)> = batch
            .reports
            .iter()
            .map(|report| match &report.body {
                ReportBody::Rollout { message, .. } => (report.seq, message.parse().unwrap()),
                other => panic!("unexpected report {other:?}"),
            })
            .collect();
        let newest = messages.last().expect("one report at least");
        assert_eq!(newest.1, value, "round {round}: state and report disagree");
        // Nothing between the mark and the last number is missing, and every number the writer
        // saw committed and not acknowledged is still there with its value.
        assert_eq!(batch.first, outbox.acked + 1);
        let seqs: Vec<u64> = messages.iter().map(|(seq, _)| *seq).collect();
        let expected: Vec<u64> = (outbox.acked + 1..=outbox.last_seq).collect();
        assert_eq!(seqs, expected, "round {round}: a gap in the outbox");
        for (seq, value) in &messages {
            if let Some(reported) = numbers.get(seq) {
                assert_eq!(reported, value, "round {round}: report {seq} changed");
            }
        }
        numbers.extend(messages.iter().copied());
        drop(store);
    }
    eprintln!("{ROUNDS} rounds, {} report numbers checked", numbers.len());
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The child: commit an increasing counter with one report each; every 16 commits,
/// acknowledge all but the last 8 reports.
fn write_forever(dir: &Path) -> ! {
    let store = Store::open(dir).unwrap_or_else(|error| panic!("writer: open: {error}"));
    let states: Vec<(String, Counter)> = store.load_rollouts().expect("writer: load");
    let mut value = states.first().map_or(0, |(_, counter)| counter.value);
    let mut stdout = std::io::stdout().lock();
    loop {
        value += 1;
        let seqs = store
            .save_rollout_reporting(SERVICE, &Counter { value }, &[], &[report(value)])
            .unwrap_or_else(|error| panic!("writer: save {value}: {error}"));
        writeln!(stdout, "committed {value} {}", seqs[0]).expect("report commit");
        if value % 16 == 0 {
            let ack = seqs[0].saturating_sub(8);
            store
                .outbox_acknowledge(ack, &BTreeMap::new(), Timestamp::from_millis(value), "ok")
                .expect("writer: acknowledge");
            writeln!(stdout, "acked {ack}").expect("report ack");
        }
        stdout.flush().expect("flush report");
    }
}
