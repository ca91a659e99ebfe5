//! The registry client (`runtime::registry`): property tests of its parsers (references,
//! challenges, manifests), which run always, and tests against a real registry (Debian's
//! docker-registry, images pushed with skopeo from OCI layouts built here with random layers):
//! resolving the host platform from an index, verified fetches, a download cut by a loopback
//! relay that resumes with `Range`, a corrupted blob that is never committed, a missing
//! manifest, and the bearer-token flow through an in-test gateway in front of the registry that
//! also redirects blobs to another loopback host.
//!
//! The real-registry tests are ignored unless asked for; run them with
//! `EDGEROLL_TEST_REGISTRY=$(tests/engines/registry.sh start) cargo test --test
//! runtime_registry -- --include-ignored` (or `.ci/run`). They fail when it is missing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use edgeroll::runtime::registry::manifest::{self, select_platform};
use edgeroll::runtime::registry::{
    BlobSink, Challenge, Credentials, Descriptor, Digest, DirSink, ErrorKind, Held, Manifest,
    Options, Platform, Reference, RegistryClient, CHUNK_BYTES,
};
use edgeroll::runtime::PullProgress;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proptest::prelude::*;
use serde_json::json;
use tokio::sync::watch;

// ----------------------------------------------------------------------------------------------
// References, as Docker parses them.

#[test]
fn familiar_references_expand_as_docker_expands_them() {
    let cases = [
        (
            "busybox",
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
        ),
        (
            "busybox:1.36",
            "docker.io",
            "library/busybox",
            Some("1.36"),
            None,
        ),
        (
            "library/busybox",
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
        ),
        (
            "index.docker.io/foo/bar",
            "docker.io",
            "foo/bar",
            Some("latest"),
            None,
        ),
        ("ghcr.io/org/app:v2", "ghcr.io", "org/app", Some("v2"), None),
        ("host:5000/a/b:tag", "host:5000", "a/b", Some("tag"), None),
        ("localhost/app", "localhost", "app", Some("latest"), None),
        (
            "localhost:5000/app",
            "localhost:5000",
            "app",
            Some("latest"),
            None,
        ),
        ("[::1]:5000/app:x", "[::1]:5000", "app", Some("x"), None),
        (
            "a_b/c__d/e-f---g.h",
            "docker.io",
            "a_b/c__d/e-f---g.h",
            Some("latest"),
            None,
        ),
    ];
    for (text, domain, repository, tag, digest) in cases {
        let reference = Reference::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
        assert_eq!(reference.domain, domain, "{text}");
        assert_eq!(reference.repository, repository, "{text}");
        assert_eq!(reference.tag.as_deref(), tag, "{text}");
        assert_eq!(reference.digest, digest, "{text}");
    }
    let hex = "a".repeat(64);
    let pinned = Reference::parse(&format!("app@sha256:{hex}")).unwrap();
    assert_eq!(
        pinned.to_string(),
        format!("docker.io/library/app@sha256:{hex}")
    );
    assert_eq!(pinned.tag, None);
    assert_eq!(pinned.target(), format!("sha256:{hex}"));
    let both = Reference::parse(&format!("r.io:443/app:v1@sha256:{hex}")).unwrap();
    assert_eq!(both.tag.as_deref(), Some("v1"));
    assert_eq!(both.target(), format!("sha256:{hex}"), "the digest wins");
    assert_eq!(
        Reference::parse("busybox").unwrap().api_host(),
        "registry-1.docker.io"
    );
}

#[test]
fn bad_references_are_refused_with_the_rule_they_break() {
    let hex = "a".repeat(64);
    let cases = [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("docker.io/Library/app", "lowercase"),
        ("app:", "tag"),
        ("app:-x", "tag"),
        ("a//b", "empty"),
        ("a/b/", "empty"),
        ("-app", "between"),
        ("app-", "between"),
        ("a..b", "between"),
        ("a___b", "between"),
        ("app@sha256:abc", "64"),
        ("app@md5:abc", "sha256"),
        ("app@sha256", "algorithm"),
        ("host:port/app", "port"),
        ("[::1/app", "]"),
        ("ex ample.com/app", "host name"),
        ("app!x", "only a-z"),
    ];
    for (text, why) in cases {
        let error = Reference::parse(text).expect_err(text);
        assert!(
            error.contains(&format!("{text:?}")),
            "{error} names the reference"
        );
        assert!(error.contains(why), "{text}: {error} should say {why:?}");
    }
    let long = format!("app:{}", "t".repeat(129));
    assert!(Reference::parse(&long).is_err());
    assert!(Reference::parse(&format!("{}@sha256:{hex}", "a".repeat(256))).is_err());
}

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,5}(([._]|__|-{1,3})[a-z0-9]{1,5}){0,2}"
}

fn domain() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("localhost".to_string())),
        "[a-z][a-z0-9-]{0,6}[a-z0-9](\\.[a-z]{2,5}){1,2}".prop_map(Some),
        ("[a-z][a-z0-9]{0,6}", 1u16..65535).prop_map(|(host, port)| Some(format!("{host}:{port}"))),
        (1u8..255, 1u16..65535).prop_map(|(last, port)| Some(format!("127.0.0.{last}:{port}"))),
    ]
}

fn tag() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}".prop_map(Some)
    ]
}

fn digest() -> impl Strategy<Value = Option<String>> {
    prop_oneof![Just(None), "[0-9a-f]{64}".prop_map(Some)]
}

