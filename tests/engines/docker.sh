#!/usr/bin/env bash
# Start or stop a real Docker Engine (Debian `docker.io`) for the docker runtime tests, on its own
# socket, data root and exec root (no bridge, no iptables: the tests use host networking on
# loopback), plus a local registry (Debian `docker-registry`) on 127.0.0.1:5000 for the pull test.
#
#   tests/engines/docker.sh start   # installs what is missing with apt-get, starts dockerd and the
#                                   # registry once, waits until ready, prints what to export
#   tests/engines/docker.sh stop    # stops what this script started, by PID, and removes its dirs
#
# Then: eval "$(tests/engines/docker.sh start)" && \
#       cargo test --test runtime_docker -- --include-ignored
set -euo pipefail

DIR="${EDGEROLL_DOCKER_DIR:-/tmp/edgeroll-test-docker}"
SOCKET="${DIR}/docker.sock"
PID_FILE="${DIR}/dockerd.pid"
READY_TIMEOUT_SECONDS=60
REGISTRY_PORT="${EDGEROLL_DOCKER_REGISTRY_PORT:-5000}"

running() {
    [[ -f "${PID_FILE}" ]] && kill -0 "$(cat "${PID_FILE}")" 2>/dev/null
}

ready() {
    [[ -S "${SOCKET}" ]] && docker -H "unix://${SOCKET}" version >/dev/null 2>&1
}

install() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    [[ -x /bin/busybox ]] || missing+=(busybox-static)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v skopeo >/dev/null || missing+=(skopeo)
    if ((${#missing[@]})); then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

# The loopback registry is registry.sh's (one place that runs docker-registry), on port 5000:
# Docker treats 127.0.0.0/8 as insecure by default, and podman.sh configures podman for it.
start_registry() {
    EDGEROLL_REGISTRY_PORT="${REGISTRY_PORT}" "$(dirname "$0")/registry.sh" start >/dev/null
}

exports() {
    start_registry
    echo "export EDGEROLL_TEST_DOCKER=unix://${SOCKET}"
    echo "export EDGEROLL_TEST_REGISTRY=127.0.0.1:${REGISTRY_PORT}"
}

start() {
    install
    if running && ready; then
        exports
        return 0
    fi
    mkdir -p "${DIR}/data" "${DIR}/exec"
    # dockerd writes its own pidfile; it is also ours to stop.
    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
        --data-root "${DIR}/data" --exec-root "${DIR}/exec" --pidfile "${PID_FILE}" \
        -H "unix://${SOCKET}" >"${DIR}/dockerd.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 $((READY_TIMEOUT_SECONDS * 4))); do
        if ready; then
            exports
            return 0
        fi
        if ! kill -0 "${pid}" 2>/dev/null; then
            echo "dockerd exited; its log:" >&2
            cat "${DIR}/dockerd.log" >&2
            return 1
        fi
        sleep 0.25
    done
    echo "dockerd did not become ready within ${READY_TIMEOUT_SECONDS}s" >&2
    return 1
}

stop() {
    EDGEROLL_REGISTRY_PORT="${REGISTRY_PORT}" "$(dirname "$0")/registry.sh" stop || true
    if running; then
        local pid
        pid=$(cat "${PID_FILE}")
        kill "${pid}"
        for _ in $(seq 1 80); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.25
        done
    fi
    # Overlay mounts left by a killed dockerd would make rm fail.
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
