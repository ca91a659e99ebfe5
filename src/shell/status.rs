//! Converts the shell's view of every service into the API's status document.
//!
//! Pure conversion: it reads rollout states, instances and analysis runs and never changes them.

use std::collections::BTreeMap;

use crate::analysis::AnalysisRun;
use crate::api::types::{self, completion_name, phase_name, Status, STATUS_API_VERSION};

use super::ServiceSlot;
use crate::store::EventRecord;

/// The status of an agent with no services yet.
pub(super) fn empty(site: &str) -> Status {
    Status {
        api_version: STATUS_API_VERSION.to_owned(),
        site: site.to_owned(),
        services: Vec::new(),
        source: None,
        events: Vec::new(),
        reports: None,
    }
}

/// The desired source's status.
pub(super) fn source(view: Option<&crate::pull::SourceView>) -> Option<types::SourceStatus> {
    let view = view?;
    let record = &view.record;
    if record.url.is_empty() {
        return None;
    }
    Some(types::SourceStatus {
        url: record.url.clone(),
        last_attempt: record.last_attempt.map(|at| at.rfc3339()),
        last_result: record.last_result.clone(),
        last_success: record.last_success.map(|at| at.rfc3339()),
        serial: view.serial,
        etag: record.etag.clone(),
        key_id: record.key_id.clone(),
        expires: record.expires.map(|at| at.rfc3339()),
        stale: record.stale,
    })
}

/// Site-level events, oldest first.
pub(super) fn events(events: &std::collections::VecDeque<EventRecord>) -> Vec<types::Event> {
    events
        .iter()
        .map(|event| types::Event {
            at: event.at.rfc3339(),
            kind: event.kind.clone(),
            message: event.message.clone(),
        })
        .collect()
}

/// One line for `systemctl status`, e.g. `2 services: web Paused step 2/5 canary 10%; api Healthy`.
pub(super) fn summary(status: &Status) -> String {
    if status.services.is_empty() {
        return "no services: waiting for a desired document".to_owned();
    }
    let parts: Vec<String> = status
        .services
        .iter()
        .map(|service| {
            let mut part = format!("{} {}", service.name, service.phase);
            if let Some(step) = service.step {
                part.push_str(&format!(
                    " step {}/{} canary {}%",
                    (step.index + 1).min(step.count),
                    step.count,
                    service.weights.canary
                ));
            }
            part
        })
        .collect();
    let noun = if parts.len() == 1 {
        "service"
    } else {
        "services"
    };
    format!("{} {noun}: {}", parts.len(), parts.join("; "))
}

/// The status of every service, in document order.
pub(super) fn build(
    site: &str,
    order: &[String],
    services: &BTreeMap<String, ServiceSlot>,
) -> Status {
    let mut names: Vec<&String> = order
        .iter()
        .filter(|name| services.contains_key(*name))
        .collect();
    // Services not (or no longer) in the document still show, after the others.
    names.extend(services.keys().filter(|name| !order.contains(name)));
    Status {
        api_version: STATUS_API_VERSION.to_owned(),
        site: site.to_owned(),
        services: names
            .into_iter()
            .filter_map(|name| services.get(name).map(service))
            .collect(),
        source: None,
        events: Vec::new(),
        reports: None,
    }
}

