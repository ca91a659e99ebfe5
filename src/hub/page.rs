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

mod fleet;
mod markup;
mod site;
mod standing;
#[cfg(test)]
mod tests;

pub use self::fleet::{render_fleet, render_fleet_matching};
use self::markup::*;
pub use self::site::render_site;
use self::site::*;
use self::standing::*;
