//! `edgeroll hub`: run the reference center in this process.
//!
//! Owns reading `hub.toml` for the verb, the hub's runtime and its exit codes. It must never
//! contain hub logic; it calls `hub::start`.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, EXIT_INVALID_CONFIG, EXIT_OK};
use crate::hub::config::DEFAULT_HUB_CONFIG_PATH;
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
