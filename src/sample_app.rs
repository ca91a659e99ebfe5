//! `edgeroll sample-app`: a tiny HTTP service for demos and tests.
//!
//! Owns one HTTP/1.1 + HTTP/2 (cleartext) listener on loopback. `GET /` answers `200` with
//! `<version>\n` and `x-version: <version>` (or, for a configured share of answers, `500` with
//! `error\n`), after an optional delay; `GET /healthz` answers `200 ok`; `GET /metrics` serves
//! its own counters and latency histogram (see `sample_app/metrics.rs`); anything else is `404`.
//! SIGTERM or SIGINT stops accepting and lets in-flight requests finish within a grace period.
//!
//! It must never touch agent state: it is a workload the agent runs, not part of the agent.

mod metrics;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

pub use metrics::{
    DURATION_BUCKETS_SECONDS, REQUESTS_IN_FLIGHT, REQUESTS_TOTAL, REQUEST_DURATION_SECONDS,
};

/// How long in-flight requests may take to finish after SIGTERM or SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The header that carries the version label.
pub const VERSION_HEADER: &str = "x-version";

/// Content type of the plain-text answers.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Content type of `/metrics` (Prometheus text exposition format 0.0.4).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Options of the sample app (the CLI flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Port on 127.0.0.1 (0 picks one).
    pub port: u16,
    /// Version label answered in the body and `x-version`.
    pub version: String,
    /// Share of `GET /` answered with 500, 0.0–1.0.
    pub error_rate: f64,
    /// Delay before each answer, milliseconds.
    pub latency_ms: u64,
}

/// Serve until SIGTERM or SIGINT, then finish in-flight requests.
///
/// Prints `listening on 127.0.0.1:PORT` to stderr once the port is bound.
pub async fn run(options: Options) -> io::Result<()> {
    // Signal handlers are installed before binding, so a supervisor that sends SIGTERM as soon
    // as the port answers never kills the app by the default disposition.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, options.port))).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    serve(listener, options, shutdown).await
}

/// Serve on `listener` until `shutdown` completes, then stop accepting and give in-flight
/// requests [`DEFAULT_SHUTDOWN_GRACE`] to finish. Fails only on invalid options.
pub async fn serve(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let app = Arc::new(App::new(&options)?);
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let app = Arc::clone(&app);
                    let service = service_fn(move |request| answer(request, Arc::clone(&app)));
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "sample app connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "sample app could not accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    // Closing the listener first makes new connections fail fast while old ones drain.
    drop(listener);
    if tokio::time::timeout(DEFAULT_SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?DEFAULT_SHUTDOWN_GRACE,
            "sample app stopped with requests still in flight after the grace period"
        );
    }
    Ok(())
}

/// What every request handler shares.
#[derive(Debug)]
struct App {
    /// `x-version` value.
    version_header: HeaderValue,
    /// Body of a `200` answer to `GET /`.
    version_body: Bytes,
    /// Share of `GET /` answered with 500.
    error_rate: f64,
    /// Delay before each answer to `GET /`.
    latency: Duration,
    /// Request counters and latency histogram.
    metrics: metrics::Metrics,
}

impl App {
    /// Validate `options` into the shared state.
    fn new(options: &Options) -> io::Result<App> {
        if !(0.0..=1.0).contains(&options.error_rate) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "start sample app: error rate {} is not between 0 and 1",
                    options.error_rate
                ),
            ));
        }
        let version_header = HeaderValue::from_str(&options.version).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "start sample app: version {:?} cannot be sent as an HTTP header",
                    options.version
                ),
            )
        })?;
        Ok(App {
            version_header,
            version_body: Bytes::from(format!("{}\n", options.version)),
            error_rate: options.error_rate,
            latency: Duration::from_millis(options.latency_ms),
            metrics: metrics::Metrics::default(),
        })
    }
}

/// Answer one request.
async fn answer(
    request: Request<Incoming>,
    app: Arc<App>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET {
        return Ok(text(StatusCode::NOT_FOUND, TEXT_PLAIN, "not found\n"));
    }
    let response = match request.uri().path() {
        "/" => answer_version(&app).await,
        "/healthz" => text(StatusCode::OK, TEXT_PLAIN, "ok\n"),
        "/metrics" => text(StatusCode::OK, PROMETHEUS_TEXT, app.metrics.render()),
        _ => text(StatusCode::NOT_FOUND, TEXT_PLAIN, "not found\n"),
    };
    Ok(response)
}

/// Answer `GET /`: wait the configured latency, then the version or (sometimes) an error.
async fn answer_version(app: &App) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let _in_flight = app.metrics.start_request();
    if !app.latency.is_zero() {
        tokio::time::sleep(app.latency).await;
    }
    // `fastrand::f64()` is in [0, 1), so a rate of 0 never fails and a rate of 1 always does.
    let is_error = fastrand::f64() < app.error_rate;
    let mut response = if is_error {
        text(StatusCode::INTERNAL_SERVER_ERROR, TEXT_PLAIN, "error\n")
    } else {
        text(StatusCode::OK, TEXT_PLAIN, app.version_body.clone())
    };
    response.headers_mut().insert(
        HeaderName::from_static(VERSION_HEADER),
        app.version_header.clone(),
    );
    app.metrics.observe(is_error, started.elapsed());
    response
}

/// A response with `status`, `content_type` and `body`.
fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
