#!/usr/bin/env bash
# The fleet benchmark (docs/benchmarks.md, "Fleet"): N simulated agents, each with its own credential
# (bench/controller/fleet_sim.cpp), against one controller on SQLite or K controllers sharing one PostgreSQL.
#
# usage: bench/controller/fleet.sh [--agents N] [--interval DURATION] [--duration DURATION]
#                                  [--store sqlite|postgresql] [--controllers K]
#                                  [--controller BIN] [--sim BIN] [--threads N]
#   defaults: 10000 agents, 60s interval (their offsets spread over it), 300s, sqlite, 1 controller, the
#   binaries of build-release/ (controller) and build-dbg/ or build-test/ (fleet-sim, a test-tree tool).
# Builds a site with N nodes (posture `fleet`: node_token auth), starts the controller(s) with TLS on loopback
# (with postgresql: a throwaway PostgreSQL 15 cluster from scripts/test-postgres.sh, the controllers sharing it
# and one state directory, so one CA), issues the N enrollment tokens in one `token issue` call, runs fleet-sim
# (turns spread over the controllers as a load balancer would), then prints the simulator's JSON summary plus
# each controller's CPU seconds, peak RSS and reports committed (from /metrics), PostgreSQL's CPU, and checks
# that the reports committed equal the reports acknowledged. Progress on stderr. Exit codes: 0 ran, 1 the
# reports committed differ from the reports acknowledged, 2 usage, 4 a program did not start.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
agents=10000 interval=60s duration=300s threads=64 store=sqlite count=1
controller="$root/build-release/controller/nodeform-controller"
sim=""
for candidate in "$root/build-release/tests/fleet-sim" "$root/build-dbg/tests/fleet-sim" "$root/build-test/tests/fleet-sim"; do
  [ -z "$sim" ] && [ -x "$candidate" ] && sim="$candidate"
done
usage() { sed -n '2,17p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --agents) agents=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --controller) controller=$2; shift 2 ;;
    --sim) sim=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --store) store=$2; shift 2 ;;
    --controllers) count=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "fleet.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -x "$controller" ] || { echo "fleet.sh: no controller binary at $controller (--controller BIN)" >&2; exit 2; }
[ -n "$sim" ] && [ -x "$sim" ] || { echo "fleet.sh: no fleet-sim binary (ninja -C BUILD fleet-sim; --sim BIN)" >&2; exit 2; }
log() { echo "fleet.sh: $(date +%H:%M:%S) $*" >&2; }

case "$store" in sqlite) [ "$count" = 1 ] || { echo "fleet.sh: SQLite serves one controller" >&2; exit 2; } ;;
  postgresql) ;; *) echo "fleet.sh: --store sqlite|postgresql" >&2; exit 2 ;; esac

work="$(mktemp -d "${BENCH_TMP:-/var/tmp}/nodeform-fleet-XXXXXX")"
chmod 755 "$work"  # the PostgreSQL server (user postgres) keeps its socket under it
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$store" = postgresql ] && "$root/scripts/test-postgres.sh" stop "$work/pg" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "a site with $agents nodes (posture fleet: node_token)"
cp -r "$root/examples/site" "$work/site"
printf 'description: Simulated fleet (bench/controller/fleet.sh).\nauth:\n  method: node_token\n' \
  > "$work/site/postures/fleet.yaml"
sed -e 's/posture: dev/posture: fleet/' "$root/examples/site/specs/demo.yaml" > "$work/site/specs/fleet.yaml"
ids=()
for i in $(seq -f %05g 1 "$agents"); do
  sed -e '/^\s*vmid:/d' -e 's/^spec: demo/spec: fleet/' "$root/examples/site/nodes/demo-01.yaml" \
    > "$work/site/nodes/fleet-$i.yaml"
  ids+=("fleet-$i")
done
"$controller" validate --site "$work/site" >/dev/null

store_args=()
if [ "$store" = postgresql ]; then
  log "starting PostgreSQL 15 (scripts/test-postgres.sh, unix socket in $work/pg)"
  "$root/scripts/test-postgres.sh" start "$work/pg"
  psql -X -q -h "$work/pg" -U nodeform -d postgres -c "CREATE DATABASE fleet" >/dev/null
  store_args=(--store "postgresql:///fleet?host=$work/pg&user=nodeform")
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=() cpids=() urls=()
for k in $(seq 1 "$count"); do
  port=$(free_port)
  log "starting controller $k on 127.0.0.1:$port (TLS, $store, $threads workers)"
  "$controller" serve --site "$work/site" --state "$work/state" --config /dev/null --listen "127.0.0.1:$port" \
    --threads "$threads" --access-log false --log-level warning "${store_args[@]}" \
    > "$work/controller-$k.out" 2> "$work/controller-$k.err" &
  cpids+=($!) pids+=($!) ports+=("$port") urls+=("https://127.0.0.1:$port")
  for _ in $(seq 1 600); do grep -q "listening on" "$work/controller-$k.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$work/controller-$k.out" || { log "controller $k did not start:"; cat "$work/controller-$k.err" >&2; exit 4; }
done

log "issuing $agents enrollment tokens"
"$controller" token issue "${ids[@]}" --json --ttl 24h --site "$work/site" --state "$work/state" \
  --config /dev/null "${store_args[@]}" > "$work/tokens.jsonl"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pg_ticks() {  # CPU of every process of the cluster (postmaster and backends), in ticks
  local total=0 p
  for p in $(pgrep -u postgres 2>/dev/null); do total=$(( total + $(ticks "$p" 2>/dev/null || echo 0) )); done
  echo "$total"
}
before=() ; for c in "${cpids[@]}"; do before+=("$(ticks "$c")"); done
pg_before=$(pg_ticks)
log "running fleet-sim: $agents agents, interval $interval, for $duration, over $count controller(s)"
"$sim" --controllers "$(IFS=,; echo "${urls[*]}")" --ca "$work/state/tls/ca.pem" --tokens "$work/tokens.jsonl" \
  --interval "$interval" --duration "$duration" > "$work/sim.json"
pg_after=$(pg_ticks)
metric() { curl -sfk "https://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {printf "%.0f", $2}'; }
detail="$work/controllers.txt"
: > "$detail"
for k in $(seq 0 $(( count - 1 ))); do
  c=${cpids[$k]}
  echo "$(( $(ticks "$c") - ${before[$k]} )) $(awk '/VmHWM/ {print $2}' "/proc/$c/status") $(metric "${ports[$k]}" nodeform_report_commit_reports_total)" >> "$detail"
done
python3 - "$work/sim.json" "$detail" "$(getconf CLK_TCK)" "$store" "$(( pg_after - pg_before ))" <<'PY'
import json, sys
sim = json.load(open(sys.argv[1]))
hz, store, pg = int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
controllers, committed = [], 0
for line in open(sys.argv[2]):
    ticks, rss, reports = (line.split() + ["0", "0", "0"])[:3]
    committed += int(reports or 0)
    controllers.append({"store": store, "cpu_s": int(ticks) / hz,
                        "cpu_share_of_one_core": round(int(ticks) / hz / sim["duration_s"], 4),
                        "peak_rss_mib": round(int(rss) / 1024, 1), "reports_committed": int(reports or 0)})
sim["controllers_detail"] = controllers
sim["reports_committed"] = committed
if store == "postgresql":
    sim["postgresql_cpu_s"] = pg / hz
print(json.dumps(sim, indent=2))
sys.exit(0 if committed == sim["report"]["ok"] else 1)
PY