proptest! {
    #[test]
    fn references_parse_into_their_parts_and_print_back(
        domain in domain(),
        path in proptest::collection::vec(component(), 1..4),
        tag in tag(),
        digest in digest(),
    ) {
        // Without a domain, a first component with a '.' would name a registry (Docker's rule).
        prop_assume!(domain.is_some() || path.len() == 1 || !path[0].contains('.'));
        let path = path.join("/");
        let mut text = match &domain {
            Some(domain) => format!("{domain}/{path}"),
            None => path.clone(),
        };
        if let Some(tag) = &tag {
            text.push_str(&format!(":{tag}"));
        }
        if let Some(hex) = &digest {
            text.push_str(&format!("@sha256:{hex}"));
        }
        let reference = Reference::parse(&text).map_err(TestCaseError::fail)?;
        let expected_domain = domain.clone().unwrap_or_else(|| "docker.io".to_string());
        prop_assert_eq!(&reference.domain, &expected_domain);
        let expected_path = if expected_domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.clone()
        };
        prop_assert_eq!(&reference.repository, &expected_path);
        let expected_tag = match (&tag, &digest) {
            (Some(tag), _) => Some(tag.clone()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        prop_assert_eq!(&reference.tag, &expected_tag);
        prop_assert_eq!(reference.digest.as_ref().map(|digest| digest.hex().to_string()), digest);
        // The canonical form parses to the same reference.
        let printed = reference.to_string();
        prop_assert_eq!(Reference::parse(&printed).map_err(TestCaseError::fail)?, reference);
    }

    #[test]
    fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,80}") {
        if let Ok(reference) = Reference::parse(&text) {
            prop_assert_eq!(Reference::parse(&reference.to_string()), Ok(reference));
        }
    }

    #[test]
    fn reference_like_text_parses_or_is_refused_without_panicking(text in "[a-zA-Z0-9:/@._\\-\\[\\]]{0,60}") {
        if let Ok(reference) = Reference::parse(&text) {
            prop_assert!(!reference.repository.is_empty());
            prop_assert_eq!(Reference::parse(&reference.to_string()), Ok(reference));
        }
    }
}

// ----------------------------------------------------------------------------------------------
// WWW-Authenticate challenges.

#[test]
fn registry_challenges_parse() {
    let challenge = Challenge::parse(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
    )
    .unwrap();
    assert_eq!(
        challenge,
        Challenge::Bearer {
            realm: "https://auth.docker.io/token".to_string(),
            service: Some("registry.docker.io".to_string()),
            scope: Some("repository:library/busybox:pull".to_string()),
        }
    );
    assert_eq!(
        Challenge::parse(r#"Basic realm="Registry Realm""#),
        Ok(Challenge::Basic)
    );
    assert_eq!(
        Challenge::parse("bearer REALM=http://h/t , service=s"),
        Ok(Challenge::Bearer {
            realm: "http://h/t".to_string(),
            service: Some("s".to_string()),
            scope: None
        })
    );
    assert!(Challenge::parse(r#"Bearer service="x""#)
        .unwrap_err()
        .contains("no realm"));
    assert!(Challenge::parse("Negotiate abc")
        .unwrap_err()
        .contains("unsupported"));
    assert!(Challenge::parse(r#"Bearer realm="open"#)
        .unwrap_err()
        .contains("closing quote"));
}

proptest! {
    #[test]
    fn quoted_challenge_values_come_back_unquoted(
        realm in "[ -~]{1,40}",
        service in proptest::option::of("[ -~]{0,20}"),
        scope in proptest::option::of("[ -~]{0,40}"),
    ) {
        let quote = |value: &str| format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""));
        let mut header = format!("Bearer realm={}", quote(&realm));
        if let Some(service) = &service {
            header.push_str(&format!(", service={}", quote(service)));
        }
        if let Some(scope) = &scope {
            header.push_str(&format!(",scope={}", quote(scope)));
        }
        prop_assert_eq!(
            Challenge::parse(&header),
            Ok(Challenge::Bearer { realm, service, scope })
        );
    }

    #[test]
    fn any_challenge_text_parses_or_is_refused_without_panicking(text in "\\PC{0,80}") {
        let _ = Challenge::parse(&text);
    }
}

// ----------------------------------------------------------------------------------------------
// Manifests and platforms.

fn descriptor(
    media_type: &str,
    bytes: &[u8],
    platform: Option<(&str, Option<&str>)>,
) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        platform: platform.map(|(architecture, variant)| Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }),
    }
}

#[test]
fn the_host_platform_is_chosen_from_an_index() {
    let index = vec![
        descriptor(manifest::OCI_MANIFEST, b"amd64", Some(("amd64", None))),
        descriptor(manifest::OCI_MANIFEST, b"arm64", Some(("arm64", None))),
        descriptor(
            manifest::OCI_MANIFEST,
            b"arm64v8",
            Some(("arm64", Some("v8"))),
        ),
        descriptor(manifest::OCI_MANIFEST, b"armv6", Some(("arm", Some("v6")))),
        descriptor(manifest::OCI_MANIFEST, b"armv7", Some(("arm", Some("v7")))),
    ];
    let want = |architecture: &str, variant: Option<&str>| Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: variant.map(str::to_string),
    };
    let pick =
        |platform: Platform| select_platform(&index, &platform).map(|found| found.digest.clone());
    assert_eq!(pick(want("amd64", None)), Ok(Digest::of(b"amd64")));
    assert_eq!(pick(want("arm64", None)), Ok(Digest::of(b"arm64")));
    assert_eq!(
        pick(want("arm64", Some("v8"))),
        Ok(Digest::of(b"arm64v8")),
        "the exact variant wins"
    );
    assert_eq!(pick(want("arm", Some("v7"))), Ok(Digest::of(b"armv7")));
    let error = pick(want("riscv64", None)).unwrap_err();
    assert!(
        error.contains("linux/riscv64") && error.contains("linux/arm/v7"),
        "{error}"
    );
    let host = Platform::host();
    assert_eq!(host.os, "linux");
    assert!(
        ["amd64", "arm64", "arm"].contains(&host.architecture.as_str())
            || !host.architecture.is_empty()
    );
}

#[test]
fn manifests_of_every_supported_kind_parse_and_others_are_refused() {
    let layer = descriptor(manifest::OCI_MANIFEST, b"layer", None);
    let image = json!({"schemaVersion": 2, "config": layer, "layers": [layer, layer]});
    let bytes = serde_json::to_vec(&image).unwrap();
    let (media_type, parsed) = Manifest::parse(Some(manifest::DOCKER_MANIFEST), &bytes).unwrap();
    assert_eq!(media_type, manifest::DOCKER_MANIFEST);
    assert!(matches!(parsed, Manifest::Image { layers, .. } if layers.len() == 2));
    let (media_type, _) = Manifest::parse(None, &bytes).unwrap();
    assert_eq!(
        media_type,
        manifest::OCI_MANIFEST,
        "an OCI manifest may leave its type out"
    );
    let list = json!({"schemaVersion": 2, "mediaType": manifest::DOCKER_LIST, "manifests": []});
    let (media_type, parsed) = Manifest::parse(
        Some("application/json"),
        &serde_json::to_vec(&list).unwrap(),
    )
    .unwrap();
    assert_eq!(media_type, manifest::DOCKER_LIST);
    assert_eq!(parsed, Manifest::Index(vec![]));
    let schema1 = json!({"schemaVersion": 1, "name": "x", "fsLayers": []});
    let error = Manifest::parse(None, &serde_json::to_vec(&schema1).unwrap()).unwrap_err();
    assert!(error.contains("schema 1"), "{error}");
    let error = Manifest::parse(Some("application/vnd.example+json"), &bytes).unwrap_err();
    assert!(error.contains("application/vnd.example+json"), "{error}");
}

