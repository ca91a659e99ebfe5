//! The fleet page's HTML: the tiles, each plan with its waves as bars, the sites that need a
//! human, and the sites table (worst first, bounded).

use super::*;

// The fleet page

/// The fleet page of `plans` and `sites` at `now`, unfiltered.
pub fn render_fleet(plans: &[PlanView], sites: &[SiteSummary], now: Timestamp) -> String {
    render_fleet_matching(plans, sites, "", now)
}

/// The fleet page whose sites table shows only the sites whose name contains `filter`
/// (case-insensitive; empty: every site). Plans, counts and the "needs a human" list are always
/// of the whole fleet.
pub fn render_fleet_matching(
    plans: &[PlanView],
    sites: &[SiteSummary],
    filter: &str,
    now: Timestamp,
) -> String {
    let mut ranked: Vec<(Standing, &SiteSummary)> = sites
        .iter()
        .map(|summary| (Standing::of(summary, now), summary))
        .collect();
    ranked.sort_unstable_by(|(a, left), (b, right)| a.cmp(b).then(left.site.cmp(&right.site)));
    let count = |standing: Standing| ranked.iter().filter(|(s, _)| *s == standing).count();

    let mut out = String::with_capacity(64 * 1024);
    head(&mut out, "fleet · edgeroll hub");
    w!(
        out,
        "<header><div class=\"title\"><h1>edgeroll hub</h1><span class=\"sub\">the fleet at a \
         glance</span></div><div class=\"now\">{} · refreshes every {REFRESH_SECONDS} s</div>\
         </header><main>",
        esc(&now.rfc3339())
    );

    // The tiles.
    w!(out, "<section class=\"tiles\" id=\"counts\">");
    tile(&mut out, "sites", sites.len(), "");
    tile(&mut out, "healthy", count(Standing::Healthy), "good");
    tile(&mut out, "in progress", count(Standing::Moving), "busy");
    tile(
        &mut out,
        "need a human",
        count(Standing::NeedsHuman),
        if count(Standing::NeedsHuman) > 0 {
            "bad"
        } else {
            ""
        },
    );
    tile(
        &mut out,
        "silent > 10 min",
        count(Standing::Silent),
        "quiet",
    );
    tile(&mut out, "plans", plans.len(), "");
    w!(out, "</section>");

    // The plans.
    w!(out, "<section id=\"plans\"><h2>Plans</h2>");
    if plans.is_empty() {
        w!(
            out,
            "<p class=\"empty\">No fleet plans. A <code>*.plan.toml</code> in the hub's \
             documents directory moves a release wave by wave.</p>"
        );
    }
    for plan in plans {
        render_plan(&mut out, plan, now);
    }
    w!(out, "</section>");

    // Needs a human.
    let stopped: Vec<&PlanView> = plans
        .iter()
        .filter(|plan| plan.phase == PlanPhase::Stopped)
        .collect();
    let attention: Vec<&SiteSummary> = ranked
        .iter()
        .take_while(|(standing, _)| *standing == Standing::NeedsHuman)
        .map(|(_, summary)| *summary)
        .collect();
    let total = stopped.len() + attention.len();
    w!(
        out,
        "<section id=\"needs-a-human\"><h2>Needs a human <span class=\"count\">{}</span></h2>",
        number(total)
    );
    if total == 0 {
        w!(out, "<p class=\"empty\">Nothing needs a human.</p>");
    } else {
        w!(out, "<ul class=\"attention\">");
        for plan in &stopped {
            w!(
                out,
                "<li class=\"plan-stopped\" data-plan=\"{name}\"><span class=\"pill bad\">plan \
                 stopped</span> <a href=\"#plan-{anchor}\"><b>{name}</b></a> <span \
                 class=\"reason\">{message}</span></li>",
                name = esc(&plan.name),
                anchor = esc(&percent_encode(&plan.name)),
                message = esc(&plan.message),
            );
        }
        for summary in attention.iter().take(MAX_ATTENTION_ROWS) {
            w!(
                out,
                "<li class=\"site\" data-site=\"{name}\"><span class=\"pill bad\">site</span> \
                 <a href=\"{href}\"><b>{name}</b></a> <span class=\"reason\">{reasons}</span> \
                 <span class=\"ago\">{ago}</span></li>",
                name = esc(&summary.site),
                href = esc(&site_href(&summary.site)),
                reasons = esc(&attention_reasons(summary).join("; ")),
                ago = esc(&seen(summary.last_seen, now)),
            );
        }
        w!(out, "</ul>");
        if attention.len() > MAX_ATTENTION_ROWS {
            w!(
                out,
                "<p class=\"more\">and {} more sites that need a human.</p>",
                number(attention.len() - MAX_ATTENTION_ROWS)
            );
        }
    }
    w!(out, "</section>");

    // The sites.
    let needle = filter.trim().to_lowercase();
    let matching: Vec<&(Standing, &SiteSummary)> = ranked
        .iter()
        .filter(|(_, summary)| needle.is_empty() || summary.site.to_lowercase().contains(&needle))
        .collect();
    w!(
        out,
        "<section id=\"sites\"><div class=\"section-head\"><h2>Sites <span \
         class=\"count\">{}</span></h2><form method=\"get\" action=\"/\"><input type=\"search\" \
         name=\"q\" value=\"{}\" placeholder=\"filter by name\" aria-label=\"filter sites by \
         name\"><button type=\"submit\">Filter</button>{}</form></div>",
        number(matching.len()),
        esc(filter),
        if filter.is_empty() {
            ""
        } else {
            " <a class=\"clear\" href=\"/\">clear</a>"
        }
    );
    if matching.is_empty() {
        if sites.is_empty() {
            w!(
                out,
                "<p class=\"empty\">No site has reported or polled yet.</p>"
            );
        } else {
            w!(
                out,
                "<p class=\"empty\">No site name contains “{}”.</p>",
                esc(filter)
            );
        }
    } else {
        w!(
            out,
            "<table class=\"sites\"><thead><tr><th>Site</th><th>State</th><th>Services \
             (stable · canary · phase)</th><th class=\"num\">Serial</th><th>Last \
             seen</th></tr></thead><tbody>"
        );
        for (standing, summary) in matching.iter().take(MAX_SITE_ROWS) {
            site_row(&mut out, *standing, summary, now);
        }
        w!(out, "</tbody></table>");
        if matching.len() > MAX_SITE_ROWS {
            w!(
                out,
                "<p class=\"more\" id=\"more-sites\">{} more sites not shown (the table shows \
                 the {MAX_SITE_ROWS} that need attention most); filter by name to find one.</p>",
                number(matching.len() - MAX_SITE_ROWS)
            );
        }
    }
    w!(out, "</section></main></body></html>\n");
    out
}

