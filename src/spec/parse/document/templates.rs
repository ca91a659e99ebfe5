//! Analysis templates: arguments, metrics, `dryRun` and `measurementRetention` patterns, and
//! the conditions they carry. Nothing here reads files.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;

pub(super) type Templates = (
    Option<BTreeMap<String, AnalysisTemplate>>,
    BTreeMap<String, TemplateInfo>,
);

pub(super) fn read_templates(reader: &mut Reader<'_>, path: &str, value: &Value) -> Templates {
    let mut info = BTreeMap::new();
    let Some(elements) = reader.array(path, value) else {
        return (None, info);
    };
    let mut templates = BTreeMap::new();
    let mut complete = true;
    for (index, element) in elements.iter().enumerate() {
        let template_path = index_path(path, index);
        let Some(mut table) = reader.table(&template_path, element) else {
            complete = false;
            continue;
        };
        let name = table.required(reader, "name").and_then(|(path, value)| {
            let name = reader.string(&path, value)?;
            check_name(reader, &path, value, name)?;
            if info.contains_key(name) {
                reader.error(
                    value,
                    &path,
                    format!("duplicate analysis template name `{name}`"),
                );
                return None;
            }
            Some(name.to_string())
        });
        let args = match table.get("args") {
            Some((path, value)) => read_args(reader, &path, value, false),
            None => Some(Vec::new()),
        };
        if let Some(name) = &name {
            info.insert(name.clone(), TemplateInfo { args: args.clone() });
        }
        let mut metrics = table
            .required(reader, "metrics")
            .and_then(|(path, value)| read_metrics(reader, &path, value, args.as_deref()));
        let dry_run = optional(table.get("dryRun"), |path, value| {
            read_metric_rules(reader, path, value, metrics.as_deref(), false)
        });
        let retention = optional(table.get("measurementRetention"), |path, value| {
            read_metric_rules(reader, path, value, metrics.as_deref(), true)
        });
        if let (Some(metrics), Some(dry_run), Some(retention)) =
            (&mut metrics, &dry_run, &retention)
        {
            apply_metric_rules(metrics, dry_run.as_deref(), retention.as_deref());
        }
        let metrics = match (dry_run, retention) {
            (Some(_), Some(_)) => metrics,
            _ => None,
        };
        table.finish(reader);
        match (name, args, metrics) {
            (Some(name), Some(args), Some(metrics)) => {
                templates.insert(
                    name.clone(),
                    AnalysisTemplate {
                        name,
                        args,
                        metrics,
                    },
                );
            }
            _ => complete = false,
        }
    }
    (complete.then_some(templates), info)
}

/// One `dryRun` or `measurementRetention` entry: which metrics it selects, and the limit.
pub(super) struct MetricRule {
    pattern: MetricPattern,
    limit: Option<u32>,
}

/// The part of Argo's `metricName` regular expressions that edgeroll supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MetricPattern {
    /// `.*`: every metric.
    All,
    /// `prefix.*`: every metric whose name starts with the prefix.
    Prefix(String),
    /// A plain name: that metric.
    Exact(String),
}

