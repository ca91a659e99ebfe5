//! Scenario tests of the fleet plan rule (`hub::plan::engine`), on a clock the test moves: waves
//! finish on the sites that are awake, never on a Healthy from before the change, stop on
//! `maxAborted`, wait at gates, and roll back with new serials.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use edgeroll::hub::plan::engine::{self, Action, PlanState, SiteFacts};
use edgeroll::hub::plan::spec::{self, PlanSpec};
use edgeroll::hub::plan::view::{MemberState, PlanPhase, PlanView, WavePhase};
use edgeroll::hub::summary::{DocumentSummary, ServiceSummary, SiteSummary};
use edgeroll::time::Timestamp;
use edgeroll::wire::report::RevisionRef;
use proptest::prelude::*;

const RELEASE: &str = r#"apiVersion = "edgeroll/v1"
serial = 10

[[services]]
name = "ingest"
traffic = { http = "127.0.0.1:18080" }

[services.template]
version = "2.0.0"
command = ["/bin/true"]

[services.strategy.canary]
steps = [{ setWeight = 50 }, { pause = { duration = "10s" } }]
"#;

fn previous_text() -> String {
    RELEASE
        .replace("2.0.0", "1.0.0")
        .replace("serial = 10", "serial = 9")
}

/// A plan written to a temporary directory, parsed with the hub's parser.
fn plan(waves: &str) -> (tempfile::TempDir, PlanSpec) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("releases")).expect("releases");
    std::fs::write(dir.path().join("releases/ingest-2.toml"), RELEASE).expect("release");
    std::fs::write(dir.path().join("releases/ingest-1.toml"), previous_text()).expect("previous");
    let text = format!(
        "document = \"releases/ingest-2.toml\"\nprevious = \"releases/ingest-1.toml\"\nunknownAfter = \"60s\"\n{waves}"
    );
    let path = dir.path().join("ingest.plan.toml");
    std::fs::write(&path, &text).expect("plan");
    let spec = spec::load(&path).unwrap_or_else(|problems| {
        panic!(
            "{}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    (dir, spec)
}

const TWO_WAVES: &str = r#"
[[waves]]
name = "pilot"
selector = { cohort = "pilot" }
minHealthy = "100%"
maxAborted = 1
bake = "30s"

[[waves]]
name = "fleet"
minHealthy = "90%"
maxAborted = "10%"
bake = "1m"
"#;

/// A site as the hub knows it.
struct Site {
    summary: SiteSummary,
    heard: Option<Timestamp>,
}

impl Site {
    fn new(name: &str, cohort: &str) -> Site {
        let mut summary = SiteSummary::new(name);
        summary
            .labels
            .insert("cohort".to_owned(), cohort.to_owned());
        Site {
            summary,
            heard: None,
        }
    }

    /// The site reports `phase` of `version` on `serial` at `at`.
    fn report(&mut self, at: Timestamp, serial: u64, phase: &str, version: &str, aborted: bool) {
        self.summary.services.insert(
            "ingest".to_owned(),
            ServiceSummary {
                phase: phase.to_owned(),
                completion: aborted.then(|| "Aborted".to_owned()),
                stable: Some(RevisionRef {
                    revision: 1,
                    version: version.to_owned(),
                }),
                canary: None,
                serial: Some(serial),
                last_event: if aborted {
                    "RolloutAborted"
                } else {
                    "StateChanged"
                }
                .to_owned(),
                message: "analysis failed".to_owned(),
                at,
                seq: 1,
            },
        );
        self.summary.serial = Some(serial);
        self.heard = Some(at);
    }

    fn heard(&mut self, at: Timestamp) {
        self.heard = Some(at);
    }
}

fn facts(sites: &[Site]) -> Vec<SiteFacts<'_>> {
    sites
        .iter()
        .map(|site| SiteFacts {
            summary: &site.summary,
            last_heard: site.heard,
        })
        .collect()
}

/// The serials the hub served: the old document's (9) and the plan's (from 100).
fn published() -> BTreeSet<u64> {
    std::iter::once(9).chain(100..200).collect()
}

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + seconds * 1000)
}

/// Evaluate with serials allocated from 100.
fn evaluate(spec: &PlanSpec, state: &mut PlanState, sites: &[Site], now: Timestamp) -> PlanView {
    let next = state.highest_serial().map_or(100, |serial| serial + 1);
    engine::evaluate(spec, state, &facts(sites), &published(), now, next).view
}

