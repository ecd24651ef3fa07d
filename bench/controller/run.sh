#!/usr/bin/env bash
# Benchmarks nodeform-controller against nginx serving the same resolved specs as static files.
#   bench/controller/run.sh [CONTROLLER_BINARY]
# wrk GET /v1/spec/{identity} over 1,000 identities at 1, 64 and 512 connections, HTTP and HTTPS (same
# ECDSA P-256 certificate, TLS 1.2/1.3, keep-alive for both), then POST reports (durable ingest rate).
# Needs: wrk nginx curl (apt-get install wrk nginx curl). Prints a Markdown table on stdout.
# Environment: DURATION (default 10s), CONNS (default "1 64 512"), THREADS (controller workers, default 600).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/build-release/controller/nodeform-controller}"
duration="${DURATION:-10s}"
conns="${CONNS:-1 64 512}"
workers="${THREADS:-600}"
for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install wrk nginx curl)" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "bench: no controller binary at $bin (build with -DNODEFORM_SANITIZE=OFF)" >&2; exit 2; }

work="$(mktemp -d /tmp/nodeform-bench-XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# 1. A site with 1,000 nodes (copies of the demo node: network auth, 127.0.0.0/8).
cp -r "$root/examples/site" "$work/site"
for i in $(seq -f %04g 1 1000); do
  sed -e '/^\s*vmid:/d' "$root/examples/site/nodes/demo-01.yaml" > "$work/site/nodes/bench-$i.yaml"
done
"$bin" validate --site "$work/site" >&2

# 2. The controller, HTTP and HTTPS (two processes on two ports, one state each; same certificate).
start_controller() {  # NAME ARGS...
  local name="$1"; shift
  "$bin" serve --site "$work/site" --config /dev/null --access-log false --log-level warning \
    --threads "$workers" "$@" > "$work/$name.out" 2> "$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "listening on" "$work/$name.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: $name did not start:" >&2; cat "$work/$name.err" >&2; exit 4
}
start_controller https --state "$work/state-tls" --listen 127.0.0.1:18443
mkdir -p "$work/state-plain"
start_controller http --state "$work/state-plain" --listen 127.0.0.1:18080 --plain-http

# 3. nginx serving the same bytes as static files, same certificate and protocols.
mkdir -p "$work/www/v1/spec" "$work/nginx"
for i in $(seq -f %04g 1 1000); do
  curl -sf "http://127.0.0.1:18080/v1/spec/bench-$i" -o "$work/www/v1/spec/bench-$i"
done
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/json;
  keepalive_requests 1000;
  keepalive_timeout 5s;
  etag on;
  server {
    listen 127.0.0.1:19080;
    listen 127.0.0.1:19443 ssl;
    ssl_certificate $work/state-tls/tls/server.pem;
    ssl_certificate_key $work/state-tls/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $work/www;
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
sleep 0.5

cat > "$work/spec.lua" <<'LUA'
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("/v1/spec/bench-%04d", (counter % 1000) + 1))
end
LUA

run_wrk() {  # URL CONNS SCRIPT [SCRIPT-ARG] → "rps p50 p99 errors"
  local url="$1" c="$2" script="$3" arg="${4:-}" t=2
  [ "$c" -lt 2 ] && t=1
  local out
  out="$(wrk -t"$t" -c"$c" -d"$duration" --latency -s "$script" "$url" -- "$arg" 2>&1)"
  local rps p50 p99 errs
  rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  errs="$(awk '/Non-2xx or 3xx responses:/ {print $NF} /Socket errors:/ {print "sockerr"}' <<<"$out" | paste -sd, -)"
  echo "$rps|$p50|$p99|${errs:-0}"
}

echo "| scheme | connections | nodeform req/s | nodeform p50 | nodeform p99 | nginx req/s | nginx p50 | nginx p99 | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for scheme in http https; do
  for c in $conns; do
    if [ "$scheme" = http ]; then cu="http://127.0.0.1:18080"; nu="http://127.0.0.1:19080"; else cu="https://127.0.0.1:18443"; nu="https://127.0.0.1:19443"; fi
    IFS='|' read -r crps cp50 cp99 cerr <<<"$(run_wrk "$cu" "$c" "$work/spec.lua")"
    IFS='|' read -r nrps np50 np99 nerr <<<"$(run_wrk "$nu" "$c" "$work/spec.lua")"
    ratio="$(awk -v a="$crps" -v b="$nrps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
    echo "| $scheme | $c | $crps | $cp50 | $cp99 | $nrps | $np50 | $np99 | $ratio |"
    [ "$cerr" != 0 ] && echo "  (nodeform errors: $cerr)" >&2
    [ "$nerr" != 0 ] && echo "  (nginx errors: $nerr)" >&2
  done
done

# 4. Durable report ingest: unique report ids, each answered 201 after COMMIT (synchronous=FULL).
cat > "$work/report.lua" <<'LUA'
local counter = 0
local tid = 0
local prefix = ""
setup = function(thread) tid = tid + 1; thread:set("tid", tid) end
init = function(args) prefix = args[1] or "" end
request = function()
  counter = counter + 1
  local node = string.format("bench-%04d", (counter % 1000) + 1)
  local id = string.format("%s-%d-%d", prefix, tid or 0, counter)
  local body = '{"report_id":"' .. id .. '","identity":"' .. node .. '","agent_version":"0.1.0",' ..
    '"spec_digest":"sha256:x","phase":"sustain","trigger":"run","mode":"apply",' ..
    '"started_at":"2026-11-23T19:40:00.123Z","finished_at":"2026-11-23T19:40:01.456Z","platform_ready":true,' ..
    '"counts":{"total":12,"unchanged":12,"changed":0,"failed":0,"skipped":0,"drifted":0},"resources":[],' ..
    '"drift":[],"health":[{"name":"ssh","type":"tcp","status":"pass","message":"open"}]}'
  return wrk.format("POST", "/v1/nodes/" .. node .. "/reports", {["Content-Type"] = "application/json"}, body)
end
LUA
echo
echo "| ingest | connections | reports/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|"
for scheme in http https; do
  if [ "$scheme" = http ]; then cu="http://127.0.0.1:18080"; else cu="https://127.0.0.1:18443"; fi
  for c in 1 64; do
    IFS='|' read -r rps p50 p99 err <<<"$(run_wrk "$cu" "$c" "$work/report.lua" "$scheme$c")"
    echo "| $scheme | $c | $rps | $p50 | $p99 | $err |"
  done
done