proptest! {
    #[test]
    fn any_bytes_parse_as_a_manifest_or_are_refused_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        content_type in proptest::option::of("[ -~]{0,40}"),
    ) {
        let _ = Manifest::parse(content_type.as_deref(), &bytes);
    }
}

// ----------------------------------------------------------------------------------------------
// The directory sink.

#[tokio::test]
async fn the_dir_sink_commits_only_blobs_of_the_right_size_and_digest() {
    let directory = tempfile::tempdir().unwrap();
    let sink = DirSink::new(directory.path());
    let bytes = random_bytes(100_000);
    let blob = descriptor("application/octet-stream", &bytes, None);
    assert_eq!(sink.held(&blob).await.unwrap(), Held::Partial(0));
    sink.write(&blob, 0, &bytes[..60_000]).await.unwrap();
    assert_eq!(sink.held(&blob).await.unwrap(), Held::Partial(60_000));
    let error = sink.write(&blob, 10, &bytes[10..20]).await.unwrap_err();
    assert!(error.0.contains("holds 60000"), "{error}");
    let error = sink.commit(&blob).await.unwrap_err();
    assert!(
        error.0.contains("60000 bytes"),
        "a short blob is refused: {error}"
    );
    assert!(!sink.blob_path(&blob.digest).exists());
    let mut wrong = bytes[60_000..].to_vec();
    wrong[0] ^= 1;
    sink.write(&blob, 60_000, &wrong).await.unwrap();
    let error = sink.commit(&blob).await.unwrap_err();
    assert!(
        error.0.contains("digest"),
        "a corrupt blob is refused: {error}"
    );
    assert!(!sink.blob_path(&blob.digest).exists());
    sink.discard(&blob).await.unwrap();
    assert_eq!(sink.held(&blob).await.unwrap(), Held::Partial(0));
    sink.write(&blob, 0, &bytes).await.unwrap();
    sink.commit(&blob).await.unwrap();
    assert_eq!(sink.held(&blob).await.unwrap(), Held::Complete);
    assert_eq!(std::fs::read(sink.blob_path(&blob.digest)).unwrap(), bytes);
    assert!(!sink.partial_path(&blob.digest).exists());
    // An empty blob (an empty layer) needs no write.
    let empty = descriptor("application/octet-stream", b"", None);
    sink.commit(&empty).await.unwrap();
    assert_eq!(sink.held(&empty).await.unwrap(), Held::Complete);
}

// ----------------------------------------------------------------------------------------------
// A real registry.

/// Where the engine script's registry listens (`127.0.0.1:PORT`).
const REGISTRY_VARIABLE: &str = "EDGEROLL_TEST_REGISTRY";

fn registry() -> String {
    std::env::var(REGISTRY_VARIABLE).unwrap_or_else(|_| {
        panic!("{REGISTRY_VARIABLE} is not set: run `{REGISTRY_VARIABLE}=$(tests/engines/registry.sh start)` first")
    })
}

/// An OCI image pushed to the registry: per platform its manifest and layers.
struct Pushed {
    /// The index digest (multi-platform pushes) or the manifest's.
    top: Digest,
    /// (architecture, manifest digest, config, layers).
    platforms: Vec<(String, Digest, Descriptor, Vec<Descriptor>)>,
    /// The layers' bytes by digest, to compare with what was fetched.
    blobs: std::collections::HashMap<Digest, Vec<u8>>,
}

/// A ustar archive of one file of `content`.
fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[148..156].copy_from_slice(b"        ");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    tar
}

fn random_bytes(length: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; length];
    fastrand::fill(&mut bytes);
    bytes
}