#[test]
fn the_pilot_completes_on_the_awake_sites_after_its_bake_and_never_on_an_earlier_healthy() {
    let (_dir, spec) = plan(TWO_WAVES);
    let mut state = PlanState::new(&spec, at(0));
    let mut sites: Vec<Site> = (0..5)
        .map(|index| Site::new(&format!("pilot-{index}"), "pilot"))
        .chain((0..20).map(|index| Site::new(&format!("fleet-{index}"), "fleet")))
        .collect();
    // Every site ran 1.0.0, Healthy, on serial 9: an earlier Healthy.
    for site in &mut sites {
        site.report(at(0), 9, "Healthy", "1.0.0", false);
    }
    let view = evaluate(&spec, &mut state, &sites, at(1));
    let pilot = &view.waves[0];
    assert_eq!(
        (pilot.phase, pilot.serial),
        (WavePhase::Progressing, Some(100))
    );
    assert_eq!(pilot.members, 5);
    assert_eq!(
        pilot.counts.stale, 5,
        "an earlier Healthy must not count: {pilot:?}"
    );
    assert_eq!(view.waves[1].phase, WavePhase::Pending);

    // A site that already runs 2.0.0 but reports it on the old serial is still stale.
    sites[0].report(at(2), 9, "Healthy", "2.0.0", false);
    let view = evaluate(&spec, &mut state, &sites, at(2));
    assert_eq!(view.waves[0].counts.stale, 5);

    // Three pilots take serial 100 and become Healthy on 2.0.0; two fall asleep (heard at 0).
    for site in &mut sites[..3] {
        site.report(at(5), 100, "Progressing", "1.0.0", false);
    }
    let view = evaluate(&spec, &mut state, &sites, at(5));
    assert_eq!(view.waves[0].counts.progressing, 3);
    for site in &mut sites[..3] {
        site.report(at(10), 100, "Healthy", "2.0.0", false);
    }
    let view = evaluate(&spec, &mut state, &sites, at(30));
    // At 30 s the two silent pilots are still reachable (unknownAfter is 60 s): 3 of 5.
    assert_eq!(view.waves[0].phase, WavePhase::Progressing, "{view:?}");
    assert_eq!(view.waves[0].needed, 5);
    // The fleet keeps polling (heard), the two pilots stay silent past unknownAfter.
    for site in &mut sites[5..] {
        site.heard(at(70));
    }
    for site in &mut sites[..3] {
        site.heard(at(70));
    }
    let view = evaluate(&spec, &mut state, &sites, at(70));
    let pilot = &view.waves[0];
    assert_eq!(pilot.counts.unknown, 2, "{pilot:?}");
    assert_eq!((pilot.reachable, pilot.needed), (3, 3));
    assert_eq!(pilot.phase, WavePhase::Baking);
    // Not before the bake is over...
    let view = evaluate(&spec, &mut state, &sites, at(99));
    assert_eq!(view.waves[0].phase, WavePhase::Baking);
    assert_eq!(view.waves[1].phase, WavePhase::Pending);
    // ...and then the fleet wave starts on the next serial.
    let view = evaluate(&spec, &mut state, &sites, at(100));
    assert_eq!(view.waves[0].phase, WavePhase::Completed);
    assert_eq!(
        (view.waves[1].phase, view.waves[1].serial),
        (WavePhase::Progressing, Some(101))
    );
    assert_eq!(view.phase, PlanPhase::Progressing);
    let kinds: Vec<&str> = view
        .events
        .iter()
        .map(|event| event.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["WaveStarted", "WaveHealthy", "WaveCompleted", "WaveStarted"]
    );
}

#[test]
fn a_wave_that_loses_health_while_baking_starts_its_bake_again() {
    let (_dir, spec) = plan(TWO_WAVES);
    let mut state = PlanState::new(&spec, at(0));
    let mut sites = vec![Site::new("pilot-0", "pilot"), Site::new("fleet-0", "fleet")];
    evaluate(&spec, &mut state, &sites, at(0));
    sites[0].report(at(1), 100, "Healthy", "2.0.0", false);
    assert_eq!(
        evaluate(&spec, &mut state, &sites, at(1)).waves[0].phase,
        WavePhase::Baking
    );
    sites[0].report(at(20), 100, "Progressing", "2.0.0", false);
    let view = evaluate(&spec, &mut state, &sites, at(20));
    assert_eq!(view.waves[0].phase, WavePhase::Progressing);
    sites[0].report(at(25), 100, "Healthy", "2.0.0", false);
    evaluate(&spec, &mut state, &sites, at(25));
    // 30 s after the first Healthy is not 30 s after the second.
    assert_eq!(
        evaluate(&spec, &mut state, &sites, at(40)).waves[0].phase,
        WavePhase::Baking
    );
    assert_eq!(
        evaluate(&spec, &mut state, &sites, at(55)).waves[0].phase,
        WavePhase::Completed
    );
}

