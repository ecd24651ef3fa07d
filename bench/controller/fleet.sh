#!/usr/bin/env bash
# The fleet benchmark (docs/benchmarks.md, "Fleet"): N simulated agents, each with its own credential
# (bench/controller/fleet_sim.cpp), against one nodeform-controller on SQLite.
#
# usage: bench/controller/fleet.sh [--agents N] [--interval DURATION] [--duration DURATION]
#                                  [--controller BIN] [--sim BIN] [--threads N]
#   defaults: 10000 agents, 60s interval (their offsets spread over it), 300s, the binaries of build-release/
#   (controller) and build-dbg/ or build-test/ (fleet-sim, a test-tree tool).
# Builds a site with N nodes (posture `fleet`: node_token auth), starts the controller with TLS on loopback,
# issues the N enrollment tokens in one `token issue` call, runs fleet-sim, then prints the simulator's JSON
# summary plus the controller's CPU seconds, peak RSS and the reports it committed (from /metrics), which must
# equal the reports the simulator saw acknowledged. Progress on stderr. Exit codes: 0 ran, 1 the reports
# committed differ from the reports acknowledged, 2 usage, 4 a program did not start.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
agents=10000 interval=60s duration=300s threads=64
controller="$root/build-release/controller/nodeform-controller"
sim=""
for candidate in "$root/build-release/tests/fleet-sim" "$root/build-dbg/tests/fleet-sim" "$root/build-test/tests/fleet-sim"; do
  [ -z "$sim" ] && [ -x "$candidate" ] && sim="$candidate"
done
usage() { sed -n '2,14p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --agents) agents=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --controller) controller=$2; shift 2 ;;
    --sim) sim=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "fleet.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -x "$controller" ] || { echo "fleet.sh: no controller binary at $controller (--controller BIN)" >&2; exit 2; }
[ -n "$sim" ] && [ -x "$sim" ] || { echo "fleet.sh: no fleet-sim binary (ninja -C BUILD fleet-sim; --sim BIN)" >&2; exit 2; }
log() { echo "fleet.sh: $(date +%H:%M:%S) $*" >&2; }

work="$(mktemp -d "${BENCH_TMP:-/var/tmp}/nodeform-fleet-XXXXXX")"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
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

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log "starting the controller on 127.0.0.1:$port (TLS, SQLite, $threads workers)"
"$controller" serve --site "$work/site" --state "$work/state" --config /dev/null --listen "127.0.0.1:$port" \
  --threads "$threads" --access-log false --log-level warning > "$work/controller.out" 2> "$work/controller.err" &
cpid=$!
pids+=("$cpid")
for _ in $(seq 1 600); do grep -q "listening on" "$work/controller.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$work/controller.out" || { log "the controller did not start:"; cat "$work/controller.err" >&2; exit 4; }

log "issuing $agents enrollment tokens"
"$controller" token issue "${ids[@]}" --json --ttl 24h --site "$work/site" --state "$work/state" \
  --config /dev/null > "$work/tokens.jsonl"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_before=$(ticks "$cpid")
log "running fleet-sim: $agents agents, interval $interval, for $duration"
"$sim" --controllers "https://127.0.0.1:$port" --ca "$work/state/tls/ca.pem" --tokens "$work/tokens.jsonl" \
  --interval "$interval" --duration "$duration" > "$work/sim.json"
cpu_after=$(ticks "$cpid")
hz=$(getconf CLK_TCK)
metric() { curl -sfk "https://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n {printf "%.0f", $2}'; }
committed=$(metric nodeform_report_commit_reports_total)
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$cpid/status")
python3 - "$work/sim.json" "$committed" "$(( cpu_after - cpu_before ))" "$hz" "$rss_kib" <<'PY'
import json, sys
sim = json.load(open(sys.argv[1]))
committed, ticks, hz, rss = int(sys.argv[2] or 0), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sim["controllers_detail"] = [{"store": "sqlite", "cpu_s": ticks / hz,
                              "cpu_share_of_one_core": ticks / hz / sim["duration_s"],
                              "peak_rss_mib": round(rss / 1024, 1), "reports_committed": committed}]
sim["reports_committed"] = committed
print(json.dumps(sim, indent=2))
sys.exit(0 if committed == sim["report"]["ok"] else 1)
PY
