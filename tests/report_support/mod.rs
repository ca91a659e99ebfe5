//! A report receiver for tests: hyper on 127.0.0.1, in its own thread and runtime, that keeps
//! exactly one copy of each site's reports by the protocol's rules (`wire::report::judge`), and
//! that can be told to misbehave for the next connections: answer 500, 429 with `Retry-After`,
//! 413, hang, reset the connection, or take a batch and then lose the answer.
// Tests measure real time between requests.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeroll::wire::report::{self, Ack, Judgement, Report};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use tokio::io::AsyncReadExt;

/// What the receiver does with the next connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Follow the protocol.
    Normal,
    /// Answer this status (with `Retry-After` when given), keep nothing.
    Status(u16, Option<u64>),
    /// Read the request and never answer.
    Hang,
    /// Read part of the request and close the connection.
    Reset,
    /// Keep the batch, then close the connection without answering (a lost acknowledgement).
    AcceptThenReset,
    /// Answer 413 when the batch has more than this many reports.
    MaxReports(usize),
    /// Answer 200 with a body that is not an acknowledgement, keep nothing.
    Garbage,
}

/// What the receiver saw and keeps.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per site: the high-water mark.
    pub high_water: BTreeMap<String, u64>,
    /// Per site: the reports kept, in arrival order.
    pub reports: BTreeMap<String, Vec<Report>>,
    /// Per site: sequence numbers a batch covered without a report (dropped or lost).
    pub missing: BTreeMap<String, Vec<u64>>,
    /// Every request: when, its idempotency key, the batch's range, and the answer's status.
    pub requests: Vec<(Instant, String, u64, u64, u16)>,
    /// Batches judged duplicates.
    pub duplicates: usize,
    /// Batches answered 409.
    pub gaps: usize,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    tls: bool,
    pub seen: Arc<Mutex<Seen>>,
    behaviours: Arc<Mutex<VecDeque<Behaviour>>>,
}

impl Receiver {
    /// Start listening on a free loopback port.
    pub fn start() -> Receiver {
        Receiver::start_with(None)
    }

    /// Start listening with TLS (every connection behaves normally).
    pub fn start_tls(config: rustls::ServerConfig) -> Receiver {
        Receiver::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let behaviours = Arc::new(Mutex::new(VecDeque::new()));
        let (seen_task, behaviours_task) = (seen.clone(), behaviours.clone());
        let secure = tls.is_some();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(serve(listener, seen_task, behaviours_task, tls));
        });
        Receiver {
            addr,
            tls: secure,
            seen,
            behaviours,
        }
    }

    /// The URL to configure as `reports.url`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/v1/reports", self.addr)
    }

    /// Queue behaviours for the next connections (then back to normal).
    pub fn then(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.behaviours.lock().unwrap().extend(behaviours);
    }

    /// Forget everything of `site` after `keep` (the receiver lost data: a restored backup).
    pub fn forget_after(&self, site: &str, keep: u64) {
        let mut seen = self.seen.lock().unwrap();
        seen.high_water.insert(site.to_owned(), keep);
        if let Some(reports) = seen.reports.get_mut(site) {
            reports.retain(|report| report.seq <= keep);
        }
    }

    /// The sequence numbers kept for `site`, in arrival order.
    pub fn seqs(&self, site: &str) -> Vec<u64> {
        let seen = self.seen.lock().unwrap();
        seen.reports
            .get(site)
            .map(|reports| reports.iter().map(|report| report.seq).collect())
            .unwrap_or_default()
    }

    /// The high-water mark of `site`.
    pub fn high_water(&self, site: &str) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .high_water
            .get(site)
            .copied()
            .unwrap_or(0)
    }

    /// Wait until `done` holds of what the receiver saw.
    pub fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done(&self.seen.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "receiver: {what} did not happen within {within:?}: {:?}",
            self.seen.lock().unwrap()
        );
    }
}

