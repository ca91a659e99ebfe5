#!/usr/bin/env bash
# bench/hub.sh — `edgeroll hub` on one core: 304s per second against nginx's 304 for the same
# static file in the same run, and report batches (and events) per second ingested with fsync.
#
# Passes, each with the same client (wrk, HTTP/1.1 keep-alive) on CLIENT_CPU and the server alone
# on SERVER_CPU (`taskset`; the hub's two tokio workers and its store thread share that core):
#   nginx-304   GET /desired.toml with If-None-Match = nginx's own ETag (one worker, no access log)
#   hub-304     GET /v1/sites/{site}/desired with If-None-Match = the hub's ETag, edgeroll-site
#               and edgeroll-labels headers; the site name cycles over SITES names, so the hub's
#               in-memory poll table holds that many sites
#   hub-ingest  POST /v1/reports, each request the first batch (1..=BATCH reports) of a new site:
#               every answer is a 200 after a commit (WAL, synchronous=FULL; group commit)
#
# Run as root on Debian:  bash bench/hub.sh          (from the repository root; installs wrk nginx)
# Knobs: EDGEROLL (binary, target/release/edgeroll; not rebuilt), DURATION (10), CONNS (64),
#        BATCH (20 reports per batch), SITES (10000), CLIENT_CPU (1), SERVER_CPU (0), WORK
#        (/tmp/edgeroll-hub-bench), PORT (18440), NGINX_PORT (18441).
# Only 127.0.0.1 is used; every process it starts is stopped by pid on exit. Markdown to stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
EDGEROLL="$(realpath "${EDGEROLL:-$ROOT/target/release/edgeroll}")"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
BATCH="${BATCH:-20}"
SITES="${SITES:-10000}"
CLIENT_CPU="${CLIENT_CPU:-1}"
SERVER_CPU="${SERVER_CPU:-0}"
WORK="${WORK:-/tmp/edgeroll-hub-bench}"
PORT="${PORT:-18440}"
NGINX_PORT="${NGINX_PORT:-18441}"

for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null; }
done
[ -x "$EDGEROLL" ] || { echo "no edgeroll binary at $EDGEROLL (cargo build --release, or EDGEROLL=...)" >&2; exit 1; }

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

rm -rf "$WORK"; mkdir -p "$WORK/docs" "$WORK/www" "$WORK/nginx"
cat > "$WORK/docs/fleet.toml" <<'EOF'
apiVersion = "edgeroll/v1"
serial = 42
selector = { cohort = "pilot" }

[[services]]
name = "telemetry-ingest"
traffic = { http = "0.0.0.0:8080" }

[services.template]
version = "2.5.0"
command = ["/opt/ingest/bin/ingest", "--listen", "127.0.0.1:{port}"]

[services.strategy.canary]
steps = [{ setWeight = 20 }, { pause = { duration = "10m" } }, { setWeight = 60 }, { pause = {} }]
EOF
cp "$WORK/docs/fleet.toml" "$WORK/www/desired.toml"
cat > "$WORK/hub.toml" <<EOF
listen = "127.0.0.1:$PORT"
state_dir = "state"
documents = "docs"
EOF
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
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

taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx/nginx.conf" & PIDS+=($!)
(cd "$WORK" && EDGEROLL_LOG=warn exec taskset -c "$SERVER_CPU" "$EDGEROLL" hub --config hub.toml) & HUB=$!; PIDS+=($HUB)
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/documents" && curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/desired.toml" && break
  sleep 0.1
done

