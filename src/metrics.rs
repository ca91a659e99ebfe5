//! The agent's own `/metrics`: what it runs, where each rollout stands, what its proxies measured
//! and what the agent process costs, in the OpenMetrics text format (prometheus-client).
//!
//! Owns the metric names ([`Family`]; no name is written anywhere else), the
//! rendering of one scrape from what the shell already publishes (the status `watch` and the
//! proxies' lifetime totals), and the TCP listener of `metrics.listen`.
//! Nothing is computed ahead of a scrape: every value is read when Prometheus asks, so a scrape
//! can never show a state the shell did not publish.
//!
//! It must never decide or change anything: it holds only `watch` receivers and shared counters,
//! sends nothing to the shell, and an error here (a bad request, a slow scraper) touches neither
//! rollouts nor traffic. Every connection has a header deadline and their number is bounded.

mod process;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::types::{ServiceStatus, Status};
use crate::proxy::{self, VersionTotals};

pub use process::ProcessStats;

/// The path served; every other path is answered 404.
pub const METRICS_PATH: &str = "/metrics";
/// The content type of an OpenMetrics 1.0 text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// How long a scraper may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapers served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// How long open scrapes get to finish when the agent stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Fine proxy latency buckets merged into one exposed bucket: four per doubling in the proxy,
/// so the exposed buckets double (100 µs, 200 µs, … about 52 s, +Inf), 21 series per version
/// instead of 79.
const LATENCY_BUCKETS_MERGED: usize = 4;
/// Every phase a rollout can be in, so each service exposes all of them (0 or 1) and a phase
/// that ends shows as 0 instead of vanishing.
const PHASES: [&str; 4] = ["Healthy", "Progressing", "Paused", "Degraded"];
/// The outcomes of a proxied request, in the order of `VersionTotals::status_classes`, then the
/// transport failures.
const OUTCOMES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "transport_failure"];

/// The proxy metrics of every service, by service name, as the shell publishes them.
pub type ProxyMetrics = BTreeMap<String, Arc<proxy::Metrics>>;

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The status the shell publishes after every input (the same as `GET /v1/status`).
    pub status: watch::Receiver<Arc<Status>>,
    /// Each service's proxy counters.
    pub proxies: watch::Receiver<Arc<ProxyMetrics>>,
}

// === metric names ===

/// Every metric family the agent exposes. The names live only in [`Family::descriptor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `edgeroll_agent_info{version, site}`.
    Agent,
    /// `edgeroll_rollout_phase{service, phase}`: 1 for the phase the rollout is in, else 0.
    RolloutPhase,
    /// `edgeroll_rollout_revision{service, role, version}`: the revision number of the stable and
    /// the canary (the same roles as `stable` and `canary` in status; for blue-green the canary
    /// is the preview until the switch).
    RolloutRevision,
    /// `edgeroll_rollout_step{service}`: the index of the current canary step.
    RolloutStep,
    /// `edgeroll_rollout_steps{service}`: how many steps the strategy has.
    RolloutSteps,
    /// `edgeroll_rollout_weight_percent{service, role}`: the stable's and the canary's share of
    /// the traffic (`weights` in status).
    RolloutWeight,
    /// `edgeroll_instances{service, role, ready}`: instances by role and readiness.
    Instances,
    /// `edgeroll_instance_restarts{service, role}`: restarts of the instances running now.
    InstanceRestarts,
    /// `edgeroll_proxy_requests_total{service, version, outcome}`.
    ProxyRequests,
    /// `edgeroll_proxy_unrouted_requests_total{service}`.
    ProxyUnrouted,
    /// `edgeroll_proxy_request_duration_seconds{service, version}` (histogram).
    ProxyDuration,
    /// `process_resident_memory_bytes`.
    ProcessResidentMemory,
    /// `process_cpu_seconds_total`.
    ProcessCpu,
    /// `process_open_fds`.
    ProcessOpenFds,
    /// `process_threads`.
    ProcessThreads,
}

/// How a family is announced: name (without the `_total` / `_info` suffix that its type adds,
/// and without the unit), help, type and unit.
#[derive(Debug, Clone)]
pub struct Descriptor {
    /// The base name.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Counter, gauge, info or histogram.
    pub kind: MetricType,
    /// Appended to the name (`_seconds`, `_bytes`) and announced in `# UNIT`.
    pub unit: Option<Unit>,
}

