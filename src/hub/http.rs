//! The hub's HTTP(S) server: the site protocol (`GET /v1/sites/{site}/desired`,
//! `POST /v1/reports`) and the read API (`GET /v1/sites`, `/v1/sites/{site}`,
//! `/v1/sites/{site}/reports`, `/v1/documents`), and routes `GET /` and `GET /sites/{site}` to
//! the fleet page (`page`).
//!
//! Owns the listener, TLS termination, connection limits and the mapping of requests to
//! answers (docs/protocol.md is the description of it). A poll is answered from memory only:
//! the catalog chooses the document, its precomputed ETag decides 304, and the poll time goes to
//! `presence`. A report batch goes to the store, and is answered only once the store says the
//! outcome is durable. It must never decide which document a site gets (that is the catalog's
//! rule) nor what a batch means (that is `wire::report::judge`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::store::{Outcome, StoreError};
use super::Shared;
use crate::wire::report::{self, Ack, WireError, MAX_BATCH_BYTES};

/// How many connections are served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 8192;
/// How many operator-socket connections are served at once.
pub const MAX_SOCKET_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers (also bounds an idle keep-alive).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish when the hub shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default and largest `limit` of `GET /v1/sites/{site}/reports`.
pub const REPORTS_PAGE: usize = 1000;
/// The largest `limit` of `GET /v1/sites/{site}/reports`.
pub const MAX_REPORTS_PAGE: usize = 10_000;
/// `Retry-After` (seconds) when the store's queue is full.
pub const RETRY_AFTER_BUSY: &str = "1";

type Answer = Response<Full<Bytes>>;

/// `Cache-Control` of documents: caches must revalidate (with the ETag) every time.
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// Serve until `shared.shutdown` is cancelled.
pub(super) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let shutdown = shared.shutdown.clone();
    loop {
        let Some((stream, permit)) =
            crate::listen::next_connection(&permits, &shutdown, "the hub", || async {
                listener.accept().await.map(|(stream, _peer)| stream)
            })
            .await
        else {
            break;
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let service = service(Arc::clone(&shared), None, false);
                let connection =
                    graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            return;
                        }
                        Err(_elapsed) => return,
                    };
                    let peer = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|certificate| Arc::new(Peer::new(certificate.clone().into_owned())));
                    let service = service(shared, peer, false);
                    let connection =
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

