//! `promote`, `abort`, `retry`, `undo`, `pause`, `resume`: one POST each to the agent.
//!
//! Prints the agent's message; it must never decide whether an action is allowed, the agent does.

use std::path::Path;

use http::StatusCode;

use super::client::{Client, ClientError};
use super::{EXIT_FAILED, EXIT_OK};
use crate::api::types::ActionRequest;
use crate::rollout::OperatorAction;

/// The URL segment and body of an operator action.
fn request(verb: OperatorAction) -> (&'static str, ActionRequest) {
    let mut request = ActionRequest::default();
    let name = match verb {
        OperatorAction::Promote { full } => {
            request.full = full;
            "promote"
        }
        OperatorAction::Abort => "abort",
        OperatorAction::Retry => "retry",
        OperatorAction::Undo { to_revision } => {
            request.to_revision = to_revision;
            "undo"
        }
        OperatorAction::Pause => "pause",
        OperatorAction::Resume => "resume",
    };
    (name, request)
}

/// Send `verb` for `service` to the agent at `socket`; returns the exit code.
pub(crate) async fn act(socket: &Path, service: &str, verb: OperatorAction) -> u8 {
    let (name, request) = request(verb);
    match Client::new(socket).act(service, name, &request).await {
        Ok(message) => {
            println!("{message}");
            EXIT_OK
        }
        Err(ClientError::Refused {
            status: StatusCode::CONFLICT,
            message,
        }) => {
            eprintln!("{name} {service} refused: {message}");
            EXIT_FAILED
        }
        Err(error) => {
            eprintln!("{error}");
            EXIT_FAILED
        }
    }
}
