//! The weighted HTTP proxy in front of one service.
//!
//! Owns the listener of one service: accepts HTTP/1.1 (keep-alive) and HTTP/2 (prior-knowledge
//! h2c) connections, sends each request to the stable or the canary pool by the weight in the
//! current [`RouteTable`], streams bodies both ways, and records every request in [`Metrics`].
//!
//! Invariants: the proxy reads weights from a `watch` and never decides them; a new route table
//! applies to the next request and never touches requests or connections in flight; a request
//! is never sent to a pool whose weight is 0; every wait has a deadline (connect, response
//! headers, request headers, shutdown grace); concurrent connections are bounded.

mod forward;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use forward::{ClientAddress, Forwarder};
pub use metrics::{Metrics, QueryResult, RequestOutcome, VersionTotals};

/// How long to wait for a TCP connection to a backend instance.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a backend may take to send response headers before the proxy answers 504.
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client may take to send request headers, and also how long an HTTP/1 keep-alive
/// connection may sit idle between requests; it bounds slow or silent clients.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most client connections served at once; further clients wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How often an HTTP/2 client connection is pinged, so dead clients do not hold a slot forever
/// (HTTP/1 connections are bounded by the header read timeout instead).
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (for example out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Where requests for one service go right now. Built by the shell, read by the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// The stable version's ready instances.
    pub stable: Pool,
    /// The canary's (or preview's) ready instances.
    pub canary: Pool,
    /// Percentage of requests sent to `canary`, 0–100.
    pub canary_weight_percent: u8,
}

/// The ready instances of one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Version label, used as the metrics key.
    pub version: String,
    /// Loopback addresses of ready instances.
    pub addrs: Vec<SocketAddr>,
}

/// Tunables of one proxy; [`serve`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    /// How long in-flight requests may run on after shutdown before their connections are cut.
    pub grace: Duration,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_RESPONSE_HEADER_TIMEOUT`].
    pub response_header_timeout: Duration,
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl ProxyOptions {
    /// The defaults, with shutdown grace `grace`.
    pub fn with_grace(grace: Duration) -> Self {
        ProxyOptions {
            grace,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_header_timeout: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serve HTTP/1.1 and HTTP/2 on `listener` until `shutdown`, then wait up to `grace` for in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    serve_with(
        listener,
        routes,
        metrics,
        shutdown,
        ProxyOptions::with_grace(grace),
    )
    .await;
}

/// [`serve`] with every tunable given.
pub async fn serve_with(
    listener: TcpListener,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    options: ProxyOptions,
) {
    let local_addr = listener.local_addr().ok();
    let forwarder = Arc::new(Forwarder::new(routes, metrics, &options));
    let builder = Arc::new(server_builder(&options));
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let mut connections = JoinSet::new();
    tracing::info!(?local_addr, "proxy listening");

    loop {
        // Take a connection slot before accepting, so a full proxy leaves clients in the backlog.
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => permit,
        };
        let Ok(permit) = permit else {
            // The semaphore is never closed; stop serving rather than spin if it ever is.
            break;
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "proxy failed to accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        // Reap finished connections so the set stays as small as the number of open ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(
            Arc::clone(&builder),
            stream,
            peer,
            Arc::clone(&forwarder),
            shutdown.clone(),
            options.header_read_timeout,
            permit,
        ));
    }

    // Closing the listener makes new clients see "connection refused" at once.
    drop(listener);
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    tracing::info!(?local_addr, open, grace = ?options.grace, "proxy shutting down");
    let drained = tokio::time::timeout(options.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let cut = connections.len();
        tracing::warn!(
            ?local_addr,
            cut,
            "proxy shutdown grace ran out; cutting connections"
        );
        connections.shutdown().await;
    }
    tracing::info!(?local_addr, "proxy stopped");
}

/// The connection builder shared by every connection of one proxy.
fn server_builder(options: &ProxyOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL);
    builder
}

/// Serve one client connection until it closes, is idle too long, or shutdown ends it.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
    first_request_timeout: Duration,
    _permit: OwnedSemaphorePermit,
) {
    // Small answers must not wait for Nagle's algorithm.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "proxy could not set TCP_NODELAY");
    }
    // hyper's header timeout starts only once the protocol is known, so a client that connects
    // and sends nothing (or half an HTTP/2 preface) is bounded here instead.
    let first_request_seen = Arc::new(AtomicBool::new(false));
    let client = Arc::new(ClientAddress::new(peer));
    let service = {
        let first_request_seen = Arc::clone(&first_request_seen);
        service_fn(move |request| {
            first_request_seen.store(true, Ordering::Relaxed);
            let forwarder = Arc::clone(&forwarder);
            let client = Arc::clone(&client);
            async move { Ok::<_, Infallible>(forwarder.forward(request, &client).await) }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let first_request_deadline = tokio::time::sleep(first_request_timeout);
    tokio::pin!(first_request_deadline);
    let mut watching_first_request = true;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "proxy client connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !shutting_down => {
                // Finish the requests in flight, then close; idle connections close at once.
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut first_request_deadline, if watching_first_request => {
                if !first_request_seen.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "proxy closing a connection that sent no request in time");
                    return;
                }
                watching_first_request = false;
            }
        }
    }
}
