//! `edgeroll get [SERVICE] [--watch] [-o text|json]`.
//!
//! Fetches the status from the agent and prints it; with `--watch`, again every second until
//! Ctrl-C. It must never print anything the agent did not send.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use super::client::{Client, ClientError};
use super::render::{render_service_text, render_text};
use super::{Output, EXIT_FAILED, EXIT_OK};

/// How often `--watch` fetches the status.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Clear the screen and move the cursor home (ANSI), to redraw in place on a terminal.
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// Print the status once, or keep printing it with `watch`; returns the exit code.
pub(crate) async fn get(socket: &Path, service: Option<&str>, watch: bool, output: Output) -> u8 {
    let client = Client::new(socket);
    if !watch {
        return match fetch(&client, service, output).await {
            Ok(block) => {
                print!("{block}");
                EXIT_OK
            }
            Err(error) => {
                eprintln!("{error}");
                EXIT_FAILED
            }
        };
    }
    // Ctrl-C ends the watch at any point, also while a fetch is in flight.
    tokio::select! {
        code = watch_status(&client, service, output) => code,
        _ = tokio::signal::ctrl_c() => EXIT_OK,
    }
}

/// Fetch every [`WATCH_INTERVAL`] and print each change; returns when the agent goes away.
async fn watch_status(client: &Client, service: Option<&str>, output: Output) -> u8 {
    let redraw = std::io::stdout().is_terminal();
    let mut shown: Option<String> = None;
    let mut ticker = tokio::time::interval(WATCH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let block = match fetch(client, service, output).await {
            Ok(block) => block,
            Err(error) => {
                eprintln!("{error}");
                return EXIT_FAILED;
            }
        };
        if shown.as_deref() == Some(block.as_str()) {
            continue;
        }
        let mut stdout = std::io::stdout().lock();
        let written = if redraw {
            write!(stdout, "{CLEAR_SCREEN}{block}")
        } else {
            // Without a terminal, every change is a new block, separated for readers and tools.
            if shown.is_some() {
                let _ = writeln!(stdout);
            }
            write!(stdout, "{block}")
        };
        // A closed stdout (e.g. `| head`) ends the watch quietly.
        if written.and_then(|()| stdout.flush()).is_err() {
            return EXIT_OK;
        }
        shown = Some(block);
    }
}

/// Fetch and format the status (or one service's).
async fn fetch(
    client: &Client,
    service: Option<&str>,
    output: Output,
) -> Result<String, ClientError> {
    let text = match (service, output) {
        (Some(name), Output::Json) => to_json(&client.service(name).await?),
        (Some(name), Output::Text) => render_service_text(&client.service(name).await?),
        (None, Output::Json) => to_json(&client.status().await?),
        (None, Output::Text) => render_text(&client.status().await?),
    };
    Ok(text)
}

/// Pretty JSON with a final newline.
fn to_json(value: &impl serde::Serialize) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(text) => text + "\n",
        // The wire types always serialise; this only keeps the CLI from panicking if that changes.
        Err(error) => format!("{{\"error\": \"cannot encode the status: {error}\"}}\n"),
    }
}
