//! What the hub knows about each site, folded from the reports it accepted.
//!
//! Owns the shape of a site's summary (the JSON of `GET /v1/sites/{site}`) and the rule that
//! folds an accepted batch into it: the running revisions and phase of each service from its
//! last rollout report, the last document outcome, the drop and gap counters. It is pure: no
//! I/O, no clock (the time of receipt is passed in); the store commits the result in the same
//! transaction as the reports themselves, so a summary never says more than the reports held.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::wire::report::{ReportBatch, ReportBody, RevisionRef};

/// What the hub knows about one site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteSummary {
    /// The site's name.
    pub site: String,
    /// Its labels, from the `edgeroll-labels` header of its last poll.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The high-water mark: every sequence number up to it is held (0: none yet).
    #[serde(default)]
    pub high_water: u64,
    /// When the hub last heard from the site (a poll or a report), on the hub's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// When the site last polled its desired document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll: Option<Timestamp>,
    /// When the hub last received a batch from the site (accepted, duplicate or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<Timestamp>,
    /// The highest document serial a service of the site reports following.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Each service's last reported state.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSummary>,
    /// What the site last did with a desired document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_document: Option<DocumentSummary>,
    /// Reports the site dropped from its full outbox, by kind, as it counted them.
    #[serde(default)]
    pub dropped: BTreeMap<String, u64>,
    /// Sequence numbers inside accepted ranges that came without a report (dropped on the site).
    #[serde(default)]
    pub missing: u64,
    /// Reports held.
    #[serde(default)]
    pub reports: u64,
    /// Batches refused because they started after a gap.
    #[serde(default)]
    pub gaps: u64,
    /// Sequence numbers the hub will never have: skipped by a batch stored over a gap (MQTT).
    #[serde(default)]
    pub lost: u64,
    /// Batches received again (everything in them was held already).
    #[serde(default)]
    pub duplicates: u64,
    /// Reports that named a document serial this hub never published (kept, not believed).
    #[serde(default)]
    pub unknown_serials: u64,
    /// The last such serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unknown_serial: Option<u64>,
}

/// A service's last reported state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSummary {
    /// `Healthy`, `Progressing`, `Paused` or `Degraded`.
    pub phase: String,
    /// `Promoted`, `Aborted` or `Superseded`, if the rollout completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
    /// The stable revision that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<RevisionRef>,
    /// The canary (or preview) revision, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<RevisionRef>,
    /// The serial of the document the service follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// The last event's kind, e.g. `RolloutAborted`.
    pub last_event: String,
    /// Its message.
    pub message: String,
    /// When it happened, on the site's clock.
    pub at: Timestamp,
    /// Its sequence number.
    pub seq: u64,
}

/// What the site last did with a desired document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentSummary {
    /// The document's serial, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// `applied`, `refused` or `stale`.
    pub outcome: String,
    /// The rule that refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why.
    pub message: String,
    /// When, on the site's clock.
    pub at: Timestamp,
}

impl SiteSummary {
    /// An empty summary of `site`.
    pub fn new(site: &str) -> SiteSummary {
        SiteSummary {
            site: site.to_owned(),
            ..SiteSummary::default()
        }
    }

    /// Fold the part of `batch` from sequence number `from` on (the rest is held already),
    /// received at `now`; the high-water mark becomes the batch's `last`.
    pub fn accept(&mut self, batch: &ReportBatch, from: u64, now: Timestamp) {
        let mut new = 0;
        for report in batch.reports.iter().filter(|report| report.seq >= from) {
            new += 1;
            match &report.body {
                ReportBody::Rollout {
                    service,
                    kind,
                    message,
                    phase,
                    completion,
                    stable,
                    canary,
                    serial,
                } => {
                    if let Some(serial) = serial {
                        self.serial = Some(self.serial.map_or(*serial, |held| held.max(*serial)));
                    }
                    self.services.insert(
                        service.clone(),
                        ServiceSummary {
                            phase: phase.clone(),
                            completion: completion.clone(),
                            stable: stable.clone(),
                            canary: canary.clone(),
                            serial: *serial,
                            last_event: kind.clone(),
                            message: message.clone(),
                            at: report.at,
                            seq: report.seq,
                        },
                    );
                }
                ReportBody::Document {
                    serial,
                    outcome,
                    rule,
                    message,
                    ..
                } => {
                    self.last_document = Some(DocumentSummary {
                        serial: *serial,
                        outcome: outcome.clone(),
                        rule: rule.clone(),
                        message: message.clone(),
                        at: report.at,
                    });
                }
                ReportBody::Measurement { .. } | ReportBody::Verdict { .. } => {}
            }
        }
        let covered = batch.last.saturating_sub(from).saturating_add(1);
        // A site's counts are its word: saturate rather than overflow on absurd ones.
        self.missing = self.missing.saturating_add(covered.saturating_sub(new));
        self.reports = self.reports.saturating_add(new);
        for (kind, count) in &batch.dropped {
            let held = self.dropped.entry(kind.clone()).or_default();
            *held = held.saturating_add(*count);
        }
        self.high_water = batch.last;
        self.heard_from(now);
        self.last_report = Some(now);
    }

    /// The site was heard from at `now`.
    pub fn heard_from(&mut self, now: Timestamp) {
        self.last_seen = Some(self.last_seen.map_or(now, |seen| seen.max(now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::report::Report;

    fn rollout(seq: u64, phase: &str, canary: Option<u64>) -> Report {
        Report {
            seq,
            at: Timestamp::from_millis(seq),
            body: ReportBody::Rollout {
                service: "ingest".to_owned(),
                kind: "StepAdvanced".to_owned(),
                message: String::new(),
                phase: phase.to_owned(),
                completion: None,
                stable: Some(RevisionRef {
                    revision: 1,
                    version: "2.4.0".to_owned(),
                }),
                canary: canary.map(|revision| RevisionRef {
                    revision,
                    version: "2.5.0".to_owned(),
                }),
                serial: Some(7),
            },
        }
    }

    #[test]
    fn only_the_new_part_of_a_batch_is_folded() {
        let mut summary = SiteSummary::new("store-1");
        let batch = ReportBatch {
            site: "store-1".to_owned(),
            first: 1,
            last: 4,
            reports: vec![
                rollout(1, "Progressing", Some(2)),
                rollout(3, "Healthy", None),
            ],
            dropped: BTreeMap::from([("measurement".to_owned(), 2)]),
        };
        summary.accept(&batch, 1, Timestamp::from_millis(100));
        assert_eq!(summary.high_water, 4);
        assert_eq!((summary.reports, summary.missing), (2, 2));
        assert_eq!(summary.services["ingest"].phase, "Healthy");
        assert_eq!(summary.services["ingest"].canary, None);
        assert_eq!(summary.serial, Some(7));
        assert_eq!(summary.last_seen, Some(Timestamp::from_millis(100)));

        let overlapping = ReportBatch {
            first: 3,
            last: 5,
            reports: vec![rollout(3, "Healthy", None), rollout(5, "Degraded", None)],
            ..batch
        };
        summary.accept(&overlapping, 5, Timestamp::from_millis(200));
        assert_eq!((summary.reports, summary.missing), (3, 2));
        assert_eq!(summary.services["ingest"].phase, "Degraded");
        assert_eq!(summary.dropped["measurement"], 4);
    }
}
