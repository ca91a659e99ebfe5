//! Fleet plans at fleet scale: 4,000 simulated sites (`fleet_support`) speaking the real site
//! protocol to the real `edgeroll hub` binary on 127.0.0.1, a plan of three waves, and the
//! hub's own API (`GET /v1/plans/{name}`, `GET /v1/documents`) as the only witness.
//!
//! | group   | sites | labels                              | asleep | aborts 2.0.0 |
//! |---------|-------|-------------------------------------|--------|--------------|
//! | pilot   |   200 | cohort = pilot, half region eu-west | 20 %   | none         |
//! | eu-west | 1,800 | region = eu-west                    | 20 %   | 2 %          |
//! | us-east | 2,000 | region = us-east                    | 20 %   | none         |
//!
//! 1. Every site takes the pre-plan document (serial 10, 1.0.0) and reports it Healthy; then
//!    the sleepers fall silent and the plan file appears.
//! 2. The pilot wave (minHealthy 90 %, maxAborted 5 %, bake 1 s) completes without waiting for
//!    its sleepers: they count as unknown, not as reachable.
//! 3. The eu-west wave (minHealthy 90 %, maxAborted 1 %) stops the plan: 2 % of it aborts.
//!    Nothing with a higher serial is published; the fleet wave stays Pending.
//! 4. The sleepers wake: each gets its own wave's document (pilot, eu-west), or the pre-plan
//!    one (us-east). (A site is served the highest serial whose selector selects it: a pilot
//!    site labelled eu-west gets the eu-west wave's document, the same release.)
//!
//! A second test kills the hub with `kill -9` in the middle of waves and starts it again: the
//! plan resumes where it was, no wave starts again, no serial changes, and the plan completes.
//!
//! Both are part of `cargo test` and run one after the other (they share two cores).
// Real processes in real time.
#![allow(clippy::disallowed_methods)]

mod fleet_support;
mod hub_support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgeroll::hub::plan::view::{PlanPhase, PlanView, WavePhase, WaveView};
use fleet_support::{
    picked, plan_view, summary, wait_plan, FleetOptions, HubProcess, SimFleet, SiteSpec,
};

/// The two tests each load both cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The pre-plan document's serial.
const BASE_SERIAL: u64 = 10;
/// The release's serial (a lower bound for the waves' serials).
const RELEASE_SERIAL: u64 = 11;
/// How long one phase of a test may take.
const PHASE: Duration = Duration::from_secs(60);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// Which group a simulated site is in, and its index in that group.
fn group(site: &fleet_support::SimSite) -> (&str, usize) {
    let (group, index) = site
        .spec
        .name
        .rsplit_once('-')
        .expect("names are GROUP-INDEX");
    (group, index.parse().expect("an index"))
}

fn asleep_in_plan(site: &fleet_support::SimSite) -> bool {
    picked(group(site).1, 20, 0)
}

fn hub_toml() -> &'static str {
    "plan_interval = \"200ms\"\n"
}

/// The wave called `name`.
fn wave<'a>(view: &'a PlanView, name: &str) -> &'a WaveView {
    view.waves
        .iter()
        .find(|wave| wave.name == name)
        .unwrap_or_else(|| panic!("no wave {name}:\n{}", summary(view)))
}

