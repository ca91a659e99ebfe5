#!/usr/bin/env bash
# The Debian package under a real systemd: boot a Debian bookworm rootfs with systemd as PID 1 in
# systemd-nspawn (own network namespace, so its ports are its own), install the package, and
# check what a user relies on: Type=notify (active only after READY=1), the socket and its
# permissions, workloads that survive restarts, the watchdog, reload, upgrade, remove and purge.
#
#   tests/packaging/nspawn.sh ROOTFS_TARBALL DEB UPGRADE_DEB
#
# ROOTFS_TARBALL: `debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm`
# packed with tar (.ci/packaging.sh makes and caches it). UPGRADE_DEB: the same package with a
# higher version. Needs root. Every check prints `ok` or `FAIL`; the first failure prints the
# service's journal and exits 1. Nothing is skipped.
set -euo pipefail

rootfs_tarball=$1
deb=$2
upgrade_deb=$3

# The proxy listener of the test service, inside the container's own network namespace.
proxy_port=18080
# How long to wait for any one condition; generous for a busy 2-core machine.
deadline_seconds=60

passed=0
started=$(date +%s)
work=$(mktemp -d /var/tmp/edgeroll-nspawn.XXXXXX)
root=$work/root
nspawn_pid=
init_pid=

stop_container() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # SIGTERM asks nspawn to shut the container down cleanly; a second signal would be abrupt.
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 1; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    # A container whose nspawn had to be killed keeps its PID 1; killing that PID 1 ends every
    # process of the container's PID namespace.
    if [ -n "$init_pid" ] && kill -0 "$init_pid" 2>/dev/null; then
        kill -KILL "$init_pid" 2>/dev/null || true
    fi
    nspawn_pid=
}
cleanup() {
    stop_container
    rm -rf "$work"
}
trap cleanup EXIT
# Any step that fails outside a check is a failure too, never a silent exit.
trap 'fail "line $LINENO: a command failed unexpectedly"' ERR

inside() { nsenter -t "$init_pid" -a -- "$@"; }

ok() {
    passed=$((passed + 1))
    printf 'ok   - %s\n' "$*"
}
fail() {
    trap - ERR
    printf 'FAIL - %s\n' "$*"
    if [ -n "$init_pid" ]; then
        echo "--- systemctl status edgeroll"
        inside systemctl status edgeroll --no-pager -l 2>&1 | tail -n 30 || true
        echo "--- journalctl -u edgeroll (last 60 lines)"
        inside journalctl -u edgeroll --no-pager -o short-monotonic -n 60 2>&1 || true
    fi
    printf 'nspawn: %d passed, 1 failed\n' "$passed"
    exit 1
}
# check DESCRIPTION COMMAND...: ok when COMMAND succeeds.
check() {
    local description=$1
    shift
    if "$@"; then ok "$description"; else fail "$description"; fi
}
# eventually DESCRIPTION COMMAND...: ok when COMMAND succeeds within the deadline (polled).
eventually() {
    local description=$1
    shift
    local until=$(($(date +%s) + deadline_seconds))
    while [ "$(date +%s)" -lt "$until" ]; do
        if "$@" >/dev/null 2>&1; then
            ok "$description"
            return 0
        fi
        sleep 0.5
    done
    fail "$description (not within ${deadline_seconds}s)"
}

