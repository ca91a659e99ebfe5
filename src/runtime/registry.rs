//! An OCI distribution client for the container backends that fetch images themselves
//! (containerd 1.6 has no Transfer service): it resolves a reference to the host platform's
//! manifest and fetches its blobs into a [`BlobSink`], resuming a broken download with
//! `Range: bytes=<held>-` instead of starting it again from zero.
//!
//! Owns: reference parsing ([`Reference`]), manifest and index reading with platform choice,
//! the anonymous and basic bearer-token flows, blob redirects, and verification of every
//! manifest and blob against its digest and size. HTTPS uses `crate::tls`'s rustls setup;
//! plain HTTP only for loopback registries and those configured insecure.
//!
//! It never starts, stops or unpacks anything (the backend does, from what the sink holds),
//! never sends a registry's `Authorization` to another host (a redirect to an object store
//! goes without it), never logs a credential or token, and never lets a sink commit a blob
//! whose bytes fail their digest.

pub mod auth;
pub mod manifest;
pub mod reference;
pub mod sink;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

pub use self::auth::{Challenge, Credentials};
pub use self::manifest::{Descriptor, Manifest, Platform};
pub use self::reference::{Digest, Reference};
pub use self::sink::{BlobSink, DirSink, Held, SinkError};
use super::PullProgress;
use crate::provider::http_client::error_chain;

/// The largest manifest or index read.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// How many bytes a fetch gathers before it hands them to the sink (and the most an
/// interrupted fetch can have received but not passed on).
pub const CHUNK_BYTES: usize = 256 * 1024;
/// How many redirects a request follows.
const MAX_REDIRECTS: usize = 5;

/// What a registry call failed on; [`Error::is_transient`] says whether to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The reference, manifest or platform is not usable (bad reference, unknown media type,
    /// no manifest for this platform).
    Invalid,
    /// The registry has no such manifest or blob (404).
    NotFound,
    /// The registry or its token endpoint refused the credentials (401/403 after the flow).
    Denied,
    /// A manifest or blob did not match its digest or size; nothing of it was kept.
    Corrupt,
    /// The blob download was cut (connection lost, stalled); `held` bytes are kept by the
    /// sink and the next fetch resumes from there.
    Interrupted {
        /// Bytes the sink holds.
        held: u64,
    },
    /// The registry could not be reached, timed out, or answered 429/5xx.
    Unavailable,
    /// The sink failed (disk full, content store down).
    Sink,
}

/// A registry call that failed; `what` names the image or blob, `message` why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct Error {
    /// What was asked, e.g. `resolve image 127.0.0.1:5000/app:v1`.
    pub what: String,
    /// Why it failed.
    pub message: String,
    /// What kind of failure.
    pub kind: ErrorKind,
}

impl Error {
    fn new(what: &str, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            what: what.to_string(),
            message: message.into(),
            kind,
        }
    }

    /// Whether trying again later may succeed: a network failure, an interrupted download
    /// (which resumes), a corrupt one (discarded; a refetch may be clean), a failing sink.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::Invalid | ErrorKind::NotFound | ErrorKind::Denied
        )
    }
}

impl From<Error> for super::Error {
    fn from(error: Error) -> super::Error {
        let transient = error.is_transient();
        super::Error::Engine {
            what: error.what,
            message: error.message,
            transient,
        }
    }
}

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct Options {
    /// Registries (as in references, e.g. `registry.lan:5000`) reached over plain HTTP;
    /// loopback registries always are.
    pub insecure: Vec<String>,
    /// Loopback registries (as in references) reached over HTTPS after all: a site-local
    /// registry or mirror with a certificate.
    pub https_loopback: Vec<String>,
    /// Credentials by registry (as in references); anonymous elsewhere.
    pub credentials: BTreeMap<String, Credentials>,
    /// Extra CA certificates (PEM) besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The platform to pick from an index.
    pub platform: Platform,
    /// Connecting (TCP and TLS).
    pub connect_timeout: Duration,
    /// An answer's headers, and a whole manifest or token answer.
    pub answer_timeout: Duration,
    /// A blob download that receives nothing for this long is interrupted (and resumes).
    pub stall_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: Vec::new(),
            https_loopback: Vec::new(),
            credentials: BTreeMap::new(),
            ca_file: None,
            platform: Platform::host(),
            connect_timeout: Duration::from_secs(10),
            answer_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// Verified bytes of a manifest or index, with their descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Media type, digest and size.
    pub descriptor: Descriptor,
    /// The document as the registry sent it (the digest is of these bytes).
    pub bytes: Bytes,
}

