//! Readiness probes: one attempt of a template's [`Readiness`] check against an instance's
//! loopback address, and the timing rules of probing.
//!
//! A probe only connects to the instance's own address and never sends anything but one GET
//! request; it never decides what readiness means for traffic (the shell and the proxy do).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::spec::Readiness;

/// How long one probe may take before it counts as failed.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time between probes while an instance is not ready.
pub(crate) const PROBE_INTERVAL_NOT_READY: Duration = Duration::from_millis(300);
/// Time between probes once an instance is ready.
pub(crate) const PROBE_INTERVAL_READY: Duration = Duration::from_secs(2);
/// Consecutive failed probes that make a ready instance not ready.
pub(crate) const FAILURES_TO_NOT_READY: u32 = 3;

/// Run one probe: `true` when the instance passes `readiness` within [`PROBE_TIMEOUT`].
pub(crate) async fn probe(readiness: &Readiness, address: SocketAddr) -> bool {
    let attempt = async {
        match readiness {
            Readiness::Tcp => TcpStream::connect(address).await.is_ok(),
            Readiness::HttpGet { path } => http_get_succeeds(address, path).await,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or(false)
}

/// An HTTP/1.1 `GET path` that answers 2xx or 3xx.
async fn http_get_succeeds(address: SocketAddr, path: &str) -> bool {
    let Ok(stream) = TcpStream::connect(address).await else {
        return false;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    let Ok(request) = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .header(http::header::CONNECTION, "close")
        .header(http::header::USER_AGENT, "edgeroll-probe")
        .body(Empty::new())
    else {
        return false;
    };
    // The connection must be driven while the request is in flight. It may finish in the same
    // poll that delivers the response (the server closes after answering), so the response is
    // still collected then. Everything is dropped, and the socket closed, once the status is known.
    let response = sender.send_request(request);
    tokio::pin!(connection, response);
    let response = tokio::select! {
        response = &mut response => response,
        _ = &mut connection => response.await,
    };
    response.is_ok_and(|response| {
        let status = response.status();
        status.is_success() || status.is_redirection()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers every connection with `status_line` after reading the request head.
    async fn serve(status_line: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let response = format!("{status_line}\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        address
    }

    fn http_get() -> Readiness {
        Readiness::HttpGet {
            path: "/healthz".to_string(),
        }
    }

    #[tokio::test]
    async fn http_probe_accepts_2xx_and_3xx_only() {
        assert!(probe(&http_get(), serve("HTTP/1.1 200 OK").await).await);
        assert!(probe(&http_get(), serve("HTTP/1.1 302 Found").await).await);
        assert!(!probe(&http_get(), serve("HTTP/1.1 503 Service Unavailable").await).await);
    }

    #[tokio::test]
    async fn probes_fail_when_nothing_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        assert!(!probe(&http_get(), address).await);
        assert!(!probe(&Readiness::Tcp, address).await);
    }

    // The paused clock makes the one-second timeout elapse as soon as nothing else can happen.
    #[tokio::test(start_paused = true)]
    async fn http_probe_times_out_on_a_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        assert!(probe(&Readiness::Tcp, address).await);
        assert!(!probe(&http_get(), address).await);
    }
}
