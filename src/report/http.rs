//! Report delivery over HTTPS: `POST {reports.url}` with the gzip-compressed batch, the
//! idempotency key and the site's headers, and the receiver's answer read as an acknowledgement,
//! a gap, a request to slow down, or a failure (see `docs/protocol.md`).
//!
//! TLS is rustls with the ring provider, the system's CA store plus `reports.ca_file`, and an
//! optional client certificate (mutual TLS). `http://` is accepted for a loopback receiver only
//! (the config refuses anything else). It never follows redirects and never retries by itself:
//! the sender decides when to try again.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{Outcome, SenderError};
use crate::config::ReportsConfig;
use crate::time::Timestamp;
use crate::wire::report::{Ack, ReportBatch};
use crate::wire::{self, IDEMPOTENCY_KEY_HEADER, LABELS_HEADER, SITE_HEADER};

/// The largest answer read: an acknowledgement is a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The HTTPS transport of one site.
pub(super) struct HttpTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: String,
    site: String,
    labels: String,
    timeout: Duration,
}

impl HttpTransport {
    pub(super) fn new(
        url: &str,
        site: &str,
        labels: &BTreeMap<String, String>,
        config: &ReportsConfig,
    ) -> Result<HttpTransport, SenderError> {
        let tls = tls_config(config)?;
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpTransport {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url: url.to_owned(),
            site: site.to_owned(),
            labels: wire::labels_header_value(labels),
            timeout: config.timeout,
        })
    }

    pub(super) async fn deliver(
        &mut self,
        batch: &ReportBatch,
        body: Bytes,
        now: Timestamp,
    ) -> Outcome {
        let request = Request::post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, "gzip")
            .header(IDEMPOTENCY_KEY_HEADER, wire::report::idempotency_key(batch))
            .header(SITE_HEADER, &self.site)
            .header(LABELS_HEADER, &self.labels)
            .body(Full::new(body));
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("cannot build a request to {}: {error}", self.url),
                }
            }
        };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                format!(
                    "cannot reach {}: {}",
                    self.url,
                    crate::provider::http_client::error_chain(&error)
                )
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| crate::backoff::retry_after(value, now));
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|error| format!("cannot read the answer of {}: {error}", self.url))?
                .to_bytes();
            Ok::<_, String>((status, retry_after, body))
        };
        let (status, retry_after, answer) = match tokio::time::timeout(self.timeout, exchange).await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(reason)) => {
                return Outcome::Retry {
                    after: None,
                    reason,
                }
            }
            Err(_) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("{} did not answer within {:?}", self.url, self.timeout),
                }
            }
        };
        self.judge(status, retry_after, &answer)
    }

    fn judge(&self, status: StatusCode, retry_after: Option<Duration>, answer: &[u8]) -> Outcome {
        let ack = || -> Result<u64, String> {
            let ack: Ack = serde_json::from_slice(answer).map_err(|error| {
                format!(
                    "{} answered {status} with no acknowledgement ({error}): {}",
                    self.url,
                    crate::provider::http_client::quote(answer)
                )
            })?;
            if ack.site != self.site {
                return Err(format!(
                    "{} acknowledged site {:?}, not {:?}",
                    self.url, ack.site, self.site
                ));
            }
            Ok(ack.ack)
        };
        match status {
            StatusCode::OK => match ack() {
                Ok(ack) => Outcome::Acked(ack),
                Err(reason) => Outcome::Retry {
                    after: None,
                    reason,
                },
            },
            StatusCode::CONFLICT => match ack() {
                Ok(ack) => Outcome::Gap(ack),
                Err(reason) => Outcome::Retry {
                    after: None,
                    reason,
                },
            },
            StatusCode::PAYLOAD_TOO_LARGE => Outcome::TooLarge,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Outcome::Retry {
                after: retry_after,
                reason: format!("{} answered {status}", self.url),
            },
            _ => Outcome::Retry {
                after: retry_after,
                reason: format!(
                    "{} answered {status}: {}",
                    self.url,
                    crate::provider::http_client::quote(answer)
                ),
            },
        }
    }
}

/// rustls with the ring provider: the system's CA store, `ca_file`, and the client certificate.
pub(super) fn tls_config(config: &ReportsConfig) -> Result<rustls::ClientConfig, SenderError> {
    crate::tls::client_config(crate::tls::Files {
        section: "reports",
        ca_file: config.ca_file.as_deref(),
        client_cert: config.client_cert.as_deref(),
        client_key: config.client_key.as_deref(),
    })
    .map_err(SenderError::Tls)
}
