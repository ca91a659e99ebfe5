#!/usr/bin/env bash
# Build edgeroll as fully static (musl) release binaries for x86_64 and aarch64 Linux.
#
#   cross/build.sh [--install-deps] [x86_64|aarch64|all]      (default: all)
#
# Output: target/<triple>/release/edgeroll, where <triple> is x86_64-unknown-linux-musl or
# aarch64-unknown-linux-musl; then `cargo deb --target <triple> --no-build` and
# `cargo generate-rpm --target <triple>` package them (see .ci/packaging.sh).
#
# How (on Debian or Ubuntu, with rustup):
# - x86_64: the musl target of rustup and Debian's musl-tools (musl-gcc compiles the bundled
#   SQLite).
# - aarch64: the musl target of rustup, and zig as the C compiler and linker through
#   cargo-zigbuild (both from PyPI). Debian's aarch64-linux-gnu-gcc cannot compile C for musl.
# --install-deps installs those with apt-get, rustup and pip (into a venv under
# $EDGEROLL_TOOLS, default ~/.cache/edgeroll-cross, reused on the next run).
#
# cross-rs users can instead run `cross build --release --target <triple>` with Cross.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

install_deps=0
arches=()
for argument in "$@"; do
    case $argument in
    --install-deps) install_deps=1 ;;
    x86_64 | aarch64) arches+=("$argument") ;;
    all) arches+=(x86_64 aarch64) ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cross/build.sh: unknown argument: $argument (try --help)" >&2; exit 2 ;;
    esac
done
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)

tools=${EDGEROLL_TOOLS:-$HOME/.cache/edgeroll-cross}
zig_venv=$tools/zig-venv

want() { printf '%s\n' "${arches[@]}" | grep -qx "$1"; }

if [ $install_deps = 1 ]; then
    if want x86_64 && ! command -v musl-gcc >/dev/null; then
        apt-get install -y --no-install-recommends musl-tools
    fi
    targets=()
    for arch in "${arches[@]}"; do targets+=("$arch-unknown-linux-musl"); done
    rustup target add "${targets[@]}"
    if want aarch64 && [ ! -x "$zig_venv/bin/cargo-zigbuild" ]; then
        mkdir -p "$tools"
        python3 -m venv "$zig_venv"
        "$zig_venv/bin/pip" install --quiet ziglang cargo-zigbuild
    fi
fi

for arch in "${arches[@]}"; do
    triple=$arch-unknown-linux-musl
    started=$(date +%s)
    case $arch in
    x86_64)
        command -v musl-gcc >/dev/null || {
            echo "cross/build.sh: musl-gcc not found: apt-get install musl-tools (or --install-deps)" >&2
            exit 1
        }
        CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$triple"
        ;;
    aarch64)
        zigbuild=$(command -v cargo-zigbuild || true)
        [ -x "$zig_venv/bin/cargo-zigbuild" ] && zigbuild=$zig_venv/bin/cargo-zigbuild
        [ -n "$zigbuild" ] || {
            echo "cross/build.sh: cargo-zigbuild not found: pip install ziglang cargo-zigbuild (or --install-deps)" >&2
            exit 1
        }
        # cargo-zigbuild finds zig through the python of its own venv (the ziglang package).
        PATH=$(dirname "$zigbuild"):$PATH "$zigbuild" build --release --locked --target "$triple"
        ;;
    esac
    binary=target/$triple/release/edgeroll
    description=$(file -b "$binary")
    case $description in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "cross/build.sh: $binary is not static: $description" >&2; exit 1 ;;
    esac
    printf '%s: %s bytes, built in %ss\n  %s\n' "$binary" "$(stat -c %s "$binary")" \
        "$(($(date +%s) - started))" "$description"
done
