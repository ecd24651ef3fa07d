#!/usr/bin/env bash
# Drift in a second (issue 16): how long from a change to a managed file until `nodeform-agent run` has spooled
# the report naming it and repaired the file, and what the watching costs while nothing happens.
#   A. latency: CHANGES hand edits (one of 20 managed files each, plain open+write like `echo >`), 0.5 s apart;
#      change -> report spooled, change -> file repaired (median, p90, max);
#   B. idle: the daemon's CPU (utime+stime of /proc/PID/stat, and its children's) over IDLE seconds with nothing
#      changing (the next scheduled turn is an hour away), and its RSS.
# The agent converges an offline root from a spec file (--root, --spec): no controller, reports stay spooled;
# the unit state check (live systems only) is not part of it.
# usage: bench/agent/watch_latency.sh --agent BIN [--changes N] [--idle S]
# Use a build without sanitizers (cmake -DNODEFORM_SANITIZE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo).
set -euo pipefail
agent=
changes=20
idle=600
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent=$2; shift 2 ;;
        --changes) changes=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$agent" ] || { echo "--agent BIN: the nodeform-agent binary (non-sanitized build)" >&2; exit 2; }
work=$(mktemp -d /tmp/nodeform-watch-bench.XXXXXX)
apid=
cleanup() { [ -n "$apid" ] && kill "$apid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
root=$work/root
mkdir -p "$root/etc/bench"
echo 'root:x:0:0:root:/root:/bin/bash' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
python3 - "$work/spec.json" <<'PY'
import json, sys
files = [{"path": f"/etc/bench/file{i:02d}.conf", "content": f"value={i}\n" * 20, "mode": "0644"} for i in range(20)]
spec = {"schema_version": 1, "identity": "bench-01", "files": files, "health": [],
        "apply": {"trigger": "schedule", "interval_s": 3600, "splay_s": 0, "drift": "remediate"}}
json.dump(spec, open(sys.argv[1], "w"))
PY
spool=$root/var/lib/nodeform/spool
"$agent" run --config /dev/null --spec "$work/spec.json" --root "$root" --splay 0ms --interval 1h --log-level warning \
    2> "$work/agent.log" &
apid=$!
for _ in $(seq 1 200); do [ -f "$root/var/lib/nodeform/platform-ready" ] && break; sleep 0.05; done
sleep 1
clk=$(getconf CLK_TCK)
echo "agent: $("$agent" --version 2>/dev/null | head -1), pid $apid; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== A: $changes changes -> report spooled, -> file repaired"
python3 - "$root" "$spool" "$changes" <<'PY'
import os, sys, time
root, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def entries():
    return sum(1 for e in os.listdir(spool) if e.endswith(".json"))
report, repair = [], []
for i in range(n):
    path = f"{root}/etc/bench/file{i % 20:02d}.conf"
    want = open(path).read()
    before = entries()
    t0 = time.monotonic()
    with open(path, "w") as f:
        f.write("hand edit\n")
    t_report = t_repair = None
    while time.monotonic() - t0 < 10 and (t_report is None or t_repair is None):
        now = time.monotonic()
        if t_repair is None and open(path).read() == want:
            t_repair = now - t0
        if t_report is None and entries() > before:
            t_report = now - t0
        time.sleep(0.001)
    report.append(t_report if t_report is not None else float("inf"))
    repair.append(t_repair if t_repair is not None else float("inf"))
    time.sleep(0.5)
def stats(xs):
    xs = sorted(xs)
    return (f"median {1000*xs[len(xs)//2]:.0f} ms, p90 {1000*xs[min(len(xs)-1, int(len(xs)*0.9))]:.0f} ms, "
            f"max {1000*xs[-1]:.0f} ms")
print(f"  change -> report spooled: {stats(report)}")
print(f"  change -> file repaired:  {stats(repair)}")
PY
sleep 2
echo "== B: idle, nothing changing, for $idle s"
read -r u0 s0 cu0 cs0 < <(awk '{print $14, $15, $16, $17}' "/proc/$apid/stat")
t0=$(date +%s.%N)
sleep "$idle"
read -r u1 s1 cu1 cs1 < <(awk '{print $14, $15, $16, $17}' "/proc/$apid/stat")
t1=$(date +%s.%N)
python3 - "$t0" "$t1" "$u0" "$s0" "$u1" "$s1" "$cu0" "$cs0" "$cu1" "$cs1" "$clk" <<'PY'
import sys
t0, t1, u0, s0, u1, s1, cu0, cs0, cu1, cs1, clk = map(float, sys.argv[1:])
ticks = (u1 + s1) - (u0 + s0)
print(f"  daemon CPU: {ticks:.0f} ticks of 1/{clk:.0f} s in {t1 - t0:.0f} s = {100 * ticks / clk / (t1 - t0):.3f}% of one core;"
      f" children: {(cu1 + cs1) - (cu0 + cs0):.0f} ticks")
PY
awk '/^Rss:/{r=$2} /^Pss:/{p=$2} /^Anonymous:/{a=$2} END{printf "  RSS %.1f MiB = anonymous %.1f MiB + file-backed %.1f MiB; PSS %.1f MiB\n", r/1024, a/1024, (r-a)/1024, p/1024}' "/proc/$apid/smaps_rollup"
echo "  turns: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["turns"])' "$root/var/lib/nodeform/daemon.json" 2>/dev/null || echo '?') (1 scheduled + 1 per change)"
kill -TERM "$apid"; wait "$apid" || true; apid=