prop() { inside systemctl show -p "$1" --value edgeroll.service; }
is_active_running() {
    [ "$(prop ActiveState)" = active ] && [ "$(prop SubState)" = running ]
}
# The pids of sample-app workloads, from /proc (minbase has no pgrep).
workload_pids() {
    inside sh -c 'for p in /proc/[0-9]*; do
        tr "\0" " " <"$p/cmdline" 2>/dev/null | grep -q "^/usr/bin/edgeroll sample-app" && echo "${p#/proc/}"
    done; true'
}
# GET / through the agent's proxy from inside the container, with bash's /dev/tcp (no curl).
proxy_get() {
    inside timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$proxy_port &&
        printf 'GET / HTTP/1.0\r\nHost: test\r\n\r\n' >&3 && cat <&3"
}
get_json() { inside edgeroll get -o json; }
json_has() { get_json | grep -q -- "$1"; }
journal_has() { inside journalctl -u edgeroll --no-pager -o cat | grep -q -- "$1"; }
port_bound() { inside timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$proxy_port"; }

write_desired() {
    local version=$1 serial=$2
    cat >"$root/etc/edgeroll/desired.toml.partial" <<EOF
apiVersion = "edgeroll/v1"
serial = $serial

[[services]]
name = "web"
replicas = 1
traffic = { http = "127.0.0.1:$proxy_port" }

[services.template]
version = "$version"
command = ["/usr/bin/edgeroll", "sample-app", "--port", "{port}", "--version", "$version"]
readiness = { httpGet = "/healthz" }

[services.strategy.canary]
steps = [{ setWeight = 50 }, { pause = {} }]
EOF
    mv "$root/etc/edgeroll/desired.toml.partial" "$root/etc/edgeroll/desired.toml"
}

# === boot ===
echo "--- booting Debian bookworm with systemd as PID 1 in systemd-nspawn"
mkdir -p "$root"
tar -C "$root" -xzf "$rootfs_tarball"
# The tarball's "." may carry a 0700 mode (a mktemp directory); services that drop root (dbus)
# could then not reach any file.
chmod 0755 "$root"
# Each boot gets a fresh machine id.
rm -f "$root/etc/machine-id" && : >"$root/etc/machine-id"
cp "$deb" "$root/root/edgeroll.deb"
cp "$upgrade_deb" "$root/root/edgeroll-upgrade.deb"
setsid systemd-nspawn -D "$root" -b --register=no --keep-unit --private-network \
    --console=pipe -M "edgeroll-ci-$$" </dev/null >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
# The container's PID 1 is nspawn's child named systemd (nspawn forks short-lived helpers too).
for _ in $(seq 1 60); do
    init_pid=$(pgrep -P "$nspawn_pid" -x systemd | head -n 1 || true)
    [ -n "$init_pid" ] && [ -e "/proc/$init_pid/ns/mnt" ] && break
    init_pid=
    sleep 0.5
done
[ -n "$init_pid" ] || { cat "$work/nspawn.log"; fail "the container started"; }
# Checks written as `bash -c '…'` use these.
export init_pid proxy_port
export -f inside prop is_active_running workload_pids proxy_get get_json json_has journal_has port_bound
# Poll: right after PID 1 appears, systemctl cannot reach it yet (no bus), and a first boot of a
# fresh rootfs on a busy machine takes a while.
state=
boot_until=$(($(date +%s) + 180))
while [ "$(date +%s)" -lt "$boot_until" ]; do
    state=$(inside systemctl is-system-running 2>&1 || true)
    case $state in running | degraded) break ;; esac
    sleep 1
done
case $state in
running | degraded) ok "the container booted with systemd as PID 1 ($state)" ;;
*) cat "$work/nspawn.log"; fail "the container booted (last state: $state)" ;;
esac

# === install ===
echo "--- dpkg -i $(basename "$deb")"
check "dpkg -i installs the package" inside dpkg -i /root/edgeroll.deb
check "the edgeroll user and group exist" \
    inside sh -c 'getent passwd edgeroll >/dev/null && getent group edgeroll >/dev/null'
check "the unit is enabled" test "$(inside systemctl is-enabled edgeroll.service)" = enabled
eventually "the service is active (running) after install" is_active_running
check "the unit is Type=notify with NotifyAccess=main" \
    test "$(prop Type) $(prop NotifyAccess)" = "notify main"
check "the unit has a watchdog (WatchdogUSec=30s)" test "$(prop WatchdogUSec)" = 30s
status_text=$(prop StatusText)
check "systemctl status shows a STATUS= line (\"$status_text\")" test -n "$status_text"
check "the socket is mode 0660, group edgeroll" \
    test "$(inside stat -c '%a %G' /run/edgeroll/edgeroll.sock)" = "660 edgeroll"
check "the store is in /var/lib/edgeroll, owned by edgeroll" \
    test "$(inside stat -c %U /var/lib/edgeroll/state.db)" = edgeroll
check "edgeroll get works over the socket as root" json_has '"apiVersion": "edgeroll/v1"'
verify_errors=$(inside systemd-analyze verify --man=no edgeroll.service 2>&1 || echo "exit status $?")
[ -z "$verify_errors" ] || printf '%s\n' "$verify_errors"
check "systemd-analyze verify edgeroll.service prints nothing" test -z "$verify_errors"
security=$(inside systemd-analyze security --no-pager edgeroll.service 2>&1 | tail -n 1)
check "systemd-analyze security: $security" grep -q "Overall exposure level" <<<"$security"
# Under journald the agent's lines carry no timestamp, so ERROR (5 letters, not padded) starts them.
check "the journal has no warning from the agent" \
    bash -c "! inside journalctl -u edgeroll --no-pager -o cat | grep -E '(^| )(WARN|ERROR) '"

