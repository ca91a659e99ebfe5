//! The `provider` table of a metric: exactly one of `builtin`, `prometheus`, `web`, `job` or
//! `judge`, each validated field by field. Every string field a provider sends somewhere may
//! hold `{{args.x}}`, and each placeholder must name an argument the template declares.
//!
//! Argo's other providers are recognised and reported as not supported yet. Nothing here runs a
//! query: `crate::provider` does that with the validated values.

use std::time::Duration;

use super::document::{check_placeholders, one_of, read_command, replace_placeholders};
use super::reader::{index_path, Reader};
use super::tree::{Format, Node, Value};
use crate::provider::json_path::JsonPath;
use crate::spec::{
    BuiltinMetric, BuiltinQuery, JobSpec, JudgeSignal, JudgeSpec, PrometheusQuery, Provider,
    TemplateArg, WebQuery,
};

/// The metric providers edgeroll has.
const PROVIDERS: [&str; 5] = ["builtin", "prometheus", "web", "job", "judge"];
/// Argo's metric providers, recognised but not implemented.
const UNSUPPORTED_PROVIDERS: [&str; 10] = [
    "datadog",
    "wavefront",
    "newRelic",
    "kayenta",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
    "apisix",
];

/// The version a builtin query measures unless it says otherwise.
const DEFAULT_BUILTIN_VERSION: &str = "canary";
/// The window a builtin query measures over unless it says otherwise.
const DEFAULT_BUILTIN_WINDOW: Duration = Duration::from_secs(30);
/// Fewest requests in the window for a builtin answer to be evidence (one: any request).
const DEFAULT_BUILTIN_MIN_SAMPLES: u64 = 1;
/// How long a Prometheus query or a web request may take unless it says otherwise (Argo's web
/// provider default).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a job may run unless it says otherwise.
const DEFAULT_JOB_DEADLINE: Duration = Duration::from_secs(60);
/// The judge's defaults: a minute of samples, at least 50 of each version, 95 % confidence,
/// and a tolerated increase of 10 %.
const DEFAULT_JUDGE_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_JUDGE_MIN_SAMPLES: u64 = 50;
const DEFAULT_JUDGE_CONFIDENCE: f64 = 0.95;
const DEFAULT_JUDGE_ALLOWED_INCREASE: f64 = 0.1;
/// The HTTP methods the web provider sends.
const WEB_METHODS: [&str; 2] = ["GET", "POST"];

/// The conditions a judge metric gets when it states none: its verdict decides.
pub(crate) const JUDGE_CONDITIONS: (&str, &str) = ("result == 'Pass'", "result == 'Fail'");
/// The condition a job metric gets when it states none: Argo's job provider succeeds on exit 0
/// and fails otherwise.
pub(crate) const JOB_SUCCESS_CONDITION: &str = "result == true";

/// Read a metric's `provider` table; `args` are the template's declared arguments (`None` when
/// they are themselves invalid, which turns the placeholder check off).
pub(crate) fn read_provider(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    args: Option<&[TemplateArg]>,
) -> Option<Provider> {
    let (kind, kind_path, kind_value) = one_of(
        reader,
        path,
        value,
        ("provider", &PROVIDERS),
        &UNSUPPORTED_PROVIDERS,
        |key| format!("provider `{key}` is not supported yet"),
    )?;
    let fields = Fields {
        path: &kind_path,
        value: kind_value,
        args,
    };
    match kind {
        "builtin" => read_builtin(reader, &fields).map(Provider::Builtin),
        "prometheus" => read_prometheus(reader, &fields).map(Provider::Prometheus),
        "web" => read_web(reader, &fields).map(Provider::Web),
        "job" => read_job(reader, &fields).map(Provider::Job),
        _ => read_judge(reader, &fields).map(Provider::Judge),
    }
}

/// The provider's own table and the arguments its placeholders may use.
struct Fields<'f> {
    path: &'f str,
    value: &'f Value,
    args: Option<&'f [TemplateArg]>,
}

/// A string whose `{{args.x}}` placeholders are all declared.
fn templated(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    args: Option<&[TemplateArg]>,
    allow_empty: bool,
) -> Option<String> {
    let text = if allow_empty {
        reader.string(path, value)?
    } else {
        reader.non_empty_string(path, value)?
    };
    check_placeholders(reader, path, value, text, args).then(|| text.to_string())
}

/// An `http://` or `https://` URL with a host (placeholders stand in for valid text, and a URL
/// that is entirely a placeholder is checked only once substituted, at run time).
fn url(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    args: Option<&[TemplateArg]>,
) -> Option<String> {
    let text = templated(reader, path, value, args, false)?;
    if text.trim_start().starts_with("{{") {
        return Some(text);
    }
    let concrete = replace_placeholders(&text);
    let valid = concrete
        .parse::<http::Uri>()
        .ok()
        .filter(|uri| matches!(uri.scheme_str(), Some("http" | "https")))
        .is_some_and(|uri| uri.host().is_some_and(|host| !host.is_empty()));
    if !valid {
        reader.error(
            value,
            path,
            format!("{text:?} is not an http:// or https:// URL with a host"),
        );
        return None;
    }
    Some(text)
}

