//! A stand-in center for the pull tests: a real HTTPS server on 127.0.0.1 with certificates from
//! a throw-away CA (rcgen), that serves a signed desired document the way `edgeroll hub` or a
//! static server would, and can misbehave on request (hang, reset, 500, 429, garbage, an
//! oversized body). It records every request it sees.

#![allow(dead_code)]
// These tests drive real sockets in real time.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use edgeroll::pull::{Handle, PullEvent, Puller};
use edgeroll::shell::Clock;
use edgeroll::store::Store;
use tokio::sync::mpsc;

/// A throw-away CA and a server certificate for 127.0.0.1 signed by it, as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// A client certificate (mutual TLS) signed by the same CA.
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("pki dir");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "edgeroll test CA");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("leaf")
                .signed_by(&leaf_key, &ca, &ca_key)
                .expect("leaf cert");
        let client_key = rcgen::KeyPair::generate().expect("client key");
        let mut client_params =
            rcgen::CertificateParams::new(vec!["store-0042".to_owned()]).expect("client");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client cert");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        Pki {
            ca_file: write("ca.pem", ca.pem()),
            cert_file: write("server.crt", leaf.pem()),
            key_file: write("server.key", leaf_key.serialize_pem()),
            client_cert_file: write("site.crt", client.pem()),
            client_key_file: write("site.key", client_key.serialize_pem()),
            ca_der: ca.der().clone(),
            cert_der: leaf.der().clone(),
            key_der: leaf_key.serialize_der(),
            dir,
        }
    }

    /// A client that trusts only this CA (ring provider), for a test's own HTTPS requests.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("root");
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    fn server_config(&self, require_client_cert: bool) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        builder
            .with_single_cert(
                vec![self.cert_der.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .expect("server config")
    }
}

/// A minisign key pair for tests.
pub struct Signer {
    pub secret: minisign::SecretKey,
    pub public: String,
}

impl Signer {
    pub fn new() -> Signer {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("keypair");
        Signer {
            secret: pair.sk,
            public: pair.pk.to_base64(),
        }
    }

    /// The `.minisig` text of `bytes`, with a signing time of `timestamp` (seconds).
    pub fn sign_at(&self, bytes: &[u8], timestamp: u64) -> String {
        minisign::sign(
            None,
            &self.secret,
            Cursor::new(bytes),
            Some(&format!("timestamp:{timestamp}\tfile:desired.toml")),
            None,
        )
        .expect("sign")
        .into_string()
    }

    pub fn sign(&self, bytes: &[u8]) -> String {
        self.sign_at(bytes, 1_796_083_100)
    }
}

/// How the stand-in answers the document's URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// The document, its ETag (and a 304 on a matching `If-None-Match`); the signature at
    /// `URL.minisig` or in the `edgeroll-signature` header.
    Serve,
    /// Read the request, never answer.
    Hang,
    /// Reset the connection after the TLS handshake.
    Reset,
    /// Answer this status with an optional `Retry-After`.
    Status(u16, Option<String>),
    /// 200 with bytes that are no document, and a signature that is no signature.
    Garbage,
    /// 200 with a chunked body that never ends (no Content-Length): endless data.
    Endless,
}

/// One request the stand-in saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub if_none_match: Option<String>,
    pub site: Option<String>,
    pub labels: Option<String>,
}

#[derive(Debug)]
pub struct Served {
    pub mode: Mode,
    pub document: Vec<u8>,
    pub signature: Option<String>,
    pub signature_in_header: bool,
    pub seen: Vec<Seen>,
}

/// The stand-in server.
pub struct Center {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<Served>>,
    stop: CancellationToken,
}

impl Drop for Center {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The path the stand-in serves the document at.
pub const DOCUMENT_PATH: &str = "/v1/sites/store-0042/desired";

impl Center {
    /// Serve on a free loopback port (in the current tokio runtime).
    pub async fn start(pki: &Pki, require_client_cert: bool) -> Center {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(pki, require_client_cert, listener)
    }

