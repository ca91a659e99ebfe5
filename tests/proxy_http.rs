//! The weighted proxy end to end: real sockets on 127.0.0.1, tiny hyper backends that answer with
//! their version, and hyper clients (HTTP/1.1 keep-alive and HTTP/2 prior knowledge).
//!
//! Weight tests seed the thread-local random source; `#[tokio::test]` runs everything on one
//! thread, so the proxy's draws are reproducible and the shares cannot flake.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgeroll::proxy::{self, Metrics, Pool, ProxyOptions, RouteTable};
use edgeroll::spec::BuiltinMetric;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound on anything that should happen quickly, for a busy 2-core machine.
const PATIENCE: Duration = Duration::from_secs(20);
const REQUESTS_PER_WEIGHT: usize = 2_000;
const SHARE_TOLERANCE_POINTS: f64 = 3.5;
const SEED: u64 = 0x5eed_ed9e;

// === backends ===

/// A tiny HTTP/1.1 backend. `GET /` answers 200 with its version; `/fail` answers 500;
/// `/slow?ms=N` answers after N ms; `/echo` streams the request body back; `/headers` answers
/// with the Host and x-forwarded-for it received.
struct Backend {
    addr: SocketAddr,
    /// Requests that reached this backend (counted when they arrive).
    hits: Arc<AtomicUsize>,
}

async fn spawn_backend(version: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    let hits = Arc::new(AtomicUsize::new(0));
    let version = Bytes::from(format!("{version}\n"));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let version = version.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let version = version.clone();
                    async move { Ok::<_, Infallible>(backend_answer(request, version).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend { addr, hits }
}

async fn backend_answer(
    request: Request<Incoming>,
    version: Bytes,
) -> Response<Either<Full<Bytes>, Incoming>> {
    let full = |status: u16, body: Bytes| {
        let mut response = Response::new(Either::Left(Full::new(body)));
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        response
    };
    match request.uri().path() {
        "/fail" => full(500, Bytes::from_static(b"failed\n")),
        "/slow" => {
            let millis: u64 = request
                .uri()
                .query()
                .and_then(|query| query.strip_prefix("ms="))
                .and_then(|millis| millis.parse().ok())
                .unwrap_or(500);
            tokio::time::sleep(Duration::from_millis(millis)).await;
            full(200, version)
        }
        "/echo" => Response::new(Either::Right(request.into_body())),
        "/headers" => {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let body = format!(
                "host={} xff={} connection={}",
                header("host"),
                header("x-forwarded-for"),
                header("x-hop")
            );
            full(200, Bytes::from(body))
        }
        _ => full(200, version),
    }
}

/// An address where nothing listens.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

fn pool(version: &str, backends: &[&Backend]) -> Pool {
    Pool {
        version: version.to_owned(),
        addrs: backends.iter().map(|backend| backend.addr).collect(),
    }
}

fn routes(stable: Pool, canary: Pool, canary_weight_percent: u8) -> Arc<RouteTable> {
    Arc::new(RouteTable {
        stable,
        canary,
        canary_weight_percent,
    })
}

// === the proxy under test ===

struct Proxy {
    addr: SocketAddr,
    routes: watch::Sender<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_proxy(table: Arc<RouteTable>, options: ProxyOptions) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let (routes, receiver) = watch::channel(table);
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(proxy::serve_with(
        listener,
        receiver,
        Arc::clone(&metrics),
        shutdown.clone(),
        options,
    ));
    Proxy {
        addr,
        routes,
        metrics,
        shutdown,
        task,
    }
}

async fn start_default_proxy(table: Arc<RouteTable>) -> Proxy {
    start_proxy(table, ProxyOptions::with_grace(Duration::from_secs(10))).await
}

// === clients ===

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn http1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn http2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn send(client: &TestClient, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("response in time")
        .expect("response");
    let status = response.status();
    let body = tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).trim().to_owned())
}

