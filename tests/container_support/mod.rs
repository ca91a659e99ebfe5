//! Container images and workloads for the real-engine tests (Docker, podman, containerd), made
//! with no registry and no internet: one layer holding Debian's static busybox
//! (`apt-get install busybox-static`, `/bin/busybox`), written as a tarball that is at the same
//! time an OCI image layout (`oci-layout`, `index.json`) and a `docker save` archive
//! (`manifest.json`), so `docker load`, `podman load` and `ctr image import` all accept it.
//!
//! The API is small on purpose:
//! - [`build_image`]: the tarball for one image reference (plus extra files in its rootfs);
//! - [`http_template`]: a template whose container serves `/healthz` and `/version` over HTTP
//!   on its allocated port with `busybox httpd`, and stops as a [`StopBehaviour`] says;
//! - [`http_get`]: one plain HTTP/1.0 GET, to see that an instance answers.
//!
//! It never talks to an engine: each backend's tests load the tarball through their own API.
// These helpers run in tests only, where a panic is the right answer to a broken fixture.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeroll::spec::{ContainerSpec, PullPolicy, Readiness, StopSignal, Template};

/// Where Debian's `busybox-static` installs the static binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// How the workload of [`http_template`] reacts to signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBehaviour {
    /// SIGTERM stops the server and exits 0 (the default stop signal).
    ExitOnTerm,
    /// SIGTERM is ignored; SIGUSR1 stops it and exits 0 (and the template's `stopSignal` is
    /// SIGUSR1), so a stop that finishes well before the grace shows the signal was sent.
    ExitOnUsr1,
    /// Every catchable signal is ignored: only SIGKILL stops it.
    IgnoreAll,
}

/// Build an image tarball for `reference` (e.g. `docker.io/edgeroll-test/busybox:1`) in `dir`
/// and return its path. Its rootfs holds `/bin/busybox`, `/bin/sh` (a symlink to it), `/www/`
/// with `healthz` and `version` (`reference`), `/tmp/`, and `files` (path inside the rootfs,
/// without the leading `/`, and contents). Its default command serves `/www` on `$PORT`.
pub fn build_image(dir: &Path, reference: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let busybox = std::fs::read(BUSYBOX)
        .unwrap_or_else(|error| panic!("read {BUSYBOX} (apt-get install busybox-static): {error}"));

    let mut layer = Tar::default();
    layer.dir("bin/");
    layer.file("bin/busybox", &busybox, 0o755);
    layer.symlink("bin/sh", "busybox");
    layer.dir("tmp/");
    layer.dir("www/");
    layer.file("www/healthz", b"ok\n", 0o644);
    layer.file("www/version", format!("{reference}\n").as_bytes(), 0o644);
    for (path, contents) in files {
        layer.file(path, contents, 0o644);
    }
    let layer = layer.finish();
    let layer_digest = sha256(&layer);

    let config = serde_json::json!({
        "architecture": docker_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh", "-c", script(StopBehaviour::ExitOnTerm)],
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
        "history": [{ "created_by": "edgeroll tests/container_support" }],
    })
    .to_string()
    .into_bytes();
    let config_digest = sha256(&config);

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = sha256(&manifest);

    let tag = reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("latest", |(_, tag)| tag);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    })
    .to_string()
    .into_bytes();
    let docker_manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [reference],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }])
    .to_string()
    .into_bytes();

    let mut archive = Tar::default();
    archive.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    archive.file("index.json", &index, 0o644);
    archive.file("manifest.json", &docker_manifest, 0o644);
    archive.dir("blobs/");
    archive.dir("blobs/sha256/");
    archive.file(&format!("blobs/sha256/{layer_digest}"), &layer, 0o644);
    archive.file(&format!("blobs/sha256/{config_digest}"), &config, 0o644);
    archive.file(&format!("blobs/sha256/{manifest_digest}"), &manifest, 0o644);

    let file_name: String = reference
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = dir.join(format!("{file_name}.tar"));
    std::fs::write(&path, archive.finish()).expect("write the image tarball");
    path
}

/// The shell script the container runs: busybox httpd on `127.0.0.1:$PORT` serving `/www`,
/// after writing `$VERSION` (when set) to `/www/version`.
pub fn script(behaviour: StopBehaviour) -> String {
    let serve = r#"[ -n "$VERSION" ] && echo "$VERSION" >/www/version; busybox httpd -f -p 127.0.0.1:$PORT -h /www & P=$!; "#;
    let traps = match behaviour {
        StopBehaviour::ExitOnTerm => r#"trap "kill $P; exit 0" TERM; "#,
        StopBehaviour::ExitOnUsr1 => {
            r#"trap "" TERM; trap "echo got USR1; kill -9 $P; exit 0" USR1; "#
        }
        StopBehaviour::IgnoreAll => r#"trap "" TERM INT HUP QUIT USR1 USR2; "#,
    };
    // `wait` returns early when a trapped signal arrives; loop so that an ignored one does not
    // end the script.
    format!(r#"{serve}{traps}echo serving; while kill -0 $P 2>/dev/null; do wait $P; done"#)
}

/// A template running `image` (from [`build_image`]) that serves HTTP on its port with
/// `VERSION=version`, ready when `/healthz` answers 200.
pub fn http_template(image: &str, version: &str, behaviour: StopBehaviour) -> Template {
    Template {
        version: version.to_string(),
        command: vec!["/bin/sh".to_string(), "-c".to_string(), script(behaviour)],
        args: Vec::new(),
        env: BTreeMap::from([("VERSION".to_string(), version.to_string())]),
        readiness: Readiness::HttpGet {
            path: "/healthz".to_string(),
        },
        stop_signal: match behaviour {
            StopBehaviour::ExitOnUsr1 => Some(StopSignal::Usr1),
            _ => None,
        },
        container: Some(ContainerSpec {
            image: image.to_string(),
            image_archive: None,
            pull_policy: PullPolicy::IfNotPresent,
            cpu_millis: None,
            memory_bytes: None,
        }),
    }
}

/// `GET path` over HTTP/1.0: the status and body, or `None` when nothing answers.
pub fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The host's architecture as OCI names it.
pub fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Lower-case hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A ustar archive built in memory (small fixtures only).
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn dir(&mut self, path: &str) {
        self.entry(path, b'5', 0o755, &[], "");
    }

    fn file(&mut self, path: &str, contents: &[u8], mode: u32) {
        self.entry(path, b'0', mode, contents, "");
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, b'2', 0o777, &[], target);
    }

    fn entry(&mut self, path: &str, kind: u8, mode: u32, contents: &[u8], link: &str) {
        assert!(
            path.len() < 100 && link.len() < 100,
            "tar path too long: {path}"
        );
        let mut header = [0u8; 512];
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}\0", width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        header[..path.len()].copy_from_slice(path.as_bytes());
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], contents.len() as u64);
        octal(&mut header[136..148], 1_700_000_000);
        header[156] = kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&byte| u32::from(byte)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&header);
        self.0.extend_from_slice(contents);
        let padding = (512 - contents.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, padding));
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0, 1024));
        self.0
    }
}
