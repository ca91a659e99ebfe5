//! The `prometheus` provider: one instant query against a Prometheus-compatible HTTP API
//! (`GET {address}/api/v1/query?query=…`), turned into `result` as Argo does.
//!
//! A `vector` becomes a JSON array of the sample values (`[0.995]`), a `scalar` a number. An
//! empty vector or a NaN value is no evidence (`NoData`); a non-2xx answer, `status: error`,
//! a timeout or an unreachable server is an `Error` naming the address. This provider never
//! decides Failed by itself: only a condition on a real value can.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use serde_json::Value;

use super::http_client::{self, quote, HttpClient};
use crate::analysis::Outcome;
use crate::spec::PrometheusQuery;

/// The instant-query endpoint below the address.
const QUERY_PATH: &str = "/api/v1/query";

/// Run `spec`'s query with the shared client.
pub async fn measure(spec: &PrometheusQuery) -> Outcome {
    measure_with(http_client::shared(), spec).await
}

/// Run `spec`'s query with `client`.
pub async fn measure_with(client: &HttpClient, spec: &PrometheusQuery) -> Outcome {
    let url = query_url(&spec.address, &spec.query);
    let request = match Request::builder()
        .method(Method::GET)
        .uri(&url)
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
    {
        Ok(request) => request,
        Err(error) => {
            return Outcome::Error(format!(
                "cannot build a query to prometheus at {}: {error}",
                spec.address
            ))
        }
    };
    let answer = match client.send(request, spec.timeout).await {
        Ok(answer) => answer,
        Err(error) => return Outcome::Error(format!("prometheus at {}: {error}", spec.address)),
    };
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    if !answer.status.is_success() {
        // Prometheus explains a rejected query (bad PromQL is a 400) in the JSON body.
        let reason = json
            .as_ref()
            .and_then(|json| json.get("error"))
            .and_then(Value::as_str)
            .map_or_else(|| quote(&answer.body), str::to_string);
        return Outcome::Error(format!(
            "prometheus at {} answered {}: {reason}",
            spec.address, answer.status
        ));
    }
    let Some(json) = json else {
        return Outcome::Error(format!(
            "prometheus at {} answered with invalid JSON: {}",
            spec.address,
            quote(&answer.body)
        ));
    };
    interpret(&json).unwrap_or_else(|reason| {
        Outcome::Error(format!("prometheus at {}: {reason}", spec.address))
    })
}

/// The outcome a successful query answer means, or why the answer makes no sense.
fn interpret(json: &Value) -> Result<Outcome, String> {
    if json.get("status").and_then(Value::as_str) != Some("success") {
        let error = json
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error message");
        return Err(format!("query failed: {error}"));
    }
    let data = json.get("data").ok_or("the answer has no `data`")?;
    let result_type = data
        .get("resultType")
        .and_then(Value::as_str)
        .ok_or("the answer has no `resultType`")?;
    let result = data.get("result").ok_or("the answer has no `result`")?;
    match result_type {
        "vector" => {
            let series = result.as_array().ok_or("a vector result is not an array")?;
            if series.is_empty() {
                return Ok(Outcome::NoData("query returned no series".to_string()));
            }
            let mut values = Vec::with_capacity(series.len());
            for sample in series {
                let value = sample
                    .get("value")
                    .ok_or("a vector sample has no `value`")?;
                match sample_value(value)? {
                    Some(number) => values.push(number),
                    None => return Ok(Outcome::NoData("query returned NaN".to_string())),
                }
            }
            Ok(Outcome::Value(Value::Array(values)))
        }
        "scalar" => Ok(match sample_value(result)? {
            Some(number) => Outcome::Value(number),
            None => Outcome::NoData("query returned NaN".to_string()),
        }),
        other => Err(format!(
            "unsupported result type `{other}`: use a query that returns an instant vector or a \
             scalar"
        )),
    }
}

/// The number of a `[timestamp, "value"]` pair; `None` for NaN (no evidence). JSON has no
/// infinities, so `±Inf` becomes the largest finite number of its sign, which compares the same
/// way in every threshold condition.
fn sample_value(pair: &Value) -> Result<Option<Value>, String> {
    let text = pair
        .get(1)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a sample is not [time, \"value\"]: {pair}"))?;
    let number: f64 = text
        .parse()
        .map_err(|_| format!("a sample value is not a number: {text:?}"))?;
    if number.is_nan() {
        return Ok(None);
    }
    let finite = if number.is_infinite() {
        f64::MAX.copysign(number)
    } else {
        number
    };
    Ok(serde_json::Number::from_f64(finite).map(Value::Number))
}

/// `{address}/api/v1/query?query=<percent-encoded query>`.
fn query_url(address: &str, query: &str) -> String {
    format!(
        "{}{QUERY_PATH}?query={}",
        address.trim_end_matches('/'),
        percent_encode(query)
    )
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn builds_an_encoded_query_url() {
        assert_eq!(
            query_url("http://127.0.0.1:9090/", "sum(rate(x{a=\"b c\"}[1m]))"),
            "http://127.0.0.1:9090/api/v1/query?query=sum%28rate%28x%7Ba%3D%22b%20c%22%7D%5B1m%5D%29%29"
        );
    }

    #[test]
    fn interprets_answers_as_argo_does() {
        let vector = |values: &[&str]| {
            json!({ "status": "success", "data": { "resultType": "vector", "result":
                values.iter().map(|value| json!({ "metric": {}, "value": [1.5, value] })).collect::<Vec<_>>() } })
        };
        assert_eq!(
            interpret(&vector(&["0.995", "1"])),
            Ok(Outcome::Value(json!([0.995, 1.0])))
        );
        assert_eq!(
            interpret(&vector(&[])),
            Ok(Outcome::NoData("query returned no series".into()))
        );
        assert_eq!(
            interpret(&vector(&["0.5", "NaN"])),
            Ok(Outcome::NoData("query returned NaN".into()))
        );
        assert_eq!(
            interpret(&vector(&["+Inf"])),
            Ok(Outcome::Value(json!([f64::MAX])))
        );
        let scalar = json!({ "status": "success", "data": { "resultType": "scalar", "result": [1.5, "42"] } });
        assert_eq!(interpret(&scalar), Ok(Outcome::Value(json!(42.0))));
        let matrix =
            json!({ "status": "success", "data": { "resultType": "matrix", "result": [] } });
        assert!(interpret(&matrix).unwrap_err().contains("matrix"));
        let failed = json!({ "status": "error", "error": "boom" });
        assert_eq!(interpret(&failed), Err("query failed: boom".into()));
    }
}
