//! Report batches: what a site tells its center, and how a receiver keeps exactly one copy.
//!
//! A site numbers every report it makes with a per-site sequence number that never repeats
//! (the outbox assigns it in the same transaction as the state change the report describes). A
//! batch covers a contiguous range `first..=last` of those numbers; the reports it carries are
//! the ones of that range still in the outbox, in order. A number in the range without a report
//! was dropped by the site on purpose (its outbox was full: measurements go first) and is
//! counted in [`ReportBatch::dropped`]. The receiver keeps a high-water mark per site: the last
//! sequence number it holds everything up to. [`judge`] says what to do with a batch against it.
//!
//! On the wire a batch is JSON, gzip-compressed (`Content-Encoding: gzip` over HTTPS; always
//! gzip over MQTT), and the receiver answers with an [`Ack`] of its high-water mark.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The largest batch a receiver accepts, compressed.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The largest batch a receiver accepts once decompressed (a bound on a compression bomb).
pub const MAX_DECOMPRESSED_BYTES: usize = 32 * 1024 * 1024;

/// A batch of reports from one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportBatch {
    /// The site's name (`agent.site`).
    pub site: String,
    /// The first sequence number this batch covers.
    pub first: u64,
    /// The last sequence number this batch covers (inclusive, `>= first`).
    pub last: u64,
    /// The reports of the range still in the site's outbox, by ascending sequence number.
    pub reports: Vec<Report>,
    /// How many reports of each kind the site dropped from its outbox because it was full,
    /// since its previous batch (by kind, e.g. `measurement`); empty when none was.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped: BTreeMap<String, u64>,
}

/// One report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Its sequence number on the site.
    pub seq: u64,
    /// When it happened, on the site's clock (milliseconds since the epoch).
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub body: ReportBody,
}

/// What a report says; the JSON carries the variant as `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ReportBody {
    /// A rollout event of one service, with the state it left the service in: what actually
    /// runs (stable and canary revisions), the phase and the step.
    #[serde(rename_all = "camelCase")]
    Rollout {
        /// The service.
        service: String,
        /// The event's kind, e.g. `RolloutAborted` (as `edgeroll get` shows it).
        kind: String,
        /// Its message.
        message: String,
        /// The rollout's phase after the event: `Healthy`, `Progressing`, `Paused`, `Degraded`.
        phase: String,
        /// Its completion, if any: `Promoted`, `Aborted`, `Superseded`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        completion: Option<String>,
        /// The stable revision and version that run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stable: Option<RevisionRef>,
        /// The canary (or blue-green preview) revision, if one exists.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary: Option<RevisionRef>,
        /// The serial of the desired document the service follows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serial: Option<u64>,
    },
    /// One analysis measurement.
    #[serde(rename_all = "camelCase")]
    Measurement {
        /// The service.
        service: String,
        /// The analysis run's id.
        run: String,
        /// The metric's name.
        metric: String,
        /// The measurement's phase: `Successful`, `Failed`, `Inconclusive`, `Error`.
        phase: String,
        /// The value as text, e.g. `[0.995]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// Why (errors, no data).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// An analysis run ended with a verdict.
    #[serde(rename_all = "camelCase")]
    Verdict {
        /// The service.
        service: String,
        /// The analysis run's id.
        run: String,
        /// The run's phase: `Successful`, `Failed`, `Inconclusive`, `Error`.
        phase: String,
        /// Why.
        message: String,
    },
    /// What the site did with a desired document.
    #[serde(rename_all = "camelCase")]
    Document {
        /// The document's serial, when it could be read; for a refusal, only when the
        /// signature held (the rules checked after it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serial: Option<u64>,
        /// `applied`, `refused` or `stale`.
        outcome: String,
        /// For a refusal, the rule that refused it, e.g. `signature`, `serial`, `expired`,
        /// `selector`, `invalid`, `size`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// Why, in words.
        message: String,
        /// The minisign key id that signed it, in hex, when it was signed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
    },
}

impl ReportBody {
    /// The kind name used for drop counts and in the outbox: `rollout`, `measurement`,
    /// `verdict`, `document`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReportBody::Rollout { .. } => "rollout",
            ReportBody::Measurement { .. } => "measurement",
            ReportBody::Verdict { .. } => "verdict",
            ReportBody::Document { .. } => "document",
        }
    }

    /// Whether the outbox may drop this report when it is full: only measurements; rollout
    /// events, verdicts and documents are never dropped.
    pub fn droppable(&self) -> bool {
        matches!(self, ReportBody::Measurement { .. })
    }
}

/// A revision as reports name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRef {
    /// The revision number on the site.
    pub revision: u64,
    /// The template's version label.
    pub version: String,
}

/// A receiver's answer: everything of `site` up to `ack` is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// The site.
    pub site: String,
    /// The high-water mark: every sequence number up to it is held (0: none yet).
    pub ack: u64,
}

/// What a receiver does with a batch, given its high-water mark for the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Everything in it is held already: acknowledge the high-water mark again (never reject).
    Duplicate,
    /// Keep the reports with a sequence number of at least `from` (the ones below it are held
    /// already), then the high-water mark becomes the batch's `last`.
    Accept {
        /// The first sequence number that is new.
        from: u64,
    },
    /// The batch starts after a gap: reports `expected..first` were never received. Answer
    /// with the high-water mark (HTTP 409), so the site resends from `expected`.
    Gap {
        /// The sequence number the receiver expects next.
        expected: u64,
    },
}

/// Judge a (valid) batch against the receiver's high-water mark for its site.
pub fn judge(high_water: u64, batch: &ReportBatch) -> Judgement {
    let expected = high_water.saturating_add(1);
    if batch.last <= high_water {
        Judgement::Duplicate
    } else if batch.first > expected {
        Judgement::Gap { expected }
    } else {
        Judgement::Accept { from: expected }
    }
}

