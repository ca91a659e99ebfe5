//! The walker that validates the spanned tree of a desired document into a [`Document`],
//! including the checks that span several fields (unique names, listener conflicts including
//! blue-green preview listeners, template references and arguments, `dryRun` and
//! `measurementRetention` patterns that must match a metric, and canary step lists that would
//! send traffic to no instance).
//!
//! Every problem is recorded in the [`Reader`] and the walk goes on, so one run reports them all.
//! Nothing here reads files or decides anything about a running rollout.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::providers::{read_provider, JOB_SUCCESS_CONDITION, JUDGE_CONDITIONS};
use super::reader::{field_path, index_path, suggest, Reader, Table};
use super::tree::{Node, Value};
use crate::spec::{
    AnalysisStep, AnalysisTemplate, BackgroundAnalysis, BlueGreenStrategy, CanaryScale, CanaryStep,
    CanaryStrategy, Document, Metric, Provider, Readiness, ServiceSpec, Strategy, Template,
    TemplateArg, Traffic, API_VERSION, DEFAULT_CONSECUTIVE_ERROR_LIMIT,
    DEFAULT_PROGRESS_DEADLINE_SECONDS, DEFAULT_REVISION_HISTORY_LIMIT,
    DEFAULT_SCALE_DOWN_DELAY_SECONDS,
};

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
        services: services?,
        analysis_templates: analysis_templates?,
    })
}

// === services ===

fn read_services(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
) -> Option<Vec<ServiceSpec>> {
    let elements = reader.array(path, value)?;
    let mut services = Vec::with_capacity(elements.len());
    let mut complete = true;
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut listeners: Vec<Listener<'_>> = Vec::new();
    for (index, element) in elements.iter().enumerate() {
        let service_path = index_path(path, index);
        let Some(mut table) = reader.table(&service_path, element) else {
            complete = false;
            continue;
        };
        let service = read_service(reader, &mut table, templates, &mut listeners);
        table.finish(reader);
        match service {
            Some((service, name_value)) => {
                match names.get(&service.name) {
                    Some(first) => {
                        let name_path = field_path(&service_path, "name");
                        reader.error(
                            name_value,
                            &name_path,
                            format!("duplicate service name `{}` (also {first})", service.name),
                        );
                        complete = false;
                    }
                    None => {
                        names.insert(service.name.clone(), service_path);
                    }
                }
                services.push(service);
            }
            None => complete = false,
        }
    }
    check_listeners(reader, &listeners);
    complete.then_some(services)
}

/// Two listeners conflict when they are the same address, or share a port and either listens
/// on every address of its family.
fn check_listeners(reader: &mut Reader<'_>, listeners: &[Listener<'_>]) {
    for (later_index, later) in listeners.iter().enumerate() {
        let conflict = listeners[..later_index].iter().find(|earlier| {
            earlier.address == later.address
                || (earlier.address.port() == later.address.port()
                    && (earlier.address.ip().is_unspecified()
                        || later.address.ip().is_unspecified()))
        });
        if let Some(earlier) = conflict {
            let message = if earlier.address == later.address {
                format!(
                    "listener {} is already used by {}",
                    later.address, earlier.service_path
                )
            } else {
                format!(
                    "listener {} conflicts with {} of {}",
                    later.address, earlier.address, earlier.service_path
                )
            };
            reader.error(later.value, &later.path, message);
        }
    }
}

fn read_service<'v>(
    reader: &mut Reader<'_>,
    table: &mut Table<'v>,
    templates: &BTreeMap<String, TemplateInfo>,
    listeners: &mut Vec<Listener<'v>>,
) -> Option<(ServiceSpec, &'v Value)> {
    let service_path = table.path().to_string();
    let name = table.required(reader, "name").and_then(|(path, value)| {
        let text = reader.string(&path, value)?;
        check_name(reader, &path, value, text)?;
        Some((text.to_string(), value))
    });
    let replicas = match table.get("replicas") {
        Some((path, value)) => reader.int::<u32>(&path, value, 1..=MAX_REPLICAS),
        None => Some(DEFAULT_REPLICAS),
    };
    let revision_history_limit = match table.get("revisionHistoryLimit") {
        Some((path, value)) => reader.int::<u32>(&path, value, 0..=MAX_REVISION_HISTORY_LIMIT),
        None => Some(DEFAULT_REVISION_HISTORY_LIMIT),
    };
    let progress_deadline_seconds = match table.get("progressDeadlineSeconds") {
        Some((path, value)) => reader.int::<u32>(&path, value, 1..=i64::from(u32::MAX)),
        None => Some(DEFAULT_PROGRESS_DEADLINE_SECONDS),
    };
    let progress_deadline_abort = match table.get("progressDeadlineAbort") {
        Some((path, value)) => reader.boolean(&path, value),
        None => Some(false),
    };
    let traffic = table
        .required(reader, "traffic")
        .and_then(|(path, value)| read_traffic(reader, &service_path, &path, value, listeners));
    let template = table
        .required(reader, "template")
        .and_then(|(path, value)| read_template(reader, &path, value));
    let listen = traffic.as_ref().map(|traffic| traffic.listen().to_string());
    let service = ServiceContext {
        path: &service_path,
        replicas,
        listen: listen.as_deref(),
    };
    let strategy = table
        .required(reader, "strategy")
        .and_then(|(path, value)| {
            read_strategy(reader, &path, value, templates, &service, listeners)
        });

    let (name, name_value) = name?;
    Some((
        ServiceSpec {
            name,
            replicas: replicas?,
            revision_history_limit: revision_history_limit?,
            progress_deadline_seconds: progress_deadline_seconds?,
            progress_deadline_abort: progress_deadline_abort?,
            traffic: traffic?,
            template: template?,
            strategy: strategy?,
        },
        name_value,
    ))
}

