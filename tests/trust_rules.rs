//! The trust rules of a pulled desired document, scenario by scenario: every rule that can
//! refuse a document, the no-op of a repeated document, and the clock floor.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use edgeroll::spec::parse::parse_document;
use edgeroll::spec::Document;
use edgeroll::time::Timestamp;
use edgeroll::trust::{
    effective_now, judge, selects, signed_at, Candidate, Decision, Policy, Rule, Site, SourceKind,
    TrustState,
};
use edgeroll::wire::signature::TrustedKey;

/// 2026-12-01T00:00:00Z.
const NOW: Timestamp = Timestamp::from_millis(1_796_083_200_000);

struct Signer {
    secret: minisign::SecretKey,
    public: TrustedKey,
}

fn signer() -> Signer {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("keypair");
    let public = TrustedKey::parse(&pair.pk.to_base64()).expect("public key");
    Signer {
        secret: pair.sk,
        public,
    }
}

impl Signer {
    fn sign(&self, bytes: &[u8]) -> String {
        minisign::sign(
            None,
            &self.secret,
            Cursor::new(bytes),
            Some("timestamp:1796083100\tfile:desired.toml"),
            None,
        )
        .expect("sign")
        .into_string()
    }
}

fn doc(serial: u64, extra: &str) -> Vec<u8> {
    format!("apiVersion = \"edgeroll/v1\"\nserial = {serial}\n{extra}").into_bytes()
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cohort".to_owned(), "pilot".to_owned()),
        ("region".to_owned(), "eu-west".to_owned()),
    ])
}

/// Judge `bytes` with `signature` as an https:// document for site `store-0042`.
fn check(
    bytes: &[u8],
    signature: Option<&str>,
    keys: &[TrustedKey],
    state: &TrustState,
) -> Decision {
    check_with(bytes, signature, keys, state, SourceKind::Https, false)
}

fn check_with(
    bytes: &[u8],
    signature: Option<&str>,
    keys: &[TrustedKey],
    state: &TrustState,
    kind: SourceKind,
    allow_unsigned: bool,
) -> Decision {
    let text = String::from_utf8_lossy(bytes);
    let parsed: Result<Document, String> = parse_document(Path::new("desired.toml"), &text)
        .map_err(|diagnostics| {
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        });
    let labels = labels();
    judge(
        Candidate {
            bytes,
            signature,
            document: parsed.as_ref().map_err(String::as_str),
        },
        Policy {
            trusted_keys: keys,
            allow_unsigned,
            kind,
            max_bytes: 4096,
        },
        Site {
            name: "store-0042",
            labels: &labels,
            runtime: "process",
        },
        state,
        NOW,
    )
}