#[test]
fn aborts_beyond_max_aborted_stop_the_plan_and_nothing_further_is_published() {
    let (_dir, spec) = plan(TWO_WAVES);
    let mut state = PlanState::new(&spec, at(0));
    let mut sites: Vec<Site> = (0..4)
        .map(|index| Site::new(&format!("pilot-{index}"), "pilot"))
        .collect();
    evaluate(&spec, &mut state, &sites, at(0));
    let published = engine::documents(&spec, &state);
    assert_eq!(published.len(), 1);
    // One abort is what maxAborted = 1 allows.
    sites[0].report(at(5), 100, "Degraded", "1.0.0", true);
    for site in &mut sites[1..] {
        site.report(at(5), 100, "Progressing", "1.0.0", false);
    }
    let view = evaluate(&spec, &mut state, &sites, at(5));
    assert_eq!(view.phase, PlanPhase::Progressing);
    assert_eq!(view.waves[0].sites[0].state, MemberState::Aborted);
    assert!(
        view.waves[0].sites[0].reason.contains("RolloutAborted"),
        "{view:?}"
    );
    // The second is one too many.
    sites[1].report(at(6), 100, "Degraded", "1.0.0", true);
    let view = evaluate(&spec, &mut state, &sites, at(6));
    assert_eq!(view.phase, PlanPhase::Stopped);
    assert_eq!(view.waves[0].phase, WavePhase::Stopped);
    assert!(
        view.message.contains("2 aborted of 4 reachable"),
        "{}",
        view.message
    );
    // Even if every other site turns Healthy, a stopped plan moves no further.
    for site in &mut sites[2..] {
        site.report(at(7), 100, "Healthy", "2.0.0", false);
    }
    let view = evaluate(&spec, &mut state, &sites, at(500));
    assert_eq!(view.phase, PlanPhase::Stopped);
    assert_eq!(engine::documents(&spec, &state), published);
    // Promote is refused; abort rolls back.
    let next = state.highest_serial().map_or(100, |serial| serial + 1);
    let refused = engine::act(&spec, &mut state, Action::Promote, at(501), next);
    assert!(refused.expect_err("refused").contains("hub abort"));
}

#[test]
fn a_manual_gate_waits_for_promote_and_abort_returns_every_started_wave_under_new_serials() {
    let waves = TWO_WAVES.replace("name = \"fleet\"", "name = \"fleet\"\npause = {}");
    let (_dir, spec) = plan(&waves);
    let mut state = PlanState::new(&spec, at(0));
    let mut sites = vec![Site::new("pilot-0", "pilot"), Site::new("fleet-0", "fleet")];
    evaluate(&spec, &mut state, &sites, at(0));
    sites[0].report(at(1), 100, "Healthy", "2.0.0", false);
    sites[1].heard(at(1));
    evaluate(&spec, &mut state, &sites, at(1));
    let view = evaluate(&spec, &mut state, &sites, at(40));
    assert_eq!(view.waves[1].phase, WavePhase::Gated);
    assert_eq!(view.phase, PlanPhase::Paused);
    assert!(
        view.message.contains("edgeroll hub promote ingest"),
        "{}",
        view.message
    );
    // It waits however long it takes.
    let view = evaluate(&spec, &mut state, &sites, at(4000));
    assert_eq!(view.waves[1].phase, WavePhase::Gated);
    // Pause holds the gate even after promote... (promote is refused while paused)
    engine::act(&spec, &mut state, Action::Pause, at(4001), 101).expect("pause");
    assert!(engine::act(&spec, &mut state, Action::Promote, at(4002), 101).is_err());
    engine::act(&spec, &mut state, Action::Resume, at(4003), 101).expect("resume");
    engine::act(&spec, &mut state, Action::Promote, at(4004), 101).expect("promote");
    let view = evaluate(&spec, &mut state, &sites, at(4005));
    assert_eq!(
        (view.waves[1].phase, view.waves[1].serial),
        (WavePhase::Progressing, Some(101))
    );

    // Abort: both started waves get the previous document, each under a new, higher serial.
    engine::act(&spec, &mut state, Action::Abort, at(4010), 102).expect("abort");
    let documents = engine::documents(&spec, &state);
    let serials: Vec<u64> = documents.iter().map(|document| document.serial).collect();
    assert_eq!(serials, [102, 103]);
    for document in &documents {
        let json: serde_json::Value = serde_json::from_slice(&document.body).expect("json");
        assert_eq!(json["services"][0]["template"]["version"], "1.0.0");
        assert_eq!(json["serial"], document.serial);
    }
    assert_eq!(
        documents[0].selector,
        BTreeMap::from([("cohort".to_owned(), "pilot".to_owned())])
    );
    let view = evaluate(&spec, &mut state, &sites, at(4011));
    assert_eq!(view.phase, PlanPhase::Aborted);
    assert!(view
        .waves
        .iter()
        .all(|wave| wave.phase == WavePhase::RolledBack));
    // A site back on 1.0.0 with the rollback's serial counts as healthy again.
    sites[0].report(at(4020), 102, "Healthy", "1.0.0", false);
    let view = evaluate(&spec, &mut state, &sites, at(4020));
    assert_eq!(view.waves[0].counts.healthy, 1);
    assert!(engine::act(&spec, &mut state, Action::Abort, at(4030), 104).is_err());
}

