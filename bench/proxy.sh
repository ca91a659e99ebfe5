#!/usr/bin/env bash
# bench/proxy.sh — edgeroll's weighted HTTP proxy against HAProxy and a direct connection, in one run.
#
# Three paths, same client (wrk, HTTP/1.1 keep-alive), same two nginx backends, same weighted split:
#   direct    wrk -> nginx (the stable backend)
#   haproxy   wrk -> HAProxy 2.6 (nbthread 1, http mode, 50/50 weights) -> both nginx
#   edgeroll  wrk -> edgeroll's proxy, a canary paused at setWeight 50 -> both nginx
# The nginx backends are the very processes edgeroll started for its stable (1.0.0) and canary
# (2.0.0) instances; HAProxy and the direct path are pointed at the same ports.
#
# CPU placement: both proxies run alone on PROXY_CPU (default 1; edgeroll's two tokio workers share it);
# wrk and both nginx run on CLIENT_CPU (default 0).
#
# Run as root on Debian:   bash bench/proxy.sh            (from the repository root)
# Knobs (environment):     DURATION=15 CONNS=64 THREADS=2 WARMUP=3 NICE=-15 PERF=0 EDGEROLL=path WORK=dir
# PERF=1 adds, after the measured passes, a `perf record` of each proxy under load (separate from the
# measured numbers) and prints the top symbols.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
EDGEROLL="${EDGEROLL:-$ROOT/target/release/edgeroll}"
WORK="${WORK:-/tmp/edgeroll-bench}"
DURATION="${DURATION:-15}"      # seconds per measured pass
WARMUP="${WARMUP:-3}"           # seconds of unmeasured load before each pass
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
CLIENT_CPU="${CLIENT_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
PERF="${PERF:-0}"
WORKERS="${WORKERS:-2}"         # edgeroll's agent.worker_threads (1 = one thread, like HAProxy's)
# Every benchmark process (wrk, both proxies, nginx via edgeroll) runs at this niceness so that
# other work on a shared machine does not take a proxy's core mid-pass. Without it a contended core is
# split per thread, which hands edgeroll (2 threads) a bigger share than HAProxy (1 thread).
NICE="${NICE:--15}"
EDGEROLL_PORT="${EDGEROLL_PORT:-18090}"
HAPROXY_PORT="${HAPROXY_PORT:-18091}"
SAMPLES="${SAMPLES:-200}"       # curl requests for the split check
READY_TIMEOUT=60                # seconds to wait for a rollout phase

CLK_TCK="$(getconf CLK_TCK)"
EDGE_PID=""
HAPROXY_PID=""
BG_PIDS=()

log() { printf '# %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup (runs on every exit)
stop_pid() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    set +e
    for pid in "${BG_PIDS[@]}"; do stop_pid "$pid"; done
    stop_pid "$HAPROXY_PID"
    # The agent first, so that it does not restart the workloads we are about to stop.
    stop_pid "$EDGE_PID"
    # edgeroll's workloads outlive the agent (they are adopted on restart): stop each nginx master by
    # the pid it wrote; its worker exits with it.
    for f in "$WORK"/nginx-*.pid; do
        [ -f "$f" ] && stop_pid "$(cat "$f")"
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- prerequisites
[ "$(id -u)" = 0 ] || die "run as root (apt-get, nginx, taskset)"
[ -x "$EDGEROLL" ] || die "no edgeroll binary at $EDGEROLL (cargo build --release)"
missing=()
for tool in wrk haproxy nginx curl jq taskset ss; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing wrk haproxy nginx curl jq util-linux iproute2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk haproxy nginx curl jq util-linux iproute2 >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk haproxy nginx curl jq util-linux iproute2 >/dev/null; }
fi
[ "$(nproc)" -gt "$PROXY_CPU" ] || die "need at least $((PROXY_CPU + 1)) CPUs"
for p in "$EDGEROLL_PORT" "$HAPROXY_PORT"; do
    ss -Htln "sport = :$p" | grep -q . && die "port $p is already in use"
done

rm -rf "$WORK"
mkdir -p "$WORK/state"

# ---------------------------------------------------------------- backend: nginx, tiny fixed 200
# The wrapper edgeroll starts for every instance: renders an nginx config for $PORT and execs nginx in
# the foreground, pinned to the client CPU. The body names the version so the split can be checked.
cat >"$WORK/nginx.conf.in" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $WORK/nginx-@PORT@.pid;
error_log $WORK/nginx-@PORT@.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORK/ngx-tmp-@PORT@;
    server {
        listen 127.0.0.1:@PORT@ backlog=4096;
        location = /nginx_status { stub_status; }
        location / { default_type text/plain; return 200 "@BODY@\n"; }
    }
}
EOF
cat >"$WORK/backend.sh" <<EOF
#!/bin/sh
# Started by edgeroll with PORT set; \$1 is the body (v1 / v2).
set -eu
conf="$WORK/nginx-\$PORT.conf"
sed -e "s/@PORT@/\$PORT/g" -e "s/@BODY@/\$1/g" "$WORK/nginx.conf.in" >"\$conf"
exec taskset -c $CLIENT_CPU nginx -e stderr -c "\$conf"
EOF
chmod +x "$WORK/backend.sh"

