//! The hub's fleet page: `GET /` (every plan with its waves, the sites that need a human, the
//! sites) and `GET /sites/{site}` (one site: labels, services, counters, its last reports).
//!
//! Owns the HTML of those two pages: server-rendered, inline CSS, no JavaScript and no external
//! assets (it works offline), refreshed by the browser every [`REFRESH_SECONDS`]. The rendering
//! is pure ([`render_fleet`], [`render_site`]: data and `now` in, a string out); the handlers
//! only gather the data (store, presence, plans) and wrap the answer.
//!
//! It must never decide anything about a site or a plan that the summary fold or the plan
//! engine decides (it shows their words and figures), never write to the store, and never put a
//! string that came from a site (names, labels, messages, values) into the page unescaped.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::plan::view::{MemberState, PlanPhase, PlanView, StateCounts, WaveView};
use super::store::StoredReport;
use super::summary::{ServiceSummary, SiteSummary};
use super::Shared;
use crate::time::Timestamp;
use crate::wire::report::{ReportBody, RevisionRef};

/// How often the browser reloads the page, in seconds.
pub const REFRESH_SECONDS: u64 = 5;
/// The most rows of the sites table (the ones that need attention first).
pub const MAX_SITE_ROWS: usize = 200;
/// The most entries of the "needs a human" list.
pub const MAX_ATTENTION_ROWS: usize = 200;
/// How many of a site's last reports its page shows.
pub const SITE_REPORTS: usize = 50;
/// A site not heard from for this long is shown as silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(600);
/// How many of a wave's blocking sites are shown before "and N more".
const BLOCKING_SHOWN: usize = 8;
/// How many of a plan's last events are shown.
const PLAN_EVENTS_SHOWN: usize = 5;

type Answer = Response<Full<Bytes>>;

/// Write to a `String` (which cannot fail).
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `GET /?q=FILTER`: the fleet page.
pub async fn fleet(shared: &Shared, query: &str) -> Answer {
    let filter = query_value(query, "q").unwrap_or_default();
    let sites = match shared.store.sites().await {
        Ok(sites) => sites,
        Err(cause) => {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                render_problem("The hub cannot read its store", &cause.to_string()),
            )
        }
    };
    let sites: Vec<SiteSummary> = sites
        .into_iter()
        .map(|summary| with_presence(shared, summary))
        .collect();
    let plans = shared.plan_views();
    html(
        StatusCode::OK,
        render_fleet_matching(&plans, &sites, &filter, shared.clock.now()),
    )
}

/// `GET /sites/{site}` (`segment` as it came in the path, percent-encoded): one site's page.
pub async fn site(shared: &Shared, segment: &str) -> Answer {
    let Some(site) = percent_decode(segment, false).filter(|site| super::http::valid_site(site))
    else {
        return html(
            StatusCode::BAD_REQUEST,
            render_problem("Not a site name", segment),
        );
    };
    let summary = match shared.store.site(site.clone()).await {
        Ok(Some(summary)) => summary,
        Ok(None) if shared.presence.last_poll(&site).is_some() => SiteSummary::new(&site),
        Ok(None) => {
            return html(
                StatusCode::NOT_FOUND,
                render_problem(
                    "Unknown site",
                    &format!("the hub has not heard from {site}"),
                ),
            )
        }
        Err(cause) => {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                render_problem("The hub cannot read its store", &cause.to_string()),
            )
        }
    };
    let summary = with_presence(shared, summary);
    let after = match shared.store.report_count(site.clone()).await {
        Ok((_, Some(highest))) => highest.saturating_sub(SITE_REPORTS as u64),
        Ok((_, None)) => 0,
        Err(cause) => {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                render_problem("The hub cannot read its store", &cause.to_string()),
            )
        }
    };
    let reports = match shared.store.reports(site, after, SITE_REPORTS).await {
        Ok(reports) => reports,
        Err(cause) => {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                render_problem("The hub cannot read its store", &cause.to_string()),
            )
        }
    };
    html(
        StatusCode::OK,
        render_site(&summary, &reports, shared.clock.now()),
    )
}

