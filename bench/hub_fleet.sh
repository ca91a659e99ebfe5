#!/usr/bin/env bash
# bench/hub_fleet.sh — `edgeroll hub` on one core under a simulated fleet: 10,000 sites polling
# every 30 s with ETags (mostly 304s) and posting report batches, then a ramp to saturation, and
# the same against nginx serving the same documents as static files with ETags, in the same run.
#
# The load generator is examples/hub_fleet_load.rs (open loop: latency from each request's
# scheduled time). The server runs alone on SERVER_CPU (`taskset`; the hub's tokio workers and
# its store thread share that core), the generator on CLIENT_CPU. Passes:
#   hub steady      SITES sites, STEADY_WARMUP unrecorded then STEADY measured: p50/p99, the hub's
#                   CPU share (utime+stime over the window / wall time), VmRSS and VmHWM
#   hub ramp        2x, 4x, 8x ... SITES at the same interval, STEP each, until a step's p99 is
#                   above SLO_MS, or it has errors or unanswered requests: the ceiling is the
#                   last step that held, in sites per core at INTERVAL
#   hub ramp, polls only (POLLS_ONLY=1): the same without report batches, like for like with nginx
#   nginx steady, nginx ramp: nginx (one worker, no access log, etag on, open_file_cache) serving
#                   the document each of the SITES sites gets as /site-NNNNNNN/desired.toml
#
# Build first (nothing is built here):
#   CARGO_INCREMENTAL=0 cargo build --release --bin edgeroll --example hub_fleet_load
# Run as root on Debian, from anywhere:  bash bench/hub_fleet.sh   (installs nginx-light, jq)
# Knobs: EDGEROLL (target/release/edgeroll), LOAD (target/release/examples/hub_fleet_load),
#        SITES (10000), INTERVAL (30s), CONNS (1000), STEADY (60s), STEADY_WARMUP (30s),
#        STEP (30s), STEP_WARMUP (30s: every site has polled once before a step is measured), MAX_SITES (2560000), SLO_MS (50), REPORT_EVERY (10),
#        BATCH (5), POLLS_ONLY (1), NGINX (1), SERVER_CPU (0), CLIENT_CPU (1),
#        NICE (-15), WORK (/tmp/edgeroll-hub-fleet), PORT (18450), NGINX_PORT (18451),
#        LAST_SEEN_FLUSH (the hub's `last_seen_flush`; unset: the hub's default, 10 s).
# NICE: the script runs in its own session, whose autogroup gets this niceness, and so does
# every process it starts: with autogroup scheduling (Debian's default) a plain `nice` only
# orders processes of one session, so builds in other sessions would take the server's core
# mid-pass. The generator reports how busy the server's core was next to the server's share.
# Only 127.0.0.1 is used; every process it starts is stopped by pid on exit. Markdown to
# stdout, progress to stderr, every JSON line the generator printed in $WORK/*.jsonl.
set -euo pipefail
NICE="${NICE:--15}"
if [ -z "${HUB_FLEET_SESSION:-}" ]; then
  HUB_FLEET_SESSION=1 exec setsid --wait bash "$0" "$@"
fi
echo "$NICE" > /proc/self/autogroup 2>/dev/null || true

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
EDGEROLL="$(realpath "${EDGEROLL:-$ROOT/target/release/edgeroll}")"
LOAD="$(realpath "${LOAD:-$ROOT/target/release/examples/hub_fleet_load}")"
SITES="${SITES:-10000}"
INTERVAL="${INTERVAL:-30s}"
CONNS="${CONNS:-1000}"
STEADY="${STEADY:-60s}"
STEADY_WARMUP="${STEADY_WARMUP:-30s}"
STEP="${STEP:-30s}"
STEP_WARMUP="${STEP_WARMUP:-30s}"
MAX_SITES="${MAX_SITES:-2560000}"
SLO_MS="${SLO_MS:-50}"
REPORT_EVERY="${REPORT_EVERY:-10}"
BATCH="${BATCH:-5}"
POLLS_ONLY="${POLLS_ONLY:-1}"
NGINX="${NGINX:-1}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
WORK="${WORK:-/tmp/edgeroll-hub-fleet}"
PORT="${PORT:-18450}"
NGINX_PORT="${NGINX_PORT:-18451}"

for tool in nginx jq; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light jq >/dev/null; }
done
for binary in "$EDGEROLL" "$LOAD"; do
  [ -x "$binary" ] || { echo "no binary at $binary; build: CARGO_INCREMENTAL=0 cargo build --release --bin edgeroll --example hub_fleet_load" >&2; exit 1; }