async fn serve(
    listener: std::net::TcpListener,
    seen: Arc<Mutex<Seen>>,
    behaviours: Arc<Mutex<VecDeque<Behaviour>>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let behaviour = behaviours
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Behaviour::Normal);
        let seen = seen.clone();
        if let Some(acceptor) = tls.clone() {
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    handle(request, seen.clone(), Behaviour::Normal)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
            continue;
        }
        tokio::spawn(async move {
            match behaviour {
                Behaviour::Hang => {
                    let mut buffer = vec![0; 65536];
                    let _ = stream.read(&mut buffer).await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Behaviour::Reset => {
                    let mut buffer = vec![0; 16];
                    let _ = stream.read(&mut buffer).await;
                    // Dropping the socket mid-request closes it under the client.
                    drop(stream);
                }
                behaviour => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = hyper::service::service_fn(move |request| {
                        handle(request, seen.clone(), behaviour.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            }
        });
    }
}

fn answer(status: StatusCode, body: String, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        // One request per connection, so each connection's behaviour applies to one request.
        .header("connection", "close");
    if let Some(seconds) = retry_after {
        response = response.header("retry-after", seconds.to_string());
    }
    response.body(Full::new(Bytes::from(body))).unwrap()
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Seen>>,
    behaviour: Behaviour,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let site_header = request
        .headers()
        .get("edgeroll-site")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let gzip = request
        .headers()
        .get("content-encoding")
        .is_some_and(|value| value == "gzip");
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let batch = match report::decode(&body, gzip) {
        Ok(batch) => batch,
        Err(error) => return Ok(answer(StatusCode::BAD_REQUEST, error.to_string(), None)),
    };
    assert_eq!(key, report::idempotency_key(&batch), "idempotency key");
    assert_eq!(site_header, batch.site, "site header");
    let record = |status: u16| {
        seen.lock().unwrap().requests.push((
            Instant::now(),
            key.clone(),
            batch.first,
            batch.last,
            status,
        ));
    };
    match behaviour {
        Behaviour::Status(code, retry_after) => {
            record(code);
            let status = StatusCode::from_u16(code).unwrap();
            return Ok(answer(status, "{}".to_owned(), retry_after));
        }
        Behaviour::Garbage => {
            record(200);
            return Ok(answer(StatusCode::OK, "<html>oops</html>".to_owned(), None));
        }
        Behaviour::MaxReports(max) if batch.reports.len() > max => {
            record(413);
            return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE, "{}".to_owned(), None));
        }
        _ => {}
    }
    let (status, ack) = {
        let mut seen = seen.lock().unwrap();
        let high_water = seen.high_water.get(&batch.site).copied().unwrap_or(0);
        match report::judge(high_water, &batch) {
            Judgement::Duplicate => {
                seen.duplicates += 1;
                (StatusCode::OK, high_water)
            }
            Judgement::Gap { .. } => {
                seen.gaps += 1;
                (StatusCode::CONFLICT, high_water)
            }
            Judgement::Accept { from } => {
                let kept: Vec<Report> = batch
                    .reports
                    .iter()
                    .filter(|report| report.seq >= from)
                    .cloned()
                    .collect();
                let present: Vec<u64> = kept.iter().map(|report| report.seq).collect();
                let missing: Vec<u64> = (from..=batch.last)
                    .filter(|seq| !present.contains(seq))
                    .collect();
                seen.missing
                    .entry(batch.site.clone())
                    .or_default()
                    .extend(missing);
                seen.reports
                    .entry(batch.site.clone())
                    .or_default()
                    .extend(kept);
                seen.high_water.insert(batch.site.clone(), batch.last);
                (StatusCode::OK, batch.last)
            }
        }
    };
    record(status.as_u16());
    if behaviour == Behaviour::AcceptThenReset {
        return Err(std::io::Error::other("answer lost on purpose"));
    }
    let body = serde_json::to_string(&Ack {
        site: batch.site.clone(),
        ack,
    })
    .unwrap();
    Ok(answer(status, body, None))
}