/// Names are DNS labels: 1–63 of `[a-z0-9-]`, not starting or ending with `-`.
fn check_name(reader: &mut Reader<'_>, path: &str, value: &Value, name: &str) -> Option<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        return Some(());
    }
    reader.error(
        value,
        path,
        format!(
            "{name:?} is not a valid name: use 1–{MAX_NAME_LENGTH} lowercase letters, digits \
             and '-', not starting or ending with '-'"
        ),
    );
    None
}

fn read_traffic<'v>(
    reader: &mut Reader<'_>,
    service_path: &str,
    path: &str,
    value: &'v Value,
    listeners: &mut Vec<Listener<'v>>,
) -> Option<Traffic> {
    let mut table = reader.table(path, value)?;
    let http = table.get("http");
    let tcp = table.get("tcp");
    let protocol = table.get("protocol");
    table.finish(reader);
    match (http, tcp) {
        (Some(_), Some((tcp_path, tcp_value))) => {
            reader.error(tcp_value, &tcp_path, "use either `http` or `tcp`, not both");
            None
        }
        (None, None) => {
            reader.error(value, path, "expected `http = \"host:port\"`");
            None
        }
        (None, Some((tcp_path, tcp_value))) => {
            reader.error(tcp_value, &tcp_path, "tcp traffic is not supported yet");
            None
        }
        (Some((http_path, http_value)), None) => {
            if let Some((protocol_path, protocol_value)) = protocol {
                reader.error(
                    protocol_value,
                    &protocol_path,
                    "only applies to tcp traffic",
                );
            }
            let text = reader.string(&http_path, http_value)?;
            let address = read_listen_address(reader, &http_path, http_value, text)?;
            listeners.push(Listener {
                service_path: service_path.to_string(),
                address,
                value: http_value,
                path: http_path,
            });
            Some(Traffic::Http {
                listen: text.to_string(),
            })
        }
    }
}

fn read_listen_address(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    text: &str,
) -> Option<SocketAddr> {
    let Ok(address) = text.parse::<SocketAddr>() else {
        reader.error(
            value,
            path,
            format!("{text:?} is not an address such as \"0.0.0.0:8080\" or \"[::1]:8080\""),
        );
        return None;
    };
    if address.port() == 0 {
        reader.error(
            value,
            path,
            "port 0 is not allowed: clients need a fixed port",
        );
        return None;
    }
    Some(address)
}

