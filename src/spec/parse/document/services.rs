//! Services: names, listeners (and their conflicts across services), the instance template,
//! command, environment and readiness check. Nothing here reads files.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;

pub(super) fn read_services(
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
pub(super) fn check_listeners(reader: &mut Reader<'_>, listeners: &[Listener<'_>]) {
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

pub(super) fn read_service<'v>(
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
pub(super) fn check_name(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    name: &str,
) -> Option<()> {
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

pub(super) fn read_traffic<'v>(
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

pub(super) fn read_listen_address(
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

pub(super) fn read_template(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<Template> {
    let mut table = reader.table(path, value)?;
    let version = table
        .required(reader, "version")
        .and_then(|(path, value)| reader.non_empty_string(&path, value).map(str::to_string));
    let image = table.get("image");
    // A container's command replaces the image's entrypoint and may be left out; a process
    // needs one.
    let command_field = if image.is_some() {
        table.get("command")
    } else {
        table.required(reader, "command")
    };
    let command = command_field.map_or(Some(Vec::new()), |(path, value)| {
        read_command(reader, &path, value)
    });
    let args = match table.get("args") {
        Some((path, value)) => read_args(reader, &path, value),
        None => Some(Vec::new()),
    };
    let env = match table.get("env") {
        Some((path, value)) => read_env(reader, &path, value),
        None => Some(BTreeMap::new()),
    };
    let readiness = match table.get("readiness") {
        Some((path, value)) => read_readiness(reader, &path, value),
        None => Some(Readiness::Tcp),
    };
    let stop_signal = match table.get("stopSignal") {
        Some((path, value)) => read_stop_signal(reader, &path, value).map(Some),
        None => Some(None),
    };
    let container_fields = ["imageArchive", "pullPolicy", "resources", "args"];
    let container = match image {
        Some((image_path, image_value)) => {
            read_container(reader, &mut table, &image_path, image_value).map(Some)
        }
        None => {
            // Container fields without an image: a process template that half-became a
            // container one (or the other way round). Say which field does not belong.
            for key in container_fields {
                if let Some((field, value)) = table.get(key) {
                    reader.error(
                        value,
                        &field,
                        "is a container field, but the template has no `image`: add `image` to \
                         run a container, or remove it for the process runtime",
                    );
                }
            }
            Some(None)
        }
    };
    table.finish(reader);
    Some(Template {
        version: version?,
        command: command?,
        args: args?,
        env: env?,
        readiness: readiness?,
        stop_signal: stop_signal?,
        container: container?,
    })
}

/// `image` and the fields that go with it.
fn read_container(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
    image_path: &str,
    image_value: &Value,
) -> Option<ContainerSpec> {
    let image = reader
        .non_empty_string(image_path, image_value)
        .and_then(|image| {
            if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                reader.error(
                    image_value,
                    image_path,
                    format!("{image:?} is not an image reference such as \"registry.example.com/app:1.2\""),
                );
                None
            } else {
                Some(image.to_string())
            }
        });
    let image_archive = match table.get("imageArchive") {
        Some((path, value)) => reader.non_empty_string(&path, value).and_then(|text| {
            let archive = std::path::PathBuf::from(text);
            if archive.is_absolute() {
                Some(Some(archive))
            } else {
                reader.error(
                    value,
                    &path,
                    format!("{text:?} must be an absolute path (the agent's working directory is not yours)"),
                );
                None
            }
        }),
        None => Some(None),
    };
    let pull_policy = match table.get("pullPolicy") {
        Some((path, value)) => reader.string(&path, value).and_then(|text| match text {
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Always" => Some(PullPolicy::Always),
            "Never" => Some(PullPolicy::Never),
            other => {
                reader.error(
                    value,
                    &path,
                    format!("unknown pullPolicy `{other}`, expected IfNotPresent, Always or Never"),
                );
                None
            }
        }),
        None => Some(PullPolicy::IfNotPresent),
    };
    let (cpu_millis, memory_bytes) = match table.get("resources") {
        Some((path, value)) => read_resources(reader, &path, value)?,
        None => (None, None),
    };
    Some(ContainerSpec {
        image: image?,
        image_archive: image_archive?,
        pull_policy: pull_policy?,
        cpu_millis,
        memory_bytes,
    })
}

/// `resources = { cpus = 0.5, memory = "256Mi" }`.
fn read_resources(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<(Option<u32>, Option<u64>)> {
    let mut table = reader.table(path, value)?;
    let cpus = match table.get("cpus") {
        Some((path, value)) => {
            let cpus = match value.node {
                #[allow(clippy::cast_precision_loss)]
                Node::Integer(integer) => Some(integer as f64),
                Node::Float(float) => Some(float),
                _ => None,
            };
            match cpus {
                Some(cpus) if (0.001..=1024.0).contains(&cpus) => {
                    // In range, so the rounded product fits.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let millis = (cpus * 1000.0).round() as u32;
                    Some(Some(millis))
                }
                _ => {
                    reader.error(
                        value,
                        &path,
                        "must be a number of CPUs from 0.001 to 1024, e.g. 0.5",
                    );
                    None
                }
            }
        }
        None => Some(None),
    };
    let memory = match table.get("memory") {
        Some((path, value)) => match &value.node {
            Node::Integer(bytes) if *bytes >= MIN_MEMORY_BYTES => Some(u64::try_from(*bytes).ok()),
            Node::String(text) => match parse_bytes(text) {
                Some(bytes) if i128::from(bytes) >= MIN_MEMORY_BYTES => Some(Some(bytes)),
                _ => {
                    reader.error(
                        value,
                        &path,
                        format!("{text:?} is not a memory size of at least 6Mi such as \"256Mi\" or \"1G\""),
                    );
                    None
                }
            },
            _ => {
                reader.error(
                    value,
                    &path,
                    "must be a memory size of at least 6Mi such as \"256Mi\" (or bytes)",
                );
                None
            }
        },
        None => Some(None),
    };
    table.finish(reader);
    Some((cpus?, memory?))
}

/// The least memory limit the engines accept (Docker refuses less than 6 MiB).
const MIN_MEMORY_BYTES: i128 = 6 * 1024 * 1024;

/// `256Mi`, `1Gi`, `512M`, `1G`, `64Ki`, `65536`.
pub(in crate::spec::parse) fn parse_bytes(text: &str) -> Option<u64> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let number: u64 = digits.parse().ok()?;
    let factor: u64 = match unit {
        "" | "B" => 1,
        "K" | "k" | "KB" | "kB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

fn read_stop_signal(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<StopSignal> {
    let text = reader.string(path, value)?;
    match StopSignal::parse(text) {
        Some(signal) => Some(signal),
        None => {
            let names: Vec<&str> = StopSignal::ALL.iter().map(|(_, name)| *name).collect();
            reader.error(
                value,
                path,
                format!(
                    "unknown stopSignal `{text}`, expected one of {}",
                    names.join(", ")
                ),
            );
            None
        }
    }
}

/// `args`: strings, none with NUL.
fn read_args(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<Vec<String>> {
    let elements = reader.array(path, value)?;
    let mut args = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        if let Some(argument) = reader.string(&element_path, element) {
            if argument.contains('\0') {
                reader.error(element, &element_path, "must not contain a NUL character");
            } else {
                args.push(argument.to_string());
            }
        }
    }
    (args.len() == elements.len()).then_some(args)
}

pub(in crate::spec::parse) fn read_command(
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

pub(super) fn read_env(
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

pub(super) fn read_readiness(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<Readiness> {
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