impl Family {
    /// Every family, in the order a scrape shows them.
    pub const ALL: [Family; 15] = [
        Family::Agent,
        Family::RolloutPhase,
        Family::RolloutRevision,
        Family::RolloutStep,
        Family::RolloutSteps,
        Family::RolloutWeight,
        Family::Instances,
        Family::InstanceRestarts,
        Family::ProxyRequests,
        Family::ProxyUnrouted,
        Family::ProxyDuration,
        Family::ProcessResidentMemory,
        Family::ProcessCpu,
        Family::ProcessOpenFds,
        Family::ProcessThreads,
    ];

    /// Name, help, type and unit.
    pub fn descriptor(self) -> Descriptor {
        use MetricType::{Counter, Gauge, Histogram, Info};
        let (name, help, kind, unit) = match self {
            Family::Agent => ("edgeroll_agent", "The agent's version and site.", Info, None),
            Family::RolloutPhase => (
                "edgeroll_rollout_phase",
                "1 for the phase each service's rollout is in (Healthy, Progressing, Paused, Degraded), 0 for the others.",
                Gauge,
                None,
            ),
            Family::RolloutRevision => (
                "edgeroll_rollout_revision",
                "The revision number each role of a service runs, labelled with its version.",
                Gauge,
                None,
            ),
            Family::RolloutStep => (
                "edgeroll_rollout_step",
                "Index of the canary step a service's rollout is at (0-based); absent without steps.",
                Gauge,
                None,
            ),
            Family::RolloutSteps => (
                "edgeroll_rollout_steps",
                "How many canary steps a service's strategy has.",
                Gauge,
                None,
            ),
            Family::RolloutWeight => (
                "edgeroll_rollout_weight_percent",
                "Percent of a service's requests each role gets.",
                Gauge,
                None,
            ),
            Family::Instances => (
                "edgeroll_instances",
                "Instances the agent runs, by service, role and readiness.",
                Gauge,
                None,
            ),
            Family::InstanceRestarts => (
                "edgeroll_instance_restarts",
                "Restarts of the instances running now, by service and role (instances a rollout replaces take theirs with them).",
                Gauge,
                None,
            ),
            Family::ProxyRequests => (
                "edgeroll_proxy_requests",
                "Requests the proxy sent to each version, by outcome: the status class of the answer, or transport_failure when the proxy answered 502/504 itself.",
                Counter,
                None,
            ),
            Family::ProxyUnrouted => (
                "edgeroll_proxy_unrouted_requests",
                "Requests the proxy answered 503 because no version had a ready instance.",
                Counter,
                None,
            ),
            Family::ProxyDuration => (
                "edgeroll_proxy_request_duration",
                "Time from a request's arrival at the proxy to the response headers from the version.",
                Histogram,
                Some(Unit::Seconds),
            ),
            Family::ProcessResidentMemory => (
                "process_resident_memory",
                "Resident memory of the agent process.",
                Gauge,
                Some(Unit::Bytes),
            ),
            Family::ProcessCpu => (
                "process_cpu",
                "User and system CPU time the agent process used.",
                Counter,
                Some(Unit::Seconds),
            ),
            Family::ProcessOpenFds => (
                "process_open_fds",
                "File descriptors the agent process holds open.",
                Gauge,
                None,
            ),
            Family::ProcessThreads => (
                "process_threads",
                "Threads of the agent process.",
                Gauge,
                None,
            ),
        };
        Descriptor {
            name,
            help,
            kind,
            unit,
        }
    }
}

// === rendering ===

/// Labels of one sample, in order.
type Labels = Vec<(&'static str, String)>;

/// The values of one scrape, read from the sources at once.
#[derive(Debug)]
struct Scrape {
    status: Arc<Status>,
    proxies: Vec<(String, Vec<VersionTotals>, u64)>,
    process: Option<ProcessStats>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for family in Family::ALL {
            let descriptor = family.descriptor();
            let mut metric = encoder.encode_descriptor(
                descriptor.name,
                descriptor.help,
                descriptor.unit.as_ref(),
                descriptor.kind,
            )?;
            self.encode_family(family, &mut metric)?;
        }
        Ok(())
    }
}