/// What is wrong with a batch or its encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Larger than [`MAX_BATCH_BYTES`] compressed or [`MAX_DECOMPRESSED_BYTES`] decompressed.
    #[error("the batch is larger than {limit} bytes")]
    TooLarge {
        /// The limit that was crossed.
        limit: usize,
    },
    /// The gzip stream is truncated or corrupt.
    #[error("the batch is not valid gzip: {0}")]
    Compression(String),
    /// The JSON does not have the batch's shape.
    #[error("the batch is not a valid report batch: {0}")]
    Json(String),
    /// The shape is right but the content is inconsistent.
    #[error("the batch is inconsistent: {0}")]
    Invalid(String),
}

/// The idempotency key of a batch: `{site}:{first}-{last}`.
pub fn idempotency_key(batch: &ReportBatch) -> String {
    format!("{}:{}-{}", batch.site, batch.first, batch.last)
}

/// Check that a batch is consistent: a site name, `first <= last`, at least one sequence
/// number, reports strictly ascending and inside `first..=last`.
pub fn validate(batch: &ReportBatch) -> Result<(), WireError> {
    let invalid = |message: String| Err(WireError::Invalid(message));
    if batch.site.is_empty() {
        return invalid("the site is empty".to_owned());
    }
    if batch.first == 0 {
        return invalid("sequence numbers start at 1, but first is 0".to_owned());
    }
    if batch.first > batch.last {
        return invalid(format!(
            "first ({}) is after last ({})",
            batch.first, batch.last
        ));
    }
    let mut previous: Option<u64> = None;
    for report in &batch.reports {
        if report.seq < batch.first || report.seq > batch.last {
            return invalid(format!(
                "report {} is outside the batch's range {}..={}",
                report.seq, batch.first, batch.last
            ));
        }
        if previous.is_some_and(|previous| report.seq <= previous) {
            return invalid(format!(
                "report {} is not after the report before it",
                report.seq
            ));
        }
        previous = Some(report.seq);
    }
    Ok(())
}

/// The batch as gzip-compressed JSON.
pub fn encode(batch: &ReportBatch) -> Vec<u8> {
    // Serialising plain data to a Vec cannot fail, nor can writing to one.
    let json = serde_json::to_vec(batch).unwrap_or_default();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(&json);
    encoder.finish().unwrap_or_default()
}

/// A batch from gzip-compressed JSON (`gzip = true`) or plain JSON, within the size limits,
/// checked with [`validate`].
pub fn decode(bytes: &[u8], gzip: bool) -> Result<ReportBatch, WireError> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(WireError::TooLarge {
            limit: MAX_BATCH_BYTES,
        });
    }
    let json = if gzip {
        let mut json = Vec::new();
        let limit = MAX_DECOMPRESSED_BYTES as u64 + 1;
        flate2::read::GzDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut json)
            .map_err(|error| WireError::Compression(error.to_string()))?;
        if json.len() > MAX_DECOMPRESSED_BYTES {
            return Err(WireError::TooLarge {
                limit: MAX_DECOMPRESSED_BYTES,
            });
        }
        json
    } else {
        bytes.to_vec()
    };
    let batch: ReportBatch =
        serde_json::from_slice(&json).map_err(|error| WireError::Json(error.to_string()))?;
    validate(&batch)?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, last: u64, seqs: &[u64]) -> ReportBatch {
        ReportBatch {
            site: "store-0042".to_owned(),
            first,
            last,
            reports: seqs
                .iter()
                .map(|&seq| Report {
                    seq,
                    at: Timestamp::from_millis(1_700_000_000_000 + seq),
                    body: ReportBody::Measurement {
                        service: "ingest".to_owned(),
                        run: "run-1".to_owned(),
                        metric: "success-rate".to_owned(),
                        phase: "Successful".to_owned(),
                        value: Some("[0.995]".to_owned()),
                        message: None,
                    },
                })
                .collect(),
            dropped: BTreeMap::new(),
        }
    }

    #[test]
    fn a_batch_round_trips_through_gzip() {
        let original = batch(5, 9, &[5, 6, 8, 9]);
        let bytes = encode(&original);
        assert_eq!(decode(&bytes, true), Ok(original));
    }

    #[test]
    fn a_truncated_batch_is_a_compression_error() {
        let bytes = encode(&batch(1, 3, &[1, 2, 3]));
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(decode(cut, true), Err(WireError::Compression(_))));
    }

    #[test]
    fn judgement_acknowledges_duplicates_and_refuses_gaps() {
        assert_eq!(judge(10, &batch(5, 10, &[])), Judgement::Duplicate);
        assert_eq!(
            judge(10, &batch(11, 12, &[])),
            Judgement::Accept { from: 11 }
        );
        assert_eq!(
            judge(10, &batch(8, 12, &[])),
            Judgement::Accept { from: 11 }
        );
        assert_eq!(
            judge(10, &batch(13, 14, &[])),
            Judgement::Gap { expected: 11 }
        );
        assert_eq!(judge(0, &batch(1, 1, &[1])), Judgement::Accept { from: 1 });
    }

    #[test]
    fn inconsistent_batches_are_refused() {
        assert!(validate(&batch(3, 2, &[])).is_err());
        assert!(validate(&batch(0, 2, &[])).is_err());
        assert!(validate(&batch(1, 5, &[2, 2])).is_err());
        assert!(validate(&batch(1, 5, &[6])).is_err());
        assert!(validate(&batch(1, 5, &[1, 3, 5])).is_ok());
    }
}