    /// Serve on `listener`.
    pub fn serve(pki: &Pki, require_client_cert: bool, listener: TcpListener) -> Center {
        let addr = listener.local_addr().expect("addr");
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(require_client_cert)));
        let state = Arc::new(Mutex::new(Served {
            mode: Mode::Serve,
            document: Vec::new(),
            signature: None,
            signature_in_header: false,
            seen: Vec::new(),
        }));
        let stop = CancellationToken::new();
        let task_state = state.clone();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let acceptor = acceptor.clone();
                let state = task_state.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let mode = state.lock().expect("state").mode.clone();
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    match mode {
                        Mode::Reset => {
                            let mut buffer = [0u8; 256];
                            let _ = tls.read(&mut buffer).await;
                            let (tcp, _) = tls.get_ref();
                            // SO_LINGER 0: the close is a TCP reset, as a crashing center's.
                            #[allow(deprecated)]
                            let _ = tcp.set_linger(Some(Duration::ZERO));
                            drop(tls);
                            return;
                        }
                        Mode::Endless => {
                            let mut buffer = [0u8; 4096];
                            let _ = tls.read(&mut buffer).await;
                            let _ = tls
                                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                                .await;
                            let chunk = format!("1000\r\n{}\r\n", "#".repeat(0x1000));
                            loop {
                                tokio::select! {
                                    () = token.cancelled() => return,
                                    written = tls.write_all(chunk.as_bytes()) => {
                                        if written.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                        }
                        Mode::Hang => {
                            let mut buffer = [0u8; 4096];
                            let _ = tls.read(&mut buffer).await;
                            state.lock().expect("state").seen.push(Seen {
                                path: DOCUMENT_PATH.to_owned(),
                                if_none_match: None,
                                site: None,
                                labels: None,
                            });
                            token.cancelled().await;
                            return;
                        }
                        _ => {}
                    }
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, request)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Center { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!(
            "https://127.0.0.1:{}/v1/sites/{{site}}/desired",
            self.addr.port()
        )
    }

    pub fn publish(&self, document: &[u8], signature: Option<String>) {
        let mut state = self.state.lock().expect("state");
        state.document = document.to_vec();
        state.signature = signature;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("state").mode = mode;
    }

    pub fn signature_in_header(&self, yes: bool) {
        self.state.lock().expect("state").signature_in_header = yes;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", &edgeroll::trust::digest(bytes)[..16])
}

fn answer(state: &Mutex<Served>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut state = state.lock().expect("state");
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let path = request.uri().path().to_owned();
    state.seen.push(Seen {
        path: path.clone(),
        if_none_match: header("if-none-match"),
        site: header(edgeroll::wire::SITE_HEADER),
        labels: header(edgeroll::wire::LABELS_HEADER),
    });
    let reply = |status: u16, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        response
    };
    match &state.mode {
        Mode::Status(status, retry_after) => {
            let mut response = reply(*status, b"center trouble".to_vec());
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", after.parse().expect("header"));
            }
            return response;
        }
        Mode::Garbage => {
            let mut response = reply(200, b"\x00\x01 this is not toml {{{".to_vec());
            response.headers_mut().insert(
                edgeroll::wire::SIGNATURE_HEADER,
                "bm90IGEgc2lnbmF0dXJl".parse().expect("header"),
            );
            return response;
        }
        _ => {}
    }
    if path == format!("{DOCUMENT_PATH}.minisig") {
        return match &state.signature {
            Some(signature) if !state.signature_in_header => {
                reply(200, signature.clone().into_bytes())
            }
            _ => reply(404, b"no signature".to_vec()),
        };
    }
    if path != DOCUMENT_PATH {
        return reply(404, b"not found".to_vec());
    }
    let etag = etag_of(&state.document);
    if header("if-none-match").as_deref() == Some(etag.as_str()) {
        let mut response = reply(304, Vec::new());
        response
            .headers_mut()
            .insert("etag", etag.parse().expect("header"));
        return response;
    }
    let mut response = reply(200, state.document.clone());
    response
        .headers_mut()
        .insert("etag", etag.parse().expect("header"));
    if state.signature_in_header {
        if let Some(signature) = &state.signature {
            let encoded = base64::engine::general_purpose::STANDARD.encode(signature);
            response.headers_mut().insert(
                edgeroll::wire::SIGNATURE_HEADER,
                encoded.parse().expect("header"),
            );
        }
    }
    response
}

/// A desired document with `serial` and `extra` top-level lines, no services.
pub fn document(serial: u64, extra: &str) -> Vec<u8> {
    format!("apiVersion = \"edgeroll/v1\"\nserial = {serial}\n{extra}").into_bytes()
}

/// Write an agent config for a site `store-0042` (cohort pilot) pulling from `url`, with
/// `desired_extra` lines in `[desired]`; returns its path.
pub fn write_config(dir: &Path, url: &str, desired_extra: &str) -> PathBuf {
    let path = dir.join("edgeroll.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nsite = \"store-0042\"\nlabels = {{ cohort = \"pilot\", region = \"eu-west\" }}\n\
             state_dir = \"{}\"\nsocket = \"{}\"\n\n[desired]\nsource = \"{url}\"\npoll_interval = \"1h\"\n{desired_extra}\n",
            dir.join("state").display(),
            dir.join("edgeroll.sock").display(),
        ),
    )
    .expect("write config");
    path
}