impl Scrape {
    /// Read every source once, so the whole scrape shows one moment.
    fn read(sources: &Sources, process: Option<ProcessStats>) -> Scrape {
        let status = Arc::clone(&sources.status.borrow());
        let proxies = Arc::clone(&sources.proxies.borrow());
        Scrape {
            status,
            proxies: proxies
                .iter()
                .map(|(service, metrics)| {
                    (
                        service.clone(),
                        metrics.snapshot(),
                        metrics.unrouted_total(),
                    )
                })
                .collect(),
            process,
        }
    }

    /// The samples of `family`.
    fn encode_family(
        &self,
        family: Family,
        metric: &mut MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let services = &self.status.services;
        match family {
            Family::Agent => metric.encode_info(&vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("site", self.status.site.clone()),
            ]),
            Family::RolloutPhase => each(metric, services, |service| {
                PHASES
                    .iter()
                    .map(|phase| {
                        let value = i64::from(service.phase == *phase);
                        (vec![("phase", (*phase).to_owned())], value)
                    })
                    .collect()
            }),
            Family::RolloutRevision => each(metric, services, |service| {
                [("stable", &service.stable), ("canary", &service.canary)]
                    .into_iter()
                    .filter_map(|(role, revision)| {
                        let revision = revision.as_ref()?;
                        Some((
                            vec![
                                ("role", role.to_owned()),
                                ("version", revision.version.clone()),
                            ],
                            i64::try_from(revision.revision).unwrap_or(i64::MAX),
                        ))
                    })
                    .collect()
            }),
            Family::RolloutStep => each(metric, services, |service| {
                service
                    .step
                    .iter()
                    .map(|step| (Vec::new(), count(step.index)))
                    .collect()
            }),
            Family::RolloutSteps => each(metric, services, |service| {
                service
                    .step
                    .iter()
                    .map(|step| (Vec::new(), count(step.count)))
                    .collect()
            }),
            Family::RolloutWeight => each(metric, services, |service| {
                vec![
                    (
                        vec![("role", "stable".to_owned())],
                        i64::from(service.weights.stable),
                    ),
                    (
                        vec![("role", "canary".to_owned())],
                        i64::from(service.weights.canary),
                    ),
                ]
            }),
            Family::Instances => each(metric, services, |service| {
                let mut counts: BTreeMap<(String, bool), i64> = BTreeMap::new();
                for instance in &service.instances {
                    *counts
                        .entry((instance.role.clone(), instance.ready))
                        .or_default() += 1;
                }
                counts
                    .into_iter()
                    .map(|((role, ready), value)| {
                        (vec![("role", role), ("ready", ready.to_string())], value)
                    })
                    .collect()
            }),
            Family::InstanceRestarts => each(metric, services, |service| {
                let mut restarts: BTreeMap<String, i64> = BTreeMap::new();
                for instance in &service.instances {
                    *restarts.entry(instance.role.clone()).or_default() +=
                        i64::from(instance.restarts);
                }
                restarts
                    .into_iter()
                    .map(|(role, value)| (vec![("role", role)], value))
                    .collect()
            }),
            Family::ProxyRequests => {
                for (service, versions, _) in &self.proxies {
                    for totals in versions {
                        let counts = totals
                            .status_classes
                            .iter()
                            .chain([&totals.transport_failures]);
                        for (outcome, value) in OUTCOMES.iter().zip(counts) {
                            let labels: Labels = vec![
                                ("service", service.clone()),
                                ("version", totals.version.clone()),
                                ("outcome", (*outcome).to_owned()),
                            ];
                            metric
                                .encode_family(&labels)?
                                .encode_counter::<NoLabelSet, _, u64>(value, None)?;
                        }
                    }
                }
                Ok(())
            }
            Family::ProxyUnrouted => {
                for (service, _, unrouted) in &self.proxies {
                    let labels: Labels = vec![("service", service.clone())];
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(unrouted, None)?;
                }
                Ok(())
            }
            Family::ProxyDuration => {
                let bounds = proxy::metrics::latency_bucket_upper_bounds();
                for (service, versions, _) in &self.proxies {
                    for totals in versions {
                        let labels: Labels = vec![
                            ("service", service.clone()),
                            ("version", totals.version.clone()),
                        ];
                        let buckets = merge_latency_buckets(&bounds, &totals.latency_buckets);
                        metric
                            .encode_family(&labels)?
                            .encode_histogram::<NoLabelSet>(
                                totals.latency_sum_seconds,
                                totals.requests,
                                &buckets,
                                None,
                            )?;
                    }
                }
                Ok(())
            }
            Family::ProcessResidentMemory => self.process_gauge(metric, |stats| {
                i64::try_from(stats.resident_memory_bytes).unwrap_or(i64::MAX)
            }),
            Family::ProcessCpu => match &self.process {
                Some(stats) => {
                    metric.encode_counter::<NoLabelSet, _, u64>(&stats.cpu_seconds, None)
                }
                None => Ok(()),
            },
            Family::ProcessOpenFds => self.process_gauge(metric, |stats| count(stats.open_fds)),
            Family::ProcessThreads => self.process_gauge(metric, |stats| count(stats.threads)),
        }
    }

    fn process_gauge(
        &self,
        metric: &mut MetricEncoder<'_>,
        value: impl Fn(&ProcessStats) -> i64,
    ) -> Result<(), std::fmt::Error> {
        match &self.process {
            Some(stats) => metric.encode_gauge(&value(stats)),
            None => Ok(()),
        }
    }
}

