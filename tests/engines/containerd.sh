#!/usr/bin/env bash
# Start or stop a real containerd 1.6 + runc (Debian `containerd`, `runc`) for the containerd
# runtime tests, with its own root, state and socket (nothing shared with a system containerd),
# and `busybox-static` for the test images.
#
#   tests/engines/containerd.sh start   # installs what is missing with apt-get, starts containerd
#                                       # once, waits until it answers, prints what to export
#   tests/engines/containerd.sh stop    # stops what this script started, by PID (its shims and
#                                       # their tasks too), and removes its dirs
#
# Then: eval "$(tests/engines/containerd.sh start)" && \
#       cargo test --test runtime_containerd -- --include-ignored
set -euo pipefail

DIR="${EDGEROLL_CONTAINERD_DIR:-/tmp/edgeroll-test-containerd}"
SOCKET="${DIR}/containerd.sock"
PID_FILE="${DIR}/containerd.pid"
READY_TIMEOUT_SECONDS=60

running() {
    [[ -f "${PID_FILE}" ]] && kill -0 "$(cat "${PID_FILE}")" 2>/dev/null
}

ready() {
    [[ -S "${SOCKET}" ]] && ctr --address "${SOCKET}" version >/dev/null 2>&1
}

install() {
    local missing=()
    command -v containerd >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    [[ -x /bin/busybox ]] || missing+=(busybox-static)
    if ((${#missing[@]})); then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

start() {
    if running && ready; then
        echo "export EDGEROLL_TEST_CONTAINERD=${SOCKET}"
        return 0
    fi
    install
    mkdir -p "${DIR}/root" "${DIR}/state"
    # Only what the backend uses: no CRI (no kubelet here), its own paths.
    cat >"${DIR}/config.toml" <<CONFIG
version = 2
root = "${DIR}/root"
state = "${DIR}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "${SOCKET}"
[ttrpc]
  address = "${SOCKET}.ttrpc"
[debug]
  address = "${SOCKET}.debug"
CONFIG
    containerd --config "${DIR}/config.toml" >"${DIR}/containerd.log" 2>&1 &
    echo $! >"${PID_FILE}"
    for _ in $(seq 1 $((READY_TIMEOUT_SECONDS * 4))); do
        if ready; then
            echo "export EDGEROLL_TEST_CONTAINERD=${SOCKET}"
            return 0
        fi
        if ! running; then
            echo "containerd exited; its log:" >&2
            cat "${DIR}/containerd.log" >&2
            return 1
        fi
        sleep 0.25
    done
    echo "containerd did not answer within ${READY_TIMEOUT_SECONDS}s" >&2
    return 1
}

stop() {
    if running; then
        local pid
        pid=$(cat "${PID_FILE}")
        # Tasks outlive containerd (their shims are not its children): kill every task of every
        # namespace of this private instance first, by the pids its shims report.
        for namespace in $(ctr --address "${SOCKET}" namespaces list -q 2>/dev/null); do
            for task_pid in $(ctr --address "${SOCKET}" -n "${namespace}" tasks list -q 2>/dev/null |
                xargs -r -I{} ctr --address "${SOCKET}" -n "${namespace}" tasks ps {} 2>/dev/null |
                awk 'NR > 1 { print $1 }'); do
                kill -9 "${task_pid}" 2>/dev/null || true
            done
        done
        kill "${pid}"
        for _ in $(seq 1 40); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.25
        done
    fi
    # The shims of this instance (their command line names its socket), by PID.
    for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address ${SOCKET}" || true); do
        kill -9 "${shim}" 2>/dev/null || true
    done
    if [[ -d "${DIR}" ]]; then
        # Snapshot mounts of running containers would keep the root busy.
        grep " ${DIR}/" /proc/mounts | awk '{ print $2 }' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf "${DIR}"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
