//! The `web` provider against real HTTP and HTTPS servers on loopback: headers and bodies
//! arrive, `jsonPath` selects or misses, and every failure to get an answer is an Error,
//! never a value a condition could fail on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgeroll::analysis::Outcome;
use edgeroll::provider::http_client::HttpClient;
use edgeroll::provider::web;
use edgeroll::spec::WebQuery;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The test server's answers, by path.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        Ok(response)
    };
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|value| value == "Bearer t0k");
    match (request.method().as_str(), request.uri().path()) {
        ("GET", "/status") if authorized => reply(
            StatusCode::OK,
            json!({ "data": { "ok": true, "p99": 0.25, "items": [{ "name": "a" }] } }).to_string(),
        ),
        ("GET", "/status") => reply(StatusCode::UNAUTHORIZED, "no token".into()),
        ("POST", "/echo") => {
            let content_type = request
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|body| body.to_bytes());
            let body: Value = body
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or(Value::Null);
            reply(
                StatusCode::OK,
                json!({ "received": body, "contentType": content_type }).to_string(),
            )
        }
        (_, "/fail") => reply(StatusCode::INTERNAL_SERVER_ERROR, "boom".into()),
        (_, "/invalid") => reply(StatusCode::OK, "<html>not json</html>".into()),
        (_, "/slow") => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            reply(StatusCode::OK, "{}".into())
        }
        _ => reply(StatusCode::NOT_FOUND, "not found".into()),
    }
}

/// Serve [`answer`] over plain HTTP on loopback.
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    address
}

/// Serve [`answer`] over HTTPS with a fresh self-signed certificate for 127.0.0.1; returns the
/// address and the certificate to trust.
async fn https_server() -> (SocketAddr, rustls::pki_types::CertificateDer<'static>) {
    edgeroll::provider::http_client::install_crypto_provider();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let certificate = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    (address, certificate)
}

fn get(url: String, json_path: Option<&str>) -> WebQuery {
    WebQuery {
        url,
        method: "GET".into(),
        headers: vec![("Authorization".into(), "Bearer t0k".into())],
        body: None,
        json_path: json_path.map(str::to_string),
        timeout: Duration::from_secs(10),
    }
}

fn error_message(outcome: Outcome) -> String {
    match outcome {
        Outcome::Error(message) => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn get_sends_headers_and_json_path_selects_the_value() {
    let server = http_server().await;
    let url = format!("http://{server}/status");
    // Argo's braced form and the plain form select the same value.
    assert_eq!(
        web::measure(&get(url.clone(), Some("{$.data.ok}"))).await,
        Outcome::Value(json!(true))
    );
    assert_eq!(
        web::measure(&get(url.clone(), Some("$.data.p99"))).await,
        Outcome::Value(json!(0.25))
    );
    assert_eq!(
        web::measure(&get(url.clone(), Some("$['data'].items[0].name"))).await,
        Outcome::Value(json!("a"))
    );
    // No path binds the whole answer.
    let Outcome::Value(whole) = web::measure(&get(url.clone(), None)).await else {
        panic!("a value");
    };
    assert_eq!(whole["data"]["ok"], json!(true));
    // A path that selects nothing is no evidence.
    let Outcome::NoData(message) = web::measure(&get(url.clone(), Some("$.data.missing"))).await
    else {
        panic!("no data");
    };
    assert!(message.contains("$.data.missing"), "{message}");
    // Without the header the server refuses, which is an error, not a failed value.
    let mut unauthorized = get(url.clone(), Some("$.data.ok"));
    unauthorized.headers.clear();
    let message = error_message(web::measure(&unauthorized).await);
    assert!(message.contains("401"), "{message}");
    assert!(message.contains(&url), "{message}");
}

#[tokio::test]
async fn post_sends_its_body_and_headers() {
    let server = http_server().await;
    let query = WebQuery {
        url: format!("http://{server}/echo"),
        method: "POST".into(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Some(r#"{"service": "ingest", "window": 30}"#.into()),
        json_path: Some("$.received".into()),
        timeout: Duration::from_secs(10),
    };
    assert_eq!(
        web::measure(&query).await,
        Outcome::Value(json!({ "service": "ingest", "window": 30 }))
    );
    let content_type = WebQuery {
        json_path: Some("$.contentType".into()),
        ..query
    };
    assert_eq!(
        web::measure(&content_type).await,
        Outcome::Value(json!("application/json"))
    );
}

#[tokio::test]
async fn failures_to_get_an_answer_are_errors() {
    let server = http_server().await;
    let message = error_message(web::measure(&get(format!("http://{server}/fail"), None)).await);
    assert!(message.contains("500"), "{message}");
    assert!(message.contains("boom"), "{message}");

    let message = error_message(web::measure(&get(format!("http://{server}/invalid"), None)).await);
    assert!(message.contains("invalid JSON"), "{message}");

    let mut slow = get(format!("http://{server}/slow"), None);
    slow.timeout = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let message = error_message(web::measure(&slow).await);
    assert!(message.contains("did not answer within 300ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let message = error_message(web::measure(&get(format!("http://{closed}/status"), None)).await);
    assert!(message.contains("cannot reach"), "{message}");

    // A path made invalid by an argument is caught before anything is sent.
    let message = error_message(
        web::measure(&get(format!("http://{server}/status"), Some("$.items[*]"))).await,
    );
    assert!(message.contains("not supported"), "{message}");
}

#[tokio::test]
async fn https_works_with_a_trusted_certificate_and_refuses_an_untrusted_one() {
    let (server, certificate) = https_server().await;
    let url = format!("https://{server}/status");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let trusting = HttpClient::with_roots(roots);
    assert_eq!(
        web::measure_with(&trusting, &get(url.clone(), Some("$.data.ok"))).await,
        Outcome::Value(json!(true))
    );
    // The shared client trusts only the system's CAs, which never signed this certificate.
    let message = error_message(web::measure(&get(url.clone(), Some("$.data.ok"))).await);
    assert!(message.contains("cannot reach"), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}
