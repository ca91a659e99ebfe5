//! The text view of `edgeroll get`: a summary and a tree of revisions, instances and analysis
//! runs per service, in the manner of `kubectl argo rollouts get rollout`.
//!
//! Pure functions from the wire types to text, so they are tested with snapshots. They must never
//! fetch anything or look at the terminal; `get` decides where and how often to print.

use std::fmt::Write as _;

use crate::api::types::{
    AnalysisRun, Event, Instance, ReportsStatus, ServiceStatus, SourceStatus, Status,
};

/// Width of the label column of the summary (`Name:`, `Status:`, …).
const LABEL_WIDTH: usize = 17;
/// Spaces between the columns of the tree.
const COLUMN_GAP: usize = 2;
/// How many of the latest events are shown.
const EVENTS_SHOWN: usize = 5;
/// How many of the latest measurements of a metric are shown.
const MEASUREMENTS_SHOWN: usize = 3;

/// Render every service of a site.
pub fn render_text(status: &Status) -> String {
    let mut text = String::new();
    push_field(&mut text, "Site:", &status.site);
    if let Some(source) = &status.source {
        push_source(&mut text, source);
    }
    if !status.events.is_empty() {
        push_event_list(&mut text, "Site events:", &status.events);
    }
    if let Some(reports) = &status.reports {
        push_reports(&mut text, reports);
    }
    if status.services.is_empty() {
        text.push_str("\nNo services: no desired document for this site has been applied yet.\n");
    }
    for service in &status.services {
        text.push('\n');
        text.push_str(&render_service_text(service));
    }
    text
}

/// The report outbox: where reports go, what is still owed, how the last delivery went.
fn push_reports(text: &mut String, reports: &ReportsStatus) {
    push_field(text, "Reports:", &reports.url);
    let mut outbox = format!(
        "{} undelivered ({} of {} bytes)",
        reports.depth, reports.bytes, reports.max_bytes
    );
    if let (Some(seq), Some(at)) = (reports.oldest_seq, &reports.oldest_at) {
        let _ = write!(outbox, ", oldest #{seq} from {at}");
    }
    push_field(text, "  Outbox:", &outbox);
    push_field(
        text,
        "  Acknowledged:",
        &format!("up to #{} of #{}", reports.acked, reports.last_seq),
    );
    if let Some(at) = &reports.last_attempt_at {
        let verdict = if reports.last_ok { "ok" } else { "failed" };
        let result = reports.last_result.as_deref().unwrap_or("");
        push_field(
            text,
            "  LastDelivery:",
            &format!("{at} {verdict}: {result}"),
        );
    }
    if !reports.last_ok {
        if let Some(at) = &reports.last_success_at {
            push_field(text, "  LastSuccess:", at);
        }
    }
    if !reports.dropped.is_empty() {
        let dropped: Vec<String> = reports
            .dropped
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        push_field(
            text,
            "  Dropped:",
            &format!("{} (outbox full)", dropped.join(", ")),
        );
    }
}

/// Render one service: summary, tree, latest events.
pub fn render_service_text(service: &ServiceStatus) -> String {
    let mut text = String::new();
    push_summary(&mut text, service);
    text.push('\n');
    text.push_str(&render_table(&tree(service)));
    push_events(&mut text, service);
    text
}

/// The `Name:` … `Versions:` block.
fn push_summary(text: &mut String, service: &ServiceStatus) {
    push_field(text, "Name:", &service.name);
    push_field(text, "Status:", &with_icon(&service.phase));
    if !service.message.is_empty() {
        push_field(text, "Message:", &service.message);
    }
    if let Some(completion) = &service.completion {
        push_field(text, "Completion:", completion);
    }
    let canary = is_canary(service);
    push_field(
        text,
        "Strategy:",
        if canary { "Canary" } else { "BlueGreen" },
    );
    if let Some(step) = service.step {
        let shown = (step.index + 1).min(step.count);
        push_field(text, "  Step:", &format!("{shown}/{}", step.count));
        if let Some(ends_at) = &service.pause_ends_at {
            push_field(text, "  PauseEnds:", ends_at);
        }
    }
    if canary {
        push_field(
            text,
            "  Weight:",
            &format!(
                "canary {}%, stable {}%",
                service.weights.canary, service.weights.stable
            ),
        );
    }
    let (stable_role, canary_role) = role_names(service);
    let mut versions = Vec::new();
    if let Some(stable) = &service.stable {
        versions.push(format!(
            "{} ({stable_role}, revision {})",
            stable.version, stable.revision
        ));
    }
    if let Some(canary) = &service.canary {
        versions.push(format!(
            "{} ({canary_role}, revision {})",
            canary.version, canary.revision
        ));
    }
    if versions.is_empty() {
        versions.push("-".to_owned());
    }
    for (index, version) in versions.iter().enumerate() {
        push_field(text, if index == 0 { "Versions:" } else { "" }, version);
    }
    let ready = service.instances.iter().filter(|i| i.ready).count();
    push_field(
        text,
        "Instances:",
        &format!("{} ({ready} ready)", service.instances.len()),
    );
    if let Some(image) = &service.image {
        push_field(text, "Image:", &image_line(image));
    }
}

