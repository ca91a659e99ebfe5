//! STUB (helper A replaces this file): parse and validate a desired document.

use std::path::Path;

use crate::diag::Diagnostic;
use crate::spec::Document;

/// Parse and validate a desired document (TOML, or JSON when the text starts with `{`),
/// returning every problem at once.
pub fn parse_document(path: &Path, text: &str) -> Result<Document, Vec<Diagnostic>> {
    let _ = (path, text);
    Err(vec![])
}

/// Read `path` and parse it with [`parse_document`].
pub fn load_document(path: &Path) -> Result<Document, Vec<Diagnostic>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_document(path, &text),
        Err(error) => Err(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read desired document: {error}"),
        }]),
    }
}
