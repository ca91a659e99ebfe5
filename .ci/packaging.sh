#!/usr/bin/env bash
# CI for shipping edgeroll: static amd64 and arm64 binaries, .deb and .rpm packages for both, and
# the real tests: the arm64 demo under qemu-user, lintian, the RPMs in an alternate root, and the
# amd64 .deb under a real systemd (Debian bookworm booted in systemd-nspawn).
#
# Called by .ci/run on a Debian machine as root; runs on its own as `bash .ci/packaging.sh`.
# Installs what it needs with apt-get, rustup, cargo and pip. Caches, reused by later runs on the
# same machine (delete to refresh): /var/cache/edgeroll-ci/{cargo,zig-venv} (cargo-deb,
# cargo-generate-rpm, zig + cargo-zigbuild) and bookworm-rootfs.tar.gz (the debootstrapped
# rootfs). Each target is built once, into target/<triple>/release. Fails loudly, skips nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
export DEBIAN_FRONTEND=noninteractive
cache=/var/cache/edgeroll-ci
logs=target/ci-packaging
packages=target/packages
rootfs_tarball=$cache/bookworm-rootfs.tar.gz
cargo_deb_version=3.8.0
cargo_generate_rpm_version=0.21.1
# The arm64 demo runs every process under qemu-user; generous for a busy 2-core machine.
demo_timeout_seconds=600

started=$(date +%s)
stage_started=$started
passed=0
timings=()
figures=()
mkdir -p "$cache" "$logs" "$packages"

stage() {
    local now
    now=$(date +%s)
    [ -n "${stage_name:-}" ] && timings+=("$(printf '%-46s %4ss' "$stage_name" $((now - stage_started)))")
    stage_name=$1
    stage_started=$now
    printf '\n=== packaging: %s (%ss) ===\n' "$stage_name" $((now - started))
}
ok() {
    passed=$((passed + 1))
    printf 'ok   - %s\n' "$*"
}
fail() {
    trap - ERR
    printf 'FAIL - %s\n' "$*"
    printf 'packaging: %d passed, 1 failed\n' "$passed"
    exit 1
}
check() {
    local description=$1
    shift
    if "$@"; then ok "$description"; else fail "$description"; fi
}
trap 'fail "line $LINENO: a command failed unexpectedly"' ERR
# Count the `ok` lines of a test script that ran (it exits 1 on its first failure).
count_passed() { passed=$((passed + $(grep -c '^ok ' "$1"))); }

stage "apt-get install"
apt-get update -q >"$logs/apt.log" 2>&1
apt-get install -y -q --no-install-recommends musl-tools qemu-user-static systemd-container \
    debootstrap rpm lintian file >>"$logs/apt.log" 2>&1
ok "installed musl-tools qemu-user-static systemd-container debootstrap rpm lintian file"

# The rootfs download needs no CPU: make it while the compilers run.
rootfs_pid=
if [ ! -s "$rootfs_tarball" ]; then
    (
        set -e
        dir=$(mktemp -d /var/tmp/edgeroll-rootfs.XXXXXX)
        # It becomes the container's "/": mktemp's 0700 would lock out every non-root service.
        chmod 0755 "$dir"
        debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$dir" \
            http://deb.debian.org/debian
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*_Packages
        tar -C "$dir" -czf "$rootfs_tarball.partial" .
        mv "$rootfs_tarball.partial" "$rootfs_tarball"
        rm -rf "$dir"
    ) >"$logs/debootstrap.log" 2>&1 &
    rootfs_pid=$!
fi

stage "tools (cached in $cache)"
rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl >"$logs/rustup.log" 2>&1 ||
    fail "rustup target add the musl targets (see $logs/rustup.log)"
export PATH=$cache/cargo/bin:$PATH
install_cargo_tool() {
    local name=$1 version=$2
    if ! "$name" --version 2>/dev/null | grep -q "$version"; then
        local tool_started
        tool_started=$(date +%s)
        cargo install --locked --quiet --root "$cache/cargo" --version "$version" "$name" ||
            fail "cargo install $name $version"
        figures+=("cargo install $name $version: $(($(date +%s) - tool_started))s (cached from now on)")
    fi
    ok "$name $version"
}
install_cargo_tool cargo-deb "$cargo_deb_version"
install_cargo_tool cargo-generate-rpm "$cargo_generate_rpm_version"

stage "build x86_64 and aarch64 (musl, static)"
EDGEROLL_TOOLS=$cache cross/build.sh --install-deps x86_64 aarch64 >"$logs/build.log" 2>&1 || {
    tail -n 40 "$logs/build.log"
    fail "cross/build.sh x86_64 aarch64 (see $logs/build.log)"
}
grep -E '^target/|^  ELF|Finished' "$logs/build.log"
amd64_binary=target/x86_64-unknown-linux-musl/release/edgeroll
arm64_binary=target/aarch64-unknown-linux-musl/release/edgeroll
for binary in "$amd64_binary" "$arm64_binary"; do
    description=$(file -b "$binary")
    check "static: $binary: $description" \
        bash -c "[[ '$description' == *'statically linked'* || '$description' == *'static-pie linked'* ]]"
    figures+=("size of $binary: $(stat -c %s "$binary") bytes")
done
aws_lc=$(cargo tree --locked --target all -i aws-lc-sys 2>&1 || true)
check "no aws-lc in the dependency tree (cargo tree -i aws-lc-sys: ${aws_lc%%$'\n'*})" \
    bash -c "[[ '$aws_lc' == *'did not match any packages'* ]]"
check "no aws-lc or openssl in the tree of any target" \
    bash -c "! cargo tree --locked --target all -e all --prefix none | grep -E '^(aws-lc|openssl-sys)'"

