//! The small JSONPath subset the `web` provider selects answers with.
//!
//! Supported: the root `$`, child keys `.key`, quoted keys `['key']` or `["key"]` (for keys with
//! dots, spaces or brackets), and array indexes `[N]` (0-based), chained in any order, e.g.
//! `$.data.items[0]['p99 latency']`. Argo writes Kubernetes-style paths wrapped in braces
//! (`{$.data.ok}`); the braces are accepted and ignored. Filters, wildcards, slices, recursive
//! descent and negative indexes are not supported and are rejected when the document is
//! validated.
//!
//! This module is pure: it parses paths and walks `serde_json` values, and never does I/O.

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object member.
    Key(String),
    /// An array element, 0-based.
    Index(usize),
}

/// A parsed path: the steps after `$`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    segments: Vec<Segment>,
}

impl JsonPath {
    /// Parse `text` (`$.a.b[0]`, or Argo's `{$.a.b[0]}`), or say what is wrong with it.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let trimmed = text.trim();
        let inner = match trimmed.strip_prefix('{') {
            Some(rest) => rest
                .strip_suffix('}')
                .ok_or_else(|| format!("json path {text:?} opens `{{` but does not close it"))?
                .trim(),
            None => trimmed,
        };
        let Some(mut rest) = inner.strip_prefix('$') else {
            return Err(format!("json path {text:?} must start with `$`"));
        };
        let mut segments = Vec::new();
        while !rest.is_empty() {
            if let Some(after_dot) = rest.strip_prefix('.') {
                let end = after_dot.find(['.', '[']).unwrap_or(after_dot.len());
                let key = &after_dot[..end];
                if key.is_empty() {
                    return Err(format!("json path {text:?} has an empty key after `.`"));
                }
                if key == "*" || key.contains(['(', ')', '?', '@', '*', ' ']) {
                    return Err(unsupported(text));
                }
                segments.push(Segment::Key(key.to_string()));
                rest = &after_dot[end..];
            } else if let Some(after_bracket) = rest.strip_prefix('[') {
                let (segment, remainder) = bracket(text, after_bracket)?;
                segments.push(segment);
                rest = remainder;
            } else {
                return Err(unsupported(text));
            }
        }
        Ok(JsonPath { segments })
    }

    /// The steps after `$`.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The value the path selects in `root`, or `None` when a key or index is missing (or the
    /// value on the way is not an object or array).
    pub fn select<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(root, |value, segment| match segment {
                Segment::Key(key) => value.as_object()?.get(key),
                Segment::Index(index) => value.as_array()?.get(*index),
            })
    }
}

/// Read one `[…]` whose opening bracket is already consumed.
fn bracket<'t>(text: &str, after_bracket: &'t str) -> Result<(Segment, &'t str), String> {
    for quote in ['\'', '"'] {
        if let Some(quoted) = after_bracket.strip_prefix(quote) {
            let end = quoted
                .find(quote)
                .ok_or_else(|| format!("json path {text:?} has an unterminated quoted key"))?;
            let remainder = quoted[end + 1..]
                .strip_prefix(']')
                .ok_or_else(|| format!("json path {text:?}: expected `]` after a quoted key"))?;
            return Ok((Segment::Key(quoted[..end].to_string()), remainder));
        }
    }
    let end = after_bracket
        .find(']')
        .ok_or_else(|| format!("json path {text:?} has an unterminated `[`"))?;
    let index_text = &after_bracket[..end];
    if index_text.is_empty() || !index_text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(unsupported(text));
    }
    let index = index_text
        .parse::<usize>()
        .map_err(|_| format!("json path {text:?} has an index that is too large"))?;
    Ok((Segment::Index(index), &after_bracket[end + 1..]))
}

fn unsupported(text: &str) -> String {
    format!(
        "json path {text:?} is not supported: use `$`, `.key`, `['key']` and `[N]` \
         (filters, wildcards and slices are not supported)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_supported_forms_with_or_without_braces() {
        let path = JsonPath::parse("{$.data.items[1]['p99 latency'][\"x.y\"]}").unwrap();
        assert_eq!(
            path.segments(),
            &[
                Segment::Key("data".into()),
                Segment::Key("items".into()),
                Segment::Index(1),
                Segment::Key("p99 latency".into()),
                Segment::Key("x.y".into()),
            ]
        );
        assert_eq!(JsonPath::parse("$").unwrap().segments(), &[]);
        assert_eq!(
            JsonPath::parse(" $.ok ").unwrap().segments(),
            &[Segment::Key("ok".into())]
        );
    }

    #[test]
    fn rejects_what_it_does_not_support() {
        for bad in [
            "data.ok",
            "$..ok",
            "$.items[*]",
            "$.items[-1]",
            "$.items[0:2]",
            "$.items[?(@.a)]",
            "{$.ok",
            "$['unterminated",
            "$[1",
            "$.a b",
            "$x",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selects_values_and_misses_cleanly() {
        let answer = json!({ "data": { "ok": true, "items": [{ "v": 0.5 }, 7] } });
        let select = |path: &str| JsonPath::parse(path).unwrap().select(&answer).cloned();
        assert_eq!(select("$.data.ok"), Some(json!(true)));
        assert_eq!(select("$.data.items[0].v"), Some(json!(0.5)));
        assert_eq!(select("$['data']['items'][1]"), Some(json!(7)));
        assert_eq!(select("$"), Some(answer.clone()));
        assert_eq!(select("$.data.missing"), None);
        assert_eq!(select("$.data.items[5]"), None);
        assert_eq!(select("$.data.ok.deeper"), None);
        assert_eq!(select("$.data[0]"), None);
    }
}
