#!/usr/bin/env bash
# Start or stop podman's Docker-compatible API service (Debian `podman`) for the docker runtime
# tests, with its own storage, its own containers.conf (the ulimit setting without which
# `podman run` fails here with "error setting rlimit type 7") and a registries.conf that lets it
# pull over plain HTTP from the test registry on 127.0.0.1:5000 (started by docker.sh).
#
#   tests/engines/podman.sh start   # installs podman with apt-get if missing, starts the service
#                                   # once, waits until ready, prints what to export
#   tests/engines/podman.sh stop    # stops the service this script started, by PID
#
# Then: eval "$(tests/engines/docker.sh start)" && eval "$(tests/engines/podman.sh start)" && \
#       cargo test --test runtime_docker -- --include-ignored
set -euo pipefail

DIR="${EDGEROLL_PODMAN_DIR:-/tmp/edgeroll-test-podman}"
SOCKET="${DIR}/podman.sock"
PID_FILE="${DIR}/podman.pid"
REGISTRY="${EDGEROLL_DOCKER_REGISTRY:-127.0.0.1:5000}"
READY_TIMEOUT_SECONDS=60

export CONTAINERS_CONF="${DIR}/containers.conf"
export CONTAINERS_REGISTRIES_CONF="${DIR}/registries.conf"

podman_here() {
    podman --root "${DIR}/root" --runroot "${DIR}/runroot" --tmpdir "${DIR}/tmp" "$@"
}

running() {
    [[ -f "${PID_FILE}" ]] && kill -0 "$(cat "${PID_FILE}")" 2>/dev/null
}

ready() {
    [[ -S "${SOCKET}" ]] && podman --url "unix://${SOCKET}" version >/dev/null 2>&1
}

start() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    [[ -x /bin/busybox ]] || missing+=(busybox-static)
    if ((${#missing[@]})); then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
    if running && ready; then
        echo "export EDGEROLL_TEST_PODMAN=unix://${SOCKET}"
        return 0
    fi
    mkdir -p "${DIR}/root" "${DIR}/runroot" "${DIR}/tmp"
    printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n' \
        >"${CONTAINERS_CONF}"
    printf 'unqualified-search-registries = []\n\n[[registry]]\nlocation = "%s"\ninsecure = true\n' \
        "${REGISTRY}" >"${CONTAINERS_REGISTRIES_CONF}"
    podman_here system service --time=0 "unix://${SOCKET}" >"${DIR}/podman.log" 2>&1 &
    echo $! >"${PID_FILE}"
    for _ in $(seq 1 $((READY_TIMEOUT_SECONDS * 4))); do
        if ready; then
            echo "export EDGEROLL_TEST_PODMAN=unix://${SOCKET}"
            return 0
        fi
        if ! running; then
            echo "podman system service exited; its log:" >&2
            cat "${DIR}/podman.log" >&2
            return 1
        fi
        sleep 0.25
    done
    echo "podman did not become ready within ${READY_TIMEOUT_SECONDS}s" >&2
    return 1
}

stop() {
    if running; then
        local pid
        pid=$(cat "${PID_FILE}")
        # Containers outlive the service (conmon owns them): remove ours first.
        podman_here rm -f -a >/dev/null 2>&1 || true
        kill "${pid}"
        for _ in $(seq 1 80); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.25
        done
    fi
    grep -o " ${DIR}/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "${DIR}"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
