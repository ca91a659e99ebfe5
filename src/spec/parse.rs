//! Parse and validate a desired document, reporting every problem at once.
//!
//! A document is TOML, or JSON when its first non-whitespace character is `{`. Both are turned
//! into one spanned value tree ([`tree`]), which a single walker ([`document`]) validates into a
//! [`Document`]. The walker records a diagnostic for each problem (`FILE:LINE:COLUMN: path:
//! message`) and keeps going, so a user fixes a document in one round instead of one error per
//! run. Cross-field rules (unique names, listener conflicts, template references, canary steps
//! that would send traffic to no instance) are reported together with the rest.
//!
//! This module reads only the file it is asked to read; it never touches other state. The same
//! tree and reader also serve `crate::config`.

pub(crate) mod document;
pub(crate) mod duration;
pub(crate) mod json;
pub(crate) mod providers;
pub(crate) mod reader;
mod runtime_fit;
pub(crate) mod toml_tree;
pub(crate) mod tree;

use std::path::Path;

use crate::diag::Diagnostic;
use crate::spec::Document;

use reader::Reader;
pub use runtime_fit::runtime_fit;
use tree::{Format, Source, Value};

/// The largest document accepted, in bytes; real documents are a few kilobytes, and the limit
/// keeps a hostile or corrupt file from costing much memory or time.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// How deeply arrays and tables may nest; the schema needs fewer than ten levels, and the limit
/// keeps recursive parsing off the end of the stack.
pub const MAX_NESTING_DEPTH: usize = 64;

/// Parse and validate a desired document (TOML, or JSON when the text starts with `{`),
/// returning every problem at once.
pub fn parse_document(path: &Path, text: &str) -> Result<Document, Vec<Diagnostic>> {
    let format = detect_format(text);
    let source = Source::new(path, text, format);
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(vec![source.diagnostic(
            0,
            format!(
                "the document is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES}",
                text.len()
            ),
        )]);
    }
    let root = parse_tree(&source, 0)?;
    let mut reader = Reader::new(vec![source]);
    let document = document::read_document(&mut reader, &root);
    match document {
        Some(document) if !reader.has_errors() => Ok(document),
        _ => Err(reader.into_diagnostics()),
    }
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

/// JSON when the first character that is not whitespace (or a byte-order mark) is `{`.
fn detect_format(text: &str) -> Format {
    let first = text
        .chars()
        .find(|c| !c.is_whitespace() && *c != '\u{feff}');
    if first == Some('{') {
        Format::Json
    } else {
        Format::Toml
    }
}

/// The value tree of `source` (number `index` in the reader), or its syntax errors.
pub(crate) fn parse_tree(source: &Source<'_>, index: usize) -> Result<Value, Vec<Diagnostic>> {
    match source.format {
        Format::Json => json::parse(source.text, index)
            .map_err(|error| vec![source.diagnostic(error.offset, error.message)]),
        Format::Toml => toml_tree::parse(source.text, index).map_err(|errors| {
            let mut diagnostics: Vec<Diagnostic> = errors
                .into_iter()
                .map(|error| source.diagnostic(error.offset, error.message))
                .collect();
            // One mistake often trips the recovering parser more than once on the same line;
            // the first report on a line is the one that explains it.
            diagnostics.sort_by_key(|diagnostic| (diagnostic.line, diagnostic.column));
            diagnostics.dedup_by_key(|diagnostic| diagnostic.line);
            diagnostics
        }),
    }
}