#[test]
fn a_refused_document_counts_as_aborted_and_a_silent_aborted_site_stays_aborted() {
    let (_dir, spec) = plan(TWO_WAVES);
    let mut state = PlanState::new(&spec, at(0));
    let mut sites = vec![Site::new("pilot-0", "pilot"), Site::new("pilot-1", "pilot")];
    for site in &mut sites {
        site.report(at(0), 9, "Healthy", "1.0.0", false);
    }
    evaluate(&spec, &mut state, &sites, at(0));
    sites[0].summary.last_document = Some(DocumentSummary {
        serial: Some(100),
        outcome: "refused".to_owned(),
        rule: Some("signature".to_owned()),
        message: "no trusted key signed it".to_owned(),
        at: at(2),
    });
    sites[1].report(at(2), 100, "Degraded", "1.0.0", true);
    let view = evaluate(&spec, &mut state, &sites, at(2));
    assert_eq!(view.waves[0].counts.aborted, 2);
    assert!(view.waves[0]
        .sites
        .iter()
        .any(|site| site.reason.contains("signature")));
    // Hours later, silent, the aborted site is still aborted (a fact, not a guess).
    let view = engine::evaluate(
        &spec,
        &mut state.clone(),
        &facts(&sites),
        &published(),
        at(9000),
        101,
    )
    .view;
    assert_eq!(view.waves[0].counts.aborted, 2);
}

#[test]
fn a_claim_of_a_serial_the_hub_never_published_is_not_believed() {
    let (_dir, spec) = plan(TWO_WAVES);
    let mut state = PlanState::new(&spec, at(0));
    let mut sites = vec![Site::new("pilot-0", "pilot")];
    evaluate(&spec, &mut state, &sites, at(0));
    sites[0].report(at(1), 5000, "Healthy", "2.0.0", false);
    let view = evaluate(&spec, &mut state, &sites, at(1));
    let pilot = &view.waves[0];
    assert_eq!(
        (pilot.counts.healthy, pilot.counts.stale),
        (0, 1),
        "{pilot:?}"
    );
    assert!(
        pilot.sites[0]
            .reason
            .contains("claims serial 5000, which this hub never published"),
        "{pilot:?}"
    );
}

#[test]
fn a_site_belongs_to_the_first_wave_that_selects_it() {
    let waves = r#"
[[waves]]
name = "pilot"
selector = { cohort = "pilot" }
[[waves]]
name = "eu"
selector = { region = "eu" }
[[waves]]
name = "rest"
"#;
    let (_dir, spec) = plan(waves);
    let mut both = Site::new("s1", "pilot");
    both.summary
        .labels
        .insert("region".to_owned(), "eu".to_owned());
    let mut eu = Site::new("s2", "fleet");
    eu.summary
        .labels
        .insert("region".to_owned(), "eu".to_owned());
    let other = Site::new("s3", "fleet");
    let wave = |site: &Site| spec.wave_of(&site.summary.site, &site.summary.labels);
    assert_eq!(
        (wave(&both), wave(&eu), wave(&other)),
        (Some(0), Some(1), Some(2))
    );
}

#[test]
fn plan_files_with_mistakes_get_every_error_with_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("top.toml"), RELEASE).expect("release");
    let path = dir.path().join("bad.plan.toml");
    let text = r#"document = "top.toml"