# ---------------------------------------------------------------- edgeroll: canary paused at 50/50
cat >"$WORK/edgeroll.toml" <<EOF
[agent]
site = "bench"
worker_threads = $WORKERS
state_dir = "$WORK/state"
socket = "$WORK/edgeroll.sock"
[desired]
source = "file://$WORK/desired.toml"
EOF
write_desired() { # version body
    cat >"$WORK/desired.tmp" <<EOF
apiVersion = "edgeroll/v1"
[[services]]
name = "web"
replicas = 1
traffic = { http = "127.0.0.1:$EDGEROLL_PORT" }
[services.template]
version = "$1"
command = ["$WORK/backend.sh", "$2"]
readiness = { tcp = true }
[services.strategy.canary]
steps = [{ setWeight = 50 }, { pause = {} }]
EOF
    mv "$WORK/desired.tmp" "$WORK/desired.toml"
}
status() { "$EDGEROLL" --socket "$WORK/edgeroll.sock" get -o json 2>/dev/null; }
wait_for() { # jq-condition description
    local deadline=$((SECONDS + READY_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$EDGE_PID" 2>/dev/null || die "edgeroll exited; see $WORK/edgeroll.log"
        if status | jq -e ".services[0] | $1" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    status >&2 || true
    die "timed out waiting for $2"
}

write_desired 1.0.0 v1
nice -n "$NICE" taskset -c "$PROXY_CPU" "$EDGEROLL" run --config "$WORK/edgeroll.toml" >"$WORK/edgeroll.log" 2>&1 &
EDGE_PID=$!
wait_for '.phase == "Healthy" and ([.instances[] | select(.ready)] | length) == 1' "version 1.0.0 Healthy"
write_desired 2.0.0 v2
wait_for '.phase == "Paused" and .weights.canary == 50 and .weights.stable == 50 and ([.instances[] | select(.ready)] | length) == 2' \
    "canary 2.0.0 paused at setWeight 50"
STABLE_ADDR="$(status | jq -r '.services[0].instances[] | select(.role == "stable") | .address')"
CANARY_ADDR="$(status | jq -r '.services[0].instances[] | select(.role == "canary") | .address')"
[ -n "$STABLE_ADDR" ] && [ -n "$CANARY_ADDR" ] || die "no instance addresses in status"
log "edgeroll pid $EDGE_PID, proxy 127.0.0.1:$EDGEROLL_PORT, stable $STABLE_ADDR, canary $CANARY_ADDR"

# ---------------------------------------------------------------- HAProxy 2.6, one thread, 50/50
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    balance random
    http-reuse safe
    server stable $STABLE_ADDR weight 50
    server canary $CANARY_ADDR weight 50
EOF
haproxy -c -q -f "$WORK/haproxy.cfg"
nice -n "$NICE" taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
for _ in $(seq 50); do
    kill -0 "$HAPROXY_PID" 2>/dev/null || die "haproxy exited; see $WORK/haproxy.log"
    if curl -fsS -o /dev/null "http://127.0.0.1:$HAPROXY_PORT/" 2>/dev/null; then break; fi
    sleep 0.1
done

# ---------------------------------------------------------------- helpers
rss() { awk '/^VmRSS|^VmHWM/ { printf "%s %s kB  ", $1, $2 }' "/proc/$1/status"; }
rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }   # utime+stime of every thread
ctx_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }
cpu_snap() { # cpu -> "total idle" jiffies (idle includes iowait)
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6 }' /proc/stat
}
busy() { # "total idle" before, "total idle" after -> busy percent
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[1] - x[1]; i = y[2] - x[2]
        printf "%.0f%%", (t > 0 ? 100 * (t - i) / t : 0) }'
}
served() { curl -fsS "http://$1/nginx_status" | awk 'NR == 3 { print $3 }'; }  # total requests
to_us() { # wrk latency (e.g. 512.00us, 1.23ms, 1.01s) -> microseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}
split_check() { # url -> "v1=N v2=M"
    local v1=0 v2=0 other=0 body
    for _ in $(seq "$SAMPLES"); do
        body="$(curl -fsS "$1" 2>/dev/null || echo fail)"
        case "$body" in v1) v1=$((v1 + 1)) ;; v2) v2=$((v2 + 1)) ;; *) other=$((other + 1)) ;; esac
    done
    echo "v1=$v1 v2=$v2 other=$other"
}