/// An image resolved for the host platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// What was resolved.
    pub reference: Reference,
    /// The index (or manifest list) the reference named, if it named one.
    pub index: Option<Content>,
    /// The platform's image manifest.
    pub manifest: Content,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, in order.
    pub layers: Vec<Descriptor>,
}

impl Image {
    /// The descriptor the reference resolved to (the index's, else the manifest's): what an
    /// image record points at.
    pub fn target(&self) -> &Descriptor {
        self.index
            .as_ref()
            .map_or(&self.manifest.descriptor, |index| &index.descriptor)
    }

    /// The config and the layers: the blobs to fetch.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }

    /// The bytes of every blob to fetch (what progress counts to).
    pub fn total_bytes(&self) -> u64 {
        self.blobs().map(|blob| blob.size).sum()
    }
}

/// How one blob fetch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// The sink already had it complete: nothing was requested.
    pub already_complete: bool,
    /// The offset the request asked from (`Range: bytes=<n>-`), 0 for the whole blob.
    pub resumed_from: u64,
    /// Body bytes received from the network in this fetch.
    pub received: u64,
}

/// A registry client; cheap to share (connections are pooled).
pub struct RegistryClient {
    http: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    options: Options,
    /// `Authorization` values by `<api host>/<repository>` (tokens, or basic).
    authorizations: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RegistryClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The answer to a registry request, after auth and redirects.
struct Answer {
    response: http::Response<Incoming>,
    url: String,
}

impl RegistryClient {
    /// A client with `options`; fails only on an unreadable `ca_file`. It connects lazily.
    pub fn new(options: Options) -> Result<RegistryClient, Error> {
        let tls = crate::tls::client_config(crate::tls::Files {
            section: "registry",
            ca_file: options.ca_file.as_deref(),
            client_cert: None,
            client_key: None,
        })
        .map_err(|message| Error::new("set up the registry client", ErrorKind::Invalid, message))?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(options.connect_timeout));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(RegistryClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            options,
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// `http` for loopback (unless listed in `https_loopback`) and insecure registries,
    /// `https` otherwise.
    fn scheme(&self, reference: &Reference) -> &'static str {
        let host = reference.hostname();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback());
        let loopback = loopback && !self.options.https_loopback.contains(&reference.domain);
        if loopback || self.options.insecure.contains(&reference.domain) {
            "http"
        } else {
            "https"
        }
    }

    fn base(&self, reference: &Reference) -> String {
        format!(
            "{}://{}/v2/{}",
            self.scheme(reference),
            reference.api_host(),
            reference.repository
        )
    }

    /// Resolve `reference` to the host platform's manifest, verifying every document read.
    pub async fn resolve(&self, reference: &Reference) -> Result<Image, Error> {
        let what = format!("resolve image {reference}");
        let target = reference.target();
        let top = self.manifest(reference, &target, &what).await?;
        if let Some(pinned) = &reference.digest {
            if top.descriptor.digest != *pinned {
                return Err(Error::new(
                    &what,
                    ErrorKind::Corrupt,
                    format!(
                        "the registry sent a manifest with digest {}, not the pinned {pinned}",
                        top.descriptor.digest
                    ),
                ));
            }
        }
        let (_, parsed) = Manifest::parse(Some(&top.descriptor.media_type), &top.bytes)
            .map_err(|message| Error::new(&what, ErrorKind::Invalid, message))?;
        match parsed {
            Manifest::Image { config, layers } => Ok(Image {
                reference: reference.clone(),
                index: None,
                manifest: top,
                config,
                layers,
            }),
            Manifest::Index(manifests) => {
                let chosen = manifest::select_platform(&manifests, &self.options.platform)
                    .map_err(|message| Error::new(&what, ErrorKind::Invalid, message))?
                    .clone();
                let child = self
                    .manifest(reference, &chosen.digest.to_string(), &what)
                    .await?;
                if child.descriptor.digest != chosen.digest || child.descriptor.size != chosen.size
                {
                    return Err(Error::new(
                        &what,
                        ErrorKind::Corrupt,
                        format!(
                            "the manifest for {} is {} bytes with digest {}, but the index says {} bytes with {}",
                            self.options.platform,
                            child.descriptor.size,
                            child.descriptor.digest,
                            chosen.size,
                            chosen.digest
                        ),
                    ));
                }
                let (media_type, parsed) =
                    Manifest::parse(Some(&child.descriptor.media_type), &child.bytes)
                        .map_err(|message| Error::new(&what, ErrorKind::Invalid, message))?;
                let Manifest::Image { config, layers } = parsed else {
                    return Err(Error::new(
                        &what,
                        ErrorKind::Invalid,
                        format!("the index entry for {} is itself an index ({media_type}), which is not supported", self.options.platform),
                    ));
                };
                let manifest = Content {
                    descriptor: Descriptor {
                        platform: chosen.platform.clone(),
                        ..child.descriptor
                    },
                    bytes: child.bytes,
                };
                Ok(Image {
                    reference: reference.clone(),
                    index: Some(top),
                    manifest,
                    config,
                    layers,
                })
            }
        }
    }