etag() { curl -s -D - -o /dev/null "$@" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r'; }
NGINX_ETAG=$(etag "http://127.0.0.1:$NGINX_PORT/desired.toml")
HUB_ETAG=$(etag -H 'edgeroll-labels: cohort=pilot' "http://127.0.0.1:$PORT/v1/sites/store-0/desired")

cat > "$WORK/nginx-304.lua" <<EOF
wrk.headers["If-None-Match"] = '$NGINX_ETAG'
EOF
cat > "$WORK/hub-304.lua" <<EOF
local n = 0
request = function()
  n = n + 1
  local site = "store-" .. (n % $SITES)
  return wrk.format("GET", "/v1/sites/" .. site .. "/desired", {
    ["If-None-Match"] = '$HUB_ETAG',
    ["edgeroll-site"] = site,
    ["edgeroll-labels"] = "cohort=pilot,region=eu-west",
  })
end
EOF
cat > "$WORK/hub-ingest.lua" <<EOF
local counter = 0
local thread_id = 0
local threads = 0
setup = function(thread) thread:set("id", threads); threads = threads + 1 end
init = function(args) thread_id = id end
request = function()
  counter = counter + 1
  local site = "bench-" .. thread_id .. "-" .. counter
  local reports = {}
  for seq = 1, $BATCH do
    reports[#reports + 1] = string.format('{"seq":%d,"at":%d,"type":"measurement","service":"telemetry-ingest","run":"run-1","metric":"success-rate","phase":"Successful","value":"[0.99%d]"}', seq, 1764600000000 + seq, seq % 10)
  end
  local body = string.format('{"site":"%s","first":1,"last":$BATCH,"reports":[%s]}', site, table.concat(reports, ","))
  return wrk.format("POST", "/v1/reports", {["Content-Type"] = "application/json"}, body)
end
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name url script
  local name=$1 url=$2 script=$3 pid=$4
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "$url")
  after=$(cpu_ticks "$pid")
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx/ {print $5}' <<<"$out"); non2xx=${non2xx:-0}
  local cpu; cpu=$(awk -v t=$((after - before)) -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", 100 * t / hz / d}')
  local per; per=$(awk -v t=$((after - before)) -v d="$DURATION" -v r="$rps" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", 1e6 * t / hz / (r * d)}')
  echo "| $name | $rps | $p50 | $p99 | $non2xx | $cpu % | $per |"
  echo "$out" > "$WORK/$name.wrk"
}

NGINX_PID=$(cat "$WORK/nginx/nginx.pid" 2>/dev/null || echo "${PIDS[0]}")
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1 || echo "$NGINX_PID")
echo "edgeroll: $EDGEROLL ($(file -b "$EDGEROLL" | cut -d, -f1-2)); wrk -t1 -c$CONNS -d${DURATION}s; server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU"
echo
echo "| pass | requests/s | p50 | p99 | non-2xx/3xx | server CPU | server CPU us/request |"
echo "|---|---|---|---|---|---|---|"
run nginx-304 "http://127.0.0.1:$NGINX_PORT/desired.toml" "$WORK/nginx-304.lua" "$NGINX_WORKER"
run hub-304 "http://127.0.0.1:$PORT" "$WORK/hub-304.lua" "$HUB"
run hub-ingest "http://127.0.0.1:$PORT" "$WORK/hub-ingest.lua" "$HUB"
echo
status304=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $HUB_ETAG" -H 'edgeroll-labels: cohort=pilot' "http://127.0.0.1:$PORT/v1/sites/store-1/desired")
echo "check: the hub's answer to a poll with its ETag is $status304; nginx ETag $NGINX_ETAG, hub ETag $HUB_ETAG"
batches=$(awk '/Requests\/sec/ {print $2}' "$WORK/hub-ingest.wrk")
awk -v b="$batches" -v n="$BATCH" 'BEGIN {printf "ingest: %.0f batches/s x %d reports = %.0f events/s, each batch committed (WAL, synchronous=FULL) before its 200\n", b, n, b * n}'
n304=$(awk '/Requests\/sec/ {print $2}' "$WORK/nginx-304.wrk"); h304=$(awk '/Requests\/sec/ {print $2}' "$WORK/hub-304.wrk")
awk -v h="$h304" -v n="$n304" 'BEGIN {printf "hub 304/s / nginx 304/s = %.2f; 10,000 sites polling every 30 s need 333/s\n", h / n}'
echo "hub RSS after the run: $(awk '/VmRSS/ {print $2, $3}' "/proc/$HUB/status"); hub.db: $(du -h "$WORK/state/hub.db" | cut -f1)"
