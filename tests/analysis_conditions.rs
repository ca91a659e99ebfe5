//! Conditions in the expr language: what users write in `successCondition` and
//! `failureCondition`, what `edgeroll validate` refuses, and the verdicts they give.

use std::time::{Duration, Instant};

use edgeroll::analysis::{
    check_condition, number_value, verdict, MeasurementPhase, MAX_CONDITION_BYTES,
};
use edgeroll::spec::{BuiltinMetric, BuiltinQuery, Metric, Provider};
use serde_json::{json, Value};

fn metric(success: Option<&str>, failure: Option<&str>) -> Metric {
    Metric {
        name: "m".to_owned(),
        interval: None,
        initial_delay: None,
        count: None,
        success_condition: success.map(str::to_owned),
        failure_condition: failure.map(str::to_owned),
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        consecutive_success_limit: 0,
        dry_run: false,
        measurement_retention: None,
        wait_for_evidence: None,
        provider: Provider::Builtin(BuiltinQuery {
            query: BuiltinMetric::SuccessRate,
            version: "canary".to_owned(),
            window: Duration::from_secs(30),
            min_samples: 1,
        }),
    }
}

/// Whether `condition` holds for `value`, or the evaluation error.
fn holds(condition: &str, value: Value) -> Result<bool, String> {
    verdict(&metric(Some(condition), None), &value).map(|phase| match phase {
        MeasurementPhase::Successful => true,
        MeasurementPhase::Failed => false,
        other => panic!("a lone success condition gave {other:?}"),
    })
}

#[test]
fn argo_style_conditions_evaluate() {
    let nan = number_value(f64::NAN);
    let table: Vec<(&str, Value, bool)> = vec![
        ("result[0] >= 0.95", json!([0.99]), true),
        ("result[0] >= 0.95", json!([0.5]), false),
        ("result[0] >= 0.95", json!([1]), true),
        ("len(result) > 0 && result[0] < 0.1", json!([0.05]), true),
        ("len(result) > 0 && result[0] < 0.1", json!([]), false),
        ("isNaN(result[0])", json!([nan]), true),
        ("isNaN(result[0])", json!([0.5]), false),
        ("isNaN(result[0])", json!([3]), false),
        ("isInf(result[0])", json!(["+Inf"]), true),
        ("isNil(result[3])", json!([1]), true),
        ("default(result[0], 0) > 1", json!([]), false),
        ("default(result[0], 0) > 1", json!([nan]), false),
        ("default(result[0], 0) > 1", json!([2.5]), true),
        ("asFloat(\"0.5\") < 1", json!([]), true),
        ("asFloat(result[0]) == 0.25", json!(["0.25"]), true),
        ("asInt(\"42\") == 42", json!([]), true),
        ("asInt(result[0]) + 1 == 8", json!(["7"]), true),
        ("all(result, {# > 0.9})", json!([0.95, 0.99]), true),
        ("all(result, {# > 0.9})", json!([0.95, 0.5]), false),
        ("all(result, # > 0.9)", json!([0.95, 0.99]), true),
        ("any(result, {isNaN(#)})", json!([0.5, nan]), true),
        ("(result[0] ?? 0) < 1", json!([0.5]), true),
        ("(result[1] ?? 0) < 1", json!([0.5]), true),
        ("result.p99 < 0.25", json!({"p99": 0.2}), true),
        (
            "all(result, .ok)",
            json!([{"ok": true}, {"ok": true}]),
            true,
        ),
        (
            "let rate = result[0]; rate >= 0.9 and rate <= 1",
            json!([0.95]),
            true,
        ),
        ("result[0] > 0.5 ? true : false", json!([0.7]), true),
        ("mean(result) > 0.5", json!([0.4, 0.8]), true),
        ("result[0] in [200, 204]", json!([204]), true),
        ("result[-1] == 3 // the last one", json!([1, 2, 3]), true),
    ];
    for (condition, value, expected) in table {
        assert_eq!(
            holds(condition, value.clone()),
            Ok(expected),
            "{condition} with {value}"
        );
    }
}

