//! Tidy checks that keep the architecture's invariants true (see ARCHITECTURE.md).
//!
//! The rollout core and the analysis rules decide everything and must stay pure: no tokio, no
//! file system, no network, no clock. Every module documents what it owns with a `//!` header.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_rollout_core_and_analysis_rules_are_pure() {
    let forbidden = [
        "tokio",
        "std::fs",
        "std::net",
        "::now(",
        "std::process",
        "std::thread",
    ];
    let root = source_root();
    let mut pure = vec![root.join("rollout.rs"), root.join("analysis.rs")];
    pure.extend(rust_files(&root.join("rollout")));
    pure.extend(rust_files(&root.join("analysis")));
    let mut problems = Vec::new();
    for file in pure.iter().filter(|file| file.exists()) {
        let text = std::fs::read_to_string(file).expect("read source");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    problems.push(format!("{}:{}: uses `{word}`", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the pure core does I/O or reads a clock:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_module_says_what_it_owns() {
    let mut missing = Vec::new();
    for file in rust_files(&source_root()) {
        let text = std::fs::read_to_string(&file).expect("read source");
        let is_test = file.file_name().is_some_and(|name| name == "tests.rs");
        // A generated file that its directory's mod.rs `include!`s (by its quoted name) is
        // documented there.
        let included = file
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| {
                std::fs::read_to_string(file.with_file_name("mod.rs"))
                    .is_ok_and(|module| module.contains(&format!("\"{name}\"")))
            });
        if !is_test && !included && !text.trim_start().starts_with("//!") {
            missing.push(file.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "modules without a //! header:\n{}",
        missing.join("\n")
    );
}
