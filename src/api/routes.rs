//! The routes of the local API: `GET /v1/status`, `GET /v1/services/{name}` and
//! `POST /v1/services/{name}/{action}`.
//!
//! Owns the mapping from requests to answers and the only serialisation of the API types on the
//! server side. It must never change rollout state itself: actions are sent to the shell as
//! [`ApiCommand`]s and the shell's answer is passed back unchanged.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::auth::{Decision, Peer};
use super::types::{ActionRequest, ActionResponse, Status};
use super::{ApiCommand, COMMAND_DEADLINE, MAX_BODY_BYTES};
use crate::rollout::OperatorAction;

/// What every route needs from the agent.
#[derive(Debug)]
pub(crate) struct Context {
    /// The status the shell publishes.
    pub(crate) status: watch::Receiver<Arc<Status>>,
    /// Actions for the shell (bounded; a full channel makes the action wait, within its deadline).
    pub(crate) commands: mpsc::Sender<ApiCommand>,
    /// Cancelled when the agent shuts down; actions are then answered with 503.
    pub(crate) shutdown: CancellationToken,
    /// The uid the agent runs as; that user may always act.
    pub(crate) agent_uid: u32,
}

/// The operator actions, as they appear in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionKind {
    /// `promote`
    Promote,
    /// `abort`
    Abort,
    /// `retry`
    Retry,
    /// `undo`
    Undo,
    /// `pause`
    Pause,
    /// `resume`
    Resume,
}

impl ActionKind {
    /// The action named `segment` in a URL.
    fn from_segment(segment: &str) -> Option<Self> {
        Some(match segment {
            "promote" => ActionKind::Promote,
            "abort" => ActionKind::Abort,
            "retry" => ActionKind::Retry,
            "undo" => ActionKind::Undo,
            "pause" => ActionKind::Pause,
            "resume" => ActionKind::Resume,
            _ => return None,
        })
    }

    /// The operator action, with the options of `request` that apply to it.
    fn with(self, request: &ActionRequest) -> OperatorAction {
        match self {
            ActionKind::Promote => OperatorAction::Promote { full: request.full },
            ActionKind::Abort => OperatorAction::Abort,
            ActionKind::Retry => OperatorAction::Retry,
            ActionKind::Undo => OperatorAction::Undo {
                to_revision: request.to_revision,
            },
            ActionKind::Pause => OperatorAction::Pause,
            ActionKind::Resume => OperatorAction::Resume,
        }
    }
}

/// A matched route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /v1/status`
    Status,
    /// `GET /v1/services/{name}`
    Service(String),
    /// `POST /v1/services/{name}/{action}`
    Action(String, ActionKind),
}

/// Why no route matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoute {
    /// No such path.
    NotFound,
    /// The path exists with another method, given for the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// Match `method` and `path` to a route.
pub(crate) fn route(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let segments: Vec<&str> = path.split('/').collect();
    let (route, allowed) = match segments.as_slice() {
        ["", "v1", "status"] => (Route::Status, Method::GET),
        ["", "v1", "services", name] if !name.is_empty() => {
            (Route::Service((*name).to_owned()), Method::GET)
        }
        ["", "v1", "services", name, action] if !name.is_empty() => {
            match ActionKind::from_segment(action) {
                Some(kind) => (Route::Action((*name).to_owned(), kind), Method::POST),
                None => return Err(NoRoute::NotFound),
            }
        }
        _ => return Err(NoRoute::NotFound),
    };
    if *method == allowed {
        Ok(route)
    } else if allowed == Method::GET {
        Err(NoRoute::MethodNotAllowed("GET"))
    } else {
        Err(NoRoute::MethodNotAllowed("POST"))
    }
}

/// Answer one request from `peer`.
pub(crate) async fn handle(
    request: Request<Incoming>,
    context: &Context,
    peer: &Peer,
) -> Response<Full<Bytes>> {
    match route(request.method(), request.uri().path()) {
        Ok(Route::Status) => {
            let status = Arc::clone(&context.status.borrow());
            json(StatusCode::OK, status.as_ref())
        }
        Ok(Route::Service(name)) => {
            let status = Arc::clone(&context.status.borrow());
            match status.services.iter().find(|service| service.name == name) {
                Some(service) => json(StatusCode::OK, service),
                None => refusal(StatusCode::NOT_FOUND, format!("service {name} not found")),
            }
        }
        Ok(Route::Action(name, kind)) => act(request, context, peer, name, kind).await,
        Err(NoRoute::NotFound) => refusal(
            StatusCode::NOT_FOUND,
            format!("no such API route: {}", request.uri().path()),
        ),
        Err(NoRoute::MethodNotAllowed(allow)) => {
            let mut response = refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {} not allowed on {}; use {allow}",
                    request.method(),
                    request.uri().path()
                ),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            response
        }
    }
}