#[test]
fn a_condition_that_cannot_be_evaluated_is_an_error_not_a_verdict() {
    let table: Vec<(&str, Value, &str)> = vec![
        (
            "result[0] >= 0.95",
            json!([]),
            "Invalid operands for operator >=",
        ),
        (
            "result[0] > \"a\"",
            json!([1]),
            "Invalid operands for operator >",
        ),
        (
            "result[0]",
            json!([1]),
            "condition returned 1, not a boolean",
        ),
        (
            "isNaN(result[0])",
            json!(["x"]),
            "isNaN() expects a number, got \"x\"",
        ),
        (
            "asInt(result[0]) > 1",
            json!(["1.5"]),
            "asInt() cannot read \"1.5\" as an integer",
        ),
        (
            "asFloat(result[0]) > 1",
            json!(["fast"]),
            "asFloat() cannot read \"fast\" as a number",
        ),
        (
            "default(result[0]) > 1",
            json!([1]),
            "default() takes 2 arguments, got 1",
        ),
    ];
    for (condition, value, message) in table {
        let phase = verdict(&metric(Some(condition), None), &value);
        let Err(error) = phase else {
            panic!("{condition} with {value} gave {phase:?}, expected an error");
        };
        assert!(
            error.starts_with(&format!("evaluating successCondition `{condition}`: "))
                && error.ends_with(message),
            "{condition}: {error}"
        );
    }
}

#[test]
fn verdicts_follow_argo_for_every_combination_of_conditions() {
    let success = Some("result[0] >= 0.9");
    let failure = Some("result[0] < 0.5");
    let table = [
        // (success, failure, value, verdict)
        (None, None, 0.1, MeasurementPhase::Successful),
        (success, None, 0.95, MeasurementPhase::Successful),
        (success, None, 0.7, MeasurementPhase::Failed),
        (None, failure, 0.3, MeasurementPhase::Failed),
        (None, failure, 0.7, MeasurementPhase::Successful),
        (success, failure, 0.95, MeasurementPhase::Successful),
        (success, failure, 0.3, MeasurementPhase::Failed),
        (success, failure, 0.7, MeasurementPhase::Inconclusive),
        // Both true: the failure condition wins.
        (Some("true"), Some("true"), 0.7, MeasurementPhase::Failed),
    ];
    for (success, failure, value, expected) in table {
        assert_eq!(
            verdict(&metric(success, failure), &json!([value])),
            Ok(expected),
            "success {success:?}, failure {failure:?}, value {value}"
        );
    }
    // An error in either condition is an Error, whatever the other says.
    assert!(verdict(&metric(Some("true"), Some("nil > 1")), &json!([1])).is_err());
}

#[test]
fn validate_accepts_what_users_write() {
    for condition in [
        "result[0] >= 0.95",
        "len(result) > 0 && result[0] < 0.1",
        "isNaN(result[0]) || isInf(result[0]) || isNil(result[0])",
        "default(result[0], 0) > 1",
        "asFloat(\"0.5\") < 1 and asInt(\"1\") == 1",
        "all(result, {# > 0.9})",
        "result | all(# > 0.9)",
        "let x = result[0]; x > 0.5",
        "result[0] > 0.5 ? true : false",
        "not (result[0] < 0.5)",
        "result?.p99 < 0.25",
        "reduce(result, #acc + #, 0) > 1",
        "filter(result, # > #index) != []",
        "'a' + \"b\" startsWith 'a' /* a comment */",
    ] {
        assert_eq!(check_condition(condition), Ok(()), "{condition}");
    }
}