declare -A RPS P50 P99 NON2XX SOCKERR CPU CPU_PER_REQ CSW_PER_REQ SPLIT BUSY
# One measured pass: warm-up, then wrk for DURATION with --latency; proxy CPU, context switches and
# per-backend request counts are read around the measured pass.
measure() { # name url proxy-pid(or empty)
    local name="$1" url="$2" pid="${3:-}" out t0=0 t1=0 c0=0 c1=0 a0 a1 b0 b1
    nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
    if [ -n "$pid" ]; then t0="$(cpu_ticks "$pid")"; c0="$(ctx_switches "$pid")"; fi
    a0="$(served "$STABLE_ADDR")"; b0="$(served "$CANARY_ADDR")"
    local k0 p0 k1 p1
    k0="$(cpu_snap "$CLIENT_CPU")"; p0="$(cpu_snap "$PROXY_CPU")"
    out="$(nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url")"
    k1="$(cpu_snap "$CLIENT_CPU")"; p1="$(cpu_snap "$PROXY_CPU")"
    a1="$(served "$STABLE_ADDR")"; b1="$(served "$CANARY_ADDR")"
    BUSY[$name]="$(busy "$k0" "$k1") / $(busy "$p0" "$p1")"
    if [ -n "$pid" ]; then t1="$(cpu_ticks "$pid")"; c1="$(ctx_switches "$pid")"; fi
    printf '%s\n' "$out" >"$WORK/wrk-$name.txt"
    RPS[$name]="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
    P50[$name]="$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
    P99[$name]="$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    NON2XX[$name]="$(awk -F: '/Non-2xx/ { gsub(/ /, "", $2); print $2 }' <<<"$out")"
    NON2XX[$name]="${NON2XX[$name]:-0}"
    SOCKERR[$name]="$(awk '/Socket errors/ { sub(/.*errors: /, ""); print }' <<<"$out")"
    SOCKERR[$name]="${SOCKERR[$name]:-none}"
    local total=$((a1 - a0 + b1 - b0))
    SPLIT[$name]="stable $((a1 - a0)) / canary $((b1 - b0))"
    if [ -n "$pid" ]; then
        CPU[$name]="$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$DURATION" 'BEGIN { printf "%.0f%%", 100 * d / hz / s }')"
        CPU_PER_REQ[$name]="$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", (n > 0 ? 1e6 * d / hz / n : 0) }')"
        CSW_PER_REQ[$name]="$(awk -v c=$((c1 - c0)) -v n="$total" 'BEGIN { printf "%.3f", (n > 0 ? c / n : 0) }')"
    else
        CPU[$name]="-"; CPU_PER_REQ[$name]="-"; CSW_PER_REQ[$name]="-"
    fi
    log "$name: ${RPS[$name]} req/s, p50 ${P50[$name]} us, p99 ${P99[$name]} us, non-2xx ${NON2XX[$name]}, ${SPLIT[$name]}"
}

# ---------------------------------------------------------------- sanity: every path answers 200, split
for url in "http://$STABLE_ADDR/" "http://127.0.0.1:$HAPROXY_PORT/" "http://127.0.0.1:$EDGEROLL_PORT/"; do
    code="$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)"
    [ "$code" = 200 ] || die "$url answered $code, not 200"
done
SPLIT_HAPROXY="$(split_check "http://127.0.0.1:$HAPROXY_PORT/")"
SPLIT_EDGEROLL="$(split_check "http://127.0.0.1:$EDGEROLL_PORT/")"

sleep 2   # let the agent settle after the sanity requests before reading its idle footprint
RSS_IDLE="$(rss "$EDGE_PID")"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- measured passes
measure direct "http://$STABLE_ADDR/" ""
measure haproxy "http://127.0.0.1:$HAPROXY_PORT/" "$HAPROXY_PID"
measure edgeroll "http://127.0.0.1:$EDGEROLL_PORT/" "$EDGE_PID"
RSS_END="$(rss "$EDGE_PID")"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
HAPROXY_RSS="$(rss "$HAPROXY_PID")"

# ---------------------------------------------------------------- report (markdown on stdout)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a - b }'; }
ADD_H="$(added "${P99[haproxy]}" "${P99[direct]}")"
ADD_E="$(added "${P99[edgeroll]}" "${P99[direct]}")"

