//! Forwarding of one request: pick a pool by weight and an instance round-robin, rewrite the
//! hop-by-hop parts, send it over a pooled HTTP/1.1 client, and record the outcome.
//!
//! Invariants: bodies stream in both directions and are never buffered; proxied responses are
//! passed back untouched except for hop-by-hop headers; the route table is an `Arc` snapshot, so
//! no lock is held while a request is in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::{Metrics, RequestOutcome};
use super::{Pool, ProxyOptions, RouteTable};

/// How long an unused pooled connection to a backend instance is kept.
const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most idle pooled connections kept per backend instance.
const BACKEND_MAX_IDLE_PER_INSTANCE: usize = 128;

/// Percent is out of this many.
const PERCENT: u8 = 100;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the legacy
/// `proxy-connection` and `keep-alive`. Dropping `upgrade` means protocol upgrades (WebSocket)
/// are not proxied; the backend sees a plain request.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `x-forwarded-for`, which carries the client address to the backend.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The body of every response the proxy gives: a backend's streamed body, or a short one of its
/// own (502, 503, 504).
pub(super) type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Shared by every connection of one proxy.
pub(super) struct Forwarder {
    /// The current route table; read per request.
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    client: Client<HttpConnector, Incoming>,
    response_header_timeout: Duration,
    /// Round-robin positions; they survive route-table changes, which is harmless.
    stable_cursor: AtomicUsize,
    canary_cursor: AtomicUsize,
}

/// The client of one connection, with its `x-forwarded-for` entry made once per connection
/// rather than once per request.
pub(super) struct ClientAddress {
    /// The client's socket address.
    pub(super) addr: SocketAddr,
    /// The client's IP as a header value.
    header: HeaderValue,
}

impl ClientAddress {
    pub(super) fn new(addr: SocketAddr) -> Self {
        // An IP address is always a valid header value; the fallback only satisfies the types.
        let header = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientAddress { addr, header }
    }
}

/// Where one request goes.
struct Target<'a> {
    version: &'a str,
    addr: SocketAddr,
}

impl Forwarder {
    pub(super) fn new(
        routes: watch::Receiver<Arc<RouteTable>>,
        metrics: Arc<Metrics>,
        options: &ProxyOptions,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(BACKEND_IDLE_TIMEOUT)
            .pool_max_idle_per_host(BACKEND_MAX_IDLE_PER_INSTANCE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Forwarder {
            routes,
            metrics,
            client,
            response_header_timeout: options.response_header_timeout,
            stable_cursor: AtomicUsize::new(0),
            canary_cursor: AtomicUsize::new(0),
        }
    }

    /// Send `request` from `client` to a backend and give back its response, or the proxy's own
    /// 502/503/504.
    pub(super) async fn forward(
        &self,
        mut request: Request<Incoming>,
        client: &ClientAddress,
    ) -> Response<ProxyBody> {
        let received_at = Instant::now();
        // Clone the Arc and release the watch's lock at once; the table may change under us.
        let routes = Arc::clone(&self.routes.borrow());
        let Some(target) = self.choose(&routes) else {
            self.metrics.record_unrouted();
            return local_response(StatusCode::SERVICE_UNAVAILABLE, "no ready instance\n");
        };
        if let Err(error) = prepare_request(&mut request, target.addr, client) {
            tracing::debug!(peer = %client.addr, %error, "proxy could not rewrite a request");
            return local_response(StatusCode::BAD_REQUEST, "bad request\n");
        }

        let result =
            tokio::time::timeout(self.response_header_timeout, self.client.request(request)).await;
        let latency = received_at.elapsed();
        match result {
            Ok(Ok(mut response)) => {
                let status = response.status().as_u16();
                self.metrics
                    .record(target.version, RequestOutcome::Status(status), latency);
                remove_hop_by_hop(response.headers_mut());
                response.map(Either::Left)
            }
            Ok(Err(error)) => {
                self.metrics
                    .record(target.version, RequestOutcome::TransportFailure, latency);
                tracing::debug!(
                    version = target.version,
                    addr = %target.addr,
                    connect = error.is_connect(),
                    error = %error,
                    "proxy could not forward a request"
                );
                local_response(StatusCode::BAD_GATEWAY, "bad gateway\n")
            }
            Err(_elapsed) => {
                self.metrics
                    .record(target.version, RequestOutcome::TransportFailure, latency);
                tracing::debug!(
                    version = target.version,
                    addr = %target.addr,
                    "proxy timed out waiting for response headers"
                );
                local_response(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n")
            }
        }
    }

    /// Pick the pool by weight, falling back to the other pool only when that pool's weight is
    /// above zero, then an instance round-robin.
    fn choose<'a>(&self, routes: &'a RouteTable) -> Option<Target<'a>> {
        let canary_weight = routes.canary_weight_percent.min(PERCENT);
        let stable_weight = PERCENT - canary_weight;
        let stable = (&routes.stable, &self.stable_cursor, stable_weight);
        let canary = (&routes.canary, &self.canary_cursor, canary_weight);
        let (first, second) = if fastrand::u8(0..PERCENT) < canary_weight {
            (canary, stable)
        } else {
            (stable, canary)
        };
        pick(first.0, first.1).or_else(|| {
            // After an abort the canary's weight is 0: it must get nothing, even with no stable.
            if second.2 > 0 {
                pick(second.0, second.1)
            } else {
                None
            }
        })
    }
}

/// The next instance of `pool` round-robin, if it has any.
fn pick<'a>(pool: &'a Pool, cursor: &AtomicUsize) -> Option<Target<'a>> {
    if pool.addrs.is_empty() {
        return None;
    }
    let position = cursor.fetch_add(1, Ordering::Relaxed) % pool.addrs.len();
    Some(Target {
        version: &pool.version,
        addr: pool.addrs[position],
    })
}

/// Point `request` at `backend` as HTTP/1.1, keeping the client's Host, dropping hop-by-hop
/// headers and adding the client to `x-forwarded-for`.
fn prepare_request(
    request: &mut Request<Incoming>,
    backend: SocketAddr,
    client: &ClientAddress,
) -> Result<(), http::Error> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // HTTP/2 clients send `:authority` instead of Host; the backend speaks HTTP/1.1 and needs it.
    if !request.headers().contains_key(header::HOST) {
        if let Some(authority) = request.uri().authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
    }
    *request.uri_mut() = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(backend.to_string())
        .path_and_query(path_and_query)
        .build()?;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    remove_hop_by_hop(headers);
    append_forwarded_for(headers, client);
    Ok(())
}

/// Remove the headers that belong to one hop, including any the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Collected first because the names borrow from the map we then edit; rare, so the
    // allocation only happens when a client sends `Connection`.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Add the client's address to `x-forwarded-for`, after any addresses earlier proxies put there.
fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientAddress) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        // The common case: no earlier proxy, so the per-connection value is shared as it is.
        headers.insert(X_FORWARDED_FOR, client.header.clone());
        return;
    }
    let mut combined = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        combined.extend_from_slice(value.as_bytes());
        combined.extend_from_slice(b", ");
    }
    combined.extend_from_slice(client.header.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&combined) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// An answer the proxy gives itself.
fn local_response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("example.test"));
        remove_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["host"]);
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let client = ClientAddress::new(([127, 0, 0, 9], 5000).into());
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, &client);
        assert_eq!(headers[&X_FORWARDED_FOR], "127.0.0.9");
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        append_forwarded_for(&mut headers, &client);
        assert_eq!(headers[&X_FORWARDED_FOR], "127.0.0.9, 10.0.0.1, 127.0.0.9");
        assert_eq!(headers.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    }
}
