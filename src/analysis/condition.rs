//! Conditions: Argo's `successCondition` and `failureCondition`, in the expr language.
//!
//! This module owns the expression environment (expr's builtins plus Argo's `isNaN`, `isInf`,
//! `isNil`, `default`, `asInt` and `asFloat`), the static check `edgeroll validate` runs
//! ([`check`]) and evaluation against a measured value bound to `result` ([`evaluate`]).
//!
//! It is pure (no clock, no I/O) and must never crash the agent on any input. The expr parser is
//! recursive and backtracks: a few hundred operators overflow a 2 MiB stack, and a dozen nested
//! `[` take exponential time. So before parsing, a small scanner bounds the length, the number of
//! operators and the bracket nesting of every condition; the same scanner then finds the
//! variables and functions a parsed condition uses.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::LazyLock;

use expr::{Context, Environment, Program, Value};

/// Longest condition accepted, in bytes.
pub const MAX_CONDITION_BYTES: usize = 4096;
/// Most operators (and opening brackets) in one condition: far more than any real condition
/// needs, and well below what overflows a 2 MiB thread stack in a debug build.
pub const MAX_CONDITION_OPERATORS: usize = 64;
/// Deepest bracket nesting in one condition. The parser retries each `[` twice (slice, then
/// index), so its work doubles with every level.
pub const MAX_CONDITION_NESTING: usize = 6;
/// The variable a measurement is bound to.
pub const RESULT_VARIABLE: &str = "result";

/// The functions Argo registers on top of expr's builtins.
pub const ARGO_FUNCTIONS: [&str; 6] = ["isNaN", "isInf", "isNil", "default", "asInt", "asFloat"];

/// expr builtins available in conditions (the crate is built without its temporal, JSON, base64
/// and regex features).
pub const EXPR_FUNCTIONS: [&str; 62] = [
    "abs",
    "all",
    "any",
    "bitand",
    "bitnand",
    "bitnot",
    "bitor",
    "bitshl",
    "bitshr",
    "bitushr",
    "bitxor",
    "ceil",
    "concat",
    "count",
    "filter",
    "find",
    "findIndex",
    "findLast",
    "findLastIndex",
    "first",
    "flatten",
    "float",
    "floor",
    "fromPairs",
    "get",
    "groupBy",
    "hasPrefix",
    "hasSuffix",
    "indexOf",
    "int",
    "join",
    "keys",
    "last",
    "lastIndexOf",
    "len",
    "lower",
    "map",
    "max",
    "mean",
    "median",
    "min",
    "none",
    "one",
    "reduce",
    "replace",
    "reverse",
    "round",
    "sort",
    "sortBy",
    "split",
    "splitAfter",
    "string",
    "sum",
    "take",
    "toPairs",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "type",
    "uniq",
    "upper",
    "values",
];

/// expr builtins refused in conditions, and why.
const REFUSED_FUNCTIONS: [(&str, &str); 9] = [
    (
        "repeat",
        "it can build a string of any size from a short condition",
    ),
    ("now", "conditions must not read the clock"),
    ("date", "time values are not available in conditions"),
    ("duration", "time values are not available in conditions"),
    ("timezone", "time values are not available in conditions"),
    ("fromJSON", "JSON functions are not available in conditions"),
    ("toJSON", "JSON functions are not available in conditions"),
    (
        "fromBase64",
        "base64 functions are not available in conditions",
    ),
    (
        "toBase64",
        "base64 functions are not available in conditions",
    ),
];

/// Names bound inside predicates such as `all(result, {# > 0.9})`.
const PREDICATE_VARIABLES: [&str; 3] = ["#", "#index", "#acc"];

/// Words of the language that are neither variables nor functions.
const KEYWORDS: [&str; 13] = [
    "true",
    "false",
    "nil",
    "and",
    "or",
    "not",
    "in",
    "contains",
    "startsWith",
    "endsWith",
    "let",
    "if",
    "else",
];

/// Keywords that are operators, counted against [`MAX_CONDITION_OPERATORS`].
const KEYWORD_OPERATORS: [&str; 9] = [
    "and",
    "or",
    "not",
    "in",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "if",
];

/// Longest possible edit distance for a "did you mean" suggestion.
const SUGGESTION_DISTANCE: usize = 2;