# === a service under the agent ===
echo "--- a desired document: sample-app behind the agent's proxy"
write_desired 1.0.0 1
# This edit of the conffile is what the upgrade below must keep.
sed -i 's|^# source = "file:///etc/edgeroll/desired.toml"|source = "file:///etc/edgeroll/desired.toml"|' \
    "$root/etc/edgeroll/edgeroll.toml"
check "the config enables the desired source" grep -q '^source = ' "$root/etc/edgeroll/edgeroll.toml"
check "systemctl restart edgeroll succeeds" inside systemctl restart edgeroll
# READY=1 comes after the API socket listens, so the first request needs no retry.
check "edgeroll get answers as soon as systemctl restart returns" json_has '"apiVersion"'
eventually "the sample-app instance is ready" json_has '"ready": true'
check "the proxy on 127.0.0.1:$proxy_port serves version 1.0.0" bash -c "proxy_get | grep -q '^1.0.0'"
check "systemctl status shows the service: \"$(prop StatusText)\"" bash -c "[[ \"$(prop StatusText)\" == *web* ]]"
workload=$(workload_pids)
check "exactly one workload runs (pid ${workload:-none})" test "$(wc -w <<<"$workload")" = 1

# === restart keeps the workload ===
main_before=$(prop MainPID)
check "systemctl restart edgeroll succeeds" inside systemctl restart edgeroll
check "the agent is a new process (MainPID $main_before -> $(prop MainPID))" test "$(prop MainPID)" != "$main_before"
eventually "the workload was adopted after the restart" journal_has "adopted a running instance"
check "the workload survived the restart with the same pid ($workload)" test "$(workload_pids)" = "$workload"
eventually "the adopted instance is ready" json_has '"ready": true'

# === Type=notify: active only after READY=1 ===
echo "--- Type=notify: a start that never reaches READY=1 never becomes active"
check "systemctl stop edgeroll succeeds" inside systemctl stop edgeroll
check "systemctl stop leaves the workload running (KillMode=process)" test "$(workload_pids)" = "$workload"
# Another process holds the proxy's port: the agent starts but fails before READY=1.
check "a blocker takes port $proxy_port" inside systemd-run --quiet --unit=edgeroll-port-blocker \
    /usr/bin/edgeroll sample-app --port "$proxy_port"
eventually "the blocker listens on $proxy_port" port_bound
active_enter_before=$(prop ActiveEnterTimestampMonotonic)
exec_start_before=$(prop ExecMainStartTimestampMonotonic)
check "systemctl start fails while the agent cannot reach READY" bash -c '! inside systemctl start edgeroll'
check "the agent process did run (ExecMainStartTimestamp moved)" \
    test "$(prop ExecMainStartTimestampMonotonic)" != "$exec_start_before"
check "the unit never entered active (ActiveEnterTimestamp unchanged)" \
    test "$(prop ActiveEnterTimestampMonotonic)" = "$active_enter_before"
# journald may write the line a moment after the failed start returns.
eventually "the journal says why" journal_has "cannot listen on"
check "the unit is not active ($(prop ActiveState)/$(prop SubState))" test "$(prop ActiveState)" != active
check "the blocker stops" inside systemctl stop edgeroll-port-blocker
inside systemctl reset-failed edgeroll.service
check "systemctl start succeeds once the port is free" inside systemctl start edgeroll
check "it is active (running)" is_active_running
ready_ms=$((($(prop ActiveEnterTimestampMonotonic) - $(prop ExecMainStartTimestampMonotonic)) / 1000))
ok "from exec to READY=1: ${ready_ms} ms"
check "the workload is still the same process after all that" test "$(workload_pids)" = "$workload"

# === who may act ===
echo "--- the socket: root and group edgeroll act, others are refused"
inside useradd --create-home alice
inside useradd --create-home --groups edgeroll bob
refused=$(inside runuser -u alice -- edgeroll promote web 2>&1) && fail "alice (not in group edgeroll) was refused"
check "alice (not in group edgeroll) cannot act: $refused" grep -qi "permission denied" <<<"$refused"
check "bob (group edgeroll) reads the status" bash -c 'inside runuser -u bob -- edgeroll get >/dev/null'
# Even with the socket opened to everyone, the agent itself refuses actions by peer credentials.
inside chmod 0755 /run/edgeroll
inside chmod 0666 /run/edgeroll/edgeroll.sock
check "alice reads the status once the socket is opened to all" \
    bash -c 'inside runuser -u alice -- edgeroll get >/dev/null'
refused=$(inside runuser -u alice -- edgeroll promote web 2>&1) && fail "the agent refuses alice's action"
check "the agent refuses alice's action: $refused" grep -q "^permission denied: " <<<"$refused"