/// `registry/x:2.0 for 2.0.0: Pulling 45.3 of 120.0 MB, 2 failed attempts (last: …)`.
fn image_line(image: &crate::api::types::ImageStatus) -> String {
    let megabytes = |bytes: u64| {
        // Display only: MB with one decimal.
        #[allow(clippy::cast_precision_loss)]
        let value = bytes as f64 / 1e6;
        format!("{value:.1}")
    };
    let mut line = format!("{} for {}: {}", image.image, image.version, image.phase);
    if image.done_bytes > 0 || image.total_bytes.is_some() {
        match image.total_bytes {
            Some(total) => {
                let _ = write!(
                    line,
                    " {} of {} MB",
                    megabytes(image.done_bytes),
                    megabytes(total)
                );
            }
            None => {
                let _ = write!(line, " {} MB", megabytes(image.done_bytes));
            }
        }
    }
    if image.failures > 0 {
        let noun = if image.failures == 1 {
            "failed attempt"
        } else {
            "failed attempts"
        };
        let _ = write!(line, ", {} {noun}", image.failures);
        if let Some(error) = &image.last_error {
            let _ = write!(line, " (last: {error})");
        }
    }
    line
}

/// One `Label:   value` line.
fn push_field(text: &mut String, label: &str, value: &str) {
    let _ = writeln!(text, "{label:<LABEL_WIDTH$}{value}");
}

/// Whether the service uses the canary strategy (anything but blue-green is shown as canary).
fn is_canary(service: &ServiceStatus) -> bool {
    service.strategy != "blueGreen"
}

/// The names of the two roles: `stable`/`canary`, or `active`/`preview` for blue-green.
fn role_names(service: &ServiceStatus) -> (&'static str, &'static str) {
    if is_canary(service) {
        ("stable", "canary")
    } else {
        ("active", "preview")
    }
}

/// A status word with its icon, e.g. `✔ Healthy`.
fn with_icon(phase: &str) -> String {
    format!("{} {phase}", icon(phase))
}

/// The icon of a service, revision, analysis or measurement phase.
fn icon(phase: &str) -> &'static str {
    match phase {
        "Healthy" | "Successful" | "Ready" => "✔",
        "Progressing" | "Running" | "Pending" | "NotReady" => "◌",
        "Paused" => "॥",
        "Degraded" | "Failed" => "✖",
        "Error" => "⚠",
        "Inconclusive" => "?",
        _ => "•",
    }
}

// === The tree ===

/// One row of the tree and the rows under it.
#[derive(Debug)]
struct Node {
    /// Icon and name, e.g. `# revision:4 2.5.0`.
    name: String,
    /// `Service`, `Revision`, `Instance`, `AnalysisRun`, `Metric`.
    kind: &'static str,
    /// Icon and status word.
    status: String,
    /// Anything else worth a glance.
    info: String,
    /// Rows under this one.
    children: Vec<Node>,
}

/// A revision with the instances that run it.
#[derive(Debug)]
struct RevisionGroup<'a> {
    /// The revision number, when known.
    revision: Option<u64>,
    /// Version label.
    version: String,
    /// `canary`, `stable`, … or empty for a revision kept for undo.
    role: &'static str,
    /// Its instances.
    instances: Vec<&'a Instance>,
}

/// The tree of one service: revisions newest first with their instances, then analysis runs.
fn tree(service: &ServiceStatus) -> Node {
    let mut children: Vec<Node> = revision_groups(service)
        .into_iter()
        .map(revision_node)
        .collect();
    children.extend(service.analysis_runs.iter().map(analysis_node));
    Node {
        name: format!("⟳ {}", service.name),
        kind: "Service",
        status: with_icon(&service.phase),
        info: String::new(),
        children,
    }
}

