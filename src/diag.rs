//! Diagnostics for bad input: one `FILE:LINE:COLUMN: message` per problem.
//!
//! Owns the error type that `config` and `spec` return when a file is invalid. It never decides
//! whether input is valid; it only carries and prints what the parsers found.

use std::fmt;
use std::path::PathBuf;

/// One problem in one input file, with a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, lowercase, naming the field.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for Diagnostic {}
