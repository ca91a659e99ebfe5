#!/usr/bin/env bash
# Start or stop a real OCI registry (Debian's docker-registry, distribution 2.8) for the registry
# client tests, on loopback only, with its storage in a temp directory. The tests push their own
# images into it with skopeo (installed here too).
#
#   tests/engines/registry.sh start   # installs docker-registry and skopeo with apt-get if missing,
#                                     # starts the registry once, waits until /v2/ answers, prints
#                                     # its address, e.g. 127.0.0.1:5000 (idempotent; docker.sh
#                                     # starts it too, for the docker runtime's pull tests)
#   tests/engines/registry.sh stop    # stops the one this script started, by its PID
#
# Then: EDGEROLL_TEST_REGISTRY=$(tests/engines/registry.sh start) \
#       cargo test --test runtime_registry -- --include-ignored
set -euo pipefail

PORT="${EDGEROLL_REGISTRY_PORT:-5000}"
DIR="${EDGEROLL_REGISTRY_DIR:-/tmp/edgeroll-test-registry}"
ADDRESS="127.0.0.1:${PORT}"
PID_FILE="${DIR}/registry.pid"
READY_TIMEOUT_SECONDS=60

running() {
    [[ -f "${PID_FILE}" ]] && kill -0 "$(cat "${PID_FILE}")" 2>/dev/null
}

ready() {
    # bash's /dev/tcp keeps the check free of curl or wget.
    { exec 3<>"/dev/tcp/127.0.0.1/${PORT}"; } 2>/dev/null || return 1
    printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    local status
    status=$(head -n 1 <&3 || true)
    exec 3<&- 3>&-
    [[ "${status}" == *" 200 "* ]]
}

start() {
    if running && ready; then
        echo "${ADDRESS}"
        return 0
    fi
    local need=()
    command -v docker-registry >/dev/null || need+=(docker-registry)
    command -v skopeo >/dev/null || need+=(skopeo)
    if (( ${#need[@]} )); then
        # policy-rc.d keeps the package's maintainer scripts from starting a system registry on :5000.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
        rm -f /usr/sbin/policy-rc.d
    fi
    mkdir -p "${DIR}/storage"
    # No auth (the token flow is tested through an in-test gateway), loopback only.
    cat >"${DIR}/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: ${DIR}/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${PORT}
YAML
    docker-registry serve "${DIR}/config.yml" >"${DIR}/registry.log" 2>&1 &
    echo $! >"${PID_FILE}"
    for _ in $(seq 1 $((READY_TIMEOUT_SECONDS * 4))); do
        if ready; then
            echo "${ADDRESS}"
            return 0
        fi
        if ! running; then
            echo "docker-registry exited; its log:" >&2
            cat "${DIR}/registry.log" >&2
            return 1
        fi
        sleep 0.25
    done
    echo "docker-registry did not become ready within ${READY_TIMEOUT_SECONDS}s" >&2
    return 1
}

stop() {
    if running; then
        local pid
        pid=$(cat "${PID_FILE}")
        kill "${pid}"
        for _ in $(seq 1 40); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.25
        done
    fi
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
