//! Snapshots of the text view on hand-built statuses.

use expect_test::expect;

use super::*;
use crate::api::types::{Event, Instance, Measurement, MetricRun, RevisionRef, StepRef, Weights};

fn instance(id: &str, version: &str, role: &str, ready: bool, port: u16) -> Instance {
    Instance {
        id: id.to_owned(),
        version: version.to_owned(),
        role: role.to_owned(),
        ready,
        address: format!("127.0.0.1:{port}"),
        restarts: 0,
        logs: String::new(),
    }
}

fn revision(version: &str, revision: u64) -> RevisionRef {
    RevisionRef {
        version: version.to_owned(),
        revision,
    }
}

fn measurement(second: u32, phase: &str, value: &str) -> Measurement {
    Measurement {
        at: format!("2026-11-27T10:00:{second:02}Z"),
        phase: phase.to_owned(),
        value: Some(value.to_owned()),
        message: None,
        query: Some("builtin success_rate{version=\"2.5.0\"}[30s]".to_owned()),
    }
}

fn event(at: &str, kind: &str, message: &str) -> Event {
    Event {
        at: at.to_owned(),
        kind: kind.to_owned(),
        message: message.to_owned(),
    }
}

fn paused_canary() -> ServiceStatus {
    ServiceStatus {
        name: "telemetry-ingest".to_owned(),
        strategy: "canary".to_owned(),
        phase: "Paused".to_owned(),
        message: "CanaryPauseStep".to_owned(),
        completion: None,
        stable: Some(revision("2.4.0", 3)),
        canary: Some(revision("2.5.0", 4)),
        step: Some(StepRef { index: 1, count: 5 }),
        pause_ends_at: None,
        weights: Weights {
            stable: 90,
            canary: 10,
        },
        instances: vec![
            instance("telemetry-ingest-r3-0f9e8d", "2.4.0", "stable", true, 41000),
            instance("telemetry-ingest-r3-7c6b5a", "2.4.0", "stable", true, 41002),
            instance("telemetry-ingest-r4-a1b2c3", "2.5.0", "canary", true, 41001),
        ],
        analysis_runs: vec![AnalysisRun {
            name: "telemetry-ingest-r4-step2".to_owned(),
            phase: "Running".to_owned(),
            message: None,
            metrics: vec![MetricRun {
                name: "success-rate".to_owned(),
                phase: "Running".to_owned(),
                message: None,
                measurements: vec![
                    measurement(0, "Successful", "[0.995]"),
                    measurement(10, "Successful", "[0.991]"),
                ],
            }],
        }],
        revisions: vec![
            revision("2.3.1", 2),
            revision("2.4.0", 3),
            revision("2.5.0", 4),
        ],
        events: vec![
            event(
                "2026-11-27T09:59:30Z",
                "RolloutStarted",
                "rollout to 2.5.0 (revision 4) started",
            ),
            event(
                "2026-11-27T09:59:40Z",
                "CanaryWeightSet",
                "canary weight set to 10%",
            ),
            event(
                "2026-11-27T09:59:40Z",
                "RolloutPaused",
                "paused at step 2 of 5",
            ),
        ],
        image: None,
    }
}

fn aborted() -> ServiceStatus {
    let mut crashing = instance("checkout-r8-5d4c3b", "3.0.0", "old", false, 41010);
    crashing.restarts = 2;
    ServiceStatus {
        name: "checkout".to_owned(),
        strategy: "canary".to_owned(),
        phase: "Degraded".to_owned(),
        message: "RolloutAborted: metric \"success-rate\" assessed Failed".to_owned(),
        completion: Some("Aborted".to_owned()),
        stable: Some(revision("2.0.0", 7)),
        canary: None,
        step: None,
        pause_ends_at: None,
        weights: Weights {
            stable: 100,
            canary: 0,
        },
        instances: vec![
            instance("checkout-r7-aa11bb", "2.0.0", "stable", true, 41011),
            crashing,
        ],
        analysis_runs: vec![AnalysisRun {
            name: "checkout-r8-step3".to_owned(),
            phase: "Failed".to_owned(),
            message: Some("metric \"success-rate\" assessed Failed".to_owned()),
            metrics: vec![MetricRun {
                name: "success-rate".to_owned(),
                phase: "Failed".to_owned(),
                message: Some("2 of 4 measurements failed (limit 1)".to_owned()),
                measurements: vec![
                    measurement(0, "Successful", "[0.99]"),
                    measurement(10, "Failed", "[0.81]"),
                    Measurement {
                        at: "2026-11-27T10:00:20Z".to_owned(),
                        phase: "Error".to_owned(),
                        value: None,
                        message: Some("no requests in window".to_owned()),
                        query: None,
                    },
                    measurement(30, "Failed", "[0.79]"),
                ],
            }],
        }],
        revisions: vec![revision("2.0.0", 7), revision("3.0.0", 8)],
        events: (0..7)
            .map(|n| {
                event(
                    &format!("2026-11-27T10:00:{n:02}Z"),
                    "Event",
                    &format!("event {n}"),
                )
            })
            .collect(),
        image: None,
    }
}

