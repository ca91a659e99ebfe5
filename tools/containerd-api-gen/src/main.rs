//! Compiles the vendored containerd protos (`proto/containerd/`) with the pure-Rust `protox` and
//! writes the tonic client code to `src/runtime/containerd/api/`. Never needs `protoc`; never runs
//! as part of edgeroll's build (the output is checked in).

use std::path::{Path, PathBuf};

const SERVICES: &[&str] = &[
    "containers",
    "content",
    "diff",
    "images",
    "leases",
    "namespaces",
    "snapshots",
    "tasks",
    "version",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root: PathBuf = std::env::args()
        .nth(1)
        .ok_or("usage: containerd-api-gen REPO_ROOT")?
        .into();
    let include = root.join("proto/containerd");
    let out = root.join("src/runtime/containerd/api");
    let api = "github.com/containerd/containerd/api/services";
    let files: Vec<PathBuf> = SERVICES
        .iter()
        .map(|service| {
            let name = if *service == "namespaces" {
                "namespace"
            } else {
                service
            };
            include.join(format!("{api}/{service}/v1/{name}.proto"))
        })
        .collect();
    let fds = protox::compile(&files, [&include])?;
    std::fs::create_dir_all(&out)?;
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "rs") && !path.ends_with("mod.rs") {
            std::fs::remove_file(path)?;
        }
    }
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .out_dir(&out)
        .compile_fds(fds)?;
    // Only containerd's own packages are kept: gogoproto is Go-only options, and the well-known
    // types come from prost-types.
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if !name.starts_with("containerd.") && name != "mod.rs" {
            std::fs::remove_file(&path)?;
        } else if name != "mod.rs" {
            // containerd's comments indent filter expressions with a tab, which rustdoc would
            // take for Rust code and run as doctests: keep them as prose.
            let text = std::fs::read_to_string(&path)?;
            std::fs::write(&path, text.replace("/// \t", "/// "))?;
        }
    }
    let mut written: Vec<_> = std::fs::read_dir(&out)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| !path.ends_with("mod.rs"))
        .collect();
    written.sort();
    for path in written {
        println!("wrote {}", display(&root, &path));
    }
    Ok(())
}

fn display(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