/// Build an OCI layout holding `platforms` (architecture, layer sizes) and push it with skopeo
/// to `<registry>/<repository>:<tag>`: an index when there are several, a manifest otherwise.
fn push(registry: &str, repository: &str, tag: &str, platforms: &[(&str, &[usize])]) -> Pushed {
    let layout = tempfile::tempdir().unwrap();
    let blobs_dir = layout.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir).unwrap();
    let put = |media_type: &str, bytes: &[u8]| {
        let descriptor = descriptor(media_type, bytes, None);
        std::fs::write(blobs_dir.join(descriptor.digest.hex()), bytes).unwrap();
        descriptor
    };
    let mut pushed = Pushed {
        top: Digest::of(b""),
        platforms: Vec::new(),
        blobs: Default::default(),
    };
    let mut entries = Vec::new();
    for (architecture, sizes) in platforms {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (at, size) in sizes.iter().enumerate() {
            // gzip, as registries hold layers (skopeo would compress an uncompressed one and
            // change its digest); random content barely compresses, so sizes stay as asked.
            let tar = tar_of(&format!("{architecture}-{at}.bin"), &random_bytes(*size));
            diff_ids.push(Digest::of(&tar).to_string());
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gzip, &tar).unwrap();
            let gzipped = gzip.finish().unwrap();
            let layer = put("application/vnd.oci.image.layer.v1.tar+gzip", &gzipped);
            pushed.blobs.insert(layer.digest.clone(), gzipped);
            layers.push(layer);
        }
        let config = json!({
            "architecture": architecture, "os": "linux",
            "config": {"Entrypoint": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config = put("application/vnd.oci.image.config.v1+json", &config_bytes);
        pushed.blobs.insert(config.digest.clone(), config_bytes);
        let image = json!({
            "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
            "config": config, "layers": layers,
        });
        let manifest = put(manifest::OCI_MANIFEST, &serde_json::to_vec(&image).unwrap());
        let mut entry = serde_json::to_value(&manifest).unwrap();
        entry["platform"] = json!({"architecture": architecture, "os": "linux"});
        entries.push(entry);
        pushed.platforms.push((
            architecture.to_string(),
            manifest.digest.clone(),
            config,
            layers,
        ));
    }
    let top = if entries.len() == 1 {
        entries.remove(0)
    } else {
        let index =
            json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": entries});
        serde_json::to_value(put(
            manifest::OCI_INDEX,
            &serde_json::to_vec(&index).unwrap(),
        ))
        .unwrap()
    };
    pushed.top = Digest::parse(top["digest"].as_str().unwrap()).unwrap();
    let mut top = top;
    top.as_object_mut().unwrap().remove("platform");
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let layout_index =
        json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": [top]});
    std::fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&layout_index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let output = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:{tag}", layout.path().display()))
        .arg(format!("docker://{registry}/{repository}:{tag}"))
        .output()
        .expect("skopeo runs (tests/engines/registry.sh installs it)");
    assert!(
        output.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    pushed
}

fn platform(architecture: &str) -> Platform {
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: None,
    }
}

fn client(options: Options) -> RegistryClient {
    RegistryClient::new(options).expect("a client")
}

fn options(architecture: &str) -> Options {
    Options {
        platform: platform(architecture),
        ..Options::default()
    }
}

#[tokio::test]
#[ignore = "needs a registry; .ci/run starts it (tests/engines/registry.sh) and runs --ignored"]
async fn resolves_the_host_platform_from_an_index_and_fetches_verified_blobs() {
    let registry = registry();
    let pushed = push(
        &registry,
        "edgeroll/multi",
        "v1",
        &[("amd64", &[2_000_000, 1_000_000]), ("arm64", &[1_500_000])],
    );
    let reference = Reference::parse(&format!("{registry}/edgeroll/multi:v1")).unwrap();
    for (architecture, manifest_digest, config, layers) in &pushed.platforms {
        let image = client(options(architecture))
            .resolve(&reference)
            .await
            .unwrap();
        assert_eq!(image.target().digest, pushed.top, "the tag names the index");
        assert_eq!(
            image
                .index
                .as_ref()
                .map(|index| index.descriptor.media_type.as_str()),
            Some(manifest::OCI_INDEX)
        );
        assert_eq!(
            &image.manifest.descriptor.digest, manifest_digest,
            "{architecture}'s manifest"
        );
        assert_eq!(&image.config, config);
        assert_eq!(&image.layers, layers);
    }
    let error = client(options("s390x"))
        .resolve(&reference)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Invalid);
    assert!(
        error.message.contains("linux/s390x") && error.message.contains("linux/arm64"),
        "{error}"
    );

    // Pinned by digest: the same image.
    let pinned = Reference::parse(&format!("{registry}/edgeroll/multi@{}", pushed.top)).unwrap();
    let image = client(options("amd64")).resolve(&pinned).await.unwrap();
    assert_eq!(image.manifest.descriptor.digest, pushed.platforms[0].1);

    // Pull everything into a directory: every blob is there, with its digest, and the progress
    // ends at the manifests' total.
    let store = tempfile::tempdir().unwrap();
    let sink = DirSink::new(store.path());
    let (progress, watcher) = watch::channel(PullProgress::default());
    let client = client(options("amd64"));
    let image = client.pull(&reference, &sink, &progress).await.unwrap();
    let total: u64 = image.total_bytes();
    let (_, _, config, layers) = &pushed.platforms[0];
    assert_eq!(
        total,
        config.size + layers.iter().map(|layer| layer.size).sum::<u64>()
    );
    let seen = watcher.borrow().clone();
    assert_eq!(seen.done_bytes, total);
    assert_eq!(seen.total_bytes, Some(total));
    for blob in image.blobs() {
        let bytes = std::fs::read(sink.blob_path(&blob.digest)).unwrap();
        assert_eq!(Digest::of(&bytes), blob.digest);
        assert_eq!(&bytes, &pushed.blobs[&blob.digest]);
    }
    for content in image.index.iter().chain([&image.manifest]) {
        let bytes = std::fs::read(sink.blob_path(&content.descriptor.digest)).unwrap();
        assert_eq!(bytes, content.bytes, "the manifests are stored too");
    }
    // A second pull fetches nothing.
    for blob in image.blobs() {
        let fetched = client
            .fetch_blob(&reference, blob, &sink, |_| {})
            .await
            .unwrap();
        assert!(fetched.already_complete);
        assert_eq!(fetched.received, 0);
    }
}

#[tokio::test]
#[ignore = "needs a registry; .ci/run starts it (tests/engines/registry.sh) and runs --ignored"]
async fn a_missing_manifest_is_a_permanent_error_that_names_the_reference() {
    let registry = registry();
    let reference = Reference::parse(&format!("{registry}/edgeroll/absent:nope")).unwrap();
    let error = client(Options::default())
        .resolve(&reference)
        .await
        .unwrap_err();
    println!("missing manifest: {error}");
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains(&format!("{registry}/edgeroll/absent:nope")),
        "{text}"
    );
    assert!(
        text.contains("manifest nope") && text.contains("404"),
        "{text}"
    );
    let runtime_error = edgeroll::runtime::Error::from(error);
    assert!(!runtime_error.is_transient());

    // Nothing listening: transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let reference = Reference::parse(&format!("127.0.0.1:{port}/edgeroll/app:v1")).unwrap();
    let error = client(Options::default())
        .resolve(&reference)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert!(error.is_transient());
}

// ----------------------------------------------------------------------------------------------
// A loopback relay in front of the registry: it logs requests, can cut or corrupt a blob's body,
// demand a bearer token (serving the token endpoint itself), and redirect blobs elsewhere.

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Logged {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
    status: u16,
    body_bytes: Arc<AtomicU64>,
}

#[derive(Default)]
struct Faults {
    /// The next blob answer is cut after this many body bytes.
    cut_after: Option<u64>,
    /// The next blob answer has the byte at this offset of its body flipped.
    flip_at: Option<u64>,
    /// The next blob answer sends this many body bytes, then nothing more (a hung link).
    stall_after: Option<u64>,
    /// The next blob request reaches the registry without its `Range` (a server that ignores it).
    drop_range: bool,
}