fn healthy() -> ServiceStatus {
    ServiceStatus {
        name: "web".to_owned(),
        strategy: "canary".to_owned(),
        phase: "Healthy".to_owned(),
        message: String::new(),
        completion: Some("Promoted".to_owned()),
        stable: Some(revision("1.2.0", 2)),
        canary: None,
        step: Some(StepRef { index: 3, count: 3 }),
        pause_ends_at: None,
        weights: Weights {
            stable: 100,
            canary: 0,
        },
        instances: vec![instance("web-r2-c0ffee", "1.2.0", "stable", true, 41020)],
        analysis_runs: Vec::new(),
        revisions: Vec::new(),
        events: Vec::new(),
        image: None,
    }
}

#[test]
fn paused_canary_with_analysis() {
    let status = Status {
        api_version: "edgeroll/v1".to_owned(),
        site: "store-0042".to_owned(),
        services: vec![paused_canary()],
        source: None,
        events: Vec::new(),
        reports: None,
    };
    expect![[r#"
        Site:            store-0042

        Name:            telemetry-ingest
        Status:          ॥ Paused
        Message:         CanaryPauseStep
        Strategy:        Canary
          Step:          2/5
          Weight:        canary 10%, stable 90%
        Versions:        2.4.0 (stable, revision 3)
                         2.5.0 (canary, revision 4)
        Instances:       3 (3 ready)

        NAME                                KIND         STATUS        INFO
        ⟳ telemetry-ingest                  Service      ॥ Paused
        ├──# revision:4 2.5.0               Revision     ✔ Healthy     canary
        │  └──□ telemetry-ingest-r4-a1b2c3  Instance     ✔ Ready       127.0.0.1:41001
        ├──# revision:3 2.4.0               Revision     ✔ Healthy     stable
        │  ├──□ telemetry-ingest-r3-0f9e8d  Instance     ✔ Ready       127.0.0.1:41000
        │  └──□ telemetry-ingest-r3-7c6b5a  Instance     ✔ Ready       127.0.0.1:41002
        ├──# revision:2 2.3.1               Revision     • ScaledDown
        └──α telemetry-ingest-r4-step2      AnalysisRun  ◌ Running
           └──▪ success-rate                Metric       ◌ Running     ✔ [0.995] ✔ [0.991]
              └──query                                                 builtin success_rate{version="2.5.0"}[30s]

        Events:
          2026-11-27T09:59:30Z  RolloutStarted   rollout to 2.5.0 (revision 4) started
          2026-11-27T09:59:40Z  CanaryWeightSet  canary weight set to 10%
          2026-11-27T09:59:40Z  RolloutPaused    paused at step 2 of 5
    "#]]
    .assert_eq(&render_text(&status));
}

#[test]
fn aborted_and_degraded() {
    expect![[r#"
        Name:            checkout
        Status:          ✖ Degraded
        Message:         RolloutAborted: metric "success-rate" assessed Failed
        Completion:      Aborted
        Strategy:        Canary
          Weight:        canary 0%, stable 100%
        Versions:        2.0.0 (stable, revision 7)
        Instances:       2 (1 ready)

        NAME                        KIND         STATUS         INFO
        ⟳ checkout                  Service      ✖ Degraded
        ├──# revision:8 3.0.0       Revision     ◌ Progressing  old
        │  └──□ checkout-r8-5d4c3b  Instance     ◌ NotReady     127.0.0.1:41010, 2 restarts
        ├──# revision:7 2.0.0       Revision     ✔ Healthy      stable
        │  └──□ checkout-r7-aa11bb  Instance     ✔ Ready        127.0.0.1:41011
        └──α checkout-r8-step3      AnalysisRun  ✖ Failed       metric "success-rate" assessed Failed
           └──▪ success-rate        Metric       ✖ Failed       ✖ [0.81] ⚠ no requests in window ✖ [0.79]
              ├──query                                          builtin success_rate{version="2.5.0"}[30s]
              └──why                                            2 of 4 measurements failed (limit 1)

        Events:
          2026-11-27T10:00:02Z  Event  event 2
          2026-11-27T10:00:03Z  Event  event 3
          2026-11-27T10:00:04Z  Event  event 4
          2026-11-27T10:00:05Z  Event  event 5
          2026-11-27T10:00:06Z  Event  event 6
    "#]].assert_eq(&render_service_text(&aborted()));
}

#[test]
fn healthy_without_canary() {
    expect![[r#"
        Name:            web
        Status:          ✔ Healthy
        Completion:      Promoted
        Strategy:        Canary
          Step:          3/3
          Weight:        canary 0%, stable 100%
        Versions:        1.2.0 (stable, revision 2)
        Instances:       1 (1 ready)

        NAME                   KIND      STATUS     INFO
        ⟳ web                  Service   ✔ Healthy
        └──# revision:2 1.2.0  Revision  ✔ Healthy  stable
           └──□ web-r2-c0ffee  Instance  ✔ Ready    127.0.0.1:41020
    "#]]
    .assert_eq(&render_service_text(&healthy()));
}

#[test]
fn a_site_without_services() {
    let status = Status {
        api_version: "edgeroll/v1".to_owned(),
        site: "store-0042".to_owned(),
        services: Vec::new(),
        source: None,
        events: Vec::new(),
        reports: None,
    };
    expect![[r#"
        Site:            store-0042

        No services: no desired document for this site has been applied yet.
    "#]]
    .assert_eq(&render_text(&status));
}

#[test]
fn a_site_with_a_pulled_source_and_a_refused_document() {
    let status = Status {
        api_version: "edgeroll/v1".to_owned(),
        site: "store-0042".to_owned(),
        services: Vec::new(),
        reports: None,
        source: Some(crate::api::types::SourceStatus {
            url: "https://hub.example.com/v1/sites/store-0042/desired".to_owned(),
            last_attempt: Some("2026-12-01T10:00:30Z".to_owned()),
            last_result: "refused (serial)".to_owned(),
            last_success: Some("2026-12-01T10:00:00Z".to_owned()),
            serial: Some(17),
            etag: Some("\"5f2a\"".to_owned()),
            key_id: Some("83303453515607F4".to_owned()),
            expires: Some("2026-12-31T00:00:00Z".to_owned()),
            stale: false,
        }),
        events: vec![crate::api::types::Event {
            at: "2026-12-01T10:00:30Z".to_owned(),
            kind: "DocumentRefused".to_owned(),
            message: "serial: serial 16 is older than serial 17, which this site already accepted (a replay or a rollback)".to_owned(),
        }],
    };
    expect![[r#"
        Site:            store-0042
        Source:          https://hub.example.com/v1/sites/store-0042/desired
          Last attempt:  2026-12-01T10:00:30Z  refused (serial)
          Last success:  2026-12-01T10:00:00Z
          Serial:        17
          ETag:          "5f2a"
          Signed by:     key 83303453515607F4
          Expires:       2026-12-31T00:00:00Z

        Site events:
          2026-12-01T10:00:30Z  DocumentRefused  serial: serial 16 is older than serial 17, which this site already accepted (a replay or a rollback)

        No services: no desired document for this site has been applied yet.
    "#]]
    .assert_eq(&render_text(&status));
}

#[test]
fn the_report_outbox_after_a_failed_delivery() {
    let status = Status {
        api_version: "edgeroll/v1".to_owned(),
        site: "store-0042".to_owned(),
        services: Vec::new(),
        source: None,
        events: Vec::new(),
        reports: Some(crate::api::types::ReportsStatus {
            url: "https://hub.example.com/v1/reports".to_owned(),
            depth: 12,
            bytes: 3_456,
            max_bytes: 67_108_864,
            last_seq: 52,
            acked: 40,
            oldest_seq: Some(41),
            oldest_at: Some("2026-12-01T19:00:00.000Z".to_owned()),
            last_attempt_at: Some("2026-12-01T19:05:00.000Z".to_owned()),
            last_success_at: Some("2026-12-01T19:01:00.000Z".to_owned()),
            last_result: Some(
                "https://hub.example.com/v1/reports answered 503 Service Unavailable".to_owned(),
            ),
            last_ok: false,
            dropped: [("measurement".to_owned(), 3)].into_iter().collect(),
        }),
    };
    expect![[r#"
        Site:            store-0042
        Reports:         https://hub.example.com/v1/reports
          Outbox:        12 undelivered (3456 of 67108864 bytes), oldest #41 from 2026-12-01T19:00:00.000Z
          Acknowledged:  up to #40 of #52
          LastDelivery:  2026-12-01T19:05:00.000Z failed: https://hub.example.com/v1/reports answered 503 Service Unavailable
          LastSuccess:   2026-12-01T19:01:00.000Z
          Dropped:       3 measurement (outbox full)

        No services: no desired document for this site has been applied yet.
    "#]].assert_eq(&render_text(&status));
}