done
# 1000 client connections and as many on the server side, in one process each.
ulimit -n 65536 2>/dev/null || true

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
stop() { # pid: stop one process started here (SIGTERM, SIGKILL after 30 s) and wait for it
  kill "$1" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

rm -rf "$WORK"; mkdir -p "$WORK/docs" "$WORK/www" "$WORK/nginx"
document() { # cohort version serial
  cat <<EOF
apiVersion = "edgeroll/v1"
serial = $3
selector = { cohort = "$1" }

[[services]]
name = "telemetry-ingest"
traffic = { http = "0.0.0.0:8080" }

[services.template]
version = "$2"
command = ["/opt/ingest/bin/ingest", "--listen", "127.0.0.1:{port}"]

[services.strategy.canary]
steps = [{ setWeight = 20 }, { pause = { duration = "10m" } }, { setWeight = 60 }, { pause = {} }]
EOF
}
document pilot 2.5.0 42 > "$WORK/docs/fleet-pilot.toml"
document main 2.4.1 41 > "$WORK/docs/fleet-main.toml"
# The generator gives site i the labels of class i % 120, cohort=pilot when i % 10 == 0: each
# site's file is the document the hub serves it.
python3 - "$WORK" "$SITES" <<'EOF'
import os, sys
work, sites = sys.argv[1], int(sys.argv[2])
pilot = open(f"{work}/docs/fleet-pilot.toml", "rb").read()
main = open(f"{work}/docs/fleet-main.toml", "rb").read()
for i in range(sites):
    d = f"{work}/www/site-{i:07d}"
    os.mkdir(d)
    with open(f"{d}/desired.toml", "wb") as f:
        f.write(pilot if i % 10 == 0 else main)
EOF
cat > "$WORK/hub.toml" <<EOF
listen = "127.0.0.1:$PORT"
state_dir = "$WORK/state"
documents = "$WORK/docs"
${LAST_SEEN_FLUSH:+last_seen_flush = \"$LAST_SEEN_FLUSH\"}
EOF
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  open_file_cache max=20000 inactive=120s;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
    etag on;
    add_header Cache-Control no-cache;
  }
}
EOF

wait_for() { # url
  for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "nothing answers at $1" >&2; exit 1
}

LOAD_PID=
load() { # name target url server_pid args...: run the generator on CLIENT_CPU, JSON lines to $WORK/name.jsonl
  local name=$1 target=$2 url=$3 pid=$4; shift 4
  echo "== $name" >&2
  nice -n "$NICE" taskset -c "$CLIENT_CPU" "$LOAD" --target "$target" --url "$url" --server-pid "$pid" --server-core "$SERVER_CPU" \
    --interval "$INTERVAL" --connections "$CONNS" --slo-ms "$SLO_MS" --report-every "$REPORT_EVERY" \
    --batch "$BATCH" --nginx-files "$SITES" "$@" > "$WORK/$name.jsonl" & LOAD_PID=$!
  PIDS+=("$LOAD_PID")
  wait "$LOAD_PID"
  cat "$WORK/$name.jsonl" >&2
}
steady() { load "$1" "$2" "$3" "$4" --sites "$SITES" --warmup "$STEADY_WARMUP" --duration "$STEADY" "${@:5}"; }
ramp() { load "$1" "$2" "$3" "$4" --ramp --sites $((SITES * 2)) --max-sites "$MAX_SITES" --warmup "$STEP_WARMUP" --duration "$STEP" "${@:5}"; }

echo "edgeroll: $EDGEROLL; generator: $LOAD; server on CPU $SERVER_CPU, generator on CPU $CLIENT_CPU, both at nice $NICE (session autogroup too); $CONNS connections; interval $INTERVAL; steady $STEADY after $STEADY_WARMUP, ramp steps $STEP after $STEP_WARMUP; SLO p99 <= $SLO_MS ms"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start, $(date -u +%FT%TZ)"

# --- the hub
# taskset execs the hub, so $! is the hub's own pid (what /proc is read for).
EDGEROLL_LOG=warn nice -n "$NICE" taskset -c "$SERVER_CPU" "$EDGEROLL" hub --config "$WORK/hub.toml" 2> "$WORK/hub.log" & HUB=$!; PIDS+=("$HUB")
wait_for "http://127.0.0.1:$PORT/v1/documents"
echo "hub idle: $(awk '/VmRSS/ {print $2, $3}' "/proc/$HUB/status") RSS" >&2
steady hub-steady hub "http://127.0.0.1:$PORT" "$HUB"
ramp hub-ramp hub "http://127.0.0.1:$PORT" "$HUB"
if [ "$POLLS_ONLY" = 1 ]; then
  REPORT_EVERY=0 ramp hub-ramp-polls hub "http://127.0.0.1:$PORT" "$HUB"
fi
hub_db=$(du -sh "$WORK/state" | cut -f1)
stop "$HUB"

