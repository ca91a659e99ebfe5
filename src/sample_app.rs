//! STUB (helper D replaces this file): `edgeroll sample-app`.

/// Options of the sample app (the CLI flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Port on 127.0.0.1 (0 picks one).
    pub port: u16,
    /// Version label answered in the body and `x-version`.
    pub version: String,
    /// Share of `GET /` answered with 500, 0.0–1.0.
    pub error_rate: f64,
    /// Delay before each answer, milliseconds.
    pub latency_ms: u64,
}

/// Serve until SIGTERM or SIGINT, then finish in-flight requests.
pub async fn run(options: Options) -> std::io::Result<()> {
    let _ = options;
    Ok(())
}
