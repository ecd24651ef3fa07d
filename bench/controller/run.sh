#!/usr/bin/env bash
# Benchmarks nodeform-controller against nginx serving the same resolved specs as static files, then measures
# durable report ingest. Fully automatic; prints Markdown tables on stdout, progress on stderr.
#   bench/controller/run.sh [CONTROLLER_BINARY]
# 1. wrk GET /v1/spec/{identity} over 1,000 identities at 1, 64 and 512 connections, HTTP and HTTPS, each
#    run of the controller followed by the same run against nginx (same ECDSA P-256 certificate, TLS 1.2/1.3,
#    keep-alive for both).
# 2. wrk POST /v1/nodes/{identity}/reports with a unique report id per request (each answered 201 only after
#    its group-commit transaction was fsynced, synchronous=FULL) at 1, 16, 64 and 256 connections; the
#    controller's /metrics give the reports per commit (the group-commit batch size).
# Without a binary argument it builds nodeform-controller (no sanitizers) in BUILD_DIR (default: the sibling
# tree ../build-controller-rel when it exists, else build-release/, configured RelWithDebInfo) under the shared
# build lock. Installs wrk, nginx and curl with apt-get when missing (needs root).
# Environment: DURATION (default 10s), CONNS (default "1 64 512"), INGEST_CONNS (default "1 16 64 256"; empty:
# no ingest runs), THREADS (controller workers, default 32), REPEAT (runs of each spec-serving point, default 1;
# with more, the median ratio of each point follows the table: the machine may be shared), BENCH_TMP (work
# directory parent, default /var/tmp: the database must be on a real disk for the fsync figures to mean anything).
set -euo pipefail
started_at=$SECONDS
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
duration="${DURATION:-10s}"
conns="${CONNS:-1 64 512}"
ingest_conns="${INGEST_CONNS-1 16 64 256}"
workers="${THREADS:-32}"
repeat="${REPEAT:-1}"
log() { echo "bench: $*" >&2; }

missing=()
for tool in wrk nginx curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  [ "$(id -u)" = 0 ] || { log "need root to apt-get install ${missing[*]}"; exit 2; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi

if [ $# -ge 1 ]; then
  bin="$1"
else
  build="${BUILD_DIR:-}"
  if [ -z "$build" ]; then
    if [ -f "$root/../build-controller-rel/build.ninja" ]; then build="$(cd "$root/../build-controller-rel" && pwd)"
    else build="$root/build-release"; fi
  fi
  if [ ! -f "$build/build.ninja" ]; then
    log "configuring $build (RelWithDebInfo, no sanitizers)"
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNODEFORM_SANITIZE=OFF \
      -DNODEFORM_BUILD_TESTS=OFF \
      "-DCMAKE_CXX_FLAGS=-Wno-format-truncation -Wno-restrict -Wno-stringop-overflow -Wno-array-bounds" >&2
  fi
  log "building nodeform-controller in $build"
  flock /tmp/nf-build.lock nice ninja -C "$build" nodeform-controller >&2
  bin="$build/controller/nodeform-controller"
fi
[ -x "$bin" ] || { log "no controller binary at $bin"; exit 2; }

work="$(mktemp -d "${BENCH_TMP:-/var/tmp}/nodeform-bench-XXXXXX")"
chmod 755 "$work"  # nginx workers (user nobody) read $work/www
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. A site with 1,000 nodes (copies of the demo node: network auth, 127.0.0.0/8).
cp -r "$root/examples/site" "$work/site"
for i in $(seq -f %04g 1 1000); do
  sed -e '/^\s*vmid:/d' "$root/examples/site/nodes/demo-01.yaml" > "$work/site/nodes/bench-$i.yaml"
done
"$bin" validate --site "$work/site" >/dev/null

# 2. The controller, HTTP and HTTPS (two processes on two ports, one state each; the same certificate).
ports_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
for p in 18080 18443 19080 19443; do ports_free "$p" || { log "port $p is in use"; exit 2; }; done
start_controller() {  # NAME ARGS...
  local name="$1"; shift
  "$bin" serve --site "$work/site" --config /dev/null --access-log false --log-level warning \
    --threads "$workers" "$@" > "$work/$name.out" 2> "$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q "listening on" "$work/$name.out" 2>/dev/null && return 0; sleep 0.1; done
  log "$name did not start:"; cat "$work/$name.err" >&2; exit 4
}
start_controller https --state "$work/state-tls" --listen 127.0.0.1:18443
start_controller http --state "$work/state-plain" --listen 127.0.0.1:18080 --plain-http

# 3. nginx serving the same bytes as static files, same certificate and protocols.
mkdir -p "$work/www/v1/spec" "$work/nginx"
for i in $(seq -f %04g 1 1000); do
  curl -sf "http://127.0.0.1:18080/v1/spec/bench-$i" -o "$work/www/v1/spec/bench-$i"
done
chmod -R a+rX "$work/www"
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
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
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
nginx -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 1 50); do ports_free 19443 || break; sleep 0.1; done
curl -sf "http://127.0.0.1:19080/v1/spec/bench-0001" -o /dev/null || { log "nginx does not serve the specs"; cat "$work/nginx/error.log" >&2; exit 4; }

cat > "$work/spec.lua" <<'LUA'
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("/v1/spec/bench-%04d", (counter % 1000) + 1))
end
LUA