pub(super) fn tile(out: &mut String, label: &str, value: usize, class: &str) {
    w!(
        out,
        "<div class=\"tile {class}\"><div class=\"value\">{}</div><div \
         class=\"label\">{label}</div></div>",
        number(value)
    );
}

pub(super) fn site_row(
    out: &mut String,
    standing: Standing,
    summary: &SiteSummary,
    now: Timestamp,
) {
    w!(
        out,
        "<tr class=\"site {class}\" data-site=\"{name}\"><td class=\"name\"><a \
         href=\"{href}\">{name}</a></td><td><span class=\"pill {class}\">{label}</span></td><td>",
        class = standing.class(),
        name = esc(&summary.site),
        href = esc(&site_href(&summary.site)),
        label = standing.label(),
    );
    if summary.services.is_empty() {
        w!(out, "<span class=\"muted\">no rollout reported</span>");
    }
    for (name, service) in &summary.services {
        w!(
            out,
            "<div class=\"svc\"><span class=\"svc-name\">{}</span> {} <span class=\"phase \
             phase-{}\">{}</span></div>",
            esc(name),
            versions(service),
            esc(&css_word(&service.phase)),
            esc(&service.phase),
        );
    }
    w!(
        out,
        "</td><td class=\"num\">{}</td><td class=\"ago\" title=\"{}\">{}</td></tr>",
        summary
            .serial
            .map_or_else(|| "—".to_owned(), |serial| serial.to_string()),
        summary
            .last_seen
            .map_or_else(String::new, |seen| esc(&seen.rfc3339()).into_owned()),
        esc(&seen(summary.last_seen, now)),
    );
}

/// `2.4.0 · canary 2.5.0` (escaped).
pub(super) fn versions(service: &ServiceSummary) -> String {
    let mut text = match &service.stable {
        Some(stable) => format!("<span class=\"ver\">{}</span>", esc(&stable.version)),
        None => "<span class=\"muted\">no stable</span>".to_owned(),
    };
    if let Some(canary) = &service.canary {
        w!(
            text,
            " · canary <span class=\"ver canary\">{}</span>",
            esc(&canary.version)
        );
    }
    text
}

pub(super) fn render_plan(out: &mut String, plan: &PlanView, now: Timestamp) {
    let phase = format!("{:?}", plan.phase);
    w!(
        out,
        "<article class=\"plan\" id=\"plan-{anchor}\" data-plan=\"{name}\"><div \
         class=\"plan-head\"><h3>{name}</h3><span class=\"pill plan-{phase}\">{phase}</span>",
        anchor = esc(&percent_encode(&plan.name)),
        name = esc(&plan.name),
    );
    for (service, version) in &plan.release {
        w!(
            out,
            "<span class=\"release\">{} <span class=\"ver\">{}</span></span>",
            esc(service),
            esc(version)
        );
    }
    w!(
        out,
        "<span class=\"file\">{}</span></div><p class=\"message\">{}</p><table \
         class=\"waves\"><tbody>",
        esc(&plan.file),
        esc(&plan.message)
    );
    for (index, wave) in plan.waves.iter().enumerate() {
        render_wave(out, wave, index == plan.current_wave, now);
    }
    w!(out, "</tbody></table>");
    if !plan.events.is_empty() {
        w!(
            out,
            "<details class=\"events\"><summary>last events</summary><ul>"
        );
        for event in plan.events.iter().rev().take(PLAN_EVENTS_SHOWN) {
            w!(
                out,
                "<li><span class=\"ago\" title=\"{}\">{}</span> <b>{}</b> {}</li>",
                esc(&event.at.rfc3339()),
                esc(&ago(event.at, now)),
                esc(&event.kind),
                esc(&event.message)
            );
        }
        w!(out, "</ul></details>");
    }
    w!(out, "</article>");
}