fn service(slot: &ServiceSlot) -> types::ServiceStatus {
    let rollout = &slot.rollout;
    let revision_ref = |revision: &crate::rollout::Revision| types::RevisionRef {
        version: revision.template.version.clone(),
        revision: revision.number,
    };
    let weights = rollout.weights();
    let stable_percent = if rollout.stable.is_some() {
        100 - weights.canary_percent
    } else {
        0
    };
    let canary_number = rollout.canary.as_ref().map(|canary| canary.revision);
    let blue_green = rollout.blue_green().is_some();
    let switched = weights.canary_percent == 100;
    let role = |revision: u64| -> &'static str {
        let is_stable = Some(revision) == rollout.stable;
        let is_canary = Some(revision) == canary_number;
        match (blue_green, is_stable, is_canary) {
            (false, true, _) => "stable",
            (false, _, true) => "canary",
            // Blue-green: the active listener serves the stable revision until the switch.
            (true, true, _) if !switched => "active",
            (true, _, true) if switched => "active",
            (true, _, true) => "preview",
            _ => "old",
        }
    };
    let instances = slot
        .instances
        .iter()
        .map(|instance| types::Instance {
            id: instance.id.clone(),
            version: instance.version.clone(),
            role: role(instance.revision).to_owned(),
            ready: instance.ready,
            address: instance.address.to_string(),
            restarts: instance.restarts,
            logs: instance.logs.clone(),
        })
        .collect();
    types::ServiceStatus {
        name: rollout.service.clone(),
        strategy: if blue_green { "blueGreen" } else { "canary" }.to_owned(),
        phase: phase_name(rollout.phase).to_owned(),
        message: rollout.message.clone(),
        completion: rollout
            .completion
            .map(|completion| completion_name(completion).to_owned()),
        stable: rollout.stable_revision().map(revision_ref),
        canary: rollout.canary_revision().map(revision_ref),
        step: rollout
            .canary
            .as_ref()
            .filter(|_| !blue_green)
            .map(|canary| types::StepRef {
                index: canary.step_index,
                count: rollout.steps().len(),
            }),
        pause_ends_at: match &rollout.canary {
            Some(crate::rollout::Canary {
                progress: crate::rollout::StepProgress::Paused { until: Some(until) },
                ..
            }) => Some(until.rfc3339()),
            _ => None,
        },
        weights: types::Weights {
            stable: stable_percent,
            canary: weights.canary_percent,
        },
        instances,
        analysis_runs: slot.runs.iter().map(analysis_run).collect(),
        revisions: rollout.revisions.iter().map(revision_ref).collect(),
        events: slot
            .events
            .iter()
            .map(|event| types::Event {
                at: event.at.rfc3339(),
                kind: event.kind.clone(),
                message: event.message.clone(),
            })
            .collect(),
        image: None,
    }
}

/// The image a spec waits for, as status shows it.
pub(super) fn image(
    spec: &crate::spec::ServiceSpec,
    preparation: Option<&crate::runtime::images::ImagePreparation>,
) -> Option<types::ImageStatus> {
    let container = spec.template.container.as_ref()?;
    let (phase, done_bytes, total_bytes, failures, last_error) = match preparation {
        Some(preparation) => (
            format!("{:?}", preparation.phase),
            preparation.progress.done_bytes,
            preparation.progress.total_bytes,
            preparation.failures,
            preparation.last_error.clone(),
        ),
        None => ("Checking".to_owned(), 0, None, 0, None),
    };
    Some(types::ImageStatus {
        image: container.image.clone(),
        version: spec.template.version.clone(),
        phase,
        done_bytes,
        total_bytes,
        failures,
        last_error,
    })
}

/// A new service whose first image is not on the site yet: nothing runs, nothing listens.
pub(super) fn waiting_service(
    spec: &crate::spec::ServiceSpec,
    image: Option<types::ImageStatus>,
) -> types::ServiceStatus {
    let blue_green = matches!(spec.strategy, crate::spec::Strategy::BlueGreen(_));
    types::ServiceStatus {
        name: spec.name.clone(),
        strategy: if blue_green { "blueGreen" } else { "canary" }.to_owned(),
        phase: "Progressing".to_owned(),
        message: format!(
            "WaitingForImage: {} is made present before anything starts",
            spec.template
                .container
                .as_ref()
                .map_or("the image", |container| container.image.as_str())
        ),
        completion: None,
        stable: None,
        canary: None,
        step: None,
        pause_ends_at: None,
        weights: types::Weights {
            stable: 0,
            canary: 0,
        },
        instances: Vec::new(),
        analysis_runs: Vec::new(),
        revisions: Vec::new(),
        events: Vec::new(),
        image,
    }
}

fn analysis_run(run: &AnalysisRun) -> types::AnalysisRun {
    types::AnalysisRun {
        name: run.id.clone(),
        phase: run.phase.as_str().to_owned(),
        message: run.message.clone(),
        metrics: run
            .metrics
            .iter()
            .map(|metric| types::MetricRun {
                name: metric.metric.name.clone(),
                phase: metric.phase.as_str().to_owned(),
                message: metric.message.clone(),
                measurements: metric
                    .measurements
                    .iter()
                    .map(|measurement| types::Measurement {
                        at: measurement.at.rfc3339(),
                        phase: measurement.phase.as_str().to_owned(),
                        value: measurement.value.clone(),
                        message: measurement.message.clone(),
                        query: measurement.query.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}
