//! `sample_app::run` as a real process: it announces its port on stderr, serves, and exits
//! cleanly on SIGTERM while a request is in flight.
//!
//! The test re-runs its own binary as the app (selected by an environment variable).
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use edgeroll::sample_app::{self, Options};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const APP_ENV: &str = "EDGEROLL_SAMPLE_APP_CHILD";
const TEST_NAME: &str = "sigterm_finishes_in_flight_requests_and_exits_cleanly";
/// Delay of every `GET /`, long enough for SIGTERM to arrive while one is in flight.
const LATENCY_MS: u64 = 1_000;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    if std::env::var_os(APP_ENV).is_some() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let result = runtime.block_on(sample_app::run(Options {
            port: 0,
            version: "5.0.0".to_owned(),
            error_rate: 0.0,
            latency_ms: LATENCY_MS,
        }));
        std::process::exit(if result.is_ok() { 0 } else { 1 });
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture"])
        .env(APP_ENV, "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn app");
    let stderr = child.stderr.take().expect("child stderr");
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("app announces its port")
            .expect("stderr line");
        if let Some(address) = line.strip_prefix("listening on ") {
            break address.to_owned();
        }
    };
    assert!(address.starts_with("127.0.0.1:"), "{address}");

    let mut stream = TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: sample\r\n\r\n")
        .expect("send request");
    // Stop the app only once it is answering the request (it takes a second), so SIGTERM
    // really arrives in the middle of it.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while requests_in_flight(&address) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "request never arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = Pid::from_raw(i32::try_from(child.0.id()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");

    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("x-version: 5.0.0\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n5.0.0\n"), "{answer}");

    let status = child.0.wait().expect("reap app");
    assert!(status.success(), "app exited with {status}");
}

/// The app's `sample_app_requests_in_flight` gauge, read over a fresh connection.
fn requests_in_flight(address: &str) -> u64 {
    let mut stream = TcpStream::connect(address).expect("connect for metrics");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: sample\r\nconnection: close\r\n\r\n")
        .expect("send metrics request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read metrics");
    answer
        .lines()
        .find_map(|line| line.strip_prefix("sample_app_requests_in_flight "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no in-flight gauge in:\n{answer}"))
}

/// Kills the child if the test fails before reaping it, so no app outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
