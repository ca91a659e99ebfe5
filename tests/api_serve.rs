//! The local API served on a real unix socket, with a fake shell behind it.

mod api_support;

use api_support::{request, start, start_at, REFUSAL, TEST_DEADLINE};
use edgeroll::api::types::{ActionResponse, ServiceStatus, Status};
use edgeroll::rollout::OperatorAction;

#[tokio::test]
async fn status_round_trips_as_json() {
    let harness = start().await;
    let answer = request(&harness.socket, "GET", "/v1/status", Vec::new()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.json::<Status>(), *harness.status);
}

#[tokio::test]
async fn one_service_or_404() {
    let harness = start().await;
    let answer = request(&harness.socket, "GET", "/v1/services/web", Vec::new()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json::<ServiceStatus>(), harness.status.services[0]);

    let answer = request(&harness.socket, "GET", "/v1/services/nope", Vec::new()).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let error: ActionResponse = answer.json();
    assert!(!error.ok);
    assert_eq!(error.message, "service nope not found");
}

#[tokio::test]
async fn promote_full_reaches_the_shell_and_its_answer_comes_back() {
    let mut harness = start().await;
    let answer = request(
        &harness.socket,
        "POST",
        "/v1/services/web/promote",
        br#"{"full":true}"#.to_vec(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json::<ActionResponse>(),
        ActionResponse {
            ok: true,
            message: "Promote { full: true } applied to web".to_owned()
        }
    );
    assert_eq!(
        harness.received.recv().await,
        Some(("web".to_owned(), OperatorAction::Promote { full: true }))
    );
}

#[tokio::test]
async fn an_action_without_a_body_uses_the_defaults() {
    let mut harness = start().await;
    let answer = request(&harness.socket, "POST", "/v1/services/web/undo", Vec::new()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        harness.received.recv().await,
        Some(("web".to_owned(), OperatorAction::Undo { to_revision: None }))
    );
}

#[tokio::test]
async fn a_refusal_is_409_with_the_reason() {
    let harness = start().await;
    let answer = request(
        &harness.socket,
        "POST",
        "/v1/services/web/abort",
        Vec::new(),
    )
    .await;
    assert_eq!(answer.status, 409);
    assert_eq!(
        answer.json::<ActionResponse>(),
        ActionResponse {
            ok: false,
            message: REFUSAL.to_owned()
        }
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let harness = start().await;
    let answer = request(&harness.socket, "GET", "/v1/nothing", Vec::new()).await;
    assert_eq!(answer.status, 404);
    assert!(!answer.json::<ActionResponse>().ok);
    let answer = request(
        &harness.socket,
        "POST",
        "/v1/services/web/explode",
        Vec::new(),
    )
    .await;
    assert_eq!(answer.status, 404);
    let answer = request(&harness.socket, "DELETE", "/v1/status", Vec::new()).await;
    assert_eq!(answer.status, 405);
    let answer = request(
        &harness.socket,
        "GET",
        "/v1/services/web/promote",
        Vec::new(),
    )
    .await;
    assert_eq!(answer.status, 405);
}

#[tokio::test]
async fn bad_bodies_are_refused() {
    let mut harness = start().await;
    let mut big = br#"{"full":true,"padding":""#.to_vec();
    big.resize(70 * 1024, b'x');
    big.extend_from_slice(br#""}"#);
    let answer = request(&harness.socket, "POST", "/v1/services/web/promote", big).await;
    assert_eq!(answer.status, 413);
    let answer = request(
        &harness.socket,
        "POST",
        "/v1/services/web/promote",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(
        harness.received.try_recv().is_err(),
        "nothing reaches the shell"
    );
}

#[tokio::test]
async fn status_updates_are_served() {
    let harness = start().await;
    let mut updated = (*harness.status).clone();
    updated.services[0].phase = "Healthy".to_owned();
    harness
        .status_sender
        .send(std::sync::Arc::new(updated.clone()))
        .expect("publish status");
    let answer = request(&harness.socket, "GET", "/v1/status", Vec::new()).await;
    assert_eq!(answer.json::<Status>(), updated);
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("edgeroll.sock");
    // A listener that is gone leaves its socket file behind, as after a crash.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let harness = start_at(dir, socket).await;
    let answer = request(&harness.socket, "GET", "/v1/status", Vec::new()).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_second_agent_cannot_take_the_socket() {
    let harness = start().await;
    let error = edgeroll::api::bind(&harness.socket).expect_err("second bind must fail");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(
        error.to_string(),
        format!("another agent is listening on {}", harness.socket.display())
    );
    // The first agent still serves.
    let answer = request(&harness.socket, "GET", "/v1/status", Vec::new()).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_regular_file_is_never_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("edgeroll.sock");
    std::fs::write(&path, "precious").expect("write");
    let error = edgeroll::api::bind(&path).expect_err("bind over a file must fail");
    assert!(error.to_string().contains("is not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "precious");
}

#[tokio::test]
async fn the_socket_is_private_to_owner_and_group() {
    use std::os::unix::fs::PermissionsExt;
    let harness = start().await;
    let mode = std::fs::metadata(&harness.socket)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[tokio::test]
async fn shutdown_removes_the_socket_and_refuses_new_clients() {
    let harness = start().await;
    harness.shutdown.cancel();
    tokio::time::timeout(TEST_DEADLINE, harness.server)
        .await
        .expect("serve returns after shutdown")
        .expect("serve does not panic");
    assert!(!harness.socket.exists());
    assert!(tokio::net::UnixStream::connect(&harness.socket)
        .await
        .is_err());
}

#[tokio::test]
async fn actions_are_refused_with_503_when_the_shell_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("edgeroll.sock");
    let listener = edgeroll::api::bind(&socket).expect("bind");
    let (_status_sender, status) =
        tokio::sync::watch::channel(std::sync::Arc::new(api_support::sample_status()));
    let (commands, command_receiver) = tokio::sync::mpsc::channel(1);
    drop(command_receiver);
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(edgeroll::api::serve(
        listener,
        status,
        commands,
        shutdown.clone(),
    ));
    let answer = request(&socket, "POST", "/v1/services/web/pause", Vec::new()).await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.json::<ActionResponse>().message,
        "the agent is shutting down"
    );
    shutdown.cancel();
}
