//! STUB (helper F replaces this file and adds `cli/`): the `edgeroll` command line.

use std::process::ExitCode;

/// Parse the command line and run the verb.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
