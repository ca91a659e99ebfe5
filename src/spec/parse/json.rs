//! A small JSON parser that keeps the byte span of every value and key, producing the same
//! [`Value`] tree as TOML documents.
//!
//! It is strict RFC 8259 JSON, plus two limits that keep hostile input cheap: nesting depth
//! ([`MAX_NESTING_DEPTH`]) and, in the caller, input size. Duplicate keys are errors, because
//! a document that says two things about one field is a mistake. It stops at the first syntax
//! error: past one, positions of later errors are guesses.

use super::tree::{Entry, Node, Value};
use super::MAX_NESTING_DEPTH;

/// A JSON syntax error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Byte offset of the error.
    pub(crate) offset: usize,
    /// What is wrong, lowercase.
    pub(crate) message: String,
}

/// Parse `text` (source number `source`) as one JSON value.
pub(crate) fn parse(text: &str, source: usize) -> Result<Value, SyntaxError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        position: 0,
        source,
    };
    // A byte-order mark is not JSON, but editors on some systems write one; it carries no data.
    if text.starts_with('\u{feff}') {
        parser.position = '\u{feff}'.len_utf8();
    }
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.position < parser.bytes.len() {
        return Err(parser.error("unexpected text after the end of the document"));
    }
    Ok(value)
}

/// The cursor over the input.
struct Parser<'t> {
    text: &'t str,
    bytes: &'t [u8],
    position: usize,
    source: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> SyntaxError {
        self.error_at(self.position, message)
    }

    fn error_at(&self, offset: usize, message: &str) -> SyntaxError {
        SyntaxError {
            offset,
            message: format!("invalid json: {message}"),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.position += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        let start = self.position;
        let node = match self.peek() {
            None => return Err(self.error("expected a value, found the end of the input")),
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Node::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b't') => self.literal("true", Node::Boolean(true))?,
            Some(b'f') => self.literal("false", Node::Boolean(false))?,
            Some(b'n') => self.literal("null", Node::Null)?,
            Some(_) => return Err(self.error("expected a value")),
        };
        Ok(Value {
            span: start..self.position,
            source: self.source,
            node,
        })
    }

    fn literal(&mut self, word: &str, node: Node) -> Result<Node, SyntaxError> {
        if self.bytes[self.position..].starts_with(word.as_bytes()) {
            self.position += word.len();
            Ok(node)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn enter(&self, depth: usize) -> Result<usize, SyntaxError> {
        if depth >= MAX_NESTING_DEPTH {
            Err(self.error(&format!(
                "nesting is deeper than {MAX_NESTING_DEPTH} levels"
            )))
        } else {
            Ok(depth + 1)
        }
    }

    fn object(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        let depth = self.enter(depth)?;
        self.position += 1;
        let mut entries: Vec<Entry> = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.position += 1;
            return Ok(Node::Table(entries));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key in double quotes"));
            }
            let key_start = self.position;
            let key = self.string()?;
            let key_span = key_start..self.position;
            if entries.iter().any(|entry| entry.key == key) {
                return Err(self.error_at(key_start, &format!("duplicate key `{key}`")));
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:` after the key"));
            }
            self.position += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            entries.push(Entry {
                key,
                key_span,
                value,
            });
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.position += 1,
                Some(b'}') => {
                    self.position += 1;
                    return Ok(Node::Table(entries));
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        let depth = self.enter(depth)?;
        self.position += 1;
        let mut elements = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.position += 1;
            return Ok(Node::Array(elements));
        }
        loop {
            self.skip_whitespace();
            elements.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.position += 1,
                Some(b']') => {
                    self.position += 1;
                    return Ok(Node::Array(elements));
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// A string starting at the opening quote; leaves the cursor after the closing quote.
    fn string(&mut self) -> Result<String, SyntaxError> {
        self.position += 1;
        let mut out = String::new();
        loop {
            let run_start = self.position;
            // Copy runs of plain characters at once; the input is a `str`, so slicing at ASCII
            // bytes always lands on character boundaries.
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.position += 1;
            }
            out.push_str(&self.text[run_start..self.position]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.position += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.position += 1;
                    out.push(self.escape()?);
                }
                Some(_) => return Err(self.error("control character in a string")),
            }
        }
    }

    /// One escape, the cursor just after the backslash.
    fn escape(&mut self) -> Result<char, SyntaxError> {
        let escape_start = self.position.saturating_sub(1);
        let Some(byte) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.position += 1;
        let simple = match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(escape_start),
            _ => return Err(self.error_at(escape_start, "invalid escape")),
        };
        Ok(simple)
    }

    /// `\uXXXX`, possibly the first half of a surrogate pair; the cursor after the `u`.
    fn unicode_escape(&mut self, escape_start: usize) -> Result<char, SyntaxError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.position..].starts_with(b"\\u") {
                    return Err(self.error_at(escape_start, "lone leading surrogate in \\u escape"));
                }
                self.position += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error_at(escape_start, "invalid surrogate pair in \\u escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                return Err(self.error_at(escape_start, "lone trailing surrogate in \\u escape"))
            }
            other => other,
        };
        char::from_u32(code).ok_or_else(|| self.error_at(escape_start, "invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|byte| char::from(byte).to_digit(16))
                .ok_or_else(|| self.error("expected four hex digits in \\u escape"))?;
            code = code * 16 + digit;
            self.position += 1;
        }
        Ok(code)
    }

    fn digits(&mut self) -> usize {
        let start = self.position;
        while let Some(b'0'..=b'9') = self.peek() {
            self.position += 1;
        }
        self.position - start
    }

    fn number(&mut self) -> Result<Node, SyntaxError> {
        let start = self.position;
        if self.peek() == Some(b'-') {
            self.position += 1;
        }
        let integer_start = self.position;
        if self.digits() == 0 {
            return Err(self.error("expected a digit"));
        }
        if self.bytes[integer_start] == b'0' && self.position - integer_start > 1 {
            return Err(self.error_at(integer_start, "leading zero in a number"));
        }
        let mut is_integer = true;
        if self.peek() == Some(b'.') {
            is_integer = false;
            self.position += 1;
            if self.digits() == 0 {
                return Err(self.error("expected a digit after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            is_integer = false;
            self.position += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.position += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        let literal = &self.text[start..self.position];
        if is_integer {
            // Integers in the i64 or u64 range stay exact; larger ones become floats, as in
            // serde_json.
            if let Ok(integer) = literal.parse::<i128>() {
                if integer >= i128::from(i64::MIN) && integer <= i128::from(u64::MAX) {
                    return Ok(Node::Integer(integer));
                }
            }
        }
        match literal.parse::<f64>() {
            Ok(float) if float.is_finite() => Ok(Node::Float(float)),
            _ => Err(self.error_at(start, "number out of range")),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The tree as a serde_json value, to compare with serde_json's own parser.
    fn to_serde(value: &Value) -> serde_json::Value {
        match &value.node {
            Node::String(text) => serde_json::Value::String(text.clone()),
            Node::Integer(integer) => {
                if let Ok(unsigned) = u64::try_from(*integer) {
                    serde_json::Value::from(unsigned)
                } else {
                    serde_json::Value::from(i64::try_from(*integer).unwrap())
                }
            }
            Node::Float(float) => serde_json::Value::from(*float),
            Node::Boolean(boolean) => serde_json::Value::Bool(*boolean),
            Node::Datetime(text) => serde_json::Value::String(text.clone()),
            Node::Null => serde_json::Value::Null,
            Node::Array(elements) => elements.iter().map(to_serde).collect(),
            Node::Table(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|entry| (entry.key.clone(), to_serde(&entry.value)))
                    .collect(),
            ),
        }
    }

    /// Equal, allowing the last-bit float differences of serde_json's fast float parsing.
    fn same(left: &serde_json::Value, right: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match (left, right) {
            (J::Number(a), J::Number(b)) if a.is_f64() || b.is_f64() => {
                match (a.as_f64(), b.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                    _ => false,
                }
            }
            (J::Array(a), J::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
            }
            (J::Object(a), J::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(key, a)| b.get(key).is_some_and(|b| same(a, b)))
            }
            _ => left == right,
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("json has no nan or infinity", |float| float.is_finite())
                .prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
            "[\\\\\"/\u{0}-\u{1f}\u{7f}-\u{10ffff}]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|map| { serde_json::Value::Object(map.into_iter().collect()) }),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_serde_json_on_generated_values(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            let ours = parse(&text, 0).map_err(|error| format!("{error:?} in {text}")).unwrap();
            let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
            prop_assert!(same(&to_serde(&ours), &theirs), "{text}");
        }

        #[test]
        fn accepts_only_what_serde_json_accepts(text in "[ \\[\\]{}\",:0-9.eE+\\-a-z\\\\]{0,40}") {
            if let Ok(ours) = parse(&text, 0) {
                let theirs: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|error| format!("{error} for {text:?}")).unwrap();
                prop_assert!(same(&to_serde(&ours), &theirs), "{text}");
            }
        }

        #[test]
        fn never_panics(text in any::<String>()) {
            let _ = parse(&text, 0);
        }
    }

    fn error_of(text: &str) -> (usize, String) {
        let error = parse(text, 0).unwrap_err();
        (error.offset, error.message)
    }

    #[test]
    fn decodes_escapes_and_surrogate_pairs() {
        let value = parse(r#""a\n\u00e9\ud83d\ude00\/""#, 0).unwrap();
        assert_eq!(value.node, Node::String("a\né😀/".into()));
        assert_eq!(value.span, 0..25);
    }

    #[test]
    fn reports_syntax_errors_at_their_position() {
        assert_eq!(
            error_of(r#"{"a": 1,}"#),
            (8, "invalid json: expected a key in double quotes".into())
        );
        assert_eq!(
            error_of(r#"{"a": 1 "b": 2}"#),
            (8, "invalid json: expected `,` or `}`".into())
        );
        assert_eq!(
            error_of(r#"{"a": 1, "a": 2}"#),
            (9, "invalid json: duplicate key `a`".into())
        );
        assert_eq!(
            error_of(r#""\ud800""#),
            (
                1,
                "invalid json: lone leading surrogate in \\u escape".into()
            )
        );
        assert_eq!(
            error_of("[01]"),
            (1, "invalid json: leading zero in a number".into())
        );
        assert_eq!(
            error_of("1e999"),
            (0, "invalid json: number out of range".into())
        );
        assert_eq!(
            error_of("{} x"),
            (
                3,
                "invalid json: unexpected text after the end of the document".into()
            )
        );
        assert_eq!(
            error_of("\"a\u{1}\""),
            (2, "invalid json: control character in a string".into())
        );
    }

    #[test]
    fn limits_nesting_depth() {
        let deep_enough = "[".repeat(MAX_NESTING_DEPTH) + &"]".repeat(MAX_NESTING_DEPTH);
        assert!(parse(&deep_enough, 0).is_ok());
        let too_deep = "[".repeat(MAX_NESTING_DEPTH + 1) + &"]".repeat(MAX_NESTING_DEPTH + 1);
        let (offset, message) = error_of(&too_deep);
        assert_eq!(offset, MAX_NESTING_DEPTH);
        assert!(message.contains("nesting is deeper than"), "{message}");
        // Far deeper input fails the same way instead of exhausting the stack.
        assert!(parse(&"[".repeat(1_000_000), 0).is_err());
    }
}