/// Encode the gauges `samples` gives for each service, with the service as the first label.
fn each(
    metric: &mut MetricEncoder<'_>,
    services: &[ServiceStatus],
    samples: impl Fn(&ServiceStatus) -> Vec<(Labels, i64)>,
) -> Result<(), std::fmt::Error> {
    for service in services {
        for (labels, value) in samples(service) {
            let mut all: Labels = vec![("service", service.name.clone())];
            all.extend(labels);
            metric.encode_family(&all)?.encode_gauge(&value)?;
        }
    }
    Ok(())
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Merge the proxy's fine latency buckets into doubling ones: `(upper bound, count in bucket)`,
/// not cumulative (the encoder adds them up), the last bound +Inf.
fn merge_latency_buckets(bounds: &[f64], counts: &[u64]) -> Vec<(f64, u64)> {
    let mut merged = Vec::with_capacity(bounds.len() / LATENCY_BUCKETS_MERGED + 2);
    let mut pending = 0;
    for (index, (bound, count)) in bounds.iter().zip(counts).enumerate() {
        pending += count;
        if index % LATENCY_BUCKETS_MERGED == 0 && bound.is_finite() {
            merged.push((*bound, pending));
            pending = 0;
        }
    }
    merged.push((f64::INFINITY, pending));
    merged
}

/// One scrape as OpenMetrics text, ending with `# EOF`. `process` is `None` where `/proc` cannot
/// be read; the `process_*` families are then empty.
pub fn render(sources: &Sources, process: Option<ProcessStats>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape::read(sources, process)));
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a collector, and an
    // empty answer is then better than a half one.
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        text.clear();
    }
    text
}

// === the listener ===

/// Serve `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let Some((stream, permit)) =
            crate::listen::next_connection(&permits, &shutdown, "/metrics", || async {
                listener.accept().await.map(|(stream, _peer)| stream)
            })
            .await
        else {
            break;
        };
        let sources = sources.clone();
        let service = service_fn(move |request| {
            let answer = answer(&request, &sources);
            async move { Ok::<_, Infallible>(answer) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a /metrics connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("/metrics connections still open after the shutdown grace period");
    }
}

/// The answer to one request.
fn answer<B>(request: &Request<B>, sources: &Sources) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if request.uri().path() != METRICS_PATH {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("only {METRICS_PATH} is served here\n"),
        )
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            format!("{METRICS_PATH} answers GET only\n"),
        )
    } else {
        (
            StatusCode::OK,
            CONTENT_TYPE,
            render(sources, ProcessStats::read()),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    }
    response
}

#[cfg(test)]
mod tests;