/// The summary with what presence knows and the store does not have yet (the last poll, the
/// labels sent with it), as the read API shows it.
fn with_presence(shared: &Shared, mut summary: SiteSummary) -> SiteSummary {
    if let Some(at) = shared.presence.last_poll(&summary.site) {
        summary.last_poll = Some(summary.last_poll.map_or(at, |stored| stored.max(at)));
        summary.heard_from(at);
    }
    if let Some(labels) = shared.presence.labels(&summary.site) {
        summary.labels.clone_from(&labels);
    }
    summary
}

fn html(status: StatusCode, body: String) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

// ---------------------------------------------------------------------------------------------
// Where a site stands

/// Where a site stands, worst first (the order of the sites table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// Degraded, aborted, or it refused its last document.
    NeedsHuman,
    /// Not heard from for [`SILENT_AFTER`] (or never).
    Silent,
    /// A rollout is under way, paused, or nothing reported yet.
    Moving,
    /// Every service reports Healthy.
    Healthy,
}

impl Standing {
    fn of(summary: &SiteSummary, now: Timestamp) -> Standing {
        if !attention_reasons(summary).is_empty() {
            return Standing::NeedsHuman;
        }
        match summary.last_seen {
            None => return Standing::Silent,
            Some(seen) if now.since(seen) > SILENT_AFTER => return Standing::Silent,
            Some(_) => {}
        }
        if !summary.services.is_empty()
            && summary
                .services
                .values()
                .all(|service| service.phase == "Healthy")
        {
            Standing::Healthy
        } else {
            Standing::Moving
        }
    }

    fn label(self) -> &'static str {
        match self {
            Standing::NeedsHuman => "needs a human",
            Standing::Silent => "silent",
            Standing::Moving => "in progress",
            Standing::Healthy => "healthy",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Standing::NeedsHuman => "bad",
            Standing::Silent => "quiet",
            Standing::Moving => "busy",
            Standing::Healthy => "good",
        }
    }
}

/// Why a site needs a human, in words (empty: it does not).
fn attention_reasons(summary: &SiteSummary) -> Vec<String> {
    let mut reasons = Vec::new();
    for (name, service) in &summary.services {
        let aborted = service.completion.as_deref() == Some("Aborted");
        if service.phase == "Degraded" || aborted {
            let mut reason = format!("{name}: {}", service.phase);
            if aborted {
                reason.push_str(", aborted");
            }
            reason.push_str(" — ");
            if !service.message.starts_with(&service.last_event) {
                reason.push_str(&service.last_event);
                if !service.message.is_empty() {
                    reason.push_str(": ");
                }
            }
            reason.push_str(&service.message);
            reasons.push(reason);
        }
    }
    if let Some(document) = &summary.last_document {
        if document.outcome == "refused" {
            let serial = document
                .serial
                .map_or_else(String::new, |serial| format!(" serial {serial}"));
            let rule = document
                .rule
                .as_deref()
                .map_or_else(String::new, |rule| format!(" ({rule})"));
            reasons.push(format!(
                "refused document{serial}{rule} — {}",
                document.message
            ));
        }
    }
    reasons
}

// ---------------------------------------------------------------------------------------------
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

fn tile(out: &mut String, label: &str, value: usize, class: &str) {
    w!(
        out,
        "<div class=\"tile {class}\"><div class=\"value\">{}</div><div \
         class=\"label\">{label}</div></div>",
        number(value)
    );
}