fn read_template(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<Template> {
    let mut table = reader.table(path, value)?;
    let version = table
        .required(reader, "version")
        .and_then(|(path, value)| reader.non_empty_string(&path, value).map(str::to_string));
    let command = table
        .required(reader, "command")
        .and_then(|(path, value)| read_command(reader, &path, value));
    let env = match table.get("env") {
        Some((path, value)) => read_env(reader, &path, value),
        None => Some(BTreeMap::new()),
    };
    let readiness = match table.get("readiness") {
        Some((path, value)) => read_readiness(reader, &path, value),
        None => Some(Readiness::Tcp),
    };
    if let Some((image_path, image_value)) = table.get("image") {
        reader.error(
            image_value,
            &image_path,
            "container images are not supported yet: the process runtime runs `command`",
        );
    }
    table.finish(reader);
    Some(Template {
        version: version?,
        command: command?,
        env: env?,
        readiness: readiness?,
    })
}

pub(super) fn read_command(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<Vec<String>> {
    let elements = reader.array(path, value)?;
    if elements.is_empty() {
        reader.error(value, path, "must name a program to run");
        return None;
    }
    let mut command = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        let argument = if index == 0 {
            reader.non_empty_string(&element_path, element)
        } else {
            reader.string(&element_path, element)
        };
        if let Some(argument) = argument {
            // An argument with NUL cannot be passed to exec; catching it here beats a failed start.
            if argument.contains('\0') {
                reader.error(element, &element_path, "must not contain a NUL character");
            } else {
                command.push(argument.to_string());
            }
        }
    }
    (command.len() == elements.len()).then_some(command)
}

fn read_env(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<BTreeMap<String, String>> {
    let env = reader.string_map(path, value)?;
    let Node::Table(entries) = &value.node else {
        return None;
    };
    let mut valid = true;
    for entry in entries {
        let key = &entry.key;
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            let entry_path = field_path(path, key);
            reader.error_at(
                entry.value.source,
                entry.key_span.start,
                format!("{entry_path}: not a valid environment variable name"),
            );
            valid = false;
        }
        if matches!(&entry.value.node, Node::String(text) if text.contains('\0')) {
            reader.error(
                &entry.value,
                &field_path(path, key),
                "must not contain a NUL character",
            );
            valid = false;
        }
    }
    valid.then_some(env)
}

fn read_readiness(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<Readiness> {
    let (kind, kind_path, kind_value) = one_of(
        reader,
        path,
        value,
        ("readiness check", &["httpGet", "tcp"]),
        &[],
        |_| String::new(),
    )?;
    match kind {
        "httpGet" => {
            let request_path = reader.string(&kind_path, kind_value)?;
            if !request_path.starts_with('/') {
                reader.error(
                    kind_value,
                    &kind_path,
                    format!("{request_path:?} must start with '/'"),
                );
                return None;
            }
            Some(Readiness::HttpGet {
                path: request_path.to_string(),
            })
        }
        _ => {
            if reader.boolean(&kind_path, kind_value)? {
                Some(Readiness::Tcp)
            } else {
                reader.error(kind_value, &kind_path, "set `tcp = true`, or use `httpGet`");
                None
            }
        }
    }
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

// === strategy ===

/// What the strategy walker needs to know about its service.
struct ServiceContext<'s> {
    /// Field path of the service, e.g. `services[0]`.
    path: &'s str,
    /// Its `replicas`, when valid.
    replicas: Option<u32>,
    /// Its `traffic.http` listener, when valid.
    listen: Option<&'s str>,
}

fn read_strategy<'v>(
    reader: &mut Reader<'_>,
    path: &str,
    value: &'v Value,
    templates: &BTreeMap<String, TemplateInfo>,
    service: &ServiceContext<'_>,
    listeners: &mut Vec<Listener<'v>>,
) -> Option<Strategy> {
    let (kind, kind_path, kind_value) =
        one_of(reader, path, value, ("strategy", &STRATEGIES), &[], |_| {
            String::new()
        })?;
    if kind == "blueGreen" {
        return read_blue_green(
            reader, &kind_path, kind_value, templates, service, listeners,
        )
        .map(Strategy::BlueGreen);
    }
    let mut table = reader.table(&kind_path, kind_value)?;
    let steps = match table.get("steps") {
        Some((steps_path, steps_value)) => read_steps(
            reader,
            &steps_path,
            steps_value,
            templates,
            service.replicas,
        ),
        None => Some(Vec::new()),
    };
    let analysis = optional(table.get("analysis"), |path, value| {
        read_background_analysis(reader, path, value, templates, steps.as_deref())
    });
    table.finish(reader);
    Some(Strategy::Canary(CanaryStrategy {
        steps: steps?,
        analysis: analysis?,
    }))
}

/// `strategy.canary.analysis`: an analysis step plus `startingStep`, which must name a step
/// when the canary has steps.
fn read_background_analysis(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
    steps: Option<&[CanaryStep]>,
) -> Option<BackgroundAnalysis> {
    let mut table = reader.table(path, value)?;
    let starting_step = match table.get("startingStep") {
        Some((step_path, step_value)) => reader
            .int::<usize>(&step_path, step_value, 0..=i64::from(u32::MAX))
            .and_then(|index| match steps {
                Some(steps) if !steps.is_empty() && index >= steps.len() => {
                    reader.error(
                        step_value,
                        &step_path,
                        format!(
                            "step {index} does not exist: the canary has {} steps, numbered \
                             from 0",
                            steps.len()
                        ),
                    );
                    None
                }
                _ => Some(index),
            }),
        None => Some(0),
    };
    let analysis =
        read_analysis_fields(reader, &mut table, (path, value), templates, "the analysis");
    table.finish(reader);
    Some(BackgroundAnalysis {
        analysis: analysis?,
        starting_step: starting_step?,
    })
}

/// `strategy.blueGreen`. The active listener is the service's `traffic.http`: `activeService`
/// may repeat it (Argo requires the field) but never name another address.
fn read_blue_green<'v>(
    reader: &mut Reader<'_>,
    path: &str,
    value: &'v Value,
    templates: &BTreeMap<String, TemplateInfo>,
    service: &ServiceContext<'_>,
    listeners: &mut Vec<Listener<'v>>,
) -> Option<BlueGreenStrategy> {
    let mut table = reader.table(path, value)?;
    let active = optional(table.get("activeService"), |active_path, active_value| {
        let text = reader.string(active_path, active_value)?;
        let address = read_listen_address(reader, active_path, active_value, text)?;
        let listen = service.listen?;
        let same = listen
            .parse::<SocketAddr>()
            .is_ok_and(|traffic| traffic == address);
        if !same {
            reader.error(
                active_value,
                active_path,
                format!(
                    "must equal traffic.http ({listen:?}): the active service is the \
                     service's traffic listener; leave activeService out or repeat it"
                ),
            );
            return None;
        }
        Some(())
    });
    let preview_listen = match table.get("previewService") {
        None => Some(None),
        Some((preview_path, preview_value)) => reader
            .string(&preview_path, preview_value)
            .and_then(|text| {
                let address = read_listen_address(reader, &preview_path, preview_value, text)?;
                listeners.push(Listener {
                    service_path: format!("{} (previewService)", service.path),
                    address,
                    value: preview_value,
                    path: preview_path.clone(),
                });
                Some(Some(text.to_string()))
            }),
    };
    let preview_replica_count = optional(
        table.get("previewReplicaCount"),
        |count_path, count_value| {
            let count = reader.int::<u32>(count_path, count_value, 1..=MAX_REPLICAS)?;
            match service.replicas {
                Some(replicas) if count > replicas => {
                    reader.error(
                        count_value,
                        count_path,
                        format!("{count} is more than the service's replicas ({replicas})"),
                    );
                    None
                }
                _ => Some(count),
            }
        },
    );
    let auto_promotion_entry = table.get("autoPromotionEnabled");
    let auto_promotion_enabled = match &auto_promotion_entry {
        Some((enabled_path, enabled_value)) => reader.boolean(enabled_path, enabled_value),
        None => Some(true),
    };
    let auto_promotion_seconds = optional(
        table.get("autoPromotionSeconds"),
        |seconds_path, seconds_value| {
            let seconds =
                reader.int::<u32>(seconds_path, seconds_value, 0..=i64::from(u32::MAX))?;
            if auto_promotion_enabled == Some(false) {
                reader.error(
                    seconds_value,
                    seconds_path,
                    "has no effect when autoPromotionEnabled is false: remove one of them",
                );
                return None;
            }
            Some(seconds)
        },
    );
    let pre_promotion_analysis = optional(
        table.get("prePromotionAnalysis"),
        |analysis_path, analysis_value| {
            read_analysis_step(
                reader,
                analysis_path,
                analysis_value,
                templates,
                "the analysis",
            )
        },
    );
    let post_promotion_analysis = optional(
        table.get("postPromotionAnalysis"),
        |analysis_path, analysis_value| {
            read_analysis_step(
                reader,
                analysis_path,
                analysis_value,
                templates,
                "the analysis",
            )
        },
    );
    let scale_down_delay_seconds = match table.get("scaleDownDelaySeconds") {
        Some((delay_path, delay_value)) => {
            reader.int::<u32>(&delay_path, delay_value, 0..=i64::from(u32::MAX))
        }
        None => Some(DEFAULT_SCALE_DOWN_DELAY_SECONDS),
    };
    let abort_scale_down_delay_seconds = match table.get("abortScaleDownDelaySeconds") {
        Some((delay_path, delay_value)) => {
            reader.int::<u32>(&delay_path, delay_value, 0..=i64::from(u32::MAX))
        }
        None => Some(DEFAULT_SCALE_DOWN_DELAY_SECONDS),
    };
    if let Some((steps_path, steps_value)) = table.get("steps") {
        reader.error(
            steps_value,
            &steps_path,
            "blue-green has no steps: use `canary` for a stepwise rollout",
        );
    }
    table.finish(reader);
    active?;
    Some(BlueGreenStrategy {
        preview_listen: preview_listen?,
        preview_replica_count: preview_replica_count?,
        auto_promotion_enabled: auto_promotion_enabled?,
        auto_promotion_seconds: auto_promotion_seconds?,
        pre_promotion_analysis: pre_promotion_analysis?,
        post_promotion_analysis: post_promotion_analysis?,
        scale_down_delay_seconds: scale_down_delay_seconds?,
        abort_scale_down_delay_seconds: abort_scale_down_delay_seconds?,
    })
}