[[waves]]
name = "all"
minHealthy = "120%"
[[waves]]
name = "pilot"
selector = { cohort = "pilot" }
maxAborted = "lots"
bake = "soon"
"#;
    std::fs::write(&path, text).expect("plan");
    let problems: Vec<String> = spec::load(&path)
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect();
    let joined = problems.join("\n");
    let file = path.display().to_string();
    for (line, needle) in [
        (1, "put it in a subdirectory"),
        (4, "120% is outside 0%–100%"),
        (8, "not a percentage"),
        (9, "bake"),
    ] {
        assert!(
            problems
                .iter()
                .any(|problem| problem.starts_with(&format!("{file}:{line}:"))
                    && problem.contains(needle)),
            "no {needle:?} at line {line}:\n{joined}"
        );
    }
    // Overlap: a wave inside an earlier one could never have a member.
    std::fs::create_dir(dir.path().join("releases")).expect("dir");
    std::fs::write(dir.path().join("releases/r.toml"), RELEASE).expect("release");
    let text = "document = \"releases/r.toml\"\n[[waves]]\nname = \"pilot\"\nselector = { cohort = \"pilot\" }\n[[waves]]\nname = \"pilot-eu\"\nselector = { cohort = \"pilot\", region = \"eu\" }\n";
    std::fs::write(&path, text).expect("plan");
    let problems = spec::load(&path).expect_err("overlap");
    assert!(
        problems[0]
            .to_string()
            .contains("lies inside the earlier wave \"pilot\""),
        "{problems:?}"
    );
    assert_eq!(problems[0].line, 5);
    // The release's own mistakes are reported in the release's file.
    std::fs::write(
        dir.path().join("releases/r.toml"),
        RELEASE.replace("apiVersion", "apiVerison"),
    )
    .expect("release");
    let problems = spec::load(&path).expect_err("release");
    assert!(
        problems
            .iter()
            .any(|problem| problem.file.ends_with("releases/r.toml")),
        "{problems:?}"
    );
    let _ = Path::new("");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Whatever the sites say, a wave never completes with fewer healthy members than
    /// `minHealthy` of its reachable ones, and never on sites that only report older serials.
    #[test]
    fn a_wave_never_completes_short_of_min_healthy(
        states in proptest::collection::vec((0u8..5, 0u64..200), 1..40),
        percent in 1u32..=100,
    ) {
        let waves = format!("[[waves]]\nname = \"all\"\nminHealthy = \"{percent}%\"\nmaxAborted = \"100%\"\nbake = \"10s\"\n");
        let (_dir, spec) = plan(&waves);
        let mut state = PlanState::new(&spec, at(0));
        let mut sites: Vec<Site> = (0..states.len()).map(|index| Site::new(&format!("s{index}"), "x")).collect();
        evaluate(&spec, &mut state, &sites, at(0));
        for (site, (kind, heard)) in sites.iter_mut().zip(&states) {
            match kind {
                0 => site.report(at(*heard), 100, "Healthy", "2.0.0", false),
                1 => site.report(at(*heard), 9, "Healthy", "2.0.0", false),
                2 => site.report(at(*heard), 100, "Progressing", "1.0.0", false),
                3 => site.report(at(*heard), 100, "Degraded", "1.0.0", true),
                _ => {}
            }
        }
        let mut was_completed = false;
        for now in [200, 215, 230] {
            let view = evaluate(&spec, &mut state, &sites, at(now));
            let wave = &view.waves[0];
            let awake = |kind: u8, heard: u64| kind != 4 && now - heard < 60;
            let reachable = states.iter().filter(|(kind, heard)| *kind == 3 || awake(*kind, *heard)).count() as u64;
            let healthy = states.iter().filter(|(kind, heard)| *kind == 0 && awake(*kind, *heard)).count() as u64;
            prop_assert_eq!(wave.reachable, reachable);
            prop_assert_eq!(wave.counts.healthy, healthy);
            // Checked at the evaluation that completes it (its sites may fall asleep afterwards).
            if wave.phase == WavePhase::Completed && !was_completed {
                was_completed = true;
                let needed = (reachable * u64::from(percent)).div_ceil(100).max(1);
                prop_assert!(healthy >= needed, "completed with {} healthy of {} reachable at {}%", healthy, reachable, percent);
            }
        }
    }
}

#[test]
fn durations_read_for_people() {
    assert_eq!(engine::human(Duration::from_secs(40)), "40s");
    assert_eq!(engine::human(Duration::from_secs(840)), "14m");
    assert_eq!(engine::human(Duration::from_secs(7500)), "2h 5m");
}