    /// GET one manifest by tag or digest; the descriptor is of the bytes received (checked
    /// against `Docker-Content-Digest` when the registry sends one, and against a digest target).
    async fn manifest(
        &self,
        reference: &Reference,
        target: &str,
        what: &str,
    ) -> Result<Content, Error> {
        let url = format!("{}/manifests/{target}", self.base(reference));
        let answer = self
            .registry_get(reference, &url, Some(manifest::ACCEPT), None, what)
            .await?;
        let status = answer.response.status();
        if status != StatusCode::OK {
            return Err(self
                .status_error(answer, what, &format!("manifest {target}"))
                .await);
        }
        let headers = answer.response.headers().clone();
        let body = read_limited(
            answer.response,
            MAX_MANIFEST_BYTES,
            self.options.answer_timeout,
        )
        .await
        .map_err(|message| {
            Error::new(
                what,
                ErrorKind::Unavailable,
                format!("read manifest {target}: {message}"),
            )
        })?;
        let digest = Digest::of(&body);
        if let Ok(pinned) = Digest::parse(target) {
            if pinned != digest {
                return Err(Error::new(
                    what,
                    ErrorKind::Corrupt,
                    format!("manifest {target} has digest {digest}"),
                ));
            }
        } else if let Some(declared) = headers
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| Digest::parse(value).ok())
        {
            if declared != digest {
                return Err(Error::new(
                    what,
                    ErrorKind::Corrupt,
                    format!(
                        "manifest {target} has digest {digest}, but the registry says {declared}"
                    ),
                ));
            }
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        let (media_type, _) = Manifest::parse(content_type, &body)
            .map_err(|message| Error::new(what, ErrorKind::Invalid, message))?;
        Ok(Content {
            descriptor: Descriptor {
                media_type,
                digest,
                size: body.len() as u64,
                platform: None,
            },
            bytes: body,
        })
    }

