//! A site pulls a signed desired document from a real nginx (Debian `nginx`) that serves two
//! static files, `desired.toml` and `desired.toml.minisig`, over TLS on a loopback port: the
//! protocol needs nothing from the server but files, and nginx's own ETag gives a 304 on the
//! next poll. The test starts nginx itself with a temporary config; it fails when nginx is
//! missing.

// These tests drive real processes in real time.
#![allow(clippy::disallowed_methods)]

mod engine_support;
mod pull_support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use engine_support::{free_port, Nginx};
use pull_support::{document, Pki, Rig, Signer};

/// Put the document and its signature where nginx serves them, both modified at `modified`
/// (nginx's ETag is that time in seconds and the size).
fn publish(www: &Path, bytes: &[u8], signature: &str, modified: SystemTime) {
    let site = www.join("sites/store-0042");
    std::fs::create_dir_all(&site).expect("site dir");
    // Signature first, then the document, each replaced atomically.
    for (name, contents) in [
        ("desired.toml.minisig", signature.as_bytes()),
        ("desired.toml", bytes),
    ] {
        let partial = site.join(format!("{name}.partial"));
        std::fs::write(&partial, contents).expect("write");
        std::fs::File::options()
            .write(true)
            .open(&partial)
            .and_then(|file| file.set_modified(modified))
            .expect("set the modification time");
        std::fs::rename(&partial, site.join(name)).expect("rename");
    }
}

/// A time `seconds` ago.
fn ago(seconds: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(seconds)
}

#[tokio::test]
#[ignore = "needs nginx (apt-get install nginx-light); .ci/run installs it and runs --ignored"]
async fn a_site_pulls_a_signed_document_from_plain_nginx_and_gets_304_from_its_etag() {
    let pki = Pki::new();
    let served = tempfile::tempdir().expect("nginx dir");
    let port = free_port();
    let nginx = Nginx::start(served.path(), &pki.cert_file, &pki.key_file, port);
    let signer = Signer::new();
    let www = nginx.www();
    let first = document(1, "selector = { cohort = \"pilot\" }\n");
    publish(&www, &first, &signer.sign(&first), ago(60));

    let url = format!("https://127.0.0.1:{port}/sites/{{site}}/desired.toml");
    let extra = format!(
        "trusted_keys = [\"{}\"]\nca_file = \"{}\"",
        signer.public,
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &url, &extra);
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(1, false)], "{round:?}");
    let etag = round.etag.clone().expect("nginx sent an ETag");

    let round = rig.round().await;
    assert!(round.applied.is_empty(), "{round:?}");
    assert_eq!(round.last_result, "not modified (serial 1)");
    assert_eq!(round.etag.as_deref(), Some(etag.as_str()));
    let access = nginx.access_log();
    assert!(
        access.contains("\"GET /sites/store-0042/desired.toml HTTP/1.1\" 304"),
        "{access}"
    );

    // A new serial (a different size, so a different nginx ETag) is taken.
    let second = document(2, "selector = { cohort = \"pilot\" }\n# the next release\n");
    publish(&www, &second, &signer.sign(&second), ago(30));
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(2, false)], "{round:?}");
    assert_ne!(round.etag.as_deref(), Some(etag.as_str()));

    // A tampered file on the server is refused, and the site keeps serial 2.
    let mut tampered = document(
        3,
        "selector = { cohort = \"pilot\" }\n# tampered on the way\n",
    );
    let signature = signer.sign(&tampered);
    tampered[0] = b'#';
    publish(&www, &tampered, &signature, ago(20));
    let round = rig.round().await;
    assert_eq!(round.refused.len(), 1, "{round:?}");
    assert_eq!(round.refused[0].0, "signature");
    assert_eq!(rig.accepted_serial(), Some(2));
}

#[tokio::test]
#[ignore = "needs nginx (apt-get install nginx-light); .ci/run installs it and runs --ignored"]
async fn a_new_version_of_the_same_size_in_the_same_second_is_not_hidden_by_nginx_etag() {
    // nginx's ETag is the modification time in seconds and the size: two versions of one size
    // written within one second share it. A site that fetched the first in that second must
    // not keep the tag, or the second would be answered 304 for ever. Here both are stamped a
    // minute ahead of the server's clock (the same rule: not a tag to keep), to be exact.
    let pki = Pki::new();
    let served = tempfile::tempdir().expect("nginx dir");
    let nginx = Nginx::start(served.path(), &pki.cert_file, &pki.key_file, free_port());
    let signer = Signer::new();
    let www = nginx.www();
    let stamp = SystemTime::now() + Duration::from_secs(60);
    let first = document(1, "selector = { cohort = \"pilot\" }\n# release a\n");
    let second = document(2, "selector = { cohort = \"pilot\" }\n# release b\n");
    assert_eq!(first.len(), second.len());
    publish(&www, &first, &signer.sign(&first), stamp);

    let url = format!(
        "https://127.0.0.1:{}/sites/{{site}}/desired.toml",
        nginx.port
    );
    let extra = format!(
        "trusted_keys = [\"{}\"]\nca_file = \"{}\"",
        signer.public,
        pki.ca_file.display()
    );
    let mut rig = Rig::start(tempfile::tempdir().unwrap(), &url, &extra);
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(1, false)], "{round:?}");
    assert_eq!(
        round.etag, None,
        "a tag from the second of the change is not kept"
    );

    publish(&www, &second, &signer.sign(&second), stamp);
    let round = rig.round().await;
    assert_eq!(round.applied, vec![(2, false)], "{round:?}");
    assert_eq!(rig.accepted_serial(), Some(2));
    let access = nginx.access_log();
    assert!(
        !access.contains("\" 304 "),
        "no 304 for a version nginx tags like the last: {access}"
    );
}
