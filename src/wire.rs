//! The protocol between a site and its center: what crosses the link, in both directions.
//!
//! Owns the shapes and the rules both ends must agree on: the paths and headers of the pull
//! and of report delivery, the report batch (its JSON, its compression, its idempotency key)
//! and how a receiver judges a batch against what it already has ([`report::judge`]), and the
//! signed desired document (minisign signatures, `signature`). Both the agent
//! (`shell`, the pull and the report sender) and `edgeroll hub` use this module, and only this
//! module, to speak to each other; `docs/protocol.md` is its description for other
//! implementations.
//!
//! It must never do I/O, read a clock or hold state: it encodes, decodes, verifies and judges.

pub mod report;
pub mod signature;

/// Path of the hub's report collector (`POST`, a [`report::ReportBatch`]).
pub const REPORTS_PATH: &str = "/v1/reports";
/// Header naming the sending site on every request a site makes.
pub const SITE_HEADER: &str = "edgeroll-site";
/// Header with the site's labels (`key=value` pairs joined by `,`), so a center can choose the
/// document whose selector matches without having seen the site before.
pub const LABELS_HEADER: &str = "edgeroll-labels";
/// Header with the idempotency key of a report batch (`{site}:{first}-{last}`).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header in which a center may send a document's minisign signature (the `.minisig` file,
/// base64-encoded) with the document itself, so the two can never come from different
/// versions. Without it the site fetches the document's URL with [`SIGNATURE_SUFFIX`].
pub const SIGNATURE_HEADER: &str = "edgeroll-signature";
/// What is appended to a document's URL or path to find its signature.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// The hub's path of a site's desired document.
pub fn desired_path(site: &str) -> String {
    format!("/v1/sites/{site}/desired")
}

/// The MQTT topic a site publishes its report batches to.
pub fn report_topic(site: &str) -> String {
    format!("edgeroll/{site}/reports")
}

/// The MQTT topic filter a center subscribes to for every site's reports.
pub const REPORT_TOPIC_FILTER: &str = "edgeroll/+/reports";

/// `key=value` pairs joined by `,` (the value of [`LABELS_HEADER`]).
pub fn labels_header_value(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels of a [`LABELS_HEADER`] value; pairs without `=` are skipped.
pub fn parse_labels_header(value: &str) -> std::collections::BTreeMap<String, String> {
    value
        .split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The selector key that matches a site's name rather than one of its labels.
pub const SITE_SELECTOR_KEY: &str = "site";

/// Whether a document's `selector` selects the site named `site` with `labels`: every key must
/// match, [`SITE_SELECTOR_KEY`] against the name, any other key against the label of that name.
/// An empty selector selects every site. The agent and the center use this one rule.
pub fn selects(
    selector: &std::collections::BTreeMap<String, String>,
    site: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(key, value)| {
        if key == SITE_SELECTOR_KEY {
            value == site
        } else {
            labels.get(key) == Some(value)
        }
    })
}
