//! Measurement providers: the I/O side of analysis.
//!
//! This module owns taking one measurement of a metric ([`measure`]) and the text that says
//! what was asked ([`describe`]). It turns "no evidence" into [`Outcome::NoData`] and a failure
//! to ask into [`Outcome::Error`], so the pure rules in `crate::analysis` can never mistake
//! either for a bad value. It decides nothing: verdicts are `analysis`'s job.

pub mod http_client;
pub mod job;
pub mod json_path;
pub mod judge;
pub mod prometheus;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::analysis::{number_value, Outcome};
use crate::proxy::Metrics;
use crate::spec::{BuiltinQuery, Metric, Provider};

/// The builtin provider's role naming the canary revision.
pub const CANARY_ROLE: &str = "canary";
/// The builtin provider's role naming the stable revision.
pub const STABLE_ROLE: &str = "stable";

/// What a provider may look at.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// The service's proxy metrics.
    pub metrics: Arc<Metrics>,
    /// Version label of the stable revision.
    pub stable_version: Option<String>,
    /// Version label of the canary revision.
    pub canary_version: Option<String>,
    /// The site's container runtime, for `job` metrics with an `image` (`None` on the
    /// process runtime).
    pub jobs: Option<Arc<dyn crate::runtime::JobRunner>>,
}

/// Which version a builtin query measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A role (`canary`, `stable`) and the version it has now.
    Role {
        /// `canary` or `stable`.
        role: &'static str,
        /// Its version label.
        version: String,
    },
    /// A role that has no version right now (e.g. no canary exists).
    MissingRole {
        /// `canary` or `stable`.
        role: &'static str,
    },
    /// A literal version label.
    Version(String),
}

impl Target {
    /// Resolve a builtin query's `version` field against the context's revisions.
    pub fn resolve(version: &str, context: &ProviderContext) -> Target {
        let role_version = |role: &'static str, version: &Option<String>| match version {
            Some(version) => Target::Role {
                role,
                version: version.clone(),
            },
            None => Target::MissingRole { role },
        };
        match version {
            CANARY_ROLE => role_version(CANARY_ROLE, &context.canary_version),
            STABLE_ROLE => role_version(STABLE_ROLE, &context.stable_version),
            literal => Target::Version(literal.to_owned()),
        }
    }

    /// The version label to query, if there is one.
    fn version(&self) -> Option<&str> {
        match self {
            Target::Role { version, .. } | Target::Version(version) => Some(version),
            Target::MissingRole { .. } => None,
        }
    }

    /// How users read it: `canary 2.0.0`, `version 1.5.0`, `canary`.
    fn label(&self) -> String {
        match self {
            Target::Role { role, version } => format!("{role} {version}"),
            Target::MissingRole { role } => (*role).to_owned(),
            Target::Version(version) => format!("version {version}"),
        }
    }
}

/// Take one measurement of `metric`.
pub async fn measure(metric: &Metric, context: &ProviderContext) -> Outcome {
    match &metric.provider {
        Provider::Builtin(query) => measure_builtin(query, context),
        Provider::Prometheus(query) => prometheus::measure(query).await,
        Provider::Web(query) => web::measure(query).await,
        Provider::Job(job) => job::measure(job, context.jobs.as_deref()).await,
        Provider::Judge(spec) => judge::measure(spec, context),
    }
}

/// The proxy's per-version figures. Synchronous: the proxy keeps them in memory.
fn measure_builtin(query: &BuiltinQuery, context: &ProviderContext) -> Outcome {
    let target = Target::resolve(&query.version, context);
    let Some(version) = target.version() else {
        return Outcome::NoData(format!(
            "no {} version to measure right now",
            target.label()
        ));
    };
    let answer = context.metrics.query(version, query.query, query.window);
    let window = window_text(query.window);
    if answer.samples == 0 {
        return Outcome::NoData(format!(
            "no requests to {} in the last {window}",
            target.label()
        ));
    }
    if answer.samples < query.min_samples {
        return Outcome::NoData(format!(
            "only {} of {} requests to {} in the last {window}",
            answer.samples,
            query.min_samples,
            target.label()
        ));
    }
    if answer.value.is_nan() {
        return Outcome::NoData(format!(
            "no {} value for {} in the last {window} ({} requests)",
            query.query.name(),
            target.label(),
            answer.samples
        ));
    }
    Outcome::Value(Value::Array(vec![number_value(answer.value)]))
}

