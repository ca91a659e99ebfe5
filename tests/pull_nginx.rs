//! A site pulls a signed desired document from a real nginx (Debian `nginx`) that serves two
//! static files, `desired.toml` and `desired.toml.minisig`, over TLS on a loopback port: the
//! protocol needs nothing from the server but files, and nginx's own ETag gives a 304 on the
//! next poll. The test starts nginx itself with a temporary config; it fails when nginx is
//! missing.

// These tests drive real processes in real time.
#![allow(clippy::disallowed_methods)]

mod pull_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pull_support::{document, Pki, Rig, Signer};

const NGINX: &str = "/usr/sbin/nginx";

struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

fn start_nginx(dir: &Path, pki: &Pki, port: u16) -> Nginx {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is missing: apt-get install -y nginx-light (this test never skips)"
    );
    for sub in ["www", "tmp", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).expect("nginx dirs");
    }
    let d = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/logs/error.log info;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/logs/access.log;\n  client_body_temp_path {d}/tmp;\n\
         proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n\
         scgi_temp_path {d}/tmp;\n  default_type application/octet-stream;\n\
         server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n\
         ssl_certificate_key {key};\n    root {d}/www;\n  }}\n}}\n",
        cert = pki.cert_file.display(),
        key = pki.key_file.display(),
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).expect("nginx.conf");
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child }
}

fn publish(www: &Path, bytes: &[u8], signature: &str) {
    let site = www.join("sites/store-0042");
    std::fs::create_dir_all(&site).expect("site dir");
    // Signature first, then the document, each replaced atomically.
    for (name, contents) in [
        ("desired.toml.minisig", signature.as_bytes()),
        ("desired.toml", bytes),
    ] {
        let partial = site.join(format!("{name}.partial"));
        std::fs::write(&partial, contents).expect("write");
        std::fs::rename(&partial, site.join(name)).expect("rename");
    }
}

#[tokio::test]
async fn a_site_pulls_a_signed_document_from_plain_nginx_and_gets_304_from_its_etag() {
    let pki = Pki::new();
    let served = tempfile::tempdir().expect("nginx dir");
    let port = free_port();
    let _nginx = start_nginx(served.path(), &pki, port);
    let signer = Signer::new();
    let www = served.path().join("www");
    let first = document(1, "selector = { cohort = \"pilot\" }\n");
    publish(&www, &first, &signer.sign(&first));

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
    let access = std::fs::read_to_string(served.path().join("logs/access.log")).unwrap();
    assert!(
        access.contains("\"GET /sites/store-0042/desired.toml HTTP/1.1\" 304"),
        "{access}"
    );

    // A new serial (a different size, so a different nginx ETag) is taken.
    let second = document(2, "selector = { cohort = \"pilot\" }\n# the next release\n");
    publish(&www, &second, &signer.sign(&second));
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
    publish(&www, &tampered, &signature);
    let round = rig.round().await;
    assert_eq!(round.refused.len(), 1, "{round:?}");
    assert_eq!(round.refused[0].0, "signature");
    assert_eq!(rig.accepted_serial(), Some(2));
}
