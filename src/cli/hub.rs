//! `edgeroll hub`: run the reference center in this process, and the operator verbs on its
//! fleet plans (`hub get|promote|abort|pause|resume`), which talk to the hub's socket.
//!
//! Owns reading `hub.toml` for the verbs, the hub's runtime, the text of `hub get` and the exit
//! codes. It must never contain hub logic: it calls `hub::start`, and the plan verbs only send
//! what the user asked for and print the answer.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::client::{Client, ClientError};
use super::{Output, EXIT_FAILED, EXIT_INVALID_CONFIG, EXIT_OK};
use crate::hub::config::DEFAULT_HUB_CONFIG_PATH;
use crate::hub::plan::view::PlanView;
use crate::hub::HubError;

/// Worker threads of the hub's runtime.
const HUB_WORKER_THREADS: usize = 2;

/// `edgeroll hub [run]`: load `config` (default [`DEFAULT_HUB_CONFIG_PATH`]) and serve until
/// SIGTERM or SIGINT.
pub(crate) fn run(config: Option<&Path>) -> u8 {
    let path = config.map_or_else(|| PathBuf::from(DEFAULT_HUB_CONFIG_PATH), Path::to_path_buf);
    let config = match crate::hub::config::load(&path) {
        Ok(config) => config,
        Err(diagnostics) => {
            for line in super::validate::diagnostic_lines(&path, &diagnostics) {
                eprintln!("{line}");
            }
            return EXIT_INVALID_CONFIG;
        }
    };
    super::run::init_logging("info");
    let runtime = match super::run::daemon_runtime(HUB_WORKER_THREADS, "edgeroll-hub") {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(error) = super::run::cancel_on_signals(shutdown.clone()) {
            eprintln!("cannot install the signal handlers: {error}");
            return EXIT_FAILED;
        }
        match crate::hub::start(config, shutdown).await {
            Ok(hub) => {
                hub.wait().await;
                EXIT_OK
            }
            Err(HubError::Invalid(problems)) => {
                for problem in problems {
                    eprintln!("{problem}");
                }
                EXIT_INVALID_CONFIG
            }
            Err(error) => {
                eprintln!("edgeroll hub: {error}");
                EXIT_FAILED
            }
        }
    })
}

/// The hub's operator socket: `--socket`, else `socket` of the hub's config (readable and
/// valid), else the default state directory's.
pub(crate) fn socket_path(explicit: Option<PathBuf>, config: Option<&Path>) -> PathBuf {
    if let Some(socket) = explicit {
        return socket;
    }
    let path = config.map_or_else(|| PathBuf::from(DEFAULT_HUB_CONFIG_PATH), Path::to_path_buf);
    match crate::hub::config::load(&path) {
        Ok(config) => config.socket,
        Err(_) => Path::new(crate::hub::config::DEFAULT_HUB_STATE_DIR)
            .join(crate::hub::config::DEFAULT_SOCKET_FILE),
    }
}

/// What went wrong talking to the hub, in words.
fn hub_error(error: ClientError) -> String {
    match error {
        ClientError::Unreachable { socket, source } => format!(
            "cannot reach the edgeroll hub at {}: {source} (is `edgeroll hub` running on this machine? its socket is `socket` in hub.toml, by default STATE_DIR/hub.sock; or pass --socket)",
            socket.display()
        ),
        ClientError::Exchange { socket, source } => {
            format!("lost the connection to the edgeroll hub at {}: {source}", socket.display())
        }
        ClientError::Timeout { socket, timeout } => format!(
            "the edgeroll hub at {} did not answer within {}",
            socket.display(),
            humantime::format_duration(timeout)
        ),
        ClientError::Refused { message, .. } => message,
        ClientError::Protocol { status, detail } => {
            #[derive(serde::Deserialize)]
            struct Refusal {
                error: String,
            }
            match serde_json::from_str::<Refusal>(&detail) {
                Ok(refusal) => refusal.error,
                Err(_) => format!("unexpected answer from the edgeroll hub ({status}): {detail}"),
            }
        }
    }
}

/// `edgeroll hub get [PLAN] [--watch] [-o text|json]`.
pub(crate) async fn get(socket: &Path, plan: Option<&str>, watch: bool, output: Output) -> u8 {
    let client = Client::new(socket);
    let fetch = || async {
        let text = match plan {
            Some(name) => {
                let view: PlanView = client
                    .get(&format!("/v1/plans/{name}"))
                    .await
                    .map_err(hub_error)?;
                match output {
                    Output::Json => to_json(&view),
                    Output::Text => render_plan(&view, crate::hub::clock::Clock::system().now()),
                }
            }
            None => {
                let views: Vec<PlanView> = client.get("/v1/plans").await.map_err(hub_error)?;
                match output {
                    Output::Json => to_json(&views),
                    Output::Text => render_plans(&views),
                }
            }
        };
        Ok::<String, String>(text)
    };
    if !watch {
        return match fetch().await {
            Ok(text) => {
                print!("{text}");
                EXIT_OK
            }
            Err(message) => {
                eprintln!("{message}");
                EXIT_FAILED
            }
        };
    }
    let redraw = std::io::stdout().is_terminal();
    let mut shown: Option<String> = None;
    let mut ticker = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return EXIT_OK,
            _ = ticker.tick() => {}
        }
        let text = match fetch().await {
            Ok(text) => text,
            Err(message) => {
                eprintln!("{message}");
                return EXIT_FAILED;
            }
        };
        if shown.as_deref() == Some(text.as_str()) {
            continue;
        }
        let mut stdout = std::io::stdout().lock();
        let written = if redraw {
            write!(stdout, "\x1b[2J\x1b[H{text}")
        } else {
            if shown.is_some() {
                let _ = writeln!(stdout);
            }
            write!(stdout, "{text}")
        };
        if written.and_then(|()| stdout.flush()).is_err() {
            return EXIT_OK;
        }
        shown = Some(text);
    }
}