/// What a relay demands before it passes a request on.
enum Gate {
    /// Nothing.
    Open,
    /// `Bearer <token>` on /v2/; it serves `/token` itself to these basic credentials.
    Token(String, Credentials),
    /// Basic credentials on /v2/.
    Basic(Credentials),
}

struct Relay {
    upstream: String,
    address: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Faults for the next answer of a blob, by digest.
    faults: Mutex<std::collections::HashMap<String, Faults>>,
    /// What it demands of a client.
    gate: Gate,
    /// Redirect blob GETs to this origin.
    redirect_blobs: Option<String>,
    log: Mutex<Vec<Logged>>,
}

impl Relay {
    async fn start(
        bind: &str,
        upstream: &str,
        gate: Gate,
        redirect_blobs: Option<String>,
    ) -> Arc<Relay> {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let relay = Arc::new(Relay {
            upstream: upstream.to_string(),
            address: listener.local_addr().unwrap(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            faults: Mutex::new(Default::default()),
            gate,
            redirect_blobs,
            log: Mutex::new(Vec::new()),
        });
        let serving = Arc::clone(&relay);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let relay = Arc::clone(&serving);
                tokio::spawn(async move {
                    // A cut answer closes its connection through this, once what was sent
                    // before the cut has been flushed.
                    let close = Arc::new(tokio::sync::Notify::new());
                    let closing = Arc::clone(&close);
                    let service = hyper::service::service_fn(move |request| {
                        let relay = Arc::clone(&relay);
                        let close = Arc::clone(&closing);
                        async move { Ok::<_, Infallible>(relay.handle(request, close).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = close.notified() => {}
                    }
                });
            }
        });
        relay
    }

    /// Cut the next answer of `blob` after `after` body bytes.
    fn cut(&self, blob: &Descriptor, after: u64) {
        let mut faults = self.faults.lock().unwrap();
        faults.entry(blob.digest.to_string()).or_default().cut_after = Some(after);
    }

    /// Flip the byte at `at` of the next answer of `blob`.
    fn flip(&self, blob: &Descriptor, at: u64) {
        let mut faults = self.faults.lock().unwrap();
        faults.entry(blob.digest.to_string()).or_default().flip_at = Some(at);
    }

    /// Hang the next answer of `blob` after `after` body bytes.
    fn stall(&self, blob: &Descriptor, after: u64) {
        let mut faults = self.faults.lock().unwrap();
        faults
            .entry(blob.digest.to_string())
            .or_default()
            .stall_after = Some(after);
    }

    /// Send the next request of `blob` on without its `Range`.
    fn drop_range(&self, blob: &Descriptor) {
        let mut faults = self.faults.lock().unwrap();
        faults
            .entry(blob.digest.to_string())
            .or_default()
            .drop_range = true;
    }

    fn domain(&self) -> String {
        self.address.to_string()
    }

    fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    fn blob_requests(&self, digest: &Digest) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|logged| logged.path.ends_with(&format!("/blobs/{digest}")))
            .collect()
    }

    fn log(&self, request: &Request<Incoming>, status: StatusCode) -> Arc<AtomicU64> {
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        let body_bytes = Arc::new(AtomicU64::new(0));
        self.log.lock().unwrap().push(Logged {
            path: request
                .uri()
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            range: header(http::header::RANGE),
            authorization: header(http::header::AUTHORIZATION),
            status: status.as_u16(),
            body_bytes: Arc::clone(&body_bytes),
        });
        body_bytes
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        close: Arc<tokio::sync::Notify>,
    ) -> Response<BoxBody<Bytes, BoxError>> {
        let path = request.uri().path().to_string();
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        if let Gate::Basic(credentials) = &self.gate {
            if authorization.as_deref() != Some(credentials.basic_header().as_str()) {
                self.log(&request, StatusCode::UNAUTHORIZED);
                let mut response = plain(StatusCode::UNAUTHORIZED, "");
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    r#"Basic realm="edgeroll-test""#.parse().unwrap(),
                );
                return response;
            }
        }
        if let Gate::Token(token, credentials) = &self.gate {
            if path == "/token" {
                if authorization.as_deref() != Some(credentials.basic_header().as_str()) {
                    self.log(&request, StatusCode::UNAUTHORIZED);
                    return plain(StatusCode::UNAUTHORIZED, "bad credentials");
                }
                self.log(&request, StatusCode::OK);
                return plain(StatusCode::OK, &json!({"token": token}).to_string());
            }
            if authorization.as_deref() != Some(format!("Bearer {token}").as_str()) {
                self.log(&request, StatusCode::UNAUTHORIZED);
                let repository = path
                    .strip_prefix("/v2/")
                    .and_then(|rest| {
                        rest.rsplit_once("/manifests/")
                            .or_else(|| rest.rsplit_once("/blobs/"))
                    })
                    .map(|(repository, _)| repository.to_string())
                    .unwrap_or_default();
                let mut response = plain(
                    StatusCode::UNAUTHORIZED,
                    r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                );
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    format!(
                        r#"Bearer realm="http://{}/token",service="edgeroll-test",scope="repository:{repository}:pull""#,
                        self.address
                    )
                    .parse()
                    .unwrap(),
                );
                return response;
            }
        }
        if let Some(origin) = &self.redirect_blobs {
            if path.contains("/blobs/") {
                self.log(&request, StatusCode::TEMPORARY_REDIRECT);
                let mut response = plain(StatusCode::TEMPORARY_REDIRECT, "");
                response.headers_mut().insert(
                    http::header::LOCATION,
                    format!("{origin}{path}?signed=1").parse().unwrap(),
                );
                return response;
            }
        }
        let faults = path
            .rsplit_once("/blobs/")
            .and_then(|(_, digest)| self.faults.lock().unwrap().remove(digest))
            .unwrap_or_default();
        let mut upstream = Request::get(format!("http://{}{}", self.upstream, path));
        let forwarded = if faults.drop_range {
            &[http::header::ACCEPT][..]
        } else {
            &[http::header::ACCEPT, http::header::RANGE][..]
        };
        for name in forwarded.iter().cloned() {
            if let Some(value) = request.headers().get(&name) {
                upstream = upstream.header(name, value);
            }
        }
        let answer = match self
            .client
            .request(upstream.body(Empty::new()).unwrap())
            .await
        {
            Ok(answer) => answer,
            Err(error) => return plain(StatusCode::BAD_GATEWAY, &error.to_string()),
        };
        let counter = self.log(&request, answer.status());
        let (parts, body) = answer.into_parts();
        let tapped = Tapped {
            inner: body,
            sent: 0,
            faults,
            counter,
            close: Some(close),
        };
        Response::from_parts(parts, tapped.boxed())
    }
}

