//! The `job` provider with real processes: exit 0 passes, a non-zero exit is a `false` result
//! for the condition to fail on, an overrun deadline kills the whole process group and is an
//! Error, and a command that cannot start is an Error.

use std::path::Path;
use std::time::Duration;

use edgeroll::analysis::Outcome;
use edgeroll::provider::job;
use edgeroll::spec::JobSpec;
use serde_json::json;

fn spec(command: &[&str], deadline: Duration) -> JobSpec {
    JobSpec {
        command: command.iter().map(|part| part.to_string()).collect(),
        image: None,
        deadline,
    }
}

/// Whether `pid` is gone or only a zombie waiting for a reaper (which on a machine without an
/// init that reaps can take a while, but runs nothing).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn exit_zero_is_true_and_other_exits_are_false() {
    let deadline = Duration::from_secs(30);
    assert_eq!(
        job::measure(&spec(&["sh", "-c", "echo fine; exit 0"], deadline), None).await,
        Outcome::Value(json!(true))
    );
    assert_eq!(
        job::measure(
            &spec(&["sh", "-c", "echo broken >&2; exit 3"], deadline),
            None
        )
        .await,
        Outcome::Value(json!(false))
    );
    // The report keeps the exit code and the end of the output.
    let report = job::run(&spec(
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        deadline,
    ))
    .await
    .unwrap();
    assert_eq!(report.exit_code, Some(3));
    assert_eq!(report.stdout, "out\n");
    assert_eq!(report.stderr, "err\n");
    // Arguments are passed as they are, without a shell.
    let report = job::run(&spec(&["printf", "%s|", "a b", "$HOME"], deadline))
        .await
        .unwrap();
    assert_eq!(report.stdout, "a b|$HOME|");
}

#[tokio::test]
async fn output_is_bounded_to_its_tail() {
    let report = job::run(&spec(
        &["sh", "-c", "seq 1 20000; echo last"],
        Duration::from_secs(30),
    ))
    .await
    .unwrap();
    assert_eq!(report.exit_code, Some(0));
    assert!(report.stdout.len() <= job::KEPT_OUTPUT_BYTES);
    assert!(
        report.stdout.ends_with("20000\nlast\n"),
        "{}",
        report.stdout
    );
}

#[tokio::test]
async fn an_overrun_deadline_kills_the_process_group_and_is_an_error() {
    let directory = tempfile::tempdir().unwrap();
    let pids = directory.path().join("pids");
    // The shell and a background child both record their pids, then outlive the deadline.
    let script = format!(
        "sleep 600 & echo $! >> {0}; echo $$ >> {0}; wait",
        pids.display()
    );
    let started = tokio::time::Instant::now();
    let outcome = job::measure(
        &spec(&["sh", "-c", &script], Duration::from_millis(500)),
        None,
    )
    .await;
    assert_eq!(
        outcome,
        Outcome::Error("job exceeded its 0.5s deadline".into())
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let recorded: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|line| line.trim().parse().unwrap())
        .collect();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !recorded.iter().all(|pid| gone(*pid)) {
        assert!(
            tokio::time::Instant::now() < until,
            "still running: {recorded:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_job_leaves_nothing_running_when_it_exits() {
    let directory = tempfile::tempdir().unwrap();
    let pid_file = directory.path().join("pid");
    let script = format!(
        "sleep 600 >/dev/null 2>&1 & echo $! > {}; exit 0",
        pid_file.display()
    );
    let started = tokio::time::Instant::now();
    assert_eq!(
        job::measure(&spec(&["sh", "-c", &script], Duration::from_secs(30)), None).await,
        Outcome::Value(json!(true))
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !gone(pid) {
        assert!(tokio::time::Instant::now() < until, "{pid} still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_command_that_cannot_start_is_an_error() {
    let missing = Path::new("/nonexistent/edgeroll-check");
    let Outcome::Error(message) = job::measure(
        &spec(
            &[missing.to_str().unwrap(), "--flag"],
            Duration::from_secs(5),
        ),
        None,
    )
    .await
    else {
        panic!("an error");
    };
    assert!(
        message.starts_with("cannot start job `/nonexistent/edgeroll-check`:"),
        "{message}"
    );
}