/// Why a condition was refused or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// The condition is empty.
    #[error("condition is empty")]
    Empty,
    /// Longer than [`MAX_CONDITION_BYTES`].
    #[error("condition is {bytes} bytes long (limit {MAX_CONDITION_BYTES})")]
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// More than [`MAX_CONDITION_OPERATORS`] operators.
    #[error("condition has {operators} operators and brackets (limit {MAX_CONDITION_OPERATORS})")]
    TooComplex {
        /// How many it has.
        operators: usize,
    },
    /// Brackets nested deeper than [`MAX_CONDITION_NESTING`].
    #[error("condition nests brackets {depth} deep (limit {MAX_CONDITION_NESTING})")]
    TooDeep {
        /// Its deepest nesting.
        depth: usize,
    },
    /// The parser refused it.
    #[error("syntax error {0}")]
    Syntax(String),
    /// It names a variable other than `result`.
    #[error("unknown variable \"{name}\": the measured value is \"result\"")]
    UnknownVariable {
        /// The variable.
        name: String,
    },
    /// It calls a function that does not exist.
    #[error("unknown function \"{name}\"{}", suggestion.as_ref().map(|known| format!(" (did you mean \"{known}\"?)")).unwrap_or_default())]
    UnknownFunction {
        /// The function.
        name: String,
        /// A known function with a similar name.
        suggestion: Option<String>,
    },
    /// It calls a function that exists in expr but is not available here.
    #[error("function \"{name}\" is not available in conditions: {reason}")]
    RefusedFunction {
        /// The function.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// It calls a method (`x.name()`); expr has methods only on time values.
    #[error("method call \".{name}()\" is not available in conditions: call functions instead")]
    MethodCall {
        /// The method.
        name: String,
    },
    /// It uses an operator that is not available here.
    #[error("operator \"{operator}\" is not available in conditions: {reason}")]
    RefusedOperator {
        /// The operator.
        operator: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// It builds a map literal (`{key: value}`): the expr crate panics on map values that are
    /// not plain literals, so conditions may not build maps at all.
    #[error("map literals ({{key: value}}) are not available in conditions")]
    MapLiteral,
    /// The expr crate panicked on it: a bug there, caught so it cannot take the agent down.
    #[error("the expression engine failed on this condition")]
    EnginePanicked,
    /// Evaluating it failed (a type error, nil where a number was expected, …).
    #[error("{0}")]
    Evaluation(String),
    /// It evaluated to something other than a boolean.
    #[error("condition returned {0}, not a boolean")]
    NotBoolean(String),
}

/// Check, without evaluating it, that a condition can run: it is short and simple enough, it
/// parses, it reads no variable other than `result` and it calls only known functions.
pub fn check(condition: &str) -> Result<(), ConditionError> {
    compile(condition).map(|_| ())
}

/// Evaluate `condition` with `result` bound to `value`.
pub fn evaluate(condition: &str, value: &Value) -> Result<bool, ConditionError> {
    let program = compile(condition)?;
    let mut context = Context::default();
    context.insert(RESULT_VARIABLE, value.clone());
    let outcome = catch_unwind(AssertUnwindSafe(|| ENVIRONMENT.run(&program, &context)))
        .map_err(|_| ConditionError::EnginePanicked)?;
    match outcome {
        Ok(Value::Bool(verdict)) => Ok(verdict),
        Ok(other) => Err(ConditionError::NotBoolean(other.to_string())),
        Err(error) => Err(ConditionError::Evaluation(error.to_string())),
    }
}

/// Bound, parse and check a condition.
fn compile(condition: &str) -> Result<Program, ConditionError> {
    if condition.len() > MAX_CONDITION_BYTES {
        return Err(ConditionError::TooLong {
            bytes: condition.len(),
        });
    }
    let tokens = tokenize(condition);
    if tokens.is_empty() {
        return Err(ConditionError::Empty);
    }
    check_shape(&tokens)?;
    // Only now is it safe to hand the text to the recursive parser. The expr crate documents
    // no panics, yet some inputs reach an `unreachable!` in it; a condition must never take
    // the agent down, so a panic becomes an error (the closure touches nothing shared).
    let program = catch_unwind(|| expr::compile(condition))
        .map_err(|_| ConditionError::EnginePanicked)?
        .map_err(|error| syntax_error(&error.to_string()))?;
    check_names(&tokens)?;
    Ok(program)
}

/// The parser's message, condensed to one line: `at 1:4: expected value, …`.
fn syntax_error(message: &str) -> ConditionError {
    let position = message
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("--> "))
        .map(str::trim);
    let expected = message
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("= "))
        .map(str::trim);
    match (position, expected) {
        (Some(position), Some(expected)) => {
            ConditionError::Syntax(format!("at {position}: {expected}"))
        }
        _ => ConditionError::Syntax(format!(
            "in condition: {}",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        )),
    }
}