/// Labels as the site sends them.
pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cohort".to_owned(), "pilot".to_owned()),
        ("region".to_owned(), "eu-west".to_owned()),
    ])
}

// === driving a pull ===

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub handle: Option<Handle>,
    pub events: mpsc::Receiver<PullEvent>,
    pub initial: Vec<PullEvent>,
}

/// What one round gave: documents applied, refusals (rule, message), failures, last result.
#[derive(Debug, Default)]
pub struct Round {
    pub applied: Vec<(u64, bool)>,
    pub refused: Vec<(String, String)>,
    pub failed: Vec<String>,
    pub last_result: String,
    pub etag: Option<String>,
    pub serial: Option<u64>,
    pub key_id: Option<String>,
    pub stale: bool,
}

pub fn summarize(events: Vec<PullEvent>, round: &mut Round) {
    for event in events {
        match event {
            PullEvent::Apply { document, stale } => round.applied.push((document.serial, stale)),
            PullEvent::Refused(refusal) => round.refused.push((refusal.rule, refusal.message)),
            PullEvent::Failed(failure) => round.failed.push(failure.message),
            PullEvent::Source(view) => {
                round.last_result = view.record.last_result.clone();
                round.etag = view.record.etag.clone();
                round.serial = view.serial;
                round.key_id = view.record.key_id.clone();
                round.stale = view.record.stale;
            }
        }
    }
}

impl Rig {
    pub fn start(dir: tempfile::TempDir, url: &str, desired_extra: &str) -> Rig {
        Self::start_with_clock(dir, url, desired_extra, Clock::system())
    }

    /// As [`Rig::start`], with the site's clock starting at `clock`.
    pub fn start_with_clock(
        dir: tempfile::TempDir,
        url: &str,
        desired_extra: &str,
        clock: Clock,
    ) -> Rig {
        let config_path = write_config(dir.path(), url, desired_extra);
        let config = edgeroll::config::load(&config_path).expect("config");
        let store = Arc::new(Store::open(&config.state_dir).expect("store"));
        let mut puller = Puller::new(&config, store.clone(), clock);
        let initial = puller.initial();
        let (sender, events) = mpsc::channel(64);
        let handle = puller.spawn(sender, CancellationToken::new());
        Rig {
            dir,
            store,
            handle: Some(handle),
            events,
            initial,
        }
    }

    /// Wake the pull and collect what one round sends.
    pub async fn round(&mut self) -> Round {
        if let Some(handle) = &self.handle {
            handle.wake();
        }
        let mut round = Round::default();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("the pull sent nothing")
                .expect("the pull stopped");
            let last = matches!(event, PullEvent::Source(_));
            summarize(vec![event], &mut round);
            if last {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        while let Ok(event) = self.events.try_recv() {
            summarize(vec![event], &mut round);
        }
        round
    }

    pub fn accepted_serial(&self) -> Option<u64> {
        self.store
            .load_trust()
            .expect("trust")
            .state
            .accepted
            .map(|(serial, _)| serial)
    }

    /// Stop the pull and close the store; returns the directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(handle) = self.handle.take() {
            handle.stopped().await;
        }
        drop(self.store);
        self.dir
    }
}
