//! `promote`, `abort`, `retry`, `undo`, `pause`, `resume`: one POST each to the agent.
//!
//! Prints the agent's message; it must never decide whether an action is allowed, the agent does.

use std::path::Path;

use http::StatusCode;

use super::client::{Client, ClientError};
use super::{EXIT_FAILED, EXIT_OK};
use crate::api::types::ActionRequest;

/// An operator verb with its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// `promote [--full]`
    Promote {
        /// `--full`
        full: bool,
    },
    /// `abort`
    Abort,
    /// `retry`
    Retry,
    /// `undo [--to-revision N]`
    Undo {
        /// `--to-revision`
        to_revision: Option<u64>,
    },
    /// `pause`
    Pause,
    /// `resume`
    Resume,
}

impl Verb {
    /// The URL segment and body of this verb.
    fn request(self) -> (&'static str, ActionRequest) {
        let mut request = ActionRequest::default();
        let name = match self {
            Verb::Promote { full } => {
                request.full = full;
                "promote"
            }
            Verb::Abort => "abort",
            Verb::Retry => "retry",
            Verb::Undo { to_revision } => {
                request.to_revision = to_revision;
                "undo"
            }
            Verb::Pause => "pause",
            Verb::Resume => "resume",
        };
        (name, request)
    }
}

/// Send `verb` for `service` to the agent at `socket`; returns the exit code.
pub(crate) async fn act(socket: &Path, service: &str, verb: Verb) -> u8 {
    let (name, request) = verb.request();
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