// === Scanner ===

/// A lexical token of a condition; literals are not kept, since no check looks inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// A name: variable, function, keyword, member, `#`, `#index`.
    Ident(&'a str),
    /// A number, string or bytes literal.
    Literal,
    /// An operator or punctuation.
    Punct(&'static str),
    /// A character the language does not have; the parser will reject it.
    Other,
}

/// Operators and punctuation, longest first so `??` is not read as two `?`.
const PUNCTUATION: [&str; 32] = [
    "?.", "??", "**", "..", "<=", ">=", "==", "!=", "&&", "||", "(", ")", "[", "]", "{", "}", ",",
    ":", ";", "?", ".", "+", "-", "*", "/", "%", "^", "<", ">", "!", "|", "=",
];

/// Punctuation that is not an operator and does not open a bracket.
const NOT_OPERATORS: [&str; 7] = [")", "]", "}", ",", ":", ";", "="];

fn is_ident_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte == b'$' || byte == b'#'
}

fn is_ident_continue(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Split a condition into tokens. It never fails: text the language does not allow becomes
/// [`Token::Other`] or a truncated literal, and the parser reports it afterwards.
fn tokenize(text: &str) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let byte = bytes[position];
        let rest = &text[position..];
        if byte.is_ascii_whitespace() {
            position += 1;
        } else if rest.starts_with("//") {
            position += rest.find('\n').unwrap_or(rest.len());
        } else if let Some(comment) = rest.strip_prefix("/*") {
            position += comment.find("*/").map_or(rest.len(), |end| end + 4);
        } else if byte == b'"' || byte == b'\'' || byte == b'`' {
            position = skip_string(bytes, position);
            tokens.push(Token::Literal);
        } else if (byte == b'b' || byte == b'B')
            && matches!(bytes.get(position + 1), Some(b'"' | b'\''))
        {
            position = skip_string(bytes, position + 1);
            tokens.push(Token::Literal);
        } else if byte.is_ascii_digit()
            || (byte == b'.' && bytes.get(position + 1).is_some_and(u8::is_ascii_digit))
        {
            position = skip_number(bytes, position);
            tokens.push(Token::Literal);
        } else if is_ident_start(byte) {
            let length = 1 + rest[1..]
                .bytes()
                .take_while(|next| is_ident_continue(*next))
                .count();
            tokens.push(Token::Ident(&rest[..length]));
            position += length;
        } else if let Some(punct) = PUNCTUATION.iter().find(|punct| rest.starts_with(**punct)) {
            tokens.push(Token::Punct(punct));
            position += punct.len();
        } else {
            tokens.push(Token::Other);
            // Skip a whole UTF-8 character so slicing stays on character boundaries.
            position += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    tokens
}

/// The position just after the string literal whose opening quote is at `start`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut position = start + 1;
    while position < bytes.len() {
        match bytes[position] {
            // Raw (backtick) strings have no escapes.
            b'\\' if quote != b'`' => position += 2,
            byte if byte == quote => return position + 1,
            _ => position += 1,
        }
    }
    bytes.len()
}

/// The position just after the number literal starting at `start` (`12`, `0x1F`, `1.5e-3`, `.5`).
fn skip_number(bytes: &[u8], start: usize) -> usize {
    let mut position = start;
    let mut saw_point = false;
    loop {
        while position < bytes.len() && is_ident_continue(bytes[position]) {
            position += 1;
        }
        let decimal = !matches!(
            bytes.get(start..start + 2),
            Some([b'0', b'x' | b'X' | b'o' | b'O' | b'b' | b'B'])
        );
        // An exponent sign: `1e-3`.
        if decimal
            && position > start
            && matches!(bytes[position - 1], b'e' | b'E')
            && matches!(bytes.get(position), Some(b'+' | b'-'))
        {
            position += 1;
            continue;
        }
        // A decimal point, but not the range operator `1..5`.
        if !saw_point
            && bytes.get(position) == Some(&b'.')
            && bytes.get(position + 1) != Some(&b'.')
            && bytes
                .get(position + 1)
                .is_none_or(|next| !next.is_ascii_alphabetic() || matches!(next, b'e' | b'E'))
        {
            saw_point = true;
            position += 1;
            continue;
        }
        return position;
    }
}

