//! The pages' rendering, on fixed data.

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
        attention.contains("telemetry-ingest: Degraded, aborted — RolloutAborted: analysis failed"),
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
    assert!(page.contains("class=\"seg healthy\" style=\"width:60.00%\" title=\"3 healthy\">3<"));
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
