//! `edgeroll hub` over HTTPS (`[tls]` in hub.toml): a site that trusts the hub's certificate
//! polls its document and gets 304 on its ETag; a plain-HTTP client gets nothing.

mod hub_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use hub_support::*;

fn https_get(
    address: SocketAddr,
    roots: &rustls::RootCertStore,
    path: &str,
    etag: Option<&str>,
) -> String {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(address).expect("connect");
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nedgeroll-site: store-1\r\n"
    );
    if let Some(etag) = etag {
        request.push_str(&format!("if-none-match: {etag}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    if let Err(error) = stream.read_to_end(&mut answer) {
        assert!(!answer.is_empty(), "read: {error}");
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_site_polls_the_hub_over_https() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = HubDir::new(
        "127.0.0.1:0",
        "[tls]\ncert = \"hub.crt\"\nkey = \"hub.key\"\n",
    );
    std::fs::write(dir.dir.path().join("hub.crt"), certified.cert.pem()).expect("cert");
    std::fs::write(
        dir.dir.path().join("hub.key"),
        certified.key_pair.serialize_pem(),
    )
    .expect("key");
    dir.write_document("fleet.toml", 41, "", "2.4.0");
    let hub = InProcessHub::start(&dir);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");

    let answer = https_get(hub.address, &roots, "/v1/sites/store-1/desired", None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&document(41, "", "2.4.0")), "{answer}");
    let etag = answer
        .lines()
        .find_map(|line| line.strip_prefix("etag: "))
        .expect("etag")
        .trim()
        .to_owned();
    let again = https_get(
        hub.address,
        &roots,
        "/v1/sites/store-1/desired",
        Some(&etag),
    );
    assert!(again.starts_with("HTTP/1.1 304"), "{again}");

    // Plain HTTP to the TLS port gets no answer a site could mistake for a document.
    let plain = try_request(hub.address, "GET", "/v1/sites/store-1/desired", &[], b"");
    assert!(plain.map_or(true, |answer| answer.status != 200));
}
