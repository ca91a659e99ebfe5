//! Property tests of the desired-document parser: it never panics on any input, and generated
//! valid documents, written as TOML and as JSON, parse to exactly the values they were built from.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use edgeroll::spec::parse::parse_document;
use edgeroll::spec::{
    AnalysisStep, AnalysisTemplate, BuiltinMetric, BuiltinQuery, CanaryScale, CanaryStep,
    CanaryStrategy, Document, Metric, Provider, Readiness, ServiceSpec,
    Strategy as RolloutStrategy, Template, TemplateArg, Traffic,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};

/// A value and its document form, built together so the expectation is exact.
type Built<T> = (T, Json);

/// Either integer seconds or a duration string, with the `Duration` it means.
fn duration() -> impl Strategy<Value = Built<Duration>> {
    (1u64..100_000, 0..4u8).prop_map(|(amount, form)| match form {
        0 => (Duration::from_secs(amount), json!(amount)),
        1 => (Duration::from_secs(amount), json!(format!("{amount}s"))),
        2 => (
            Duration::from_secs(amount * 60),
            json!(format!("{amount}m")),
        ),
        _ => (Duration::from_millis(amount), json!(format!("{amount}ms"))),
    })
}

/// Text that is any string without NUL (which commands and env values reject).
fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn template() -> impl Strategy<Value = Built<Template>> {
    (
        "[0-9a-z.+-]{1,10}",
        "[^\u{0}]{1,12}",
        prop::collection::vec(text(), 0..4),
        prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", text(), 0..4),
        prop::option::of(prop::option::of("/[a-z/]{0,10}")),
    )
        .prop_map(|(version, program, arguments, env, readiness)| {
            let mut command = vec![program];
            command.extend(arguments);
            let mut document = json!({ "version": version, "command": command });
            if !env.is_empty() {
                document["env"] = json!(env);
            }
            let readiness = match readiness {
                None => Readiness::Tcp,
                Some(None) => {
                    document["readiness"] = json!({ "tcp": true });
                    Readiness::Tcp
                }
                Some(Some(path)) => {
                    document["readiness"] = json!({ "httpGet": path });
                    Readiness::HttpGet { path }
                }
            };
            (
                Template {
                    version,
                    command,
                    env,
                    readiness,
                    args: Vec::new(),
                    stop_signal: None,
                    container: None,
                },
                document,
            )
        })
}

fn metric(name: String, args: Vec<TemplateArg>) -> impl Strategy<Value = Built<Metric>> {
    (
        prop::option::of(duration()),
        prop::option::of(duration()),
        prop::option::of(1u32..10),
        any::<bool>(),
        prop::option::of(-1i32..5),
        prop::sample::select(BuiltinMetric::ALL.to_vec()),
        prop::option::of("[a-z0-9.]{1,8}"),
        prop::option::of(duration()),
    )
        .prop_map(
            move |(
                interval,
                initial_delay,
                count,
                use_arg,
                failure_limit,
                (query_name, query),
                version,
                window,
            )| {
                // A count above one needs an interval.
                let count = count.filter(|count| *count == 1 || interval.is_some());
                let condition = match args.first() {
                    Some(arg) if use_arg => format!("result[0] >= {{{{args.{}}}}}", arg.name),
                    _ => "result[0] >= 0.5".to_string(),
                };
                let mut document = json!({
                    "name": name,
                    "successCondition": condition,
                    "provider": { "builtin": { "query": query_name } },
                });
                if let Some((_, text)) = &interval {
                    document["interval"] = text.clone();
                }
                if let Some((_, text)) = &initial_delay {
                    document["initialDelay"] = text.clone();
                }
                if let Some(count) = count {
                    document["count"] = json!(count);
                }
                if let Some(limit) = failure_limit {
                    document["failureLimit"] = json!(limit);
                }
                if let Some(version) = &version {
                    document["provider"]["builtin"]["version"] = json!(version);
                }
                if let Some((_, text)) = &window {
                    document["provider"]["builtin"]["window"] = text.clone();
                }
                let metric = Metric {
                    name: name.clone(),
                    interval: interval.map(|(duration, _)| duration),
                    initial_delay: initial_delay.map(|(duration, _)| duration),
                    count,
                    success_condition: Some(condition),
                    failure_condition: None,
                    failure_limit: failure_limit.unwrap_or(0),
                    inconclusive_limit: 0,
                    consecutive_error_limit: 4,
                    consecutive_success_limit: 0,
                    dry_run: false,
                    measurement_retention: None,
                    wait_for_evidence: None,
                    provider: Provider::Builtin(BuiltinQuery {
                        query,
                        version: version.unwrap_or_else(|| "canary".into()),
                        window: window.map_or(Duration::from_secs(30), |(duration, _)| duration),
                        min_samples: 1,
                    }),
                };
                (metric, document)
            },
        )
}

