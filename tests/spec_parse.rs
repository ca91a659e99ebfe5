//! The desired-document parser, driven through its public API the way `edgeroll validate` and
//! the daemon use it: valid documents in both formats, and bad ones with every problem reported
//! at its line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeroll::diag::Diagnostic;
use edgeroll::spec::parse::{load_document, parse_document};
use edgeroll::spec::{
    BuiltinMetric, CanaryScale, CanaryStep, Provider, Readiness, Strategy, Traffic,
};
use expect_test::{expect, Expect};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec")
        .join(name)
}

/// The diagnostics of `text`, one per line, as `edgeroll validate` prints them.
fn errors(text: &str) -> String {
    match parse_document(Path::new("doc.toml"), text) {
        Ok(document) => panic!("expected errors, got {document:#?}"),
        Err(diagnostics) => render(&diagnostics),
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|diagnostic| format!("{diagnostic}\n"))
        .collect()
}

fn check(text: &str, expected: Expect) {
    expected.assert_eq(&errors(text));
}

/// A minimal valid service around `steps`, for the cross-field tests.
fn with_steps(replicas: u32, steps: &str) -> String {
    format!(
        r#"apiVersion = "edgeroll/v1"
[[services]]
name = "web"
replicas = {replicas}
traffic = {{ http = "127.0.0.1:8080" }}
template = {{ version = "1", command = ["/bin/web"] }}
strategy = {{ canary = {{ steps = [{steps}] }} }}
"#
    )
}

#[test]
fn valid_document_parses_identically_from_toml_and_json() {
    let from_toml = load_document(&fixture("valid.toml")).unwrap();
    let from_json = load_document(&fixture("valid.json")).unwrap();
    assert_eq!(from_toml, from_json);

    let document = from_toml;
    assert_eq!(document.serial, 17);
    assert_eq!(
        document.selector,
        BTreeMap::from([("cohort".to_string(), "pilot".to_string())])
    );
    let ingest = document.service("telemetry-ingest").unwrap();
    assert_eq!(ingest.replicas, 2);
    assert_eq!(ingest.revision_history_limit, 3);
    assert!(ingest.progress_deadline_abort);
    assert_eq!(
        ingest.traffic,
        Traffic::Http {
            listen: "0.0.0.0:8080".into()
        }
    );
    assert_eq!(
        ingest.template.readiness,
        Readiness::HttpGet {
            path: "/healthz".into()
        }
    );
    let Strategy::Canary(canary) = &ingest.strategy else {
        panic!("telemetry-ingest is a canary");
    };
    assert_eq!(canary.steps.len(), 7);
    assert_eq!(
        canary.steps[0],
        CanaryStep::SetCanaryScale(CanaryScale::Replicas(1))
    );
    assert_eq!(
        canary.steps[2],
        CanaryStep::Pause {
            duration: Some(Duration::from_secs(30))
        }
    );
    assert_eq!(canary.steps[6], CanaryStep::Pause { duration: None });
    let CanaryStep::Analysis(analysis) = &canary.steps[3] else {
        panic!("step 3 is {:?}", canary.steps[3]);
    };
    assert_eq!(analysis.templates, vec!["success-rate".to_string()]);
    assert_eq!(analysis.args["threshold"], "0.99");

    // Defaults of the second, minimal service.
    let config_api = document.service("config-api").unwrap();
    assert_eq!(config_api.replicas, 1);
    assert_eq!(config_api.revision_history_limit, 10);
    assert_eq!(config_api.progress_deadline_seconds, 600);
    assert!(!config_api.progress_deadline_abort);
    assert_eq!(config_api.template.readiness, Readiness::Tcp);
    assert!(config_api.template.env.is_empty());

    let template = &document.analysis_templates["success-rate"];
    assert_eq!(template.args[0].value, None);
    assert_eq!(template.args[1].value.as_deref(), Some("canary"));
    let success = &template.metrics[0];
    assert_eq!(success.interval, Some(Duration::from_secs(10)));
    assert_eq!(success.initial_delay, Some(Duration::from_secs(5)));
    assert_eq!(success.count, Some(3));
    assert_eq!(success.failure_limit, 1);
    assert_eq!(success.consecutive_error_limit, 4);
    let latency = &template.metrics[1];
    assert_eq!(latency.success_condition, None);
    assert_eq!(latency.count, None);
    let Provider::Builtin(query) = &latency.provider else {
        panic!("latency uses the builtin provider");
    };
    assert_eq!(query.query, BuiltinMetric::LatencyP99);
    assert_eq!(query.version, "canary");
    assert_eq!(query.window, Duration::from_secs(30));

    // Background analysis, blue-green, and one metric per provider.
    let Strategy::Canary(canary) = &config_api.strategy else {
        panic!("config-api is a canary");
    };
    let background = canary.analysis.as_ref().unwrap();
    assert_eq!(background.starting_step, 1);
    assert_eq!(background.analysis.templates, vec!["providers".to_string()]);
    let Strategy::BlueGreen(blue_green) = &document.service("gateway").unwrap().strategy else {
        panic!("gateway is blue-green");
    };
    assert_eq!(
        blue_green.preview_listen.as_deref(),
        Some("127.0.0.1:18443")
    );
    assert_eq!(blue_green.auto_promotion_seconds, Some(120));
    assert_eq!(blue_green.abort_scale_down_delay_seconds, 0);
    assert_eq!(
        blue_green.pre_promotion_analysis.as_ref().unwrap().args["version"],
        "preview"
    );
    let providers = &document.analysis_templates["providers"].metrics;
    let kinds: Vec<&str> = providers
        .iter()
        .map(|metric| match metric.provider {
            Provider::Builtin(_) => "builtin",
            Provider::Prometheus(_) => "prometheus",
            Provider::Web(_) => "web",
            Provider::Job(_) => "job",
            Provider::Judge(_) => "judge",
        })
        .collect();
    assert_eq!(kinds, ["prometheus", "web", "job", "judge"]);
    assert_eq!(providers[0].consecutive_success_limit, 3);
    assert!(providers
        .iter()
        .all(|metric| metric.measurement_retention == Some(20)));
    assert_eq!(
        providers
            .iter()
            .map(|metric| metric.dry_run)
            .collect::<Vec<_>>(),
        [false, false, false, true]
    );
}

