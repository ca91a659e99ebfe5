//! Registry authentication: parsing a `WWW-Authenticate` challenge, and the token endpoint's
//! answer of the anonymous (or basic-authenticated) bearer-token flow.
//!
//! Pure: no I/O (the client does the requests). It never logs or formats a credential or a
//! token into a message.

use std::collections::BTreeMap;

use base64::Engine as _;

/// A registry's `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm="…",service="…",scope="…"`: get a token from `realm`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// `service`, sent back to the token endpoint.
        service: Option<String>,
        /// `scope`, sent back to the token endpoint.
        scope: Option<String>,
    },
    /// `Basic realm="…"`: send the credentials.
    Basic,
}

impl Challenge {
    /// Parse a challenge header (one scheme; the first one when several are given).
    pub fn parse(header: &str) -> Result<Challenge, String> {
        let header = header.trim();
        let (scheme, params) = match header.split_once([' ', '\t']) {
            Some((scheme, params)) => (scheme, params),
            None => (header, ""),
        };
        let bearer = scheme.eq_ignore_ascii_case("bearer");
        if !bearer && !scheme.eq_ignore_ascii_case("basic") {
            return Err(format!(
                "the registry asks for the unsupported authentication scheme {scheme:?}"
            ));
        }
        let params = parse_params(params)
            .map_err(|reason| format!("cannot parse the challenge {header:?}: {reason}"))?;
        if bearer {
            let Some(realm) = params.get("realm").filter(|realm| !realm.is_empty()) else {
                return Err(format!("the bearer challenge {header:?} has no realm"));
            };
            Ok(Challenge::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        } else {
            Ok(Challenge::Basic)
        }
    }
}

/// `key=value` or `key="quoted \" value"`, separated by commas; keys are lower-cased.
fn parse_params(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let Some(equals) = rest.find('=') else {
            return Err(format!("{rest:?} is not key=value"));
        };
        let key = rest[..equals].trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("{key:?} is not a parameter name"));
        }
        rest = rest[equals + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut unquoted = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, escaped)) => unquoted.push(escaped),
                        None => return Err("a '\\' ends the header".to_string()),
                    },
                    '"' => {
                        end = Some(at + 1);
                        break;
                    }
                    c => unquoted.push(c),
                }
            }
            let Some(end) = end else {
                return Err(format!("the value of {key:?} has no closing quote"));
            };
            value = unquoted;
            rest = &quoted[end..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        params.insert(key.to_ascii_lowercase(), value);
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("junk {rest:?} after the value of {key:?}"));
        }
    }
    Ok(params)
}

/// A user name and password for a registry (and its token endpoint).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization` header value of basic authentication.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// The token in a token endpoint's JSON answer (`token`, or OAuth2's `access_token`).
pub fn token_from_answer(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|error| {
        format!("the token endpoint's answer is not the expected JSON: {error}")
    })?;
    answer
        .token
        .or(answer.access_token)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| "the token endpoint's answer has no token".to_string())
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass).
pub(crate) fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
