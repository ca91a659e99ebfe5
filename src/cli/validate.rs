//! `edgeroll validate`: check the agent config and desired documents offline.
//!
//! Runs exactly the parsers the agent runs (`config::load`, `spec::parse::load_document`) and
//! prints what they found; it must never have validation rules of its own.

use std::path::Path;

use super::{EXIT_INVALID_CONFIG, EXIT_OK};
use crate::config::DesiredSource;
use crate::diag::Diagnostic;

/// Validate the documents given, and the config when it was named or when no document was given
/// (then also the config's desired document, if it is a file). Returns the exit code.
pub(crate) fn validate(
    config_path: &Path,
    config_named: bool,
    documents: &[std::path::PathBuf],
) -> u8 {
    let mut problems = Vec::new();
    let mut accepted = Vec::new();
    if config_named || documents.is_empty() {
        match crate::config::load(config_path) {
            Ok(config) => {
                accepted.push(format!(
                    "{}: ok (site {})",
                    config_path.display(),
                    config.site
                ));
                if documents.is_empty() {
                    if let DesiredSource::File(desired) = &config.desired {
                        check_document(desired, &mut problems, &mut accepted);
                    }
                }
            }
            Err(diagnostics) => problems.extend(diagnostic_lines(config_path, &diagnostics)),
        }
    }
    for document in documents {
        check_document(document, &mut problems, &mut accepted);
    }
    if problems.is_empty() {
        for line in accepted {
            println!("{line}");
        }
        EXIT_OK
    } else {
        for line in problems {
            println!("{line}");
        }
        EXIT_INVALID_CONFIG
    }
}

/// Check one desired document.
fn check_document(path: &Path, problems: &mut Vec<String>, accepted: &mut Vec<String>) {
    match crate::spec::parse::load_document(path) {
        Ok(document) => {
            let count = document.services.len();
            let noun = if count == 1 { "service" } else { "services" };
            accepted.push(format!(
                "{}: ok (serial {}, {count} {noun})",
                path.display(),
                document.serial
            ));
        }
        Err(diagnostics) => problems.extend(diagnostic_lines(path, &diagnostics)),
    }
}

/// One `FILE:LINE:COLUMN: message` line per diagnostic; a rejection without any diagnostic still
/// gets one line, so a failure is never silent.
pub(crate) fn diagnostic_lines(path: &Path, diagnostics: &[Diagnostic]) -> Vec<String> {
    if diagnostics.is_empty() {
        return vec![format!("{}:1:1: invalid file", path.display())];
    }
    diagnostics.iter().map(ToString::to_string).collect()
}
