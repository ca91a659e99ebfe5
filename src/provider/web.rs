//! The `web` provider: one HTTP(S) GET or POST with the metric's headers and body, whose JSON
//! answer (or the part of it `jsonPath` selects) becomes `result`.
//!
//! A missing path is no evidence (`NoData`); a non-2xx answer, invalid JSON, a timeout or an
//! unreachable server is an `Error` naming the URL. This provider never decides Failed by
//! itself: only a condition on a real value can.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use serde_json::Value;

use super::http_client::{self, quote, HttpClient};
use super::json_path::JsonPath;
use crate::analysis::Outcome;
use crate::spec::WebQuery;

/// Send `spec`'s request with the shared client.
pub async fn measure(spec: &WebQuery) -> Outcome {
    measure_with(http_client::shared(), spec).await
}

/// Send `spec`'s request with `client`.
pub async fn measure_with(client: &HttpClient, spec: &WebQuery) -> Outcome {
    // The path is checked before anything is sent, so a bad one (only possible through an
    // argument) costs no request.
    let path = match spec.json_path.as_deref().map(JsonPath::parse).transpose() {
        Ok(path) => path,
        Err(message) => return Outcome::Error(message),
    };
    let request = match build_request(spec) {
        Ok(request) => request,
        Err(reason) => {
            return Outcome::Error(format!(
                "cannot build a {} request to {}: {reason}",
                spec.method, spec.url
            ))
        }
    };
    let answer = match client.send(request, spec.timeout).await {
        Ok(answer) => answer,
        Err(error) => return Outcome::Error(error.to_string()),
    };
    if !answer.status.is_success() {
        return Outcome::Error(format!(
            "{} {} answered {}: {}",
            spec.method,
            spec.url,
            answer.status,
            quote(&answer.body)
        ));
    }
    let json: Value = match serde_json::from_slice(&answer.body) {
        Ok(json) => json,
        Err(error) => {
            return Outcome::Error(format!(
                "{} {} answered invalid JSON ({error}): {}",
                spec.method,
                spec.url,
                quote(&answer.body)
            ))
        }
    };
    match &path {
        None => Outcome::Value(json),
        Some(path) => match path.select(&json) {
            Some(value) => Outcome::Value(value.clone()),
            None => Outcome::NoData(format!(
                "json path {} matched nothing in the answer of {}",
                spec.json_path.as_deref().unwrap_or("$"),
                spec.url
            )),
        },
    }
}

fn build_request(spec: &WebQuery) -> Result<Request<Full<Bytes>>, String> {
    let method = Method::from_bytes(spec.method.as_bytes()).map_err(|error| error.to_string())?;
    let mut builder = Request::builder().method(method).uri(&spec.url);
    for (key, value) in &spec.headers {
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| format!("{key:?} is not a valid header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {key} is not a valid header value"))?;
        builder = builder.header(name, value);
    }
    let body = spec.body.clone().map(Bytes::from).unwrap_or_default();
    builder
        .body(Full::new(body))
        .map_err(|error| error.to_string())
}