impl MetricPattern {
    /// Classify `text`, or say why it is not one of the supported forms.
    fn parse(text: &str) -> Result<MetricPattern, String> {
        if text == ".*" {
            return Ok(MetricPattern::All);
        }
        let (stem, prefix) = match text.strip_suffix(".*") {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if stem.is_empty() || stem.contains(REGEX_META) {
            return Err(format!("{text:?} is not supported: {PATTERN_HINT}"));
        }
        Ok(if prefix {
            MetricPattern::Prefix(stem.to_string())
        } else {
            MetricPattern::Exact(stem.to_string())
        })
    }

    /// Whether the whole of `name` matches (Argo's match is unanchored; edgeroll's exact names
    /// are anchored, so a pattern never selects more metrics than it names).
    fn matches(&self, name: &str) -> bool {
        match self {
            MetricPattern::All => true,
            MetricPattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
            MetricPattern::Exact(exact) => name == exact,
        }
    }
}

/// `dryRun = [{ metricName }]` or, `with_limit`, `measurementRetention = [{ metricName, limit }]`.
/// Every pattern must match a metric of the template (as Argo requires); when the metrics are
/// themselves invalid (`None`) that check is skipped.
pub(super) fn read_metric_rules(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    metrics: Option<&[Metric]>,
    with_limit: bool,
) -> Option<Vec<MetricRule>> {
    let elements = reader.array(path, value)?;
    let mut rules = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        let Some(mut table) = reader.table(&element_path, element) else {
            continue;
        };
        let pattern = table
            .required(reader, "metricName")
            .and_then(|(name_path, name_value)| {
                let text = reader.non_empty_string(&name_path, name_value)?;
                let pattern = MetricPattern::parse(text)
                    .map_err(|message| reader.error(name_value, &name_path, message))
                    .ok()?;
                if let Some(metrics) = metrics {
                    if !metrics.iter().any(|metric| pattern.matches(&metric.name)) {
                        let names: Vec<&str> =
                            metrics.iter().map(|metric| metric.name.as_str()).collect();
                        let hint = match suggest(text, &names) {
                            Some(close) => format!(", did you mean `{close}`?"),
                            None => String::new(),
                        };
                        reader.error(
                            name_value,
                            &name_path,
                            format!("{text:?} matches no metric of this template{hint}"),
                        );
                        return None;
                    }
                }
                Some(pattern)
            });
        let limit = if with_limit {
            table
                .required(reader, "limit")
                .and_then(|(limit_path, limit_value)| {
                    reader.int::<u32>(&limit_path, limit_value, 1..=i64::from(u32::MAX))
                })
                .map(Some)
        } else {
            Some(None)
        };
        table.finish(reader);
        if let (Some(pattern), Some(limit)) = (pattern, limit) {
            rules.push(MetricRule { pattern, limit });
        }
    }
    (rules.len() == elements.len()).then_some(rules)
}

/// Mark the metrics selected by `dry_run` and give those selected by `retention` their limit
/// (the last matching rule wins, as in Argo).
pub(super) fn apply_metric_rules(
    metrics: &mut [Metric],
    dry_run: Option<&[MetricRule]>,
    retention: Option<&[MetricRule]>,
) {
    for metric in metrics {
        if let Some(rules) = dry_run {
            metric.dry_run = rules.iter().any(|rule| rule.pattern.matches(&metric.name));
        }
        if let Some(rules) = retention {
            if let Some(rule) = rules
                .iter()
                .rev()
                .find(|rule| rule.pattern.matches(&metric.name))
            {
                metric.measurement_retention = rule.limit;
            }
        }
    }
}

pub(super) fn read_metrics(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    args: Option<&[TemplateArg]>,
) -> Option<Vec<Metric>> {
    let elements = reader.array(path, value)?;
    if elements.is_empty() {
        reader.error(value, path, "must hold at least one metric");
        return None;
    }
    let mut metrics: Vec<Metric> = Vec::with_capacity(elements.len());
    let mut names = BTreeSet::new();
    let mut complete = true;
    for (index, element) in elements.iter().enumerate() {
        let metric_path = index_path(path, index);
        let Some(mut table) = reader.table(&metric_path, element) else {
            complete = false;
            continue;
        };
        let metric = read_metric(reader, &mut table, args, &mut names);
        table.finish(reader);
        match metric {
            Some(metric) => metrics.push(metric),
            None => complete = false,
        }
    }
    complete.then_some(metrics)
}