/// A number (integer or float) in the open or closed range the caller checks.
fn number(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<f64> {
    match value.node {
        // Integers in documents are small; the conversion is exact for any sensible value.
        #[allow(clippy::cast_precision_loss)]
        Node::Integer(integer) => Some(integer as f64),
        Node::Float(float) if float.is_finite() => Some(float),
        _ => {
            let format = reader
                .source(value.source)
                .map_or(Format::Toml, |source| source.format);
            let found = value.node.type_name(format);
            reader.error(value, path, format!("expected a number, found {found}"));
            None
        }
    }
}

/// A duration field with a default.
fn duration_or(
    reader: &mut Reader<'_>,
    found: Option<(String, &Value)>,
    default: Duration,
) -> Option<Duration> {
    match found {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(default),
    }
}

fn read_builtin(reader: &mut Reader<'_>, fields: &Fields<'_>) -> Option<BuiltinQuery> {
    let mut table = reader.table(fields.path, fields.value)?;
    let query = table.required(reader, "query").and_then(|(path, value)| {
        let name = reader.string(&path, value)?;
        let found = BuiltinMetric::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, metric)| *metric);
        if found.is_none() {
            let names: Vec<&str> = BuiltinMetric::ALL.iter().map(|(known, _)| *known).collect();
            reader.error(
                value,
                &path,
                format!(
                    "unknown query `{name}`, expected one of {}",
                    names.join(", ")
                ),
            );
        }
        found
    });
    let version = match table.get("version") {
        Some((path, value)) => templated(reader, &path, value, fields.args, false),
        None => Some(DEFAULT_BUILTIN_VERSION.to_string()),
    };
    let window = duration_or(reader, table.get("window"), DEFAULT_BUILTIN_WINDOW);
    let min_samples = match table.get("minSamples") {
        Some((path, value)) => reader.int::<u64>(&path, value, 1..=i64::MAX),
        None => Some(DEFAULT_BUILTIN_MIN_SAMPLES),
    };
    table.finish(reader);
    Some(BuiltinQuery {
        query: query?,
        version: version?,
        window: window?,
        min_samples: min_samples?,
    })
}

fn read_prometheus(reader: &mut Reader<'_>, fields: &Fields<'_>) -> Option<PrometheusQuery> {
    let mut table = reader.table(fields.path, fields.value)?;
    let address = table
        .required(reader, "address")
        .and_then(|(path, value)| url(reader, &path, value, fields.args));
    let query = table
        .required(reader, "query")
        .and_then(|(path, value)| templated(reader, &path, value, fields.args, false));
    let timeout = duration_or(reader, table.get("timeout"), DEFAULT_REQUEST_TIMEOUT);
    table.finish(reader);
    Some(PrometheusQuery {
        address: address?,
        query: query?,
        timeout: timeout?,
    })
}

fn read_web(reader: &mut Reader<'_>, fields: &Fields<'_>) -> Option<WebQuery> {
    let mut table = reader.table(fields.path, fields.value)?;
    let url = table
        .required(reader, "url")
        .and_then(|(path, value)| url(reader, &path, value, fields.args));
    let method = match table.get("method") {
        Some((path, value)) => reader.string(&path, value).and_then(|method| {
            if WEB_METHODS.contains(&method) {
                return Some(method.to_string());
            }
            reader.error(
                value,
                &path,
                format!("unsupported method {method:?}, expected \"GET\" or \"POST\""),
            );
            None
        }),
        None => Some(WEB_METHODS[0].to_string()),
    };
    let headers = match table.get("headers") {
        Some((path, value)) => read_headers(reader, &path, value, fields.args),
        None => Some(Vec::new()),
    };
    let body = match table.get("body") {
        Some((path, value)) => {
            let body = templated(reader, &path, value, fields.args, true);
            if method.as_deref() == Some("GET") {
                reader.error(value, &path, "a body is only sent with method \"POST\"");
                None
            } else {
                body.map(Some)
            }
        }
        None => Some(None),
    };
    let json_path = match table.get("jsonPath") {
        Some((path, value)) => {
            templated(reader, &path, value, fields.args, false).and_then(|text| {
                // A path built from arguments can only be checked once they are known.
                if text.contains("{{") {
                    return Some(Some(text));
                }
                match JsonPath::parse(&text) {
                    Ok(_) => Some(Some(text)),
                    Err(message) => {
                        reader.error(value, &path, message);
                        None
                    }
                }
            })
        }
        None => Some(None),
    };
    let timeout = duration_or(reader, table.get("timeout"), DEFAULT_REQUEST_TIMEOUT);
    if let Some((path, value)) = table.get("jsonBody") {
        reader.error(
            value,
            &path,
            "jsonBody is not supported: send the JSON text as `body`",
        );
    }
    table.finish(reader);
    Some(WebQuery {
        url: url?,
        method: method?,
        headers: headers?,
        body: body?,
        json_path: json_path?,
        timeout: timeout?,
    })
}