/// The highest serial of `GET /v1/documents`.
fn highest_served(hub: &HubProcess) -> u64 {
    hub.get_json("/v1/documents")
        .as_array()
        .expect("an array of documents")
        .iter()
        .filter_map(|document| document["serial"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Every site's reports reached the hub once each: its high-water mark is the site's last
/// sequence number, with no gap, and no report named a serial the hub never published.
fn every_report_held(hub: &HubProcess, fleet: &SimFleet) {
    // Awake sites may still have a batch in flight: wait (bounded) until every site's last
    // report is acknowledged and the hub shows it, then check it all.
    let deadline = Instant::now() + Duration::from_secs(30);
    let summaries = loop {
        let summaries = hub.get_json("/v1/sites");
        let settled = fleet.sites.iter().all(|site| {
            let held = site.held();
            held.undelivered == 0
                && summaries.as_array().is_some_and(|all| {
                    all.iter().any(|summary| {
                        summary["site"] == site.spec.name.as_str()
                            && summary["highWater"] == held.last_seq
                    })
                })
        });
        if settled || Instant::now() >= deadline {
            break summaries;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let summaries: BTreeMap<&str, &serde_json::Value> = summaries
        .as_array()
        .expect("an array of sites")
        .iter()
        .filter_map(|summary| Some((summary["site"].as_str()?, summary)))
        .collect();
    for site in &fleet.sites {
        let held = site.held();
        let summary = summaries
            .get(site.spec.name.as_str())
            .unwrap_or_else(|| panic!("the hub does not know {}", site.spec.name));
        assert_eq!(held.undelivered, 0, "{}: {held:?}", site.spec.name);
        assert_eq!(
            summary["highWater"], held.last_seq,
            "{}: {summary:#}",
            site.spec.name
        );
        assert_eq!(
            summary["reports"], held.last_seq,
            "{}: {summary:#}",
            site.spec.name
        );
        for counter in ["missing", "gaps", "lost", "unknownSerials"] {
            assert_eq!(
                summary[counter], 0,
                "{}: {counter}: {summary:#}",
                site.spec.name
            );
        }
    }
}

/// `kill -9` the hub (`before` is the plan it showed), wait `down`, restart it, and return the
/// plan it shows once it answers again.
fn kill_and_restart(
    hub: &mut HubProcess,
    laps: &mut Laps,
    when: &str,
    before: &PlanView,
    down: Duration,
) -> PlanView {
    hub.kill9();
    laps.lap(&format!("kill -9 {when}:\n{}", summary(before)));
    std::thread::sleep(down);
    hub.restart();
    let after = wait_plan(
        |path: &str| hub.get(path),
        "ingest-3.0",
        "the plan after the restart",
        PHASE,
        |_| true,
    );
    laps.lap(&format!("restarted:\n{}", summary(&after)));
    after
}

/// The timings of a test: `lap("what")` prints the time since the start and since the last lap.
struct Laps {
    started: Instant,
    last: Instant,
    lines: Vec<String>,
}

impl Laps {
    fn new() -> Laps {
        let now = Instant::now();
        Laps {
            started: now,
            last: now,
            lines: Vec::new(),
        }
    }

    fn lap(&mut self, what: &str) {
        let now = Instant::now();
        let line = format!(
            "{:>6.1} s (+{:.1} s) {what}",
            (now - self.started).as_secs_f64(),
            (now - self.last).as_secs_f64()
        );
        eprintln!("{line}");
        self.lines.push(line);
        self.last = now;
    }
}

#[test]
fn a_plan_rolls_pilot_then_stops_in_the_region_wave_and_sleepers_wake_to_their_waves_documents() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut laps = Laps::new();
    let hub = HubProcess::start(hub_toml());
    let docs = hub.dir.docs();
    fleet_support::write_atomic(
        &docs,
        "base.toml",
        &fleet_support::document(BASE_SERIAL, "", "1.0.0"),
    );
    hub_support::wait_for("the pre-plan document served", || {
        highest_served(&hub) == BASE_SERIAL
    });

    let mut specs = Vec::new();
    for index in 0..200 {
        let region = if index % 2 == 0 { "eu-west" } else { "us-east" };
        specs.push(SiteSpec {
            name: format!("pilot-{index:04}"),
            labels: labels(&[("cohort", "pilot"), ("region", region)]),
            aborts: Vec::new(),
        });
    }
    for index in 0..1800 {
        specs.push(SiteSpec {
            name: format!("euwest-{index:04}"),
            labels: labels(&[("region", "eu-west")]),
            // 2 % of the group, none of them asleep (a sleeper is index % 5 == 0).
            aborts: if picked(index, 2, 1) {
                vec!["2.0.0".to_owned()]
            } else {
                Vec::new()
            },
        });
    }
    for index in 0..2000 {
        specs.push(SiteSpec {
            name: format!("useast-{index:04}"),
            labels: labels(&[("region", "us-east")]),
            aborts: Vec::new(),
        });
    }
    // 4,000 sites polling every 4 s is 1,000 polls a second, well within what a debug hub
    // answers on two shared cores; `unknownAfter` below is three poll intervals.
    let fleet = SimFleet::start(
        hub.address,
        specs,
        FleetOptions {
            poll_interval: Duration::from_secs(4),
            rollout: (Duration::from_millis(200), Duration::from_millis(800)),
            connections: 32,
        },
    );
    fleet.wait_all(
        "every site on the pre-plan document",
        PHASE,
        |_| true,
        |held| held.settled_on(BASE_SERIAL, "1.0.0"),
    );
    laps.lap(&format!(
        "4000 sites on serial {BASE_SERIAL} (1.0.0), reported Healthy: {}",
        fleet.stats.line()
    ));

    // The sleepers fall silent; the plan appears.
    let sleepers = fleet.sleep(asleep_in_plan);
    assert_eq!(sleepers, 800);
    fleet_support::write_atomic(
        &docs,
        "releases/ingest-2.0.toml",
        &fleet_support::document(RELEASE_SERIAL, "", "2.0.0"),
    );
    fleet_support::write_atomic(
        &docs,
        "ingest-2.0.plan.toml",
        r#"name = "ingest-2.0"
document = "releases/ingest-2.0.toml"
unknownAfter = "12s"

[[waves]]
name = "pilot"
selector = { cohort = "pilot" }
minHealthy = "90%"
maxAborted = "5%"
bake = "1s"

[[waves]]
name = "eu-west"
selector = { region = "eu-west" }
minHealthy = "90%"
maxAborted = "1%"

[[waves]]
name = "fleet"
selector = {}
"#,
    );
    let get = |path: &str| hub.get(path);
    let view = wait_plan(get, "ingest-2.0", "the plan loaded", PHASE, |_| true);
    laps.lap(&format!(
        "800 sleepers silent, the plan loaded:\n{}",
        summary(&view)
    ));

    // The pilot wave completes on its reachable members; its sleepers are unknown.
    let view = wait_plan(
        get,
        "ingest-2.0",
        "the pilot wave completed",
        PHASE,
        |view| wave(view, "pilot").phase == WavePhase::Completed,
    );
    laps.lap(&format!("pilot completed:\n{}", summary(&view)));
    let pilot = wave(&view, "pilot");
    let pilot_serial = pilot.serial.expect("the pilot wave's serial");
    assert!(pilot_serial >= RELEASE_SERIAL, "{}", summary(&view));
    assert_eq!(pilot.members, 200, "{}", summary(&view));
    // Its 40 sleepers fall out of the reachable members one by one, as each passes
    // `unknownAfter` since it was last heard from; the wave completes on the 160 awake ones
    // once enough have (160 is 90 % of 177), without waiting for the others.
    assert_eq!(
        pilot.reachable + pilot.counts.unknown,
        200,
        "{}",
        summary(&view)
    );
    assert!(
        (20..=40).contains(&pilot.counts.unknown),
        "about 20 % of the pilot sleeps, and it did not wait for them:\n{}",
        summary(&view)
    );
    assert!(
        pilot.counts.healthy >= pilot.needed && pilot.needed * 10 >= pilot.reachable * 9,
        "{}",
        summary(&view)
    );
    assert_eq!(pilot.counts.aborted, 0, "{}", summary(&view));
    // Only sleepers are unknown (not all of them yet, each in its own time): every awake site
    // polled within `unknownAfter`. If not, the machine was too slow to simulate 4,000 sites,
    // and the figures say so.
    let (region, rest) = (wave(&view, "eu-west"), wave(&view, "fleet"));
    assert!(
        region.reachable >= 1440 && rest.reachable >= 1600,
        "awake sites counted unknown; {}\n{}",
        fleet.stats.line(),
        summary(&view)
    );
    for site in fleet.select(|site| group(site).0 == "pilot" && site.awake()) {
        let held = site.held();
        assert_eq!(
            held.applied.get(1),
            Some(&pilot_serial),
            "{}: {held:?}",
            site.spec.name
        );
    }

    // The region wave stops the plan.
    let view = wait_plan(get, "ingest-2.0", "the plan stopped", PHASE, |view| {
        view.phase == PlanPhase::Stopped
    });
    laps.lap(&format!("the plan stopped:\n{}", summary(&view)));
    let region = wave(&view, "eu-west");
    assert_eq!(region.phase, WavePhase::Stopped, "{}", summary(&view));
    let region_serial = region.serial.expect("the eu-west wave's serial");
    assert!(region_serial > pilot_serial, "{}", summary(&view));
    assert_eq!(region.members, 1800, "{}", summary(&view));
    assert!(
        region.counts.aborted > region.max_aborted
            && region.counts.aborted * 100 > region.reachable,
        "more than 1 % of the reachable eu-west sites aborted:\n{}",
        summary(&view)
    );
    let fleet_wave = wave(&view, "fleet");
    assert_eq!(fleet_wave.phase, WavePhase::Pending, "{}", summary(&view));
    assert_eq!(fleet_wave.serial, None, "{}", summary(&view));
    assert_eq!(fleet_wave.members, 2000, "{}", summary(&view));
    assert!(
        view.events.iter().any(|event| event.kind == "PlanStopped"),
        "{}",
        summary(&view)
    );
    // Stopped means stopped: a few evaluations later nothing new is served.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(highest_served(&hub), region_serial);
    let later = plan_view(get, "ingest-2.0").expect("the plan");
    assert_eq!(later.phase, PlanPhase::Stopped, "{}", summary(&later));
    assert_eq!(wave(&later, "fleet").phase, WavePhase::Pending);
    for site in fleet.select(|site| group(site).0 == "useast" && site.awake()) {
        let held = site.held();
        assert_eq!(
            held.applied,
            vec![BASE_SERIAL],
            "{}: {held:?}",
            site.spec.name
        );
    }
    // The plan stopped on the first aborts over the limit; the others abort on their own time.
    fleet.wait_all(
        "every told-to-abort eu-west site aborted",
        PHASE,
        |site| !site.spec.aborts.is_empty(),
        |held| held.aborted && !held.rolling && held.undelivered == 0,
    );
    let told = fleet.select(|site| !site.spec.aborts.is_empty()).len();
    assert_eq!(told, 36);

    // The sleepers wake, each to its own wave's document.
    let woken = fleet.wake(asleep_in_plan);
    assert_eq!(woken, 800);
    // A site is served the highest serial whose selector selects it (docs/protocol.md): a
    // pilot site labelled eu-west too is served the eu-west wave's document, the same release.
    let region_of = |site: &fleet_support::SimSite| site.spec.labels["region"].clone();
    // A woken site polled again, settled on `serial` running `version`, having applied exactly
    // the documents `applied`, each once.
    let woke_onto = |serial: u64, version: &'static str, applied: Vec<u64>| {
        move |held: &fleet_support::Held| {
            held.polls_awake > 0 && held.settled_on(serial, version) && held.applied == applied
        }
    };
    fleet.wait_all(
        "the pilot sleepers (us-east) on the pilot's document",
        PHASE,
        |site| asleep_in_plan(site) && group(site).0 == "pilot" && region_of(site) == "us-east",
        woke_onto(pilot_serial, "2.0.0", vec![BASE_SERIAL, pilot_serial]),
    );
    fleet.wait_all(
        "the pilot sleepers (eu-west) on the newest release document that selects them",
        PHASE,
        |site| asleep_in_plan(site) && group(site).0 == "pilot" && region_of(site) == "eu-west",
        woke_onto(region_serial, "2.0.0", vec![BASE_SERIAL, region_serial]),
    );
    fleet.wait_all(
        "the eu-west sleepers on the eu-west document",
        PHASE,
        |site| asleep_in_plan(site) && group(site).0 == "euwest",
        woke_onto(region_serial, "2.0.0", vec![BASE_SERIAL, region_serial]),
    );
    fleet.wait_all(
        "the us-east sleepers polled again, still on the pre-plan document",
        PHASE,
        |site| asleep_in_plan(site) && group(site).0 == "useast",
        woke_onto(BASE_SERIAL, "1.0.0", vec![BASE_SERIAL]),
    );
    // The hub agrees: what it would serve a woken us-east sleeper is the pre-plan document.
    let answer = hub.get_json("/v1/sites/useast-0005");
    assert_eq!(answer["document"]["serial"], BASE_SERIAL, "{answer:#}");
    let answer = hub.get_json("/v1/sites/euwest-0005");
    assert_eq!(answer["document"]["serial"], region_serial, "{answer:#}");
    assert_eq!(answer["serial"], region_serial, "{answer:#}");
    laps.lap(&format!(
        "800 sleepers woke to their waves' documents: {}",
        fleet.stats.line()
    ));
    let view = plan_view(get, "ingest-2.0").expect("the plan");
    assert_eq!(view.phase, PlanPhase::Stopped, "{}", summary(&view));
    assert_eq!(highest_served(&hub), region_serial);
    every_report_held(&hub, &fleet);
    eprintln!(
        "fleet waves: 4000 sites, {:.1} s in all\n{}",
        laps.started.elapsed().as_secs_f64(),
        laps.lines.join("\n")
    );
}

#[test]
fn a_hub_killed_with_kill_9_mid_wave_resumes_its_plan_where_it_was() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut laps = Laps::new();
    let mut hub = HubProcess::start(hub_toml());
    let docs = hub.dir.docs();
    fleet_support::write_atomic(
        &docs,
        "base.toml",
        &fleet_support::document(BASE_SERIAL, "", "1.0.0"),
    );
    hub_support::wait_for("the pre-plan document served", || {
        highest_served(&hub) == BASE_SERIAL
    });
    let specs = (0..1000)
        .map(|index| SiteSpec {
            name: if index < 100 {
                format!("pilot-{index:04}")
            } else {
                format!("fleet-{index:04}")
            },
            labels: if index < 100 {
                labels(&[("cohort", "pilot")])
            } else {
                labels(&[("cohort", "fleet")])
            },
            aborts: Vec::new(),
        })
        .collect();
    // Slow rollouts, so that a wave lasts long enough to be cut in the middle.
    let fleet = SimFleet::start(
        hub.address,
        specs,
        FleetOptions {
            poll_interval: Duration::from_secs(1),
            rollout: (Duration::from_millis(1_000), Duration::from_millis(5_000)),
            connections: 16,
        },
    );
    fleet.wait_all(
        "every site on the pre-plan document",
        PHASE,
        |_| true,
        |held| held.settled_on(BASE_SERIAL, "1.0.0"),
    );
    laps.lap("1000 sites on the pre-plan document");
    fleet_support::write_atomic(
        &docs,
        "releases/ingest-3.0.toml",
        &fleet_support::document(RELEASE_SERIAL, "", "3.0.0"),
    );
    fleet_support::write_atomic(
        &docs,
        "ingest-3.0.plan.toml",
        r#"document = "releases/ingest-3.0.toml"
unknownAfter = "30s"

[[waves]]
name = "pilot"
selector = { cohort = "pilot" }
bake = "3s"

[[waves]]
name = "fleet"
selector = {}
"#,
    );
    let get = |path: &str| hub.get(path);

    // Cut 1: the pilot wave bakes.
    let before = wait_plan(get, "ingest-3.0", "the pilot wave baking", PHASE, |view| {
        wave(view, "pilot").phase == WavePhase::Baking
    });
    let after = kill_and_restart(
        &mut hub,
        &mut laps,
        "while the pilot bakes",
        &before,
        Duration::from_millis(500),
    );
    let get = |path: &str| hub.get(path);
    let (old, new) = (wave(&before, "pilot"), wave(&after, "pilot"));
    assert_eq!(new.serial, old.serial, "the pilot's serial is unchanged");
    assert_eq!(
        new.started_at, old.started_at,
        "the pilot did not start again"
    );
    assert!(
        matches!(
            new.phase,
            WavePhase::Baking | WavePhase::Completed | WavePhase::Progressing
        ),
        "{}",
        summary(&after)
    );
    if new.phase == WavePhase::Baking {
        assert_eq!(
            new.healthy_since,
            old.healthy_since,
            "the bake goes on, it does not start again:\n{}",
            summary(&after)
        );
    }
    assert_eq!(wave(&after, "fleet").phase, WavePhase::Pending);
    let pilot_serial = old.serial.expect("the pilot's serial");

    // Cut 2: the fleet wave is rolling, some of its sites healthy, others not yet.
    let before = wait_plan(
        get,
        "ingest-3.0",
        "the fleet wave half-way",
        PHASE,
        |view| {
            let fleet = wave(view, "fleet");
            fleet.phase == WavePhase::Progressing
                && fleet.counts.healthy >= 100
                && fleet.counts.healthy + 200 <= fleet.members
        },
    );
    let after = kill_and_restart(
        &mut hub,
        &mut laps,
        "while the fleet wave rolls",
        &before,
        Duration::from_millis(1_000),
    );
    let get = |path: &str| hub.get(path);
    for name in ["pilot", "fleet"] {
        let (old, new) = (wave(&before, name), wave(&after, name));
        assert_eq!(new.serial, old.serial, "{name}: the serial is unchanged");
        assert_eq!(
            new.started_at, old.started_at,
            "{name}: it did not start again"
        );
    }
    assert_eq!(wave(&after, "pilot").phase, WavePhase::Completed);
    assert_eq!(
        wave(&after, "pilot").completed_at,
        wave(&before, "pilot").completed_at
    );
    let fleet_serial = wave(&before, "fleet").serial.expect("the fleet's serial");

    let view = wait_plan(get, "ingest-3.0", "the plan completed", PHASE, |view| {
        view.phase == PlanPhase::Completed
    });
    laps.lap(&format!("completed:\n{}", summary(&view)));
    let started = view
        .events
        .iter()
        .filter(|event| event.kind == "WaveStarted")
        .count();
    assert_eq!(started, 2, "each wave started once:\n{}", summary(&view));
    assert_eq!(highest_served(&hub), fleet_serial);
    // The pilots took the pilot's document, then the fleet's (its selector selects them too),
    // each once.
    fleet.wait_all(
        "the pilots on the pilot's document, then the fleet's, each taken once",
        PHASE,
        |site| group(site).0 == "pilot",
        |held| {
            held.settled_on(fleet_serial, "3.0.0")
                && held.applied == [BASE_SERIAL, pilot_serial, fleet_serial]
        },
    );
    fleet.wait_all(
        "the fleet on the fleet's document, taken once",
        PHASE,
        |site| group(site).0 == "fleet",
        |held| {
            held.settled_on(fleet_serial, "3.0.0") && held.applied == [BASE_SERIAL, fleet_serial]
        },
    );
    // Two kill -9 later, the hub holds every report once.
    every_report_held(&hub, &fleet);
    eprintln!(
        "fleet waves under kill -9: 1000 sites, 2 kills, {:.1} s in all; {}\n{}",
        laps.started.elapsed().as_secs_f64(),
        fleet.stats.line(),
        laps.lines.join("\n")
    );
}
