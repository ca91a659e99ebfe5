//! TOML text → the spanned [`Value`] tree, through toml's own spanned parser.
//!
//! This module only converts; it never decides whether a document is valid beyond TOML syntax.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::tree::{Entry, Node, Span, Value};
use super::MAX_NESTING_DEPTH;

/// A TOML syntax error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Byte offset of the error.
    pub(crate) offset: usize,
    /// What is wrong, lowercase.
    pub(crate) message: String,
}

/// Parse `text` (source number `source`) into a table value, or every syntax error found.
pub(crate) fn parse(text: &str, source: usize) -> Result<Value, Vec<SyntaxError>> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let mut syntax_errors: Vec<SyntaxError> = errors
            .iter()
            .map(|error| SyntaxError {
                offset: error.span().map_or(0, |span| span.start),
                message: format!("invalid toml: {}", error.message().trim()),
            })
            .collect();
        syntax_errors.sort_by_key(|error| error.offset);
        return Err(syntax_errors);
    }
    let span = table.span();
    let mut converter = Converter {
        source,
        too_deep: None,
    };
    let value = converter.table(span, table.get_ref(), 0);
    match converter.too_deep {
        Some(offset) => Err(vec![SyntaxError {
            offset,
            message: format!("nesting is deeper than {MAX_NESTING_DEPTH} levels"),
        }]),
        None => Ok(value),
    }
}

/// Carries what every level of the conversion needs.
struct Converter {
    source: usize,
    /// Where the input first nested deeper than [`MAX_NESTING_DEPTH`], if it did.
    too_deep: Option<usize>,
}

impl Converter {
    fn table(&mut self, span: Span, table: &DeTable<'_>, depth: usize) -> Value {
        let mut entries: Vec<Entry> = table
            .iter()
            .map(|(key, value)| Entry {
                key: key.get_ref().to_string(),
                key_span: key.span(),
                value: self.value(value, depth + 1),
            })
            .collect();
        // toml keeps keys sorted by name; the walkers report problems in source order.
        entries.sort_by_key(|entry| entry.key_span.start);
        Value {
            span,
            source: self.source,
            node: Node::Table(entries),
        }
    }

    fn value(&mut self, value: &Spanned<DeValue<'_>>, depth: usize) -> Value {
        let span = value.span();
        if depth > MAX_NESTING_DEPTH {
            // Deeper levels are dropped rather than converted, so hostile input cannot exhaust
            // the stack; the error makes the whole document invalid anyway.
            self.too_deep.get_or_insert(span.start);
            return Value {
                span,
                source: self.source,
                node: Node::Null,
            };
        }
        let node = match value.get_ref() {
            DeValue::String(text) => Node::String(text.to_string()),
            DeValue::Integer(integer) => {
                // toml has already checked the digits, so this only fails on overflow, which
                // toml reports as a syntax error before we get here.
                Node::Integer(i128::from_str_radix(integer.as_str(), integer.radix()).unwrap_or(0))
            }
            DeValue::Float(float) => Node::Float(float.as_str().parse().unwrap_or(f64::NAN)),
            DeValue::Boolean(boolean) => Node::Boolean(*boolean),
            DeValue::Datetime(datetime) => Node::Datetime(datetime.to_string()),
            DeValue::Array(array) => Node::Array(
                array
                    .iter()
                    .map(|element| self.value(element, depth + 1))
                    .collect(),
            ),
            DeValue::Table(table) => return self.table(span, table, depth),
        };
        Value {
            span,
            source: self.source,
            node,
        }
    }
}
