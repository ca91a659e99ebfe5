//! The local API: HTTP/1.1 + JSON on a unix socket, with peer-credential authorization.
//!
//! Owns the socket file (`bind` creates it with mode 0660 and group `edgeroll`, `serve` removes it
//! on shutdown), the routes (`routes`) and who may do what (`auth`). It turns requests into
//! [`ApiCommand`]s for the shell and reads the status the shell publishes on a `watch`.
//! It must never decide anything about a rollout: every action goes to the shell, which applies or
//! refuses it, and the status served is exactly what the shell published.

pub mod auth;
mod routes;
pub mod types;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::rollout::OperatorAction;

/// The group whose members may act (POST) through the API, besides root and the agent's user.
pub const OPERATOR_GROUP: &str = "edgeroll";
/// Mode of the socket file: owner and group may connect, nobody else.
pub const SOCKET_MODE: u32 = 0o660;
/// Largest request body accepted; larger bodies are answered with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send the request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How many connections are served at once; further clients wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long an action waits for the shell's answer (queueing included).
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(10);
/// How long open connections get to finish their request when the API shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An operator action for the shell, with the channel for its answer.
#[derive(Debug)]
pub struct ApiCommand {
    /// The service acted on.
    pub service: String,
    /// The action.
    pub action: OperatorAction,
    /// `Ok(message)` when applied, `Err(reason)` when refused.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Bind the socket (removing a stale one) with mode 0660 and, when it exists, group `edgeroll`.
///
/// Creates the parent directory if it is missing. If a socket file already exists and something
/// answers on it, this fails with `AddrInUse` ("another agent is listening on PATH") rather than
/// stealing the socket from a running agent; a socket nobody answers on is removed. A path that
/// exists but is not a socket is never removed. Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    bind_with_mode(path, SOCKET_MODE)
}

/// [`bind`] with other permission bits (`agent.socket_mode`).
pub fn bind_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|error| {
            annotate(
                error,
                format!("create socket directory {}", parent.display()),
            )
        })?;
    }
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path)
        .map_err(|error| annotate(error, format!("bind socket {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|error| annotate(error, format!("set mode of socket {}", path.display())))?;
    set_operator_group(path)?;
    Ok(listener)
}

/// Remove `path` if it is a socket nobody answers on; fail if an agent answers on it.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(annotate(
                error,
                format!("inspect socket path {}", path.display()),
            ))
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "bind socket {}: the path exists and is not a socket",
                path.display()
            ),
        ));
    }
    if someone_listens(path) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another agent is listening on {}", path.display()),
        ));
    }
    tracing::info!(socket = %path.display(), "removing stale socket file");
    std::fs::remove_file(path)
        .map_err(|error| annotate(error, format!("remove stale socket {}", path.display())))
}

/// Whether a process listens on the socket file `path`.
///
/// The probe connects without blocking: a listener whose backlog is full answers `EAGAIN`
/// instead of making the agent's start hang, and it still counts as listening. Only a refused
/// connection (or a vanished file) makes the socket stale.
fn someone_listens(path: &Path) -> bool {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;

    let Ok(address) = UnixAddr::new(path) else {
        return false;
    };
    let probe = match socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(probe) => probe,
        Err(error) => {
            tracing::warn!(%error, "cannot create a probe socket; assuming nobody listens");
            return false;
        }
    };
    match connect(probe.as_raw_fd(), &address) {
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS) => true,
        Err(_refused_or_gone) => false,
    }
}

/// Give the socket to group `edgeroll` when that group exists.
///
/// Without root this usually fails (the agent's user is rarely in that group); the socket then
/// keeps the agent's group, which is logged, not fatal. As root, a failure is an error.
fn set_operator_group(path: &Path) -> io::Result<()> {
    let group = match nix::unistd::Group::from_name(OPERATOR_GROUP) {
        Ok(Some(group)) => group,
        Ok(None) => {
            tracing::debug!(
                group = OPERATOR_GROUP,
                "no such group; socket keeps the agent's group"
            );
            return Ok(());
        }
        Err(error) => {
            tracing::warn!(group = OPERATOR_GROUP, %error, "cannot look up group; socket keeps the agent's group");
            return Ok(());
        }
    };
    match nix::unistd::chown(path, None, Some(group.gid)) {
        Ok(()) => Ok(()),
        Err(error) if !nix::unistd::geteuid().is_root() => {
            tracing::warn!(
                socket = %path.display(),
                group = OPERATOR_GROUP,
                %error,
                "cannot give the socket to the operator group (not root); only the agent's user and group can connect"
            );
            Ok(())
        }
        Err(error) => Err(annotate(
            io::Error::from(error),
            format!("give socket {} to group {OPERATOR_GROUP}", path.display()),
        )),
    }
}

/// Wrap `error` in a message naming the action, keeping its kind.
fn annotate(error: io::Error, action: String) -> io::Error {
    io::Error::new(error.kind(), format!("{action}: {error}"))
}

/// Serve the API on `listener` until `shutdown`, then remove the socket file.
///
/// Each connection is served with HTTP/1.1 and carries its peer's credentials, which decide
/// whether it may act (see [`auth::authorize`]). At most [`MAX_CONNECTIONS`] are served at once.
/// On shutdown the listener stops accepting, open connections get [`SHUTDOWN_GRACE`] to finish
/// their current request, and actions arriving meanwhile are answered with 503.
pub async fn serve(
    listener: UnixListener,
    status: watch::Receiver<Arc<types::Status>>,
    commands: mpsc::Sender<ApiCommand>,
    shutdown: CancellationToken,
) {
    let socket_path: Option<PathBuf> = listener
        .local_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(Path::to_path_buf));
    let context = Arc::new(routes::Context {
        status,
        commands,
        shutdown: shutdown.clone(),
        agent_uid: nix::unistd::geteuid().as_raw(),
    });
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // One request per connection: the CLI needs no more, and an idle keep-alive connection
    // would hold one of the few connection permits.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false);

    loop {
        let Some((stream, permit)) =
            crate::listen::next_connection(&permits, &shutdown, "the API", || async {
                listener.accept().await.map(|(stream, _address)| stream)
            })
            .await
        else {
            break;
        };
        let peer = match stream.peer_cred() {
            Ok(credentials) => auth::Peer::new(credentials.uid(), credentials.gid()),
            Err(error) => {
                tracing::warn!(%error, "cannot read the credentials of an API client; closing");
                continue;
            }
        };
        let peer = Arc::new(peer);
        let context = Arc::clone(&context);
        let service = service_fn(move |request| {
            let context = Arc::clone(&context);
            let peer = Arc::clone(&peer);
            async move {
                Ok::<_, std::convert::Infallible>(routes::handle(request, &context, &peer).await)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "API connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if let Some(path) = &socket_path {
        if let Err(error) = std::fs::remove_file(path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(socket = %path.display(), %error, "cannot remove the socket file");
            }
        }
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API connections still open after the shutdown grace period");
    }
}
