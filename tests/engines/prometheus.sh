#!/usr/bin/env bash
# Start or stop a real Prometheus with the remote-write receiver for the `prometheus` provider
# tests, on loopback only.
#
#   tests/engines/prometheus.sh start   # installs it with apt-get if missing, starts it once,
#                                       # waits until ready, prints the address (idempotent)
#   tests/engines/prometheus.sh stop    # stops the one this script started, by its PID
#
# Then: EDGEROLL_TEST_PROMETHEUS=$(tests/engines/prometheus.sh start) \
#       cargo test --test provider_prometheus -- --include-ignored
set -euo pipefail

PORT="${EDGEROLL_PROMETHEUS_PORT:-19090}"
DIR="${EDGEROLL_PROMETHEUS_DIR:-/tmp/edgeroll-test-prometheus}"
ADDRESS="http://127.0.0.1:${PORT}"
PID_FILE="${DIR}/prometheus.pid"
READY_TIMEOUT_SECONDS=60

running() {
    [[ -f "${PID_FILE}" ]] && kill -0 "$(cat "${PID_FILE}")" 2>/dev/null
}

ready() {
    # bash's /dev/tcp keeps the check free of curl or wget.
    { exec 3<>"/dev/tcp/127.0.0.1/${PORT}"; } 2>/dev/null || return 1
    printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
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
    if ! command -v prometheus >/dev/null; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >&2
    fi
    mkdir -p "${DIR}/data"
    # No scrape targets: the tests push every series through remote write.
    printf 'global:\n  scrape_interval: 15s\n' >"${DIR}/prometheus.yml"
    prometheus --config.file="${DIR}/prometheus.yml" --storage.tsdb.path="${DIR}/data" \
        --web.listen-address="127.0.0.1:${PORT}" --web.enable-remote-write-receiver \
        >"${DIR}/prometheus.log" 2>&1 &
    echo $! >"${PID_FILE}"
    for _ in $(seq 1 $((READY_TIMEOUT_SECONDS * 4))); do
        if ready; then
            echo "${ADDRESS}"
            return 0
        fi
        if ! running; then
            echo "prometheus exited; its log:" >&2
            cat "${DIR}/prometheus.log" >&2
            return 1
        fi
        sleep 0.25
    done
    echo "prometheus did not become ready within ${READY_TIMEOUT_SECONDS}s" >&2
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