/// The segments of a wave's bar, in order: (class, label, count).
pub(super) fn segments(counts: &StateCounts) -> [(&'static str, &'static str, u64); 5] {
    [
        ("healthy", "healthy", counts.healthy),
        ("progressing", "progressing", counts.progressing),
        ("aborted", "aborted", counts.aborted),
        ("unknown", "unknown", counts.unknown),
        ("stale", "stale", counts.stale),
    ]
}

/// `part` of `total` in percent, for a CSS width.
pub(super) fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (part.min(total) as f64) * 100.0 / (total as f64)
}

pub(super) fn render_wave(out: &mut String, wave: &WaveView, current: bool, now: Timestamp) {
    let phase = format!("{:?}", wave.phase);
    let selector = if wave.selector.is_empty() {
        "every other site".to_owned()
    } else {
        wave.selector
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    w!(
        out,
        "<tr class=\"wave{}\" data-wave=\"{name}\"><td class=\"wave-name\"><b>{name}</b><div \
         class=\"selector\">{selector}</div></td><td class=\"wave-phase\"><span class=\"pill \
         wave-{phase}\">{phase}</span>{serial}</td><td class=\"barcell\">",
        if current { " current" } else { "" },
        name = esc(&wave.name),
        selector = esc(&selector),
        serial = wave.serial.map_or_else(String::new, |serial| format!(
            "<div class=\"muted\">serial {serial}</div>"
        )),
    );
    let parts = segments(&wave.counts);
    let total = parts
        .iter()
        .map(|(_, _, count)| *count)
        .sum::<u64>()
        .max(wave.members);
    w!(out, "<div class=\"bar\" role=\"img\" aria-label=\"");
    for (_, label, count) in &parts {
        w!(out, "{count} {label}, ");
    }
    w!(out, "{} needed\">", wave.needed);
    for (class, label, count) in &parts {
        if *count == 0 {
            continue;
        }
        let width = percent(*count, total);
        w!(
            out,
            "<span class=\"seg {class}\" style=\"width:{width:.2}%\" title=\"{count} \
             {label}\">{}</span>",
            if width >= 4.0 {
                count.to_string()
            } else {
                String::new()
            }
        );
    }
    if total > 0 {
        w!(
            out,
            "<span class=\"needed\" style=\"left:{:.2}%\" title=\"{} healthy needed\"></span>",
            percent(wave.needed, total),
            wave.needed
        );
    }
    w!(out, "</div><div class=\"legend\">");
    for (class, label, count) in &parts {
        w!(
            out,
            "<span class=\"key {class}{}\"><i></i>{} {label}</span>",
            if *count == 0 { " zero" } else { "" },
            number_u64(*count)
        );
    }
    w!(
        out,
        "<span class=\"need\">needs {} healthy of {} reachable ({} members), stops above {} \
         aborted{}</span></div>",
        number_u64(wave.needed),
        number_u64(wave.reachable),
        number_u64(wave.members),
        number_u64(wave.max_aborted),
        bake_text(wave, now),
    );
    if !wave.sites.is_empty() {
        w!(
            out,
            "<details class=\"blocking\"{}><summary>{} blocking</summary><ul>",
            if wave.sites.len() <= BLOCKING_SHOWN {
                " open"
            } else {
                ""
            },
            number(wave.sites.len())
        );
        for member in &wave.sites {
            let state = format!("{:?}", member.state);
            w!(
                out,
                "<li data-site=\"{name}\"><span class=\"pill member-{state}\">{state}</span> <a \
                 href=\"{href}\">{name}</a> <span class=\"reason\">{reason}</span>{seen}</li>",
                name = esc(&member.site),
                href = esc(&site_href(&member.site)),
                reason = esc(&member.reason),
                seen = if member.state == MemberState::Unknown {
                    String::new()
                } else {
                    format!(
                        " <span class=\"ago\">{}</span>",
                        esc(&seen(member.last_seen, now))
                    )
                },
            );
        }
        w!(out, "</ul></details>");
    }
    w!(out, "</td></tr>");
}

pub(super) fn bake_text(wave: &WaveView, now: Timestamp) -> String {
    match wave.healthy_since {
        Some(since) if wave.bake_seconds > 0 => {
            let baked = now.since(since).as_secs().min(wave.bake_seconds);
            format!(
                ", baking {} of {}",
                duration(Duration::from_secs(baked)),
                duration(Duration::from_secs(wave.bake_seconds))
            )
        }
        _ if wave.bake_seconds > 0 => format!(
            ", bake {}",
            duration(Duration::from_secs(wave.bake_seconds))
        ),
        _ => String::new(),
    }
}