fn analysis_template(index: usize) -> impl Strategy<Value = Built<AnalysisTemplate>> {
    prop::collection::vec(prop::option::of("[a-z0-9.]{0,6}"), 0..3).prop_flat_map(move |defaults| {
        let args: Vec<TemplateArg> = defaults
            .into_iter()
            .enumerate()
            .map(|(position, value)| TemplateArg {
                name: format!("arg{position}"),
                value,
            })
            .collect();
        let metrics: Vec<_> = (0..2)
            .map(|position| metric(format!("metric-{position}"), args.clone()))
            .collect();
        (Just(args), metrics, 1..=2usize).prop_map(move |(args, metrics, used)| {
            let metrics: Vec<_> = metrics.into_iter().take(used).collect();
            let name = format!("template-{index}");
            let document_args: Vec<Json> = args
                .iter()
                .map(|arg| match &arg.value {
                    Some(value) => json!({ "name": arg.name, "value": value }),
                    None => json!({ "name": arg.name }),
                })
                .collect();
            let document = json!({
                "name": name,
                "args": document_args,
                "metrics": metrics.iter().map(|(_, document)| document.clone()).collect::<Vec<_>>(),
            });
            let template = AnalysisTemplate {
                name,
                args,
                metrics: metrics.into_iter().map(|(metric, _)| metric).collect(),
            };
            (template, document)
        })
    })
}

fn step(templates: Vec<AnalysisTemplate>) -> impl Strategy<Value = Built<CanaryStep>> {
    let analysis = if templates.is_empty() {
        Just(None).boxed()
    } else {
        (prop::sample::select(templates), "[a-z0-9]{0,6}")
            .prop_map(|(template, value)| {
                // Supply every argument without a default, and sometimes override a default.
                let args: BTreeMap<String, String> = template
                    .args
                    .iter()
                    .filter(|arg| arg.value.is_none() || value.len() % 2 == 0)
                    .map(|arg| (arg.name.clone(), value.clone()))
                    .collect();
                let document_args: Vec<Json> = args
                    .iter()
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect();
                let document = json!({ "analysis": {
                    "templates": [{ "templateName": template.name }],
                    "args": document_args,
                }});
                let step = CanaryStep::Analysis(AnalysisStep {
                    templates: vec![template.name],
                    args,
                });
                Some((step, document))
            })
            .boxed()
    };
    prop_oneof![
        (0u8..=100).prop_map(|weight| Some((
            CanaryStep::SetWeight(weight),
            json!({ "setWeight": weight })
        ))),
        Just(Some((
            CanaryStep::Pause { duration: None },
            json!({ "pause": {} })
        ))),
        duration().prop_map(|(duration, text)| Some((
            CanaryStep::Pause {
                duration: Some(duration)
            },
            json!({ "pause": { "duration": text } })
        ))),
        // Scales never reach zero here, so every step list is usable.
        (1u32..=1000).prop_map(|replicas| Some((
            CanaryStep::SetCanaryScale(CanaryScale::Replicas(replicas)),
            json!({ "setCanaryScale": { "replicas": replicas } })
        ))),
        (1u8..=100).prop_map(|weight| Some((
            CanaryStep::SetCanaryScale(CanaryScale::Weight(weight)),
            json!({ "setCanaryScale": { "weight": weight } })
        ))),
        Just(Some((
            CanaryStep::SetCanaryScale(CanaryScale::MatchTrafficWeight),
            json!({ "setCanaryScale": { "matchTrafficWeight": true } })
        ))),
        analysis,
    ]
    .prop_filter_map("no templates to analyse with", |step| step)
}

fn service(
    index: usize,
    templates: Vec<AnalysisTemplate>,
) -> impl Strategy<Value = Built<ServiceSpec>> {
    (
        "[a-z][a-z0-9-]{0,20}",
        prop::option::of(1u32..=1000),
        prop::option::of(0u32..=100),
        prop::option::of(1u32..=100_000),
        prop::option::of(any::<bool>()),
        template(),
        prop::collection::vec(step(templates), 0..8),
    )
        .prop_map(
            move |(prefix, replicas, history, deadline, abort, (template, template_document), steps)| {
                // A unique name and port per service keep the cross-service checks quiet.
                let name = format!("{prefix}-{index}");
                let listen = format!("127.0.0.1:{}", 8000 + index);
                let mut document = json!({
                    "name": name,
                    "traffic": { "http": listen },
                    "template": template_document,
                    "strategy": { "canary": {
                        "steps": steps.iter().map(|(_, document)| document.clone()).collect::<Vec<_>>(),
                    }},
                });
                if let Some(replicas) = replicas {
                    document["replicas"] = json!(replicas);
                }
                if let Some(history) = history {
                    document["revisionHistoryLimit"] = json!(history);
                }
                if let Some(deadline) = deadline {
                    document["progressDeadlineSeconds"] = json!(deadline);
                }
                if let Some(abort) = abort {
                    document["progressDeadlineAbort"] = json!(abort);
                }
                let service = ServiceSpec {
                    name,
                    replicas: replicas.unwrap_or(1),
                    revision_history_limit: history.unwrap_or(10),
                    progress_deadline_seconds: deadline.unwrap_or(600),
                    progress_deadline_abort: abort.unwrap_or(false),
                    traffic: Traffic::Http { listen },
                    template,
                    strategy: RolloutStrategy::Canary(CanaryStrategy {
                        steps: steps.into_iter().map(|(step, _)| step).collect(),
                        analysis: None,
                    }),
                };
                (service, document)
            },
        )
}

