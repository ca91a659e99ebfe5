//! The `edgeroll` command line: parses the verbs of the contract and runs them.
//!
//! Owns the flags, the exit codes and everything printed for the user. Verbs that talk to a
//! running agent do so only through the local API and its wire types (`api::types`), never by
//! reading the agent's state directory. `run`, `demo` and `sample-app` start their own runtime.

mod action;
mod client;
mod get;
mod hub;
mod keys;
mod render;
mod run;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::rollout::OperatorAction;
use clap::{Parser, Subcommand, ValueEnum};

pub use render::{render_service_text, render_text};

use crate::config::{DEFAULT_CONFIG_PATH, DEFAULT_SOCKET_PATH};

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed or was refused.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad command line (what clap exits with).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: invalid configuration or desired document (`EX_CONFIG` of sysexits.h).
pub const EXIT_INVALID_CONFIG: u8 = 78;

/// Progressive delivery (canary, analysis gates, automatic abort) for one edge site.
#[derive(Debug, Parser)]
#[command(name = "edgeroll", version, about)]
pub struct Cli {
    /// The agent's API socket [default: the config's socket, else /run/edgeroll/edgeroll.sock].
    #[arg(long, global = true, env = "EDGEROLL_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The agent config [default: /etc/edgeroll/edgeroll.toml]; for `hub`, the hub's config
    /// [default: /etc/edgeroll/hub.toml].
    #[arg(long, global = true, env = "EDGEROLL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (what systemd starts).
    Run,
    /// Check the config and desired documents offline.
    Validate {
        /// Desired documents to check; without any, the config and its desired document.
        #[arg(value_name = "DOCUMENT")]
        documents: Vec<PathBuf>,
    },
    /// Show the rollout status of every service, or of one.
    Get {
        /// Only this service.
        service: Option<String>,
        /// Keep showing the status as it changes, until Ctrl-C.
        #[arg(short, long)]
        watch: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Skip the current pause or analysis step (with --full, every remaining step).
    Promote {
        /// The service.
        service: String,
        /// Go to 100 % at once.
        #[arg(long)]
        full: bool,
    },
    /// Send all traffic back to stable and scale the canary down.
    Abort {
        /// The service.
        service: String,
    },
    /// Start an aborted rollout again from the first step.
    Retry {
        /// The service.
        service: String,
    },
    /// Roll back to an earlier revision (default: the one before the stable one).
    Undo {
        /// The service.
        service: String,
        /// The revision to go back to.
        #[arg(long, value_name = "N")]
        to_revision: Option<u64>,
    },
    /// Stop progressing until resumed.
    Pause {
        /// The service.
        service: String,
    },
    /// Clear a manual pause.
    Resume {
        /// The service.
        service: String,
    },
    /// Run the whole loop on this machine: a canary promoted, a bad release aborted.
    Demo {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The reference center: serve desired documents to sites and ingest their reports.
    Hub {
        /// What to do [default: run the hub].
        #[command(subcommand)]
        command: Option<HubCommand>,
    },
    /// A tiny HTTP service for demos and tests.
    SampleApp {
        /// Port on 127.0.0.1 (0 picks one).
        #[arg(long)]
        port: u16,
        /// Version label answered in the body and the x-version header.
        #[arg(long, default_value = DEFAULT_SAMPLE_APP_VERSION)]
        version: String,
        /// Share of answers that are 500, 0.0 to 1.0.
        #[arg(long, default_value_t = 0.0, value_parser = parse_error_rate)]
        error_rate: f64,
        /// Delay before each answer, milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
    /// Make an Ed25519 key pair for signing desired documents (minisign format).
    Keygen {
        /// Where to write edgeroll.pub and edgeroll.key.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Write the secret key without a password (for automation; as `minisign -G -W`).
        #[arg(long)]
        unencrypted: bool,
        /// Replace an existing key pair.
        #[arg(long)]
        force: bool,
    },
    /// Validate a desired document and sign it: writes DOCUMENT.minisig.
    Sign {
        /// The desired document.
        document: PathBuf,
        /// The secret key (a password-protected one takes EDGEROLL_KEY_PASSWORD or asks).
        #[arg(long, value_name = "FILE", env = "EDGEROLL_KEY", default_value = keys::SECRET_KEY_FILE)]
        key: PathBuf,
    },
}

/// The verbs of `edgeroll hub`: run it, or act on its fleet plans through its socket.
#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Run the hub until SIGTERM or SIGINT (the default); SIGHUP reloads the documents.
    Run,
    /// Show the fleet plans (or one plan's waves, counts and blocking sites).
    Get {
        /// The plan; every plan when omitted.
        plan: Option<String>,
        /// Keep showing it, redrawn when it changes, until Ctrl-C.
        #[arg(short, long)]
        watch: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Release the gate the plan waits at, or complete its running wave now.
    Promote {
        /// The plan.
        plan: String,
    },
    /// Roll the plan back: every started wave gets the previous document, under a new serial.
    Abort {
        /// The plan.
        plan: String,
    },
    /// Start no new wave until `hub resume`.
    Pause {
        /// The plan.
        plan: String,
    },
    /// Clear `hub pause`.
    Resume {
        /// The plan.
        plan: String,
    },
}

/// Output format of `get` and `demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// `sample-app --version` when not given.
const DEFAULT_SAMPLE_APP_VERSION: &str = "1.0.0";

/// Accept an error rate between 0.0 and 1.0.
fn parse_error_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{text} is not between 0.0 and 1.0"))
    }
}

/// Parse the command line and run the verb.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(execute(cli))
}