fn read_steps(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
    replicas: Option<u32>,
) -> Option<Vec<CanaryStep>> {
    let elements = reader.array(path, value)?;
    let mut steps = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let step_path = index_path(path, index);
        if let Some(step) = read_step(reader, &step_path, element, templates) {
            steps.push((step, step_path, element));
        }
    }
    let complete = steps.len() == elements.len();
    if let Some(replicas) = replicas {
        check_canary_capacity(reader, replicas, &steps);
    }
    complete.then(|| steps.into_iter().map(|(step, _, _)| step).collect())
}

/// Report the first step after which the canary would take traffic with no instance to serve
/// it. The canary scale follows the weight (`ceil(replicas × weight / 100)`) unless a
/// `setCanaryScale` overrides it, until `matchTrafficWeight` restores the default.
fn check_canary_capacity(
    reader: &mut Reader<'_>,
    replicas: u32,
    steps: &[(CanaryStep, String, &Value)],
) {
    let mut weight_percent: u8 = 0;
    let mut scale: Option<CanaryScale> = None;
    for (step, path, value) in steps {
        match step {
            CanaryStep::SetWeight(weight) => weight_percent = *weight,
            CanaryStep::SetCanaryScale(CanaryScale::MatchTrafficWeight) => scale = None,
            CanaryStep::SetCanaryScale(explicit) => scale = Some(*explicit),
            CanaryStep::Pause { .. } | CanaryStep::Analysis(_) => continue,
        }
        let instances = match scale {
            Some(CanaryScale::Replicas(count)) => u64::from(count),
            Some(CanaryScale::Weight(percent)) => scaled(replicas, percent),
            Some(CanaryScale::MatchTrafficWeight) | None => scaled(replicas, weight_percent),
        };
        if weight_percent > 0 && instances == 0 {
            reader.error(
                value,
                path,
                format!(
                    "the canary would take {weight_percent}% of traffic with 0 instances; \
                     scale the canary above 0 first"
                ),
            );
            return;
        }
    }
}

