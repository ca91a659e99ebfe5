//! The static export: the hub writes, for every site it knows, the document it would serve that
//! site (`{export}/{site}/desired`, and `desired.minisig` when it is signed), so any static
//! HTTPS server or CDN in front of that directory serves sites exactly what the hub would.
//!
//! Owns the export directory and nothing else: it reads the catalog and the known sites, and
//! writes a site's files only when what the site should get changed (by ETag), each file
//! through a temporary name and a rename, so a reader never sees half a file. It must never
//! decide which document a site gets (that is the catalog's rule, on the labels the hub has
//! from the site's polls and reports), and it never touches files outside the sites' own
//! directories in the export.
//!
//! The document and its signature are two files, so a reader that fetches one just before a
//! change and the other just after gets a pair that does not verify: the agent refuses it,
//! reports the refusal and takes the matching pair on its next poll.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::catalog::ServedDocument;
use super::Shared;

/// The document's file in a site's directory.
pub const DOCUMENT_FILE: &str = "desired";
/// The directory of what a site the hub does not know yet gets (the documents that select every
/// site): a static server falls back to it (`try_files $uri /_default/desired`), so a new site
/// gets a document, reports, and from then on has its own.
pub const DEFAULT_SITE_DIR: &str = "_default";

/// Run the export until the hub stops: on every catalog change, and every `interval` (for sites
/// the hub has just learned of).
pub async fn run(dir: PathBuf, interval: Duration, shared: Arc<Shared>) {
    let mut written: HashMap<String, Option<String>> = HashMap::new();
    loop {
        let changed = shared.catalog_changed.notified();
        match shared.known_sites().await {
            Ok(sites) => {
                let catalog = shared.catalog();
                let mut work = Vec::new();
                let fallback = catalog
                    .choose("", &std::collections::BTreeMap::new())
                    .map(Arc::clone);
                let fallback_etag = fallback.as_ref().map(|document| document.etag.clone());
                if written.get(DEFAULT_SITE_DIR) != Some(&fallback_etag) {
                    work.push((DEFAULT_SITE_DIR.to_owned(), fallback, fallback_etag));
                }
                for (summary, _) in &sites {
                    if summary.site == DEFAULT_SITE_DIR {
                        tracing::error!(
                            site = summary.site,
                            "a site with this name cannot be exported: the name is the export's fallback directory"
                        );
                        continue;
                    }
                    let chosen = catalog
                        .choose(&summary.site, &summary.labels)
                        .map(Arc::clone);
                    let etag = chosen.as_ref().map(|document| document.etag.clone());
                    if written.get(&summary.site) != Some(&etag) {
                        work.push((summary.site.clone(), chosen, etag));
                    }
                }
                if !work.is_empty() {
                    let root = dir.clone();
                    let done = tokio::task::spawn_blocking(move || {
                        let mut done = Vec::new();
                        for (site, document, etag) in work {
                            match write_site(&root, &site, document.as_deref()) {
                                Ok(()) => done.push((site, etag)),
                                Err(error) => tracing::error!(
                                    site,
                                    export = %root.display(),
                                    %error,
                                    "cannot export the site's document; trying again later"
                                ),
                            }
                        }
                        done
                    })
                    .await
                    .unwrap_or_default();
                    if !done.is_empty() {
                        tracing::debug!(sites = done.len(), "exported documents");
                    }
                    written.extend(done);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the sites to export"),
        }
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = changed => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Write (or, with no document, remove) the files of `site` under `root`.
fn write_site(root: &Path, site: &str, document: Option<&ServedDocument>) -> std::io::Result<()> {
    // The hub accepts only names that are one path segment; refuse anything else here too.
    if site.is_empty() || site.contains('/') || site == "." || site == ".." {
        return Err(std::io::Error::other(format!(
            "{site:?} is not a path segment"
        )));
    }
    let dir = root.join(site);
    let signature_path = dir.join(format!("{DOCUMENT_FILE}{}", crate::wire::SIGNATURE_SUFFIX));
    let document_path = dir.join(DOCUMENT_FILE);
    let Some(document) = document else {
        for path in [&document_path, &signature_path] {
            match std::fs::remove_file(path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        return Ok(());
    };
    std::fs::create_dir_all(&dir)?;
    match &document.signature {
        Some(signature) => replace(&signature_path, signature.as_bytes())?,
        None => match std::fs::remove_file(&signature_path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        },
    }
    replace(&document_path, &document.body)
}

/// Write `path` through a temporary file in the same directory and a rename.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}
