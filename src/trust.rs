//! The trust rules of a desired document: whether a candidate the site fetched may be applied.
//!
//! Owns the decision [`judge`]: given the candidate's bytes, its signature, the keys the site
//! trusts, the site's name and labels, what the site has accepted before ([`TrustState`]) and
//! `now`, it answers [`Decision::Apply`], [`Decision::NoOp`] (the same serial with the same
//! bytes) or [`Decision::Refuse`] naming the [`Rule`] that failed and why. It also owns the
//! clock floor ([`effective_now`]): a clock that reads earlier than the newest trusted time seen
//! is treated as that time, so a gateway without an RTC cannot be made to accept an expired
//! document by booting in 1970.
//!
//! The rules, in the order they are checked:
//! 1. `size`: the body is larger than the configured limit.
//! 2. `unsigned`, `untrusted-key`, `signature`: with trusted keys, a trusted key must verify the
//!    exact bytes; without any, an `https://` document is refused unless `allow_unsigned`, and a
//!    `file://` one is taken as it is (the behaviour before signing existed).
//! 3. `invalid`: the bytes are not a valid document.
//! 4. `selector`: every key of `selector` must equal the site's label of that name; the key
//!    `site` matches the site's name (so `selector = { site = "store-0042" }` pins one site).
//!    Then `runtime`: every template must be one the site's runtime runs (an `image` needs
//!    docker or containerd, which run only images; see `spec::parse::runtime_fit`).
//! 5. `serial`, `serial-conflict`: the serial must be greater than the highest serial this site
//!    ever accepted; the same serial with the same bytes is a no-op, with other bytes a conflict.
//!    An unsigned `file://` document is exempt (anyone who can write the file can also delete
//!    the store, and an operator editing the file must not have to bump a number).
//! 6. `expired`: `expires` is at or before the effective now.
//!
//! This module must never do I/O, read a clock or keep state: every input is an argument.

use std::collections::BTreeMap;
use std::fmt;

use crate::spec::Document;
use crate::time::Timestamp;
use crate::wire::signature::{self, SignatureError, TrustedKey};

pub use crate::wire::SITE_SELECTOR_KEY;

/// Which rule refused a document (the `rule` of a `DocumentRefused` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// The signature does not verify (the document or the signature was changed, or the
    /// signature is not a minisign signature).
    Signature,
    /// The signature was made by a key this site does not trust.
    UntrustedKey,
    /// There is no signature, and one is required.
    Unsigned,
    /// The serial is lower than one the site already accepted (a replay or a rollback).
    Serial,
    /// The serial equals the accepted one but the bytes differ.
    SerialConflict,
    /// The document has expired.
    Expired,
    /// The document's selector does not match this site.
    Selector,
    /// The document names templates the site's runtime cannot run (an `image` on the process
    /// runtime, a `command`-only template on a container runtime).
    Runtime,
    /// The bytes are not a valid desired document.
    Invalid,
    /// The body is larger than the limit.
    Size,
}

impl Rule {
    /// The rule's name, as events and reports carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Signature => "signature",
            Rule::UntrustedKey => "untrusted-key",
            Rule::Unsigned => "unsigned",
            Rule::Serial => "serial",
            Rule::SerialConflict => "serial-conflict",
            Rule::Expired => "expired",
            Rule::Selector => "selector",
            Rule::Runtime => "runtime",
            Rule::Invalid => "invalid",
            Rule::Size => "size",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Where the candidate came from; the rules for unsigned documents differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A local `file://` document.
    File,
    /// A document pulled over `https://`.
    Https,
}

/// What the site trusts.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The pinned public keys; empty means none configured.
    pub trusted_keys: &'a [TrustedKey],
    /// `desired.allow_unsigned`: accept an unsigned `https://` document when no key is pinned.
    pub allow_unsigned: bool,
    /// Where the candidate came from.
    pub kind: SourceKind,
    /// The largest document accepted, in bytes.
    pub max_bytes: usize,
}

/// The site a document must select.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// `agent.site`.
    pub name: &'a str,
    /// `agent.labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `runtime.kind`: `process`, `docker` or `containerd`.
    pub runtime: &'a str,
}

/// What the site accepted before, as persisted in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustState {
    /// The highest serial ever accepted, with the digest of its bytes.
    pub accepted: Option<(u64, String)>,
    /// The newest trusted time ever seen (a verified signing time, a verified answer's `Date`).
    pub clock_floor: Timestamp,
}

/// A candidate document: what was fetched, and what parsing it gave.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The exact bytes, as signed.
    pub bytes: &'a [u8],
    /// The text of the `.minisig` signature, when one came with it.
    pub signature: Option<&'a str>,
    /// The parsed document, or why it is not one (every diagnostic, one per line).
    pub document: Result<&'a Document, &'a str>,
}

/// A document that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its serial.
    pub serial: u64,
    /// The SHA-256 of its bytes, hex.
    pub digest: String,
    /// The id of the key that signed it; `None` for an unsigned document.
    pub key_id: Option<String>,
    /// The signing time from the trusted comment (`timestamp:N`), which raises the clock floor.
    pub signed_at: Option<Timestamp>,
    /// Its expiry.
    pub expires: Option<Timestamp>,
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule that failed.
    pub rule: Rule,
    /// What a user reads: the rule in words, with the values involved.
    pub message: String,
}

/// The answer of [`judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply the document; persist [`Accepted`] first.
    Apply(Accepted),
    /// The document is the one already accepted: nothing to do.
    NoOp(Accepted),
    /// Refuse it; nothing that runs changes.
    Refuse(Refusal),
}

