//! Measured values: how a provider's JSON answer becomes the `result` a condition sees, and the
//! short text users are shown for it.
//!
//! JSON has no NaN or infinity, yet a metrics backend answers NaN when there is nothing to divide
//! by. Providers therefore encode non-finite numbers as the strings `"NaN"`, `"+Inf"` and `"-Inf"`
//! (what Prometheus puts in its JSON), and [`to_expr_value`] turns those strings back into floats,
//! so `isNaN(result[0])` works. This module is pure: no clock, no I/O, no panics.

use expr::Value;

/// Significant digits shown for a measured float: enough to tell 0.995 from 0.999 and short
/// enough to read in a table.
pub const SIGNIFICANT_DIGITS: i32 = 6;
/// Floats at least this large (in absolute value) are shown in exponent notation.
const EXPONENT_ABOVE: f64 = 1e15;
/// Non-zero floats smaller than this (in absolute value) are shown in exponent notation.
const EXPONENT_BELOW: f64 = 1e-4;

/// The JSON string that stands for NaN.
pub const NAN_TEXT: &str = "NaN";
/// The JSON string that stands for positive infinity.
pub const POSITIVE_INFINITY_TEXT: &str = "+Inf";
/// The JSON string that stands for negative infinity.
pub const NEGATIVE_INFINITY_TEXT: &str = "-Inf";

/// `x` as JSON: a number when finite, otherwise `"NaN"`, `"+Inf"` or `"-Inf"`.
pub fn number_value(x: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(x) {
        Some(number) => serde_json::Value::Number(number),
        None if x.is_nan() => serde_json::Value::String(NAN_TEXT.to_owned()),
        None if x > 0.0 => serde_json::Value::String(POSITIVE_INFINITY_TEXT.to_owned()),
        None => serde_json::Value::String(NEGATIVE_INFINITY_TEXT.to_owned()),
    }
}

/// The float a special string stands for (`"NaN"`, `"+Inf"`, `"Inf"`, `"-Inf"`), if it is one.
fn special_float(text: &str) -> Option<f64> {
    match text {
        NAN_TEXT => Some(f64::NAN),
        POSITIVE_INFINITY_TEXT | "Inf" => Some(f64::INFINITY),
        NEGATIVE_INFINITY_TEXT => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// A provider's JSON answer as the expr value bound to `result`.
///
/// Integers stay integers (expr compares them with floats fine), the special strings become
/// non-finite floats, objects become maps.
pub fn to_expr_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(flag) => Value::Bool(*flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(integer) => Value::Integer(integer),
            // A u64 above i64::MAX, or a float: both are represented as f64.
            None => Value::Float(number.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(text) => match special_float(text) {
            Some(float) => Value::Float(float),
            None => Value::String(text.clone()),
        },
        serde_json::Value::Array(items) => Value::Array(items.iter().map(to_expr_value).collect()),
        serde_json::Value::Object(fields) => fields
            .iter()
            .map(|(key, value)| (key.clone(), to_expr_value(value)))
            .collect(),
    }
}

/// The text users see for a measured value, e.g. `[0.995]`, `[NaN]`, `[]`, `[0.5, 12]`.
///
/// It uses the expr language's notation (`nil`, quoted strings), since that is what the user
/// writes conditions against.
pub fn value_text(json: &serde_json::Value) -> String {
    let mut text = String::new();
    write_value(&mut text, json);
    text
}

fn write_value(text: &mut String, json: &serde_json::Value) {
    match json {
        serde_json::Value::Null => text.push_str("nil"),
        serde_json::Value::Bool(flag) => text.push_str(if *flag { "true" } else { "false" }),
        serde_json::Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(integer), _) => text.push_str(&integer.to_string()),
            (None, Some(integer)) => text.push_str(&integer.to_string()),
            (None, None) => text.push_str(&format_float(number.as_f64().unwrap_or(f64::NAN))),
        },
        serde_json::Value::String(string) => match special_float(string) {
            Some(float) => text.push_str(&format_float(float)),
            None => text.push_str(&serde_json::Value::String(string.clone()).to_string()),
        },
        serde_json::Value::Array(items) => {
            text.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    text.push_str(", ");
                }
                write_value(text, item);
            }
            text.push(']');
        }
        serde_json::Value::Object(fields) => {
            text.push('{');
            for (position, (key, value)) in fields.iter().enumerate() {
                if position > 0 {
                    text.push_str(", ");
                }
                text.push_str(key);
                text.push_str(": ");
                write_value(text, value);
            }
            text.push('}');
        }
    }
}

/// A float in at most [`SIGNIFICANT_DIGITS`] significant digits, without trailing zeros:
/// `0.995`, `0.3` (for 0.30000000000000004), `12`, `1.5e-7`, `NaN`, `+Inf`.
pub fn format_float(x: f64) -> String {
    if x.is_nan() {
        return NAN_TEXT.to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            POSITIVE_INFINITY_TEXT.to_owned()
        } else {
            NEGATIVE_INFINITY_TEXT.to_owned()
        };
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    let magnitude = x.abs();
    if (EXPONENT_BELOW..EXPONENT_ABOVE).contains(&magnitude) {
        // The magnitude is within 1e-4..1e15, so the cast cannot overflow.
        #[allow(clippy::cast_possible_truncation)]
        let integer_digits = magnitude.log10().floor() as i32 + 1;
        let decimals = usize::try_from((SIGNIFICANT_DIGITS - integer_digits).max(0)).unwrap_or(0);
        trim_fraction(&format!("{x:.decimals$}")).to_owned()
    } else {
        let mantissa_decimals = usize::try_from(SIGNIFICANT_DIGITS - 1).unwrap_or(0);
        let text = format!("{x:.mantissa_decimals$e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) => format!("{}e{exponent}", trim_fraction(mantissa)),
            None => text,
        }
    }
}

/// `1.500` → `1.5`, `2.000` → `2`; text without a decimal point is returned as is.
fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_are_compact() {
        assert_eq!(format_float(0.995), "0.995");
        assert_eq!(format_float(0.1 + 0.2), "0.3");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(-2.5), "-2.5");
        assert_eq!(format_float(1234.5678), "1234.57");
        assert_eq!(format_float(0.000_15), "0.00015");
        assert_eq!(format_float(1.5e-7), "1.5e-7");
        assert_eq!(format_float(2e20), "2e20");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn value_text_uses_expr_notation() {
        assert_eq!(value_text(&json!([0.995])), "[0.995]");
        assert_eq!(value_text(&json!([])), "[]");
        assert_eq!(
            value_text(&json!([1, 0.5, null, "a"])),
            "[1, 0.5, nil, \"a\"]"
        );
        assert_eq!(value_text(&json!({"p99": 0.25})), "{p99: 0.25}");
        assert_eq!(value_text(&json!([number_value(f64::NAN)])), "[NaN]");
    }

    #[test]
    fn special_strings_become_non_finite_floats() {
        let value = to_expr_value(&json!([
            number_value(f64::NAN),
            number_value(f64::INFINITY),
            number_value(f64::NEG_INFINITY),
            "text"
        ]));
        let Some(items) = value.as_array() else {
            panic!("expected an array, got {value:?}");
        };
        assert!(items[0].as_float().is_some_and(f64::is_nan));
        assert_eq!(items[1].as_float(), Some(f64::INFINITY));
        assert_eq!(items[2].as_float(), Some(f64::NEG_INFINITY));
        assert_eq!(items[3].as_string(), Some("text"));
    }
}
