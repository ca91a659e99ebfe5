//! STUB (helper B replaces this file and adds `proxy/`): the weighted HTTP proxy.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;

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

/// Serve HTTP/1.1 and HTTP/2 on `listener` until `shutdown`, then wait up to `grace` for in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let _ = (listener, routes, metrics, grace);
    shutdown.cancelled().await;
}
