//! Where a site stands (worst first), and why it needs a human: the order and the words both
//! pages use.

use super::*;

// Where a site stands

/// Where a site stands, worst first (the order of the sites table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Standing {
    /// Degraded, aborted, or it refused its last document.
    NeedsHuman,
    /// Not heard from for [`SILENT_AFTER`] (or never).
    Silent,
    /// A rollout is under way, paused, or nothing reported yet.
    Moving,
    /// Every service reports Healthy.
    Healthy,
}

impl Standing {
    pub(super) fn of(summary: &SiteSummary, now: Timestamp) -> Standing {
        if !attention_reasons(summary).is_empty() {
            return Standing::NeedsHuman;
        }
        match summary.last_seen {
            None => return Standing::Silent,
            Some(seen) if now.since(seen) > SILENT_AFTER => return Standing::Silent,
            Some(_) => {}
        }
        if !summary.services.is_empty()
            && summary
                .services
                .values()
                .all(|service| service.phase == "Healthy")
        {
            Standing::Healthy
        } else {
            Standing::Moving
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Standing::NeedsHuman => "needs a human",
            Standing::Silent => "silent",
            Standing::Moving => "in progress",
            Standing::Healthy => "healthy",
        }
    }

    pub(super) fn class(self) -> &'static str {
        match self {
            Standing::NeedsHuman => "bad",
            Standing::Silent => "quiet",
            Standing::Moving => "busy",
            Standing::Healthy => "good",
        }
    }
}

/// Why a site needs a human, in words (empty: it does not).
pub(super) fn attention_reasons(summary: &SiteSummary) -> Vec<String> {
    let mut reasons = Vec::new();
    for (name, service) in &summary.services {
        let aborted = service.completion.as_deref() == Some("Aborted");
        if service.phase == "Degraded" || aborted {
            let mut reason = format!("{name}: {}", service.phase);
            if aborted {
                reason.push_str(", aborted");
            }
            reason.push_str(" — ");
            if !service.message.starts_with(&service.last_event) {
                reason.push_str(&service.last_event);
                if !service.message.is_empty() {
                    reason.push_str(": ");
                }
            }
            reason.push_str(&service.message);
            reasons.push(reason);
        }
    }
    if let Some(document) = &summary.last_document {
        if document.outcome == "refused" {
            let serial = document
                .serial
                .map_or_else(String::new, |serial| format!(" serial {serial}"));
            let rule = document
                .rule
                .as_deref()
                .map_or_else(String::new, |rule| format!(" ({rule})"));
            reasons.push(format!(
                "refused document{serial}{rule} — {}",
                document.message
            ));
        }
    }
    reasons
}
