//! A `file://` desired source: without trusted keys it behaves as before signing existed (any
//! valid document is applied, serials are not enforced); with `trusted_keys` the file must come
//! with a `desired.toml.minisig` that a pinned key verifies, and every rule applies.

mod pull_support;

use pull_support::{document, Rig, Signer};

fn write(path: &std::path::Path, bytes: &[u8]) {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).unwrap();
    std::fs::rename(&partial, path).unwrap();
}

#[tokio::test]
async fn an_unsigned_file_without_keys_is_applied_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let desired = dir.path().join("desired.toml");
    write(&desired, &document(3, ""));
    let url = format!("file://{}", desired.display());
    let mut rig = Rig::start(dir, &url, "");
    let mut initial = pull_support::Round::default();
    pull_support::summarize(std::mem::take(&mut rig.initial), &mut initial);
    assert_eq!(initial.applied, vec![(3, false)], "{initial:?}");
    // A lower serial is fine for an unsigned local file: the operator edits it.
    write(&desired, &document(1, "# edited\n"));
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(1, false)], "{round:?}");
    assert_eq!(round.key_id, None);
    // A document for another cohort is refused with a reason.
    write(
        &desired,
        &document(4, "selector = { cohort = \"fleet\" }\n"),
    );
    let round = rig.round().await;
    assert_eq!(round.refused[0].0, "selector", "{round:?}");
}

#[tokio::test]
async fn a_signed_file_needs_its_minisig_and_obeys_every_rule() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let desired = dir.path().join("desired.toml");
    let signature = dir.path().join("desired.toml.minisig");
    write(&desired, &document(3, ""));
    let url = format!("file://{}", desired.display());
    let keys = format!("trusted_keys = [\"{}\"]", signer.public);
    let mut rig = Rig::start(dir, &url, &keys);
    let mut initial = pull_support::Round::default();
    pull_support::summarize(std::mem::take(&mut rig.initial), &mut initial);
    assert_eq!(initial.refused[0].0, "unsigned", "{initial:?}");
    assert!(initial.applied.is_empty());

    std::fs::write(&signature, signer.sign(&document(3, ""))).unwrap();
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(3, false)], "{round:?}");
    assert!(round.key_id.is_some());
    assert_eq!(rig.accepted_serial(), Some(3));

    // Tampered after signing.
    write(&desired, &document(4, ""));
    std::fs::write(&signature, signer.sign(&document(5, ""))).unwrap();
    let round = rig.round().await;
    assert_eq!(round.refused[0].0, "signature", "{round:?}");

    // An older serial, validly signed.
    write(&desired, &document(2, ""));
    std::fs::write(&signature, signer.sign(&document(2, ""))).unwrap();
    let round = rig.round().await;
    assert_eq!(round.refused[0].0, "serial", "{round:?}");
    assert_eq!(rig.accepted_serial(), Some(3));
}

/// A gateway without an RTC boots in 1970: the clock floor from the last signed document
/// (its signing time) still makes an expired document expired.
#[tokio::test]
async fn a_clock_behind_the_floor_is_treated_as_the_floor() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let desired = dir.path().join("desired.toml");
    let signature = dir.path().join("desired.toml.minisig");
    let url = format!("file://{}", desired.display());
    let keys = format!("trusted_keys = [\"{}\"]", signer.public);
    // Signed on 2026-12-01; the site's clock reads 1970-01-01.
    let first = document(1, "");
    write(&desired, &first);
    std::fs::write(&signature, signer.sign_at(&first, 1_796_083_200)).unwrap();
    let epoch = edgeroll::shell::Clock::starting_at(edgeroll::time::Timestamp::from_millis(0));
    let mut rig = Rig::start_with_clock(dir, &url, &keys, epoch);
    let mut initial = pull_support::Round::default();
    pull_support::summarize(std::mem::take(&mut rig.initial), &mut initial);
    assert_eq!(initial.applied, vec![(1, false)], "{initial:?}");
    let floor = rig.store.load_trust().unwrap().state.clock_floor;
    assert_eq!(floor.as_millis(), 1_796_083_200_000);

    // Expired in 2025: by the 1970 clock it would still be valid; by the floor it is not.
    let expired = document(2, "expires = \"2025-01-01T00:00:00Z\"\n");
    write(&desired, &expired);
    std::fs::write(&signature, signer.sign_at(&expired, 1_700_000_000)).unwrap();
    let round = rig.round().await;
    assert_eq!(round.refused.len(), 1, "{round:?}");
    assert_eq!(round.refused[0].0, "expired");
    assert!(
        round.refused[0]
            .1
            .contains("and it is 2026-12-01T00:00:00Z here"),
        "{}",
        round.refused[0].1
    );
    // A later one is taken, and the floor never moves back.
    let later = document(3, "expires = \"2027-01-01T00:00:00Z\"\n");
    write(&desired, &later);
    std::fs::write(&signature, signer.sign_at(&later, 1_700_000_000)).unwrap();
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(3, false)], "{round:?}");
    assert_eq!(
        rig.store
            .load_trust()
            .unwrap()
            .state
            .clock_floor
            .as_millis(),
        1_796_083_200_000
    );
}