/// `ceil(replicas × percent / 100)`.
fn scaled(replicas: u32, percent: u8) -> u64 {
    (u64::from(replicas) * u64::from(percent)).div_ceil(MAX_WEIGHT_PERCENT as u64)
}

fn read_step(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
) -> Option<CanaryStep> {
    let (kind, kind_path, kind_value) = one_of(
        reader,
        path,
        value,
        ("step", &STEP_KINDS),
        &UNSUPPORTED_STEP_KINDS,
        |key| format!("`{key}` steps are not supported yet"),
    )?;
    match kind {
        "setWeight" => reader
            .int::<u8>(&kind_path, kind_value, 0..=MAX_WEIGHT_PERCENT)
            .map(CanaryStep::SetWeight),
        "pause" => {
            let mut table = reader.table(&kind_path, kind_value)?;
            let duration = table
                .get("duration")
                .map(|(path, value)| reader.duration(&path, value));
            table.finish(reader);
            match duration {
                None => Some(CanaryStep::Pause { duration: None }),
                Some(duration) => Some(CanaryStep::Pause {
                    duration: Some(duration?),
                }),
            }
        }
        "analysis" => read_analysis_step(reader, &kind_path, kind_value, templates, "the step")
            .map(CanaryStep::Analysis),
        _ => read_canary_scale(reader, &kind_path, kind_value).map(CanaryStep::SetCanaryScale),
    }
}

fn read_canary_scale(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<CanaryScale> {
    let (kind, kind_path, kind_value) = one_of(
        reader,
        path,
        value,
        ("field", &["replicas", "weight", "matchTrafficWeight"]),
        &[],
        |_| String::new(),
    )?;
    match kind {
        "replicas" => reader
            .int::<u32>(&kind_path, kind_value, 0..=MAX_REPLICAS)
            .map(CanaryScale::Replicas),
        "weight" => reader
            .int::<u8>(&kind_path, kind_value, 0..=MAX_WEIGHT_PERCENT)
            .map(CanaryScale::Weight),
        _ => {
            if reader.boolean(&kind_path, kind_value)? {
                Some(CanaryScale::MatchTrafficWeight)
            } else {
                reader.error(kind_value, &kind_path, "must be true when given");
                None
            }
        }
    }
}

fn read_analysis_step(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
    what: &str,
) -> Option<AnalysisStep> {
    let mut table = reader.table(path, value)?;
    let step = read_analysis_fields(reader, &mut table, (path, value), templates, what);
    table.finish(reader);
    step
}

/// `templates` and `args` of an analysis (a step, background analysis, or a blue-green
/// promotion analysis), checked against the templates: each must exist and get every argument
/// it has no default for.
fn read_analysis_fields(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
    (path, value): (&str, &Value),
    templates: &BTreeMap<String, TemplateInfo>,
    what: &str,
) -> Option<AnalysisStep> {
    let names = table
        .required(reader, "templates")
        .and_then(|(path, value)| read_template_refs(reader, &path, value, templates));
    let args = match table.get("args") {
        Some((path, value)) => read_args(reader, &path, value, true).map(|args| {
            args.into_iter()
                .filter_map(|arg| arg.value.map(|value| (arg.name, value)))
                .collect::<BTreeMap<_, _>>()
        }),
        None => Some(BTreeMap::new()),
    };
    let (names, args) = (names?, args?);
    let mut complete = true;
    for name in &names {
        let Some(TemplateInfo {
            args: Some(declared),
        }) = templates.get(name)
        else {
            continue;
        };
        for missing in declared
            .iter()
            .filter(|arg| arg.value.is_none() && !args.contains_key(&arg.name))
        {
            reader.error(
                value,
                path,
                format!(
                    "template `{name}` needs argument `{}`, which {what} does not set in `args`",
                    missing.name
                ),
            );
            complete = false;
        }
    }
    complete.then_some(AnalysisStep {
        templates: names,
        args,
    })
}

fn read_template_refs(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
) -> Option<Vec<String>> {
    let elements = reader.array(path, value)?;
    if elements.is_empty() {
        reader.error(value, path, "must name at least one template");
        return None;
    }
    let known: Vec<&str> = templates.keys().map(String::as_str).collect();
    let mut names = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        let Some(mut table) = reader.table(&element_path, element) else {
            continue;
        };
        let name = table
            .required(reader, "templateName")
            .and_then(|(path, value)| {
                let name = reader.string(&path, value)?;
                if templates.contains_key(name) {
                    return Some(name.to_string());
                }
                let hint = suggest(name, &known)
                    .map(|close| format!(", did you mean `{close}`?"))
                    .unwrap_or_default();
                reader.error(
                    value,
                    &path,
                    format!("no analysis template named `{name}`{hint}"),
                );
                None
            });
        table.finish(reader);
        names.extend(name);
    }
    (names.len() == elements.len()).then_some(names)
}

