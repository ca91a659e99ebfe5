//! One scrape of a hand-built status and real proxy counters, as Prometheus would read it.

use std::time::Duration;

use expect_test::expect;

use super::*;
use crate::api::types::{Instance, RevisionRef, StepRef, Weights};
use crate::proxy::RequestOutcome;

fn instance(version: &str, role: &str, ready: bool, restarts: u32) -> Instance {
    Instance {
        id: format!("web-{version}-{role}"),
        version: version.to_owned(),
        role: role.to_owned(),
        ready,
        address: "127.0.0.1:41000".to_owned(),
        restarts,
        logs: String::new(),
    }
}

fn revision(version: &str, revision: u64) -> Option<RevisionRef> {
    Some(RevisionRef {
        version: version.to_owned(),
        revision,
    })
}

fn paused_canary() -> ServiceStatus {
    ServiceStatus {
        name: "web".to_owned(),
        strategy: "canary".to_owned(),
        phase: "Paused".to_owned(),
        message: "CanaryPauseStep".to_owned(),
        completion: None,
        stable: revision("1.0.0", 1),
        canary: revision("2.0.0", 2),
        step: Some(StepRef { index: 1, count: 3 }),
        pause_ends_at: None,
        weights: Weights {
            stable: 75,
            canary: 25,
        },
        instances: vec![
            instance("1.0.0", "stable", true, 0),
            instance("1.0.0", "stable", true, 2),
            instance("2.0.0", "canary", false, 1),
        ],
        analysis_runs: Vec::new(),
        revisions: Vec::new(),
        events: Vec::new(),
        image: None,
    }
}

fn sources(services: Vec<ServiceStatus>, proxies: ProxyMetrics) -> Sources {
    let status = Status {
        api_version: "edgeroll/v1".to_owned(),
        site: "store-\"0042\"".to_owned(),
        services,
        source: None,
        events: Vec::new(),
        reports: None,
    };
    // The senders may go: a receiver keeps the last value.
    Sources {
        status: watch::channel(Arc::new(status)).1,
        proxies: watch::channel(Arc::new(proxies)).1,
    }
}

