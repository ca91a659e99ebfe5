//! The `edgeroll` binary against a real API on a temporary socket (`--socket`).

mod api_support;

use std::process::Output;

use api_support::{start, REFUSAL, TEST_DEADLINE};
use edgeroll::api::types::{ServiceStatus, Status};
use edgeroll::rollout::OperatorAction;

/// Run the binary with `args`, isolated from the caller's environment and config.
async fn edgeroll(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeroll"))
        .args(args)
        .env_remove("EDGEROLL_SOCKET")
        .env("EDGEROLL_CONFIG", "/nonexistent/edgeroll.toml")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(TEST_DEADLINE, run)
        .await
        .expect("edgeroll finishes in time")
        .expect("run edgeroll")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn get_json_prints_the_status() {
    let harness = start().await;
    let socket = harness.socket.to_string_lossy().into_owned();
    let output = edgeroll(&["get", "-o", "json", "--socket", &socket]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let printed: Status = serde_json::from_slice(&output.stdout).expect("stdout is a Status");
    assert_eq!(printed, *harness.status);

    let output = edgeroll(&["--socket", &socket, "get", "web", "-o", "json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let printed: ServiceStatus =
        serde_json::from_slice(&output.stdout).expect("stdout is a ServiceStatus");
    assert_eq!(printed, harness.status.services[0]);
}

#[tokio::test]
async fn get_text_and_unknown_service() {
    let harness = start().await;
    let socket = harness.socket.to_string_lossy().into_owned();
    let output = edgeroll(&["get", "--socket", &socket]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Name:            web"), "{stdout}");
    assert!(stdout.contains("॥ Paused"), "{stdout}");

    let output = edgeroll(&["get", "nope", "--socket", &socket]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stderr).trim(), "service nope not found");
}

#[tokio::test]
async fn promote_reaches_the_agent() {
    let mut harness = start().await;
    let socket = harness.socket.to_string_lossy().into_owned();
    let output = edgeroll(&["promote", "web", "--full", "--socket", &socket]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).trim(),
        "Promote { full: true } applied to web"
    );
    assert_eq!(
        harness.received.recv().await,
        Some(("web".to_owned(), OperatorAction::Promote { full: true }))
    );

    let output = edgeroll(&["undo", "web", "--to-revision", "1", "--socket", &socket]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        harness.received.recv().await,
        Some((
            "web".to_owned(),
            OperatorAction::Undo {
                to_revision: Some(1)
            }
        ))
    );
}

#[tokio::test]
async fn a_refused_action_exits_1_with_the_reason() {
    let harness = start().await;
    let socket = harness.socket.to_string_lossy().into_owned();
    let output = edgeroll(&["abort", "web", "--socket", &socket]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr).trim(),
        format!("abort web refused: {REFUSAL}")
    );
}

#[tokio::test]
async fn the_socket_comes_from_the_environment() {
    let harness = start().await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeroll"))
        .args(["get", "-o", "json"])
        .env("EDGEROLL_SOCKET", &harness.socket)
        .output();
    let output = tokio::time::timeout(TEST_DEADLINE, run)
        .await
        .expect("edgeroll finishes in time")
        .expect("run edgeroll");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[tokio::test]
async fn an_absent_agent_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("edgeroll.sock");
    let socket = socket.to_string_lossy().into_owned();
    let output = edgeroll(&["get", "--socket", &socket]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr).trim(),
        format!(
            "cannot reach the edgeroll agent at {socket}: No such file or directory \
             (is `edgeroll run` running?)"
        )
    );
    let output = edgeroll(&["pause", "web", "--socket", &socket]).await;
    assert_eq!(output.status.code(), Some(1));
}

#[tokio::test]
async fn bad_usage_exits_2() {
    let output = edgeroll(&["promote"]).await;
    assert_eq!(output.status.code(), Some(2));
    let output = edgeroll(&["sample-app", "--port", "1", "--error-rate", "2"]).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn validate_reports_every_unreadable_document_and_exits_78() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("missing-a.toml");
    let second = dir.path().join("missing-b.toml");
    let first = first.to_string_lossy().into_owned();
    let second = second.to_string_lossy().into_owned();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeroll"))
        .args(["validate", &first, &second])
        .env_remove("EDGEROLL_CONFIG")
        .output();
    let output = tokio::time::timeout(TEST_DEADLINE, run)
        .await
        .expect("edgeroll finishes in time")
        .expect("run edgeroll");
    assert_eq!(output.status.code(), Some(78));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with(&format!("{first}:1:1: ")), "{stdout}");
    assert!(lines[1].starts_with(&format!("{second}:1:1: ")), "{stdout}");
}