fn site_row(out: &mut String, standing: Standing, summary: &SiteSummary, now: Timestamp) {
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
fn versions(service: &ServiceSummary) -> String {
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

fn render_plan(out: &mut String, plan: &PlanView, now: Timestamp) {
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
fn segments(counts: &StateCounts) -> [(&'static str, &'static str, u64); 5] {
    [
        ("healthy", "healthy", counts.healthy),
        ("progressing", "progressing", counts.progressing),
        ("aborted", "aborted", counts.aborted),
        ("unknown", "unknown", counts.unknown),
        ("stale", "stale", counts.stale),
    ]
}

/// `part` of `total` in percent, for a CSS width.
fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (part.min(total) as f64) * 100.0 / (total as f64)
}

fn render_wave(out: &mut String, wave: &WaveView, current: bool, now: Timestamp) {
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

fn bake_text(wave: &WaveView, now: Timestamp) -> String {
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

// ---------------------------------------------------------------------------------------------
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

fn fact(out: &mut String, term: &str, value: &str) {
    w!(
        out,
        "<div><dt>{}</dt><dd>{}</dd></div>",
        esc(term),
        esc(value)
    );
}

fn revision(revision: Option<&RevisionRef>) -> String {
    match revision {
        None => "<span class=\"muted\">—</span>".to_owned(),
        Some(revision) => format!(
            "<span class=\"ver\">{}</span> <span class=\"muted\">r{}</span>",
            esc(&revision.version),
            revision.revision
        ),
    }
}

fn report_row(out: &mut String, stored: &StoredReport, now: Timestamp) {
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
fn render_problem(title: &str, detail: &str) -> String {
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

// ---------------------------------------------------------------------------------------------
// Pieces

/// The document head, the style sheet, and the opening `<body>`.
fn head(out: &mut String, title: &str) {
    w!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta \
         http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style>\
         </head><body>",
        esc(title)
    );
}

const STYLE: &str = "\
:root{--fg:#1f2933;--muted:#6b7785;--line:#e3e7ec;--bg:#f5f7fa;--card:#fff;\
--good:#1f9d55;--busy:#2f6fde;--bad:#d6363b;--quiet:#98a2ae;--stale:#e39a14;--bake:#0f9fa8}\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
color:var(--fg);background:var(--bg)}\
header{display:flex;justify-content:space-between;align-items:center;gap:16px;padding:12px 24px;\
background:#17202b;color:#fff}\
header .title{display:flex;align-items:baseline;gap:12px}\
header h1{font-size:18px;margin:0}\
header .sub,header .now{color:#aab6c3;font-size:12px}\
header a.back{color:#aab6c3;text-decoration:none}\
main{padding:16px 24px;max-width:1400px;margin:0 auto}\
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;\
margin-bottom:16px}\
section.tiles{display:flex;gap:12px;background:none;border:0;padding:0}\
h2{font-size:15px;margin:0 0 10px}\
h3{font-size:14px;margin:0}\
.count{color:var(--muted);font-weight:normal}\
.tile{flex:1;background:var(--card);border:1px solid var(--line);border-radius:8px;\
padding:10px 14px;border-top:3px solid var(--line)}\
.tile .value{font-size:22px;font-weight:600}\
.tile .label{color:var(--muted);font-size:12px}\
.tile.good{border-top-color:var(--good)}.tile.busy{border-top-color:var(--busy)}\
.tile.bad{border-top-color:var(--bad)}.tile.bad .value{color:var(--bad)}\
.tile.quiet{border-top-color:var(--quiet)}\
.empty,.muted{color:var(--muted)}\
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;\
background:#e8ecf1;color:var(--fg);white-space:nowrap}\
.pill.good,.plan-Completed,.wave-Completed,.member-Healthy{background:#dcf3e5;color:#13693a}\
.pill.busy,.plan-Progressing,.wave-Progressing,.member-Progressing{background:#e0eafc;color:#1d4fae}\
.pill.bad,.plan-Stopped,.wave-Stopped,.member-Aborted{background:#fbe1e1;color:#a8242a}\
.pill.quiet,.wave-Pending,.member-Unknown,.plan-Aborted,.wave-RolledBack{background:#eceff3;color:#57616d}\
.plan-Paused,.wave-Gated,.member-Stale{background:#fdf0d5;color:#8a5a00}\
.wave-Baking{background:#d9f4f5;color:#0a6d73}\
.plan{border-top:1px solid var(--line);padding:10px 0}\
.plan:first-of-type{border-top:0;padding-top:0}\
.plan-head{display:flex;align-items:center;gap:10px;flex-wrap:wrap}\
.release{font-size:12px;color:var(--muted)}\
.file{margin-left:auto;font-size:12px;color:var(--muted)}\
p.message{margin:6px 0 8px}\
.message{color:#3e4a57;overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%}\
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;\
border-bottom:1px solid var(--line);padding:6px 8px}\
td{border-bottom:1px solid var(--line);padding:6px 8px;vertical-align:top}\
tr:last-child td{border-bottom:0}\
.num{text-align:right;font-variant-numeric:tabular-nums}\
table.waves td{border-bottom:1px dashed var(--line)}\
tr.wave.current td{background:#f7faff}\
td.wave-name{width:170px}td.wave-phase{width:130px}\
.selector{font-size:12px;color:var(--muted)}\
.bar{position:relative;display:flex;height:22px;border-radius:5px;overflow:hidden;\
background:#eef1f4;margin:2px 0 4px}\
.seg{display:flex;align-items:center;justify-content:center;color:#fff;font-size:12px;\
font-weight:600;min-width:2px}\
.seg.healthy,.key.healthy i{background:var(--good)}\
.seg.progressing,.key.progressing i{background:var(--busy)}\
.seg.aborted,.key.aborted i{background:var(--bad)}\
.seg.unknown,.key.unknown i{background:var(--quiet)}\
.seg.stale,.key.stale i{background:var(--stale)}\
.needed{position:absolute;top:-2px;bottom:-2px;width:0;border-left:2px dashed #17202b}\
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:var(--muted)}\
.key i{display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:4px}\
.key.zero{opacity:.45}\
.need{margin-left:auto}\
details{margin-top:6px;font-size:13px}\
summary{cursor:pointer;color:var(--muted)}\
details ul,ul.attention{list-style:none;margin:6px 0 0;padding:0}\
details li,ul.attention li{padding:3px 0;overflow-wrap:anywhere}\
ul.attention li{border-bottom:1px solid var(--line);padding:6px 0}\
ul.attention li:last-child{border-bottom:0}\
.reason{color:#3e4a57}\
.ago{color:var(--muted);white-space:nowrap}\
a{color:#1d4fae}\
.section-head{display:flex;justify-content:space-between;align-items:center}\
form{display:flex;gap:6px;align-items:center}\
input[type=search]{padding:5px 8px;border:1px solid #cbd2d9;border-radius:5px;width:220px}\
button{padding:5px 12px;border:1px solid #cbd2d9;border-radius:5px;background:#f0f3f6;\
cursor:pointer}\
table.sites td.name{font-weight:600;overflow-wrap:anywhere}\
tr.site.bad td:first-child{box-shadow:inset 3px 0 var(--bad)}\
tr.site.quiet td:first-child{box-shadow:inset 3px 0 var(--quiet)}\
.svc{white-space:nowrap}\
.svc-name{color:var(--muted)}\
.ver{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:13px}\
.ver.canary{color:#1d4fae}\
.phase{font-size:12px;font-weight:600}\
.phase-Healthy,.phase-Successful{color:var(--good)}\
.phase-Progressing{color:var(--busy)}\
.phase-Paused,.phase-Inconclusive{color:#8a5a00}\
.phase-Degraded,.phase-Failed,.phase-Error{color:var(--bad)}\
.outcome{font-weight:600}\
.outcome-applied{color:var(--good)}.outcome-refused{color:var(--bad)}\
.outcome-stale{color:#8a5a00}\
.more{color:var(--muted);margin:8px 0 0}\
section.alert{border-color:#f1b5b7;background:#fff6f6}\
section.alert ul{margin:0;padding-left:18px}\
section.facts{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}\
dl{display:flex;flex-wrap:wrap;gap:8px 28px;margin:0}\
dt{color:var(--muted);font-size:12px}\
dd{margin:0;font-weight:600}\
.labels{display:flex;gap:6px;flex-wrap:wrap;align-items:center}\
.labels h3{color:var(--muted);font-size:12px;font-weight:normal;margin-right:4px}\
.chip{background:#eef1f4;border-radius:4px;padding:1px 7px;font-size:12px}\
section.pair{display:grid;grid-template-columns:1fr 1fr;gap:24px}\
.type{font-size:12px;color:var(--muted)}\
code.value{background:#eef1f4;padding:0 5px;border-radius:3px}\
";

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for element content and quoted attributes.
fn esc(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// A word usable in a class name: ASCII letters, digits and `-` kept, the rest dropped.
fn css_word(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// The link to a site's page.
fn site_href(site: &str) -> String {
    format!("/sites/{}", percent_encode(site))
}

/// Every byte but ASCII letters, digits and `-._~` as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            w!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// `%XX` decoded (and `+` as a space when `plus_is_space`, as in a form's query); `None` when
/// an escape is malformed or the result is not UTF-8.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes.get(index + 1..index + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// The decoded value of `key` in a query string (`a=1&q=store`).
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| percent_decode(value, true))
}

/// `12 s ago`, `4 min ago`, `3 h 5 min ago`, `2 d ago`.
fn ago(at: Timestamp, now: Timestamp) -> String {
    format!("{} ago", duration(now.since(at)))
}

/// When a site was last heard from, or `never`.
fn seen(at: Option<Timestamp>, now: Timestamp) -> String {
    at.map_or_else(|| "never".to_owned(), |at| ago(at, now))
}

/// `12 s`, `4 min`, `3 h 5 min`, `2 d 3 h`.
fn duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => match (seconds % 3600) / 60 {
            0 => format!("{} h", seconds / 3600),
            minutes => format!("{} h {minutes} min", seconds / 3600),
        },
        _ => match (seconds % 86_400) / 3600 {
            0 => format!("{} d", seconds / 86_400),
            hours => format!("{} d {hours} h", seconds / 86_400),
        },
    }
}

/// `10,000`.
fn number(value: usize) -> String {
    number_u64(u64::try_from(value).unwrap_or(u64::MAX))
}

fn number_u64(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

// The temporary shim below comes after the tests so that the lead can delete it at merge.
#[cfg(test)]
#[allow(clippy::items_after_test_module)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::hub::plan::view::{MemberView, PlanEvent, WavePhase};
    use crate::hub::summary::DocumentSummary;
    use crate::wire::report::Report;

    const NOW: Timestamp = Timestamp::from_millis(1_796_000_000_000);

    fn seconds_ago(seconds: u64) -> Timestamp {
        Timestamp::from_millis(NOW.as_millis() - seconds * 1000)
    }

    fn service(phase: &str, completion: Option<&str>, message: &str) -> ServiceSummary {
        ServiceSummary {
            phase: phase.to_owned(),
            completion: completion.map(str::to_owned),
            stable: Some(RevisionRef {
                revision: 1,
                version: "2.4.0".to_owned(),
            }),
            canary: (phase != "Healthy").then(|| RevisionRef {
                revision: 2,
                version: "2.5.0".to_owned(),
            }),
            serial: Some(41),
            last_event: "StepAdvanced".to_owned(),
            message: message.to_owned(),
            at: seconds_ago(30),
            seq: 1,
        }
    }

    fn site(name: &str, phase: &str, seen: u64) -> SiteSummary {
        let mut summary = SiteSummary::new(name);
        summary.last_seen = Some(seconds_ago(seen));
        summary.serial = Some(41);
        summary.services.insert(
            "telemetry-ingest".to_owned(),
            service(phase, None, "step 1"),
        );
        summary
    }

    fn aborted(name: &str, message: &str) -> SiteSummary {
        let mut summary = site(name, "Degraded", 3);
        let mut service = service("Degraded", Some("Aborted"), message);
        service.last_event = "RolloutAborted".to_owned();
        summary
            .services
            .insert("telemetry-ingest".to_owned(), service);
        summary
    }

    fn wave(name: &str, counts: StateCounts, needed: u64) -> WaveView {
        let members =
            counts.healthy + counts.progressing + counts.aborted + counts.unknown + counts.stale;
        WaveView {
            name: name.to_owned(),
            selector: BTreeMap::from([("cohort".to_owned(), name.to_owned())]),
            phase: WavePhase::Progressing,
            serial: Some(42),
            members,
            reachable: members - counts.unknown,
            counts,
            needed,
            max_aborted: 0,
            bake_seconds: 60,
            healthy_since: None,
            started_at: Some(seconds_ago(120)),
            completed_at: None,
            sites: vec![MemberView {
                site: "store-7".to_owned(),
                state: MemberState::Progressing,
                reason: "telemetry-ingest: Progressing".to_owned(),
                last_seen: Some(seconds_ago(4)),
            }],
        }
    }

    fn plan(phase: PlanPhase) -> PlanView {
        PlanView {
            name: "ingest-2.5".to_owned(),
            file: "ingest-2.5.plan.toml".to_owned(),
            phase,
            message: "wave pilot: 3 of 4 healthy needed".to_owned(),
            release: BTreeMap::from([("telemetry-ingest".to_owned(), "2.5.0".to_owned())]),
            current_wave: 0,
            waves: vec![
                wave(
                    "pilot",
                    StateCounts {
                        healthy: 3,
                        progressing: 1,
                        aborted: 1,
                        unknown: 0,
                        stale: 0,
                    },
                    4,
                ),
                wave("fleet", StateCounts::default(), 0),
            ],
            events: vec![PlanEvent {
                at: seconds_ago(120),
                kind: "WaveStarted".to_owned(),
                message: "pilot given serial 42".to_owned(),
            }],
        }
    }

    #[test]
    fn a_sites_script_renders_as_text_on_both_pages() {
        let hostile = "<script>alert('owned')</script> & \"quoted\"";
        let mut summary = aborted("store-1", hostile);
        summary
            .labels
            .insert("region".to_owned(), "<b>eu</b>".to_owned());
        summary.last_document = Some(DocumentSummary {
            serial: Some(43),
            outcome: "refused".to_owned(),
            rule: Some("<i>signature</i>".to_owned()),
            message: hostile.to_owned(),
            at: seconds_ago(5),
        });
        let reports = [StoredReport {
            received: seconds_ago(2),
            report: Report {
                seq: 1,
                at: seconds_ago(3),
                body: ReportBody::Measurement {
                    service: "<svc>".to_owned(),
                    run: "r\"1".to_owned(),
                    metric: "m<1>".to_owned(),
                    phase: "Failed\"><script>".to_owned(),
                    value: Some("<img src=x onerror=alert(1)>".to_owned()),
                    message: Some(hostile.to_owned()),
                },
            },
        }];
        let mut odd = site("x\"><script>alert(2)</script>", "Healthy", 1);
        odd.services
            .insert("<svc>".to_owned(), service("Healthy\"<b>", None, hostile));
        for page in [
            render_fleet(&[plan(PlanPhase::Stopped)], &[summary.clone(), odd], NOW),
            render_site(&summary, &reports, NOW),
        ] {
            assert!(!page.contains("<script"), "{page}");
            assert!(!page.contains("<img"), "{page}");
            assert!(!page.contains("<b>eu"), "{page}");
            assert!(page.contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;"));
        }
        let site_page = render_site(&summary, &reports, NOW);
        assert!(site_page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(site_page.contains("region=<b>&lt;b&gt;eu&lt;/b&gt;</b>"));
    }

    #[test]
    fn the_fleet_shows_who_needs_a_human_first() {
        let mut refusing = site("store-3", "Healthy", 2);
        refusing.last_document = Some(DocumentSummary {
            serial: Some(43),
            outcome: "refused".to_owned(),
            rule: Some("signature".to_owned()),
            message: "no trusted key signed it".to_owned(),
            at: seconds_ago(5),
        });
        let sites = [
            site("store-1", "Healthy", 2),
            site("store-2", "Progressing", 2),
            refusing,
            aborted("store-4", "analysis failed"),
            site("store-5", "Healthy", 3600),
        ];
        let page = render_fleet(&[plan(PlanPhase::Stopped)], &sites, NOW);
        let attention = &page[page.find("id=\"needs-a-human\"").expect("the list")..];
        let attention = &attention[..attention.find("</section>").expect("its end")];
        assert!(
            attention.contains("data-plan=\"ingest-2.5\""),
            "{attention}"
        );
        assert!(attention.contains("data-site=\"store-3\""));
        assert!(attention.contains("refused document serial 43 (signature) — no trusted key"));
        assert!(attention.contains("data-site=\"store-4\""));
        assert!(
            attention
                .contains("telemetry-ingest: Degraded, aborted — RolloutAborted: analysis failed"),
            "{attention}"
        );
        for calm in ["store-1", "store-2", "store-5"] {
            assert!(!attention.contains(calm), "{calm} in {attention}");
        }
        let order: Vec<usize> = ["store-3", "store-4", "store-5", "store-2", "store-1"]
            .iter()
            .map(|name| {
                page.find(&format!("data-site=\"{name}\"><td"))
                    .expect("a row")
            })
            .collect();
        assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{order:?}");
        assert!(page.contains(">1 h ago<"), "store-5's last seen");
        assert!(page.contains(">2 s ago<"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    }

    #[test]
    fn a_wave_is_a_bar_of_its_counts_with_the_needed_mark() {
        let page = render_fleet(&[plan(PlanPhase::Progressing)], &[], NOW);
        assert!(page.contains("data-plan=\"ingest-2.5\""));
        assert!(page.contains("tr class=\"wave current\" data-wave=\"pilot\""));
        assert!(page.contains("data-wave=\"fleet\""));
        // 3 healthy, 1 progressing, 1 aborted of 5: 60%, 20%, 20%; 4 needed: the mark at 80%.
        assert!(
            page.contains("class=\"seg healthy\" style=\"width:60.00%\" title=\"3 healthy\">3<")
        );
        assert!(page.contains("class=\"seg progressing\" style=\"width:20.00%\""));
        assert!(page.contains("class=\"seg aborted\" style=\"width:20.00%\""));
        assert!(!page.contains("seg unknown"), "empty segments are left out");
        assert!(page.contains("class=\"needed\" style=\"left:80.00%\""));
        assert!(page.contains("needs 4 healthy of 5 reachable (5 members), stops above 0 aborted"));
        // The empty wave has a bar without segments or mark.
        let fleet = &page[page.find("data-wave=\"fleet\"").expect("fleet")..];
        let fleet = &fleet[..fleet.find("</tr>").expect("row end")];
        assert!(!fleet.contains("class=\"seg") && !fleet.contains("class=\"needed\""));
        assert!(page.contains("data-site=\"store-7\""), "the blocking site");
        assert!(page.contains("pilot given serial 42"), "the events");
        assert!(
            page.contains("Nothing needs a human."),
            "a progressing plan does not"
        );
    }

    #[test]
    fn ten_thousand_sites_render_two_hundred_rows_worst_first_and_a_filter_finds_any() {
        let mut sites: Vec<SiteSummary> = (0..10_000)
            .map(|index| site(&format!("store-{index:05}"), "Healthy", 5))
            .collect();
        for index in (0..10_000).step_by(100) {
            sites[index] = aborted(
                &format!("store-{index:05}"),
                "RolloutAborted: analysis failed",
            );
        }
        let started = tokio::time::Instant::now();
        let page = render_fleet(&[plan(PlanPhase::Progressing)], &sites, NOW);
        let took = started.elapsed();
        let rows = page.matches("<tr class=\"site ").count();
        assert_eq!(rows, MAX_SITE_ROWS);
        assert_eq!(page.matches("<tr class=\"site bad\"").count(), 100);
        assert!(
            page.contains("9,800 more sites not shown"),
            "the rest is counted"
        );
        assert!(page.contains("<div class=\"value\">10,000</div><div class=\"label\">sites"));
        assert!(page.contains("<div class=\"value\">100</div><div class=\"label\">need a human"));
        assert!(page.len() < 400_000, "{} bytes", page.len());
        eprintln!("10,000 sites: {} bytes in {took:?}", page.len());

        let found = render_fleet_matching(&[], &sites, "STORE-0999", NOW);
        assert_eq!(found.matches("<tr class=\"site ").count(), 10);
        assert!(found.contains("data-site=\"store-09990\"><td"));
        assert!(
            found.contains("value=\"STORE-0999\""),
            "the filter stays in the box"
        );
        assert!(!found.contains("more sites not shown"));
        let none = render_fleet_matching(&[], &sites, "<nothing>", NOW);
        assert!(none.contains("No site name contains “&lt;nothing&gt;”."));
    }

    #[test]
    fn the_site_page_shows_measurements_counters_and_the_newest_report_first() {
        let mut summary = site("store-1", "Progressing", 3);
        summary
            .labels
            .insert("cohort".to_owned(), "pilot".to_owned());
        summary.reports = 120;
        summary.missing = 2;
        summary.gaps = 1;
        summary.duplicates = 4;
        summary.dropped.insert("measurement".to_owned(), 1500);
        let reports: Vec<StoredReport> = (70..=72)
            .map(|seq| StoredReport {
                received: seconds_ago(1),
                report: Report {
                    seq,
                    at: seconds_ago(2),
                    body: ReportBody::Measurement {
                        service: "telemetry-ingest".to_owned(),
                        run: "ingest-r2-s1-1".to_owned(),
                        metric: "success-rate".to_owned(),
                        phase: "Successful".to_owned(),
                        value: Some(format!("[0.99{seq}]")),
                        message: None,
                    },
                },
            })
            .collect();
        let page = render_site(&summary, &reports, NOW);
        assert!(page.contains("<b>success-rate</b> = <code class=\"value\">[0.9972]</code>"));
        assert!(page.find("data-seq=\"72\"") < page.find("data-seq=\"70\""));
        assert!(page.contains("Last reports <span class=\"count\">3 of 120</span>"));
        for (term, value) in [
            ("missing", "2"),
            ("gaps", "1"),
            ("duplicates", "4"),
            ("dropped", "measurement 1,500"),
        ] {
            assert!(
                page.contains(&format!("<dt>{term}</dt><dd>{value}</dd>")),
                "{term}"
            );
        }
        assert!(page.contains("cohort=<b>pilot</b>"));
        assert!(!page.contains("id=\"needs-a-human\""));
    }

    #[test]
    fn durations_numbers_and_names_in_links() {
        assert_eq!(duration(Duration::from_secs(12)), "12 s");
        assert_eq!(duration(Duration::from_secs(299)), "4 min");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 300)), "3 h 5 min");
        assert_eq!(duration(Duration::from_secs(2 * 86_400)), "2 d");
        assert_eq!(ago(NOW, seconds_ago(10)), "0 s ago", "a time ahead is now");
        assert_eq!(seen(None, NOW), "never");
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1_234_567), "1,234,567");
        assert_eq!(site_href("store-1.eu_x~"), "/sites/store-1.eu_x~");
        assert_eq!(site_href("a\"b<c>é"), "/sites/a%22b%3Cc%3E%C3%A9");
        assert_eq!(
            percent_decode("a%22b%3Cc%3E%C3%A9", false).as_deref(),
            Some("a\"b<c>é")
        );
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%C3", false), None);
        assert_eq!(
            query_value("x=1&q=store+0%34", "q").as_deref(),
            Some("store 04")
        );
        assert_eq!(query_value("q", "q").as_deref(), Some(""));
        assert_eq!(query_value("x=1", "q"), None);
    }
}

// TEMPORARY until the plan engine lands
impl super::Shared {
    /// Every plan's view (none until the plan engine lands).
    pub fn plan_views(&self) -> Vec<PlanView> {
        Vec::new()
    }
}
