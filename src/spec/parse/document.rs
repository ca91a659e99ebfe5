//! The walker that validates the spanned tree of a desired document into a [`Document`],
//! including the checks that span several fields (unique names, listener conflicts including
//! blue-green preview listeners, template references and arguments, `dryRun` and
//! `measurementRetention` patterns that must match a metric, and canary step lists that would
//! send traffic to no instance).
//!
//! Every problem is recorded in the [`Reader`] and the walk goes on, so one run reports them all.
//! Nothing here reads files or decides anything about a running rollout.

mod services;
mod strategy;
mod templates;

pub(super) use services::read_command;
use services::*;
use strategy::*;
use templates::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::providers::{read_provider, JOB_SUCCESS_CONDITION, JUDGE_CONDITIONS};
use super::reader::{field_path, index_path, suggest, Reader, Table};
use super::tree::{Node, Value};
use crate::spec::{
    AnalysisStep, AnalysisTemplate, BackgroundAnalysis, BlueGreenStrategy, CanaryScale, CanaryStep,
    CanaryStrategy, ContainerSpec, Document, Metric, Provider, PullPolicy, Readiness, ServiceSpec,
    StopSignal, Strategy, Template, TemplateArg, Traffic, API_VERSION,
    DEFAULT_CONSECUTIVE_ERROR_LIMIT, DEFAULT_PROGRESS_DEADLINE_SECONDS,
    DEFAULT_REVISION_HISTORY_LIMIT, DEFAULT_SCALE_DOWN_DELAY_SECONDS,
};
use crate::time::Timestamp;

/// Argo's default `replicas`.
const DEFAULT_REPLICAS: u32 = 1;
/// The most instances one service may ask for; more is surely a typo on one edge site.
const MAX_REPLICAS: i64 = 1000;
/// The most revisions kept for `undo`.
const MAX_REVISION_HISTORY_LIMIT: i64 = 100;
/// Names are DNS labels, as in Kubernetes.
const MAX_NAME_LENGTH: usize = 63;
/// Weights are percentages.
const MAX_WEIGHT_PERCENT: i64 = 100;
/// What `{{args.x}}` placeholders are replaced with before a condition is compiled, so the
/// syntax check sees an expression; any literal that is valid where a value goes will do.
const PLACEHOLDER_STAND_IN: &str = "0";

/// The step kinds edgeroll runs.
const STEP_KINDS: [&str; 4] = ["setWeight", "pause", "analysis", "setCanaryScale"];
/// Argo step kinds that are recognised but not implemented.
const UNSUPPORTED_STEP_KINDS: [&str; 5] = [
    "experiment",
    "setHeaderRoute",
    "setMirrorRoute",
    "plugin",
    "replicaProgressThreshold",
];
/// The rollout strategies edgeroll runs.
const STRATEGIES: [&str; 2] = ["canary", "blueGreen"];
/// What a `dryRun` or `measurementRetention` pattern may be, in every message about one.
const PATTERN_HINT: &str = "only exact names, `.*` and `prefix.*` are supported";
/// Characters that make a `metricName` pattern a regular expression rather than a name. A `.`
/// inside a name matches itself (Argo's regex would match any character there, so a name
/// selects a subset of what Argo would select, never more).
const REGEX_META: &[char] = &[
    '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
];

/// What the service walker needs to know about a template to check an `analysis` step.
struct TemplateInfo {
    /// The declared arguments, or `None` when they were themselves invalid.
    args: Option<Vec<TemplateArg>>,
}

/// A service's listener, kept for the cross-service conflict check.
struct Listener<'v> {
    /// Who owns it, as messages name it: `services[0]` for the traffic listener,
    /// `services[0] (previewService)` for a preview listener.
    service_path: String,
    address: SocketAddr,
    value: &'v Value,
    path: String,
}

/// What the strategy walker needs to know about its service.
struct ServiceContext<'s> {
    /// Field path of the service, e.g. `services[0]`.
    path: &'s str,
    /// Its `replicas`, when valid.
    replicas: Option<u32>,
    /// Its `traffic.http` listener, when valid.
    listen: Option<&'s str>,
}

/// Validate the tree of a whole document.
pub(crate) fn read_document(reader: &mut Reader<'_>, root: &Value) -> Option<Document> {
    if !matches!(root.node, Node::Table(_)) {
        let found = root.node.type_name(super::tree::Format::Json);
        reader.error_at(
            root.source,
            root.span.start,
            format!("the document must be an object, found {found}"),
        );
        return None;
    }
    let mut table = reader.table("", root)?;

    let api_version = table
        .required(reader, "apiVersion")
        .and_then(|(path, value)| {
            let text = reader.string(&path, value)?;
            if text != API_VERSION {
                reader.error(
                    value,
                    &path,
                    format!("expected \"{API_VERSION}\", found {text:?}"),
                );
                return None;
            }
            Some(())
        });
    let serial = match table.get("serial") {
        Some((path, value)) => reader.int::<u64>(&path, value, 0..=i64::MAX),
        None => Some(0),
    };
    let selector = match table.get("selector") {
        Some((path, value)) => reader.string_map(&path, value),
        None => Some(BTreeMap::new()),
    };
    let expires = optional(table.get("expires"), |path, value| {
        read_timestamp(reader, path, value)
    });

    // Templates are read first so that `analysis` steps can be checked against them, whatever
    // order the document lists them in.
    let (analysis_templates, template_info) = match table.get("analysisTemplates") {
        Some((path, value)) => read_templates(reader, &path, value),
        None => (Some(BTreeMap::new()), BTreeMap::new()),
    };

    let services = match table.get("services") {
        Some((path, value)) => read_services(reader, &path, value, &template_info),
        None => Some(Vec::new()),
    };
    table.finish(reader);

    api_version?;
    Some(Document {
        serial: serial?,
        selector: selector?,
        expires: expires?,
        services: services?,
        analysis_templates: analysis_templates?,
    })
}

