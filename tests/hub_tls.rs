//! `edgeroll hub` over HTTPS (`[tls]` in hub.toml): a site that trusts the hub's certificate
//! polls its document and gets 304 on its ETag; a plain-HTTP client gets nothing. With
//! `client_ca` (mutual TLS) a site polls and reports only for the name its certificate is for.

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
    let extra = etag
        .map(|etag| format!("if-none-match: {etag}\r\n"))
        .unwrap_or_default();
    https(address, roots, None, "GET", path, &extra, b"").expect("HTTPS request")
}

/// One HTTPS request (with a client certificate when `identity` is given); `Err` when the
/// handshake or the connection fails.
fn https(
    address: SocketAddr,
    roots: &rustls::RootCertStore,
    identity: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &[u8],
) -> std::io::Result<String> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots.clone());
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((certificate, key)) => builder
            .with_client_auth_cert(
                vec![certificate.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("client certificate"),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(address)?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         edgeroll-site: store-1\r\ncontent-length: {}\r\n{extra_headers}\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    if let Err(error) = stream.read_to_end(&mut answer) {
        if answer.is_empty() {
            return Err(error);
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
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

#[test]
fn with_client_certificates_a_site_polls_and_reports_only_for_itself() {
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let site_key = rcgen::KeyPair::generate().expect("site key");
    let site = rcgen::CertificateParams::new(vec!["store-1".to_owned()])
        .expect("site params")
        .signed_by(&site_key, &ca, &ca_key)
        .expect("site certificate");
    // A certificate for the same name that the sites' CA did not sign.
    let rogue_key = rcgen::KeyPair::generate().expect("rogue key");
    let rogue = rcgen::CertificateParams::new(vec!["store-1".to_owned()])
        .expect("rogue params")
        .self_signed(&rogue_key)
        .expect("rogue certificate");

    let dir = HubDir::new(
        "127.0.0.1:0",
        "[tls]\ncert = \"hub.crt\"\nkey = \"hub.key\"\nclient_ca = \"sites-ca.crt\"\n",
    );
    std::fs::write(dir.dir.path().join("hub.crt"), server.cert.pem()).expect("cert");
    std::fs::write(
        dir.dir.path().join("hub.key"),
        server.key_pair.serialize_pem(),
    )
    .expect("key");
    std::fs::write(dir.dir.path().join("sites-ca.crt"), ca.pem()).expect("CA");
    dir.write_document("fleet.toml", 41, "", "2.4.0");
    let hub = InProcessHub::start(&dir);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert.der().clone()).expect("root");
    let me = Some((&site, &site_key));
    let get = |identity, path: &str| https(hub.address, &roots, identity, "GET", path, "", b"");

    let mine = get(me, "/v1/sites/store-1/desired").expect("poll");
    assert!(mine.starts_with("HTTP/1.1 200"), "{mine}");
    let other = get(me, "/v1/sites/store-2/desired").expect("poll");
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    assert!(other.contains("not valid for site store-2"), "{other}");

    let post = |site: &str| {
        let body = edgeroll::wire::report::encode(&batch(site, 1, 1, [1]));
        https(
            hub.address,
            &roots,
            me,
            "POST",
            "/v1/reports",
            "content-encoding: gzip\r\n",
            &body,
        )
        .expect("report")
    };
    let report = post("store-1");
    assert!(report.starts_with("HTTP/1.1 200"), "{report}");
    let forged = post("store-2");
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");

    // No certificate, or one the sites' CA did not sign: no answer at all.
    let anonymous = get(None, "/v1/sites/store-1/desired");
    assert!(anonymous.map_or(true, |answer| !answer.starts_with("HTTP/1.1 200")));
    let rogue = get(Some((&rogue, &rogue_key)), "/v1/sites/store-1/desired");
    assert!(rogue.map_or(true, |answer| !answer.starts_with("HTTP/1.1 200")));
}
