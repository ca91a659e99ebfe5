//! `edgeroll validate` on a config that pins keys checks the file source's signature with the
//! agent's own trust rules, offline.

mod pull_support;

use std::process::Command;

use pull_support::{document, Signer};

fn validate(config: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_edgeroll"))
        .args(["validate", "--config"])
        .arg(config)
        .output()
        .expect("run validate");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn validate_checks_the_signature_of_a_signed_file_source() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let desired = dir.path().join("desired.toml");
    let bytes = document(3, "selector = { cohort = \"pilot\" }\n");
    std::fs::write(&desired, &bytes).unwrap();
    let config = pull_support::write_config(
        dir.path(),
        &format!("file://{}", desired.display()),
        &format!("trusted_keys = [\"{}\"]", signer.public),
    );

    let (code, out) = validate(&config);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("refused (unsigned): the document has no signature"),
        "{out}"
    );

    std::fs::write(dir.path().join("desired.toml.minisig"), signer.sign(&bytes)).unwrap();
    let (code, out) = validate(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("desired.toml.minisig: signature ok (key "),
        "{out}"
    );

    let mut tampered = bytes.clone();
    tampered[0] = b'#';
    std::fs::write(&desired, &tampered).unwrap();
    let (code, out) = validate(&config);
    assert_eq!(code, 78, "{out}");
}