# --- nginx
if [ "$NGINX" = 1 ]; then
  nice -n "$NICE" taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx/nginx.conf" & NGINX_MASTER=$!; PIDS+=("$NGINX_MASTER")
  wait_for "http://127.0.0.1:$NGINX_PORT/site-0000000/desired.toml"
  NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)
  steady nginx-steady nginx "http://127.0.0.1:$NGINX_PORT" "$NGINX_WORKER"
  ramp nginx-ramp nginx "http://127.0.0.1:$NGINX_PORT" "$NGINX_WORKER"
  stop "$NGINX_MASTER"
fi

# --- the figures
row() { # name: one Markdown row per step of $WORK/name.jsonl
  jq -r --arg name "$1" 'select(.sites != null) |
    [$name, (.sites_at_interval | floor | tostring), (.offered_rps | tostring), (.achieved_rps | tostring),
     ((.poll_status["304"] // 0) | tostring), ((.poll_status["200"] // 0) | tostring),
     ([.report_status | to_entries[] | "\(.key): \(.value)"] | join(", ") | if . == "" then "-" else . end),
     ([.poll_status | to_entries[] | select(.key != "200" and .key != "304") | "\(.key): \(.value)"] | join(", ") | if . == "" then "0" else . end),
     "\(.errors) / \(.unanswered)",
     "\(.latency.p50_ms)", "\(.latency.p99_ms)", "\(.latency.max_ms)",
     (if .reports.count > 0 then "\(.reports.p99_ms)" else "-" end),
     "\(.server_cpu_pct) %", (if .achieved_rps > 0 then (.server_cpu_pct * 10000 / .achieved_rps | . * 10 | round / 10 | tostring) else "-" end),
     ([.server_threads_cpu_pct | to_entries[] | select(.value > 0) | "\(.key) \(.value)"] | join(", ")),
     "\(.server_core_busy_pct) %", "\(.client_cpu_pct) %",
     "\(.server_memory.vm_rss_mb) / \(.server_memory.vm_hwm_mb)",
     (if .held then "yes" else "**no**" end)] | "| " + join(" | ") + " |"' "$WORK/$1.jsonl"
}
echo
echo "| pass | sites at $INTERVAL | offered req/s | answered/s | poll 304 | poll 200 | report batches | other polls | errors / unanswered | p50 ms | p99 ms | max ms | reports p99 ms | server CPU | server CPU µs/answer | by thread % | server core busy | generator CPU | server RSS / HWM MB | held |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
passes=(hub-steady hub-ramp)
[ "$POLLS_ONLY" = 1 ] && passes+=(hub-ramp-polls)
[ "$NGINX" = 1 ] && passes+=(nginx-steady nginx-ramp)
for pass in "${passes[@]}"; do row "$pass"; done
echo
ceiling() { jq -r 'select(.ceiling_sites != null or .failed_sites != null) | .ceiling_sites // 0 | floor' "$WORK/$1.jsonl" | tail -1; }
verdict() { # name: why its ramp stopped
  jq -r 'select(.failed_sites != null) |
    "stopped at \(.failed_sites | floor) sites: p99 \(.failed_p99_ms) ms, \(.failed_errors) errors, \(.failed_unanswered) unanswered, server CPU \(.failed_server_cpu_pct) %, generator CPU \(.failed_client_cpu_pct) %"' "$WORK/$1.jsonl" | tail -1
}
steady_line() { jq -r 'select(.sites != null) | "p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, \(.achieved_rps) answers/s, CPU \(.server_cpu_pct) %, RSS \(.server_memory.vm_rss_mb) MB (HWM \(.server_memory.vm_hwm_mb) MB)"' "$WORK/$1.jsonl"; }
echo "- hub, $SITES sites: $(steady_line hub-steady); hub.db and WAL after the run: $hub_db"
echo "- hub ceiling (polls and report batches): $(ceiling hub-ramp) sites per core at $INTERVAL; $(verdict hub-ramp)"
if [ "$POLLS_ONLY" = 1 ]; then
  echo "- hub ceiling (polls only): $(ceiling hub-ramp-polls) sites per core at $INTERVAL; $(verdict hub-ramp-polls)"
fi
if [ "$NGINX" = 1 ]; then
  echo "- nginx, $SITES sites: $(steady_line nginx-steady)"
  echo "- nginx ceiling: $(ceiling nginx-ramp) sites per core at $INTERVAL; $(verdict nginx-ramp)"
  hub_polls=$(ceiling "$([ "$POLLS_ONLY" = 1 ] && echo hub-ramp-polls || echo hub-ramp)")
  awk -v h="$hub_polls" -v n="$(ceiling nginx-ramp)" 'BEGIN { if (n > 0) printf "- hub ceiling / nginx ceiling (polls only, like for like): %.2f\n", h / n }'
fi
echo "- a ramp step that stopped with the generator near 100 % CPU and the server well below it measured the generator, not the server"