/// Group the instances by revision.
fn revision_groups(service: &ServiceStatus) -> Vec<RevisionGroup<'_>> {
    let (stable_role, canary_role) = role_names(service);
    let mut groups: Vec<RevisionGroup<'_>> = Vec::new();
    if let Some(canary) = &service.canary {
        groups.push(RevisionGroup {
            revision: Some(canary.revision),
            version: canary.version.clone(),
            role: canary_role,
            instances: Vec::new(),
        });
    }
    if let Some(stable) = &service.stable {
        groups.push(RevisionGroup {
            revision: Some(stable.revision),
            version: stable.version.clone(),
            role: stable_role,
            instances: Vec::new(),
        });
    }
    for kept in &service.revisions {
        if !groups.iter().any(|g| g.revision == Some(kept.revision)) {
            groups.push(RevisionGroup {
                revision: Some(kept.revision),
                version: kept.version.clone(),
                role: "",
                instances: Vec::new(),
            });
        }
    }
    for instance in &service.instances {
        let wanted_role = match instance.role.as_str() {
            "canary" | "preview" => Some(canary_role),
            "stable" | "active" => Some(stable_role),
            _ => None,
        };
        let group = match wanted_role {
            Some(role) => groups.iter_mut().find(|g| g.role == role),
            // Instances being scaled down belong to whichever kept revision has their version.
            None => groups
                .iter_mut()
                .find(|g| (g.role.is_empty() || g.role == "old") && g.version == instance.version),
        };
        match group {
            Some(group) => {
                if wanted_role.is_none() {
                    group.role = "old";
                }
                group.instances.push(instance);
            }
            None => groups.push(RevisionGroup {
                revision: None,
                version: instance.version.clone(),
                role: if wanted_role.is_some() { "" } else { "old" },
                instances: vec![instance],
            }),
        }
    }
    // Newest first, as in `kubectl argo rollouts get`; groups without a number go last.
    groups.sort_by_key(|group| std::cmp::Reverse(group.revision));
    groups
}

/// The row of one revision and its instances.
fn revision_node(group: RevisionGroup<'_>) -> Node {
    let name = match group.revision {
        Some(revision) => format!("# revision:{revision} {}", group.version),
        None => format!("# {}", group.version),
    };
    let status = if group.instances.is_empty() {
        "• ScaledDown".to_owned()
    } else if group.instances.iter().all(|i| i.ready) {
        with_icon("Healthy")
    } else {
        with_icon("Progressing")
    };
    let children = group
        .instances
        .iter()
        .map(|instance| {
            let mut info = instance.address.clone();
            if instance.restarts > 0 {
                let noun = if instance.restarts == 1 {
                    "restart"
                } else {
                    "restarts"
                };
                let _ = write!(info, ", {} {noun}", instance.restarts);
            }
            if !instance.logs.is_empty() {
                let _ = write!(info, ", logs: {}", instance.logs);
            }
            Node {
                name: format!("□ {}", instance.id),
                kind: "Instance",
                status: with_icon(if instance.ready { "Ready" } else { "NotReady" }),
                info,
                children: Vec::new(),
            }
        })
        .collect();
    Node {
        name,
        kind: "Revision",
        status,
        info: group.role.to_owned(),
        children,
    }
}

/// The row of one analysis run and its metrics with their latest measurements.
fn analysis_node(run: &AnalysisRun) -> Node {
    let children = run
        .metrics
        .iter()
        .map(|metric| {
            let skip = metric.measurements.len().saturating_sub(MEASUREMENTS_SHOWN);
            let latest: Vec<String> = metric.measurements[skip..]
                .iter()
                .map(|m| {
                    let shown = m.value.as_deref().or(m.message.as_deref()).unwrap_or("-");
                    format!("{} {shown}", icon(&m.phase))
                })
                .collect();
            // What was asked and why the metric stands where it does, so a verdict is never
            // a bare icon.
            let last = metric.measurements.last();
            let mut details = Vec::new();
            if let Some(query) = last.and_then(|m| m.query.as_deref()) {
                details.push(("query", query.to_owned()));
            }
            if let Some(message) = metric
                .message
                .as_deref()
                .or_else(|| last.and_then(|m| m.message.as_deref()))
            {
                details.push(("why", message.to_owned()));
            }
            Node {
                name: format!("▪ {}", metric.name),
                kind: "Metric",
                status: with_icon(&metric.phase),
                info: latest.join(" "),
                children: details
                    .into_iter()
                    .map(|(label, text)| Node {
                        name: label.to_owned(),
                        kind: "",
                        status: String::new(),
                        info: text,
                        children: Vec::new(),
                    })
                    .collect(),
            }
        })
        .collect();
    Node {
        name: format!("α {}", run.name),
        kind: "AnalysisRun",
        status: with_icon(&run.phase),
        info: run.message.clone().unwrap_or_default(),
        children,
    }
}