fn refused(decision: Decision) -> (Rule, String) {
    match decision {
        Decision::Refuse(refusal) => (refusal.rule, refusal.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn applied(decision: Decision) -> edgeroll::trust::Accepted {
    match decision {
        Decision::Apply(accepted) => accepted,
        other => panic!("expected apply, got {other:?}"),
    }
}

#[test]
fn a_signed_document_for_this_site_is_applied_with_its_key_and_signing_time() {
    let signer = signer();
    let bytes = doc(5, "selector = { cohort = \"pilot\" }\n");
    let accepted = applied(check(
        &bytes,
        Some(&signer.sign(&bytes)),
        std::slice::from_ref(&signer.public),
        &TrustState::default(),
    ));
    assert_eq!(accepted.serial, 5);
    assert_eq!(
        accepted.key_id.as_deref(),
        Some(signer.public.key_id.as_str())
    );
    assert_eq!(
        accepted.signed_at,
        Some(Timestamp::from_millis(1_796_083_100_000))
    );
    assert_eq!(accepted.digest.len(), 64);
}

#[test]
fn one_flipped_byte_in_the_document_or_the_signature_is_a_signature_refusal() {
    let signer = signer();
    let keys = std::slice::from_ref(&signer.public);
    let bytes = doc(5, "");
    let signature = signer.sign(&bytes);
    let mut flipped = bytes.clone();
    flipped[5] ^= 0x01;
    let (rule, message) = refused(check(
        &flipped,
        Some(&signature),
        keys,
        &TrustState::default(),
    ));
    assert_eq!(rule, Rule::Signature);
    assert!(message.contains("does not match"), "{message}");

    // Flip one character of the signature line (the second line, base64).
    let mut lines: Vec<String> = signature.lines().map(str::to_owned).collect();
    let line = &mut lines[1];
    let at = line.len() - 3;
    let replacement = if &line[at..=at] == "A" { "B" } else { "A" };
    line.replace_range(at..=at, replacement);
    let tampered = lines.join("\n") + "\n";
    let (rule, _) = refused(check(&bytes, Some(&tampered), keys, &TrustState::default()));
    assert_eq!(rule, Rule::Signature);

    let (rule, _) = refused(check(&bytes, Some("garbage"), keys, &TrustState::default()));
    assert_eq!(rule, Rule::Signature);
}

#[test]
fn a_key_that_is_not_pinned_is_named() {
    let trusted = signer();
    let stranger = signer();
    let bytes = doc(5, "");
    let (rule, message) = refused(check(
        &bytes,
        Some(&stranger.sign(&bytes)),
        std::slice::from_ref(&trusted.public),
        &TrustState::default(),
    ));
    assert_eq!(rule, Rule::UntrustedKey);
    assert!(message.contains(&stranger.public.key_id), "{message}");
    assert!(message.contains(&trusted.public.key_id), "{message}");
}

#[test]
fn a_second_pinned_key_verifies_too_so_keys_can_be_rotated() {
    let old = signer();
    let next = signer();
    let keys = [old.public.clone(), next.public.clone()];
    let bytes = doc(5, "");
    let accepted = applied(check(
        &bytes,
        Some(&next.sign(&bytes)),
        &keys,
        &TrustState::default(),
    ));
    assert_eq!(
        accepted.key_id.as_deref(),
        Some(next.public.key_id.as_str())
    );
}

#[test]
fn unsigned_documents_need_a_signature_when_keys_are_pinned() {
    let signer = signer();
    let bytes = doc(5, "");
    let (rule, _) = refused(check(
        &bytes,
        None,
        std::slice::from_ref(&signer.public),
        &TrustState::default(),
    ));
    assert_eq!(rule, Rule::Unsigned);
    // A file source too, once keys are pinned.
    let (rule, _) = refused(check_with(
        &bytes,
        None,
        std::slice::from_ref(&signer.public),
        &TrustState::default(),
        SourceKind::File,
        false,
    ));
    assert_eq!(rule, Rule::Unsigned);
}

#[test]
fn without_keys_https_needs_allow_unsigned_and_a_file_keeps_todays_behaviour() {
    let bytes = doc(5, "");
    let (rule, message) = refused(check(&bytes, None, &[], &TrustState::default()));
    assert_eq!(rule, Rule::Unsigned);
    assert!(message.contains("allow_unsigned"), "{message}");
    let accepted = applied(check_with(
        &bytes,
        None,
        &[],
        &TrustState::default(),
        SourceKind::Https,
        true,
    ));
    assert_eq!(accepted.key_id, None);
    // An unsigned file is applied, and its serial is not enforced (editing the file is enough).
    let state = TrustState {
        accepted: Some((9, "x".repeat(64))),
        clock_floor: Timestamp::default(),
    };
    applied(check_with(
        &bytes,
        None,
        &[],
        &state,
        SourceKind::File,
        false,
    ));
}

#[test]
fn an_older_serial_is_a_replay_and_the_same_serial_with_other_bytes_a_conflict() {
    let signer = signer();
    let keys = std::slice::from_ref(&signer.public);
    let current = doc(7, "");
    let accepted = applied(check(
        &current,
        Some(&signer.sign(&current)),
        keys,
        &TrustState::default(),
    ));
    let state = TrustState {
        accepted: Some((accepted.serial, accepted.digest.clone())),
        clock_floor: Timestamp::default(),
    };

    let older = doc(6, "");
    let (rule, message) = refused(check(&older, Some(&signer.sign(&older)), keys, &state));
    assert_eq!(rule, Rule::Serial);
    assert!(
        message.contains("serial 6 is older than serial 7"),
        "{message}"
    );

    let same = doc(7, "");
    assert!(matches!(
        check(&same, Some(&signer.sign(&same)), keys, &state),
        Decision::NoOp(_)
    ));

    let other = doc(7, "selector = {}\n");
    let (rule, _) = refused(check(&other, Some(&signer.sign(&other)), keys, &state));
    assert_eq!(rule, Rule::SerialConflict);

    let newer = doc(8, "");
    applied(check(&newer, Some(&signer.sign(&newer)), keys, &state));
}

#[test]
fn an_expired_document_is_refused() {
    let signer = signer();
    let bytes = doc(5, "expires = \"2026-11-30T00:00:00Z\"\n");
    let (rule, message) = refused(check(
        &bytes,
        Some(&signer.sign(&bytes)),
        std::slice::from_ref(&signer.public),
        &TrustState::default(),
    ));
    assert_eq!(rule, Rule::Expired);
    assert!(
        message.contains("expired at 2026-11-30T00:00:00Z, and it is 2026-12-01T00:00:00Z"),
        "{message}"
    );
    let fresh = doc(5, "expires = \"2026-12-31T00:00:00Z\"\n");
    applied(check(
        &fresh,
        Some(&signer.sign(&fresh)),
        std::slice::from_ref(&signer.public),
        &TrustState::default(),
    ));
}

#[test]
fn a_document_for_another_site_or_cohort_is_refused() {
    let signer = signer();
    let keys = std::slice::from_ref(&signer.public);
    for (selector, wanted) in [
        ("{ cohort = \"fleet\" }", "cohort=fleet"),
        ("{ site = \"store-0043\" }", "site=store-0043"),
        ("{ cohort = \"pilot\", zone = \"b\" }", "zone=b"),
    ] {
        let bytes = doc(5, &format!("selector = {selector}\n"));
        let (rule, message) = refused(check(
            &bytes,
            Some(&signer.sign(&bytes)),
            keys,
            &TrustState::default(),
        ));
        assert_eq!(rule, Rule::Selector, "{selector}");
        assert!(message.contains(wanted), "{message}");
        assert!(message.contains("site=store-0042"), "{message}");
    }
    let mine = doc(
        5,
        "selector = { site = \"store-0042\", region = \"eu-west\" }\n",
    );
    applied(check(
        &mine,
        Some(&signer.sign(&mine)),
        keys,
        &TrustState::default(),
    ));
}

#[test]
fn an_oversized_or_invalid_document_is_refused() {
    let signer = signer();
    let keys = std::slice::from_ref(&signer.public);
    let big = doc(5, &format!("# {}\n", "x".repeat(5000)));
    let (rule, message) = refused(check(
        &big,
        Some(&signer.sign(&big)),
        keys,
        &TrustState::default(),
    ));
    assert_eq!(rule, Rule::Size);
    assert!(message.contains("more than the limit of 4096"), "{message}");

    let invalid = b"apiVersion = \"edgeroll/v2\"\n".to_vec();
    let (rule, message) = refused(check(
        &invalid,
        Some(&signer.sign(&invalid)),
        keys,
        &TrustState::default(),
    ));
    assert_eq!(rule, Rule::Invalid);
    assert!(message.contains("desired.toml:1:14"), "{message}");
}

#[test]
fn the_clock_never_goes_below_the_floor() {
    let floor = Timestamp::from_millis(2_000);
    assert_eq!(
        effective_now(Timestamp::from_millis(1_000), floor),
        (floor, true)
    );
    assert_eq!(
        effective_now(Timestamp::from_millis(3_000), floor),
        (Timestamp::from_millis(3_000), false)
    );
    assert_eq!(
        signed_at("timestamp:1796083100\tfile:desired.toml\thashed"),
        Some(Timestamp::from_millis(1_796_083_100_000))
    );
    assert_eq!(signed_at("serial:5"), None);
}

#[test]
fn the_site_key_of_a_selector_matches_the_name_and_other_keys_the_labels() {
    let labels = labels();
    let site = Site {
        name: "store-0042",
        labels: &labels,
        runtime: "process",
    };
    let selector = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    };
    assert!(selects(&selector(&[]), site));
    assert!(selects(&selector(&[("site", "store-0042")]), site));
    assert!(selects(
        &selector(&[("cohort", "pilot"), ("region", "eu-west")]),
        site
    ));
    assert!(!selects(
        &selector(&[("site", "store-0042"), ("cohort", "fleet")]),
        site
    ));
    assert!(!selects(&selector(&[("missing", "")]), site));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any single flipped bit, anywhere in the signed document, is refused by the signature
        /// rule; it is never applied.
        #[test]
        fn any_flipped_bit_of_the_document_is_refused(index in 0usize..64, bit in 0u8..8) {
            let signer = signer();
            let bytes = doc(5, "selector = { cohort = \"pilot\" }\n");
            let signature = signer.sign(&bytes);
            let mut flipped = bytes.clone();
            let index = index % flipped.len();
            flipped[index] ^= 1 << bit;
            let decision = check(&flipped, Some(&signature), std::slice::from_ref(&signer.public), &TrustState::default());
            prop_assert!(matches!(decision, Decision::Refuse(ref refusal) if refusal.rule == Rule::Signature), "{decision:?}");
        }

        /// Any single changed character of the signature text is refused (as a bad or
        /// untrusted signature), never applied.
        #[test]
        fn any_changed_signature_character_is_refused(index in 0usize..400, replacement in "[A-Za-z0-9+/=]") {
            let signer = signer();
            let bytes = doc(5, "");
            let signature = signer.sign(&bytes);
            let index = index % signature.len();
            prop_assume!(signature.is_char_boundary(index) && signature.is_char_boundary(index + 1));
            let original = &signature[index..index + 1];
            prop_assume!(original != replacement && original != "\n");
            let mut tampered = signature.clone();
            tampered.replace_range(index..index + 1, &replacement);
            let decision = check(&bytes, Some(&tampered), std::slice::from_ref(&signer.public), &TrustState::default());
            // The untrusted comment is not covered by the signature: changing its text (not
            // its prefix) changes nothing.
            let untrusted_line_end = signature.find('\n').unwrap_or(0);
            if ("untrusted comment: ".len()..untrusted_line_end).contains(&index) {
                prop_assert!(matches!(decision, Decision::Apply(_)), "{decision:?}");
            } else {
                prop_assert!(matches!(decision, Decision::Refuse(_)), "{decision:?}");
            }
        }

        /// `expires` written as RFC 3339 reads back as the same instant (second precision).
        #[test]
        fn expires_round_trips_through_rfc3339(seconds in 0u64..8_000_000_000) {
            let at = Timestamp::from_millis(seconds * 1000);
            let text = format!("apiVersion = \"edgeroll/v1\"\nexpires = \"{}\"\n", at.rfc3339());
            let document = parse_document(Path::new("doc.toml"), &text).unwrap();
            prop_assert_eq!(document.expires, Some(at));
        }

        /// The signing time of any `timestamp:N` trusted comment is N seconds.
        #[test]
        fn signed_at_reads_the_timestamp_field(seconds in 0u64..u64::MAX / 1000, file in "[a-z.]{1,12}") {
            let comment = format!("timestamp:{seconds}\tfile:{file}\thashed");
            prop_assert_eq!(signed_at(&comment), Some(Timestamp::from_millis(seconds * 1000)));
        }
    }
}

#[test]
fn a_container_image_on_a_process_site_is_a_runtime_refusal_naming_the_service_and_line() {
    let service = r#"
[[services]]
name = "web"
replicas = 1
traffic = { http = "127.0.0.1:8080" }
strategy = { canary = { steps = [{ setWeight = 50 }] } }
[services.template]
version = "2.0.0"
image = "registry.example.com/web:2"
"#;
    // The test site runs the process runtime (see `check_with`).
    let (rule, message) = refused(check_with(
        &doc(7, service),
        None,
        &[],
        &TrustState::default(),
        SourceKind::File,
        false,
    ));
    assert_eq!(rule, Rule::Runtime);
    assert!(
        message.starts_with(
            "serial 7: line 11: services[0].template.image: service web runs a container image"
        ),
        "{message}"
    );
}