#[tokio::test]
async fn run_with_an_invalid_config_exits_78() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("edgeroll.toml");
    let config = config.to_string_lossy().into_owned();
    let output = edgeroll(&["run", "--config", &config]).await;
    assert_eq!(output.status.code(), Some(78));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with(&format!("{config}:")), "{stderr}");
}

/// The uid the permission test runs the CLI as (`nobody`).
const STRANGER_UID: u32 = 65_534;

#[tokio::test]
async fn a_stranger_may_read_but_not_act() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running the CLI as another user needs root");
        return;
    }
    let mut harness = start().await;
    // Let the stranger reach the socket at all; the API itself must then refuse the action.
    for path in [
        harness.dir.path(),
        harness.socket.parent().expect("socket dir"),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::set_permissions(&harness.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let socket = harness.socket.to_string_lossy().into_owned();
    let as_stranger = |args: Vec<String>| {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeroll"))
            .args(args)
            .env_remove("EDGEROLL_SOCKET")
            .env("EDGEROLL_CONFIG", "/nonexistent/edgeroll.toml")
            .uid(STRANGER_UID)
            .gid(STRANGER_UID)
            .output();
        async move {
            tokio::time::timeout(TEST_DEADLINE, run)
                .await
                .expect("edgeroll finishes in time")
                .expect("run edgeroll")
        }
    };
    let output = as_stranger(vec!["get".into(), "--socket".into(), socket.clone()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    let output = as_stranger(vec![
        "pause".into(),
        "web".into(),
        "--socket".into(),
        socket.clone(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr).trim(),
        "permission denied: uid 65534 is not root and not in group edgeroll"
    );
    assert!(
        harness.received.try_recv().is_err(),
        "nothing reaches the shell"
    );
}

/// The next block of `get --watch -o json`: one pretty-printed JSON object, which ends with `}`
/// alone on a line.
async fn next_block(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> ServiceStatus {
    let mut block = String::new();
    loop {
        let line = tokio::time::timeout(TEST_DEADLINE, lines.next_line())
            .await
            .expect("a block in time")
            .expect("read stdout")
            .expect("stdout still open");
        block.push_str(&line);
        if line == "}" {
            return serde_json::from_str(&block).expect("a block");
        }
    }
}

#[tokio::test]
async fn watch_prints_each_change_and_stops_when_the_agent_goes_away() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let harness = start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeroll"))
        .args(["get", "web", "--watch", "-o", "json", "--socket"])
        .arg(&harness.socket)
        .env_remove("EDGEROLL_SOCKET")
        .env("EDGEROLL_CONFIG", "/nonexistent/edgeroll.toml")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn edgeroll");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(next_block(&mut lines).await.phase, "Paused");

    let mut updated = (*harness.status).clone();
    updated.services[0].phase = "Healthy".to_owned();
    harness
        .status_sender
        .send(std::sync::Arc::new(updated))
        .expect("publish");
    assert_eq!(next_block(&mut lines).await.phase, "Healthy");

    harness.shutdown.cancel();
    let mut stderr = String::new();
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let status = tokio::time::timeout(TEST_DEADLINE, async {
        tokio::io::AsyncReadExt::read_to_string(&mut stderr_pipe, &mut stderr)
            .await
            .expect("read stderr");
        child.wait().await.expect("wait")
    })
    .await
    .expect("watch ends when the agent goes away");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("the edgeroll agent at"), "{stderr}");
}