/// `args = [{ name, value }]`; with `value_required`, every arg must carry a value (a step's
/// args), otherwise the value is a default (a template's args).
fn read_args(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    value_required: bool,
) -> Option<Vec<TemplateArg>> {
    let elements = reader.array(path, value)?;
    let mut args: Vec<TemplateArg> = Vec::with_capacity(elements.len());
    let mut complete = true;
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        let Some(mut table) = reader.table(&element_path, element) else {
            complete = false;
            continue;
        };
        let name = table.required(reader, "name").and_then(|(path, value)| {
            let name = reader.non_empty_string(&path, value)?;
            if args.iter().any(|arg| arg.name == name) {
                reader.error(value, &path, format!("duplicate argument `{name}`"));
                return None;
            }
            Some(name.to_string())
        });
        let arg_value = if value_required {
            table.required(reader, "value").and_then(|(path, value)| {
                reader
                    .string(&path, value)
                    .map(|text| Some(text.to_string()))
            })
        } else {
            match table.get("value") {
                Some((path, value)) => reader
                    .string(&path, value)
                    .map(|text| Some(text.to_string())),
                None => Some(None),
            }
        };
        if let Some((value_from_path, value_from)) = table.get("valueFrom") {
            reader.error(
                value_from,
                &value_from_path,
                "valueFrom is not supported yet",
            );
            complete = false;
        }
        table.finish(reader);
        match (name, arg_value) {
            (Some(name), Some(value)) => args.push(TemplateArg { name, value }),
            _ => complete = false,
        }
    }
    complete.then_some(args)
}

// === analysis templates ===

type Templates = (
    Option<BTreeMap<String, AnalysisTemplate>>,
    BTreeMap<String, TemplateInfo>,
);

fn read_templates(reader: &mut Reader<'_>, path: &str, value: &Value) -> Templates {
    let mut info = BTreeMap::new();
    let Some(elements) = reader.array(path, value) else {
        return (None, info);
    };
    let mut templates = BTreeMap::new();
    let mut complete = true;
    for (index, element) in elements.iter().enumerate() {
        let template_path = index_path(path, index);
        let Some(mut table) = reader.table(&template_path, element) else {
            complete = false;
            continue;
        };
        let name = table.required(reader, "name").and_then(|(path, value)| {
            let name = reader.string(&path, value)?;
            check_name(reader, &path, value, name)?;
            if info.contains_key(name) {
                reader.error(
                    value,
                    &path,
                    format!("duplicate analysis template name `{name}`"),
                );
                return None;
            }
            Some(name.to_string())
        });
        let args = match table.get("args") {
            Some((path, value)) => read_args(reader, &path, value, false),
            None => Some(Vec::new()),
        };
        if let Some(name) = &name {
            info.insert(name.clone(), TemplateInfo { args: args.clone() });
        }
        let mut metrics = table
            .required(reader, "metrics")
            .and_then(|(path, value)| read_metrics(reader, &path, value, args.as_deref()));
        let dry_run = optional(table.get("dryRun"), |path, value| {
            read_metric_rules(reader, path, value, metrics.as_deref(), false)
        });
        let retention = optional(table.get("measurementRetention"), |path, value| {
            read_metric_rules(reader, path, value, metrics.as_deref(), true)
        });
        if let (Some(metrics), Some(dry_run), Some(retention)) =
            (&mut metrics, &dry_run, &retention)
        {
            apply_metric_rules(metrics, dry_run.as_deref(), retention.as_deref());
        }
        let metrics = match (dry_run, retention) {
            (Some(_), Some(_)) => metrics,
            _ => None,
        };
        table.finish(reader);
        match (name, args, metrics) {
            (Some(name), Some(args), Some(metrics)) => {
                templates.insert(
                    name.clone(),
                    AnalysisTemplate {
                        name,
                        args,
                        metrics,
                    },
                );
            }
            _ => complete = false,
        }
    }
    (complete.then_some(templates), info)
}

/// One `dryRun` or `measurementRetention` entry: which metrics it selects, and the limit.
struct MetricRule {
    pattern: MetricPattern,
    limit: Option<u32>,
}

/// The part of Argo's `metricName` regular expressions that edgeroll supports.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MetricPattern {
    /// `.*`: every metric.
    All,
    /// `prefix.*`: every metric whose name starts with the prefix.
    Prefix(String),
    /// A plain name: that metric.
    Exact(String),
}

