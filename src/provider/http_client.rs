//! The outbound HTTP(S) client the `prometheus` and `web` providers share: hyper over rustls
//! with the ring crypto provider and the system's CA store, HTTP/1.1, one deadline per request
//! covering connect, answer and body, and a bounded answer size.
//!
//! It never follows redirects, never retries (a retry is the next measurement), and never reads
//! more than [`MAX_ANSWER_BYTES`] of an answer.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The largest answer read; metric answers are small, and the bound keeps a misbehaving server
/// from costing the agent memory.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// How much of an unexpected answer a message quotes.
const QUOTED_ANSWER_CHARS: usize = 200;

/// How a request failed. Messages name the URL so a measurement's error says which endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be built (bad URL, header or method after substitution).
    #[error("cannot build a request to {url}: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Connecting, TLS or the exchange failed.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The error chain, outermost first.
        reason: String,
    },
    /// No complete answer within the deadline.
    #[error("{url} did not answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The answer body failed or was larger than [`MAX_ANSWER_BYTES`].
    #[error("cannot read the answer of {url}: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The body (at most [`MAX_ANSWER_BYTES`]).
    pub body: Bytes,
}

/// An HTTP and HTTPS client; cheap to clone (connections are pooled and shared).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client that trusts the system's CA store. When the store cannot be loaded, HTTPS
    /// requests fail with a certificate error while plain HTTP still works.
    pub fn with_native_roots() -> HttpClient {
        install_crypto_provider();
        let builder = match HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "cannot load the system's CA certificates; https requests will fail");
                HttpsConnectorBuilder::new()
                    .with_tls_config(client_config(rustls::RootCertStore::empty()))
            }
        };
        Self::from_connector(builder.https_or_http().enable_http1().build())
    }

    /// A client that trusts only `roots` (tests, private CAs).
    pub fn with_roots(roots: rustls::RootCertStore) -> HttpClient {
        install_crypto_provider();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(client_config(roots))
            .https_or_http()
            .enable_http1()
            .build();
        Self::from_connector(connector)
    }

    fn from_connector(connector: HttpsConnector<HttpConnector>) -> HttpClient {
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Send `request` and read the whole answer, all within `timeout`.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let url = request.uri().to_string();
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|error| HttpError::Unreachable {
                        url: url.clone(),
                        reason: error_chain(&error),
                    })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|error| HttpError::Body {
                    url: url.clone(),
                    reason: error_chain(error.as_ref()),
                })?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(HttpError::Timeout {
                    url: url.clone(),
                    timeout,
                })
            })
    }
}

/// The client every provider measurement uses unless a test passes its own.
pub fn shared() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(HttpClient::with_native_roots)
}

/// Make ring the process's rustls crypto provider, once. Another part of the agent may have
/// installed it first, which is just as good, so "already installed" is not an error.
pub fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The start of an answer body, quoted, for messages.
pub(crate) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut quoted: String = text.chars().take(QUOTED_ANSWER_CHARS).collect();
    if text.chars().count() > QUOTED_ANSWER_CHARS {
        quoted.push('…');
    }
    format!("{quoted:?}")
}

/// `error: cause: cause…`, because hyper's outer errors ("client error (Connect)") say little.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
