//! The sample app on a real loopback socket: answers, error rate, metrics, latency, shutdown.
// These tests drive real processes and sockets in real time, so they read the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use edgeroll::sample_app::{self, Options};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Generous bound for anything that should be quick, on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

struct Running {
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(DEADLINE, self.server)
            .await
            .expect("server stops in time")
            .expect("server task")
    }
}

fn options(version: &str) -> Options {
    Options {
        port: 0,
        version: version.to_owned(),
        error_rate: 0.0,
        latency_ms: 0,
    }
}

async fn start(options: Options) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(sample_app::serve(listener, options, async move {
        let _ = shutdown_rx.await;
    }));
    Running {
        address,
        shutdown: Some(shutdown_tx),
        server,
    }
}

fn http1_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: u16,
    version_header: Option<String>,
    body: String,
    http_version: http::Version,
}

async fn get(client: &Client<HttpConnector, Empty<Bytes>>, url: String) -> Answer {
    let request = async {
        let response = client
            .get(url.parse().expect("url"))
            .await
            .expect("request");
        let status = response.status().as_u16();
        let http_version = response.version();
        let version_header = response
            .headers()
            .get("x-version")
            .map(|value| value.to_str().expect("ascii header").to_owned());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            version_header,
            body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
            http_version,
        }
    };
    tokio::time::timeout(DEADLINE, request)
        .await
        .expect("answer in time")
}

/// The value of the sample line `name` in a Prometheus text exposition.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
        .parse()
        .expect("numeric sample")
}

#[tokio::test]
async fn answers_version_health_and_not_found_over_http1_and_http2() {
    let app = start(options("2.0.0")).await;
    let base = format!("http://{}", app.address);
    let http2_client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();

    for (client, http_version) in [
        (http1_client(), http::Version::HTTP_11),
        (http2_client, http::Version::HTTP_2),
    ] {
        let root = get(&client, format!("{base}/")).await;
        assert_eq!(root.status, 200);
        assert_eq!(root.body, "2.0.0\n");
        assert_eq!(root.version_header.as_deref(), Some("2.0.0"));
        assert_eq!(root.http_version, http_version);

        let health = get(&client, format!("{base}/healthz")).await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

        let missing = get(&client, format!("{base}/nope")).await;
        assert_eq!(missing.status, 404);
    }
    app.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_share_of_answers_fail_and_metrics_count_them() {
    const REQUESTS: usize = 2_000;
    const CLIENTS: usize = 8;
    let app = start(Options {
        error_rate: 0.2,
        ..options("3.0.0")
    })
    .await;
    let client = http1_client();
    let url = format!("http://{}/", app.address);

    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let client = client.clone();
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut errors = 0;
            for _ in 0..REQUESTS / CLIENTS {
                let answer = get(&client, url.clone()).await;
                // Failed answers still name the version, so a proxy can attribute them.
                assert_eq!(answer.version_header.as_deref(), Some("3.0.0"));
                match answer.status {
                    200 => assert_eq!(answer.body, "3.0.0\n"),
                    500 => {
                        assert_eq!(answer.body, "error\n");
                        errors += 1;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for worker in workers {
        errors += worker.await.expect("client task");
    }
    let share = errors as f64 / REQUESTS as f64;
    assert!(
        (0.165..=0.235).contains(&share),
        "{errors} of {REQUESTS} failed ({share})"
    );

    // Scrapes and probes are not counted, so the counters are exactly the answers to `GET /`.
    let _ = get(&client, format!("http://{}/healthz", app.address)).await;
    let metrics = get(&client, format!("http://{}/metrics", app.address)).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    assert_eq!(
        sample(&text, "sample_app_requests_total{code=\"500\"}"),
        errors as f64
    );
    assert_eq!(
        sample(&text, "sample_app_requests_total{code=\"200\"}"),
        (REQUESTS - errors) as f64
    );
    assert_eq!(
        sample(&text, "sample_app_request_duration_seconds_count"),
        REQUESTS as f64
    );
    assert_eq!(
        sample(
            &text,
            "sample_app_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        REQUESTS as f64
    );
    assert!(text.contains("# TYPE sample_app_request_duration_seconds histogram"));
    assert!(text.contains("sample_app_request_duration_seconds_bucket{le=\"0.005\"}"));
    assert!(text.contains("sample_app_request_duration_seconds_bucket{le=\"10\"}"));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let app = start(Options {
        latency_ms: 300,
        ..options("1.0.0")
    })
    .await;
    let client = http1_client();
    let started = Instant::now();
    let answer = get(&client, format!("http://{}/", app.address)).await;
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    let text = get(&client, format!("http://{}/metrics", app.address))
        .await
        .body;
    assert!(sample(&text, "sample_app_request_duration_seconds_sum") >= 0.3);
    assert_eq!(
        sample(
            &text,
            "sample_app_request_duration_seconds_bucket{le=\"0.25\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(&text, "sample_app_request_duration_seconds_count"),
        1.0
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_request_finish_and_refuses_new_ones() {
    let app = start(Options {
        latency_ms: 1_000,
        ..options("4.0.0")
    })
    .await;
    let address = app.address;
    let client = http1_client();
    let slow = tokio::spawn({
        let client = client.clone();
        async move { get(&client, format!("http://{address}/")).await }
    });

    // Wait until the server is answering the slow request, so shutdown really races it.
    let metrics_client = http1_client();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = get(&metrics_client, format!("http://{address}/metrics"))
            .await
            .body;
        if sample(&text, "sample_app_requests_in_flight") >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(metrics_client);

    app.stop().await.expect("clean stop");
    let answer = slow.await.expect("slow request task");
    assert_eq!((answer.status, answer.body.as_str()), (200, "4.0.0\n"));
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let error = sample_app::serve(
        listener,
        Options {
            error_rate: 1.5,
            ..options("1.0.0")
        },
        std::future::pending(),
    )
    .await
    .expect_err("error rate above 1");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("error rate 1.5"), "{error}");
}