fn plain(status: StatusCode, body: &str) -> Response<BoxBody<Bytes, BoxError>> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never: Infallible| -> BoxError { match never {} })
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// A body passed through, counted, and cut or corrupted as the faults say.
struct Tapped {
    inner: Incoming,
    sent: u64,
    faults: Faults,
    counter: Arc<AtomicU64>,
    /// Closes the connection (taken when the cut is reached).
    close: Option<Arc<tokio::sync::Notify>>,
}

impl hyper::body::Body for Tapped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.faults.cut_after.is_some_and(|cut| this.sent >= cut) {
            // Hold the answer (hyper flushes what it has), then close the connection short of
            // its Content-Length: the client gets every byte counted here, then the end. (An
            // error here instead makes hyper drop what it had not written yet.)
            if let Some(close) = this.close.take() {
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    close.notify_one();
                });
            }
            return Poll::Pending;
        }
        if this
            .faults
            .stall_after
            .is_some_and(|stall| this.sent >= stall)
        {
            // Never woken: the link hangs.
            return Poll::Pending;
        }
        match Pin::new(&mut this.inner).poll_frame(context) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Err(frame) => Poll::Ready(Some(Ok(frame))),
                Ok(mut data) => {
                    if let Some(cut) = this.faults.cut_after.or(this.faults.stall_after) {
                        let room = (cut - this.sent) as usize;
                        if data.len() > room {
                            data = data.slice(..room);
                        }
                    }
                    if let Some(flip) = this.faults.flip_at {
                        if flip >= this.sent && flip < this.sent + data.len() as u64 {
                            let mut bytes = data.to_vec();
                            bytes[(flip - this.sent) as usize] ^= 0xff;
                            data = Bytes::from(bytes);
                        }
                    }
                    this.sent += data.len() as u64;
                    this.counter.fetch_add(data.len() as u64, Ordering::SeqCst);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
            },
        }
    }
}

#[tokio::test]
#[ignore = "needs a registry; .ci/run starts it (tests/engines/registry.sh) and runs --ignored"]
async fn a_cut_download_resumes_from_where_it_broke_off() {
    let registry = registry();
    const LAYER: usize = 6_000_000;
    const CUT: u64 = 2_500_000;
    let pushed = push(&registry, "edgeroll/resume", "v1", &[("amd64", &[LAYER])]);
    let relay = Relay::start("127.0.0.1:0", &registry, Gate::Open, None).await;
    let reference = Reference::parse(&format!("{}/edgeroll/resume:v1", relay.domain())).unwrap();
    let client = client(options("amd64"));
    let image = client.resolve(&reference).await.unwrap();
    let layer = image.layers[0].clone();
    let store = tempfile::tempdir().unwrap();
    let sink = DirSink::new(store.path());

    relay.cut(&layer, CUT);
    let error = client
        .fetch_blob(&reference, &layer, &sink, |_| {})
        .await
        .unwrap_err();
    println!("cut: {error}");
    let ErrorKind::Interrupted { held } = error.kind else {
        panic!("a cut download is interrupted: {error:?}");
    };
    assert!(error.is_transient());
    assert_eq!(held, CUT, "every byte that arrived before the cut is kept");
    assert_eq!(
        sink.held(&layer).await.unwrap(),
        Held::Partial(held),
        "the sink keeps it"
    );
    assert!(!sink.blob_path(&layer.digest).exists(), "not committed");

    let fetched = client
        .fetch_blob(&reference, &layer, &sink, |_| {})
        .await
        .unwrap();
    assert_eq!(fetched.resumed_from, held);
    let requests = relay.blob_requests(&layer.digest);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range, None);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={held}-").as_str())
    );
    assert_eq!(requests[1].status, 206);
    let relayed: u64 = requests
        .iter()
        .map(|logged| logged.body_bytes.load(Ordering::SeqCst))
        .sum();
    println!(
        "resume: layer {} bytes, cut after {CUT}, held {held}, second attempt asked bytes={held}- and received {}, {relayed} relayed in total ({:.3}x the layer)",
        layer.size,
        fetched.received,
        relayed as f64 / layer.size as f64
    );
    assert!(
        relayed <= layer.size + CHUNK_BYTES as u64,
        "{relayed} relayed for {} bytes",
        layer.size
    );
    assert_eq!(fetched.received, layer.size - held);
    let bytes = std::fs::read(sink.blob_path(&layer.digest)).unwrap();
    assert_eq!(
        bytes, pushed.blobs[&layer.digest],
        "the resumed blob is whole and right"
    );
    assert_eq!(sink.held(&layer).await.unwrap(), Held::Complete);

    // Three cuts in one layer: four attempts, each asking for the rest; a client that starts
    // over each time would move 1.5 + 3 + 4.5 + 6 MB.
    let store = tempfile::tempdir().unwrap();
    let sink = DirSink::new(store.path());
    let before = relay.blob_requests(&layer.digest).len();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if attempts <= 3 {
            relay.cut(&layer, 1_500_000);
        }
        match client.fetch_blob(&reference, &layer, &sink, |_| {}).await {
            Ok(_) => break,
            Err(error) => assert!(
                matches!(error.kind, ErrorKind::Interrupted { .. }),
                "{error}"
            ),
        }
        assert!(attempts < 10);
    }
    let requests = &relay.blob_requests(&layer.digest)[before..];
    let ranges: Vec<_> = requests.iter().map(|logged| logged.range.clone()).collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some("bytes=1500000-".to_string()),
            Some("bytes=3000000-".to_string()),
            Some("bytes=4500000-".to_string())
        ]
    );
    let relayed: u64 = requests
        .iter()
        .map(|logged| logged.body_bytes.load(Ordering::SeqCst))
        .sum();
    println!(
        "three cuts: {attempts} attempts, ranges {ranges:?}, {relayed} bytes relayed for a {}-byte layer ({:.3}x; starting over each time: {:.3}x)",
        layer.size,
        relayed as f64 / layer.size as f64,
        (1_500_000.0 + 3_000_000.0 + 4_500_000.0 + layer.size as f64) / layer.size as f64
    );
    assert_eq!(relayed, layer.size);
    assert_eq!(
        std::fs::read(sink.blob_path(&layer.digest)).unwrap(),
        pushed.blobs[&layer.digest]
    );

    // Through `pull`, with progress: a cut, then a pull that resumes, counting from what is held.
    let store = tempfile::tempdir().unwrap();
    let sink = DirSink::new(store.path());
    let (progress, watcher) = watch::channel(PullProgress::default());
    relay.cut(&layer, CUT);
    let error = client.pull(&reference, &sink, &progress).await.unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::Interrupted { .. }),
        "{error}"
    );
    let stopped_at = watcher.borrow().done_bytes;
    assert!(
        stopped_at > 0 && stopped_at < image.total_bytes(),
        "{stopped_at}"
    );
    let mut seen = Vec::new();
    let mut watching = watcher.clone();
    let recorder = tokio::spawn(async move {
        let mut values = Vec::new();
        while watching.changed().await.is_ok() {
            values.push(watching.borrow().done_bytes);
        }
        values
    });
    client.pull(&reference, &sink, &progress).await.unwrap();
    drop(progress);
    seen.extend(recorder.await.unwrap());
    assert_eq!(watcher.borrow().done_bytes, image.total_bytes());
    assert!(
        seen.windows(2).all(|pair| pair[0] <= pair[1]),
        "progress never goes back: {seen:?}"
    );
}