/// The time the rules use: the clock, but never earlier than the floor. The flag says the
/// clock was behind the floor (the caller logs that once).
pub fn effective_now(clock: Timestamp, floor: Timestamp) -> (Timestamp, bool) {
    if clock < floor {
        (floor, true)
    } else {
        (clock, false)
    }
}

/// Whether a document that expires at `expires` is stale at `now`.
pub fn is_stale(expires: Option<Timestamp>, now: Timestamp) -> bool {
    expires.is_some_and(|expires| expires <= now)
}

/// Whether `selector` selects the site: every key must match; `site` matches the name.
pub fn selects(selector: &BTreeMap<String, String>, site: Site<'_>) -> bool {
    crate::wire::selects(selector, site.name, site.labels)
}

/// The SHA-256 of `bytes`, as lower-case hex.
pub fn digest(bytes: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    hash.as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The signing time of a minisign trusted comment: its `timestamp:N` field (seconds since the
/// epoch, as `minisign -S` and `edgeroll sign` write it).
pub fn signed_at(trusted_comment: &str) -> Option<Timestamp> {
    trusted_comment
        .split(char::is_whitespace)
        .find_map(|field| field.strip_prefix("timestamp:"))
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .map(|seconds| Timestamp::from_millis(seconds.saturating_mul(1000)))
}

/// Decide whether `candidate` may be applied (see the module doc for the rules and their order).
pub fn judge(
    candidate: Candidate<'_>,
    policy: Policy<'_>,
    site: Site<'_>,
    state: &TrustState,
    now: Timestamp,
) -> Decision {
    let refuse = |rule: Rule, message: String| Decision::Refuse(Refusal { rule, message });
    if candidate.bytes.len() > policy.max_bytes {
        return refuse(
            Rule::Size,
            format!(
                "the document is {} bytes, more than the limit of {} (desired.max_document_bytes)",
                candidate.bytes.len(),
                policy.max_bytes
            ),
        );
    }

    let mut key_id = None;
    let mut signed = None;
    let signed_required = !policy.trusted_keys.is_empty();
    if signed_required {
        let Some(signature_text) = candidate.signature else {
            return refuse(
                Rule::Unsigned,
                "the document has no signature, and desired.trusted_keys requires one".to_owned(),
            );
        };
        match signature::verify(candidate.bytes, signature_text, policy.trusted_keys) {
            Ok(verified) => {
                signed = signed_at(&verified.trusted_comment);
                key_id = Some(verified.key_id);
            }
            Err(error @ SignatureError::UntrustedKey { .. }) => {
                return refuse(Rule::UntrustedKey, error.to_string());
            }
            Err(error) => return refuse(Rule::Signature, error.to_string()),
        }
    } else if policy.kind == SourceKind::Https && !policy.allow_unsigned {
        return refuse(
            Rule::Unsigned,
            "no desired.trusted_keys are configured, so an https:// document cannot be verified; \
             pin a key, or set desired.allow_unsigned = true"
                .to_owned(),
        );
    }

    let document = match candidate.document {
        Ok(document) => document,
        Err(diagnostics) => {
            return refuse(
                Rule::Invalid,
                format!("the document is not valid: {diagnostics}"),
            )
        }
    };

    if !selects(&document.selector, site) {
        let wanted: Vec<String> = document
            .selector
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let mut have: Vec<String> = vec![format!("{SITE_SELECTOR_KEY}={}", site.name)];
        have.extend(
            site.labels
                .iter()
                .map(|(key, value)| format!("{key}={value}")),
        );
        return refuse(
            Rule::Selector,
            format!(
                "serial {} selects {}, and this site is {}",
                document.serial,
                wanted.join(","),
                have.join(",")
            ),
        );
    }

    let misfits = std::str::from_utf8(candidate.bytes)
        .map(|text| {
            crate::spec::parse::runtime_fit(std::path::Path::new("document"), text, site.runtime)
        })
        .unwrap_or_default();
    if !misfits.is_empty() {
        let problems: Vec<String> = misfits
            .iter()
            .map(|problem| format!("line {}: {}", problem.line, problem.message))
            .collect();
        return refuse(
            Rule::Runtime,
            format!("serial {}: {}", document.serial, problems.join("; ")),
        );
    }

    let accepted = Accepted {
        serial: document.serial,
        digest: digest(candidate.bytes),
        key_id,
        signed_at: signed,
        expires: document.expires,
    };
    let enforce_serial = signed_required || policy.kind == SourceKind::Https;
    if let (true, Some((highest, highest_digest))) = (enforce_serial, &state.accepted) {
        if accepted.serial < *highest {
            return refuse(
                Rule::Serial,
                format!(
                    "serial {} is older than serial {highest}, which this site already accepted \
                     (a replay or a rollback)",
                    accepted.serial
                ),
            );
        }
        if accepted.serial == *highest {
            if accepted.digest == *highest_digest {
                return Decision::NoOp(accepted);
            }
            return refuse(
                Rule::SerialConflict,
                format!(
                    "serial {} was already accepted with other content (sha256 {}, now {}); \
                     a changed document needs a higher serial",
                    accepted.serial,
                    short(highest_digest),
                    short(&accepted.digest)
                ),
            );
        }
    }

    if is_stale(accepted.expires, now) {
        let expires = accepted.expires.unwrap_or_default();
        return refuse(
            Rule::Expired,
            format!(
                "serial {} expired at {expires}, and it is {now} here",
                accepted.serial
            ),
        );
    }
    Decision::Apply(accepted)
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}