/// Authorize, read the body, hand the action to the shell and pass its answer back.
async fn act(
    request: Request<Incoming>,
    context: &Context,
    peer: &Peer,
    name: String,
    kind: ActionKind,
) -> Response<Full<Bytes>> {
    // Authorize before reading the body, so strangers cannot make the agent read anything.
    if let Decision::Denied(message) = peer.decision(context.agent_uid).await {
        tracing::info!(uid = peer.uid, service = %name, action = ?kind, "API action refused: permission denied");
        return refusal(StatusCode::FORBIDDEN, message.clone());
    }
    let action_request = match read_action_request(request).await {
        Ok(action_request) => action_request,
        Err(response) => return response,
    };
    let action = kind.with(&action_request);
    if !context
        .status
        .borrow()
        .services
        .iter()
        .any(|service| service.name == name)
    {
        return refusal(StatusCode::NOT_FOUND, format!("service {name} not found"));
    }
    if context.shutdown.is_cancelled() {
        return shutting_down();
    }
    tracing::info!(uid = peer.uid, service = %name, ?action, "operator action received");
    let (reply, answer) = oneshot::channel();
    let command = ApiCommand {
        service: name,
        action,
        reply,
    };
    let exchange = async {
        context.commands.send(command).await.ok()?;
        answer.await.ok()
    };
    match tokio::time::timeout(COMMAND_DEADLINE, exchange).await {
        Ok(Some(Ok(message))) => json(StatusCode::OK, &ActionResponse { ok: true, message }),
        Ok(Some(Err(reason))) => refusal(StatusCode::CONFLICT, reason),
        Ok(None) => shutting_down(),
        Err(_elapsed) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the agent did not answer within {}",
                humantime::format_duration(COMMAND_DEADLINE)
            ),
        ),
    }
}

/// Read the optional JSON body of an action, or the response refusing it.
async fn read_action_request(
    request: Request<Incoming>,
) -> Result<ActionRequest, Response<Full<Bytes>>> {
    let too_large = || {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(error) => {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {error}"),
            ))
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionRequest::default());
    }
    serde_json::from_slice(&body).map_err(|error| {
        refusal(
            StatusCode::BAD_REQUEST,
            format!("invalid action request body: {error}"),
        )
    })
}

/// 503: the agent is stopping and takes no more actions.
fn shutting_down() -> Response<Full<Bytes>> {
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent is shutting down".to_owned(),
    )
}

/// An error answer: `{"ok": false, "message": …}`.
fn refusal(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json(status, &ActionResponse { ok: false, message })
}

/// A JSON answer.
fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(error) => {
            tracing::error!(%error, "cannot serialise an API answer");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"ok":false,"message":"internal error"}"#.to_vec(),
            )
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_method_and_path() {
        assert_eq!(route(&Method::GET, "/v1/status"), Ok(Route::Status));
        assert_eq!(
            route(&Method::GET, "/v1/services/web"),
            Ok(Route::Service("web".to_owned()))
        );
        assert_eq!(
            route(&Method::POST, "/v1/services/web/undo"),
            Ok(Route::Action("web".to_owned(), ActionKind::Undo))
        );
        assert_eq!(
            route(&Method::POST, "/v1/status"),
            Err(NoRoute::MethodNotAllowed("GET"))
        );
        assert_eq!(
            route(&Method::GET, "/v1/services/web/promote"),
            Err(NoRoute::MethodNotAllowed("POST"))
        );
        assert_eq!(
            route(&Method::POST, "/v1/services/web/explode"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(route(&Method::GET, "/v1/services/"), Err(NoRoute::NotFound));
        assert_eq!(route(&Method::GET, "/v2/status"), Err(NoRoute::NotFound));
    }

    #[test]
    fn action_options_apply_only_where_they_mean_something() {
        let request = ActionRequest {
            full: true,
            to_revision: Some(3),
        };
        assert_eq!(
            ActionKind::Promote.with(&request),
            OperatorAction::Promote { full: true }
        );
        assert_eq!(
            ActionKind::Undo.with(&request),
            OperatorAction::Undo {
                to_revision: Some(3)
            }
        );
        assert_eq!(ActionKind::Abort.with(&request), OperatorAction::Abort);
    }
}