/// Refuse conditions the parser cannot handle safely: too many operators, brackets nested too
/// deep, map literals.
fn check_shape(tokens: &[Token<'_>]) -> Result<(), ConditionError> {
    let mut operators = 0;
    // Open brackets, innermost last.
    let mut open: Vec<&str> = Vec::new();
    let mut deepest = 0;
    for (index, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct(bracket @ ("(" | "[" | "{")) => {
                operators += 1;
                open.push(bracket);
                deepest = deepest.max(open.len());
            }
            Token::Punct(")" | "]" | "}") => {
                open.pop();
            }
            Token::Punct(":") if open.last() == Some(&"{") && starts_map_entry(tokens, index) => {
                return Err(ConditionError::MapLiteral);
            }
            Token::Punct(punct) if !NOT_OPERATORS.contains(punct) => operators += 1,
            Token::Ident(word) if KEYWORD_OPERATORS.contains(word) => operators += 1,
            _ => {}
        }
    }
    if deepest > MAX_CONDITION_NESTING {
        return Err(ConditionError::TooDeep { depth: deepest });
    }
    if operators > MAX_CONDITION_OPERATORS {
        return Err(ConditionError::TooComplex { operators });
    }
    Ok(())
}

/// Whether the `:` at `colon` follows a map key: a name or string right after `{` or `,`.
/// (A ternary's `:` follows an expression that comes after `?`.)
fn starts_map_entry(tokens: &[Token<'_>], colon: usize) -> bool {
    let before = |distance: usize| colon.checked_sub(distance).and_then(|at| tokens.get(at));
    matches!(before(1), Some(Token::Ident(_) | Token::Literal))
        && matches!(before(2), Some(Token::Punct("{" | ",")))
}

/// Check the names a parsed condition uses: variables, functions, methods, operators.
fn check_names(tokens: &[Token<'_>]) -> Result<(), ConditionError> {
    // `let` adds names as it goes; Argo's conditions see only `result`.
    let mut bound: Vec<&str> = vec![RESULT_VARIABLE];
    for (index, token) in tokens.iter().enumerate() {
        let previous = index.checked_sub(1).and_then(|before| tokens.get(before));
        let next = tokens.get(index + 1);
        match token {
            Token::Punct("..") => {
                return Err(ConditionError::RefusedOperator {
                    operator: "..",
                    reason: "a range can build an array of any size from a short condition",
                });
            }
            Token::Ident(name) => {
                let called = next == Some(&Token::Punct("("));
                if matches!(previous, Some(Token::Punct("." | "?."))) {
                    // A member (`result.p99`) or the predicate shorthand (`all(result, .ok)`).
                    if called {
                        return Err(ConditionError::MethodCall {
                            name: (*name).to_owned(),
                        });
                    }
                } else if previous == Some(&Token::Ident("let")) {
                    bound.push(name);
                } else if *name == "matches" {
                    return Err(ConditionError::RefusedOperator {
                        operator: "matches",
                        reason: "regular expressions are not available",
                    });
                } else if KEYWORDS.contains(name) {
                    // A word of the language: neither a variable nor a function.
                } else if called {
                    check_function(name)?;
                } else if !bound.contains(name) && !PREDICATE_VARIABLES.contains(name) {
                    return Err(ConditionError::UnknownVariable {
                        name: (*name).to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_function(name: &str) -> Result<(), ConditionError> {
    if ARGO_FUNCTIONS.contains(&name) || EXPR_FUNCTIONS.contains(&name) {
        return Ok(());
    }
    if let Some((_, reason)) = REFUSED_FUNCTIONS
        .iter()
        .find(|(refused, _)| *refused == name)
    {
        return Err(ConditionError::RefusedFunction {
            name: name.to_owned(),
            reason,
        });
    }
    let suggestion = ARGO_FUNCTIONS
        .iter()
        .chain(EXPR_FUNCTIONS.iter())
        .map(|known| {
            (
                edit_distance(&name.to_lowercase(), &known.to_lowercase()),
                known,
            )
        })
        .filter(|(distance, _)| *distance <= SUGGESTION_DISTANCE)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| (*known).to_owned());
    Err(ConditionError::UnknownFunction {
        name: name.to_owned(),
        suggestion,
    })
}

/// Levenshtein distance between two short names.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous_row: Vec<usize> = (0..=right.len()).collect();
    for (row, left_char) in left.chars().enumerate() {
        let mut current_row = vec![row + 1];
        for (column, right_char) in right.iter().enumerate() {
            let substitution = previous_row[column] + usize::from(left_char != *right_char);
            let insertion = current_row[column] + 1;
            let deletion = previous_row[column + 1] + 1;
            current_row.push(substitution.min(insertion).min(deletion));
        }
        previous_row = current_row;
    }
    previous_row[right.len()]
}

// === Environment ===

/// expr's builtins plus Argo's functions, built once: registering ~70 closures per evaluation
/// would be wasted work.
static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(build_environment);

fn build_environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.add_function("isNaN", |call| match one_argument("isNaN", &call.args)? {
        Value::Float(number) => Ok(Value::Bool(number.is_nan())),
        Value::Integer(_) => Ok(Value::Bool(false)),
        other => Err(type_error("isNaN", "a number", other)),
    });
    environment.add_function("isInf", |call| match one_argument("isInf", &call.args)? {
        Value::Float(number) => Ok(Value::Bool(number.is_infinite())),
        Value::Integer(_) => Ok(Value::Bool(false)),
        other => Err(type_error("isInf", "a number", other)),
    });
    environment.add_function("isNil", |call| {
        Ok(Value::Bool(one_argument("isNil", &call.args)?.is_nil()))
    });
    environment.add_function("default", |call| match call.args.as_slice() {
        [Value::Nil, fallback] => Ok(fallback.clone()),
        [Value::Float(number), fallback] if number.is_nan() => Ok(fallback.clone()),
        [value, _] => Ok(value.clone()),
        arguments => Err(arity_error("default", 2, arguments.len())),
    });
    environment.add_function("asInt", |call| match one_argument("asInt", &call.args)? {
        Value::Integer(integer) => Ok(Value::Integer(*integer)),
        Value::String(text) => text.trim().parse::<i64>().map(Value::Integer).map_err(|_| {
            expr::Error::ExprError(format!("asInt() cannot read {text:?} as an integer"))
        }),
        other => Err(type_error("asInt", "a string or an integer", other)),
    });
    environment.add_function("asFloat", |call| {
        match one_argument("asFloat", &call.args)? {
            Value::Float(number) => Ok(Value::Float(*number)),
            // Integers above 2^53 lose precision, as they do in Argo.
            #[allow(clippy::cast_precision_loss)]
            Value::Integer(integer) => Ok(Value::Float(*integer as f64)),
            Value::String(text) => text.trim().parse::<f64>().map(Value::Float).map_err(|_| {
                expr::Error::ExprError(format!("asFloat() cannot read {text:?} as a number"))
            }),
            other => Err(type_error("asFloat", "a string or a number", other)),
        }
    });
    environment
}

fn one_argument<'a>(function: &str, arguments: &'a [Value]) -> expr::Result<&'a Value> {
    match arguments {
        [argument] => Ok(argument),
        _ => Err(arity_error(function, 1, arguments.len())),
    }
}

fn arity_error(function: &str, expected: usize, given: usize) -> expr::Error {
    expr::Error::ExprError(format!(
        "{function}() takes {expected} argument{}, got {given}",
        if expected == 1 { "" } else { "s" }
    ))
}

fn type_error(function: &str, expected: &str, given: &Value) -> expr::Error {
    expr::Error::ExprError(format!("{function}() expects {expected}, got {given}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_function_exists_in_the_environment() {
        let context = Context::default();
        for name in ARGO_FUNCTIONS.iter().chain(EXPR_FUNCTIONS.iter()) {
            // Called with no arguments every function fails, but only an unknown one says so.
            if let Err(error) = ENVIRONMENT.eval_func(&context, name, vec![], None) {
                let message = error.to_string();
                assert!(
                    !message.contains("Unknown function")
                        && !message.contains("requires expr-lang"),
                    "{name}: {message}"
                );
            }
        }
    }

    #[test]
    fn scanner_reads_literals_as_single_tokens() {
        let tokens = tokenize(r#"result[0] >= 1.5e-3 && "a\"b" != b'x' // trailing"#);
        assert_eq!(
            tokens,
            vec![
                Token::Ident("result"),
                Token::Punct("["),
                Token::Literal,
                Token::Punct("]"),
                Token::Punct(">="),
                Token::Literal,
                Token::Punct("&&"),
                Token::Literal,
                Token::Punct("!="),
                Token::Literal,
            ]
        );
        assert_eq!(
            tokenize("1..5"),
            vec![Token::Literal, Token::Punct(".."), Token::Literal]
        );
        assert_eq!(
            tokenize(".5 + 0x1F"),
            vec![Token::Literal, Token::Punct("+"), Token::Literal]
        );
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("isnan", "isnan"), 0);
        assert_eq!(edit_distance("isnam", "isnan"), 1);
        assert_eq!(edit_distance("lenn", "len"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
