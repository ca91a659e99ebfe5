//! The spanned value tree that both input formats (TOML and JSON) are converted into, and the
//! source bookkeeping that turns byte offsets into 1-based lines and columns.
//!
//! The tree is plain data: it never validates anything. The walkers in `document` and
//! `crate::config` read it and report problems.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;

/// A byte range inside one source text.
pub(crate) type Span = Range<usize>;

/// One value with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Value {
    /// Byte range of the value in its source text.
    pub(crate) span: Span,
    /// Index of the source text in the [`Sources`] the value was parsed from.
    pub(crate) source: usize,
    /// The value itself.
    pub(crate) node: Node,
}

/// The kinds of value the two formats share.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// A string.
    String(String),
    /// An integer; `i128` holds both TOML's `i64` and JSON's `u64` range.
    Integer(i128),
    /// A floating-point number.
    Float(f64),
    /// `true` or `false`.
    Boolean(bool),
    /// A TOML datetime, kept as text: no field accepts one.
    Datetime(String),
    /// JSON `null`.
    Null,
    /// An array.
    Array(Vec<Value>),
    /// A table (JSON object), entries in source order.
    Table(Vec<Entry>),
}

/// One key of a table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The key.
    pub(crate) key: String,
    /// Byte range of the key in the value's source text.
    pub(crate) key_span: Span,
    /// The value.
    pub(crate) value: Value,
}

/// Which syntax a source text was written in; only changes how types are named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

impl Node {
    /// The type of the value, with an article, as messages show it ("a string").
    pub(crate) fn type_name(&self, format: Format) -> &'static str {
        match (self, format) {
            (Node::String(_), _) => "a string",
            (Node::Integer(_), _) => "an integer",
            (Node::Float(_), Format::Toml) => "a float",
            (Node::Float(_), Format::Json) => "a number",
            (Node::Boolean(_), _) => "a boolean",
            (Node::Datetime(_), _) => "a datetime",
            (Node::Null, _) => "null",
            (Node::Array(_), _) => "an array",
            (Node::Table(_), Format::Toml) => "a table",
            (Node::Table(_), Format::Json) => "an object",
        }
    }
}

/// One source text and the index that maps its byte offsets to lines and columns.
#[derive(Debug)]
pub(crate) struct Source<'t> {
    /// The file named in diagnostics.
    pub(crate) path: PathBuf,
    /// The text.
    pub(crate) text: &'t str,
    /// The syntax of the text.
    pub(crate) format: Format,
    /// Byte offset of the first character of every line.
    line_starts: Vec<usize>,
}

impl<'t> Source<'t> {
    /// Index `text`, read from `path`.
    pub(crate) fn new(path: &Path, text: &'t str, format: Format) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(offset, _)| offset + 1))
            .collect();
        Source {
            path: path.to_path_buf(),
            text,
            format,
            line_starts,
        }
    }

    /// 1-based line and column (counted in characters) of byte `offset`.
    pub(crate) fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        // Spans from the parsers always fall on character boundaries; this only guards against a
        // parser bug turning into a panic.
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_index = match self.line_starts.binary_search(&offset) {
            Ok(index) => index,
            Err(index) => index.saturating_sub(1),
        };
        let line_start = self.line_starts.get(line_index).copied().unwrap_or(0);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line_index + 1, column)
    }

    /// A diagnostic at byte `offset` of this source.
    pub(crate) fn diagnostic(&self, offset: usize, message: String) -> Diagnostic {
        let (line, column) = self.line_column(offset);
        Diagnostic {
            file: self.path.clone(),
            line,
            column,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_and_lines_start_at_one() {
        let source = Source::new(Path::new("x"), "ab\nüx = 1\n\nz", Format::Toml);
        assert_eq!(source.line_column(0), (1, 1));
        assert_eq!(source.line_column(2), (1, 3));
        assert_eq!(source.line_column(3), (2, 1));
        // `ü` is two bytes but one column.
        assert_eq!(source.line_column(5), (2, 2));
        assert_eq!(source.line_column(11), (3, 1));
        assert_eq!(source.line_column(12), (4, 1));
        assert_eq!(source.line_column(1000), (4, 2));
        // Inside a multi-byte character: the column of that character.
        assert_eq!(source.line_column(4), (2, 1));
    }
}