pub(super) fn read_metric(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
    args: Option<&[TemplateArg]>,
    names: &mut BTreeSet<String>,
) -> Option<Metric> {
    let name = table.required(reader, "name").and_then(|(path, value)| {
        let name = reader.non_empty_string(&path, value)?;
        if !names.insert(name.to_string()) {
            reader.error(value, &path, format!("duplicate metric name `{name}`"));
            return None;
        }
        Some(name.to_string())
    });
    let interval = optional(table.get("interval"), |path, value| {
        reader.duration(path, value)
    });
    let initial_delay = optional(table.get("initialDelay"), |path, value| {
        reader.duration(path, value)
    });
    let count_entry = table.get("count");
    let count = optional(count_entry.clone(), |path, value| {
        reader.int::<u32>(path, value, 1..=i64::from(u32::MAX))
    });
    if let (Some((count_path, count_value)), Some(Some(count)), Some(None)) =
        (&count_entry, count, interval)
    {
        if count > 1 {
            reader.error(
                count_value,
                count_path,
                "an interval is required when count is above 1",
            );
        }
    }
    let success_condition = optional(table.get("successCondition"), |path, value| {
        read_condition(reader, path, value, args)
    });
    let failure_condition = optional(table.get("failureCondition"), |path, value| {
        read_condition(reader, path, value, args)
    });
    let failure_limit = match table.get("failureLimit") {
        Some((path, value)) => reader.int::<i32>(&path, value, -1..=i64::from(i32::MAX)),
        None => Some(0),
    };
    let inconclusive_limit = match table.get("inconclusiveLimit") {
        Some((path, value)) => reader.int::<u32>(&path, value, 0..=i64::from(u32::MAX)),
        None => Some(0),
    };
    let consecutive_error_limit = match table.get("consecutiveErrorLimit") {
        Some((path, value)) => reader.int::<u32>(&path, value, 0..=i64::from(u32::MAX)),
        None => Some(DEFAULT_CONSECUTIVE_ERROR_LIMIT),
    };
    let consecutive_success_limit = match table.get("consecutiveSuccessLimit") {
        Some((path, value)) => reader.int::<u32>(&path, value, 0..=i64::from(u32::MAX)),
        None => Some(0),
    };
    let wait_for_evidence = optional(table.get("waitForEvidence"), |path, value| {
        read_wait_for_evidence(reader, path, value)
    });
    let provider_entry = table.required(reader, "provider");
    let decides_itself = provider_entry
        .as_ref()
        .is_some_and(|(_, value)| names_self_deciding_provider(value));
    let provider =
        provider_entry.and_then(|(path, value)| read_provider(reader, &path, value, args));
    // The judge and job providers say themselves whether the measurement passed, so their
    // metrics may leave the conditions out and get the obvious ones; every other provider
    // returns a figure that only the user can judge.
    let (success_condition, failure_condition) = match (success_condition, failure_condition) {
        (Some(None), Some(None)) => match &provider {
            Some(Provider::Judge(_)) => (
                Some(Some(JUDGE_CONDITIONS.0.to_string())),
                Some(Some(JUDGE_CONDITIONS.1.to_string())),
            ),
            Some(Provider::Job(_)) => (Some(Some(JOB_SUCCESS_CONDITION.to_string())), Some(None)),
            _ => {
                // An invalid judge or job provider is reported on its own; asking for a
                // condition it does not need would only mislead.
                if !decides_itself {
                    let path = table.path().to_string();
                    reader.error(
                        table.value(),
                        &path,
                        "needs a successCondition or a failureCondition",
                    );
                }
                (Some(None), Some(None))
            }
        },
        conditions => conditions,
    };
    Some(Metric {
        name: name?,
        interval: interval?,
        initial_delay: initial_delay?,
        count: count?,
        success_condition: success_condition?,
        failure_condition: failure_condition?,
        failure_limit: failure_limit?,
        inconclusive_limit: inconclusive_limit?,
        consecutive_error_limit: consecutive_error_limit?,
        consecutive_success_limit: consecutive_success_limit?,
        dry_run: false,
        measurement_retention: None,
        wait_for_evidence: wait_for_evidence?,
        provider: provider?,
    })
}

/// `waitForEvidence`: a duration, where (unlike every other duration) zero is allowed and means
/// "do not wait" — Argo's behaviour, where "no data" counts as Inconclusive at once.
pub(super) fn read_wait_for_evidence(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<Duration> {
    if is_zero_duration(&value.node) {
        return Some(Duration::ZERO);
    }
    reader.duration(path, value)
}

/// Whether a duration value is zero: `0`, `"0"`, `"0s"`, `"0.0m"`, `"0ms"`…
pub(super) fn is_zero_duration(node: &Node) -> bool {
    match node {
        Node::Integer(seconds) => *seconds == 0,
        Node::String(text) => {
            let number = text.trim_end_matches(|c: char| c.is_alphabetic() || c == 'µ' || c == 'μ');
            let unit = &text[number.len()..];
            !number.is_empty()
                && number.bytes().all(|byte| byte == b'0' || byte == b'.')
                && number.bytes().any(|byte| byte == b'0')
                && ["", "ns", "us", "µs", "μs", "ms", "s", "m", "h"].contains(&unit)
        }
        _ => false,
    }
}

/// Whether a `provider` table names the judge or the job provider, which need no conditions.
pub(super) fn names_self_deciding_provider(value: &Value) -> bool {
    matches!(&value.node, Node::Table(entries)
        if entries.iter().any(|entry| entry.key == "judge" || entry.key == "job"))
}
