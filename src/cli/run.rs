//! `run`, `demo` and `sample-app`: the verbs that run something in this process.
//!
//! Owns logging setup, the runtime and the signals that stop the agent. SIGHUP is not handled
//! here: the shell reloads on it. This module must never contain agent logic; it calls
//! `shell::run`, `demo::run` and `sample_app::run`.

use std::io::IsTerminal;
use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use super::{EXIT_FAILED, EXIT_INVALID_CONFIG, EXIT_OK};

/// Worker threads of the agent's runtime: the agent is I/O bound and shares the machine.
const AGENT_WORKER_THREADS: usize = 2;
/// The environment variable with the log filter.
const LOG_FILTER_ENV: &str = "EDGEROLL_LOG";
/// The log filter when `EDGEROLL_LOG` is unset or invalid.
const DEFAULT_LOG_FILTER: &str = "info";
/// The demo prints its own progress; the agent's logs only when asked for with `EDGEROLL_LOG`.
const DEMO_LOG_FILTER: &str = "error";

/// `edgeroll run`: load the config and run the agent until SIGTERM or SIGINT.
pub(crate) fn run(config_path: &Path) -> u8 {
    let config = match crate::config::load(config_path) {
        Ok(config) => config,
        Err(diagnostics) => {
            for line in super::validate::diagnostic_lines(config_path, &diagnostics) {
                eprintln!("{line}");
            }
            return EXIT_INVALID_CONFIG;
        }
    };
    init_logging(DEFAULT_LOG_FILTER);
    let runtime = match daemon_runtime(config.worker_threads, "edgeroll") {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(error) = cancel_on_signals(shutdown.clone()) {
            eprintln!("cannot install the signal handlers: {error}");
            return EXIT_FAILED;
        }
        match crate::shell::run(config, shutdown).await {
            Ok(()) => EXIT_OK,
            Err(error) => {
                eprintln!("edgeroll: {error}");
                EXIT_FAILED
            }
        }
    })
}

/// Logs go to stderr, filtered by `EDGEROLL_LOG`, without colours when stderr is not a terminal.
/// When stderr is the journal (under systemd), each line starts with its syslog priority
/// (`<3>` for errors, `<4>` warnings, `<6>` info, `<7>` debug), which journald strips and keeps
/// as the entry's priority, so `journalctl -p warning` works; the timestamp is left out because
/// the journal has its own.
pub(super) fn init_logging(default_filter: &str) {
    let filter =
        EnvFilter::try_from_env(LOG_FILTER_ENV).unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if stderr_is_journal() {
        builder
            .with_ansi(false)
            .event_format(JournalFormat::new())
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    if let Err(error) = result {
        eprintln!("cannot set up logging: {error}");
    }
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to the device and
/// inode of that stream (`DEV:INO`), and they still match stderr (a shell redirect would not).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os(JOURNAL_STREAM_ENV) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", stat.st_dev, stat.st_ino))
}

/// The environment variable systemd sets when stdout or stderr is the journal.
const JOURNAL_STREAM_ENV: &str = "JOURNAL_STREAM";

/// The usual line format without the timestamp, after a `<N>` syslog priority prefix.
struct JournalFormat {
    line: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl JournalFormat {
    fn new() -> Self {
        JournalFormat {
            line: tracing_subscriber::fmt::format::Format::default()
                .without_time()
                .with_ansi(false),
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.line.format_event(context, writer, event)
    }
}

/// Cancel `shutdown` on the first SIGTERM or SIGINT.
pub(super) fn cancel_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            () = shutdown.cancelled() => return,
        };
        tracing::info!(signal = name, "shutting down");
        shutdown.cancel();
    });
    Ok(())
}

/// `edgeroll demo`.
pub(crate) fn demo(json: bool) -> u8 {
    init_logging(DEMO_LOG_FILTER);
    in_runtime(async {
        match crate::demo::run(json).await {
            Ok(()) => EXIT_OK,
            Err(error) => {
                eprintln!("edgeroll demo: {error:#}");
                EXIT_FAILED
            }
        }
    })
}

/// `edgeroll sample-app`.
pub(crate) fn sample_app(options: crate::sample_app::Options) -> u8 {
    init_logging(DEFAULT_LOG_FILTER);
    in_runtime(async {
        match crate::sample_app::run(options).await {
            Ok(()) => EXIT_OK,
            Err(error) => {
                eprintln!("edgeroll sample-app: {error}");
                EXIT_FAILED
            }
        }
    })
}

/// Run `future` on a multi-thread runtime with [`AGENT_WORKER_THREADS`] workers.
fn in_runtime(future: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(AGENT_WORKER_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            EXIT_FAILED
        }
    }
}

/// The multi-threaded runtime a daemon (the agent or the hub) runs on; the exit code after
/// saying why when it cannot be started.
pub(super) fn daemon_runtime(
    worker_threads: usize,
    thread_name: &str,
) -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .thread_name(thread_name)
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("cannot start the async runtime: {error}");
            EXIT_FAILED
        })
}