/// Serve the operator socket until `shared.shutdown` is cancelled: the same routes, plus the
/// plan actions (whoever can open the socket is an operator; its mode is 0660).
pub(super) async fn serve_socket(listener: UnixListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_SOCKET_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let shutdown = shared.shutdown.clone();
    loop {
        let Some((stream, permit)) =
            crate::listen::next_connection(&permits, &shutdown, "the hub's socket", || async {
                listener.accept().await.map(|(stream, _peer)| stream)
            })
            .await
        else {
            break;
        };
        let service = service(Arc::clone(&shared), None, true);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "socket connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// The service of one connection, whose client certificate (mutual TLS) is `peer`; `operator`
/// for the operator socket.
fn service(
    shared: Arc<Shared>,
    peer: Option<Arc<Peer>>,
    operator: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Answer,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Answer, Infallible>> + Send,
> + Clone {
    service_fn(move |request| {
        let shared = Arc::clone(&shared);
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(request, &shared, peer.as_deref(), operator).await) }
    })
}

/// The client certificate of a connection: a site may poll and report only for the site
/// names it is valid for (DNS names of its subjectAltName), checked once per name.
#[derive(Debug)]
pub struct Peer {
    certificate: rustls::pki_types::CertificateDer<'static>,
    verified: std::sync::Mutex<Option<String>>,
}

impl Peer {
    /// The peer that presented `certificate` (already verified against the client CAs).
    pub fn new(certificate: rustls::pki_types::CertificateDer<'static>) -> Peer {
        Peer {
            certificate,
            verified: std::sync::Mutex::new(None),
        }
    }

    /// Whether the certificate is valid for the site named `site`.
    pub fn allows(&self, site: &str) -> bool {
        if let Ok(verified) = self.verified.lock() {
            if verified.as_deref() == Some(site) {
                return true;
            }
        }
        let Ok(parsed) = rustls::server::ParsedCertificate::try_from(&self.certificate) else {
            return false;
        };
        let Ok(name) = rustls::pki_types::ServerName::try_from(site) else {
            return false;
        };
        let allowed = rustls::client::verify_server_name(&parsed, &name).is_ok();
        if allowed {
            if let Ok(mut verified) = self.verified.lock() {
                *verified = Some(site.to_owned());
            }
        }
        allowed
    }
}

/// 403 unless `peer` (if any) may act for `site`.
fn check_peer(peer: Option<&Peer>, site: &str) -> Option<Answer> {
    match peer {
        Some(peer) if !peer.allows(site) => Some(error(
            StatusCode::FORBIDDEN,
            format!("the client certificate is not valid for site {site}"),
        )),
        _ => None,
    }
}

/// Answer one request from a connection whose client certificate is `peer`.
pub(super) async fn handle(
    request: Request<Incoming>,
    shared: &Shared,
    peer: Option<&Peer>,
    operator: bool,
) -> Answer {
    // The poll first, without allocating: it is nearly all of the traffic.
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        if let Some(rest) = request.uri().path().strip_prefix("/v1/sites/") {
            if let Some(site) = rest.strip_suffix("/desired") {
                if !site.contains('/') {
                    if let Some(refused) = check_peer(peer, site) {
                        return refused;
                    }
                    return desired(shared, site, request.headers(), false);
                }
            }
            if let Some(site) = rest.strip_suffix("/desired.minisig") {
                if !site.contains('/') {
                    if let Some(refused) = check_peer(peer, site) {
                        return refused;
                    }
                    return desired(shared, site, request.headers(), true);
                }
            }
        }
    }
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    let known = matches!(
        segments.as_slice(),
        ["v1", "sites"]
            | ["v1", "sites", _]
            | ["v1", "sites", _, "desired" | "desired.minisig" | "reports"]
            | ["v1", "reports"]
            | ["v1", "documents"]
            | ["v1", "plans"]
            | ["v1", "plans", _]
            | ["v1", "plans", _, _]
            | [""]
            | ["sites", _]
    );
    match (method, segments.as_slice()) {
        (Method::POST, ["v1", "reports"]) => reports(shared, request, peer).await,
        (Method::GET, ["v1", "sites"]) => sites(shared).await,
        (Method::GET, ["v1", "sites", site]) => site_status(shared, site).await,
        (Method::GET, ["v1", "sites", site, "reports"]) => {
            let query = request.uri().query().unwrap_or("").to_owned();
            site_reports(shared, site, &query).await
        }
        (Method::GET, ["v1", "documents"]) => documents(shared),
        (Method::GET, ["v1", "plans"]) => json(StatusCode::OK, &*shared.plan_views()),
        (Method::GET, ["v1", "plans", name]) => plan(shared, name),
        (Method::POST, ["v1", "plans", name, verb]) => {
            plan_action(shared, name, verb, operator).await
        }
        (Method::GET, [""]) => {
            super::page::fleet(shared, request.uri().query().unwrap_or("")).await
        }
        (Method::GET, ["sites", site]) => super::page::site(shared, site).await,
        _ if known => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}", request.method()),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no route {path}")),
    }
}

/// `GET /v1/plans/{name}`.
fn plan(shared: &Shared, name: &str) -> Answer {
    match shared.plan_views().iter().find(|view| view.name == name) {
        Some(view) => json(StatusCode::OK, view),
        None => error(StatusCode::NOT_FOUND, format!("no plan named {name}")),
    }
}