# === reload and a canary driven by a group member ===
echo "--- systemctl reload (SIGHUP) and a canary promoted by bob"
write_desired 2.0.0 2
check "systemctl reload edgeroll succeeds" inside systemctl reload edgeroll
eventually "the reload was logged" journal_has "SIGHUP: re-reading the config and the desired document"
eventually "the canary 2.0.0 pauses at 50%" json_has '"phase": "Paused"'
check "bob (group edgeroll) promotes the canary" inside runuser -u bob -- edgeroll promote web
eventually "the rollout completes as Promoted" json_has '"completion": "Promoted"'
eventually "the proxy serves version 2.0.0" bash -c "proxy_get | grep -q '^2.0.0'"
eventually "one workload remains after the old version is scaled down" \
    bash -c '[ "$(workload_pids | wc -w)" = 1 ]'
workload=$(workload_pids)

# === the watchdog restarts a wedged event loop ===
echo "--- WatchdogSec: a wedged event loop is killed and restarted"
mkdir -p "$root/etc/systemd/system/edgeroll.service.d"
printf '[Service]\nEnvironment=EDGEROLL_TEST_HOOKS=1\nWatchdogSec=6s\n' \
    >"$root/etc/systemd/system/edgeroll.service.d/test-hooks.conf"
inside systemctl daemon-reload
check "systemctl restart with the test hooks and WatchdogSec=6s" inside systemctl restart edgeroll
eventually "the test hooks are on" journal_has "test hooks are enabled"
restarts_before=$(prop NRestarts)
main_before=$(prop MainPID)
# Three watchdog periods of an idle agent: its keep-alives hold.
sleep 18
check "a healthy loop is not restarted over 3 watchdog periods (NRestarts $restarts_before)" \
    test "$(prop NRestarts)" = "$restarts_before" -a "$(prop MainPID)" = "$main_before"
inside sh -c "kill -USR2 $main_before"
eventually "systemd restarts the wedged agent (NRestarts $restarts_before -> $((restarts_before + 1)))" \
    bash -c "[ \"\$(prop NRestarts)\" = $((restarts_before + 1)) ] && is_active_running"
check "the journal says it was the watchdog" journal_has "Watchdog timeout"
check "the agent is a new process" test "$(prop MainPID)" != "$main_before"
check "the workload survived the watchdog restart with the same pid ($workload)" \
    test "$(workload_pids)" = "$workload"
eventually "edgeroll get works after the watchdog restart" json_has '"ready": true'

# === upgrade keeps the changed conffile ===
echo "--- dpkg -i $(basename "$upgrade_deb") (upgrade)"
main_before=$(prop MainPID)
check "dpkg -i upgrades the package" inside dpkg -i /root/edgeroll-upgrade.deb
new_version=$(inside dpkg-query -W -f '${Version}' edgeroll)
check "the installed version is now $new_version" test "$new_version" = "$(dpkg-deb -f "$upgrade_deb" Version)"
check "the changed conffile was kept" grep -q '^source = "file:///etc/edgeroll/desired.toml"' \
    "$root/etc/edgeroll/edgeroll.toml"
check "no .dpkg-dist or .dpkg-new copy was left" \
    bash -c "! ls '$root'/etc/edgeroll/*.dpkg-* 2>/dev/null"
eventually "the service runs after the upgrade" is_active_running
check "the upgrade restarted the agent" test "$(prop MainPID)" != "$main_before"
check "the workload survived the upgrade with the same pid ($workload)" test "$(workload_pids)" = "$workload"
eventually "the workload is ready under the upgraded agent" json_has '"ready": true'

# === remove keeps the state, purge deletes it ===
echo "--- dpkg -r, then dpkg -P"
check "dpkg -r removes the package" inside dpkg -r edgeroll
check "the service is stopped" bash -c '[ "$(prop ActiveState)" != active ]'
eventually "the workloads are stopped too" bash -c '[ -z "$(workload_pids)" ]'
check "the binary is gone" test ! -e "$root/usr/bin/edgeroll"
check "the state is kept (/var/lib/edgeroll/state.db)" test -s "$root/var/lib/edgeroll/state.db"
check "the conffile is kept until purge" test -e "$root/etc/edgeroll/edgeroll.toml"
check "dpkg -P purges the package" inside dpkg -P edgeroll
check "purge deleted /var/lib/edgeroll" test ! -e "$root/var/lib/edgeroll"
check "purge deleted the conffile" test ! -e "$root/etc/edgeroll/edgeroll.toml"
check "dpkg no longer knows the package" bash -c '! inside dpkg -s edgeroll >/dev/null 2>&1'

stop_container
printf 'nspawn: %d passed, 0 failed (%ss)\n' "$passed" "$(($(date +%s) - started))"
