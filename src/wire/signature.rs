//! Minisign signatures of desired documents: verifying against the keys a site trusts.
//!
//! The signature covers the document's exact bytes (minisign's prehashed `ED` algorithm; the
//! legacy `Ed` one is refused), and its trusted comment is covered by the global signature. The
//! serial, the expiry and the selector live in the document itself, so they are signed with it.
//! A site pins one or more public keys (`desired.trusted_keys`), so a key can be rotated by
//! pinning the next one before signing with it.
//!
//! The trusted comment repeats them for people and for `minisign -V`, in minisign's own
//! `key:value` convention ([`trusted_comment`]): `timestamp:<unix seconds>` (the signing time,
//! which a site without a trusted clock may use as a clock floor, [`Verified::signed_at`]), then
//! `serial:`, `expires:` when the document has one, and `selector:`.
//!
//! Key generation ([`generate`]) is here too, so that only this module knows the minisign
//! format. It must never read files, prompt for a password or read a clock: callers hand it text,
//! passwords and `now`.

use std::collections::BTreeMap;
use std::io::Cursor;

/// A public key a site trusts.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: minisign::PublicKey,
    /// The key id, as minisign prints it (16 upper-case hex digits).
    pub key_id: String,
}

/// A verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The id of the key that made it (16 upper-case hex digits, as minisign prints it).
    pub key_id: String,
    /// The trusted comment (covered by the signature), e.g. `timestamp:1764600000 serial:17`.
    pub trusted_comment: String,
}

impl Verified {
    /// The signing time the trusted comment carries (`timestamp:<unix seconds>`, minisign's
    /// convention), if it has one.
    pub fn signed_at(&self) -> Option<u64> {
        comment_field(&self.trusted_comment, "timestamp")?
            .parse()
            .ok()
    }
}

/// The value of the first `name:value` field of a trusted comment (fields are separated by
/// whitespace: edgeroll writes spaces, `minisign -S` itself tabs, as in
/// `timestamp:1764600000\tfile:desired.toml\thashed`).
pub fn comment_field<'a>(comment: &'a str, name: &str) -> Option<&'a str> {
    comment.split_whitespace().find_map(|field| {
        field
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// The longest trusted comment `minisign -V` reads back: its line buffer is 8192 bytes,
/// holding the `trusted comment: ` prefix (17), the comment, the newline and a NUL.
pub const MAX_TRUSTED_COMMENT_BYTES: usize = 8192 - 17 - 2;

/// What a document's signature states about it, in its trusted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFields<'a> {
    /// When it was signed, unix seconds.
    pub timestamp: u64,
    /// The document's serial.
    pub serial: u64,
    /// The document's expiry as written in it (RFC 3339), if it has one.
    pub expires: Option<&'a str>,
    /// The document's selector; empty means every site.
    pub selector: &'a BTreeMap<String, String>,
}

/// The trusted comment for a document, e.g. `timestamp:1764600000 serial:17
/// selector:cohort=pilot` (`selector:*` when it selects every site; several labels are joined by
/// `,`). Spaces, control characters, `%`, `,` and `=` inside a label are percent-encoded, so the
/// comment stays one line of fields.
pub fn trusted_comment(fields: &SignedFields<'_>) -> String {
    let mut comment = format!("timestamp:{} serial:{}", fields.timestamp, fields.serial);
    if let Some(expires) = fields.expires {
        comment.push_str(" expires:");
        comment.push_str(&escape_field(expires));
    }
    comment.push_str(" selector:");
    if fields.selector.is_empty() {
        comment.push('*');
    } else {
        let labels: Vec<String> = fields
            .selector
            .iter()
            .map(|(key, value)| format!("{}={}", escape_field(key), escape_field(value)))
            .collect();
        comment.push_str(&labels.join(","));
    }
    comment
}

/// Percent-encode what would break a `name:value` field of a one-line comment.
fn escape_field(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if character.is_whitespace() || character.is_control() || "%,=".contains(character) {
            let mut buffer = [0u8; 4];
            for byte in character.encode_utf8(&mut buffer).bytes() {
                escaped.push_str(&format!("%{byte:02X}"));
            }
        } else {
            escaped.push(character);
        }
    }
    escaped
}