#[tokio::test]
#[ignore = "needs a registry; .ci/run starts it (tests/engines/registry.sh) and runs --ignored"]
async fn a_corrupted_blob_fails_its_digest_and_is_never_committed() {
    let registry = registry();
    let pushed = push(
        &registry,
        "edgeroll/corrupt",
        "v1",
        &[("amd64", &[3_000_000])],
    );
    let relay = Relay::start("127.0.0.1:0", &registry, Gate::Open, None).await;
    let reference = Reference::parse(&format!("{}/edgeroll/corrupt:v1", relay.domain())).unwrap();
    let client = client(options("amd64"));
    let image = client.resolve(&reference).await.unwrap();
    let layer = image.layers[0].clone();
    let store = tempfile::tempdir().unwrap();
    let sink = DirSink::new(store.path());

    // Whole download, one byte flipped: the fetch's own hash refuses it.
    relay.flip(&layer, 1_000_000);
    let error = client
        .fetch_blob(&reference, &layer, &sink, |_| {})
        .await
        .unwrap_err();
    println!("corrupt: {error}");
    assert_eq!(error.kind, ErrorKind::Corrupt);
    assert!(error.message.contains("digest"), "{error}");
    assert_eq!(
        sink.held(&layer).await.unwrap(),
        Held::Partial(0),
        "discarded"
    );
    assert!(!sink.blob_path(&layer.digest).exists());

    // Resumed download whose second part is corrupt: the sink's commit refuses it.
    relay.cut(&layer, 1_000_000);
    let error = client
        .fetch_blob(&reference, &layer, &sink, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::Interrupted { .. }),
        "{error}"
    );
    relay.flip(&layer, 500_000);
    let error = client
        .fetch_blob(&reference, &layer, &sink, |_| {})
        .await
        .unwrap_err();
    println!("corrupt after resume: {error}");
    assert_eq!(error.kind, ErrorKind::Corrupt);
    assert_eq!(
        sink.held(&layer).await.unwrap(),
        Held::Partial(0),
        "discarded"
    );
    assert!(!sink.blob_path(&layer.digest).exists());

    // A clean fetch afterwards starts from 0 and succeeds.
    let fetched = client
        .fetch_blob(&reference, &layer, &sink, |_| {})
        .await
        .unwrap();
    assert_eq!(fetched.resumed_from, 0);
    assert_eq!(
        std::fs::read(sink.blob_path(&layer.digest)).unwrap(),
        pushed.blobs[&layer.digest]
    );
}

#[tokio::test]
#[ignore = "needs a registry; .ci/run starts it (tests/engines/registry.sh) and runs --ignored"]
async fn the_token_flow_gets_a_token_and_redirected_blobs_get_no_authorization() {
    let registry = registry();
    let pushed = push(
        &registry,
        "edgeroll/private",
        "v1",
        &[("amd64", &[1_000_000, 500_000])],
    );
    // The "object store" blobs are redirected to: another loopback host, no auth of its own.
    let store_relay = Relay::start("127.0.0.2:0", &registry, Gate::Open, None).await;
    let credentials = Credentials {
        username: "site-7".to_string(),
        password: "s3cret".to_string(),
    };
    let gateway = Relay::start(
        "127.0.0.1:0",
        &registry,
        Gate::Token("tok-123".to_string(), credentials.clone()),
        Some(format!("http://{}", store_relay.address)),
    )
    .await;
    let reference = Reference::parse(&format!("{}/edgeroll/private:v1", gateway.domain())).unwrap();

    // Without credentials the token endpoint refuses: denied, not transient.
    let error = client(options("amd64"))
        .resolve(&reference)
        .await
        .unwrap_err();
    println!("no credentials: {error}");
    assert_eq!(error.kind, ErrorKind::Denied, "{error}");
    assert!(!error.is_transient());
    assert!(!error.to_string().contains("tok-123"));

    let mut with_credentials = options("amd64");
    with_credentials
        .credentials
        .insert(gateway.domain(), credentials.clone());
    let client = client(with_credentials);
    let store = tempfile::tempdir().unwrap();
    let sink = DirSink::new(store.path());
    let (progress, _watcher) = watch::channel(PullProgress::default());
    let image = client.pull(&reference, &sink, &progress).await.unwrap();
    for blob in image.blobs() {
        assert_eq!(
            std::fs::read(sink.blob_path(&blob.digest)).unwrap(),
            pushed.blobs[&blob.digest]
        );
    }

    let requests = gateway.requests();
    let token_requests: Vec<_> = requests
        .iter()
        .filter(|logged| logged.path.starts_with("/token"))
        .collect();
    let granted: Vec<_> = token_requests
        .iter()
        .filter(|logged| logged.status == 200)
        .collect();
    assert_eq!(
        granted.len(),
        1,
        "one token for the repository, reused: {token_requests:?}"
    );
    assert!(
        granted[0].path.contains("service=edgeroll-test"),
        "{}",
        granted[0].path
    );
    assert!(
        granted[0]
            .path
            .contains("scope=repository%3Aedgeroll%2Fprivate%3Apull"),
        "{}",
        granted[0].path
    );
    assert_eq!(
        granted[0].authorization.as_deref(),
        Some(credentials.basic_header().as_str())
    );
    let registry_calls: Vec<_> = requests
        .iter()
        .filter(|logged| logged.path.starts_with("/v2/"))
        .collect();
    assert!(registry_calls
        .iter()
        .filter(|logged| logged.status != 401)
        .all(|logged| logged.authorization.as_deref() == Some("Bearer tok-123")));
    let redirects = registry_calls
        .iter()
        .filter(|logged| logged.status == 307)
        .count();
    assert_eq!(
        redirects, 3,
        "the config and two layers were redirected: {registry_calls:?}"
    );
    let store_calls = store_relay.requests();
    assert_eq!(store_calls.len(), 3, "{store_calls:?}");
    assert!(
        store_calls
            .iter()
            .all(|logged| logged.authorization.is_none()),
        "the registry's Authorization never goes to another host: {store_calls:?}"
    );
}