#[test]
fn validate_says_what_is_wrong() {
    let table = [
        (
            "isNan(result[0])",
            "unknown function \"isNan\" (did you mean \"isNaN\"?)",
        ),
        (
            "lenn(result) > 0",
            "unknown function \"lenn\" (did you mean \"len\"?)",
        ),
        ("frobnicate(result)", "unknown function \"frobnicate\""),
        (
            "results[0] > 0.9",
            "unknown variable \"results\": the measured value is \"result\"",
        ),
        (
            "result[0] > threshold",
            "unknown variable \"threshold\": the measured value is \"result\"",
        ),
        (
            "$env.result[0] > 1",
            "unknown variable \"$env\": the measured value is \"result\"",
        ),
        ("result[0] >=", "syntax error at 1:13: expected "),
        ("result[0] >= 0.95)", "syntax error at 1:18: expected "),
        ("", "condition is empty"),
        ("  // nothing", "condition is empty"),
        (
            "now() > 1",
            "function \"now\" is not available in conditions: conditions must not read the clock",
        ),
        (
            "len(repeat(\"a\", 1000000000)) > 1",
            "function \"repeat\" is not available in conditions",
        ),
        (
            "result.size() > 1",
            "method call \".size()\" is not available in conditions",
        ),
        (
            "len(1..100000000) > 1",
            "operator \"..\" is not available in conditions",
        ),
        (
            "\"a\" matches \"b\"",
            "operator \"matches\" is not available in conditions",
        ),
    ];
    for (condition, message) in table {
        let outcome = check_condition(condition);
        assert!(
            outcome
                .as_ref()
                .is_err_and(|error| error.starts_with(message)),
            "{condition}: {outcome:?}, expected {message:?}"
        );
    }
}

#[test]
fn validate_bounds_length_operators_and_nesting() {
    let long = format!("result[0] > 0.5 {}", " ".repeat(MAX_CONDITION_BYTES));
    assert_eq!(
        check_condition(&long),
        Err(format!(
            "condition is {} bytes long (limit {MAX_CONDITION_BYTES})",
            long.len()
        ))
    );
    let many = vec!["1"; 100].join(" + ") + " > 0";
    assert_eq!(
        check_condition(&many),
        Err("condition has 100 operators and brackets (limit 64)".to_owned())
    );
    let deep = format!("{}result[0]{} > 0", "(".repeat(7), ")".repeat(7));
    assert_eq!(
        check_condition(&deep),
        Err("condition nests brackets 8 deep (limit 6)".to_owned())
    );
}

#[test]
fn conditions_at_the_limits_evaluate_quickly_without_exhausting_the_stack() {
    // Each of these is the largest of its shape that validation accepts. Without the limits,
    // a few hundred operators overflow the stack and a dozen nested `[` take minutes.
    let operators = vec!["result[0]"; 32].join(" + ") + " >= 0";
    let nested_indexes = "result[result[result[result[result[result[0]]]]]] >= 0";
    let nested_calls = "abs(abs(abs(abs(abs(result[0]))))) >= 0";
    let powers = vec!["1"; 64].join(" ** ") + " == 1";
    let ternaries = "result[0] == 0 ? (true ? (true ? (true ? (true ? (true ? true : false) : false) : false) : false) : false) : false";
    let calls_around_powers = format!(
        "{}{}{} == 1",
        "abs(".repeat(6),
        vec!["1"; 57].join(" ** "),
        ")".repeat(6)
    );
    for condition in [
        operators.as_str(),
        &calls_around_powers,
        nested_indexes,
        nested_calls,
        &powers,
        ternaries,
    ] {
        assert_eq!(check_condition(condition), Ok(()), "{condition}");
        // A generous bound that only an exponential parse would exceed, not a busy machine.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        let outcome = verdict(&metric(Some(condition), None), &json!([0]));
        assert_eq!(outcome, Ok(MeasurementPhase::Successful), "{condition}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{condition} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn evaluation_refuses_what_validation_refuses() {
    // A document that skipped `edgeroll validate` still cannot hang or crash the agent.
    let nested = format!("{}1{} > 0", "(".repeat(500), ")".repeat(500));
    let phase = verdict(&metric(Some(&nested), None), &json!([1]));
    assert!(
        phase
            .as_ref()
            .is_err_and(|error| error.contains("condition nests brackets 500 deep (limit 6)")),
        "{phase:?}"
    );
}