/// Run a parsed command line; returns the exit code.
pub fn execute(cli: Cli) -> u8 {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    // Only the verbs that talk to the agent need the socket, so only they read the config for it.
    let socket = || socket_path(cli.socket.clone(), &config_path);
    match cli.command {
        Command::Run => run::run(&config_path),
        Command::Validate { documents } => {
            validate::validate(&config_path, cli.config.is_some(), &documents)
        }
        Command::Get {
            service,
            watch,
            output,
        } => in_client_runtime(get::get(&socket(), service.as_deref(), watch, output)),
        Command::Promote { service, full } => {
            operate(&socket(), &service, OperatorAction::Promote { full })
        }
        Command::Abort { service } => operate(&socket(), &service, OperatorAction::Abort),
        Command::Retry { service } => operate(&socket(), &service, OperatorAction::Retry),
        Command::Undo {
            service,
            to_revision,
        } => operate(&socket(), &service, OperatorAction::Undo { to_revision }),
        Command::Pause { service } => operate(&socket(), &service, OperatorAction::Pause),
        Command::Resume { service } => operate(&socket(), &service, OperatorAction::Resume),
        Command::Demo { output } => run::demo(output == Output::Json),
        Command::Hub { command } => {
            let hub_socket = || hub::socket_path(cli.socket.clone(), cli.config.as_deref());
            let act =
                |plan: &str, verb: &str| in_client_runtime(hub::act(&hub_socket(), plan, verb));
            match command.unwrap_or(HubCommand::Run) {
                HubCommand::Run => hub::run(cli.config.as_deref()),
                HubCommand::Get {
                    plan,
                    watch,
                    output,
                } => in_client_runtime(hub::get(&hub_socket(), plan.as_deref(), watch, output)),
                HubCommand::Promote { plan } => act(&plan, "promote"),
                HubCommand::Abort { plan } => act(&plan, "abort"),
                HubCommand::Pause { plan } => act(&plan, "pause"),
                HubCommand::Resume { plan } => act(&plan, "resume"),
            }
        }
        Command::SampleApp {
            port,
            version,
            error_rate,
            latency_ms,
        } => run::sample_app(crate::sample_app::Options {
            port,
            version,
            error_rate,
            latency_ms,
        }),
        Command::Keygen {
            out,
            unencrypted,
            force,
        } => keys::keygen(&out, unencrypted, force),
        Command::Sign { document, key } => {
            let now = crate::shell::clock::Clock::system().now();
            keys::sign(&document, &key, now.as_millis() / 1000)
        }
    }
}

/// Send one operator action on a client runtime.
fn operate(socket: &Path, service: &str, verb: OperatorAction) -> u8 {
    in_client_runtime(action::act(socket, service, verb))
}

/// The socket to talk to: `--socket`, else the config's socket when the config is readable and
/// valid, else the default.
fn socket_path(explicit: Option<PathBuf>, config_path: &Path) -> PathBuf {
    if let Some(socket) = explicit {
        return socket;
    }
    if std::fs::File::open(config_path).is_ok() {
        if let Ok(config) = crate::config::load(config_path) {
            return config.socket;
        }
    }
    PathBuf::from(DEFAULT_SOCKET_PATH)
}

/// Run a client verb on a small single-threaded runtime.
fn in_client_runtime(verb: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(verb),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests;
