//! A real `api::serve` on a temporary socket with a fake shell behind it, for the API and CLI
//! integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgeroll::api::types::{RevisionRef, ServiceStatus, Status, StepRef, Weights};
use edgeroll::api::{self, ApiCommand};
use edgeroll::rollout::OperatorAction;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous deadline for anything a test waits on, for a busy 2-core machine.
pub const TEST_DEADLINE: Duration = Duration::from_secs(30);

/// The reason the fake shell gives when it refuses an action.
pub const REFUSAL: &str = "cannot abort web: no rollout in progress";

/// A served API and what reached its fake shell.
pub struct Harness {
    /// Keeps the socket's directory alive.
    pub dir: tempfile::TempDir,
    /// The socket file.
    pub socket: PathBuf,
    /// The status the API serves.
    pub status: Arc<Status>,
    /// Publishes status updates.
    pub status_sender: watch::Sender<Arc<Status>>,
    /// Every (service, action) the fake shell received, in order.
    pub received: mpsc::Receiver<(String, OperatorAction)>,
    /// Stops the API.
    pub shutdown: CancellationToken,
    /// The `serve` task.
    pub server: JoinHandle<()>,
}

/// One service named `web`, paused in a canary.
pub fn sample_status() -> Status {
    Status {
        api_version: "edgeroll/v1".to_owned(),
        site: "store-0042".to_owned(),
        services: vec![ServiceStatus {
            name: "web".to_owned(),
            strategy: "canary".to_owned(),
            phase: "Paused".to_owned(),
            message: "CanaryPauseStep".to_owned(),
            completion: None,
            stable: Some(RevisionRef {
                version: "1.0.0".to_owned(),
                revision: 1,
            }),
            canary: Some(RevisionRef {
                version: "2.0.0".to_owned(),
                revision: 2,
            }),
            step: Some(StepRef { index: 1, count: 3 }),
            pause_ends_at: None,
            weights: Weights {
                stable: 80,
                canary: 20,
            },
            instances: Vec::new(),
            analysis_runs: Vec::new(),
            revisions: Vec::new(),
            events: Vec::new(),
            image: None,
        }],
        source: None,
        events: Vec::new(),
        reports: None,
    }
}

/// Serve the API at `<tempdir>/run/edgeroll.sock` (the directory does not exist yet, so `bind`
/// must create it). The fake shell refuses `abort` with [`REFUSAL`] and applies everything else.
pub async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("run").join("edgeroll.sock");
    start_at(dir, socket).await
}

/// Serve the API at `socket`.
pub async fn start_at(dir: tempfile::TempDir, socket: PathBuf) -> Harness {
    let listener = api::bind(&socket).expect("bind the API socket");
    let status = Arc::new(sample_status());
    let (status_sender, status_receiver) = watch::channel(Arc::clone(&status));
    let (commands, mut command_receiver) = mpsc::channel::<ApiCommand>(4);
    let (record, received) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(command) = command_receiver.recv().await {
            let answer = if command.action == OperatorAction::Abort {
                Err(REFUSAL.to_owned())
            } else {
                Ok(format!(
                    "{:?} applied to {}",
                    command.action, command.service
                ))
            };
            let _ = record.send((command.service, command.action)).await;
            let _ = command.reply.send(answer);
        }
    });
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(api::serve(
        listener,
        status_receiver,
        commands,
        shutdown.clone(),
    ));
    Harness {
        dir,
        socket,
        status,
        status_sender,
        received,
        shutdown,
        server,
    }
}

/// An answer: status, content type and body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `content-type` header.
    pub content_type: Option<String>,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "answer is not the expected JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 request on a new connection to `socket`.
pub async fn request(socket: &Path, method: &str, path: &str, body: Vec<u8>) -> Answer {
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .expect("connect to the API");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = sender.send_request(request).await.expect("send request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes();
        Answer {
            status,
            content_type,
            body,
        }
    };
    tokio::time::timeout(TEST_DEADLINE, exchange)
        .await
        .expect("the API answers in time")
}
