//! Image references, parsed as Docker parses them (distribution's `reference` grammar):
//! `busybox` is `docker.io/library/busybox:latest`, `host:5000/a/b:tag` names a registry by its
//! first component (it has a `.` or a `:`, or is `localhost`), and `@sha256:<64 hex>` pins a digest.
//!
//! Pure: no I/O. It never guesses a registry for a malformed reference: every refusal says why.

use std::fmt;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's registry API host.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The longest repository path (domain excluded) Docker accepts.
const MAX_NAME: usize = 255;
/// The longest tag.
const MAX_TAG: usize = 128;

/// A content digest. Only `sha256` is accepted: it is the only one registries and `ring` share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parse `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Digest, String> {
        let Some((algorithm, hex)) = text.split_once(':') else {
            return Err(format!("digest {text:?} has no algorithm (sha256:…)"));
        };
        if algorithm != "sha256" {
            return Err(format!(
                "digest {text:?}: only sha256 digests are supported, not {algorithm:?}"
            ));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "digest {text:?}: a sha256 digest is 64 lowercase hex characters"
            ));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_ring(ring::digest::digest(&ring::digest::SHA256, bytes))
    }

    /// The digest a finished `ring` SHA-256 context gave.
    pub fn from_ring(digest: ring::digest::Digest) -> Digest {
        Digest {
            hex: digest
                .as_ref()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        }
    }

    /// The hex part (a safe file name).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry as written (`docker.io`, `host:5000`, `[::1]:5000`).
    pub domain: String,
    /// The repository path, e.g. `library/busybox`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// The pinned digest, which wins over the tag when fetching.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parse a reference the way `docker pull` does; the error names the reference and the rule.
    pub fn parse(text: &str) -> Result<Reference, String> {
        parse(text).map_err(|reason| format!("invalid image reference {text:?}: {reason}"))
    }

    /// What to ask the registry's manifest endpoint for: the digest, else the tag.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host (and port) of the registry's API: Docker Hub's is `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.domain
        }
    }

    /// The host without its port or IPv6 brackets, e.g. to tell loopback registries.
    pub fn hostname(&self) -> &str {
        host_without_port(&self.domain)
    }
}

/// `host` of `host:port`, `[::1]:5000` → `::1`.
pub(crate) fn host_without_port(domain: &str) -> &str {
    if let Some(rest) = domain.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    domain.split(':').next().unwrap_or(domain)
}

impl fmt::Display for Reference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.domain, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(formatter, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(formatter, "@{digest}")?;
        }
        Ok(())
    }
}

fn parse(text: &str) -> Result<Reference, String> {
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
        None => (text, None),
    };
    // A tag is after the last ':' that comes after the last '/' (a ':' before is a port).
    let last_slash = rest.rfind('/').map_or(0, |at| at + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(at) => {
            let at = last_slash + at;
            (&rest[..at], Some(&rest[at + 1..]))
        }
        None => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let (domain, path) = split_domain(name)?;
    check_path(path)?;
    let repository = if domain == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if repository.len() > MAX_NAME {
        return Err(format!(
            "the repository name is longer than {MAX_NAME} characters"
        ));
    }
    let tag = match (tag, &digest) {
        (Some(tag), _) => Some(tag.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(Reference {
        domain,
        repository,
        tag,
        digest,
    })
}

/// Docker's rule: the first component is a registry when it has a `.` or a `:`, is
/// `localhost`, or has an upper-case letter (which a repository may not).
fn split_domain(name: &str) -> Result<(String, &str), String> {
    let Some((first, rest)) = name.split_once('/') else {
        return Ok((DOCKER_HUB.to_string(), name));
    };
    let is_domain = first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase());
    if !is_domain {
        return Ok((DOCKER_HUB.to_string(), name));
    }
    check_domain(first)?;
    let domain = if first == "index.docker.io" {
        DOCKER_HUB
    } else {
        first
    };
    Ok((domain.to_string(), rest))
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return Err(format!(
                "registry {domain:?}: an IPv6 address needs its ']'"
            ));
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "registry {domain:?}: {address:?} is not an IPv6 address"
            ));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("registry {domain:?}: junk after ']'")),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let valid_label = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if !host.split('.').all(valid_label) {
            return Err(format!(
                "registry {domain:?}: {host:?} is not a host name (letters, digits, '-' and '.')"
            ));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return Err(format!(
                "registry {domain:?}: the port {port:?} is not a number"
            ));
        }
    }
    Ok(())
}

/// Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the repository name is empty".to_string());
    }
    for component in path.split('/') {
        check_component(component)?;
    }
    Ok(())
}

fn check_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("a repository path component is empty (\"//\" or a trailing '/')".to_string());
    }
    if component.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "repository name component {component:?} must be lowercase"
        ));
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut at = 0;
    let mut previous_alnum = false;
    while at < bytes.len() {
        let b = bytes[at];
        if alnum(b) {
            previous_alnum = true;
            at += 1;
            continue;
        }
        // A separator: '.', '_', '__' or '-'+, between alphanumerics.
        let start = at;
        match b {
            b'.' => at += 1,
            b'_' => {
                at += 1;
                if at < bytes.len() && bytes[at] == b'_' {
                    at += 1;
                }
            }
            b'-' => {
                while at < bytes.len() && bytes[at] == b'-' {
                    at += 1;
                }
            }
            _ => {
                return Err(format!(
                    "repository name component {component:?} has {:?}: only a-z, 0-9 and the separators '.', '_', '__', '-' are allowed",
                    char::from(b)
                ))
            }
        }
        let next_alnum = at < bytes.len() && alnum(bytes[at]);
        if !previous_alnum || !next_alnum {
            return Err(format!(
                "repository name component {component:?}: {:?} must stand between letters or digits",
                &component[start..at]
            ));
        }
        previous_alnum = false;
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok
        || tag.len() > MAX_TAG
        || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "tag {tag:?}: a tag is 1 to {MAX_TAG} of A-Z a-z 0-9 _ . - and does not start with . or -"
        ));
    }
    Ok(())
}