/// One flattened row: the tree prefix and name, kind, status, info.
type Row = (String, String, String, String);

/// Flatten `node` into rows with box-drawing prefixes.
fn flatten(node: &Node, prefix: &str, branch: &str, rows: &mut Vec<Row>) {
    rows.push((
        format!("{prefix}{branch}{}", node.name),
        node.kind.to_owned(),
        node.status.clone(),
        node.info.clone(),
    ));
    // Children of the root hang directly under it; deeper ones continue the parent's line.
    let child_prefix = match branch {
        "" => String::new(),
        "├──" => format!("{prefix}│  "),
        _ => format!("{prefix}   "),
    };
    for (index, child) in node.children.iter().enumerate() {
        let last = index + 1 == node.children.len();
        flatten(child, &child_prefix, if last { "└──" } else { "├──" }, rows);
    }
}

/// The tree as aligned columns under a `NAME KIND STATUS INFO` header.
fn render_table(root: &Node) -> String {
    let mut rows = vec![(
        "NAME".to_owned(),
        "KIND".to_owned(),
        "STATUS".to_owned(),
        "INFO".to_owned(),
    )];
    flatten(root, "", "", &mut rows);
    let width = |pick: fn(&Row) -> &String| {
        rows.iter()
            .map(|row| pick(row).chars().count())
            .max()
            .unwrap_or(0)
            + COLUMN_GAP
    };
    let name_width = width(|row| &row.0);
    let kind_width = width(|row| &row.1);
    let status_width = width(|row| &row.2);
    let mut text = String::new();
    for (name, kind, status, info) in &rows {
        let line = format!(
            "{}{}{}{info}",
            pad(name, name_width),
            pad(kind, kind_width),
            pad(status, status_width)
        );
        let _ = writeln!(text, "{}", line.trim_end());
    }
    text
}

/// `text` padded with spaces to `width` characters (every glyph used here is one column wide).
fn pad(text: &str, width: usize) -> String {
    let fill = width.saturating_sub(text.chars().count());
    format!("{text}{}", " ".repeat(fill))
}

/// The desired source: where the document comes from and what the last pull gave.
fn push_source(text: &mut String, source: &SourceStatus) {
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    push_field(text, "Source:", &source.url);
    push_field(
        text,
        "  Last attempt:",
        &format!("{}  {}", or_dash(&source.last_attempt), source.last_result),
    );
    push_field(text, "  Last success:", &or_dash(&source.last_success));
    push_field(
        text,
        "  Serial:",
        &source
            .serial
            .map_or_else(|| "-".to_owned(), |serial| serial.to_string()),
    );
    push_field(text, "  ETag:", &or_dash(&source.etag));
    push_field(
        text,
        "  Signed by:",
        &source
            .key_id
            .as_ref()
            .map_or_else(|| "unsigned".to_owned(), |key| format!("key {key}")),
    );
    let expires = match (&source.expires, source.stale) {
        (Some(at), true) => {
            format!("{at}  STALE: expired; it keeps running, no new rollout starts")
        }
        (Some(at), false) => at.clone(),
        (None, _) => "never".to_owned(),
    };
    push_field(text, "  Expires:", &expires);
}

/// The latest events, oldest first.
fn push_events(text: &mut String, service: &ServiceStatus) {
    push_event_list(text, "Events:", &service.events);
}

/// The latest of `events` under `title`, oldest first.
fn push_event_list(text: &mut String, title: &str, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    let shown = &events[skip..];
    let kind_width = shown.iter().map(|e| e.kind.len()).max().unwrap_or(0);
    let _ = writeln!(text, "\n{title}");
    for event in shown {
        let _ = writeln!(
            text,
            "  {}  {:<kind_width$}  {}",
            event.at, event.kind, event.message
        );
    }
}

#[cfg(test)]
mod tests;