/// `edgeroll hub promote|abort|pause|resume PLAN`.
pub(crate) async fn act(socket: &Path, plan: &str, verb: &str) -> u8 {
    #[derive(serde::Deserialize)]
    struct Done {
        message: String,
    }
    let client = Client::new(socket);
    match client
        .post::<Done>(&format!("/v1/plans/{plan}/{verb}"))
        .await
    {
        Ok(done) => {
            println!("{}", done.message);
            EXIT_OK
        }
        Err(error) => {
            eprintln!("{}", hub_error(error));
            EXIT_FAILED
        }
    }
}

/// How often `hub get --watch` fetches.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn to_json(value: &impl serde::Serialize) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(text) => text + "\n",
        Err(error) => format!("{{\"error\": \"cannot encode: {error}\"}}\n"),
    }
}

/// The table of every plan.
pub(crate) fn render_plans(views: &[PlanView]) -> String {
    if views.is_empty() {
        return "No plans. A plan is a *.plan.toml file in the hub's documents directory.\n"
            .to_owned();
    }
    let mut rows = vec![[
        "PLAN".to_owned(),
        "PHASE".to_owned(),
        "WAVE".to_owned(),
        "MESSAGE".to_owned(),
    ]];
    for view in views {
        let wave = view
            .waves
            .get(view.current_wave)
            .map_or_else(String::new, |wave| {
                format!(
                    "{} {}/{}",
                    wave.name,
                    view.current_wave + 1,
                    view.waves.len()
                )
            });
        rows.push([
            view.name.clone(),
            format!("{:?}", view.phase),
            wave,
            view.message.clone(),
        ]);
    }
    table(&rows)
}

/// One plan in full: its waves with counts, the sites that block or break them, its events.
pub(crate) fn render_plan(view: &PlanView, now: crate::time::Timestamp) -> String {
    let mut out = String::new();
    let release: Vec<String> = view
        .release
        .iter()
        .map(|(service, version)| format!("{service} {version}"))
        .collect();
    let _ = writeln!(out, "Plan:     {}  ({})", view.name, view.file);
    let _ = writeln!(out, "Phase:    {:?}: {}", view.phase, view.message);
    let _ = writeln!(out, "Release:  {}", release.join(", "));
    let _ = writeln!(out);
    let mut rows = vec![[
        "WAVE",
        "PHASE",
        "SERIAL",
        "MEMBERS",
        "REACHABLE",
        "HEALTHY",
        "PROGRESSING",
        "ABORTED",
        "UNKNOWN",
        "STALE",
        "NEEDED",
        "MAX-ABORTED",
    ]
    .map(str::to_owned)];
    for wave in &view.waves {
        rows.push([
            wave.name.clone(),
            format!("{:?}", wave.phase),
            wave.serial
                .map_or_else(|| "-".to_owned(), |serial| serial.to_string()),
            wave.members.to_string(),
            wave.reachable.to_string(),
            wave.counts.healthy.to_string(),
            wave.counts.progressing.to_string(),
            wave.counts.aborted.to_string(),
            wave.counts.unknown.to_string(),
            wave.counts.stale.to_string(),
            wave.needed.to_string(),
            wave.max_aborted.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    for wave in &view.waves {
        if wave.sites.is_empty() || wave.serial.is_none() {
            continue;
        }
        let _ = writeln!(out, "\nSites that block or break wave {}:", wave.name);
        for site in &wave.sites {
            let seen = site.last_seen.map_or_else(
                || "never seen".to_owned(),
                |seen| {
                    format!(
                        "seen {} ago",
                        crate::hub::plan::engine::human(now.since(seen))
                    )
                },
            );
            let _ = writeln!(
                out,
                "  {:<24} {:<12} {:<16} {}",
                site.site,
                format!("{:?}", site.state),
                seen,
                site.reason
            );
        }
    }
    if !view.events.is_empty() {
        let _ = writeln!(out, "\nEvents:");
        for event in view.events.iter().rev().take(20).rev() {
            let _ = writeln!(
                out,
                "  {}  {:<15} {}",
                event.at.rfc3339(),
                event.kind,
                event.message
            );
        }
    }
    out
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            if index + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
