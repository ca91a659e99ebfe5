//! `edgeroll validate`: check the agent config and desired documents offline.
//!
//! Runs exactly the parsers the agent runs (`config::load`, `spec::parse::load_document`; for a
//! `*.plan.toml`, the hub's `hub::plan::spec::load`), with a config also the runtime fit
//! (`spec::parse::runtime_fit`, the trust rule `runtime`) and,
//! when the config pins keys, the agent's trust rules (`trust::judge`) on the config's document
//! and its `.minisig`, and prints what they found; it must never have validation rules of its
//! own.

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
    // With a config, documents are also checked against its runtime (`runtime.kind`).
    let mut runtime = None;
    if config_named || documents.is_empty() {
        match crate::config::load(config_path) {
            Ok(config) => {
                runtime = Some(config.runtime.name());
                accepted.push(format!(
                    "{}: ok (site {})",
                    config_path.display(),
                    config.site
                ));
                if documents.is_empty() {
                    if let DesiredSource::File(desired) = &config.desired {
                        check_document(desired, runtime, &mut problems, &mut accepted);
                        if !config.desired_trust.trusted_keys.is_empty() {
                            check_signature(&config, desired, &mut problems, &mut accepted);
                        }
                    }
                }
            }
            Err(diagnostics) => problems.extend(diagnostic_lines(config_path, &diagnostics)),
        }
    }
    for document in documents {
        check_document(document, runtime, &mut problems, &mut accepted);
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

/// Check one desired document (or, for a `*.plan.toml`, a hub's fleet plan and the documents
/// it names, with the hub's own parser); with a `runtime`, also whether it can run there (the
/// agent's trust rule `runtime`).
fn check_document(
    path: &Path,
    runtime: Option<&str>,
    problems: &mut Vec<String>,
    accepted: &mut Vec<String>,
) {
    if crate::hub::plan::spec::is_plan_file(path) {
        match crate::hub::plan::spec::load(path) {
            Ok(plan) => {
                let waves: Vec<&str> = plan.waves.iter().map(|wave| wave.name.as_str()).collect();
                accepted.push(format!(
                    "{}: ok (plan {}, waves {})",
                    path.display(),
                    plan.name,
                    waves.join(" → ")
                ));
            }
            Err(diagnostics) => problems.extend(diagnostic_lines(path, &diagnostics)),
        }
        return;
    }
    match crate::spec::parse::load_document(path) {
        Ok(document) => {
            if let Some(runtime) = runtime {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let misfits = crate::spec::parse::runtime_fit(path, &text, runtime);
                if !misfits.is_empty() {
                    problems.extend(diagnostic_lines(path, &misfits));
                    return;
                }
            }
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

/// Judge the config's signed file source as the agent would (without the store: the serial
/// rule needs the site's history, so it is not checked here).
fn check_signature(
    config: &crate::config::Config,
    path: &Path,
    problems: &mut Vec<String>,
    accepted: &mut Vec<String>,
) {
    let Ok(bytes) = std::fs::read(path) else {
        return; // `check_document` has reported it.
    };
    let signature_path = crate::pull::signature_path(path);
    let signature = std::fs::read_to_string(&signature_path).ok();
    let text = String::from_utf8_lossy(&bytes);
    let parsed = crate::spec::parse::parse_document(path, &text).map_err(|diagnostics| {
        diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    });
    let keys: Vec<crate::wire::signature::TrustedKey> = config
        .desired_trust
        .trusted_keys
        .iter()
        .filter_map(|key| crate::wire::signature::TrustedKey::parse(key).ok())
        .collect();
    let decision = crate::trust::judge(
        crate::trust::Candidate {
            bytes: &bytes,
            signature: signature.as_deref(),
            document: parsed.as_ref().map_err(String::as_str),
        },
        crate::trust::Policy {
            trusted_keys: &keys,
            allow_unsigned: config.desired_trust.allow_unsigned,
            kind: crate::trust::SourceKind::File,
            max_bytes: usize::try_from(config.desired_trust.max_document_bytes)
                .unwrap_or(usize::MAX),
        },
        crate::trust::Site {
            name: &config.site,
            labels: &config.labels,
            runtime: config.runtime.name(),
        },
        &crate::trust::TrustState::default(),
        crate::shell::Clock::system().now(),
    );
    match decision {
        crate::trust::Decision::Apply(verdict) | crate::trust::Decision::NoOp(verdict) => {
            accepted.push(format!(
                "{}: signature ok (key {})",
                signature_path.display(),
                verdict.key_id.unwrap_or_default()
            ));
        }
        // `check_document` has reported every problem of an invalid document.
        crate::trust::Decision::Refuse(refusal) if refusal.rule == crate::trust::Rule::Invalid => {}
        crate::trust::Decision::Refuse(refusal) => problems.push(format!(
            "{}:1:1: refused ({}): {}",
            path.display(),
            refusal.rule,
            refusal.message
        )),
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
