//! The desired document: which services a site runs, at which version, and how a new version is
//! rolled out (Argo Rollouts' field names, TOML or JSON).
//!
//! This module owns the validated, plain-data form of a desired document and its parser
//! ([`parse`]), which reports every problem at once with file, line and column.
//! It never performs I/O beyond reading the document text it is handed, and nothing here decides
//! anything about a rollout: that is `rollout`'s job.

pub mod parse;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `apiVersion` every desired document must carry.
pub const API_VERSION: &str = "edgeroll/v1";
/// Argo's default for `revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: u32 = 10;
/// Argo's default for `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u32 = 600;
/// Argo's default for `consecutiveErrorLimit`.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: u32 = 4;

/// A validated desired document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Grows with every published document.
    pub serial: u64,
    /// Which sites apply the document (label → value); empty means every site.
    pub selector: BTreeMap<String, String>,
    /// After this instant the document is stale: a site keeps running it but starts no new
    /// rollout from it (`expires = "2026-12-31T00:00:00Z"`); `None` never expires.
    #[serde(default)]
    pub expires: Option<crate::time::Timestamp>,
    /// The services, in document order.
    pub services: Vec<ServiceSpec>,
    /// Analysis templates by name.
    pub analysis_templates: BTreeMap<String, AnalysisTemplate>,
}

/// One service of a site and how it is rolled out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name of the service on the site.
    pub name: String,
    /// How many instances the stable version runs.
    pub replicas: u32,
    /// How many old revisions are kept for `undo`.
    pub revision_history_limit: u32,
    /// How long a rollout may go without progress before it is `ProgressDeadlineExceeded`.
    pub progress_deadline_seconds: u32,
    /// Abort the rollout when the progress deadline is exceeded.
    pub progress_deadline_abort: bool,
    /// Where the proxy listens for this service.
    pub traffic: Traffic,
    /// What one instance runs.
    pub template: Template,
    /// How a new version replaces the old one.
    pub strategy: Strategy,
}

/// The proxy listener of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Traffic {
    /// An HTTP listener: the weight is applied per request.
    Http {
        /// `host:port` to listen on.
        listen: String,
    },
}

impl Traffic {
    /// The address the proxy listens on.
    pub fn listen(&self) -> &str {
        match self {
            Traffic::Http { listen } => listen,
        }
    }
}

/// What one instance of a version runs. Two templates that are equal are the same revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Template {
    /// The version label shown everywhere and sent in reports.
    pub version: String,
    /// Process runtime: argv; `{port}` is replaced by the allocated port (`PORT` is also set).
    /// Container runtimes: replaces the image's entrypoint (empty keeps the image's).
    pub command: Vec<String>,
    /// Container runtimes: arguments after the entrypoint (empty keeps the image's `CMD` when
    /// `command` is empty too); `{port}` is replaced as in `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment for the instance.
    pub env: BTreeMap<String, String>,
    /// When an instance counts as ready.
    pub readiness: Readiness,
    /// The signal that asks an instance to stop (`stopSignal`, default SIGTERM); SIGKILL follows
    /// after `runtime.stop_grace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<StopSignal>,
    /// Container runtimes: what the instance runs (`None` for the process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
}

impl Template {
    /// The signal that asks an instance to stop.
    pub fn stop_signal(&self) -> StopSignal {
        self.stop_signal.unwrap_or_default()
    }
}

/// A signal that may stop a workload (`stopSignal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopSignal {
    /// SIGTERM (the default).
    #[default]
    Term,
    /// SIGINT.
    Int,
    /// SIGQUIT.
    Quit,
    /// SIGHUP.
    Hup,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
    /// SIGKILL (no grace).
    Kill,
}

impl StopSignal {
    /// Every signal with its name as written in a document (`SIGTERM`).
    pub const ALL: [(StopSignal, &'static str); 7] = [
        (StopSignal::Term, "SIGTERM"),
        (StopSignal::Int, "SIGINT"),
        (StopSignal::Quit, "SIGQUIT"),
        (StopSignal::Hup, "SIGHUP"),
        (StopSignal::Usr1, "SIGUSR1"),
        (StopSignal::Usr2, "SIGUSR2"),
        (StopSignal::Kill, "SIGKILL"),
    ];

    /// Its name, e.g. `SIGTERM` (what engines take as a stop signal).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(signal, _)| *signal == self)
            .map_or("SIGTERM", |(_, name)| name)
    }

    /// Its number on Linux.
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Term => 15,
            StopSignal::Int => 2,
            StopSignal::Quit => 3,
            StopSignal::Hup => 1,
            StopSignal::Usr1 => 10,
            StopSignal::Usr2 => 12,
            StopSignal::Kill => 9,
        }
    }

    /// Parse `SIGTERM`, `TERM` or `term`.
    pub fn parse(text: &str) -> Option<StopSignal> {
        let upper = text.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Self::ALL
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(signal, _)| *signal)
    }
}