stage "demo: amd64, and arm64 under qemu-user"
demo_ok() {
    tail -n 1 "$1" | grep -q '"completion":"Promoted"' &&
        tail -n 1 "$1" | grep -q '"completion":"Aborted"' &&
        tail -n 1 "$1" | grep -q '"failedRequestsAfterAbort":0'
}
timeout 300 "$amd64_binary" demo -o json >"$logs/demo-amd64.json" 2>"$logs/demo-amd64.log" ||
    fail "the amd64 demo ran (see $logs/demo-amd64.log)"
check "amd64 demo: $(tail -n 1 "$logs/demo-amd64.json" | cut -c 1-100)…" demo_ok "$logs/demo-amd64.json"
# The demo spawns `edgeroll sample-app` children from its own (arm64) binary, so the kernel must
# hand every arm64 exec to qemu: register binfmt rather than call qemu-aarch64-static once.
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
fi
check "binfmt runs arm64 binaries through qemu ($(cat /proc/sys/fs/binfmt_misc/qemu-aarch64 | head -n 1))" \
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64
demo_started=$(date +%s)
timeout "$demo_timeout_seconds" "$arm64_binary" demo -o json >"$logs/demo-arm64.json" 2>"$logs/demo-arm64.log" ||
    fail "the arm64 demo ran to completion under qemu-aarch64 (see $logs/demo-arm64.log)"
check "arm64 demo under qemu-aarch64 in $(($(date +%s) - demo_started))s: $(tail -n 1 "$logs/demo-arm64.json" | cut -c 1-100)…" \
    demo_ok "$logs/demo-arm64.json"

stage "packages: .deb and .rpm for amd64 and arm64"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# The man page comes from the binary's own --help (the amd64 one runs here); both arches share it.
mkdir -p target/man
sh packaging/man/gen-man.sh "$amd64_binary" target/man/edgeroll.1.gz
rm -rf "$packages" && mkdir -p "$packages/upgrade-test"
for triple in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    cargo deb --locked --no-build --target "$triple" -o "$packages/" >>"$logs/package.log" 2>&1 ||
        fail "cargo deb --target $triple (see $logs/package.log)"
    cargo generate-rpm --target "$triple" -o "$packages/" >>"$logs/package.log" 2>&1 ||
        fail "cargo generate-rpm --target $triple (see $logs/package.log)"
done
# The same package with a higher version, to test an upgrade.
cargo deb --locked --no-build --target x86_64-unknown-linux-musl --deb-version "$version-2" \
    -o "$packages/upgrade-test/" >>"$logs/package.log" 2>&1 || fail "cargo deb (upgrade test package)"
for file in "edgeroll_${version}-1_amd64.deb" "edgeroll_${version}-1_arm64.deb" \
    "edgeroll-${version}-1.x86_64.rpm" "edgeroll-${version}-1.aarch64.rpm" \
    "upgrade-test/edgeroll_${version}-2_amd64.deb"; do
    check "built $packages/$file ($(stat -c %s "$packages/$file" 2>/dev/null || echo 0) bytes)" test -s "$packages/$file"
done
for arch in amd64 arm64; do
    deb=$packages/edgeroll_${version}-1_$arch.deb
    check "$deb: Architecture $arch" test "$(dpkg-deb -f "$deb" Architecture)" = "$arch"
    check "$deb: /etc/edgeroll/edgeroll.toml is a conffile" \
        bash -c "dpkg-deb -I '$deb' conffiles | grep -qx /etc/edgeroll/edgeroll.toml"
done
man_warnings=$(MANWIDTH=80 man --warnings -E UTF-8 -l target/man/edgeroll.1.gz 2>&1 >/dev/null || true)
check "the man page renders without warnings" test -z "$man_warnings"

stage "lintian"
for deb in "$packages"/edgeroll_*.deb; do
    lintian_status=0
    lintian --fail-on error "$deb" >"$logs/lintian.log" 2>&1 || lintian_status=$?
    grep -v '^running with root privileges' "$logs/lintian.log" | sed 's/^/    /' || true
    check "lintian: no errors in $(basename "$deb") (warnings above, if any)" test "$lintian_status" = 0
done

stage "rpm: -qip, -K, alternate root"
tests/packaging/rpm.sh "$version" "$packages"/*.rpm 2>&1 | tee "$logs/rpm.log" || {
    count_passed "$logs/rpm.log"
    fail "tests/packaging/rpm.sh"
}
count_passed "$logs/rpm.log"

stage "nspawn: the .deb under systemd as PID 1"
if [ -n "$rootfs_pid" ]; then
    wait "$rootfs_pid" || fail "debootstrap the bookworm rootfs (see $logs/debootstrap.log)"
fi
check "the bookworm rootfs ($(du -h "$rootfs_tarball" | cut -f 1)) is ready" test -s "$rootfs_tarball"
tests/packaging/nspawn.sh "$rootfs_tarball" "$packages/edgeroll_${version}-1_amd64.deb" \
    "$packages/upgrade-test/edgeroll_${version}-2_amd64.deb" 2>&1 | tee "$logs/nspawn.log" || {
    count_passed "$logs/nspawn.log"
    fail "tests/packaging/nspawn.sh"
}
count_passed "$logs/nspawn.log"

stage "done"
echo "figures:"
printf '  %s\n' "${figures[@]}"
grep -E 'systemd-analyze security|from exec to READY' "$logs/nspawn.log" | sed 's/^ok   - /  /'
echo "stage times:"
printf '  %s\n' "${timings[@]}"
printf '  %-46s %4ss\n' "total" $(($(date +%s) - started))
printf 'packaging: %d passed, 0 failed\n' "$passed"
