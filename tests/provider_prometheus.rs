//! The `prometheus` provider against a real Prometheus (remote-write receiver on): series are
//! pushed with a hand-encoded remote-write request, then queried the way an analysis does.
//! Errors that need no Prometheus (nothing listening, a server that never answers) run always.
//!
//! The real-Prometheus test is ignored unless asked for; run it with
//! `EDGEROLL_TEST_PROMETHEUS=$(tests/engines/prometheus.sh start) cargo test --test
//! provider_prometheus -- --include-ignored` (or `.ci/run`).

// Samples pushed to a real Prometheus carry real timestamps.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use edgeroll::analysis::Outcome;
use edgeroll::provider::http_client::HttpClient;
use edgeroll::provider::prometheus;
use edgeroll::spec::PrometheusQuery;
use http_body_util::Full;
use serde_json::json;

/// Where the engine script's Prometheus listens, when the test is asked to use one.
const ADDRESS_VARIABLE: &str = "EDGEROLL_TEST_PROMETHEUS";
/// A pushed sample is queryable at once, but a busy machine gets generous time.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);

fn query(address: &str, promql: &str, timeout: Duration) -> PrometheusQuery {
    PrometheusQuery {
        address: address.to_string(),
        query: promql.to_string(),
        timeout,
    }
}

fn error_message(outcome: Outcome) -> String {
    match outcome {
        Outcome::Error(message) => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

// --- remote write, by hand: protobuf WriteRequest in a literal-only snappy block ---

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited protobuf field.
fn field(number: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push((number << 3) | 2);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `WriteRequest { timeseries: [TimeSeries { labels, samples: [Sample { value, timestamp }] }] }`.
fn write_request(labels: &[(&str, &str)], value: f64, timestamp_ms: i64) -> Vec<u8> {
    let mut labels = labels.to_vec();
    labels.sort();
    let mut series = Vec::new();
    for (name, label_value) in labels {
        let mut label = Vec::new();
        field(1, name.as_bytes(), &mut label);
        field(2, label_value.as_bytes(), &mut label);
        field(1, &label, &mut series);
    }
    let mut sample = vec![0x09];
    sample.extend_from_slice(&value.to_le_bytes());
    sample.push(0x10);
    varint(timestamp_ms as u64, &mut sample);
    field(2, &sample, &mut series);
    let mut request = Vec::new();
    field(1, &series, &mut request);
    request
}

/// Snappy's block format with literals only: valid, just not compressed.
fn snappy_literal_block(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(data.len() as u64, &mut out);
    for chunk in data.chunks(65_536) {
        let length = chunk.len() - 1;
        if length < 60 {
            out.push((length as u8) << 2);
        } else if length < 256 {
            out.push(60 << 2);
            out.push(length as u8);
        } else {
            out.push(61 << 2);
            out.extend_from_slice(&(length as u16).to_le_bytes());
        }
        out.extend_from_slice(chunk);
    }
    out
}

async fn push(address: &str, labels: &[(&str, &str)], value: f64) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let body = snappy_literal_block(&write_request(labels, value, now_ms));
    let request = http::Request::post(format!("{address}/api/v1/write"))
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let answer = HttpClient::with_native_roots()
        .send(request, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        204,
        "remote write: {}",
        String::from_utf8_lossy(&answer.body)
    );
}

/// Query until the answer is not NoData (or the time is up), and return the last answer.
async fn query_until_data(spec: &PrometheusQuery) -> Outcome {
    let started = tokio::time::Instant::now();
    loop {
        let outcome = prometheus::measure(spec).await;
        if !matches!(outcome, Outcome::NoData(_)) || started.elapsed() > VISIBLE_WITHIN {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs a real Prometheus: run tests/engines/prometheus.sh start, or .ci/run"]
async fn pushed_series_become_argo_results_and_no_evidence_is_never_a_value() {
    let address = std::env::var(ADDRESS_VARIABLE).unwrap_or_else(|_| {
        panic!("set {ADDRESS_VARIABLE} to the address tests/engines/prometheus.sh start prints")
    });
    // Fail, not skip, when the address is given but nothing answers there.
    let ready = HttpClient::with_native_roots()
        .send(
            http::Request::get(format!("{address}/-/ready"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|error| panic!("{ADDRESS_VARIABLE}={address} is not reachable: {error}"));
    assert_eq!(ready.status, 200, "{address} is not ready");

    // A run id keeps repeated test runs against one Prometheus apart.
    let run = format!("{}", fastrand::u64(..));
    let timeout = Duration::from_secs(10);
    push(
        &address,
        &[
            ("__name__", "edgeroll_test_success_ratio"),
            ("run", &run),
            ("version", "canary"),
        ],
        0.995,
    )
    .await;
    push(
        &address,
        &[
            ("__name__", "edgeroll_test_success_ratio"),
            ("run", &run),
            ("version", "stable"),
        ],
        0.9,
    )
    .await;

    // An instant vector is an array of the sample values, in series order.
    let one = query(
        &address,
        &format!("edgeroll_test_success_ratio{{run=\"{run}\",version=\"canary\"}}"),
        timeout,
    );
    assert_eq!(query_until_data(&one).await, Outcome::Value(json!([0.995])));
    let both = query(
        &address,
        &format!("sort(edgeroll_test_success_ratio{{run=\"{run}\"}})"),
        timeout,
    );
    assert_eq!(
        query_until_data(&both).await,
        Outcome::Value(json!([0.9, 0.995]))
    );
    // A scalar is a number.
    let scalar = query(
        &address,
        &format!("scalar(edgeroll_test_success_ratio{{run=\"{run}\",version=\"stable\"}})"),
        timeout,
    );
    assert_eq!(
        prometheus::measure(&scalar).await,
        Outcome::Value(json!(0.9))
    );

    // No series and NaN are no evidence, not a value a condition could fail on.
    let absent = query(
        &address,
        &format!("edgeroll_test_success_ratio{{run=\"{run}\",version=\"none\"}}"),
        timeout,
    );
    assert_eq!(
        prometheus::measure(&absent).await,
        Outcome::NoData("query returned no series".into())
    );
    assert_eq!(
        prometheus::measure(&query(&address, "0/0", timeout)).await,
        Outcome::NoData("query returned NaN".into())
    );

    // Bad PromQL is an error naming the address and Prometheus's reason.
    let message = error_message(prometheus::measure(&query(&address, "sum(", timeout)).await);
    assert!(message.contains(&address), "{message}");
    assert!(message.contains("400"), "{message}");
    assert!(message.contains("parse error"), "{message}");
    // A trailing slash on the address is fine.
    let slashed = query(&format!("{address}/"), &one.query, timeout);
    assert_eq!(
        prometheus::measure(&slashed).await,
        Outcome::Value(json!([0.995]))
    );
}

#[tokio::test]
async fn an_unreachable_prometheus_is_an_error_naming_its_address() {
    // Bind then drop, so the port is very likely closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("http://127.0.0.1:{port}");
    let message =
        error_message(prometheus::measure(&query(&address, "up", Duration::from_secs(10))).await);
    assert!(message.contains(&address), "{message}");
    assert!(message.contains("cannot reach"), "{message}");
}

#[tokio::test]
async fn a_prometheus_that_never_answers_times_out_as_an_error() {
    // Accepts connections and reads, but never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let started = tokio::time::Instant::now();
    let message = error_message(
        prometheus::measure(&query(&address, "up", Duration::from_millis(300))).await,
    );
    assert!(message.contains(&address), "{message}");
    assert!(message.contains("did not answer within 300ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    silent.abort();
}