/// The container part of a template (`image` and the fields that go with it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference, e.g. `registry.example.com/ingest:2.5.0`.
    pub image: String,
    /// A tarball (OCI layout or `docker save`) that holds `image`, loaded instead of pulling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_archive: Option<std::path::PathBuf>,
    /// When the image is pulled.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// CPU limit in thousandths of a CPU (`resources.cpus = 0.5` is 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Memory limit in bytes (`resources.memory = "256Mi"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// `pullPolicy`: when an image is fetched from its registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Pull only when the image is not on the site (the default).
    #[default]
    IfNotPresent,
    /// Pull before every rollout of the revision, even when an image of that name is present.
    Always,
    /// Never pull: the image must be on the site (or come from `imageArchive`).
    Never,
}

/// A readiness check, run against the instance's allocated port on loopback.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Readiness {
    /// `GET path` answers 2xx or 3xx.
    HttpGet {
        /// Request path, starting with `/`.
        path: String,
    },
    /// A TCP connection is accepted.
    Tcp,
}

/// The rollout strategy of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    /// Argo's canary strategy.
    Canary(CanaryStrategy),
    /// Argo's blue-green strategy.
    BlueGreen(BlueGreenStrategy),
}

/// `strategy.canary`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CanaryStrategy {
    /// The steps, executed in order; after the last one the canary is promoted.
    pub steps: Vec<CanaryStep>,
    /// Background analysis that runs for the whole progression (`strategy.canary.analysis`).
    #[serde(default)]
    pub analysis: Option<BackgroundAnalysis>,
}

/// `strategy.canary.analysis`: analysis that runs from `startingStep` until the rollout ends and
/// aborts it at any step when it fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackgroundAnalysis {
    /// Templates and arguments, as in an analysis step.
    pub analysis: AnalysisStep,
    /// The 0-based step index at which it starts (Argo's `startingStep`, default 0).
    pub starting_step: usize,
}

/// `strategy.blueGreen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreenStrategy {
    /// The preview listener (`previewService`); `None` means the new version gets no preview
    /// traffic before the switch.
    pub preview_listen: Option<String>,
    /// Instances of the new version before the switch (`previewReplicaCount`; default `replicas`).
    pub preview_replica_count: Option<u32>,
    /// Switch automatically once the preview is ready (`autoPromotionEnabled`, default true).
    pub auto_promotion_enabled: bool,
    /// Switch this many seconds after the preview is ready (`autoPromotionSeconds`).
    pub auto_promotion_seconds: Option<u32>,
    /// Analysis against the preview before the switch (`prePromotionAnalysis`).
    pub pre_promotion_analysis: Option<AnalysisStep>,
    /// Analysis after the switch while the old version is still warm (`postPromotionAnalysis`).
    pub post_promotion_analysis: Option<AnalysisStep>,
    /// How long the old version keeps running after the switch (`scaleDownDelaySeconds`, 30).
    pub scale_down_delay_seconds: u32,
    /// How long the aborted preview keeps running (`abortScaleDownDelaySeconds`, 30; 0 = never
    /// scaled down by the abort itself).
    pub abort_scale_down_delay_seconds: u32,
}

/// Argo's default for `scaleDownDelaySeconds` and `abortScaleDownDelaySeconds`.
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: u32 = 30;

/// One canary step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CanaryStep {
    /// Send this percentage of requests to the canary.
    SetWeight(u8),
    /// Wait for `duration`, or until promoted when `None`.
    Pause {
        /// How long to wait; `None` waits for an operator.
        duration: Option<Duration>,
    },
    /// Run an analysis and go on only when it succeeds.
    Analysis(AnalysisStep),
    /// Scale the canary independently of its weight.
    SetCanaryScale(CanaryScale),
}

/// `setCanaryScale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanaryScale {
    /// An absolute number of canary instances.
    Replicas(u32),
    /// A percentage of `replicas`, rounded up.
    Weight(u8),
    /// Follow the traffic weight again (the default).
    MatchTrafficWeight,
}

/// An inline `analysis` step: templates merged into one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisStep {
    /// Names of the templates to merge.
    pub templates: Vec<String>,
    /// Argument values passed to the templates.
    pub args: BTreeMap<String, String>,
}

/// An AnalysisTemplate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisTemplate {
    /// Template name, referenced by `templateName`.
    pub name: String,
    /// Declared arguments, with their default values.
    pub args: Vec<TemplateArg>,
    /// The metrics measured by a run of this template.
    pub metrics: Vec<Metric>,
}

/// A declared template argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateArg {
    /// Argument name, used as `{{args.name}}`.
    pub name: String,
    /// Default value when the step does not pass one.
    pub value: Option<String>,
}

