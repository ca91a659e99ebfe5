#!/usr/bin/env bash
# The RPM packages, checked without an RPM-based system: metadata (`rpm -qip`), digests
# (`rpm -K`), the conffile flag, the scriptlets, and an install into an alternate root
# (`rpm --root DIR -ivh --nodeps --noscripts`) whose binary then runs (arm64 through binfmt).
#
#   tests/packaging/rpm.sh VERSION RPM...
#
# Every check prints `ok` or `FAIL`; the first failure exits 1. Nothing is skipped.
set -euo pipefail

version=$1
shift
passed=0
work=$(mktemp -d /var/tmp/edgeroll-rpm.XXXXXX)
trap 'rm -rf "$work"' EXIT

ok() {
    passed=$((passed + 1))
    printf 'ok   - %s\n' "$*"
}
fail() {
    printf 'FAIL - %s\n' "$*"
    printf 'rpm: %d passed, 1 failed\n' "$passed"
    exit 1
}
check() {
    local description=$1
    shift
    if "$@"; then ok "$description"; else fail "$description"; fi
}
trap 'fail "line $LINENO: a command failed unexpectedly"' ERR

for package in "$@"; do
    name=$(basename "$package")
    arch=$(rpm -qp --qf '%{ARCH}' "$package")
    echo "--- $name"
    case $arch in
    x86_64) machine="x86-64" ;;
    aarch64) machine="ARM aarch64" ;;
    *) fail "$name: unexpected architecture $arch" ;;
    esac
    check "$name is named edgeroll-$version-1.$arch.rpm (the contract)" \
        test "$name" = "edgeroll-$version-1.$arch.rpm"
    info=$(rpm -qip "$package")
    printf '%s\n' "$info" | sed -n '1,4p;/^Summary/p' | sed 's/^/    /'
    check "rpm -qip: Name edgeroll" grep -qx "Name *: edgeroll" <<<"$info"
    check "rpm -qip: Version $version" grep -qx "Version *: $version" <<<"$info"
    check "rpm -qip: Release 1" grep -qx "Release *: 1" <<<"$info"
    check "rpm -qip: Architecture $arch" grep -qx "Architecture: $arch" <<<"$info"
    digests=$(rpm -K "$package")
    check "rpm -K: $digests" grep -q "digests OK" <<<"$digests"
    flags=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$package")
    check "the config is a %config(noreplace) file" \
        grep -qx "cn /etc/edgeroll/edgeroll.toml" <<<"$flags"
    for path in /usr/bin/edgeroll /usr/lib/systemd/system/edgeroll.service \
        /usr/lib/sysusers.d/edgeroll.conf /usr/share/man/man1/edgeroll.1.gz; do
        check "it ships $path" grep -q " $path\$" <<<"$flags"
    done
    scripts=$(rpm -qp --scripts "$package")
    check "%pre creates the edgeroll user" grep -q "useradd --system" <<<"$scripts"
    check "%post enables and starts the service on install" \
        grep -q "systemctl enable --now edgeroll.service" <<<"$scripts"
    check "%preun stops the service on erase" grep -q "systemctl disable --now edgeroll.service" <<<"$scripts"

    root=$work/root-$arch
    mkdir -p "$root"
    rpm --root "$root" --initdb
    # --ignorearch: this host is x86_64, and the aarch64 package is installed here only to look at.
    check "rpm --root DIR -ivh --nodeps --noscripts installs it" \
        rpm --root "$root" -ivh --nodeps --noscripts --ignorearch "$package"
    check "the alternate root's rpmdb knows edgeroll-$version-1.$arch" \
        test "$(rpm --root "$root" -q edgeroll)" = "edgeroll-$version-1.$arch"
    description=$(file -b "$root/usr/bin/edgeroll")
    check "the installed binary is a static $machine executable" \
        bash -c "[[ \"$description\" == *\"$machine\"* && \"$description\" == *static* ]]"
    check "the installed binary runs: $("$root/usr/bin/edgeroll" --version)" \
        test "$("$root/usr/bin/edgeroll" --version)" = "edgeroll $version"
    check "rpm -V finds the installed files intact" rpm --root "$root" -V --nodeps --noscripts edgeroll
    check "rpm -e removes it from the alternate root" \
        rpm --root "$root" -e --nodeps --noscripts edgeroll
    check "the binary is gone" test ! -e "$root/usr/bin/edgeroll"
done

printf 'rpm: %d passed, 0 failed\n' "$passed"
