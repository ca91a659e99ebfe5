//! One site's page: labels, services, its last document, its counters and its last reports.

use super::*;

// The site page

/// The page of one site: its summary and `reports` (its last ones, in sequence order) at `now`.
pub fn render_site(summary: &SiteSummary, reports: &[StoredReport], now: Timestamp) -> String {
    let standing = Standing::of(summary, now);
    let mut out = String::with_capacity(32 * 1024);
    head(&mut out, &format!("{} · edgeroll hub", summary.site));
    w!(
        out,
        "<header><div class=\"title\"><a class=\"back\" href=\"/\">← fleet</a><h1 \
         id=\"site-name\">{name}</h1><span class=\"pill {class}\">{label}</span></div><div \
         class=\"now\">{now} · refreshes every {REFRESH_SECONDS} s</div></header><main>",
        name = esc(&summary.site),
        class = standing.class(),
        label = standing.label(),
        now = esc(&now.rfc3339()),
    );

    let reasons = attention_reasons(summary);
    if !reasons.is_empty() {
        w!(
            out,
            "<section id=\"needs-a-human\" class=\"alert\"><h2>Needs a human</h2><ul>"
        );
        for reason in &reasons {
            w!(out, "<li>{}</li>", esc(reason));
        }
        w!(out, "</ul></section>");
    }

    // Facts.
    w!(out, "<section class=\"facts\"><dl>");
    fact(
        &mut out,
        "serial",
        &summary
            .serial
            .map_or_else(|| "—".to_owned(), |serial| serial.to_string()),
    );
    fact(&mut out, "last seen", &seen(summary.last_seen, now));
    fact(&mut out, "last poll", &seen(summary.last_poll, now));
    fact(&mut out, "last report", &seen(summary.last_report, now));
    w!(
        out,
        "</dl><div class=\"labels\" id=\"labels\"><h3>Labels</h3>"
    );
    if summary.labels.is_empty() {
        w!(out, "<span class=\"muted\">none</span>");
    }
    for (key, value) in &summary.labels {
        w!(
            out,
            "<span class=\"chip\">{}=<b>{}</b></span>",
            esc(key),
            esc(value)
        );
    }
    w!(out, "</div></section>");

    // Services.
    w!(out, "<section id=\"services\"><h2>Services</h2>");
    if summary.services.is_empty() {
        w!(out, "<p class=\"empty\">No rollout reported yet.</p>");
    } else {
        w!(
            out,
            "<table><thead><tr><th>Service</th><th>Phase</th><th>Stable</th><th>Canary</th><th \
             class=\"num\">Serial</th><th>Last event</th><th>When</th></tr></thead><tbody>"
        );
        for (name, service) in &summary.services {
            w!(
                out,
                "<tr data-service=\"{}\"><td><b>{}</b></td><td><span class=\"phase \
                 phase-{}\">{}</span>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td><b>{}</b><div class=\"message\">{}</div></td><td class=\"ago\" \
                 title=\"{}\">{}</td></tr>",
                esc(name),
                esc(name),
                esc(&css_word(&service.phase)),
                esc(&service.phase),
                service
                    .completion
                    .as_deref()
                    .map_or_else(String::new, |completion| format!(
                        " <span class=\"muted\">{}</span>",
                        esc(completion)
                    )),
                revision(service.stable.as_ref()),
                revision(service.canary.as_ref()),
                service
                    .serial
                    .map_or_else(|| "—".to_owned(), |serial| serial.to_string()),
                esc(&service.last_event),
                esc(&service.message),
                esc(&service.at.rfc3339()),
                esc(&ago(service.at, now)),
            );
        }
        w!(out, "</tbody></table>");
    }
    w!(out, "</section>");

    // The last document and the counters.
    w!(
        out,
        "<section class=\"pair\"><div id=\"document\"><h2>Last document</h2>"
    );
    match &summary.last_document {
        None => w!(out, "<p class=\"empty\">No document outcome reported.</p>"),
        Some(document) => w!(
            out,
            "<p><span class=\"outcome outcome-{}\">{}</span>{}{} <span class=\"ago\" \
             title=\"{}\">{}</span></p><p class=\"message\">{}</p>",
            esc(&css_word(&document.outcome)),
            esc(&document.outcome),
            document
                .serial
                .map_or_else(String::new, |serial| format!(" serial {serial}")),
            document
                .rule
                .as_deref()
                .map_or_else(String::new, |rule| format!(" (rule {})", esc(rule))),
            esc(&document.at.rfc3339()),
            esc(&ago(document.at, now)),
            esc(&document.message),
        ),
    }
    w!(out, "</div><div id=\"counters\"><h2>Counters</h2><dl>");
    fact(&mut out, "reports held", &number_u64(summary.reports));
    fact(&mut out, "high-water mark", &number_u64(summary.high_water));
    fact(&mut out, "missing", &number_u64(summary.missing));
    fact(&mut out, "gaps", &number_u64(summary.gaps));
    fact(&mut out, "lost", &number_u64(summary.lost));
    fact(&mut out, "duplicates", &number_u64(summary.duplicates));
    let dropped = if summary.dropped.is_empty() {
        "0".to_owned()
    } else {
        summary
            .dropped
            .iter()
            .map(|(kind, count)| format!("{kind} {}", number_u64(*count)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    fact(&mut out, "dropped", &dropped);
    w!(out, "</dl></div></section>");

    // The last reports, newest first.
    w!(
        out,
        "<section id=\"reports\"><h2>Last reports <span class=\"count\">{} of {}</span></h2>",
        number(reports.len()),
        number_u64(summary.reports)
    );
    if reports.is_empty() {
        w!(out, "<p class=\"empty\">No reports held.</p>");
    } else {
        w!(
            out,
            "<table class=\"reports\"><thead><tr><th class=\"num\">Seq</th><th>At (site \
             clock)</th><th>Type</th><th>Service</th><th>What</th></tr></thead><tbody>"
        );
        for stored in reports.iter().rev() {
            report_row(&mut out, stored, now);
        }
        w!(out, "</tbody></table>");
    }
    w!(out, "</section></main></body></html>\n");
    out
}

pub(super) fn fact(out: &mut String, term: &str, value: &str) {
    w!(
        out,
        "<div><dt>{}</dt><dd>{}</dd></div>",
        esc(term),
        esc(value)
    );
}

pub(super) fn revision(revision: Option<&RevisionRef>) -> String {
    match revision {
        None => "<span class=\"muted\">—</span>".to_owned(),
        Some(revision) => format!(
            "<span class=\"ver\">{}</span> <span class=\"muted\">r{}</span>",
            esc(&revision.version),
            revision.revision
        ),
    }
}

pub(super) fn report_row(out: &mut String, stored: &StoredReport, now: Timestamp) {
    let report = &stored.report;
    let (kind, service, what) = match &report.body {
        ReportBody::Rollout {
            service,
            kind,
            message,
            phase,
            completion,
            stable,
            canary,
            serial,
        } => {
            let mut what = format!(
                "<b>{}</b> <span class=\"phase phase-{}\">{}</span>",
                esc(kind),
                esc(&css_word(phase)),
                esc(phase)
            );
            if let Some(completion) = completion {
                w!(what, " <span class=\"muted\">{}</span>", esc(completion));
            }
            w!(what, " stable {}", revision(stable.as_ref()));
            if canary.is_some() {
                w!(what, " · canary {}", revision(canary.as_ref()));
            }
            if let Some(serial) = serial {
                w!(what, " · serial {serial}");
            }
            if !message.is_empty() {
                w!(what, "<div class=\"message\">{}</div>", esc(message));
            }
            ("rollout", service.as_str(), what)
        }
        ReportBody::Measurement {
            service,
            run,
            metric,
            phase,
            value,
            message,
        } => {
            let mut what = format!(
                "<b>{}</b> = <code class=\"value\">{}</code> <span class=\"phase \
                 phase-{}\">{}</span> <span class=\"muted\">run {}</span>",
                esc(metric),
                esc(value.as_deref().unwrap_or("—")),
                esc(&css_word(phase)),
                esc(phase),
                esc(run)
            );
            if let Some(message) = message {
                w!(what, "<div class=\"message\">{}</div>", esc(message));
            }
            ("measurement", service.as_str(), what)
        }
        ReportBody::Verdict {
            service,
            run,
            phase,
            message,
        } => (
            "verdict",
            service.as_str(),
            format!(
                "run {} → <span class=\"phase phase-{}\">{}</span><div \
                 class=\"message\">{}</div>",
                esc(run),
                esc(&css_word(phase)),
                esc(phase),
                esc(message)
            ),
        ),
        ReportBody::Document {
            serial,
            outcome,
            rule,
            message,
            key_id,
        } => {
            let mut what = format!(
                "<span class=\"outcome outcome-{}\">{}</span>",
                esc(&css_word(outcome)),
                esc(outcome)
            );
            if let Some(serial) = serial {
                w!(what, " serial {serial}");
            }
            if let Some(rule) = rule {
                w!(what, " (rule {})", esc(rule));
            }
            if let Some(key_id) = key_id {
                w!(what, " <span class=\"muted\">key {}</span>", esc(key_id));
            }
            w!(what, "<div class=\"message\">{}</div>", esc(message));
            ("document", "", what)
        }
    };
    w!(
        out,
        "<tr class=\"report {kind}\" data-seq=\"{seq}\"><td class=\"num\">{seq}</td><td \
         class=\"ago\" title=\"received {received}\">{at}</td><td><span \
         class=\"type\">{kind}</span></td><td>{service}</td><td>{what}</td></tr>",
        seq = report.seq,
        received = esc(&format!(
            "{} ({})",
            stored.received.rfc3339(),
            ago(stored.received, now)
        )),
        at = esc(&report.at.rfc3339()),
        service = esc(service),
    );
}

/// A small page saying what went wrong.
pub(super) fn render_problem(title: &str, detail: &str) -> String {
    let mut out = String::new();
    head(&mut out, &format!("{title} · edgeroll hub"));
    w!(
        out,
        "<header><div class=\"title\"><a class=\"back\" href=\"/\">← fleet</a><h1>{}</h1></div>\
         </header><main><section><p class=\"message\">{}</p></section></main></body></html>\n",
        esc(title),
        esc(detail)
    );
    out
}