/// `POST /v1/plans/{name}/{promote|abort|pause|resume}`, on the operator socket only.
async fn plan_action(shared: &Shared, name: &str, verb: &str, operator: bool) -> Answer {
    let Some(action) = super::plan::engine::Action::from_verb(verb) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no plan action {verb:?}: promote, abort, pause or resume"),
        );
    };
    if !operator {
        return error(
            StatusCode::FORBIDDEN,
            format!("plan actions are taken on the hub's operator socket (`edgeroll hub {verb} {name}` on the hub's machine), not over the network"),
        );
    }
    #[derive(Serialize)]
    struct Done<'a> {
        plan: &'a str,
        message: String,
    }
    match shared.plan_action(name, action).await {
        Ok(message) => json(
            StatusCode::OK,
            &Done {
                plan: name,
                message,
            },
        ),
        Err(message) if message.starts_with("no plan named") => {
            error(StatusCode::NOT_FOUND, message)
        }
        Err(message) => error(StatusCode::CONFLICT, message),
    }
}

/// Whether `site` is a usable site name: what `agent.site` accepts, and one path segment.
pub fn valid_site(site: &str) -> bool {
    !site.is_empty()
        && site.len() <= 253
        && !site
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '%' | '?' | '#'))
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, `*` matches anything).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    fn bare(tag: &str) -> &str {
        let tag = tag.trim();
        tag.strip_prefix("W/").unwrap_or(tag)
    }
    let etag = bare(etag);
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || bare(candidate) == etag)
}

fn desired(shared: &Shared, site: &str, headers: &HeaderMap, signature_only: bool) -> Answer {
    if !valid_site(site) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{site:?} is not a valid site name"),
        );
    }
    let labels = headers
        .get(crate::wire::LABELS_HEADER)
        .and_then(|value| value.to_str().ok());
    let labels = shared.presence.polled(site, labels, shared.clock.now());
    let catalog = shared.catalog();
    let Some(document) = catalog.choose(site, &labels) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no document selects site {site}"),
        );
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| etag_matches(value, &document.etag));
    let mut builder = Response::builder().header(header::CACHE_CONTROL, NO_CACHE);
    if let Some(etag) = &document.etag_value {
        builder = builder.header(header::ETAG, etag.clone());
    }
    if signature_only {
        let Some(signature) = &document.signature else {
            return error(
                StatusCode::NOT_FOUND,
                format!("the document for site {site} is not signed"),
            );
        };
        return finish(
            builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::from(signature.clone()))),
        );
    }
    if not_modified {
        return finish(
            builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Full::new(Bytes::new())),
        );
    }
    if let Some(signature) = &document.signature_value {
        builder = builder.header(crate::wire::SIGNATURE_HEADER, signature.clone());
    }
    finish(
        builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, document.content_type)
            .body(Full::new(document.body.clone())),
    )
}

async fn reports(shared: &Shared, request: Request<Incoming>, peer: Option<&Peer>) -> Answer {
    let headers = request.headers().clone();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BATCH_BYTES) {
        return too_large();
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
    {
        None | Some("identity") => false,
        Some(encoding) if encoding.eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-encoding {other:?} is not supported; use gzip"),
            )
        }
    };
    let body = match Limited::new(request.into_body(), MAX_BATCH_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(cause)
            if cause
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large()
        }
        Err(cause) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {cause}"),
            )
        }
    };
    let batch = match report::decode(&body, gzip) {
        Ok(batch) => batch,
        Err(WireError::TooLarge { .. }) => return too_large(),
        Err(cause) => return error(StatusCode::BAD_REQUEST, cause.to_string()),
    };
    if !valid_site(&batch.site) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{:?} is not a valid site name", batch.site),
        );
    }
    if let Some(refused) = check_peer(peer, &batch.site) {
        return refused;
    }
    if let Some(key) = headers
        .get(crate::wire::IDEMPOTENCY_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        let expected = report::idempotency_key(&batch);
        if key.trim().trim_matches('"') != expected {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the idempotency key {key:?} does not match the batch ({expected})"),
            );
        }
    }
    if let Some(site) = headers
        .get(crate::wire::SITE_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        if site != batch.site {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the {} header says {site:?} but the batch is from {:?}",
                    crate::wire::SITE_HEADER,
                    batch.site
                ),
            );
        }
    }
    let site = batch.site.clone();
    if let Some(labels) = headers
        .get(crate::wire::LABELS_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        shared.presence.labels_reported(&site, labels);
    }
    if let Err(refused) = shared.report_limit.admit(&site, shared.clock.now()) {
        tracing::debug!(site, "report batch refused: over the site's rate");
        let mut answer = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "site {site} sends report batches faster than report_rate allows; send it again in {} s",
                refused.retry_after.as_secs()
            ),
        );
        if let Ok(value) = HeaderValue::from_str(&refused.retry_after.as_secs().to_string()) {
            answer.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return answer;
    }
    match shared
        .store
        .ingest(batch, shared.clock.now(), false, false)
        .await
    {
        Ok(outcome) => {
            let status = match outcome {
                Outcome::Gap { .. } => StatusCode::CONFLICT,
                Outcome::Accepted { .. } | Outcome::Duplicate { .. } => StatusCode::OK,
            };
            json(
                status,
                &Ack {
                    site,
                    ack: outcome.ack(),
                },
            )
        }
        Err(StoreError::Unavailable) => {
            let mut answer = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub is busy; send the batch again later".to_owned(),
            );
            answer.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_BUSY),
            );
            answer
        }
        Err(cause) => {
            tracing::error!(%cause, site, "cannot store a report batch");
            let mut answer = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the hub cannot store the batch: {cause}"),
            );
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            answer
        }
    }
}

