//! Manifests and indexes (OCI and Docker v2 schema 2), their descriptors, and choosing the
//! host's platform from an index.
//!
//! Pure: no I/O. It never accepts a manifest of a media type it does not know (schema 1 is
//! refused with a clear message), and never picks "some" platform when the host's is missing.

use serde::Deserialize;

use super::reference::Digest;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The `Accept` header of a manifest request: every kind this module reads.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A pointer to content: its media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What it is.
    #[serde(default)]
    pub media_type: String,
    /// Its sha256.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// In an index: the platform the manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An OS and CPU, as in an index (`linux`, `arm64`, variant `v8`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Platform {
    /// e.g. `amd64`, `arm64`, `arm`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `v7` for arm, `v8` for arm64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this agent runs on (Go's names for Rust's architectures).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "riscv64" => ("riscv64", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(formatter, "/{variant}")?;
        }
        Ok(())
    }
}

/// A parsed manifest document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An index (or manifest list): one manifest per platform.
    Index(Vec<Descriptor>),
    /// One image: its config and layers, in order.
    Image {
        /// The image config blob.
        config: Descriptor,
        /// The layer blobs.
        layers: Vec<Descriptor>,
    },
}

impl Manifest {
    /// Parse `body`, whose media type is `content_type` (the answer's `Content-Type`) or else
    /// the document's own `mediaType`.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<(String, Manifest), String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Document {
            schema_version: Option<u32>,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<Vec<Descriptor>>,
            #[serde(default)]
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Option<Vec<Descriptor>>,
        }
        let document: Document = serde_json::from_slice(body)
            .map_err(|error| format!("the manifest is not valid JSON of a manifest: {error}"))?;
        let schema1 = "the image has a Docker schema 1 manifest, which is not supported (push it again with a current tool)";
        if document.schema_version == Some(1) {
            return Err(schema1.to_string());
        }
        let declared = content_type
            .map(|value| value.split(';').next().unwrap_or(value).trim().to_string())
            .filter(|value| {
                !value.is_empty() && value != "application/json" && value != "text/plain"
            });
        let media_type = declared
            .or(document.media_type.clone())
            .or_else(|| {
                // An OCI document may leave out mediaType: tell it by its fields.
                if document.manifests.is_some() {
                    Some(OCI_INDEX.to_string())
                } else if document.config.is_some() {
                    Some(OCI_MANIFEST.to_string())
                } else {
                    None
                }
            })
            .ok_or("the manifest says no media type")?;
        if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
            return Err(schema1.to_string());
        }
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let manifests = document.manifests.ok_or("the index has no \"manifests\"")?;
                Ok((media_type, Manifest::Index(manifests)))
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let config = document.config.ok_or("the manifest has no \"config\"")?;
                let layers = document.layers.ok_or("the manifest has no \"layers\"")?;
                Ok((media_type, Manifest::Image { config, layers }))
            }
            other => Err(format!(
                "the manifest's media type {other:?} is not one this agent reads"
            )),
        }
    }
}

/// The entry of `manifests` for `want`: same OS and architecture, and the same variant when
/// both say one (an exact variant wins over an entry without one). The error lists what the
/// index offers.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    want: &Platform,
) -> Result<&'a Descriptor, String> {
    let candidates = manifests.iter().filter(|descriptor| {
        descriptor.platform.as_ref().is_some_and(|platform| {
            platform.os == want.os
                && platform.architecture == want.architecture
                && match (&platform.variant, &want.variant) {
                    (Some(have), Some(want)) => have == want,
                    _ => true,
                }
        })
    });
    let mut best: Option<&Descriptor> = None;
    for candidate in candidates {
        let exact = candidate
            .platform
            .as_ref()
            .is_some_and(|platform| platform.variant == want.variant);
        if best.is_none() || exact {
            best = Some(candidate);
            if exact {
                break;
            }
        }
    }
    best.ok_or_else(|| {
        let offered: Vec<String> = manifests
            .iter()
            .filter_map(|descriptor| descriptor.platform.as_ref().map(ToString::to_string))
            .collect();
        format!(
            "the image has no manifest for {want} (it has: {})",
            if offered.is_empty() {
                "none with a platform".to_string()
            } else {
                offered.join(", ")
            }
        )
    })
}