impl MetricPattern {
    /// Classify `text`, or say why it is not one of the supported forms.
    fn parse(text: &str) -> Result<MetricPattern, String> {
        if text == ".*" {
            return Ok(MetricPattern::All);
        }
        let (stem, prefix) = match text.strip_suffix(".*") {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if stem.is_empty() || stem.contains(REGEX_META) {
            return Err(format!("{text:?} is not supported: {PATTERN_HINT}"));
        }
        Ok(if prefix {
            MetricPattern::Prefix(stem.to_string())
        } else {
            MetricPattern::Exact(stem.to_string())
        })
    }

    /// Whether the whole of `name` matches (Argo's match is unanchored; edgeroll's exact names
    /// are anchored, so a pattern never selects more metrics than it names).
    fn matches(&self, name: &str) -> bool {
        match self {
            MetricPattern::All => true,
            MetricPattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
            MetricPattern::Exact(exact) => name == exact,
        }
    }
}

/// `dryRun = [{ metricName }]` or, `with_limit`, `measurementRetention = [{ metricName, limit }]`.
/// Every pattern must match a metric of the template (as Argo requires); when the metrics are
/// themselves invalid (`None`) that check is skipped.
fn read_metric_rules(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    metrics: Option<&[Metric]>,
    with_limit: bool,
) -> Option<Vec<MetricRule>> {
    let elements = reader.array(path, value)?;
    let mut rules = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        let Some(mut table) = reader.table(&element_path, element) else {
            continue;
        };
        let pattern = table
            .required(reader, "metricName")
            .and_then(|(name_path, name_value)| {
                let text = reader.non_empty_string(&name_path, name_value)?;
                let pattern = MetricPattern::parse(text)
                    .map_err(|message| reader.error(name_value, &name_path, message))
                    .ok()?;
                if let Some(metrics) = metrics {
                    if !metrics.iter().any(|metric| pattern.matches(&metric.name)) {
                        let names: Vec<&str> =
                            metrics.iter().map(|metric| metric.name.as_str()).collect();
                        let hint = match suggest(text, &names) {
                            Some(close) => format!(", did you mean `{close}`?"),
                            None => String::new(),
                        };
                        reader.error(
                            name_value,
                            &name_path,
                            format!("{text:?} matches no metric of this template{hint}"),
                        );
                        return None;
                    }
                }
                Some(pattern)
            });
        let limit = if with_limit {
            table
                .required(reader, "limit")
                .and_then(|(limit_path, limit_value)| {
                    reader.int::<u32>(&limit_path, limit_value, 1..=i64::from(u32::MAX))
                })
                .map(Some)
        } else {
            Some(None)
        };
        table.finish(reader);
        if let (Some(pattern), Some(limit)) = (pattern, limit) {
            rules.push(MetricRule { pattern, limit });
        }
    }
    (rules.len() == elements.len()).then_some(rules)
}

/// Mark the metrics selected by `dry_run` and give those selected by `retention` their limit
/// (the last matching rule wins, as in Argo).
fn apply_metric_rules(
    metrics: &mut [Metric],
    dry_run: Option<&[MetricRule]>,
    retention: Option<&[MetricRule]>,
) {
    for metric in metrics {
        if let Some(rules) = dry_run {
            metric.dry_run = rules.iter().any(|rule| rule.pattern.matches(&metric.name));
        }
        if let Some(rules) = retention {
            if let Some(rule) = rules
                .iter()
                .rev()
                .find(|rule| rule.pattern.matches(&metric.name))
            {
                metric.measurement_retention = rule.limit;
            }
        }
    }
}

fn read_metrics(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    args: Option<&[TemplateArg]>,
) -> Option<Vec<Metric>> {
    let elements = reader.array(path, value)?;
    if elements.is_empty() {
        reader.error(value, path, "must hold at least one metric");
        return None;
    }
    let mut metrics: Vec<Metric> = Vec::with_capacity(elements.len());
    let mut names = BTreeSet::new();
    let mut complete = true;
    for (index, element) in elements.iter().enumerate() {
        let metric_path = index_path(path, index);
        let Some(mut table) = reader.table(&metric_path, element) else {
            complete = false;
            continue;
        };
        let metric = read_metric(reader, &mut table, args, &mut names);
        table.finish(reader);
        match metric {
            Some(metric) => metrics.push(metric),
            None => complete = false,
        }
    }
    complete.then_some(metrics)
}