#[test]
fn bad_document_reports_every_problem_with_its_position() {
    let path = fixture("invalid.toml");
    let diagnostics = load_document(&path).unwrap_err();
    let text = render(&diagnostics).replace(&format!("{}:", path.display()), "invalid.toml:");
    expect![[r#"
        invalid.toml:1:14: apiVersion: expected "edgeroll/v1", found "edgeroll/v2"
        invalid.toml:2:10: serial: -1 is less than 0
        invalid.toml:5:8: services[0].name: "Telemetry_Ingest" is not a valid name: use 1–63 lowercase letters, digits and '-', not starting or ending with '-'
        invalid.toml:6:1: services[0].replica: unknown field, did you mean `replicas`?
        invalid.toml:10:11: services[0].template.version: must not be empty
        invalid.toml:12:25: services[0].template.readiness.httpGet: "healthz" must start with '/'
        invalid.toml:16:5: services[0].strategy.canary.steps[0].setWieght: unknown step `setWieght`, did you mean `setWeight`?
        invalid.toml:18:3: services[0].strategy.canary.steps[2]: the canary would take 20% of traffic with 0 instances; scale the canary above 0 first
        invalid.toml:19:17: services[0].strategy.canary.steps[3].setWeight: 150 is outside 0–100
        invalid.toml:20:26: services[0].strategy.canary.steps[4].pause.duration: duration `0s` must be positive
        invalid.toml:21:48: services[0].strategy.canary.steps[5].analysis.templates[0].templateName: no analysis template named `succes-rate`, did you mean `success-rate`?
        invalid.toml:22:18: services[0].strategy.canary.steps[6].experiment: `experiment` steps are not supported yet
        invalid.toml:27:12: services[1].replicas: expected an integer, found a string
        invalid.toml:28:20: services[1].traffic.http: listener 127.0.0.1:8080 conflicts with 0.0.0.0:8080 of services[0]
        invalid.toml:30:45: services[1].strategy.blueGreen.previewService: listener 127.0.0.1:8080 conflicts with 0.0.0.0:8080 of services[0]
        invalid.toml:30:86: services[1].strategy.blueGreen.autoPromotionEnabled: expected a boolean, found a string
        invalid.toml:36:20: analysisTemplates[0].metrics[0].successCondition: uses `{{args.threshold}}`, but the template declares no argument `threshold`
        invalid.toml:37:27: analysisTemplates[0].metrics[0].provider.prometheus.address: required field is missing
    "#]].assert_eq(&text);
}

#[test]
fn duplicate_service_names_are_reported_at_the_second() {
    let text = r#"apiVersion = "edgeroll/v1"
[[services]]
name = "web"
traffic = { http = "127.0.0.1:8080" }
template = { version = "1", command = ["/bin/web"] }
strategy = { canary = {} }
[[services]]
name = "web"
traffic = { http = "127.0.0.1:8081" }
template = { version = "1", command = ["/bin/web"] }
strategy = { canary = {} }
"#;
    check(
        text,
        expect![[r#"
            doc.toml:8:8: services[1].name: duplicate service name `web` (also services[0])
        "#]],
    );
}

#[test]
fn listeners_conflict_on_the_same_address_or_a_wildcard_with_the_same_port() {
    let service = |name: &str, listen: &str| {
        format!(
            "[[services]]\nname = \"{name}\"\ntraffic = {{ http = \"{listen}\" }}\n\
             template = {{ version = \"1\", command = [\"/bin/x\"] }}\nstrategy = {{ canary = {{}} }}\n"
        )
    };
    let text = format!(
        "apiVersion = \"edgeroll/v1\"\n{}{}{}{}{}",
        service("a", "127.0.0.1:8080"),
        service("b", "127.0.0.1:8080"),
        service("c", "[::]:9000"),
        service("d", "10.0.0.1:9000"),
        // A different port, and the same port on two specific addresses, are fine.
        service("e", "10.0.0.2:8080"),
    );
    check(
        &text,
        expect![[r#"
            doc.toml:9:20: services[1].traffic.http: listener 127.0.0.1:8080 is already used by services[0]
            doc.toml:19:20: services[3].traffic.http: listener 10.0.0.1:9000 conflicts with [::]:9000 of services[2]
        "#]],
    );
}

#[test]
fn analysis_steps_must_name_known_templates_and_supply_arguments() {
    let mut text = with_steps(
        1,
        r#"{ analysis = { templates = [{ templateName = "rate" }] } },
           { analysis = { templates = [{ templateName = "rate" }], args = [{ name = "threshold", value = "0.9" }] } },
           { analysis = { templates = [{ templateName = "nope" }] } },
           { analysis = { templates = [] } }"#,
    );
    text.push_str(
        r#"[[analysisTemplates]]
name = "rate"
args = [{ name = "threshold" }, { name = "version", value = "stable" }]
[[analysisTemplates.metrics]]
name = "rate"
successCondition = "result[0] > {{ args.threshold }}"
provider = { builtin = { query = "success_rate", version = "{{args.version}}" } }
"#,
    );
    check(
        &text,
        expect![[r#"
            doc.toml:7:47: services[0].strategy.canary.steps[0].analysis: template `rate` needs argument `threshold`, which the step does not set in `args`
            doc.toml:9:57: services[0].strategy.canary.steps[2].analysis.templates[0].templateName: no analysis template named `nope`
            doc.toml:10:39: services[0].strategy.canary.steps[3].analysis.templates: must name at least one template
        "#]],
    );
}

#[test]
fn template_placeholders_must_be_declared_arguments() {
    let mut text = with_steps(1, "");
    text.push_str(
        r#"[[analysisTemplates]]
name = "rate"
args = [{ name = "threshold", value = "0.9" }]
[[analysisTemplates.metrics]]
name = "rate"
successCondition = "result[0] > {{args.threshold}}"
failureCondition = "result[0] < {{args.floor}}"
provider = { builtin = { query = "success_rate", version = "{{args.which}}" } }
"#,
    );
    check(
        &text,
        expect![[r#"
            doc.toml:14:20: analysisTemplates[0].metrics[0].failureCondition: uses `{{args.floor}}`, but the template declares no argument `floor`
            doc.toml:15:60: analysisTemplates[0].metrics[0].provider.builtin.version: uses `{{args.which}}`, but the template declares no argument `which`
        "#]],
    );
}

#[test]
fn canary_steps_must_never_send_traffic_to_zero_instances() {
    // Scaling to zero before the weight goes up.
    check(
        &with_steps(
            4,
            "{ setCanaryScale = { replicas = 0 } }, { setWeight = 50 }",
        ),
        expect![[r#"
            doc.toml:7:73: services[0].strategy.canary.steps[1]: the canary would take 50% of traffic with 0 instances; scale the canary above 0 first
        "#]],
    );
    // Scaling to zero while the canary already has traffic.
    check(
        &with_steps(4, "{ setWeight = 10 }, { setCanaryScale = { weight = 0 } }"),
        expect![[r#"
            doc.toml:7:54: services[0].strategy.canary.steps[1]: the canary would take 10% of traffic with 0 instances; scale the canary above 0 first
        "#]],
    );
    // Following the weight again, or a weight-based scale that rounds up, is fine; so is a
    // zero scale while the weight is zero.
    for steps in [
        "{ setCanaryScale = { replicas = 0 } }, { setCanaryScale = { matchTrafficWeight = true } }, { setWeight = 50 }",
        "{ setCanaryScale = { weight = 1 } }, { setWeight = 50 }",
        "{ setCanaryScale = { replicas = 0 } }, { pause = {} }, { setCanaryScale = { replicas = 1 } }, { setWeight = 5 }",
        "{ setWeight = 1 }",
    ] {
        let text = with_steps(3, steps);
        assert!(parse_document(Path::new("doc.toml"), &text).is_ok(), "{steps}");
    }
}

#[test]
fn steps_are_tables_with_exactly_one_kind() {
    check(
        &with_steps(
            1,
            "{}, { setWeight = 10, pause = {} }, { pause = { duration = 30 }, bogus = 1 }, \
             { setCanaryScale = { replicas = 1, weight = 5 } }, { setCanaryScale = { matchTrafficWeight = false } }, 7",
        ),
        expect![[r#"
            doc.toml:7:34: services[0].strategy.canary.steps[0]: expected exactly one of `setWeight`, `pause`, `analysis`, `setCanaryScale`, found none
            doc.toml:7:56: services[0].strategy.canary.steps[1]: expected exactly one of `setWeight`, `pause`, `analysis`, `setCanaryScale`, found `setWeight` and `pause`
            doc.toml:7:99: services[0].strategy.canary.steps[2].bogus: unknown step `bogus`, expected one of `setWeight`, `pause`, `analysis`, `setCanaryScale`
            doc.toml:7:147: services[0].strategy.canary.steps[3].setCanaryScale: expected exactly one of `replicas`, `weight`, `matchTrafficWeight`, found `replicas` and `weight`
            doc.toml:7:205: services[0].strategy.canary.steps[4].setCanaryScale.matchTrafficWeight: must be true when given
            doc.toml:7:216: services[0].strategy.canary.steps[5]: expected a table, found an integer
        "#]],
    );
}

#[test]
fn required_fields_traffic_and_readiness_problems() {
    let text = r#"apiVersion = "edgeroll/v1"
[[services]]
name = "-web"
traffic = { tcp = "0.0.0.0:1883", protocol = "mqtt" }
template = { command = [], readiness = { tcp = false }, image = "x", env = { "A=B" = "1" } }
[[services]]
name = "api"
traffic = { http = "localhost:80" }
template = { version = "1", command = ["/bin/api", 3] }
strategy = { canary = { steps = [] }, blueGreen = {} }
[[services]]
traffic = { http = "0.0.0.0:0", protocol = "http" }
template = { version = "1", command = ["/bin/x"], readiness = { httpGet = "/", tcp = true } }
strategy = { canry = {} }
"#;
    check(
        text,
        expect![[r#"
            doc.toml:2:1: services[0].strategy: required field is missing
            doc.toml:3:8: services[0].name: "-web" is not a valid name: use 1–63 lowercase letters, digits and '-', not starting or ending with '-'
            doc.toml:4:19: services[0].traffic.tcp: tcp traffic is not supported yet
            doc.toml:5:12: services[0].template.version: required field is missing
            doc.toml:5:24: services[0].template.command: must name a program to run
            doc.toml:5:48: services[0].template.readiness.tcp: set `tcp = true`, or use `httpGet`
            doc.toml:5:78: services[0].template.env."A=B": not a valid environment variable name
            doc.toml:8:20: services[1].traffic.http: "localhost:80" is not an address such as "0.0.0.0:8080" or "[::1]:8080"
            doc.toml:9:52: services[1].template.command[1]: expected a string, found an integer
            doc.toml:10:39: services[1].strategy: expected exactly one of `canary`, `blueGreen`, found `canary` and `blueGreen`
            doc.toml:11:1: services[2].name: required field is missing
            doc.toml:12:20: services[2].traffic.http: port 0 is not allowed: clients need a fixed port
            doc.toml:12:44: services[2].traffic.protocol: only applies to tcp traffic
            doc.toml:13:80: services[2].template.readiness: expected exactly one of `httpGet`, `tcp`, found `httpGet` and `tcp`
            doc.toml:14:14: services[2].strategy.canry: unknown strategy `canry`, did you mean `canary`?
        "#]],
    );
}

#[test]
fn analysis_template_problems() {
    let text = r#"apiVersion = "edgeroll/v1"
[[analysisTemplates]]
name = "a"
args = [{ name = "x" }, { name = "x", valueFrom = {} }]
metrics = []
[[analysisTemplates]]
name = "a"
[[analysisTemplates.metrics]]
name = "m"
count = 3
failureLimit = -2
provider = { builtin = { query = "p99", window = "soon" } }
[[analysisTemplates.metrics]]
name = "m"
successCondition = "true"
provider = {}
[[analysisTemplates.metrics]]
name = "n"
successCondition = "true"
provider = { builtin = { query = "error_rate" }, web = {} }
[[analysisTemplates.metrics]]
name = "o"
successCondition = ""
provider = { graphana = {} }
"#;
    check(
        text,
        expect![[r#"
            doc.toml:4:34: analysisTemplates[0].args[1].name: duplicate argument `x`
            doc.toml:4:51: analysisTemplates[0].args[1].valueFrom: valueFrom is not supported yet
            doc.toml:5:11: analysisTemplates[0].metrics: must hold at least one metric
            doc.toml:7:8: analysisTemplates[1].name: duplicate analysis template name `a`
            doc.toml:8:1: analysisTemplates[1].metrics[0]: needs a successCondition or a failureCondition
            doc.toml:10:9: analysisTemplates[1].metrics[0].count: an interval is required when count is above 1
            doc.toml:11:16: analysisTemplates[1].metrics[0].failureLimit: -2 is less than -1
            doc.toml:12:34: analysisTemplates[1].metrics[0].provider.builtin.query: unknown query `p99`, expected one of success_rate, error_rate, request_rate, latency_p50, latency_p95, latency_p99
            doc.toml:12:50: analysisTemplates[1].metrics[0].provider.builtin.window: invalid duration `soon`: expected seconds or a duration such as 30s, 5m, 1h30m
            doc.toml:14:8: analysisTemplates[1].metrics[1].name: duplicate metric name `m`
            doc.toml:16:12: analysisTemplates[1].metrics[1].provider: expected exactly one of `builtin`, `prometheus`, `web`, `job`, `judge`, found none
            doc.toml:20:50: analysisTemplates[1].metrics[2].provider: expected exactly one of `builtin`, `prometheus`, `web`, `job`, `judge`, found `builtin` and `web`
            doc.toml:23:20: analysisTemplates[1].metrics[3].successCondition: must not be empty
            doc.toml:24:14: analysisTemplates[1].metrics[3].provider.graphana: unknown provider `graphana`, expected one of `builtin`, `prometheus`, `web`, `job`, `judge`
        "#]],
    );
}

#[test]
fn syntax_errors_are_reported_at_their_position() {
    check(
        "apiVersion = \"edgeroll/v1\"\nserial = = 3\nx = \"unterminated\n",
        expect![[r#"
            doc.toml:2:10: invalid toml: extra `=`, expected nothing
            doc.toml:3:18: invalid toml: invalid basic string, expected `"`
        "#]],
    );
    let json = "{\n  \"apiVersion\": \"edgeroll/v1\",\n  \"serial\": 1,,\n}";
    expect![[r#"
        doc.json:3:15: invalid json: expected a key in double quotes
    "#]]
    .assert_eq(&render(
        &parse_document(Path::new("doc.json"), json).unwrap_err(),
    ));
}

#[test]
fn json_documents_name_json_types() {
    let json =
        r#"{"apiVersion": "edgeroll/v1", "services": {"name": "x"}, "selector": {"a": null}}"#;
    expect![[r#"
        doc.json:1:43: services: expected an array, found an object
        doc.json:1:76: selector.a: expected a string, found null
    "#]]
    .assert_eq(&render(
        &parse_document(Path::new("doc.json"), json).unwrap_err(),
    ));
}

#[test]
fn missing_file_and_oversized_documents_are_one_diagnostic() {
    let missing = load_document(Path::new("/nonexistent/desired.toml")).unwrap_err();
    assert_eq!(missing.len(), 1);
    assert!(missing[0]
        .to_string()
        .starts_with("/nonexistent/desired.toml:1:1: cannot read desired document:"));
    let huge = format!(
        "apiVersion = \"edgeroll/v1\"\n#{}",
        "x".repeat(5 * 1024 * 1024)
    );
    let errors = parse_document(Path::new("big.toml"), &huge).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("more than the limit"),
        "{}",
        errors[0]
    );
}

#[test]
fn empty_document_needs_only_an_api_version() {
    check(
        "",
        expect![[r#"
        doc.toml:1:1: apiVersion: required field is missing
    "#]],
    );
    let document = parse_document(Path::new("doc.toml"), "apiVersion = \"edgeroll/v1\"").unwrap();
    assert!(document.services.is_empty());
    assert_eq!(document.serial, 0);
}

#[test]
fn expires_is_an_rfc3339_time_quoted_or_a_toml_datetime() {
    let quoted = parse_document(
        Path::new("doc.toml"),
        "apiVersion = \"edgeroll/v1\"\nexpires = \"2026-12-31T00:00:00Z\"\n",
    )
    .unwrap();
    let bare = parse_document(
        Path::new("doc.toml"),
        "apiVersion = \"edgeroll/v1\"\nexpires = 2026-12-31T00:00:00Z\n",
    )
    .unwrap();
    let json = parse_document(
        Path::new("doc.json"),
        r#"{"apiVersion": "edgeroll/v1", "expires": "2026-12-31T00:00:00Z"}"#,
    )
    .unwrap();
    let expected = edgeroll::time::Timestamp::from_millis(1_798_675_200_000);
    assert_eq!(quoted.expires, Some(expected));
    assert_eq!(bare.expires, Some(expected));
    assert_eq!(json.expires, Some(expected));
    let none = parse_document(Path::new("doc.toml"), "apiVersion = \"edgeroll/v1\"\n").unwrap();
    assert_eq!(none.expires, None);
}

#[test]
fn a_bad_expiry_is_reported_at_its_position() {
    check(
        "apiVersion = \"edgeroll/v1\"\nexpires = \"next tuesday\"\n",
        expect![[r#"
            doc.toml:2:11: expires: "next tuesday" is not an RFC 3339 time in UTC such as "2026-12-31T00:00:00Z"
        "#]],
    );
    check(
        "apiVersion = \"edgeroll/v1\"\nexpires = 17\n",
        expect![[r#"
            doc.toml:2:11: expires: expected a string, found an integer
        "#]],
    );
}