async fn get(client: &TestClient, proxy: SocketAddr, path: &str) -> (StatusCode, String) {
    let request = Request::get(format!("http://{proxy}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(client, request).await
}

/// Send `count` GETs one after another over keep-alive; count the answers by body.
async fn tally(client: &TestClient, proxy: SocketAddr, count: usize) -> HashMap<String, usize> {
    let mut answers = HashMap::new();
    for _ in 0..count {
        let (status, body) = get(client, proxy, "/").await;
        let key = if status == StatusCode::OK {
            body
        } else {
            status.as_str().to_owned()
        };
        *answers.entry(key).or_insert(0) += 1;
    }
    answers
}

/// Poll `condition` until it holds or PATIENCE runs out.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn check_shares(label: &str, proxy: &Proxy, stable: &Pool, canary: &Pool) {
    let client = http1_client();
    for weight in [0u8, 10, 37, 50, 90, 100] {
        proxy
            .routes
            .send(routes(stable.clone(), canary.clone(), weight))
            .expect("send routes");
        let answers = tally(&client, proxy.addr, REQUESTS_PER_WEIGHT).await;
        let to_canary = answers.get(&canary.version).copied().unwrap_or(0);
        let to_stable = answers.get(&stable.version).copied().unwrap_or(0);
        assert_eq!(to_canary + to_stable, REQUESTS_PER_WEIGHT, "{answers:?}");
        let share = 100.0 * to_canary as f64 / REQUESTS_PER_WEIGHT as f64;
        println!("{label}: setWeight {weight:>3} -> canary share {share:5.2} % ({to_canary}/{REQUESTS_PER_WEIGHT})");
        match weight {
            0 => assert_eq!(to_canary, 0),
            100 => assert_eq!(to_stable, 0),
            _ => assert!(
                (share - f64::from(weight)).abs() <= SHARE_TOLERANCE_POINTS,
                "weight {weight}: canary share {share}"
            ),
        }
    }
}

// === weights ===

#[tokio::test]
async fn canary_share_follows_the_weight_with_one_instance_each() {
    fastrand::seed(SEED);
    let stable_backend = spawn_backend("1.0.0").await;
    let canary_backend = spawn_backend("2.0.0").await;
    let stable = pool("1.0.0", &[&stable_backend]);
    let canary = pool("2.0.0", &[&canary_backend]);
    let proxy = start_default_proxy(routes(stable.clone(), canary.clone(), 0)).await;
    check_shares("1 stable + 1 canary", &proxy, &stable, &canary).await;
}

#[tokio::test]
async fn canary_share_does_not_follow_the_instance_ratio() {
    fastrand::seed(SEED + 1);
    let mut stable_backends = Vec::new();
    for _ in 0..3 {
        stable_backends.push(spawn_backend("1.0.0").await);
    }
    let canary_backends = [spawn_backend("2.0.0").await, spawn_backend("2.0.0").await];
    let stable = pool("1.0.0", &stable_backends.iter().collect::<Vec<_>>());
    let canary = pool("2.0.0", &canary_backends.iter().collect::<Vec<_>>());
    let proxy = start_default_proxy(routes(stable.clone(), canary.clone(), 0)).await;
    check_shares("3 stable + 2 canary", &proxy, &stable, &canary).await;

    // Round-robin inside a pool spreads the load evenly over its instances.
    for backend in stable_backends.iter().chain(canary_backends.iter()) {
        assert!(backend.hits.load(Ordering::SeqCst) > 1000);
    }
    let canary_hits: Vec<usize> = canary_backends
        .iter()
        .map(|backend| backend.hits.load(Ordering::SeqCst))
        .collect();
    assert!(
        canary_hits[0].abs_diff(canary_hits[1]) <= 1,
        "{canary_hits:?}"
    );
}

#[tokio::test]
async fn weight_zero_sends_nothing_to_the_canary() {
    fastrand::seed(SEED + 2);
    let stable_backend = spawn_backend("1.0.0").await;
    let canary_backend = spawn_backend("2.0.0").await;
    let stable = pool("1.0.0", &[&stable_backend]);
    let canary = pool("2.0.0", &[&canary_backend]);
    let proxy = start_default_proxy(routes(stable.clone(), canary.clone(), 50)).await;
    let client = http1_client();
    let answers = tally(&client, proxy.addr, 100).await;
    assert!(answers.get("2.0.0").copied().unwrap_or(0) > 0);

    // The abort: weight 0.
    proxy
        .routes
        .send(routes(stable.clone(), canary.clone(), 0))
        .expect("send routes");
    let canary_hits_before = canary_backend.hits.load(Ordering::SeqCst);
    let answers = tally(&client, proxy.addr, 1000).await;
    assert_eq!(answers.get("1.0.0"), Some(&1000), "{answers:?}");
    assert_eq!(
        canary_backend.hits.load(Ordering::SeqCst),
        canary_hits_before
    );

    // Even with no stable instance left, weight 0 keeps the canary unreachable: 503 instead.
    let empty_stable = Pool {
        version: "1.0.0".to_owned(),
        addrs: Vec::new(),
    };
    proxy
        .routes
        .send(routes(empty_stable, canary, 0))
        .expect("send routes");
    let answers = tally(&client, proxy.addr, 50).await;
    assert_eq!(answers.get("503"), Some(&50), "{answers:?}");
    assert_eq!(
        canary_backend.hits.load(Ordering::SeqCst),
        canary_hits_before
    );
    assert_eq!(proxy.metrics.unrouted_total(), 50);
}

#[tokio::test]
async fn an_empty_pool_with_weight_falls_back_to_the_other_pool() {
    let stable_backend = spawn_backend("1.0.0").await;
    let stable = pool("1.0.0", &[&stable_backend]);
    let starting_canary = Pool {
        version: "2.0.0".to_owned(),
        addrs: Vec::new(),
    };
    let proxy = start_default_proxy(routes(stable, starting_canary, 50)).await;
    let answers = tally(&http1_client(), proxy.addr, 100).await;
    assert_eq!(answers.get("1.0.0"), Some(&100), "{answers:?}");
}

#[tokio::test]
async fn weight_changes_never_drop_requests_in_flight() {
    fastrand::seed(SEED + 3);
    let stable_backend = spawn_backend("1.0.0").await;
    let canary_backend = spawn_backend("2.0.0").await;
    let stable = pool("1.0.0", &[&stable_backend]);
    let canary = pool("2.0.0", &[&canary_backend]);
    let proxy = start_default_proxy(routes(stable.clone(), canary.clone(), 50)).await;
    let client = http1_client();

    const IN_FLIGHT: usize = 20;
    let mut requests = Vec::new();
    for _ in 0..IN_FLIGHT {
        let client = client.clone();
        let addr = proxy.addr;
        requests.push(tokio::spawn(async move {
            get(&client, addr, "/slow?ms=800").await
        }));
    }
    let total_hits =
        || stable_backend.hits.load(Ordering::SeqCst) + canary_backend.hits.load(Ordering::SeqCst);
    eventually("all slow requests to reach a backend", || {
        total_hits() == IN_FLIGHT
    })
    .await;

    // Move everything to the canary, then empty the stable pool, while they are in flight.
    proxy
        .routes
        .send(routes(stable.clone(), canary.clone(), 100))
        .expect("send routes");
    let answers = tally(&client, proxy.addr, 20).await;
    assert_eq!(answers.get("2.0.0"), Some(&20), "{answers:?}");
    let no_stable = Pool {
        version: "1.0.0".to_owned(),
        addrs: Vec::new(),
    };
    proxy
        .routes
        .send(routes(no_stable, canary, 100))
        .expect("send routes");

    for request in requests {
        let (status, body) = request.await.expect("request task");
        assert_eq!(status, StatusCode::OK);
        assert!(body == "1.0.0" || body == "2.0.0", "{body}");
    }
}

// === protocols and headers ===

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let stable_backend = spawn_backend("1.0.0").await;
    let proxy = start_default_proxy(routes(
        pool("1.0.0", &[&stable_backend]),
        Pool::default(),
        0,
    ))
    .await;
    let client = http2_client();
    for _ in 0..10 {
        assert_eq!(
            get(&client, proxy.addr, "/").await,
            (StatusCode::OK, "1.0.0".to_owned())
        );
    }
    // The backend speaks HTTP/1.1, so the proxy turns `:authority` into a Host header.
    let (status, body) = get(&client, proxy.addr, "/headers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(&format!("host={} ", proxy.addr)), "{body}");
}

#[tokio::test]
async fn host_is_kept_and_the_client_is_added_to_x_forwarded_for() {
    let backend = spawn_backend("1.0.0").await;
    let proxy = start_default_proxy(routes(pool("1.0.0", &[&backend]), Pool::default(), 0)).await;
    let request = Request::get(format!("http://{}/headers", proxy.addr))
        .header("host", "shop.example")
        .header("x-forwarded-for", "10.1.2.3")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, body) = send(&http1_client(), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "host=shop.example xff=10.1.2.3, 127.0.0.1 connection=-"
    );
}

