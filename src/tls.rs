//! TLS settings of the agent's outbound connections to its center (the pull of the desired
//! document, report delivery over HTTPS and MQTT): rustls with the ring provider, the system's
//! CA store plus an optional `ca_file`, and an optional client certificate for mutual TLS.
//!
//! It only builds a `rustls::ClientConfig` from files; it never connects.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where a connection's trust and identity come from; each path is named in the errors with
/// `section` (e.g. `desired.ca_file`).
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    /// The config section the paths come from, e.g. `desired` or `reports`.
    pub section: &'a str,
    /// Extra CA certificates (PEM); the system's store is always used.
    pub ca_file: Option<&'a Path>,
    /// The site's certificate chain (PEM), with `client_key`.
    pub client_cert: Option<&'a Path>,
    /// The site's private key (PEM), with `client_cert`.
    pub client_key: Option<&'a Path>,
}

/// The client config for `files`; the error names the setting and the file.
pub fn client_config(files: Files<'_>) -> Result<rustls::ClientConfig, String> {
    crate::provider::http_client::install_crypto_provider();
    let section = files.section;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "cannot load some of the system's CA certificates");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(ca_file) = files.ca_file {
        for certificate in certificates(ca_file, &format!("{section}.ca_file"))? {
            roots
                .add(certificate)
                .map_err(|error| format!("{section}.ca_file {}: {error}", ca_file.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match (files.client_cert, files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, &format!("{section}.client_cert"))?;
            let key = private_key(key, &format!("{section}.client_key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| format!("{section}.client_cert {}: {error}", cert.display()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("{setting} {}: {error}", path.display()))
}

/// The PEM certificates in `path`; none at all is an error.
fn certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, setting)?;
    let certificates = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{setting} {}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{setting} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certificates)
}

/// The PEM private key in `path`.
fn private_key(path: &Path, setting: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, setting)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|error| format!("{setting} {}: {error}", path.display()))?
        .ok_or_else(|| format!("{setting} {}: no PEM private key in it", path.display()))
}
