//! The parts of the desired document added for Argo parity beyond the canary core: blue-green,
//! background analysis, `consecutiveSuccessLimit`, template-level `dryRun` and
//! `measurementRetention`, and the `prometheus`, `web`, `job` and `judge` providers. Valid
//! forms parse to the values they mean; every mistake is reported at its line and column.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use edgeroll::diag::Diagnostic;
use edgeroll::spec::parse::parse_document;
use edgeroll::spec::{Document, JudgeSignal, Provider, Strategy};
use expect_test::{expect, Expect};

fn parse(text: &str) -> Result<Document, String> {
    parse_document(Path::new("doc.toml"), text).map_err(|diagnostics| render(&diagnostics))
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|diagnostic| format!("{diagnostic}\n"))
        .collect()
}

fn check(text: &str, expected: Expect) {
    match parse(text) {
        Ok(document) => panic!("expected errors, got {document:#?}"),
        Err(errors) => expected.assert_eq(&errors),
    }
}

/// One service (`replicas`, listening on 127.0.0.1:8080) with `strategy`, plus `templates`.
fn service(replicas: u32, strategy: &str, templates: &str) -> String {
    format!(
        "apiVersion = \"edgeroll/v1\"\n[[services]]\nname = \"web\"\nreplicas = {replicas}\n\
         traffic = {{ http = \"127.0.0.1:8080\" }}\n\
         template = {{ version = \"1\", command = [\"/bin/web\"] }}\nstrategy = {strategy}\n{templates}"
    )
}

/// A template named `rate` that needs the argument `threshold`.
const RATE_TEMPLATE: &str = r#"[[analysisTemplates]]
name = "rate"
args = [{ name = "threshold" }]
[[analysisTemplates.metrics]]
name = "rate"
successCondition = "result[0] >= {{args.threshold}}"
provider = { builtin = { query = "success_rate" } }
"#;

/// A template named `t` whose only metric uses `provider` and `conditions`.
fn metric_template(conditions: &str, provider: &str) -> String {
    format!(
        "[[analysisTemplates]]\nname = \"t\"\nargs = [{{ name = \"host\", value = \"127.0.0.1\" }}]\n\
         [[analysisTemplates.metrics]]\nname = \"m\"\n{conditions}provider = {provider}\n"
    )
}

#[test]
fn blue_green_parses_with_argo_defaults() {
    let text = service(
        3,
        r#"{ blueGreen = { activeService = "127.0.0.1:8080", previewService = "127.0.0.1:8081", previewReplicaCount = 1, autoPromotionSeconds = 0,
             prePromotionAnalysis = { templates = [{ templateName = "rate" }], args = [{ name = "threshold", value = "0.99" }] },
             postPromotionAnalysis = { templates = [{ templateName = "rate" }], args = [{ name = "threshold", value = "0.98" }] },
             scaleDownDelaySeconds = 0 } }"#,
        RATE_TEMPLATE,
    );
    let document = parse(&text).unwrap();
    let Strategy::BlueGreen(blue_green) = &document.services[0].strategy else {
        panic!("blue-green");
    };
    assert_eq!(blue_green.preview_listen.as_deref(), Some("127.0.0.1:8081"));
    assert_eq!(blue_green.preview_replica_count, Some(1));
    assert!(blue_green.auto_promotion_enabled);
    assert_eq!(blue_green.auto_promotion_seconds, Some(0));
    let pre = blue_green.pre_promotion_analysis.as_ref().unwrap();
    assert_eq!(pre.templates, vec!["rate".to_string()]);
    assert_eq!(pre.args["threshold"], "0.99");
    assert_eq!(
        blue_green.post_promotion_analysis.as_ref().unwrap().args["threshold"],
        "0.98"
    );
    assert_eq!(blue_green.scale_down_delay_seconds, 0);
    assert_eq!(blue_green.abort_scale_down_delay_seconds, 30);

    // Everything left out: no preview, automatic promotion, 30 s delays.
    let minimal = parse(&service(1, "{ blueGreen = {} }", "")).unwrap();
    let Strategy::BlueGreen(blue_green) = &minimal.services[0].strategy else {
        panic!("blue-green");
    };
    assert_eq!(blue_green.preview_listen, None);
    assert_eq!(blue_green.preview_replica_count, None);
    assert!(blue_green.auto_promotion_enabled);
    assert_eq!(blue_green.auto_promotion_seconds, None);
    assert_eq!(blue_green.pre_promotion_analysis, None);
    assert_eq!(blue_green.scale_down_delay_seconds, 30);
    assert_eq!(blue_green.abort_scale_down_delay_seconds, 30);
}

