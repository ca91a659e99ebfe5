//! The typed reader over the spanned [`Value`] tree: every accessor either returns the value or
//! records a diagnostic at the value's position and returns `None`, so one walk finds every
//! problem in a file instead of stopping at the first.
//!
//! It knows nothing about documents or configs; the walkers in `document` and `crate::config`
//! say which keys exist and what they mean.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::duration;
use super::tree::{Entry, Node, Source, Value};
use crate::diag::Diagnostic;

/// Unknown keys within this many edits of a known one get a "did you mean" hint.
const MAX_SUGGESTION_DISTANCE: usize = 2;

/// Collects diagnostics while the walkers read the tree.
pub(crate) struct Reader<'t> {
    /// Every source text the tree was built from, indexed by [`Value::source`].
    sources: Vec<Source<'t>>,
    /// Problems found so far, in the order found, each with the index of its source.
    diagnostics: Vec<(usize, Diagnostic)>,
}

impl<'t> Reader<'t> {
    /// A reader over values parsed from `sources`.
    pub(crate) fn new(sources: Vec<Source<'t>>) -> Self {
        Reader {
            sources,
            diagnostics: Vec::new(),
        }
    }

    /// The source text number `index`.
    pub(crate) fn source(&self, index: usize) -> Option<&Source<'t>> {
        self.sources.get(index)
    }

    /// Record a problem at byte `offset` of source `source`.
    pub(crate) fn error_at(&mut self, source: usize, offset: usize, message: String) {
        let diagnostic = match self.sources.get(source) {
            Some(source) => source.diagnostic(offset, message),
            // Values always come from a registered source; this keeps a bug visible instead of
            // losing the message.
            None => Diagnostic {
                file: std::path::PathBuf::from("<unknown>"),
                line: 1,
                column: 1,
                message,
            },
        };
        self.diagnostics.push((source, diagnostic));
    }

    /// Record `path: message` at `value`.
    pub(crate) fn error(&mut self, value: &Value, path: &str, message: impl std::fmt::Display) {
        self.error_at(value.source, value.span.start, format!("{path}: {message}"));
    }

    /// Whether any problem has been recorded.
    pub(crate) fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }

    /// The diagnostics, sorted by source (in the order the sources were given, which for a
    /// config is merge order) and position. The sort is stable, so problems at one position keep
    /// the order they were found in.
    pub(crate) fn into_diagnostics(self) -> Vec<Diagnostic> {
        let mut diagnostics = self.diagnostics;
        diagnostics
            .sort_by_key(|(source, diagnostic)| (*source, diagnostic.line, diagnostic.column));
        let mut diagnostics: Vec<Diagnostic> = diagnostics
            .into_iter()
            .map(|(_, diagnostic)| diagnostic)
            .collect();
        diagnostics.dedup();
        diagnostics
    }

    fn type_error(&mut self, value: &Value, path: &str, expected: &str) {
        let format = self
            .sources
            .get(value.source)
            .map_or(super::tree::Format::Toml, |source| source.format);
        let found = value.node.type_name(format);
        self.error(value, path, format!("expected {expected}, found {found}"));
    }

    /// A string.
    pub(crate) fn string<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v str> {
        match &value.node {
            Node::String(text) => Some(text),
            _ => {
                self.type_error(value, path, "a string");
                None
            }
        }
    }

    /// A string that is not empty.
    pub(crate) fn non_empty_string<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v str> {
        let text = self.string(path, value)?;
        if text.is_empty() {
            self.error(value, path, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// A boolean.
    pub(crate) fn boolean(&mut self, path: &str, value: &Value) -> Option<bool> {
        match value.node {
            Node::Boolean(boolean) => Some(boolean),
            _ => {
                self.type_error(value, path, "a boolean");
                None
            }
        }
    }

    /// An integer in `range`.
    pub(crate) fn integer_in(
        &mut self,
        path: &str,
        value: &Value,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let Node::Integer(integer) = value.node else {
            self.type_error(value, path, "an integer");
            return None;
        };
        let (low, high) = (i128::from(*range.start()), i128::from(*range.end()));
        if integer < low || integer > high {
            // A bound that is only the type's limit reads as noise in a range, so it is left
            // out of the message.
            let message = if high >= i128::from(i32::MAX) && integer < low {
                format!("{integer} is less than {low}")
            } else if high >= i128::from(i32::MAX) {
                format!("{integer} is more than {high}")
            } else {
                format!("{integer} is outside {low}–{high}")
            };
            self.error(value, path, message);
            return None;
        }
        i64::try_from(integer).ok()
    }

    /// An integer in `range` that fits `T` (the range must lie inside `T`'s).
    pub(crate) fn int<T: TryFrom<i64>>(
        &mut self,
        path: &str,
        value: &Value,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        self.integer_in(path, value, range)
            .and_then(|integer| T::try_from(integer).ok())
    }

    /// An array.
    pub(crate) fn array<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v [Value]> {
        match &value.node {
            Node::Array(elements) => Some(elements),
            _ => {
                self.type_error(value, path, "an array");
                None
            }
        }
    }

    /// A table, to be read key by key.
    pub(crate) fn table<'v>(&mut self, path: &str, value: &'v Value) -> Option<Table<'v>> {
        match &value.node {
            Node::Table(entries) => Some(Table {
                path: path.to_string(),
                value,
                entries,
                used: vec![false; entries.len()],
                known: Vec::new(),
            }),
            _ => {
                let expected = match self.sources.get(value.source).map(|source| source.format) {
                    Some(super::tree::Format::Json) => "an object",
                    _ => "a table",
                };
                self.type_error(value, path, expected);
                None
            }
        }
    }

    /// A table whose values are all strings (labels, environment, selector).
    pub(crate) fn string_map(
        &mut self,
        path: &str,
        value: &Value,
    ) -> Option<BTreeMap<String, String>> {
        let Node::Table(entries) = &value.node else {
            self.table(path, value);
            return None;
        };
        let mut map = BTreeMap::new();
        let mut complete = true;
        for entry in entries {
            let entry_path = field_path(path, &entry.key);
            match self.string(&entry_path, &entry.value) {
                Some(text) => {
                    map.insert(entry.key.clone(), text.to_string());
                }
                None => complete = false,
            }
        }
        complete.then_some(map)
    }

    /// A positive duration: integer seconds or a duration string.
    pub(crate) fn duration(&mut self, path: &str, value: &Value) -> Option<Duration> {
        let parsed = match &value.node {
            Node::Integer(seconds) => duration::from_seconds(*seconds),
            Node::String(text) => duration::parse(text),
            _ => {
                self.type_error(
                    value,
                    path,
                    "a duration (seconds or a string such as \"30s\")",
                );
                return None;
            }
        };
        parsed
            .map_err(|message| self.error(value, path, message))
            .ok()
    }
}

