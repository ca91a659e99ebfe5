//! A small HTTP/1.1 client for the agent's API on its unix socket.
//!
//! Owns connecting, one request per connection, and turning answers into typed results. It must
//! never retry an action: a POST is sent exactly once, and a lost answer is reported as such.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::api::types::{ActionRequest, ActionResponse, ServiceStatus, Status};

/// How long one request may take, connecting included. Longer than the agent's own deadline for
/// actions, so the agent's answer (even "did not answer in time") arrives first.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// Nothing answers on the socket.
    #[error("cannot reach the edgeroll agent at {}: {} ({})", socket.display(), describe(source), hint(source))]
    Unreachable {
        /// The socket tried.
        socket: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The connection broke during the exchange.
    #[error("lost the connection to the edgeroll agent at {}: {source}", socket.display())]
    Exchange {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("the edgeroll agent at {} did not answer within {}", socket.display(), humantime::format_duration(*timeout))]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
    /// The agent answered with an error (not found, permission denied, refused, …).
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The agent's message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the edgeroll agent ({status}): {detail}")]
    Protocol {
        /// The HTTP status.
        status: StatusCode,
        /// What was wrong.
        detail: String,
    },
}

/// The OS error text without Rust's "(os error N)" suffix, as users know it from other tools.
fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => error.to_string(),
    }
}

/// The agent's API at one socket.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The socket file.
    socket: PathBuf,
}

impl Client {
    /// A client for the agent at `socket`.
    pub(crate) fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// `GET /v1/status`.
    pub(crate) async fn status(&self) -> Result<Status, ClientError> {
        self.request(Method::GET, "/v1/status", None::<&()>).await
    }

    /// `GET /v1/services/{name}`.
    pub(crate) async fn service(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.request(Method::GET, &format!("/v1/services/{name}"), None::<&()>)
            .await
    }

    /// `POST /v1/services/{name}/{action}`; `Ok` carries the agent's message when applied.
    pub(crate) async fn act(
        &self,
        name: &str,
        action: &str,
        request: &ActionRequest,
    ) -> Result<String, ClientError> {
        let response: ActionResponse = self
            .request(
                Method::POST,
                &format!("/v1/services/{name}/{action}"),
                Some(request),
            )
            .await?;
        Ok(response.message)
    }

    /// `GET path`, decoded (the hub's operator socket uses this client too).
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(Method::GET, path, None::<&()>).await
    }

    /// `POST path` with no body, decoded; sent exactly once.
    pub(crate) async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(Method::POST, path, None::<&()>).await
    }

    /// One request on a fresh connection, within [`REQUEST_TIMEOUT`].
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout {
                socket: self.socket.clone(),
                timeout: REQUEST_TIMEOUT,
            }),
        }
    }

    /// Connect, send, and decode the answer.
    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        let exchange_error = |source| ClientError::Exchange {
            socket: self.socket.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(exchange_error)?;
        // The connection task ends when the exchange is over and `sender` is dropped.
        let connection = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "API client connection ended with an error");
            }
        });
        let body_bytes = match body {
            Some(body) => serde_json::to_vec(body).map_err(|error| ClientError::Protocol {
                status: StatusCode::OK,
                detail: format!("cannot encode the request: {error}"),
            })?,
            None => Vec::new(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if !body_bytes.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body_bytes)))
            .map_err(|error| ClientError::Protocol {
                status: StatusCode::OK,
                detail: format!("cannot build the request: {error}"),
            })?;
        let response = sender.send_request(request).await.map_err(exchange_error)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(exchange_error)?
            .to_bytes();
        drop(sender);
        connection.abort();
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|error| ClientError::Protocol {
                status,
                detail: format!("cannot decode the answer: {error}"),
            })
        } else {
            match serde_json::from_slice::<ActionResponse>(&body) {
                Ok(answer) => Err(ClientError::Refused {
                    status,
                    message: answer.message,
                }),
                Err(_) => Err(ClientError::Protocol {
                    status,
                    detail: String::from_utf8_lossy(&body).trim().to_owned(),
                }),
            }
        }
    }
}

/// What a user can do about a connection failure.
fn hint(error: &io::Error) -> &'static str {
    if error.kind() == io::ErrorKind::PermissionDenied {
        "the socket is for root and group edgeroll: use sudo, join the group, or set agent.socket_mode = \"0666\" to let every local user read status"
    } else {
        "is `edgeroll run` running?"
    }
}
