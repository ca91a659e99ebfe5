//! STUB (helper E replaces this file): measurement providers (the I/O side of analysis).

use std::sync::Arc;

use crate::analysis::Outcome;
use crate::proxy::Metrics;
use crate::spec::Metric;

/// What a provider may look at.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// The service's proxy metrics.
    pub metrics: Arc<Metrics>,
    /// Version label of the stable revision.
    pub stable_version: Option<String>,
    /// Version label of the canary revision.
    pub canary_version: Option<String>,
}

/// Take one measurement of `metric`.
pub async fn measure(metric: &Metric, context: &ProviderContext) -> Outcome {
    let _ = (metric, context);
    Outcome::Error("not implemented".to_owned())
}