#[tokio::test]
async fn request_and_response_bodies_stream_through() {
    let backend = spawn_backend("1.0.0").await;
    let proxy = start_default_proxy(routes(pool("1.0.0", &[&backend]), Pool::default(), 0)).await;
    let payload = "x".repeat(1 << 20);
    for client in [http1_client(), http2_client()] {
        let request = Request::post(format!("http://{}/echo", proxy.addr))
            .body(Full::new(Bytes::from(payload.clone())))
            .expect("request");
        let (status, body) = send(&client, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), payload.len());
    }
}

// === metrics ===

#[tokio::test]
async fn metrics_count_server_errors_and_transport_failures() {
    let stable_backend = spawn_backend("1.0.0").await;
    let stable = pool("1.0.0", &[&stable_backend]);
    let broken_canary = Pool {
        version: "2.0.0".to_owned(),
        addrs: vec![dead_addr().await],
    };
    let proxy = start_default_proxy(routes(stable.clone(), broken_canary.clone(), 0)).await;
    let client = http1_client();
    for _ in 0..30 {
        assert_eq!(get(&client, proxy.addr, "/").await.0, StatusCode::OK);
    }
    for _ in 0..10 {
        assert_eq!(
            get(&client, proxy.addr, "/fail").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    proxy
        .routes
        .send(routes(stable, broken_canary, 100))
        .expect("send routes");
    for _ in 0..5 {
        assert_eq!(
            get(&client, proxy.addr, "/").await.0,
            StatusCode::BAD_GATEWAY
        );
    }

    let window = Duration::from_secs(60);
    let stable_success = proxy
        .metrics
        .query("1.0.0", BuiltinMetric::SuccessRate, window);
    assert_eq!(stable_success.samples, 40);
    assert!(
        (stable_success.value - 0.75).abs() < 1e-9,
        "{stable_success:?}"
    );
    let canary_errors = proxy
        .metrics
        .query("2.0.0", BuiltinMetric::ErrorRate, window);
    assert_eq!((canary_errors.value, canary_errors.samples), (1.0, 5));
    let rate = proxy
        .metrics
        .query("1.0.0", BuiltinMetric::RequestRate, window);
    assert!(rate.value > 0.0, "{rate:?}");
    let p99 = proxy
        .metrics
        .query("1.0.0", BuiltinMetric::LatencyP99, window);
    assert!(p99.value > 0.0 && p99.value < 5.0, "{p99:?}");

    let snapshot = proxy.metrics.snapshot();
    assert_eq!(snapshot.len(), 2);
    assert_eq!(snapshot[0].version, "1.0.0");
    assert_eq!(snapshot[0].status_classes, [0, 30, 0, 0, 10]);
    assert_eq!(snapshot[1].transport_failures, 5);
    assert_eq!(snapshot[1].status_classes, [0; 5]);
}

#[tokio::test]
async fn a_backend_that_does_not_answer_in_time_gets_504() {
    let backend = spawn_backend("1.0.0").await;
    let options = ProxyOptions {
        response_header_timeout: Duration::from_millis(300),
        ..ProxyOptions::with_grace(Duration::from_secs(1))
    };
    let proxy = start_proxy(
        routes(pool("1.0.0", &[&backend]), Pool::default(), 0),
        options,
    )
    .await;
    let (status, _) = get(&http1_client(), proxy.addr, "/slow?ms=5000").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let totals = proxy.metrics.snapshot();
    assert_eq!(totals[0].transport_failures, 1);
}

// === shutdown and robustness ===

#[tokio::test]
async fn shutdown_waits_for_requests_in_flight_and_refuses_new_connections() {
    let backend = spawn_backend("1.0.0").await;
    let proxy = start_default_proxy(routes(pool("1.0.0", &[&backend]), Pool::default(), 0)).await;
    let client = http1_client();
    let addr = proxy.addr;
    let slow = tokio::spawn(async move { get(&client, addr, "/slow?ms=1500").await });
    eventually("the slow request to reach the backend", || {
        backend.hits.load(Ordering::SeqCst) == 1
    })
    .await;

    proxy.shutdown.cancel();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "proxy still accepts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, body) = slow.await.expect("slow request task");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1.0.0"));
    tokio::time::timeout(PATIENCE, proxy.task)
        .await
        .expect("serve returns after the request")
        .expect("serve task");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_cuts_connections_when_the_grace_runs_out() {
    let backend = spawn_backend("1.0.0").await;
    let proxy = start_proxy(
        routes(pool("1.0.0", &[&backend]), Pool::default(), 0),
        ProxyOptions::with_grace(Duration::from_millis(200)),
    )
    .await;
    let client = http1_client();
    let addr = proxy.addr;
    let stuck = tokio::spawn(async move {
        let request = Request::get(format!("http://{addr}/slow?ms=60000"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        client
            .request(request)
            .await
            .map(|response| response.status())
    });
    eventually("the stuck request to reach the backend", || {
        backend.hits.load(Ordering::SeqCst) == 1
    })
    .await;
    proxy.shutdown.cancel();
    tokio::time::timeout(PATIENCE, proxy.task)
        .await
        .expect("serve returns after the grace")
        .expect("serve task");
    let outcome = tokio::time::timeout(PATIENCE, stuck)
        .await
        .expect("client sees the cut")
        .expect("client task");
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn garbage_on_the_socket_does_not_stop_the_proxy() {
    let backend = spawn_backend("1.0.0").await;
    let proxy = start_default_proxy(routes(pool("1.0.0", &[&backend]), Pool::default(), 0)).await;
    let garbage: [&[u8]; 4] = [
        b"\x00\xff\xfe garbage \r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: \x01\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ],
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write garbage");
        let mut answer = Vec::new();
        // The proxy answers 400 or just closes; either way the connection ends.
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "connection left open after garbage");
    }
    // A client that connects and says nothing is not a problem for others either.
    let _silent = TcpStream::connect(proxy.addr).await.expect("connect");
    assert_eq!(
        get(&http1_client(), proxy.addr, "/").await,
        (StatusCode::OK, "1.0.0".to_owned())
    );
    assert!(!proxy.task.is_finished());
}

#[tokio::test]
async fn a_silent_client_is_disconnected_after_the_header_timeout() {
    let backend = spawn_backend("1.0.0").await;
    let options = ProxyOptions {
        header_read_timeout: Duration::from_millis(300),
        ..ProxyOptions::with_grace(Duration::from_secs(1))
    };
    let proxy = start_proxy(
        routes(pool("1.0.0", &[&backend]), Pool::default(), 0),
        options,
    )
    .await;
    let mut silent = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut buffer))
        .await
        .expect("the proxy closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_on_a_multi_threaded_runtime_are_all_served_and_counted() {
    const CLIENTS: usize = 8;
    const REQUESTS_EACH: usize = 200;
    let stable_backend = spawn_backend("1.0.0").await;
    let canary_backend = spawn_backend("2.0.0").await;
    let proxy = start_default_proxy(routes(
        pool("1.0.0", &[&stable_backend]),
        pool("2.0.0", &[&canary_backend]),
        25,
    ))
    .await;
    let mut clients = Vec::new();
    for index in 0..CLIENTS {
        // Half the clients speak HTTP/2, half HTTP/1.1.
        let client = if index % 2 == 0 {
            http1_client()
        } else {
            http2_client()
        };
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            tally(&client, addr, REQUESTS_EACH).await
        }));
    }
    let mut to_canary = 0;
    for client in clients {
        let answers = client.await.expect("client task");
        assert_eq!(answers.values().sum::<usize>(), REQUESTS_EACH);
        assert!(answers
            .keys()
            .all(|body| body == "1.0.0" || body == "2.0.0"));
        to_canary += answers.get("2.0.0").copied().unwrap_or(0);
    }
    let total: u64 = proxy.metrics.snapshot().iter().map(|t| t.requests).sum();
    assert_eq!(total, (CLIENTS * REQUESTS_EACH) as u64);
    let share = 100.0 * to_canary as f64 / (CLIENTS * REQUESTS_EACH) as f64;
    println!("multi-threaded, weight 25: canary share {share:.2} %");
    // Unseeded here (draws happen on two threads), so only a loose bound: 7+ standard deviations.
    assert!((share - 25.0).abs() < 8.0, "{share}");
}
