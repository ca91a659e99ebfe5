#!/bin/sh
# Regenerate src/runtime/containerd/api/*.rs from proto/containerd/ (no protoc needed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cargo run --quiet --manifest-path "$here/Cargo.toml" --target-dir "$here/target" -- "$root"
rustfmt --edition 2021 "$root"/src/runtime/containerd/api/*.rs