#[tokio::test]
#[ignore = "needs a registry; .ci/run starts it (tests/engines/registry.sh) and runs --ignored"]
async fn a_hung_download_is_interrupted_and_a_server_that_ignores_range_restarts_it() {
    let registry = registry();
    const STALL: u64 = 1_200_000;
    let pushed = push(
        &registry,
        "edgeroll/stall",
        "v1",
        &[("amd64", &[3_000_000])],
    );
    let relay = Relay::start("127.0.0.1:0", &registry, Gate::Open, None).await;
    let reference = Reference::parse(&format!("{}/edgeroll/stall:v1", relay.domain())).unwrap();
    let client = client(Options {
        stall_timeout: std::time::Duration::from_secs(1),
        ..options("amd64")
    });
    let image = client.resolve(&reference).await.unwrap();
    let layer = image.layers[0].clone();
    let store = tempfile::tempdir().unwrap();
    let sink = DirSink::new(store.path());

    // The link hangs: after the stall timeout the fetch gives up, keeping what came.
    relay.stall(&layer, STALL);
    let error = client
        .fetch_blob(&reference, &layer, &sink, |_| {})
        .await
        .unwrap_err();
    println!("stall: {error}");
    assert_eq!(
        error.kind,
        ErrorKind::Interrupted { held: STALL },
        "{error}"
    );
    assert!(error.message.contains("nothing received for 1s"), "{error}");
    assert_eq!(sink.held(&layer).await.unwrap(), Held::Partial(STALL));

    // The next attempt asks for the rest, but the answer is the whole blob (200): the sink
    // drops what it held and the blob is written from 0, not appended to.
    relay.drop_range(&layer);
    let fetched = client
        .fetch_blob(&reference, &layer, &sink, |_| {})
        .await
        .unwrap();
    let requests = relay.blob_requests(&layer.digest);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={STALL}-").as_str())
    );
    assert_eq!(requests[1].status, 200);
    assert_eq!(fetched.resumed_from, 0);
    assert_eq!(fetched.received, layer.size);
    assert_eq!(
        std::fs::read(sink.blob_path(&layer.digest)).unwrap(),
        pushed.blobs[&layer.digest]
    );
}

/// A TLS terminator on 127.0.0.1 in front of `upstream` (plain TCP), with a fresh self-signed
/// certificate for 127.0.0.1; returns its address and the certificate's PEM.
async fn tls_terminator(upstream: SocketAddr) -> (SocketAddr, String) {
    edgeroll::provider::http_client::install_crypto_provider();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (address, pem)
}

#[tokio::test]
#[ignore = "needs a registry; .ci/run starts it (tests/engines/registry.sh) and runs --ignored"]
async fn basic_credentials_over_https_with_the_site_ca_file() {
    let registry = registry();
    let pushed = push(&registry, "edgeroll/tls", "v1", &[("amd64", &[700_000])]);
    let credentials = Credentials {
        username: "site-9".to_string(),
        password: "pa:ss".to_string(),
    };
    let relay = Relay::start(
        "127.0.0.1:0",
        &registry,
        Gate::Basic(credentials.clone()),
        None,
    )
    .await;
    let (address, pem) = tls_terminator(relay.address).await;
    let domain = address.to_string();
    let reference = Reference::parse(&format!("{domain}/edgeroll/tls:v1")).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let ca_file = directory.path().join("ca.pem");
    std::fs::write(&ca_file, pem).unwrap();

    // Over plain HTTP (the loopback default) a TLS server is unreachable.
    let error = client(options("amd64"))
        .resolve(&reference)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");

    // HTTPS without the CA: the certificate is refused.
    let https = Options {
        https_loopback: vec![domain.clone()],
        ..options("amd64")
    };
    let error = client(https.clone()).resolve(&reference).await.unwrap_err();
    println!("unknown CA: {error}");
    assert!(error.message.contains("certificate"), "{error}");

    // With the CA but no credentials: the Basic challenge is denied, not transient.
    let trusted = Options {
        ca_file: Some(ca_file.clone()),
        ..https
    };
    let error = client(trusted.clone())
        .resolve(&reference)
        .await
        .unwrap_err();
    println!("basic without credentials: {error}");
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(!error.is_transient());

    let mut with_credentials = trusted;
    with_credentials
        .credentials
        .insert(domain.clone(), credentials.clone());
    let client = client(with_credentials);
    let store = tempfile::tempdir().unwrap();
    let sink = DirSink::new(store.path());
    let (progress, _watcher) = watch::channel(PullProgress::default());
    let image = client.pull(&reference, &sink, &progress).await.unwrap();
    for blob in image.blobs() {
        assert_eq!(
            std::fs::read(sink.blob_path(&blob.digest)).unwrap(),
            pushed.blobs[&blob.digest]
        );
    }
    let passed: Vec<_> = relay
        .requests()
        .into_iter()
        .filter(|logged| logged.status != 401)
        .collect();
    assert!(!passed.is_empty());
    assert!(
        passed
            .iter()
            .all(|logged| logged.authorization.as_deref()
                == Some(credentials.basic_header().as_str()))
    );
}