/// One table being read: remembers which keys were asked for, so that [`Table::finish`] can
/// report the others as unknown, with a suggestion among the known ones.
pub(crate) struct Table<'v> {
    /// Field path of the table.
    path: String,
    /// The table value (its span is where "missing field" problems are reported).
    value: &'v Value,
    entries: &'v [Entry],
    /// Which entries a `get` has consumed.
    used: Vec<bool>,
    /// Every key asked for, found or not: the candidates for "did you mean".
    known: Vec<&'static str>,
}

impl<'v> Table<'v> {
    /// The table's own value.
    pub(crate) fn value(&self) -> &'v Value {
        self.value
    }

    /// The table's field path.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The path of `key` in this table.
    pub(crate) fn path_of(&self, key: &str) -> String {
        field_path(&self.path, key)
    }

    /// The value of `key` and its path, if present; `key` counts as known either way.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<(String, &'v Value)> {
        self.known.push(key);
        let index = self.entries.iter().position(|entry| entry.key == key)?;
        self.used[index] = true;
        Some((self.path_of(key), &self.entries[index].value))
    }

    /// Like [`Table::get`], but a missing key is an error.
    pub(crate) fn required(
        &mut self,
        reader: &mut Reader<'_>,
        key: &'static str,
    ) -> Option<(String, &'v Value)> {
        let found = self.get(key);
        if found.is_none() {
            let path = self.path_of(key);
            reader.error(self.value, &path, "required field is missing");
        }
        found
    }

    /// The entries no `get` has consumed yet, in source order.
    pub(crate) fn unused(&self) -> impl Iterator<Item = &'v Entry> + '_ {
        self.entries
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|(entry, _)| entry)
    }

    /// Report every key no `get` asked for as unknown.
    pub(crate) fn finish(self, reader: &mut Reader<'_>) {
        for entry in self.unused() {
            let path = self.path_of(&entry.key);
            let message = match suggest(&entry.key, &self.known) {
                Some(known) => format!("{path}: unknown field, did you mean `{known}`?"),
                None if self.known.is_empty() => format!("{path}: unknown field"),
                None => format!(
                    "{path}: unknown field, expected one of {}",
                    self.known
                        .iter()
                        .map(|key| format!("`{key}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            reader.error_at(entry.value.source, entry.key_span.start, message);
        }
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let lower = word.to_lowercase();
    candidates
        .iter()
        .map(|candidate| (edit_distance(&lower, &candidate.to_lowercase()), *candidate))
        .filter(|(distance, candidate)| {
            *distance <= MAX_SUGGESTION_DISTANCE.min(candidate.chars().count() / 2)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance in characters.
pub(crate) fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (i, left_char) in left.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, right_char) in right.iter().enumerate() {
            let substitution = previous[j] + usize::from(left_char != *right_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[right.len()]
}

/// `parent.key`, quoting keys that would not read as one path segment.
pub(crate) fn field_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let segment = if plain {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        segment
    } else {
        format!("{parent}.{segment}")
    }
}

/// `parent[index]`.
pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_known_keys_only() {
        let known = ["setWeight", "pause", "analysis", "setCanaryScale"];
        assert_eq!(suggest("setweight", &known), Some("setWeight"));
        assert_eq!(suggest("setWieght", &known), Some("setWeight"));
        assert_eq!(suggest("paus", &known), Some("pause"));
        assert_eq!(suggest("experiment", &known), None);
        assert_eq!(suggest("x", &["a"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn paths_quote_odd_keys() {
        assert_eq!(field_path("", "services"), "services");
        assert_eq!(
            field_path(&index_path("services", 2), "name"),
            "services[2].name"
        );
        assert_eq!(field_path("env", "a b"), "env.\"a b\"");
    }
}
