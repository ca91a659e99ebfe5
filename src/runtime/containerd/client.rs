//! The gRPC connection to containerd: a lazy channel over its unix socket, and requests that
//! carry our namespace (and, while content or snapshots are in flight, our lease).
//!
//! It owns how every call reaches the engine and how a failed call becomes an [`Error`]; it never
//! decides what to call. It never uses another namespace than the configured one.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};

use super::super::Error;

/// The metadata key that names the namespace of every call.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The metadata key that puts what a call creates under a lease.
const LEASE_HEADER: &str = "containerd-lease";
/// Unary calls that take longer than this count as a transient failure.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A lazily connected client of one containerd, in one namespace.
#[derive(Debug)]
pub(super) struct Client {
    socket: PathBuf,
    namespace: String,
    channel: OnceLock<Channel>,
}

impl Client {
    /// A client of the containerd at `socket`; nothing is connected until the first call.
    pub(super) fn new(socket: PathBuf, namespace: String) -> Self {
        Client {
            socket,
            namespace,
            channel: OnceLock::new(),
        }
    }

    /// The namespace every call is made in.
    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The channel (created on first use, inside the tokio runtime; it reconnects by itself).
    pub(super) fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| {
                let socket = self.socket.clone();
                // The URI is never used: every connection goes to the unix socket.
                Endpoint::from_static("http://containerd.invalid")
                    .connect_timeout(Duration::from_secs(5))
                    .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(socket).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
            })
            .clone()
    }

    /// A request in our namespace, with the unary timeout.
    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.streaming(message, None);
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// A request in our namespace under `lease`, with the unary timeout.
    pub(super) fn leased<T>(&self, message: T, lease: &str) -> tonic::Request<T> {
        let mut request = self.streaming(message, Some(lease));
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// A request in our namespace without a timeout (streams, `Wait`), optionally under `lease`.
    pub(super) fn streaming<T>(&self, message: T, lease: Option<&str>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = MetadataValue::try_from(self.namespace.as_str()) {
            request.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        if let Some(Ok(value)) = lease.map(MetadataValue::try_from) {
            request.metadata_mut().insert(LEASE_HEADER, value);
        }
        request
    }
}

/// Whether the engine answered "not found".
pub(super) fn is_not_found(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound
}

/// Whether the engine answered "already exists".
pub(super) fn is_already_exists(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::AlreadyExists
}

/// A failed call as an [`Error::Engine`]: transient when the engine was unreachable, overloaded,
/// timed out or failed inside; not transient when it refused what was asked.
pub(super) fn engine_error(what: impl Into<String>, status: &tonic::Status) -> Error {
    use tonic::Code;
    let transient = matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    );
    let message = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_string()
    };
    Error::Engine {
        what: what.into(),
        message,
        transient,
    }
}

/// A failure on our side of a call (bad image data, I/O on a tarball): never transient.
pub(super) fn local_error(what: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Engine {
        what: what.into(),
        message: message.into(),
        transient: false,
    }
}

impl Client {
    /// Create lease `id` (or take the one an earlier attempt made) that containerd collects by
    /// itself at `expires` (RFC 3339) if it is never dropped.
    pub(super) async fn create_lease(&self, id: &str, expires: &str) -> Result<(), Error> {
        use super::api::services::leases::v1 as leases;
        let request = leases::CreateRequest {
            id: id.to_string(),
            labels: std::collections::HashMap::from([(
                "containerd.io/gc.expire".to_string(),
                expires.to_string(),
            )]),
        };
        match leases::leases_client::LeasesClient::new(self.channel())
            .create(self.request(request))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if is_already_exists(&status) => Ok(()),
            Err(status) => Err(engine_error(format!("create lease {id}"), &status)),
        }
    }

    /// Drop lease `id`; one that cannot be dropped expires by itself.
    pub(super) async fn drop_lease(&self, id: &str) {
        use super::api::services::leases::v1 as leases;
        let request = leases::DeleteRequest {
            id: id.to_string(),
            sync: false,
        };
        if let Err(status) = leases::leases_client::LeasesClient::new(self.channel())
            .delete(self.request(request))
            .await
        {
            if !is_not_found(&status) {
                tracing::warn!(lease = id, error = %status.message(), "could not delete a lease (it expires by itself)");
            }
        }
    }
}