/// One metric of an analysis template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Metric name, unique in its template.
    pub name: String,
    /// Time between measurements; `None` takes one measurement.
    pub interval: Option<Duration>,
    /// Wait before the first measurement.
    pub initial_delay: Option<Duration>,
    /// How many measurements to take; `None` with an interval runs until the step ends.
    pub count: Option<u32>,
    /// Expression that makes a measurement Successful.
    pub success_condition: Option<String>,
    /// Expression that makes a measurement Failed.
    pub failure_condition: Option<String>,
    /// Failed measurements tolerated before the metric fails; -1 disables.
    pub failure_limit: i32,
    /// Inconclusive measurements tolerated before the metric is Inconclusive.
    pub inconclusive_limit: u32,
    /// Consecutive errors tolerated before the metric errors.
    pub consecutive_error_limit: u32,
    /// Consecutive successful measurements after which the metric is Successful (0 = off).
    #[serde(default)]
    pub consecutive_success_limit: u32,
    /// Measured and shown, but can never fail the run (Argo's `dryRun`).
    #[serde(default)]
    pub dry_run: bool,
    /// How many measurements are kept (Argo's `measurementRetention`; default 10).
    #[serde(default)]
    pub measurement_retention: Option<u32>,
    /// Beyond Argo: how long the metric waits for its first evidence (a measurement that is not
    /// "no data") before "no data" counts as Inconclusive; `None` uses the default.
    #[serde(default)]
    pub wait_for_evidence: Option<Duration>,
    /// Where the value comes from.
    pub provider: Provider,
}

/// Where a metric's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Provider {
    /// The proxy's own per-version measurements.
    Builtin(BuiltinQuery),
    /// An instant query against a Prometheus-compatible HTTP API.
    Prometheus(PrometheusQuery),
    /// An HTTP request whose JSON answer gives the value.
    Web(WebQuery),
    /// A command that succeeds with exit status 0.
    Job(JobSpec),
    /// Canary against stable on the same site over the same window (Mann–Whitney U).
    Judge(JudgeSpec),
}

/// `provider.prometheus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrometheusQuery {
    /// Base URL of the API, e.g. `http://127.0.0.1:9090`.
    pub address: String,
    /// PromQL; may hold `{{args.x}}`.
    pub query: String,
    /// Deadline of one query.
    pub timeout: Duration,
}

/// `provider.web`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebQuery {
    /// `http://` or `https://` URL; may hold `{{args.x}}`.
    pub url: String,
    /// `GET` or `POST`.
    pub method: String,
    /// Request headers, in order.
    pub headers: Vec<(String, String)>,
    /// Request body (POST).
    pub body: Option<String>,
    /// A JSON path into the answer (`$.data.ok`); `None` binds the whole answer.
    pub json_path: Option<String>,
    /// Deadline of one request.
    pub timeout: Duration,
}

/// `provider.job`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// argv of the command; may hold `{{args.x}}`. With `image`, the container's command
    /// (empty keeps the image's entrypoint and `CMD`).
    pub command: Vec<String>,
    /// Run the command in a container of this image on the site's container runtime, removed
    /// afterwards (`job = { image, command, deadline }`); `None` runs it as a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The job fails when it runs longer than this.
    pub deadline: Duration,
}

/// `provider.judge`: compares the canary's per-request samples with the stable's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeSpec {
    /// Which samples are compared.
    pub signal: JudgeSignal,
    /// Over which trailing window (both versions over the same window).
    pub window: Duration,
    /// Below this many samples of either version the verdict is Inconclusive (no data).
    pub min_samples: u64,
    /// Confidence level of the test, e.g. 0.95.
    pub confidence: f64,
    /// Largest tolerated relative increase of the canary over stable (e.g. 0.1 = +10 %) before
    /// a significant difference is a Fail; between that and half of it is Marginal.
    pub allowed_increase: f64,
}

/// What the judge compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JudgeSignal {
    /// Per-request latency.
    Latency,
    /// Per-request failure (5xx or transport failure).
    Errors,
}

/// A query against the proxy's per-version metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltinQuery {
    /// Which figure.
    pub query: BuiltinMetric,
    /// Which version: a role (`canary`, `stable`) or a literal version string; may hold `{{args.x}}`.
    pub version: String,
    /// Over which trailing window.
    pub window: Duration,
    /// Fewer requests than this in the window is "no data", not a value (default 1).
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
}

fn default_min_samples() -> u64 {
    1
}

/// The figures the proxy measures per version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltinMetric {
    /// Non-5xx and non-failed requests / all requests.
    SuccessRate,
    /// 1 - success rate.
    ErrorRate,
    /// Requests per second.
    RequestRate,
    /// Median latency, seconds.
    LatencyP50,
    /// 95th percentile latency, seconds.
    LatencyP95,
    /// 99th percentile latency, seconds.
    LatencyP99,
}

impl BuiltinMetric {
    /// Every built-in query, with the name used in documents.
    pub const ALL: [(&'static str, BuiltinMetric); 6] = [
        ("success_rate", BuiltinMetric::SuccessRate),
        ("error_rate", BuiltinMetric::ErrorRate),
        ("request_rate", BuiltinMetric::RequestRate),
        ("latency_p50", BuiltinMetric::LatencyP50),
        ("latency_p95", BuiltinMetric::LatencyP95),
        ("latency_p99", BuiltinMetric::LatencyP99),
    ];

    /// The name used in documents.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, metric)| *metric == self)
            .map_or("unknown", |(name, _)| name)
    }
}

impl Document {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|service| service.name == name)
    }

    /// Whether a site with these labels applies the document, by labels alone. The agent
    /// decides with `trust::selects`, where the key `site` matches the site's name as well:
    /// use that one wherever the site's name is known.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    }
}