    /// Fetch one blob into `sink`, resuming from what it holds. `on_progress` gets the bytes
    /// held after each chunk. A cut connection is [`ErrorKind::Interrupted`] with what is held.
    pub async fn fetch_blob<S: BlobSink>(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        sink: &S,
        mut on_progress: impl FnMut(u64) + Send,
    ) -> Result<Fetched, Error> {
        let what = format!("fetch blob {} of {reference}", blob.digest);
        let sink_error = |error: SinkError| Error::new(&what, ErrorKind::Sink, error.0);
        let mut held = match sink.held(blob).await.map_err(sink_error)? {
            Held::Complete => {
                on_progress(blob.size);
                return Ok(Fetched {
                    already_complete: true,
                    resumed_from: blob.size,
                    received: 0,
                });
            }
            Held::Partial(held) => held,
        };
        if held > blob.size {
            sink.discard(blob).await.map_err(sink_error)?;
            held = 0;
        }
        if held == blob.size && held > 0 {
            // Everything arrived last time, but it was not committed.
            if sink.commit(blob).await.is_ok() {
                on_progress(blob.size);
                return Ok(Fetched {
                    already_complete: false,
                    resumed_from: held,
                    received: 0,
                });
            }
            sink.discard(blob).await.map_err(sink_error)?;
            held = 0;
        }
        let url = format!("{}/blobs/{}", self.base(reference), blob.digest);
        let range = (held > 0).then_some(held);
        let answer = self
            .registry_get(reference, &url, None, range, &what)
            .await?;
        let status = answer.response.status();
        let resumed_from = match status {
            StatusCode::PARTIAL_CONTENT if held > 0 => {
                let start = answer
                    .response
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|value| value.to_str().ok())
                    .and_then(content_range_start);
                if start != Some(held) {
                    sink.discard(blob).await.map_err(sink_error)?;
                    return Err(Error::new(
                        &what,
                        ErrorKind::Interrupted { held: 0 },
                        format!("asked for bytes {held}- but the answer's Content-Range is {start:?}; starting again from 0 next time"),
                    ));
                }
                held
            }
            StatusCode::OK => {
                if held > 0 {
                    // The server ignored the range: it sends the whole blob again.
                    sink.discard(blob).await.map_err(sink_error)?;
                    held = 0;
                }
                0
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                sink.discard(blob).await.map_err(sink_error)?;
                return Err(Error::new(
                    &what,
                    ErrorKind::Interrupted { held: 0 },
                    format!("the registry refused the range bytes={held}- (416); starting again from 0 next time"),
                ));
            }
            _ => {
                return Err(self
                    .status_error(answer, &what, &format!("blob {}", blob.digest))
                    .await)
            }
        };
        on_progress(held);
        // A whole-blob download is verified here as it streams; a resumed one by the sink's
        // commit, the only place that has the earlier attempt's bytes.
        let mut hasher =
            (resumed_from == 0).then(|| ring::digest::Context::new(&ring::digest::SHA256));
        let mut body = answer.response.into_body();
        let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
        let mut received = 0u64;
        let cut = loop {
            let frame = match tokio::time::timeout(self.options.stall_timeout, body.frame()).await {
                Err(_) => {
                    break Some(format!(
                        "nothing received for {:?}",
                        self.options.stall_timeout
                    ))
                }
                Ok(None) => break None,
                Ok(Some(Err(error))) => break Some(error_chain(&error)),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if held + buffer.len() as u64 + data.len() as u64 > blob.size {
                sink.discard(blob).await.map_err(sink_error)?;
                return Err(Error::new(
                    &what,
                    ErrorKind::Corrupt,
                    format!(
                        "the registry sent more than the {} bytes the manifest declares; discarded",
                        blob.size
                    ),
                ));
            }
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&data);
            }
            buffer.extend_from_slice(&data);
            if buffer.len() >= CHUNK_BYTES {
                sink.write(blob, held, &buffer).await.map_err(sink_error)?;
                held += buffer.len() as u64;
                buffer.clear();
                on_progress(held);
            }
        };
        if !buffer.is_empty() {
            sink.write(blob, held, &buffer).await.map_err(sink_error)?;
            held += buffer.len() as u64;
            on_progress(held);
        }
        if let Some(reason) = cut {
            return Err(Error::new(
                &what,
                ErrorKind::Interrupted { held },
                format!("the download broke off at {held} of {} bytes ({reason}); the next attempt resumes there", blob.size),
            ));
        }
        if held < blob.size {
            return Err(Error::new(
                &what,
                ErrorKind::Interrupted { held },
                format!("the registry ended the download at {held} of {} bytes; the next attempt resumes there", blob.size),
            ));
        }
        if let Some(hasher) = hasher {
            let digest = Digest::from_ring(hasher.finish());
            if digest != blob.digest {
                sink.discard(blob).await.map_err(sink_error)?;
                return Err(Error::new(
                    &what,
                    ErrorKind::Corrupt,
                    format!(
                        "the {} bytes received have digest {digest}; discarded",
                        blob.size
                    ),
                ));
            }
        }
        if let Err(error) = sink.commit(blob).await {
            sink.discard(blob).await.map_err(sink_error)?;
            return Err(Error::new(
                &what,
                ErrorKind::Corrupt,
                format!(
                    "the blob failed verification and was discarded: {}",
                    error.0
                ),
            ));
        }
        Ok(Fetched {
            already_complete: false,
            resumed_from,
            received,
        })
    }

    /// Resolve `reference` and fetch everything it needs into `sink`: the index and manifest
    /// (already verified) and every blob, resuming what the sink holds. Progress counts the
    /// config and layer bytes held against their total.
    pub async fn pull<S: BlobSink>(
        &self,
        reference: &Reference,
        sink: &S,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<Image, Error> {
        progress.send_modify(|progress| progress.detail = format!("Resolving {reference}"));
        let image = self.resolve(reference).await?;
        let what = format!("store the manifests of {reference}");
        for content in image.index.iter().chain(std::iter::once(&image.manifest)) {
            store_verified(sink, content)
                .await
                .map_err(|error| Error::new(&what, ErrorKind::Sink, error.0))?;
        }
        let total = image.total_bytes();
        let count = image.layers.len();
        // Count from what the sink already holds, so progress never goes back on a resume.
        let mut counted = Vec::with_capacity(count + 1);
        for blob in image.blobs() {
            counted.push(match sink.held(blob).await {
                Ok(Held::Complete) => blob.size,
                Ok(Held::Partial(held)) => held.min(blob.size),
                Err(_) => 0,
            });
        }
        for (index, blob) in image.blobs().enumerate() {
            let detail = if index == 0 {
                "Downloading the config".to_string()
            } else {
                format!("Downloading layer {index} of {count}")
            };
            let others: u64 = counted.iter().sum::<u64>() - counted[index];
            progress.send_modify(|progress| {
                progress.total_bytes = Some(total);
                progress.done_bytes = others + counted[index];
                progress.detail = detail.clone();
            });
            self.fetch_blob(reference, blob, sink, |held| {
                progress.send_modify(|progress| progress.done_bytes = others + held);
            })
            .await?;
            counted[index] = blob.size;
        }
        progress.send_modify(|progress| {
            progress.total_bytes = Some(total);
            progress.done_bytes = total;
            progress.detail = format!("Fetched {reference} ({count} layers)");
        });
        Ok(image)
    }

    /// GET `url` of `reference`'s registry: with its cached authorization, running the
    /// token flow once on a 401, following redirects (without the authorization off-host).
    async fn registry_get(
        &self,
        reference: &Reference,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
        what: &str,
    ) -> Result<Answer, Error> {
        let key = format!("{}/{}", reference.api_host(), reference.repository);
        let cached = self.cached_authorization(&key);
        let mut authorization = cached.clone();
        for attempt in 0..2 {
            let answer = self
                .get_following(url, accept, range, authorization.as_deref(), what)
                .await?;
            let unauthorized = answer.response.status() == StatusCode::UNAUTHORIZED;
            if !unauthorized || attempt == 1 {
                if authorization != cached && !unauthorized {
                    if let Some(value) = &authorization {
                        self.remember_authorization(&key, value);
                    }
                }
                return Ok(answer);
            }
            let challenge = answer
                .response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .map(Challenge::parse);
            let challenge = match challenge {
                Some(Ok(challenge)) => challenge,
                Some(Err(message)) => return Err(Error::new(what, ErrorKind::Denied, message)),
                None => {
                    return Err(Error::new(
                        what,
                        ErrorKind::Denied,
                        format!("{url} answered 401 without a WWW-Authenticate challenge"),
                    ))
                }
            };
            authorization = Some(self.authorize(reference, &challenge, what).await?);
        }
        Err(Error::new(
            what,
            ErrorKind::Denied,
            format!("{url} kept answering 401"),
        ))
    }

    fn cached_authorization(&self, key: &str) -> Option<String> {
        self.authorizations
            .lock()
            .map(|map| map.get(key).cloned())
            .unwrap_or(None)
    }

    fn remember_authorization(&self, key: &str, value: &str) {
        if let Ok(mut map) = self.authorizations.lock() {
            map.insert(key.to_string(), value.to_string());
        }
    }

    /// The `Authorization` value that answers `challenge`: basic credentials, or a token from
    /// the realm (asked with the credentials when there are some, anonymously otherwise).
    async fn authorize(
        &self,
        reference: &Reference,
        challenge: &Challenge,
        what: &str,
    ) -> Result<String, Error> {
        let credentials = self.options.credentials.get(&reference.domain);
        match challenge {
            Challenge::Basic => credentials.map(Credentials::basic_header).ok_or_else(|| {
                Error::new(
                    what,
                    ErrorKind::Denied,
                    format!(
                        "the registry {} asks for a user name and password, and none is configured",
                        reference.domain
                    ),
                )
            }),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope
                    .clone()
                    .unwrap_or_else(|| format!("repository:{}:pull", reference.repository));
                let mut url = realm.clone();
                url.push(if realm.contains('?') { '&' } else { '?' });
                if let Some(service) = service {
                    url.push_str(&format!("service={}&", auth::query_escape(service)));
                }
                url.push_str(&format!("scope={}", auth::query_escape(&scope)));
                let basic = credentials.map(Credentials::basic_header);
                let response = self.send(&url, None, None, basic.as_deref(), what).await?;
                let status = response.status();
                let body = read_limited(response, 64 * 1024, self.options.answer_timeout)
                    .await
                    .map_err(|message| {
                        Error::new(
                            what,
                            ErrorKind::Unavailable,
                            format!("read the token from {realm}: {message}"),
                        )
                    })?;
                if status != StatusCode::OK {
                    let kind = status_kind(status);
                    let kind = if kind == ErrorKind::NotFound {
                        ErrorKind::Denied
                    } else {
                        kind
                    };
                    return Err(Error::new(
                        what,
                        kind,
                        format!("the token endpoint {realm} answered {status} for scope {scope}"),
                    ));
                }
                let token = auth::token_from_answer(&body).map_err(|message| {
                    Error::new(what, ErrorKind::Denied, format!("{realm}: {message}"))
                })?;
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// GET following redirects; `authorization` goes only to the origin of `url`.
    async fn get_following(
        &self,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
        authorization: Option<&str>,
        what: &str,
    ) -> Result<Answer, Error> {
        let origin = origin_of(url);
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let same_origin = origin.is_some() && origin_of(&current) == origin;
            let response = self
                .send(
                    &current,
                    accept,
                    range,
                    authorization.filter(|_| same_origin),
                    what,
                )
                .await?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(Answer {
                    response,
                    url: current,
                });
            }
            let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|value| value.to_str().ok())
            else {
                return Err(Error::new(
                    what,
                    ErrorKind::Unavailable,
                    format!(
                        "{current} answered {} without a Location",
                        response.status()
                    ),
                ));
            };
            current = resolve_location(&current, location).ok_or_else(|| {
                Error::new(
                    what,
                    ErrorKind::Unavailable,
                    format!("{current} redirected to {location:?}, which is not a URL"),
                )
            })?;
        }
        Err(Error::new(
            what,
            ErrorKind::Unavailable,
            format!("{url}: more than {MAX_REDIRECTS} redirects"),
        ))
    }

    /// One GET; the answer's headers within the answer timeout.
    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
        authorization: Option<&str>,
        what: &str,
    ) -> Result<http::Response<Incoming>, Error> {
        let mut request = Request::get(url).header(
            header::USER_AGENT,
            concat!("edgeroll/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(offset) = range {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request.body(Empty::new()).map_err(|error| {
            Error::new(
                what,
                ErrorKind::Invalid,
                format!("cannot build a request to {url}: {error}"),
            )
        })?;
        match tokio::time::timeout(self.options.answer_timeout, self.http.request(request)).await {
            Err(_) => Err(Error::new(
                what,
                ErrorKind::Unavailable,
                format!(
                    "{url} did not answer within {:?}",
                    self.options.answer_timeout
                ),
            )),
            Ok(Err(error)) => Err(Error::new(
                what,
                ErrorKind::Unavailable,
                format!("cannot reach {url}: {}", error_chain(&error)),
            )),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// The error for an unexpected status, with the registry's own error code when it gave one.
    async fn status_error(&self, answer: Answer, what: &str, subject: &str) -> Error {
        let status = answer.response.status();
        let url = answer.url;
        let body = read_limited(answer.response, 16 * 1024, self.options.answer_timeout)
            .await
            .unwrap_or_default();
        let detail = registry_error_text(&body);
        let kind = status_kind(status);
        let message = match kind {
            ErrorKind::NotFound => {
                format!("the registry has no {subject} ({status} from {url}{detail})")
            }
            _ => format!("{url} answered {status}{detail}"),
        };
        Error::new(what, kind, message)
    }
}

/// Store a verified manifest or index in the sink (unless it has it).
async fn store_verified<S: BlobSink>(sink: &S, content: &Content) -> Result<(), SinkError> {
    let descriptor = &content.descriptor;
    match sink.held(descriptor).await? {
        Held::Complete => return Ok(()),
        Held::Partial(0) => {}
        Held::Partial(_) => sink.discard(descriptor).await?,
    }
    sink.write(descriptor, 0, &content.bytes).await?;
    sink.commit(descriptor).await
}

fn status_kind(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Denied,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => ErrorKind::Unavailable,
        status if status.is_server_error() => ErrorKind::Unavailable,
        _ => ErrorKind::Invalid,
    }
}