run_wrk() {  # URL CONNS SCRIPT [SCRIPT-ARG] → "rps|p50|p99|errors"
  local url="$1" c="$2" script="$3" arg="${4:-}" t=2
  [ "$c" -lt 2 ] && t=1
  local out
  out="$(wrk -t"$t" -c"$c" -d"$duration" --timeout 5s --latency -s "$script" "$url" -- "$arg" 2>&1)"
  local rps p50 p99 errs
  rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  errs="$(awk '/Non-2xx or 3xx responses:/ {print "non-2xx " $NF} /Socket errors:/ {sub(/^ *Socket errors: */, ""); print}' <<<"$out" | paste -sd';' -)"
  echo "${rps:-0}|${p50:--}|${p99:--}|${errs:-0}"
}

fs_type="$(df -T "$work" | awk 'NR==2 {print $2}')"
echo "## nodeform-controller vs nginx ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, duration $duration per run, controller threads $workers)"
echo
echo "load before: $(uptime | sed 's/.*load average: //')"
echo
echo "| scheme | connections | nodeform req/s | nodeform p50 | nodeform p99 | nginx req/s | nginx p50 | nginx p99 | ratio | errors (nodeform / nginx) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
medians=()
for scheme in http https; do
  for c in $conns; do
    if [ "$scheme" = http ]; then cu="http://127.0.0.1:18080"; nu="http://127.0.0.1:19080"; else cu="https://127.0.0.1:18443"; nu="https://127.0.0.1:19443"; fi
    ratios=()
    for run in $(seq 1 "$repeat"); do
      log "GET spec $scheme c=$c (run $run of $repeat)"
      IFS='|' read -r crps cp50 cp99 cerr <<<"$(run_wrk "$cu" "$c" "$work/spec.lua")"
      IFS='|' read -r nrps np50 np99 nerr <<<"$(run_wrk "$nu" "$c" "$work/spec.lua")"
      ratio="$(awk -v a="$crps" -v b="$nrps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
      ratios+=("$ratio")
      echo "| $scheme | $c | $crps | $cp50 | $cp99 | $nrps | $np50 | $np99 | $ratio | $cerr / $nerr |"
    done
    medians+=("| $scheme | $c | $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}') | ${ratios[*]} |")
  done
done
if [ "$repeat" -gt 1 ]; then
  echo
  echo "| scheme | connections | median ratio | ratios (run order) |"
  echo "|---|---|---|---|"
  printf '%s\n' "${medians[@]}"
fi

# 4. Durable report ingest: unique report ids, each answered 201 after its batch's COMMIT (synchronous=FULL).
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
metric() {  # BASE-URL NAME → value
  curl -sfk "$1/metrics" | awk -v n="$2" '$1 == n {printf "%.0f", $2}'
}
if [ -n "$ingest_conns" ]; then
  echo
  echo "Durable report ingest (database on $fs_type; each 201 follows the fsync of its batch):"
  echo
  echo "| scheme | connections | reports/s | p50 | p99 | reports per commit | errors |"
  echo "|---|---|---|---|---|---|---|"
  for scheme in http https; do
    if [ "$scheme" = http ]; then cu="http://127.0.0.1:18080"; else cu="https://127.0.0.1:18443"; fi
    for c in $ingest_conns; do
      log "POST reports $scheme c=$c"
      b0="$(metric "$cu" nodeform_report_commits_total)"; r0="$(metric "$cu" nodeform_report_commit_reports_total)"
      IFS='|' read -r rps p50 p99 err <<<"$(run_wrk "$cu" "$c" "$work/report.lua" "$scheme$c")"
      b1="$(metric "$cu" nodeform_report_commits_total)"; r1="$(metric "$cu" nodeform_report_commit_reports_total)"
      per="$(awk -v b="$((b1 - b0))" -v r="$((r1 - r0))" 'BEGIN { if (b > 0) printf "%.1f", r / b; else print "-" }')"
      echo "| $scheme | $c | $rps | $p50 | $p99 | $per | $err |"
    done
  done
fi
echo
echo "load after: $(uptime | sed 's/.*load average: //')"
echo "total run time: $((SECONDS - started_at)) s"
