//! The pull's HTTPS client: one GET with `If-None-Match`, a body limit, connect and answer
//! timeouts, over rustls (`crate::tls`). It never judges what it fetched.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::CONNECT_TIMEOUT;
use crate::config::DesiredTrust;
use crate::time::Timestamp;

/// A complete answer.
pub(super) struct PullAnswer {
    pub(super) status: StatusCode,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Bytes,
}

impl PullAnswer {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// `Retry-After` as seconds or an HTTP date after `now` (`crate::backoff`).
    pub(super) fn retry_after(&self, now: Timestamp) -> Option<Duration> {
        crate::backoff::retry_after(self.header(header::RETRY_AFTER.as_str())?, now)
    }
}

pub(super) enum GetError {
    TooLarge(String),
    Failed(String),
}

/// The pull's HTTPS client: rustls with ring, the system CAs plus `ca_file`, optional client
/// certificate; HTTP/1.1; connect and answer timeouts.
#[derive(Clone)]
pub(super) struct PullClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl PullClient {
    pub(super) fn new(trust: &DesiredTrust) -> Result<PullClient, String> {
        let config = crate::tls::client_config(crate::tls::Files {
            section: "desired",
            ca_file: trust.ca_file.as_deref(),
            client_cert: trust.client_cert.as_deref(),
            client_key: trust.client_key.as_deref(),
        })?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(PullClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    pub(super) async fn get(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        etag: Option<&str>,
        limit: usize,
        timeout: Duration,
    ) -> Result<PullAnswer, GetError> {
        let mut request = Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let request = request.body(Empty::new()).map_err(|error| {
            GetError::Failed(format!("cannot build a request to {url}: {error}"))
        })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                GetError::Failed(format!(
                    "cannot reach {url}: {}",
                    crate::provider::http_client::error_chain(&error)
                ))
            })?;
            let status = response.status();
            let headers = response.headers().clone();
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok());
            if let Some(length) = declared.filter(|length| *length > limit as u64) {
                return Err(GetError::TooLarge(format!(
                    "{url} sent {length} bytes, more than the limit of {limit} (desired.max_document_bytes)"
                )));
            }
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        GetError::TooLarge(format!(
                            "{url} sent more than the limit of {limit} bytes (desired.max_document_bytes)"
                        ))
                    } else {
                        GetError::Failed(format!(
                            "cannot read the answer of {url}: {}",
                            crate::provider::http_client::error_chain(error.as_ref())
                        ))
                    }
                })?
                .to_bytes();
            Ok(PullAnswer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(GetError::Failed(format!(
                    "{url} did not answer within {timeout:?}"
                )))
            })
    }
}
