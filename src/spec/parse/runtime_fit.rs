//! Whether a valid document can run on a site's runtime: a container template (`image`) or a
//! container job needs the docker or containerd runtime, and those runtimes run only container
//! templates. `edgeroll validate` (with the config) and the agent's trust rule `runtime` both
//! ask this, so the answer and its `FILE:LINE:COLUMN` are the same in both places.
//!
//! It reads only the text it is given and decides nothing else about the document.

use std::path::Path;

use super::tree::{Entry, Node, Source, Value};
use super::{detect_format, parse_tree};
use crate::diag::Diagnostic;

/// Every place in the document (`text`, read from `path`) that the runtime `runtime` (`process`,
/// `docker` or `containerd`) cannot run. A document that does not parse yields nothing here:
/// its syntax errors are the parser's to report.
pub fn runtime_fit(path: &Path, text: &str, runtime: &str) -> Vec<Diagnostic> {
    let source = Source::new(path, text, detect_format(text));
    let Ok(root) = parse_tree(&source, 0) else {
        return Vec::new();
    };
    let containers = runtime != "process";
    let mut problems = Vec::new();
    let mut report = |offset: usize, message: String| {
        problems.push(source.diagnostic(offset, message));
    };
    for (index, service) in array(&root, "services").iter().enumerate() {
        let name = string(service, "name").unwrap_or("?");
        let Some(template) = entry(service, "template") else {
            continue;
        };
        match (entry(&template.value, "image"), containers) {
            (Some(image), false) => report(
                image.key_span.start,
                format!(
                    "services[{index}].template.image: service {name} runs a container image, but \
                     this site runs the process runtime: set [runtime] kind = \"docker\" or \
                     \"containerd\" in the agent config, or give the template a `command` instead"
                ),
            ),
            (None, true) => report(
                template.key_span.start,
                format!(
                    "services[{index}].template: service {name} has no `image`, but this site \
                     runs the {runtime} runtime, which runs only containers"
                ),
            ),
            _ => {}
        }
    }
    if !containers {
        for (template_index, template) in array(&root, "analysisTemplates").iter().enumerate() {
            for (metric_index, metric) in array(template, "metrics").iter().enumerate() {
                let image = entry(metric, "provider")
                    .and_then(|provider| entry(&provider.value, "job"))
                    .and_then(|job| entry(&job.value, "image"));
                if let Some(image) = image {
                    report(
                        image.key_span.start,
                        format!(
                            "analysisTemplates[{template_index}].metrics[{metric_index}].provider.job.image: \
                             a container job needs the docker or containerd runtime, and this site \
                             runs the process runtime"
                        ),
                    );
                }
            }
        }
    }
    problems
}

fn entry<'v>(value: &'v Value, key: &str) -> Option<&'v Entry> {
    match &value.node {
        Node::Table(entries) => entries.iter().find(|entry| entry.key == key),
        _ => None,
    }
}

fn array<'v>(value: &'v Value, key: &str) -> &'v [Value] {
    match entry(value, key).map(|entry| &entry.value.node) {
        Some(Node::Array(values)) => values,
        _ => &[],
    }
}

fn string<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    match entry(value, key).map(|entry| &entry.value.node) {
        Some(Node::String(text)) => Some(text),
        _ => None,
    }
}