/// A site's entry in the read API: its summary, with the poll time kept in memory and the
/// document the hub would serve it now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SiteView {
    #[serde(flatten)]
    summary: super::summary::SiteSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<DocumentView>,
    /// Report batches refused since the hub started because the site sent them too fast.
    refused_batches: u64,
}

/// A document as the read API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DocumentView {
    name: String,
    serial: u64,
    etag: String,
    selector: BTreeMap<String, String>,
    signed_by: String,
}

fn document_view(document: &super::catalog::ServedDocument) -> DocumentView {
    DocumentView {
        name: document.name.clone(),
        serial: document.serial,
        etag: document.etag.clone(),
        selector: document.selector.clone(),
        signed_by: match &document.signer {
            super::catalog::Signer::File => "file".to_owned(),
            super::catalog::Signer::Hub(key_id) => format!("hub:{key_id}"),
            super::catalog::Signer::Unsigned => "unsigned".to_owned(),
        },
    }
}

fn site_view(shared: &Shared, mut summary: super::summary::SiteSummary) -> SiteView {
    if let Some(at) = shared.presence.last_poll(&summary.site) {
        summary.last_poll = Some(summary.last_poll.map_or(at, |stored| stored.max(at)));
        summary.heard_from(at);
    }
    if let Some(labels) = shared.presence.labels(&summary.site) {
        summary.labels.clone_from(&labels);
    }
    let catalog = shared.catalog();
    let document = catalog
        .choose(&summary.site, &summary.labels)
        .map(|document| document_view(document));
    let refused_batches = shared.report_limit.refused(&summary.site);
    SiteView {
        summary,
        document,
        refused_batches,
    }
}

async fn sites(shared: &Shared) -> Answer {
    match shared.store.sites().await {
        Ok(sites) => {
            let views: Vec<SiteView> = sites
                .into_iter()
                .map(|summary| site_view(shared, summary))
                .collect();
            json(StatusCode::OK, &views)
        }
        Err(cause) => error(StatusCode::SERVICE_UNAVAILABLE, cause.to_string()),
    }
}

async fn site_status(shared: &Shared, site: &str) -> Answer {
    if !valid_site(site) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{site:?} is not a valid site name"),
        );
    }
    match shared.store.site(site.to_owned()).await {
        Ok(Some(summary)) => json(StatusCode::OK, &site_view(shared, summary)),
        Ok(None) if shared.presence.last_poll(site).is_some() => json(
            StatusCode::OK,
            &site_view(shared, super::summary::SiteSummary::new(site)),
        ),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("the hub has not heard from site {site}"),
        ),
        Err(cause) => error(StatusCode::SERVICE_UNAVAILABLE, cause.to_string()),
    }
}