fn document() -> impl Strategy<Value = Built<Document>> {
    (0..3usize)
        .prop_flat_map(|count| (0..count).map(analysis_template).collect::<Vec<_>>())
        .prop_flat_map(|templates| {
            let plain: Vec<AnalysisTemplate> = templates
                .iter()
                .map(|(template, _)| template.clone())
                .collect();
            let services: Vec<_> = (0..4).map(|index| service(index, plain.clone())).collect();
            (
                Just(templates),
                services,
                0..=4usize,
                prop::option::of(0u64..=u64::from(u32::MAX)),
                prop::collection::btree_map("[a-z]{1,6}", "[a-z0-9]{0,6}", 0..3),
            )
        })
        .prop_map(|(templates, services, used, serial, selector)| {
            let services: Vec<_> = services.into_iter().take(used).collect();
            let mut document = Map::new();
            document.insert("apiVersion".into(), json!("edgeroll/v1"));
            if let Some(serial) = serial {
                document.insert("serial".into(), json!(serial));
            }
            if !selector.is_empty() {
                document.insert("selector".into(), json!(selector));
            }
            document.insert(
                "services".into(),
                Json::Array(
                    services
                        .iter()
                        .map(|(_, document)| document.clone())
                        .collect(),
                ),
            );
            document.insert(
                "analysisTemplates".into(),
                Json::Array(
                    templates
                        .iter()
                        .map(|(_, document)| document.clone())
                        .collect(),
                ),
            );
            let expected = Document {
                serial: serial.unwrap_or(0),
                selector,
                expires: None,
                services: services.into_iter().map(|(service, _)| service).collect(),
                analysis_templates: templates
                    .into_iter()
                    .map(|(template, _)| (template.name.clone(), template))
                    .collect(),
            };
            (expected, Json::Object(document))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn generated_documents_parse_to_their_values_from_toml_and_json((expected, document) in document()) {
        let json_text = serde_json::to_string_pretty(&document).unwrap();
        let parsed = parse_document(Path::new("doc.json"), &json_text);
        prop_assert_eq!(parsed.as_ref(), Ok(&expected), "{}", json_text);

        let toml_text = toml::to_string(&document).unwrap();
        let parsed = parse_document(Path::new("doc.toml"), &toml_text);
        prop_assert_eq!(parsed.as_ref(), Ok(&expected), "{}", toml_text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_document(Path::new("doc"), &text);
    }

    #[test]
    fn toml_and_json_shaped_text_never_panics(text in r#"[\[\]{}\\"'=,.:a-zA-Z0-9 \n_-]{0,80}"#) {
        let _ = parse_document(Path::new("doc"), &text);
        let _ = parse_document(Path::new("doc"), &format!("{{{text}"));
    }

    #[test]
    fn damaged_valid_documents_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, any::<char>()), 1..6),
        json in any::<bool>(),
    ) {
        let name = if json { "valid.json" } else { "valid.toml" };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec").join(name);
        let mut text: Vec<char> = std::fs::read_to_string(path).unwrap().chars().collect();
        for (index, operation, character) in edits {
            let position = index.index(text.len().max(1)).min(text.len());
            match operation {
                0 if position < text.len() => { text.remove(position); }
                1 => text.insert(position, character),
                _ if position < text.len() => text[position] = character,
                _ => {}
            }
        }
        let text: String = text.into_iter().collect();
        let _ = parse_document(Path::new(name), &text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let dotted = format!("{} = 1", vec!["a"; 100_000].join("."));
    assert!(parse_document(Path::new("doc.toml"), &dotted).is_err());
    let arrays = format!("x = {}", "[".repeat(100_000));
    assert!(parse_document(Path::new("doc.toml"), &arrays).is_err());
    let json = format!("{{\"a\": {}", "[".repeat(100_000));
    assert!(parse_document(Path::new("doc.json"), &json).is_err());
}
