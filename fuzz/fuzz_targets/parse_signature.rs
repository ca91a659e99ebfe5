//! Fuzz the minisign parsers a site runs on what it downloads and a publisher on its key files:
//! a public key, a `.minisig` (verified against a fixed document and key), a secret key file.
//! Any bytes must be refused with an error, never panic or hang. Secret keys are only parsed as
//! unencrypted ones: decrypting would run the scrypt the input asks for (up to 1 GiB), which is
//! the key owner's own choice, not an attack on a site.
#![no_main]

use edgeroll::wire::signature::{self, SigningKey, TrustedKey};
use libfuzzer_sys::fuzz_target;

/// A real key (the README's), so that the fuzzer reaches the verification of a signature that
/// names it: seed the corpus with the README's `desired.toml.minisig`.
const PUBLIC_KEY: &str = "RWQfspqSgYtKqpbZb9Rx99Bal+sHR8Y0+edmgZhhPd1QhD7x+cD4UmII";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = TrustedKey::parse(text);
    if let Ok(trusted) = TrustedKey::parse(PUBLIC_KEY) {
        if let Ok(verified) = signature::verify(b"serial = 1\n", text, &[trusted]) {
            let _ = verified.signed_at();
        }
    }
    if !SigningKey::is_encrypted(text) {
        let _ = SigningKey::parse(text, None);
    }
    let _ = signature::comment_field(text, "serial");
});