#[test]
fn blue_green_mistakes_are_reported_at_their_field() {
    let text = service(
        2,
        r#"{ blueGreen = { activeService = "127.0.0.1:9000", previewService = "127.0.0.1:8080", previewReplicaCount = 3,
             autoPromotionEnabled = false, autoPromotionSeconds = 10, scaleDownDelaySeconds = -1, abortScaleDownDelaySeconds = "30",
             prePromotionAnalysis = { templates = [{ templateName = "rate" }] },
             postPromotionAnalysis = { templates = [{ templateName = "rat" }], args = [{ name = "threshold", value = "1" }] },
             steps = [], previewServce = "x" } }"#,
        RATE_TEMPLATE,
    );
    check(
        &text,
        expect![[r#"
            doc.toml:7:44: services[0].strategy.blueGreen.activeService: must equal traffic.http ("127.0.0.1:8080"): the active service is the service's traffic listener; leave activeService out or repeat it
            doc.toml:7:79: services[0].strategy.blueGreen.previewService: listener 127.0.0.1:8080 is already used by services[0]
            doc.toml:7:119: services[0].strategy.blueGreen.previewReplicaCount: 3 is more than the service's replicas (2)
            doc.toml:8:67: services[0].strategy.blueGreen.autoPromotionSeconds: has no effect when autoPromotionEnabled is false: remove one of them
            doc.toml:8:95: services[0].strategy.blueGreen.scaleDownDelaySeconds: -1 is less than 0
            doc.toml:8:128: services[0].strategy.blueGreen.abortScaleDownDelaySeconds: expected an integer, found a string
            doc.toml:9:37: services[0].strategy.blueGreen.prePromotionAnalysis: template `rate` needs argument `threshold`, which the analysis does not set in `args`
            doc.toml:10:70: services[0].strategy.blueGreen.postPromotionAnalysis.templates[0].templateName: no analysis template named `rat`, did you mean `rate`?
            doc.toml:11:22: services[0].strategy.blueGreen.steps: blue-green has no steps: use `canary` for a stepwise rollout
            doc.toml:11:26: services[0].strategy.blueGreen.previewServce: unknown field, did you mean `previewService`?
        "#]],
    );
}

#[test]
fn preview_listeners_conflict_with_every_other_listener() {
    let text = format!(
        "{}{}",
        service(
            1,
            r#"{ blueGreen = { previewService = "0.0.0.0:9000" } }"#,
            ""
        ),
        "[[services]]\nname = \"api\"\ntraffic = { http = \"127.0.0.1:9000\" }\n\
         template = { version = \"1\", command = [\"/bin/api\"] }\n\
         strategy = { blueGreen = { previewService = \"127.0.0.1:8080\" } }\n",
    );
    check(
        &text,
        expect![[r#"
            doc.toml:10:20: services[1].traffic.http: listener 127.0.0.1:9000 conflicts with 0.0.0.0:9000 of services[0] (previewService)
            doc.toml:12:45: services[1].strategy.blueGreen.previewService: listener 127.0.0.1:8080 is already used by services[0]
        "#]],
    );
}

#[test]
fn background_analysis_parses_and_checks_its_starting_step() {
    let text = service(
        1,
        r#"{ canary = { steps = [{ setWeight = 20 }, { pause = {} }], analysis = { templates = [{ templateName = "rate" }], args = [{ name = "threshold", value = "0.9" }], startingStep = 1 } } }"#,
        RATE_TEMPLATE,
    );
    let document = parse(&text).unwrap();
    let Strategy::Canary(canary) = &document.services[0].strategy else {
        panic!("canary");
    };
    let background = canary.analysis.as_ref().unwrap();
    assert_eq!(background.starting_step, 1);
    assert_eq!(background.analysis.templates, vec!["rate".to_string()]);
    assert_eq!(
        background.analysis.args,
        BTreeMap::from([("threshold".to_string(), "0.9".to_string())])
    );

    check(
        &service(
            1,
            r#"{ canary = { steps = [{ setWeight = 20 }], analysis = { templates = [{ templateName = "rate" }], startingStep = 1, startingstep = 0 } } }"#,
            RATE_TEMPLATE,
        ),
        expect![[r#"
            doc.toml:7:66: services[0].strategy.canary.analysis: template `rate` needs argument `threshold`, which the analysis does not set in `args`
            doc.toml:7:124: services[0].strategy.canary.analysis.startingStep: step 1 does not exist: the canary has 1 steps, numbered from 0
            doc.toml:7:127: services[0].strategy.canary.analysis.startingstep: unknown field, did you mean `startingStep`?
        "#]],
    );
}

#[test]
fn dry_run_and_measurement_retention_resolve_onto_metrics() {
    let text = service(
        1,
        "{ canary = {} }",
        r#"[[analysisTemplates]]
name = "t"
dryRun = [{ metricName = "latency.*" }]
measurementRetention = [{ metricName = ".*", limit = 20 }, { metricName = "errors", limit = 5 }]
[[analysisTemplates.metrics]]
name = "latency-p99"
failureCondition = "result[0] > 0.5"
consecutiveSuccessLimit = 3
provider = { builtin = { query = "latency_p99" } }
[[analysisTemplates.metrics]]
name = "errors"
failureCondition = "result[0] > 0.01"
provider = { builtin = { query = "error_rate" } }
"#,
    );
    let document = parse(&text).unwrap();
    let metrics = &document.analysis_templates["t"].metrics;
    assert!(metrics[0].dry_run);
    assert_eq!(metrics[0].consecutive_success_limit, 3);
    assert_eq!(metrics[0].measurement_retention, Some(20));
    assert!(!metrics[1].dry_run);
    assert_eq!(metrics[1].consecutive_success_limit, 0);
    // The last matching rule wins, as in Argo.
    assert_eq!(metrics[1].measurement_retention, Some(5));

    check(
        &service(
            1,
            "{ canary = {} }",
            r#"[[analysisTemplates]]
name = "t"
dryRun = [{ metricName = "eror" }, { metricName = "^err(or)?s$" }, { metricName = "" }, {}]
measurementRetention = [{ metricName = "errors", limit = 0 }, { metricName = "x.*", limit = 2 }, { metricName = "errors" }]
[[analysisTemplates.metrics]]
name = "errors"
failureCondition = "result[0] > 0.01"
provider = { builtin = { query = "error_rate" } }
"#,
        ),
        expect![[r#"
            doc.toml:10:26: analysisTemplates[0].dryRun[0].metricName: "eror" matches no metric of this template, did you mean `errors`?
            doc.toml:10:51: analysisTemplates[0].dryRun[1].metricName: "^err(or)?s$" is not supported: only exact names, `.*` and `prefix.*` are supported
            doc.toml:10:83: analysisTemplates[0].dryRun[2].metricName: must not be empty
            doc.toml:10:89: analysisTemplates[0].dryRun[3].metricName: required field is missing
            doc.toml:11:58: analysisTemplates[0].measurementRetention[0].limit: 0 is less than 1
            doc.toml:11:78: analysisTemplates[0].measurementRetention[1].metricName: "x.*" matches no metric of this template
            doc.toml:11:98: analysisTemplates[0].measurementRetention[2].limit: required field is missing
        "#]],
    );
}

#[test]
fn every_provider_parses_with_its_defaults() {
    let templates = format!(
        "{}{}",
        metric_template(
            "successCondition = \"result[0] >= 0.99\"\n",
            r#"{ prometheus = { address = "http://{{args.host}}:9090", query = "sum(up{job=\"{{args.host}}\"})" } }"#,
        ),
        r#"[[analysisTemplates.metrics]]
name = "web"
successCondition = "result == true"
provider = { web = { url = "https://example.test/health", method = "POST", headers = [{ key = "Authorization", value = "Bearer {{args.host}}" }], body = "{}", jsonPath = "{$.data.ok}", timeout = "2s" } }
[[analysisTemplates.metrics]]
name = "job"
provider = { job = { command = ["sh", "-c", "curl -fsS http://{{args.host}}/ready"], deadline = "30s" } }
[[analysisTemplates.metrics]]
name = "judge"
provider = { judge = { signal = "latency" } }
[[analysisTemplates.metrics]]
name = "judge-errors"
successCondition = "result != 'Fail'"
provider = { judge = { signal = "errors", window = "2m", minSamples = 10, confidence = 0.99, allowedIncrease = 0 } }
"#
    );
    let document = parse(&service(1, "{ canary = {} }", &templates)).unwrap();
    let metrics = &document.analysis_templates["t"].metrics;
    let Provider::Prometheus(prometheus) = &metrics[0].provider else {
        panic!("prometheus");
    };
    assert_eq!(prometheus.address, "http://{{args.host}}:9090");
    assert_eq!(prometheus.timeout, Duration::from_secs(10));
    let Provider::Web(web) = &metrics[1].provider else {
        panic!("web");
    };
    assert_eq!(web.method, "POST");
    assert_eq!(
        web.headers,
        vec![(
            "Authorization".to_string(),
            "Bearer {{args.host}}".to_string()
        )]
    );
    assert_eq!(web.body.as_deref(), Some("{}"));
    assert_eq!(web.json_path.as_deref(), Some("{$.data.ok}"));
    assert_eq!(web.timeout, Duration::from_secs(2));
    // A job metric without conditions succeeds on exit 0.
    let Provider::Job(job) = &metrics[2].provider else {
        panic!("job");
    };
    assert_eq!(job.deadline, Duration::from_secs(30));
    assert_eq!(
        metrics[2].success_condition.as_deref(),
        Some("result == true")
    );
    assert_eq!(metrics[2].failure_condition, None);
    // A judge metric without conditions follows the verdict.
    let Provider::Judge(judge) = &metrics[3].provider else {
        panic!("judge");
    };
    assert_eq!(judge.signal, JudgeSignal::Latency);
    assert_eq!(judge.window, Duration::from_secs(60));
    assert_eq!(judge.min_samples, 50);
    assert!((judge.confidence - 0.95).abs() < f64::EPSILON);
    assert!((judge.allowed_increase - 0.1).abs() < f64::EPSILON);
    assert_eq!(
        metrics[3].success_condition.as_deref(),
        Some("result == 'Pass'")
    );
    assert_eq!(
        metrics[3].failure_condition.as_deref(),
        Some("result == 'Fail'")
    );
    // Conditions that are given are kept as given.
    let Provider::Judge(judge) = &metrics[4].provider else {
        panic!("judge");
    };
    assert_eq!(judge.signal, JudgeSignal::Errors);
    assert_eq!(judge.min_samples, 10);
    assert_eq!(judge.allowed_increase, 0.0);
    assert_eq!(
        metrics[4].success_condition.as_deref(),
        Some("result != 'Fail'")
    );
    assert_eq!(metrics[4].failure_condition, None);
}

#[test]
fn provider_mistakes_are_reported_at_their_field() {
    let templates = format!(
        "{}{}",
        metric_template(
            "successCondition = \"true\"\n",
            r#"{ prometheus = { address = "127.0.0.1:9090", query = "", timeout = "fast" } }"#,
        ),
        r#"[[analysisTemplates.metrics]]
name = "web"
provider = { web = { url = "https://{{args.hots}}/x", method = "PUT", headers = [{ key = "Bad Header", value = "a\nb" }, { name = "x" }], body = "{}", jsonPath = "$.items[*]" } }
[[analysisTemplates.metrics]]
name = "get-with-body"
successCondition = "true"
provider = { web = { url = "ftp://example.test", body = "x", jsonBody = {} } }
[[analysisTemplates.metrics]]
name = "job"
provider = { job = { command = [], activeDeadlineSeconds = 60 } }
[[analysisTemplates.metrics]]
name = "job-args"
provider = { job = { command = ["check", "{{args.nope}}"], deadline = 0 } }
[[analysisTemplates.metrics]]
name = "judge"
provider = { judge = { signal = "throughput", confidence = 1.0, allowedIncrease = -0.1, minSamples = 0 } }
[[analysisTemplates.metrics]]
name = "judge-confidence"
provider = { judge = { confidence = "high" } }
[[analysisTemplates.metrics]]
name = "datadog"
successCondition = "true"
consecutiveSuccessLimit = -1
provider = { datadog = {} }
"#
    );
    check(
        &service(1, "{ canary = {} }", &templates),
        expect![[r#"
            doc.toml:14:39: analysisTemplates[0].metrics[0].provider.prometheus.address: "127.0.0.1:9090" is not an http:// or https:// URL with a host
            doc.toml:14:65: analysisTemplates[0].metrics[0].provider.prometheus.query: must not be empty
            doc.toml:14:79: analysisTemplates[0].metrics[0].provider.prometheus.timeout: invalid duration `fast`: expected seconds or a duration such as 30s, 5m, 1h30m
            doc.toml:15:1: analysisTemplates[0].metrics[1]: needs a successCondition or a failureCondition
            doc.toml:17:28: analysisTemplates[0].metrics[1].provider.web.url: uses `{{args.hots}}`, but the template declares no argument `hots`
            doc.toml:17:64: analysisTemplates[0].metrics[1].provider.web.method: unsupported method "PUT", expected "GET" or "POST"
            doc.toml:17:90: analysisTemplates[0].metrics[1].provider.web.headers[0].key: "Bad Header" is not a valid HTTP header name
            doc.toml:17:112: analysisTemplates[0].metrics[1].provider.web.headers[0].value: must not contain control characters such as line breaks
            doc.toml:17:122: analysisTemplates[0].metrics[1].provider.web.headers[1].key: required field is missing
            doc.toml:17:122: analysisTemplates[0].metrics[1].provider.web.headers[1].value: required field is missing
            doc.toml:17:124: analysisTemplates[0].metrics[1].provider.web.headers[1].name: unknown field, expected one of `key`, `value`
            doc.toml:17:163: analysisTemplates[0].metrics[1].provider.web.jsonPath: json path "$.items[*]" is not supported: use `$`, `.key`, `['key']` and `[N]` (filters, wildcards and slices are not supported)
            doc.toml:21:28: analysisTemplates[0].metrics[2].provider.web.url: "ftp://example.test" is not an http:// or https:// URL with a host
            doc.toml:21:57: analysisTemplates[0].metrics[2].provider.web.body: a body is only sent with method "POST"
            doc.toml:21:73: analysisTemplates[0].metrics[2].provider.web.jsonBody: jsonBody is not supported: send the JSON text as `body`
            doc.toml:24:32: analysisTemplates[0].metrics[3].provider.job.command: must name a program to run
            doc.toml:24:60: analysisTemplates[0].metrics[3].provider.job.activeDeadlineSeconds: write Argo's activeDeadlineSeconds as `deadline` (e.g. deadline = "60s")
            doc.toml:27:42: analysisTemplates[0].metrics[4].provider.job.command[1]: uses `{{args.nope}}`, but the template declares no argument `nope`
            doc.toml:27:71: analysisTemplates[0].metrics[4].provider.job.deadline: duration 0 must be positive
            doc.toml:30:33: analysisTemplates[0].metrics[5].provider.judge.signal: unknown signal "throughput", expected "latency" or "errors"
            doc.toml:30:60: analysisTemplates[0].metrics[5].provider.judge.confidence: 1 is outside (0.5, 1), e.g. 0.95
            doc.toml:30:83: analysisTemplates[0].metrics[5].provider.judge.allowedIncrease: -0.1 is negative: give the tolerated relative increase, e.g. 0.1
            doc.toml:30:102: analysisTemplates[0].metrics[5].provider.judge.minSamples: 0 is less than 1
            doc.toml:33:22: analysisTemplates[0].metrics[6].provider.judge.signal: required field is missing
            doc.toml:33:37: analysisTemplates[0].metrics[6].provider.judge.confidence: expected a number, found a string
            doc.toml:37:27: analysisTemplates[0].metrics[7].consecutiveSuccessLimit: -1 is less than 0
            doc.toml:38:24: analysisTemplates[0].metrics[7].provider.datadog: provider `datadog` is not supported yet
        "#]],
    );
}

#[test]
fn builtin_min_samples_and_wait_for_evidence_parse_with_their_defaults() {
    let text = service(
        1,
        "{ canary = {} }",
        r#"[[analysisTemplates]]
name = "t"
[[analysisTemplates.metrics]]
name = "defaults"
successCondition = "result[0] >= 0.99"
provider = { builtin = { query = "success_rate" } }
[[analysisTemplates.metrics]]
name = "waits"
successCondition = "result[0] >= 0.99"
waitForEvidence = "2m"
provider = { builtin = { query = "success_rate", minSamples = 20 } }
[[analysisTemplates.metrics]]
name = "argo"
successCondition = "result[0] >= 0.99"
waitForEvidence = "0s"
provider = { builtin = { query = "success_rate" } }
[[analysisTemplates.metrics]]
name = "argo-integer"
successCondition = "result[0] >= 0.99"
waitForEvidence = 0
provider = { builtin = { query = "success_rate" } }
"#,
    );
    let document = parse(&text).unwrap();
    let metrics = &document.analysis_templates["t"].metrics;
    let min_samples = |index: usize| match &metrics[index].provider {
        Provider::Builtin(query) => query.min_samples,
        other => panic!("builtin expected, got {other:?}"),
    };
    assert_eq!(min_samples(0), 1);
    assert_eq!(metrics[0].wait_for_evidence, None);
    assert_eq!(min_samples(1), 20);
    assert_eq!(metrics[1].wait_for_evidence, Some(Duration::from_secs(120)));
    assert_eq!(metrics[2].wait_for_evidence, Some(Duration::ZERO));
    assert_eq!(metrics[3].wait_for_evidence, Some(Duration::ZERO));
}

#[test]
fn min_samples_and_wait_for_evidence_mistakes_are_reported_at_their_field() {
    check(
        &service(
            1,
            "{ canary = {} }",
            r#"[[analysisTemplates]]
name = "t"
[[analysisTemplates.metrics]]
name = "m"
successCondition = "result[0] >= 0.99"
waitForEvidence = "-5m"
provider = { builtin = { query = "success_rate", minSamples = 0 } }
[[analysisTemplates.metrics]]
name = "n"
successCondition = "result[0] >= 0.99"
waitForEvidence = "soon"
provider = { builtin = { query = "success_rate", minSamples = "many" } }
"#,
        ),
        expect![[r#"
            doc.toml:13:19: analysisTemplates[0].metrics[0].waitForEvidence: duration `-5m` must be positive
            doc.toml:14:63: analysisTemplates[0].metrics[0].provider.builtin.minSamples: 0 is less than 1
            doc.toml:18:19: analysisTemplates[0].metrics[1].waitForEvidence: invalid duration `soon`: expected seconds or a duration such as 30s, 5m, 1h30m
            doc.toml:19:63: analysisTemplates[0].metrics[1].provider.builtin.minSamples: expected an integer, found a string
        "#]],
    );
}