/// A table that must hold exactly one of `known` (a tagged union); other keys are reported as an
/// unknown `noun`. `unsupported` keys are recognised, and reported with
/// `unsupported_message(key)`.
pub(super) fn one_of<'v>(
    reader: &mut Reader<'_>,
    path: &str,
    value: &'v Value,
    (noun, known): (&str, &[&'static str]),
    unsupported: &[&str],
    unsupported_message: impl Fn(&str) -> String,
) -> Option<(&'static str, String, &'v Value)> {
    let table = reader.table(path, value)?;
    let expected = known
        .iter()
        .map(|key| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut chosen: Option<(&'static str, String, &'v Value)> = None;
    let mut first_recognised: Option<&str> = None;
    let mut valid = true;
    for entry in table.unused() {
        let entry_path = field_path(path, &entry.key);
        let recognised = known.iter().find(|key| **key == entry.key);
        let is_unsupported = unsupported.contains(&entry.key.as_str());
        if recognised.is_none() && !is_unsupported {
            let hint = match suggest(&entry.key, known) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("expected one of {expected}"),
            };
            reader.error_at(
                entry.value.source,
                entry.key_span.start,
                format!("{entry_path}: unknown {noun} `{}`, {hint}", entry.key),
            );
            valid = false;
            continue;
        }
        if let Some(first) = first_recognised {
            reader.error_at(
                entry.value.source,
                entry.key_span.start,
                format!(
                    "{path}: expected exactly one of {expected}, found `{first}` and `{}`",
                    entry.key
                ),
            );
            valid = false;
            continue;
        }
        first_recognised = Some(&entry.key);
        match recognised {
            Some(key) => chosen = Some((key, entry_path, &entry.value)),
            None => {
                reader.error(&entry.value, &entry_path, unsupported_message(&entry.key));
                valid = false;
            }
        }
    }
    if first_recognised.is_none() && valid {
        reader.error(
            value,
            path,
            format!("expected exactly one of {expected}, found none"),
        );
        return None;
    }
    if valid {
        chosen
    } else {
        None
    }
}

/// An RFC 3339 instant in UTC (`"2026-12-31T00:00:00Z"`, quoted or as a TOML datetime).
fn read_timestamp(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<Timestamp> {
    let text = match &value.node {
        Node::Datetime(text) => text.as_str(),
        _ => reader.string(path, value)?,
    };
    let parsed = humantime::parse_rfc3339(text).ok().and_then(|at| {
        at.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|since| u64::try_from(since.as_millis()).ok())
    });
    match parsed {
        Some(millis) => Some(Timestamp::from_millis(millis)),
        None => {
            reader.error(
                value,
                path,
                format!("{text:?} is not an RFC 3339 time in UTC such as \"2026-12-31T00:00:00Z\""),
            );
            None
        }
    }
}

/// An optional field: `Some(None)` when absent, `Some(Some(_))` when valid, `None` when invalid.
pub(super) fn optional<T>(
    found: Option<(String, &Value)>,
    read: impl FnOnce(&str, &Value) -> Option<T>,
) -> Option<Option<T>> {
    match found {
        None => Some(None),
        Some((path, value)) => read(&path, value).map(Some),
    }
}

pub(super) fn read_condition(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    args: Option<&[TemplateArg]>,
) -> Option<String> {
    let condition = reader.non_empty_string(path, value)?;
    let placeholders_ok = check_placeholders(reader, path, value, condition, args);
    let compiled = crate::analysis::check_condition(&replace_placeholders(condition));
    if let Err(message) = &compiled {
        reader.error(value, path, message);
    }
    (placeholders_ok && compiled.is_ok()).then(|| condition.to_string())
}

/// Every `{{args.x}}` in `text` must name an argument the template declares.
pub(super) fn check_placeholders(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    text: &str,
    args: Option<&[TemplateArg]>,
) -> bool {
    // When the template's args are themselves invalid, that is already reported.
    let Some(args) = args else {
        return true;
    };
    let mut valid = true;
    for placeholder in placeholders(text) {
        let Some(name) = placeholder.strip_prefix("args.") else {
            continue;
        };
        if !args.iter().any(|arg| arg.name == name) {
            reader.error(
                value,
                path,
                format!(
                    "uses `{{{{args.{name}}}}}`, but the template declares no argument `{name}`"
                ),
            );
            valid = false;
        }
    }
    valid
}

/// The trimmed insides of every `{{…}}` in `text`.
pub(super) fn placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after_open = &rest[start + 2..];
        let Some(end) = after_open.find("}}") else {
            break;
        };
        found.push(after_open[..end].trim());
        rest = &after_open[end + 2..];
    }
    found
}

/// `text` with every `{{…}}` replaced by [`PLACEHOLDER_STAND_IN`].
pub(super) fn replace_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after_open = &rest[start + 2..];
        let Some(end) = after_open.find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(PLACEHOLDER_STAND_IN);
        rest = &after_open[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_replaces_placeholders() {
        let text = "result[0] >= {{args.threshold}} && {{ args.other }} {{unclosed";
        assert_eq!(placeholders(text), vec!["args.threshold", "args.other"]);
        assert_eq!(replace_placeholders(text), "result[0] >= 0 && 0 {{unclosed");
    }

    #[test]
    fn canary_scale_rounds_up() {
        assert_eq!(scaled(3, 10), 1);
        assert_eq!(scaled(10, 0), 0);
        assert_eq!(scaled(10, 100), 10);
        assert_eq!(scaled(4, 26), 2);
    }
}
