//! The `edgeroll` binary: a thin shell over the library (see `edgeroll::cli`).

fn main() -> std::process::ExitCode {
    edgeroll::cli::main()
}