echo "### Run $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
echo
echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), shared by client, proxy"
echo "and backends: wrk and both nginx on CPU $CLIENT_CPU, the proxy alone on CPU $PROXY_CPU. Absolute numbers are"
echo "low and noisy; the ratios are what matter. Load average before/after: $LOAD_BEFORE / $LOAD_AFTER."
echo "All benchmark processes at nice $NICE."
echo "Client: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency (HTTP/1.1 keep-alive), ${WARMUP}s warm-up before each pass."
echo
echo "| path | req/s | p50 (us) | p99 (us) | non-2xx | socket errors | CPU$CLIENT_CPU / CPU$PROXY_CPU busy | proxy CPU | proxy CPU us/req | proxy ctx switches/req | backend requests |"
echo "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"
for n in direct haproxy edgeroll; do
    echo "| $n | ${RPS[$n]} | ${P50[$n]} | ${P99[$n]} | ${NON2XX[$n]} | ${SOCKERR[$n]} | ${BUSY[$n]} | ${CPU[$n]} | ${CPU_PER_REQ[$n]} | ${CSW_PER_REQ[$n]} | ${SPLIT[$n]} |"
done
echo
echo "| ratio | value |"
echo "|---|---:|"
echo "| throughput edgeroll / HAProxy | $(ratio "${RPS[edgeroll]}" "${RPS[haproxy]}") |"
echo "| throughput edgeroll / direct | $(ratio "${RPS[edgeroll]}" "${RPS[direct]}") |"
echo "| throughput HAProxy / direct | $(ratio "${RPS[haproxy]}" "${RPS[direct]}") |"
echo "| added p99 HAProxy (p99 - direct p99) | ${ADD_H} us |"
echo "| added p99 edgeroll (p99 - direct p99) | ${ADD_E} us |"
echo "| added p99 edgeroll / HAProxy | $(ratio "$ADD_E" "$ADD_H") |"
echo "| proxy CPU per request edgeroll / HAProxy | $(ratio "${CPU_PER_REQ[edgeroll]}" "${CPU_PER_REQ[haproxy]}") |"
echo
BG="${BUSY[direct]#* / }"
echo "Background load on the proxy CPU (CPU$PROXY_CPU busy during the direct pass, when no proxy runs): $BG."
if [ "${BG%\%}" -gt 10 ]; then
    echo "**Warning: other work used the proxy CPU during this run; the proxies competed with it and the"
    echo "comparison is not clean. Rerun when the machine is quiet.**"
fi
echo
echo "- edgeroll RSS idle (canary paused, 2 backends): $RSS_IDLE"
echo "- edgeroll RSS after its measured pass:           $RSS_END"
echo "- HAProxy RSS after the run (for reference):      $HAPROXY_RSS"
echo "- Split check, $SAMPLES curl requests: HAProxy $SPLIT_HAPROXY; edgeroll $SPLIT_EDGEROLL"

# ---------------------------------------------------------------- optional profile (not measured)
PERF_STAT_SECS=5
PERF_RECORD_SECS=8
PERF_EVENTS="context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait"
PERF_EVENTS+=",syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write"
PERF_EVENTS+=",syscalls:sys_enter_writev,syscalls:sys_enter_sendto"
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    for pair in "haproxy:$HAPROXY_PID:$HAPROXY_PORT" "edgeroll:$EDGE_PID:$EDGEROLL_PORT"; do
        IFS=: read -r name pid port <<<"$pair"
        nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$((PERF_STAT_SECS + PERF_RECORD_SECS + 3))s" "http://127.0.0.1:$port/" >/dev/null &
        BG_PIDS+=($!)
        sleep 1
        # Syscalls and context switches per proxied request, counted over a few seconds of load.
        a0="$(served "$STABLE_ADDR")"; b0="$(served "$CANARY_ADDR")"
        perf stat -x, -o "$WORK/perf-stat-$name.csv" -e "$PERF_EVENTS" -p "$pid" -- sleep "$PERF_STAT_SECS" >/dev/null 2>&1 || true
        a1="$(served "$STABLE_ADDR")"; b1="$(served "$CANARY_ADDR")"
        n=$((a1 - a0 + b1 - b0))
        perf record -q -F 499 -p "$pid" -o "$WORK/perf-$name.data" -- sleep "$PERF_RECORD_SECS" >/dev/null 2>&1 || true
        wait "${BG_PIDS[-1]}" || true
        echo
        echo "perf ($name under load): events per proxied request ($n requests in ${PERF_STAT_SECS}s), share of"
        echo "cpu-clock samples by binary, top 12 symbols"
        echo '```'
        awk -F, -v n="$n" '$3 ~ /:|switches/ && n > 0 { printf "%8.3f  %s\n", $1 / n, $3 }' "$WORK/perf-stat-$name.csv" || true
        echo
        perf report -q -i "$WORK/perf-$name.data" --stdio --sort dso 2>/dev/null | grep -v '^$' | head -6 || true
        echo
        perf report -q -i "$WORK/perf-$name.data" --stdio --sort dso,sym 2>/dev/null | grep -v '^$' \
            | sed 's/ *$//' | head -12 || true
        echo '```'
    done
fi