/// A freshly generated key pair, as the texts of its two files.
pub struct GeneratedKey {
    /// The `.pub` file: `untrusted comment: minisign public key <ID>`, then the base64 line.
    pub public_file: String,
    /// The secret key file, encrypted with the password when one was given.
    pub secret_file: String,
    /// The public key's base64 line (what `trusted_keys` pins).
    pub public_base64: String,
    /// The key id (16 upper-case hex digits, as minisign prints it).
    pub key_id: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GeneratedKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Generate an Ed25519 key pair in minisign's format; the secret key is encrypted with
/// `password` (minisign's scrypt and XOR scheme), or unencrypted with `None` (what
/// `minisign -G -W` writes).
pub fn generate(password: Option<String>) -> Result<GeneratedKey, SignatureError> {
    let bad = |error: minisign::PError| SignatureError::BadKey(error.to_string());
    let encrypted = password.is_some();
    let pair = match password {
        Some(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(bad)?;
    let key_id = key_id_of(pair.pk.keynum());
    let public_base64 = pair.pk.to_base64();
    let public_file = format!("untrusted comment: minisign public key {key_id}\n{public_base64}\n");
    let comment = if encrypted {
        "edgeroll encrypted secret key"
    } else {
        "edgeroll secret key (unencrypted)"
    };
    let secret_file = pair.sk.to_box(Some(comment)).map_err(bad)?.into_string();
    Ok(GeneratedKey {
        public_file,
        secret_file,
        public_base64,
        key_id,
    })
}

/// Why a signature or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The key (public or secret) is not a usable minisign key, or the password is wrong.
    #[error("not a usable minisign key: {0}")]
    BadKey(String),
    /// The signature file is not a minisign signature.
    #[error("not a minisign signature: {0}")]
    Malformed(String),
    /// No trusted key has the signature's key id.
    #[error("signed by key {key_id}, which this site does not trust (trusted: {trusted})")]
    UntrustedKey {
        /// The signature's key id.
        key_id: String,
        /// The trusted key ids, joined by `, `.
        trusted: String,
    },
    /// The key id matches but the signature does not verify: the document or the signature
    /// was changed.
    #[error("the signature by key {key_id} does not match the document: {reason}")]
    Invalid {
        /// The signature's key id.
        key_id: String,
        /// What minisign said.
        reason: String,
    },
}

/// The key id of minisign's 8 key-number bytes (little-endian), as minisign prints it.
fn key_id_of(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    for (slot, byte) in bytes.iter_mut().zip(keynum) {
        *slot = *byte;
    }
    format!("{:016X}", u64::from_le_bytes(bytes))
}

impl TrustedKey {
    /// A key from the base64 line of a `.pub` file (`RWQ…`), or a whole `.pub` file's text
    /// (an `untrusted comment:` line, then the base64 line).
    pub fn parse(text: &str) -> Result<TrustedKey, SignatureError> {
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty() && !line.starts_with("untrusted comment:"))
            .unwrap_or_default();
        let key = minisign::PublicKey::from_base64(line)
            .map_err(|error| SignatureError::BadKey(error.to_string()))?;
        let key_id = key_id_of(key.keynum());
        Ok(TrustedKey { key, key_id })
    }

    /// The base64 line of the key (what `trusted_keys` pins).
    pub fn to_base64(&self) -> String {
        self.key.to_base64()
    }
}

/// Verify `signature` (the text of a `.minisig` file) over `document` with the key among
/// `trusted` whose id it names.
pub fn verify(
    document: &[u8],
    signature: &str,
    trusted: &[TrustedKey],
) -> Result<Verified, SignatureError> {
    // minisign's parser forgives what follows a base64 line's padding; edgeroll reads the two
    // signed lines strictly, so that a changed byte anywhere but in the untrusted comment fails.
    let lines: Vec<&str> = signature.lines().collect();
    // Algorithm (2), key number (8) and Ed25519 signature (64); then the global signature (64).
    for (index, what, length) in [(1, "signature", 74), (3, "global signature", 64)] {
        let decoded = lines.get(index).and_then(|line| decode_base64(line));
        if decoded.is_none_or(|bytes| bytes.len() != length) {
            return Err(SignatureError::Malformed(format!(
                "line {} (the {what}) is not {length} bytes of canonical base64",
                index + 1
            )));
        }
    }
    if lines.len() > 4 {
        return Err(SignatureError::Malformed(format!(
            "{} lines, where minisign writes 4",
            lines.len()
        )));
    }
    let signature_box = minisign::SignatureBox::from_string(signature)
        .map_err(|error| SignatureError::Malformed(error.to_string()))?;
    let key_id = key_id_of(signature_box.keynum());
    let Some(key) = trusted.iter().find(|key| key.key_id == key_id) else {
        return Err(SignatureError::UntrustedKey {
            key_id,
            trusted: trusted
                .iter()
                .map(|key| key.key_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    minisign::verify(
        &key.key,
        &signature_box,
        Cursor::new(document),
        true,
        false,
        false,
    )
    .map_err(|error| SignatureError::Invalid {
        key_id: key_id.clone(),
        reason: error.to_string(),
    })?;
    let trusted_comment = signature_box
        .trusted_comment()
        .map_err(|error| SignatureError::Malformed(error.to_string()))?;
    Ok(Verified {
        key_id,
        trusted_comment,
    })
}

/// The untrusted comment of the signatures edgeroll writes (minisign shows it, nothing checks it).
const UNTRUSTED_COMMENT: &str = "signature from edgeroll secret key";

/// A secret key, decrypted, ready to sign.
pub struct SigningKey {
    key: minisign::SecretKey,
    /// The key id (16 upper-case hex digits, as minisign prints it).
    pub key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from the text of a minisign secret key file; `password` decrypts an encrypted one
    /// (`None` for a key written unencrypted, as `minisign -G -W` or `edgeroll keygen
    /// --unencrypted` do).
    pub fn parse(text: &str, password: Option<String>) -> Result<SigningKey, SignatureError> {
        let boxed = minisign::SecretKeyBox::from_string(text)
            .map_err(|error| SignatureError::BadKey(error.to_string()))?;
        let key = match password {
            Some(password) => boxed.into_secret_key(Some(password)),
            None => boxed
                .into_unencrypted_secret_key()
                .or_else(|error| unchecksummed_key(text).ok_or(error)),
        }
        .map_err(|error| match error.kind() {
            minisign::ErrorKind::Verify => {
                SignatureError::BadKey("wrong password, or a corrupted key".to_owned())
            }
            _ => SignatureError::BadKey(error.to_string()),
        })?;
        let key_id = minisign::PublicKey::from_secret_key(&key)
            .map(|public| key_id_of(public.keynum()))
            .map_err(|error| SignatureError::BadKey(error.to_string()))?;
        Ok(SigningKey { key, key_id })
    }

    /// Whether the text of a secret key file holds an encrypted key (one that needs a
    /// password). Text that is not a secret key at all counts as encrypted, so that
    /// [`SigningKey::parse`] with the password is what reports it.
    pub fn is_encrypted(text: &str) -> bool {
        text.lines()
            .nth(1)
            .and_then(|line| decode_base64(line.trim()))
            .filter(|bytes| bytes.len() == SECRET_KEY_BYTES)
            .is_none_or(|bytes| bytes.get(KDF_ALGORITHM) != Some(&[0, 0][..]))
    }

    /// Sign `document`, with `trusted_comment` covered by the signature; returns the text of
    /// the `.minisig` file. A comment of more than one line or longer than
    /// [`MAX_TRUSTED_COMMENT_BYTES`] is refused, since `minisign -V` could not read it back.
    pub fn sign(&self, document: &[u8], trusted_comment: &str) -> Result<String, SignatureError> {
        if trusted_comment.contains(['\n', '\r']) {
            return Err(SignatureError::Malformed(
                "the trusted comment must be one line".to_owned(),
            ));
        }
        if trusted_comment.len() > MAX_TRUSTED_COMMENT_BYTES {
            return Err(SignatureError::Malformed(format!(
                "the trusted comment is {} bytes, more than the {MAX_TRUSTED_COMMENT_BYTES} \
                 minisign reads",
                trusted_comment.len()
            )));
        }
        minisign::sign(
            None,
            &self.key,
            Cursor::new(document),
            Some(trusted_comment),
            Some(UNTRUSTED_COMMENT),
        )
        .map(minisign::SignatureBox::into_string)
        .map_err(|error| SignatureError::BadKey(error.to_string()))
    }
}

/// The layout of a minisign secret key: algorithm (2), KDF algorithm (2), checksum algorithm
/// (2), KDF salt (32), KDF limits (8 + 8), key number (8), Ed25519 secret key (64), checksum (32).
const SECRET_KEY_BYTES: usize = 158;
/// Where the KDF algorithm is in a secret key.
const KDF_ALGORITHM: std::ops::Range<usize> = 2..4;
/// Where the checksum is in a secret key.
const CHECKSUM: std::ops::Range<usize> = 126..158;

/// An unencrypted key as `minisign -G -W` (minisign 0.11) writes it: without a checksum (32 zero
/// bytes), which the minisign crate takes for a corrupted key. Such a key is accepted when it
/// proves itself instead: a signature made with it verifies with its own public half, which a
/// damaged key cannot do.
fn unchecksummed_key(text: &str) -> Option<minisign::SecretKey> {
    let bytes = decode_base64(text.lines().nth(1)?.trim())?;
    let unencrypted = bytes.get(KDF_ALGORITHM) == Some(&[0, 0][..]);
    let unchecksummed = bytes
        .get(CHECKSUM)
        .is_some_and(|chk| chk.iter().all(|b| *b == 0));
    if bytes.len() != SECRET_KEY_BYTES || !unencrypted || !unchecksummed {
        return None;
    }
    let key = minisign::SecretKey::from_bytes(&bytes).ok()?;
    let public = minisign::PublicKey::from_secret_key(&key).ok()?;
    let probe = b"edgeroll secret key self-test";
    let signature = minisign::sign(Some(&public), &key, Cursor::new(probe), None, None).ok()?;
    minisign::verify(&public, &signature, Cursor::new(probe), true, false, false).ok()?;
    Some(key)
}

/// Standard base64 with padding, canonical (what minisign writes); `None` for anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(byte: u8) -> Option<u32> {
        match byte {
            b'A'..=b'Z' => Some(u32::from(byte - b'A')),
            b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let mut decoded = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, quad) in bytes.chunks(4).enumerate() {
        let last = index + 1 == bytes.len() / 4;
        let padding = quad.iter().rev().take_while(|byte| **byte == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut word = 0u32;
        for byte in &quad[..4 - padding] {
            word = (word << 6) | value(*byte)?;
        }
        word <<= 6 * padding as u32;
        // Canonical only: the bits the padding leaves over must be zero, so that one signature
        // has one spelling.
        if word & ((1u32 << (8 * padding)) - 1) != 0 {
            return None;
        }
        let [_, first, second, third] = word.to_be_bytes();
        decoded.extend_from_slice(&[first, second, third][..3 - padding]);
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> (TrustedKey, minisign::SecretKey) {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("keypair");
        let public = TrustedKey::parse(&pair.pk.to_base64()).expect("public key");
        (public, pair.sk)
    }

    fn sign(secret: &minisign::SecretKey, document: &[u8]) -> String {
        minisign::sign(None, secret, Cursor::new(document), Some("serial:1"), None)
            .expect("sign")
            .into_string()
    }

    #[test]
    fn a_signed_document_verifies_and_a_flipped_byte_does_not() {
        let (public, secret) = keypair();
        let document = b"apiVersion = \"edgeroll/v1\"\nserial = 1\n";
        let signature = sign(&secret, document);
        let verified = verify(document, &signature, std::slice::from_ref(&public)).expect("ok");
        assert_eq!(verified.key_id, public.key_id);
        assert_eq!(verified.trusted_comment, "serial:1");
        let mut flipped = document.to_vec();
        flipped[3] ^= 1;
        assert!(matches!(
            verify(&flipped, &signature, &[public]),
            Err(SignatureError::Invalid { .. })
        ));
    }

    #[test]
    fn an_untrusted_key_is_named() {
        let (_, secret) = keypair();
        let (other, _) = keypair();
        let signature = sign(&secret, b"x");
        let error = verify(b"x", &signature, &[other]).expect_err("untrusted");
        assert!(
            matches!(error, SignatureError::UntrustedKey { .. }),
            "{error}"
        );
    }

    #[test]
    fn the_trusted_comment_names_serial_expiry_and_selector() {
        let mut selector = BTreeMap::new();
        assert_eq!(
            trusted_comment(&SignedFields {
                timestamp: 1_764_600_000,
                serial: 17,
                expires: None,
                selector: &selector,
            }),
            "timestamp:1764600000 serial:17 selector:*"
        );
        selector.insert("cohort".to_owned(), "pilot".to_owned());
        selector.insert("region".to_owned(), "eu west,=%".to_owned());
        let comment = trusted_comment(&SignedFields {
            timestamp: 1_764_600_000,
            serial: 17,
            expires: Some("2026-12-31T00:00:00Z"),
            selector: &selector,
        });
        assert_eq!(
            comment,
            "timestamp:1764600000 serial:17 expires:2026-12-31T00:00:00Z \
             selector:cohort=pilot,region=eu%20west%2C%3D%25"
        );
        assert_eq!(comment_field(&comment, "serial"), Some("17"));
        assert_eq!(
            comment_field(&comment, "expires"),
            Some("2026-12-31T00:00:00Z")
        );
        assert_eq!(comment_field(&comment, "nope"), None);
        assert_eq!(
            comment_field("timestamp:5\tfile:x\thashed", "timestamp"),
            Some("5")
        );
    }

    #[test]
    fn a_generated_key_signs_and_its_public_half_verifies() {
        for password in [None, Some("pw".to_owned())] {
            let generated = generate(password.clone()).expect("generate");
            assert_eq!(
                SigningKey::is_encrypted(&generated.secret_file),
                password.is_some()
            );
            let public = TrustedKey::parse(&generated.public_file).expect("public");
            assert_eq!(public.key_id, generated.key_id);
            assert_eq!(public.to_base64(), generated.public_base64);
            let signing = SigningKey::parse(&generated.secret_file, password).expect("secret");
            assert_eq!(signing.key_id, generated.key_id);
            let signature = signing.sign(b"doc", "timestamp:9 serial:1").expect("sign");
            let verified = verify(b"doc", &signature, &[public]).expect("verify");
            assert_eq!(verified.signed_at(), Some(9));
        }
        let generated = generate(Some("right".to_owned())).expect("generate");
        let error = SigningKey::parse(&generated.secret_file, Some("wrong".to_owned()))
            .expect_err("wrong password");
        assert_eq!(
            error.to_string(),
            "not a usable minisign key: wrong password, or a corrupted key"
        );
    }

    /// The secret key file of `key` as `minisign -G -W` writes it: no checksum.
    fn without_checksum(key: &minisign::SecretKey) -> (String, Vec<u8>) {
        let boxed = key.to_box(None).expect("box").into_string();
        let line = boxed.lines().nth(1).expect("key line");
        let mut bytes = decode_base64(line).expect("base64");
        bytes[CHECKSUM].fill(0);
        (encode_base64(&bytes), bytes)
    }

    fn encode_base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut text = String::new();
        for chunk in bytes.chunks(3) {
            let word = chunk.iter().enumerate().fold(0u32, |word, (index, byte)| {
                word | u32::from(*byte) << (16 - 8 * index)
            });
            for index in 0..4 {
                if index <= chunk.len() {
                    text.push(char::from(
                        ALPHABET[(word >> (18 - 6 * index) & 63) as usize],
                    ));
                } else {
                    text.push('=');
                }
            }
        }
        text
    }

    #[test]
    fn an_unencrypted_key_without_a_checksum_is_used_only_when_it_is_intact() {
        let (public, secret) = keypair();
        let (line, mut bytes) = without_checksum(&secret);
        let file = format!("untrusted comment: minisign encrypted secret key\n{line}\n");
        assert!(!SigningKey::is_encrypted(&file));
        let signing = SigningKey::parse(&file, None).expect("minisign -W key");
        assert_eq!(signing.key_id, public.key_id);
        let signature = signing.sign(b"doc", "serial:1").expect("sign");
        verify(b"doc", &signature, &[public]).expect("verify");

        // One flipped bit in the secret half: the key no longer proves itself.
        bytes[70] ^= 1;
        let file = format!("untrusted comment: x\n{}\n", encode_base64(&bytes));
        assert!(SigningKey::parse(&file, None).is_err());
    }

    #[test]
    fn a_trusted_comment_minisign_could_not_read_back_is_refused() {
        let (_, secret) = keypair();
        let (line, _) = without_checksum(&secret);
        let signing = SigningKey::parse(&format!("c\n{line}\n"), None).expect("key");
        assert!(signing.sign(b"x", "a\nb").is_err());
        assert!(signing
            .sign(b"x", &"a".repeat(MAX_TRUSTED_COMMENT_BYTES))
            .is_ok());
        assert!(signing
            .sign(b"x", &"a".repeat(MAX_TRUSTED_COMMENT_BYTES + 1))
            .is_err());
    }

    /// Where the covered lines of a `.minisig` start: after the untrusted comment, which
    /// minisign does not sign, by design.
    fn covered_start(signature: &str) -> usize {
        signature.find('\n').expect("two lines") + 1
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn any_flipped_byte_in_the_document_fails_to_verify(
            document in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..512),
            position in proptest::prelude::any::<proptest::sample::Index>(),
            flip in 1u8..,
        ) {
            let (public, secret) = keypair();
            let signature = sign(&secret, &document);
            proptest::prop_assert!(verify(&document, &signature, std::slice::from_ref(&public)).is_ok());
            let mut flipped = document.clone();
            flipped[position.index(document.len())] ^= flip;
            let refused = matches!(
                verify(&flipped, &signature, &[public]),
                Err(SignatureError::Invalid { .. })
            );
            proptest::prop_assert!(refused, "a flipped document verified");
        }

        #[test]
        fn any_flipped_byte_in_the_signature_fails_to_verify(
            position in proptest::prelude::any::<proptest::sample::Index>(),
            flip in 1u8..,
        ) {
            let (public, secret) = keypair();
            let document = b"apiVersion = \"edgeroll/v1\"\nserial = 1\n";
            let signature = sign(&secret, document);
            let start = covered_start(&signature);
            let mut bytes = signature.clone().into_bytes();
            let at = start + position.index(bytes.len() - start);
            bytes[at] ^= flip;
            if let Ok(text) = String::from_utf8(bytes) {
                let outcome = verify(document, &text, &[public]);
                proptest::prop_assert!(
                    outcome.is_err(),
                    "flipping byte {} ({:?}) still verified: {:?}",
                    at,
                    signature.as_bytes()[at] as char,
                    outcome
                );
            }
        }

        #[test]
        fn garbage_never_panics(
            text in "(untrusted comment: [ -~]{0,20}\n)?[A-Za-z0-9+/=\n ]{0,400}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let (public, _) = keypair();
            let raw = String::from_utf8_lossy(&bytes).into_owned();
            for input in [text.as_str(), raw.as_str()] {
                let _ = TrustedKey::parse(input);
                let _ = verify(b"doc", input, std::slice::from_ref(&public));
                let _ = SigningKey::is_encrypted(input);
                let _ = SigningKey::parse(input, None);
                let _ = decode_base64(input);
            }
        }

        #[test]
        fn base64_decodes_what_was_encoded(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            proptest::prop_assert_eq!(decode_base64(&encode_base64(&bytes)), Some(bytes));
        }

        #[test]
        fn the_trusted_comment_is_one_line_of_fields_that_read_back(
            timestamp in proptest::prelude::any::<u64>(),
            serial in proptest::prelude::any::<u64>(),
            selector in proptest::collection::btree_map("\\PC{0,12}", "\\PC{0,12}", 0..4),
        ) {
            let comment = trusted_comment(&SignedFields {
                timestamp, serial, expires: None, selector: &selector,
            });
            proptest::prop_assert!(!comment.contains(['\n', '\r']));
            proptest::prop_assert_eq!(comment.split_whitespace().count(), 3);
            let timestamp_text = timestamp.to_string();
            let serial_text = serial.to_string();
            proptest::prop_assert_eq!(comment_field(&comment, "timestamp"), Some(timestamp_text.as_str()));
            proptest::prop_assert_eq!(comment_field(&comment, "serial"), Some(serial_text.as_str()));
            let labels = comment_field(&comment, "selector").unwrap_or_default();
            let count = if selector.is_empty() { 0 } else { labels.split(',').count() };
            proptest::prop_assert_eq!(count, selector.len());
        }
    }
}