/// `: CODE message` from a distribution error body (`{"errors":[{"code":…,"message":…}]}`).
fn registry_error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return String::new();
    };
    let texts: Vec<String> = parsed
        .errors
        .into_iter()
        .map(|entry| {
            [entry.code, entry.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|text| !text.is_empty())
        .collect();
    if texts.is_empty() {
        String::new()
    } else {
        format!(": {}", texts.join("; "))
    }
}

/// The start of `bytes <start>-<end>/<total>`.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// `scheme://authority` of a URL, lower-cased, for the same-origin test of redirects.
fn origin_of(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?.as_str().to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        _ => ":80",
    };
    let authority = authority
        .strip_suffix(default_port)
        .map(str::to_string)
        .unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// A `Location` against the URL that sent it (absolute, or an absolute path).
fn resolve_location(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse::<Uri>().ok().map(|_| location.to_string());
    }
    let origin = origin_of(base)?;
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    // A relative path: against the base's directory.
    let uri: Uri = base.parse().ok()?;
    let path = uri.path();
    let directory = &path[..path.rfind('/').map_or(0, |at| at + 1)];
    Some(format!("{origin}{directory}{location}"))
}

/// The whole body, at most `limit` bytes, within `timeout`.
async fn read_limited(
    response: http::Response<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, String> {
    let collect = Limited::new(response.into_body(), limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(format!("the body did not arrive within {timeout:?}")),
        Ok(Err(error)) => Err(if error.is::<http_body_util::LengthLimitError>() {
            format!("the body is larger than {limit} bytes")
        } else {
            error_chain(error.as_ref())
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_the_authorization_only_on_the_same_origin() {
        let origin = origin_of("https://registry.example:443/v2/app/blobs/x");
        assert_eq!(origin.as_deref(), Some("https://registry.example"));
        assert_eq!(
            origin_of("HTTP://Host:80/x").as_deref(),
            Some("http://host")
        );
        assert_eq!(
            origin_of("http://host:5000/x").as_deref(),
            Some("http://host:5000")
        );
        assert_ne!(origin_of("https://host/x"), origin_of("http://host/x"));
        assert_eq!(
            resolve_location("http://h:5000/v2/a/blobs/d", "/store/d?sig=1").as_deref(),
            Some("http://h:5000/store/d?sig=1")
        );
        assert_eq!(
            resolve_location("http://h:5000/v2/a/blobs/d", "https://s3.example/b/d").as_deref(),
            Some("https://s3.example/b/d")
        );
        assert_eq!(
            resolve_location("http://h/v2/a/blobs/d", "other").as_deref(),
            Some("http://h/v2/a/blobs/other")
        );
    }

    #[test]
    fn content_ranges_and_registry_errors_are_read() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
        assert_eq!(
            registry_error_text(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            ": MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(registry_error_text(b"<html>"), "");
        assert_eq!(status_kind(StatusCode::NOT_FOUND), ErrorKind::NotFound);
        assert_eq!(status_kind(StatusCode::BAD_GATEWAY), ErrorKind::Unavailable);
        assert_eq!(
            status_kind(StatusCode::TOO_MANY_REQUESTS),
            ErrorKind::Unavailable
        );
        assert_eq!(status_kind(StatusCode::FORBIDDEN), ErrorKind::Denied);
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let credentials = Credentials {
            username: "u".to_string(),
            password: "hunter2".to_string(),
        };
        let mut options = Options::default();
        options
            .credentials
            .insert("r.example".to_string(), credentials);
        assert!(!format!("{options:?}").contains("hunter2"));
    }
}