fn read_metric(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
    args: Option<&[TemplateArg]>,
    names: &mut BTreeSet<String>,
) -> Option<Metric> {
    let name = table.required(reader, "name").and_then(|(path, value)| {
        let name = reader.non_empty_string(&path, value)?;
        if !names.insert(name.to_string()) {
            reader.error(value, &path, format!("duplicate metric name `{name}`"));
            return None;
        }
        Some(name.to_string())
    });
    let interval = optional(table.get("interval"), |path, value| {
        reader.duration(path, value)
    });
    let initial_delay = optional(table.get("initialDelay"), |path, value| {
        reader.duration(path, value)
    });
    let count_entry = table.get("count");
    let count = optional(count_entry.clone(), |path, value| {
        reader.int::<u32>(path, value, 1..=i64::from(u32::MAX))
    });
    if let (Some((count_path, count_value)), Some(Some(count)), Some(None)) =
        (&count_entry, count, interval)
    {
        if count > 1 {
            reader.error(
                count_value,
                count_path,
                "an interval is required when count is above 1",
            );
        }
    }
    let success_condition = optional(table.get("successCondition"), |path, value| {
        read_condition(reader, path, value, args)
    });
    let failure_condition = optional(table.get("failureCondition"), |path, value| {
        read_condition(reader, path, value, args)
    });
    let failure_limit = match table.get("failureLimit") {
        Some((path, value)) => reader.int::<i32>(&path, value, -1..=i64::from(i32::MAX)),
        None => Some(0),
    };
    let inconclusive_limit = match table.get("inconclusiveLimit") {
        Some((path, value)) => reader.int::<u32>(&path, value, 0..=i64::from(u32::MAX)),
        None => Some(0),
    };
    let consecutive_error_limit = match table.get("consecutiveErrorLimit") {
        Some((path, value)) => reader.int::<u32>(&path, value, 0..=i64::from(u32::MAX)),
        None => Some(DEFAULT_CONSECUTIVE_ERROR_LIMIT),
    };
    let consecutive_success_limit = match table.get("consecutiveSuccessLimit") {
        Some((path, value)) => reader.int::<u32>(&path, value, 0..=i64::from(u32::MAX)),
        None => Some(0),
    };
    let wait_for_evidence = optional(table.get("waitForEvidence"), |path, value| {
        read_wait_for_evidence(reader, path, value)
    });
    let provider_entry = table.required(reader, "provider");
    let decides_itself = provider_entry
        .as_ref()
        .is_some_and(|(_, value)| names_self_deciding_provider(value));
    let provider =
        provider_entry.and_then(|(path, value)| read_provider(reader, &path, value, args));
    // The judge and job providers say themselves whether the measurement passed, so their
    // metrics may leave the conditions out and get the obvious ones; every other provider
    // returns a figure that only the user can judge.
    let (success_condition, failure_condition) = match (success_condition, failure_condition) {
        (Some(None), Some(None)) => match &provider {
            Some(Provider::Judge(_)) => (
                Some(Some(JUDGE_CONDITIONS.0.to_string())),
                Some(Some(JUDGE_CONDITIONS.1.to_string())),
            ),
            Some(Provider::Job(_)) => (Some(Some(JOB_SUCCESS_CONDITION.to_string())), Some(None)),
            _ => {
                // An invalid judge or job provider is reported on its own; asking for a
                // condition it does not need would only mislead.
                if !decides_itself {
                    let path = table.path().to_string();
                    reader.error(
                        table.value(),
                        &path,
                        "needs a successCondition or a failureCondition",
                    );
                }
                (Some(None), Some(None))
            }
        },
        conditions => conditions,
    };
    Some(Metric {
        name: name?,
        interval: interval?,
        initial_delay: initial_delay?,
        count: count?,
        success_condition: success_condition?,
        failure_condition: failure_condition?,
        failure_limit: failure_limit?,
        inconclusive_limit: inconclusive_limit?,
        consecutive_error_limit: consecutive_error_limit?,
        consecutive_success_limit: consecutive_success_limit?,
        dry_run: false,
        measurement_retention: None,
        wait_for_evidence: wait_for_evidence?,
        provider: provider?,
    })
}

/// `waitForEvidence`: a duration, where (unlike every other duration) zero is allowed and means
/// "do not wait" — Argo's behaviour, where "no data" counts as Inconclusive at once.
fn read_wait_for_evidence(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<Duration> {
    if is_zero_duration(&value.node) {
        return Some(Duration::ZERO);
    }
    reader.duration(path, value)
}

/// Whether a duration value is zero: `0`, `"0"`, `"0s"`, `"0.0m"`, `"0ms"`…
fn is_zero_duration(node: &Node) -> bool {
    match node {
        Node::Integer(seconds) => *seconds == 0,
        Node::String(text) => {
            let number = text.trim_end_matches(|c: char| c.is_alphabetic() || c == 'µ' || c == 'μ');
            let unit = &text[number.len()..];
            !number.is_empty()
                && number.bytes().all(|byte| byte == b'0' || byte == b'.')
                && number.bytes().any(|byte| byte == b'0')
                && ["", "ns", "us", "µs", "μs", "ms", "s", "m", "h"].contains(&unit)
        }
        _ => false,
    }
}

/// Whether a `provider` table names the judge or the job provider, which need no conditions.
fn names_self_deciding_provider(value: &Value) -> bool {
    matches!(&value.node, Node::Table(entries)
        if entries.iter().any(|entry| entry.key == "judge" || entry.key == "job"))
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