/// `after=N&limit=M` of the reports route.
fn page(query: &str) -> Result<(u64, usize), String> {
    let mut after = 0;
    let mut limit = REPORTS_PAGE;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "after" => {
                after = value
                    .parse()
                    .map_err(|_| format!("after={value:?} is not a sequence number"))?;
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|limit| (1..=MAX_REPORTS_PAGE).contains(limit))
                    .ok_or_else(|| {
                        format!("limit={value:?} is not between 1 and {MAX_REPORTS_PAGE}")
                    })?;
            }
            _ => return Err(format!("unknown query parameter {key:?}")),
        }
    }
    Ok((after, limit))
}

/// The answer of `GET /v1/sites/{site}/reports`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportsPage {
    site: String,
    high_water: u64,
    reports: Vec<super::store::StoredReport>,
}

async fn site_reports(shared: &Shared, site: &str, query: &str) -> Answer {
    if !valid_site(site) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{site:?} is not a valid site name"),
        );
    }
    let (after, limit) = match page(query) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let high_water = match shared.store.site(site.to_owned()).await {
        Ok(summary) => summary.map_or(0, |summary| summary.high_water),
        Err(cause) => return error(StatusCode::SERVICE_UNAVAILABLE, cause.to_string()),
    };
    match shared.store.reports(site.to_owned(), after, limit).await {
        Ok(reports) => json(
            StatusCode::OK,
            &ReportsPage {
                site: site.to_owned(),
                high_water,
                reports,
            },
        ),
        Err(cause) => error(StatusCode::SERVICE_UNAVAILABLE, cause.to_string()),
    }
}

fn documents(shared: &Shared) -> Answer {
    let catalog = shared.catalog();
    let views: Vec<DocumentView> = catalog
        .documents()
        .iter()
        .map(|document| document_view(document))
        .collect();
    json(StatusCode::OK, &views)
}

fn too_large() -> Answer {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the batch is larger than {MAX_BATCH_BYTES} bytes; send smaller batches"),
    )
}

/// The JSON of an error: `{"error": "…"}`.
#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, message: String) -> Answer {
    json(status, &ErrorBody { error: message })
}

fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    let body = serde_json::to_vec(value).unwrap_or_default();
    finish(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body))),
    )
}

fn finish(built: http::Result<Answer>) -> Answer {
    built.unwrap_or_else(|_| {
        let mut answer = Response::new(Full::new(Bytes::new()));
        *answer.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        answer
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        assert!(etag_matches("\"4-ab\"", "\"4-ab\""));
        assert!(etag_matches("W/\"4-ab\"", "\"4-ab\""));
        assert!(etag_matches("\"3-00\", \"4-ab\"", "\"4-ab\""));
        assert!(etag_matches("*", "\"4-ab\""));
        assert!(!etag_matches("\"4-ac\"", "\"4-ab\""));
        assert!(!etag_matches("", "\"4-ab\""));
    }

    #[test]
    fn pages_are_parsed_and_bad_ones_refused() {
        assert_eq!(page(""), Ok((0, REPORTS_PAGE)));
        assert_eq!(page("after=17&limit=5"), Ok((17, 5)));
        assert!(page("after=x").is_err());
        assert!(page("limit=0").is_err());
        assert!(page("since=3").is_err());
    }

    proptest! {
        #[test]
        fn a_site_name_is_one_path_segment(site in "\\PC{0,40}") {
            if valid_site(&site) {
                prop_assert!(!site.contains('/'));
                let path = crate::wire::desired_path(&site);
                prop_assert_eq!(path.split('/').count(), 5);
            }
        }

        #[test]
        fn an_etag_always_matches_itself(serial in 0u64.., body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let etag = super::super::catalog::etag_of(serial, &body, None);
            prop_assert!(etag_matches(&etag, &etag));
            let listed = format!("\"other\", W/{etag}");
            prop_assert!(etag_matches(&listed, &etag));
        }
    }
}