/// `headers = [{ key, value }]`, Argo's shape; names must be valid HTTP header names.
fn read_headers(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    args: Option<&[TemplateArg]>,
) -> Option<Vec<(String, String)>> {
    let elements = reader.array(path, value)?;
    let mut headers = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        let Some(mut table) = reader.table(&element_path, element) else {
            continue;
        };
        let key = table
            .required(reader, "key")
            .and_then(|(key_path, key_value)| {
                let key = reader.non_empty_string(&key_path, key_value)?;
                if http::HeaderName::from_bytes(key.as_bytes()).is_err() {
                    reader.error(
                        key_value,
                        &key_path,
                        format!("{key:?} is not a valid HTTP header name"),
                    );
                    return None;
                }
                Some(key.to_string())
            });
        let header_value =
            table
                .required(reader, "value")
                .and_then(|(value_path, header_value)| {
                    let text = templated(reader, &value_path, header_value, args, true)?;
                    // Placeholders are substituted later; what is written here must already be
                    // sendable (no line breaks or other control characters).
                    if http::HeaderValue::from_str(&replace_placeholders(&text)).is_err() {
                        reader.error(
                            header_value,
                            &value_path,
                            "must not contain control characters such as line breaks",
                        );
                        return None;
                    }
                    Some(text)
                });
        table.finish(reader);
        if let (Some(key), Some(header_value)) = (key, header_value) {
            headers.push((key, header_value));
        }
    }
    (headers.len() == elements.len()).then_some(headers)
}

fn read_job(reader: &mut Reader<'_>, fields: &Fields<'_>) -> Option<JobSpec> {
    let mut table = reader.table(fields.path, fields.value)?;
    let image = table
        .get("image")
        .map(|(path, value)| reader.non_empty_string(&path, value).map(str::to_string));
    let command_field = if image.is_some() {
        table.get("command")
    } else {
        table.required(reader, "command")
    };
    let command = command_field.map_or(Some(Vec::new()), |(path, value)| {
        let command = read_command(reader, &path, value)?;
        let Node::Array(elements) = &value.node else {
            return None;
        };
        // Every argument is checked, not just up to the first problem, so all are reported.
        let undeclared = command
            .iter()
            .zip(elements)
            .enumerate()
            .map(|(index, (argument, element))| {
                check_placeholders(
                    reader,
                    &index_path(&path, index),
                    element,
                    argument,
                    fields.args,
                )
            })
            .filter(|declared| !declared)
            .count();
        (undeclared == 0).then_some(command)
    });
    let deadline = duration_or(reader, table.get("deadline"), DEFAULT_JOB_DEADLINE);
    if let Some((path, value)) = table.get("activeDeadlineSeconds") {
        reader.error(
            value,
            &path,
            "write Argo's activeDeadlineSeconds as `deadline` (e.g. deadline = \"60s\")",
        );
    }
    if let Some((path, value)) = table.get("spec") {
        reader.error(
            value,
            &path,
            "Kubernetes job specs are not supported: give the `command` to run (and an `image` to run it in a container)",
        );
    }
    table.finish(reader);
    let image = match image {
        Some(image) => Some(image?),
        None => None,
    };
    Some(JobSpec {
        command: command?,
        image,
        deadline: deadline?,
    })
}

fn read_judge(reader: &mut Reader<'_>, fields: &Fields<'_>) -> Option<JudgeSpec> {
    let mut table = reader.table(fields.path, fields.value)?;
    let signal = table.required(reader, "signal").and_then(|(path, value)| {
        match reader.string(&path, value)? {
            "latency" => Some(JudgeSignal::Latency),
            "errors" => Some(JudgeSignal::Errors),
            other => {
                reader.error(
                    value,
                    &path,
                    format!("unknown signal {other:?}, expected \"latency\" or \"errors\""),
                );
                None
            }
        }
    });
    let window = duration_or(reader, table.get("window"), DEFAULT_JUDGE_WINDOW);
    let min_samples = match table.get("minSamples") {
        Some((path, value)) => reader.int::<u64>(&path, value, 1..=i64::MAX),
        None => Some(DEFAULT_JUDGE_MIN_SAMPLES),
    };
    let confidence = match table.get("confidence") {
        Some((path, value)) => number(reader, &path, value).and_then(|confidence| {
            if confidence > 0.5 && confidence < 1.0 {
                return Some(confidence);
            }
            reader.error(
                value,
                &path,
                format!("{confidence} is outside (0.5, 1), e.g. 0.95"),
            );
            None
        }),
        None => Some(DEFAULT_JUDGE_CONFIDENCE),
    };
    let allowed_increase = match table.get("allowedIncrease") {
        Some((path, value)) => number(reader, &path, value).and_then(|increase| {
            if increase >= 0.0 {
                return Some(increase);
            }
            reader.error(
                value,
                &path,
                format!("{increase} is negative: give the tolerated relative increase, e.g. 0.1"),
            );
            None
        }),
        None => Some(DEFAULT_JUDGE_ALLOWED_INCREASE),
    };
    table.finish(reader);
    Some(JudgeSpec {
        signal: signal?,
        window: window?,
        min_samples: min_samples?,
        confidence: confidence?,
        allowed_increase: allowed_increase?,
    })
}
