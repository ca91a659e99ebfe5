//! Which sites polled, when, and with which labels: kept in memory, written in batches.
//!
//! Owns the in-memory map of polls. Answering a poll (mostly a 304) must cost no database
//! write, so a poll only updates this map; a task hands the changed entries to the store every
//! `last_seen_flush` (Elastic's Fleet Server writes its check-ins the same way). The labels a
//! site sent last are what the catalog selects by when a poll comes without them.
//!
//! It must never block a poll on the store, and losing the last few seconds of poll times to a
//! crash is accepted (they are not reports).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::time::Timestamp;

use super::store::Poll;

/// The most sites remembered (about 100 bytes each: a fleet of a million fits in 100 MB).
pub const MAX_SITES: usize = 1_000_000;

#[derive(Debug, Default)]
struct Entry {
    labels: Arc<BTreeMap<String, String>>,
    /// The `edgeroll-labels` header the labels were parsed from, so an unchanged header (every
    /// poll of a site) is compared, not parsed.
    raw: String,
    at: Timestamp,
    dirty: bool,
    labels_dirty: bool,
}

/// A site presence knows: its name, labels, and last poll since the hub started (none for a
/// site only the store knew at start).
#[derive(Debug, Clone)]
pub struct KnownSite {
    /// The site's name.
    pub site: String,
    /// Its labels.
    pub labels: Arc<BTreeMap<String, String>>,
    /// When it last polled.
    pub polled: Option<Timestamp>,
}

/// The entries, and the names of those not yet written (so a flush never scans the fleet).
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<String, Entry>,
    dirty: Vec<String>,
}

impl Table {
    /// The entry of `site`, created if there is room; `None` when the table is full.
    fn entry(&mut self, site: &str) -> Option<&mut Entry> {
        if !self.entries.contains_key(site) && self.entries.len() >= MAX_SITES {
            return None;
        }
        Some(self.entries.entry(site.to_owned()).or_default())
    }

    /// Mark `site` as not yet written.
    fn mark(&mut self, site: &str) {
        if let Some(entry) = self.entries.get_mut(site) {
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(site.to_owned());
            }
        }
    }
}

/// The polls of every site since the hub started (and the labels stored before).
#[derive(Debug, Default)]
pub struct Presence {
    sites: Mutex<Table>,
}

impl Presence {
    /// Presence knowing these labels (from the store) already.
    pub fn with_labels(
        known: impl IntoIterator<Item = (String, BTreeMap<String, String>)>,
    ) -> Self {
        let sites = known
            .into_iter()
            .map(|(site, labels)| {
                (
                    site,
                    Entry {
                        labels: Arc::new(labels),
                        ..Entry::default()
                    },
                )
            })
            .collect();
        Presence {
            sites: Mutex::new(Table {
                entries: sites,
                dirty: Vec::new(),
            }),
        }
    }

    /// `site` polled at `now`, with the value of its `edgeroll-labels` header if it sent one;
    /// returns the labels to select by (the ones sent, else the ones it sent before).
    pub fn polled(
        &self,
        site: &str,
        labels_header: Option<&str>,
        now: Timestamp,
    ) -> Arc<BTreeMap<String, String>> {
        let Ok(mut table) = self.sites.lock() else {
            return Arc::new(
                labels_header
                    .map(crate::wire::parse_labels_header)
                    .unwrap_or_default(),
            );
        };
        // A flood of made-up names must not grow the table without bound: such a poll is
        // answered by its own labels and not remembered.
        let Some(entry) = table.entry(site) else {
            return Arc::new(
                labels_header
                    .map(crate::wire::parse_labels_header)
                    .unwrap_or_default(),
            );
        };
        entry.at = entry.at.max(now);
        if let Some(raw) = labels_header {
            if entry.raw != raw {
                let labels = crate::wire::parse_labels_header(raw);
                raw.clone_into(&mut entry.raw);
                if *entry.labels != labels {
                    entry.labels = Arc::new(labels);
                    entry.labels_dirty = true;
                }
            }
        }
        let labels = Arc::clone(&entry.labels);
        table.mark(site);
        labels
    }

    /// `site` sent a report with its labels header `raw` (`edgeroll-labels`): remember the
    /// labels (so plans and documents select it even when it never polls the hub itself, as
    /// behind a CDN). It is not a poll: the poll time does not move.
    pub fn labels_reported(&self, site: &str, raw: &str) {
        let Ok(mut table) = self.sites.lock() else {
            return;
        };
        let Some(entry) = table.entry(site) else {
            return;
        };
        if entry.raw == raw {
            return;
        }
        let labels = crate::wire::parse_labels_header(raw);
        raw.clone_into(&mut entry.raw);
        if *entry.labels != labels {
            entry.labels = Arc::new(labels);
            entry.labels_dirty = true;
            table.mark(site);
        }
    }

