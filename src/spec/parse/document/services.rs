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
