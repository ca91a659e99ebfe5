//! Logs under journald: when stderr is the journal (systemd's `JOURNAL_STREAM` names it), every
//! line carries its syslog priority as a `<N>` prefix, which journald turns into the entry's
//! priority (`journalctl -p warning`), and no timestamp of its own; anywhere else lines are the
//! usual timestamped ones.
// These tests drive real processes in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Run the agent on a desired document with a syntax error (an ERROR and a WARN line) until it
/// is ready, stop it, and return what it wrote to stderr. `journal` sets `JOURNAL_STREAM` to the
/// log file itself, as systemd would for its journal stream.
fn agent_log(dir: &Path, journal: bool) -> String {
    let config = dir.join("edgeroll.toml");
    let desired = dir.join("desired.toml");
    std::fs::write(&desired, "apiVersion = \n").expect("write desired");
    std::fs::write(
        &config,
        format!(
            "[agent]\nsite = \"journal-test\"\nstate_dir = \"{}\"\nsocket = \"{}\"\n[desired]\nsource = \"{}\"\n",
            dir.join("state").display(),
            dir.join("edgeroll.sock").display(),
            desired.display(),
        ),
    )
    .expect("write config");
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let metadata = log.metadata().expect("stat log");
    let mut command = Command::new(common::edgeroll());
    command
        .args(["run", "--config"])
        .arg(&config)
        .env("EDGEROLL_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stderr(log);
    if journal {
        command.env(
            "JOURNAL_STREAM",
            format!("{}:{}", metadata.dev(), metadata.ino()),
        );
    }
    let mut child = command.spawn().expect("start edgeroll run");
    let deadline = Instant::now() + common::WAIT;
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    while !read().contains("edgeroll agent ready") {
        assert!(
            Instant::now() < deadline,
            "the agent did not start\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}\n{}", read());
    read()
}

#[test]
fn under_journald_each_line_starts_with_its_priority_and_has_no_timestamp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = agent_log(dir.path(), true);
    let lines: Vec<&str> = log.lines().filter(|line| !line.is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let (priority, rest) = line
            .strip_prefix('<')
            .and_then(|line| line.split_once('>'))
            .unwrap_or_else(|| panic!("no <N> prefix: {line:?}\n{log}"));
        let level = rest.trim_start().split(' ').next().unwrap_or_default();
        let expected = match level {
            "ERROR" => "3",
            "WARN" => "4",
            "INFO" => "6",
            _ => panic!("no level after the prefix (a timestamp?): {line:?}"),
        };
        assert_eq!(priority, expected, "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("<3>ERROR ") && line.contains("desired.toml:1:")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("<4> WARN ") && line.contains("desired document refused")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("<6> INFO ") && line.contains("edgeroll agent ready")),
        "{log}"
    );
}

#[test]
fn elsewhere_lines_keep_their_timestamp_and_no_prefix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = agent_log(dir.path(), false);
    let ready = log
        .lines()
        .find(|line| line.contains("edgeroll agent ready"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        ready.starts_with("20") && ready.contains(" INFO "),
        "{ready}"
    );
    assert!(!log.lines().any(|line| line.starts_with('<')), "{log}");
}