/// What `measure` asks, after substitution, e.g. `builtin success_rate{version="2.0.0"}[30s]`.
/// A role with no version right now shows the role: `{version="canary"}`.
pub fn describe(metric: &Metric, context: &ProviderContext) -> String {
    match &metric.provider {
        Provider::Builtin(query) => {
            let target = Target::resolve(&query.version, context);
            let version = target.version().unwrap_or(&query.version);
            let min_samples = if query.min_samples > 1 {
                format!(" minSamples={}", query.min_samples)
            } else {
                String::new()
            };
            format!(
                "builtin {}{{version={version:?}}}[{}]{min_samples}",
                query.query.name(),
                window_text(query.window)
            )
        }
        Provider::Prometheus(query) => format!("prometheus {} at {}", query.query, query.address),
        Provider::Web(query) => format!(
            "web {} {}{}",
            query.method,
            query.url,
            query
                .json_path
                .as_ref()
                .map_or(String::new(), |path| format!(" {path}"))
        ),
        Provider::Job(job) => match &job.image {
            Some(image) => format!("job {image} {}", job.command.join(" ")),
            None => format!("job {}", job.command.join(" ")),
        },
        Provider::Judge(judge) => {
            let role = |version: &Option<String>, role: &str| {
                version.clone().unwrap_or_else(|| role.to_owned())
            };
            let signal = match judge.signal {
                crate::spec::JudgeSignal::Latency => "latency",
                crate::spec::JudgeSignal::Errors => "errors",
            };
            format!(
                "judge {signal}{{canary={:?}, stable={:?}}}[{}] minSamples={} confidence={} \
                 allowedIncrease={}",
                role(&context.canary_version, CANARY_ROLE),
                role(&context.stable_version, STABLE_ROLE),
                window_text(judge.window),
                judge.min_samples,
                judge.confidence,
                judge.allowed_increase
            )
        }
    }
}

/// A window as Prometheus writes durations: `30s`, `1m30s`, `500ms`.
pub fn window_text(window: Duration) -> String {
    humantime::format_duration(window)
        .to_string()
        .split_whitespace()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::BuiltinMetric;

    fn context(canary: Option<&str>) -> ProviderContext {
        ProviderContext {
            metrics: Arc::new(Metrics::new()),
            stable_version: Some("1.0.0".to_owned()),
            canary_version: canary.map(str::to_owned),
            jobs: None,
        }
    }

    fn metric(version: &str) -> Metric {
        Metric {
            name: "success-rate".to_owned(),
            interval: Some(Duration::from_secs(10)),
            initial_delay: None,
            count: Some(3),
            success_condition: Some("result[0] >= 0.95".to_owned()),
            failure_condition: None,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
            consecutive_success_limit: 0,
            dry_run: false,
            measurement_retention: None,
            wait_for_evidence: None,
            provider: Provider::Builtin(BuiltinQuery {
                query: BuiltinMetric::SuccessRate,
                version: version.to_owned(),
                window: Duration::from_secs(30),
                min_samples: 1,
            }),
        }
    }

    #[tokio::test]
    async fn no_requests_is_no_data_naming_the_version() {
        let outcome = measure(&metric("canary"), &context(Some("2.0.0"))).await;
        assert_eq!(
            outcome,
            Outcome::NoData("no requests to canary 2.0.0 in the last 30s".to_owned())
        );
        let outcome = measure(&metric("1.5.0"), &context(Some("2.0.0"))).await;
        assert_eq!(
            outcome,
            Outcome::NoData("no requests to version 1.5.0 in the last 30s".to_owned())
        );
    }

    #[tokio::test]
    async fn fewer_requests_than_min_samples_is_no_data() {
        let context = context(Some("2.0.0"));
        for _ in 0..7 {
            context.metrics.record(
                "2.0.0",
                crate::proxy::RequestOutcome::Status(200),
                Duration::from_millis(5),
            );
        }
        let mut wanting = metric("canary");
        if let Provider::Builtin(query) = &mut wanting.provider {
            query.min_samples = 20;
        }
        assert_eq!(
            measure(&wanting, &context).await,
            Outcome::NoData("only 7 of 20 requests to canary 2.0.0 in the last 30s".to_owned())
        );
        assert_eq!(
            describe(&wanting, &context),
            r#"builtin success_rate{version="2.0.0"}[30s] minSamples=20"#
        );
        let outcome = measure(&metric("canary"), &context).await;
        assert_eq!(outcome, Outcome::Value(serde_json::json!([1.0])));
    }

    #[tokio::test]
    async fn a_missing_canary_is_no_data() {
        let outcome = measure(&metric("canary"), &context(None)).await;
        assert_eq!(
            outcome,
            Outcome::NoData("no canary version to measure right now".to_owned())
        );
    }

    #[test]
    fn describe_substitutes_versions() {
        let with_canary = context(Some("2.0.0"));
        assert_eq!(
            describe(&metric("canary"), &with_canary),
            r#"builtin success_rate{version="2.0.0"}[30s]"#
        );
        assert_eq!(
            describe(&metric("stable"), &with_canary),
            r#"builtin success_rate{version="1.0.0"}[30s]"#
        );
        assert_eq!(
            describe(&metric("1.5.0"), &with_canary),
            r#"builtin success_rate{version="1.5.0"}[30s]"#
        );
        assert_eq!(
            describe(&metric("canary"), &context(None)),
            r#"builtin success_rate{version="canary"}[30s]"#
        );
    }

    #[test]
    fn windows_read_like_prometheus_durations() {
        assert_eq!(window_text(Duration::from_secs(30)), "30s");
        assert_eq!(window_text(Duration::from_secs(90)), "1m30s");
        assert_eq!(window_text(Duration::from_millis(500)), "500ms");
    }
}