    /// The polls not yet written (at most `limit`), marking them written: a flush takes them in
    /// chunks, so report batches queued to the store get their turn between chunks.
    pub fn take_dirty(&self, limit: usize) -> Vec<Poll> {
        let Ok(mut table) = self.sites.lock() else {
            return Vec::new();
        };
        let Table { entries, dirty } = &mut *table;
        let count = dirty.len().min(limit);
        dirty
            .drain(..count)
            .filter_map(|site| {
                let entry = entries.get_mut(&site)?;
                entry.dirty = false;
                let labels = entry.labels_dirty.then(|| (*entry.labels).clone());
                entry.labels_dirty = false;
                Some(Poll {
                    site,
                    labels,
                    at: entry.at,
                })
            })
            .collect()
    }

    /// Mark polls as not written again (their write failed).
    pub fn restore(&self, polls: Vec<Poll>) {
        let Ok(mut table) = self.sites.lock() else {
            return;
        };
        for poll in polls {
            if let Some(entry) = table.entries.get_mut(&poll.site) {
                entry.labels_dirty |= poll.labels.is_some();
            }
            table.mark(&poll.site);
        }
    }

    /// The labels `site` sent last (or that the store had), if it has any.
    pub fn labels(&self, site: &str) -> Option<Arc<BTreeMap<String, String>>> {
        let table = self.sites.lock().ok()?;
        table
            .entries
            .get(site)
            .map(|entry| Arc::clone(&entry.labels))
    }

    /// Every site known here.
    pub fn snapshot(&self) -> Vec<KnownSite> {
        let Ok(table) = self.sites.lock() else {
            return Vec::new();
        };
        table
            .entries
            .iter()
            .map(|(site, entry)| KnownSite {
                site: site.clone(),
                labels: Arc::clone(&entry.labels),
                polled: (entry.at.as_millis() > 0).then_some(entry.at),
            })
            .collect()
    }

    /// The last poll time of `site` since the hub started.
    pub fn last_poll(&self, site: &str) -> Option<Timestamp> {
        let table = self.sites.lock().ok()?;
        table
            .entries
            .get(site)
            .map(|entry| entry.at)
            .filter(|at| at.as_millis() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_written_once_and_labels_only_when_they_change() {
        let presence = Presence::with_labels([(
            "store-1".to_owned(),
            BTreeMap::from([("cohort".to_owned(), "pilot".to_owned())]),
        )]);
        let labels = presence.polled("store-1", None, Timestamp::from_millis(5));
        assert_eq!(labels.get("cohort").map(String::as_str), Some("pilot"));
        let dirty = presence.take_dirty(usize::MAX);
        assert_eq!(dirty.len(), 1);
        assert_eq!(dirty[0].labels, None);
        assert!(presence.take_dirty(usize::MAX).is_empty());
        presence.polled("store-1", Some("cohort=fleet"), Timestamp::from_millis(6));
        let dirty = presence.take_dirty(usize::MAX);
        assert_eq!(dirty[0].labels.as_ref().map(BTreeMap::len), Some(1));
        assert_eq!(
            presence.last_poll("store-1"),
            Some(Timestamp::from_millis(6))
        );
    }

    #[test]
    fn a_flush_takes_only_the_changed_sites_in_chunks() {
        let presence = Presence::default();
        for site in ["a", "b", "c"] {
            presence.polled(site, None, Timestamp::from_millis(1));
        }
        presence.polled("a", None, Timestamp::from_millis(2));
        let first = presence.take_dirty(2);
        assert_eq!(first.len(), 2);
        let second = presence.take_dirty(2);
        assert_eq!(
            second.len(),
            1,
            "each changed site once, however often it polled"
        );
        assert!(presence.take_dirty(2).is_empty());
        presence.restore(second);
        assert_eq!(presence.take_dirty(2).len(), 1);
        presence.labels_reported("d", "cohort=pilot");
        let reported = presence.take_dirty(10);
        assert_eq!(reported.len(), 1);
        assert_eq!(
            reported[0].at,
            Timestamp::from_millis(0),
            "a report is not a poll"
        );
        assert!(reported[0].labels.is_some());
    }
}
