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
            None => boxed.into_unencrypted_secret_key(),
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
        minisign::SecretKeyBox::from_string(text)
            .and_then(|boxed| boxed.into_unencrypted_secret_key())
            .map(|key| key.is_encrypted())
            .unwrap_or(true)
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
            None,
        )
        .map(minisign::SignatureBox::into_string)
        .map_err(|error| SignatureError::BadKey(error.to_string()))
    }
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
}
