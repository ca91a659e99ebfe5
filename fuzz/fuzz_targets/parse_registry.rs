//! Fuzz what the containerd backend's registry client reads from a registry it does not control:
//! image references (from documents), digests, manifests and indexes (with any content type, then
//! the platform choice), `WWW-Authenticate` challenges and token answers. Any bytes must be
//! refused with an error, never panic or hang.
#![no_main]

use edgeroll::runtime::registry::{auth, manifest, Challenge, Digest, Manifest, Platform, Reference};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
];

fuzz_target!(|data: &[u8]| {
    let _ = auth::token_from_answer(data);
    for content_type in CONTENT_TYPES {
        if let Ok((_, Manifest::Index(index))) = Manifest::parse(content_type, data) {
            let _ = manifest::select_platform(&index, &Platform::host());
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = Reference::parse(text) {
        let _ = (reference.target(), reference.api_host(), reference.hostname());
    }
    let _ = Digest::parse(text);
    let _ = Challenge::parse(text);
});