/// Only the lines of `families`, so a snapshot stays readable.
fn lines_of(text: &str, families: &[&str]) -> String {
    text.lines()
        .filter(|line| {
            let name = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .or_else(|| line.strip_prefix("# UNIT "))
                .unwrap_or(line);
            families.iter().any(|family| name.starts_with(family))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn a_scrape_shows_where_each_rollout_stands() {
    let text = render(&sources(vec![paused_canary()], ProxyMetrics::new()), None);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!(
            "edgeroll_agent_info{{version=\"{version}\",site=\"store-\\\"0042\\\"\"}} 1\n"
        )),
        "{text}"
    );
    expect![[r#"
        # HELP edgeroll_rollout_phase 1 for the phase each service's rollout is in (Healthy, Progressing, Paused, Degraded), 0 for the others.
        # TYPE edgeroll_rollout_phase gauge
        edgeroll_rollout_phase{service="web",phase="Healthy"} 0
        edgeroll_rollout_phase{service="web",phase="Progressing"} 0
        edgeroll_rollout_phase{service="web",phase="Paused"} 1
        edgeroll_rollout_phase{service="web",phase="Degraded"} 0
        # HELP edgeroll_rollout_revision The revision number each role of a service runs, labelled with its version.
        # TYPE edgeroll_rollout_revision gauge
        edgeroll_rollout_revision{service="web",role="stable",version="1.0.0"} 1
        edgeroll_rollout_revision{service="web",role="canary",version="2.0.0"} 2
        # HELP edgeroll_rollout_step Index of the canary step a service's rollout is at (0-based); absent without steps.
        # TYPE edgeroll_rollout_step gauge
        edgeroll_rollout_step{service="web"} 1
        # HELP edgeroll_rollout_steps How many canary steps a service's strategy has.
        # TYPE edgeroll_rollout_steps gauge
        edgeroll_rollout_steps{service="web"} 3
        # HELP edgeroll_rollout_weight_percent Percent of a service's requests each role gets.
        # TYPE edgeroll_rollout_weight_percent gauge
        edgeroll_rollout_weight_percent{service="web",role="stable"} 75
        edgeroll_rollout_weight_percent{service="web",role="canary"} 25
        # HELP edgeroll_instances Instances the agent runs, by service, role and readiness.
        # TYPE edgeroll_instances gauge
        edgeroll_instances{service="web",role="canary",ready="false"} 1
        edgeroll_instances{service="web",role="stable",ready="true"} 2
        # HELP edgeroll_instance_restarts Restarts of the instances running now, by service and role (instances a rollout replaces take theirs with them).
        # TYPE edgeroll_instance_restarts gauge
        edgeroll_instance_restarts{service="web",role="canary"} 1
        edgeroll_instance_restarts{service="web",role="stable"} 2
    "#]]
    .assert_eq(&lines_of(&text, &["edgeroll_rollout", "edgeroll_instance"]));
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn proxy_counters_are_per_version_with_doubling_latency_buckets() {
    let metrics = Arc::new(proxy::Metrics::new());
    for _ in 0..3 {
        metrics.record(
            "1.0.0",
            RequestOutcome::Status(200),
            Duration::from_micros(150),
        );
    }
    metrics.record(
        "2.0.0",
        RequestOutcome::Status(503),
        Duration::from_millis(3),
    );
    metrics.record(
        "2.0.0",
        RequestOutcome::TransportFailure,
        Duration::from_secs(90),
    );
    metrics.record_unrouted();
    let proxies = ProxyMetrics::from([("web".to_owned(), metrics)]);
    let text = render(&sources(vec![paused_canary()], proxies), None);

    expect![[r#"
        # HELP edgeroll_proxy_requests Requests the proxy sent to each version, by outcome: the status class of the answer, or transport_failure when the proxy answered 502/504 itself.
        # TYPE edgeroll_proxy_requests counter
        edgeroll_proxy_requests_total{service="web",version="1.0.0",outcome="1xx"} 0
        edgeroll_proxy_requests_total{service="web",version="1.0.0",outcome="2xx"} 3
        edgeroll_proxy_requests_total{service="web",version="1.0.0",outcome="3xx"} 0
        edgeroll_proxy_requests_total{service="web",version="1.0.0",outcome="4xx"} 0
        edgeroll_proxy_requests_total{service="web",version="1.0.0",outcome="5xx"} 0
        edgeroll_proxy_requests_total{service="web",version="1.0.0",outcome="transport_failure"} 0
        edgeroll_proxy_requests_total{service="web",version="2.0.0",outcome="1xx"} 0
        edgeroll_proxy_requests_total{service="web",version="2.0.0",outcome="2xx"} 0
        edgeroll_proxy_requests_total{service="web",version="2.0.0",outcome="3xx"} 0
        edgeroll_proxy_requests_total{service="web",version="2.0.0",outcome="4xx"} 0
        edgeroll_proxy_requests_total{service="web",version="2.0.0",outcome="5xx"} 1
        edgeroll_proxy_requests_total{service="web",version="2.0.0",outcome="transport_failure"} 1
        # HELP edgeroll_proxy_unrouted_requests Requests the proxy answered 503 because no version had a ready instance.
        # TYPE edgeroll_proxy_unrouted_requests counter
        edgeroll_proxy_unrouted_requests_total{service="web"} 1
    "#]]
    .assert_eq(&lines_of(&text, &["edgeroll_proxy_requests", "edgeroll_proxy_unrouted"]));

    let histogram = lines_of(&text, &["edgeroll_proxy_request_duration"]);
    let bucket_lines: Vec<&str> = histogram
        .lines()
        .filter(|line| line.contains("version=\"1.0.0\"") && line.contains("_bucket"))
        .collect();
    assert_eq!(bucket_lines.len(), 21, "{histogram}");
    assert_eq!(
        bucket_lines[0],
        "edgeroll_proxy_request_duration_seconds_bucket{le=\"0.0001\",service=\"web\",version=\"1.0.0\"} 0"
    );
    assert_eq!(
        bucket_lines[1],
        "edgeroll_proxy_request_duration_seconds_bucket{le=\"0.0002\",service=\"web\",version=\"1.0.0\"} 3"
    );
    assert!(histogram.contains(
        "edgeroll_proxy_request_duration_seconds_count{service=\"web\",version=\"2.0.0\"} 2\n"
    ));
    // The 90 s request is beyond every finite bucket: only +Inf holds it.
    assert!(histogram.contains(
        "edgeroll_proxy_request_duration_seconds_bucket{le=\"52.4288\",service=\"web\",version=\"2.0.0\"} 1\n"
    ), "{histogram}");
    assert!(histogram.contains(
        "edgeroll_proxy_request_duration_seconds_bucket{le=\"+Inf\",service=\"web\",version=\"2.0.0\"} 2\n"
    ));
    assert!(histogram.contains("# UNIT edgeroll_proxy_request_duration_seconds seconds\n"));
}

#[test]
fn merged_buckets_keep_every_count() {
    let bounds = proxy::metrics::latency_bucket_upper_bounds();
    let counts: Vec<u64> = (0..bounds.len() as u64).collect();
    let merged = merge_latency_buckets(&bounds, &counts);
    assert_eq!(
        merged.iter().map(|(_, count)| count).sum::<u64>(),
        counts.iter().sum::<u64>()
    );
    assert!(merged.windows(2).all(|pair| pair[0].0 < pair[1].0));
    assert_eq!(merged.last().map(|(bound, _)| *bound), Some(f64::INFINITY));
}

#[test]
fn process_figures_are_shown_when_readable() {
    let stats = ProcessStats::read();
    assert!(stats.is_some(), "/proc/self is readable on Linux");
    let text = render(&sources(Vec::new(), ProxyMetrics::new()), stats);
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_threads ",
    ] {
        assert!(
            text.lines().any(|line| line.starts_with(name)),
            "{name} in {text}"
        );
    }
}

#[test]
fn only_get_on_the_metrics_path_is_answered() {
    let sources = sources(Vec::new(), ProxyMetrics::new());
    let request = |method: Method, path: &str| {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        answer(&request, &sources)
    };
    let ok = request(Method::GET, "/metrics");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    assert_eq!(request(Method::GET, "/").status(), StatusCode::NOT_FOUND);
    let post = request(Method::POST, "/metrics");
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
}
