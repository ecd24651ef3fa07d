#!/usr/bin/env bash
# Footprint of `nodeform-agent run` against a live controller on loopback: the real `nodeform-controller serve`
# with TLS (--controller BIN; a generated site with node bench-01), or bench/agent/fake_controller.py (plain HTTP):
#   A. RSS and CPU over DURATION seconds with a 1 s interval (issue: 10 minutes);
#   B. RSS after TURNS turns (issue: 10,000) at a short interval, sampled along the way;
#   C. optional peers: idle RSS/CPU of puppet agent and cf-execd daemons, when installed.
# usage: bench/agent/daemon_footprint.sh --agent BIN [--controller BIN] [--duration S] [--turns N] [--fast-interval DUR] [--peers|--peers-only]
# Use a build without sanitizers (cmake -DNODEFORM_SANITIZE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
agent=${AGENT:-}
controller=
duration=600
turns=10000
fast=20ms
peers=0
peers_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent=$2; shift 2 ;;
        --controller) controller=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --turns) turns=$2; shift 2 ;;
        --fast-interval) fast=$2; shift 2 ;;
        --peers) peers=1; shift ;;
        --peers-only) peers=1; peers_only=1; shift ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$agent" ] || { echo "--agent BIN: the nodeform-agent binary (non-sanitized build)" >&2; exit 2; }
work=$(mktemp -d /tmp/nodeform-daemon-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
root=$work/root
mkdir -p "$root/etc"
echo 'root:x:0:0:root:/root:/bin/bash' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
# 20 files and two health checks: a small but real sustain turn (refetch -> 304, check 20 files, report).
python3 - "$work/spec.json" <<'PY'
import json, sys
files = [{"path": f"/etc/bench/file{i:02d}.conf", "content": f"value={i}\n" * 20, "mode": "0644"} for i in range(20)]
spec = {"schema_version": 1, "identity": "bench-01", "files": files,
        "health": [{"name": "true", "type": "command", "argv": ["/bin/true"], "interval_s": 5, "timeout_s": 5},
                   {"name": "disk", "type": "disk_free", "path": "/", "min_free_percent": 1, "interval_s": 5, "timeout_s": 5}],
        "apply": {"trigger": "schedule", "interval_s": 1, "splay_s": 0, "drift": "remediate"}}
json.dump(spec, open(sys.argv[1], "w"))
PY
mkdir -p "$root/etc/bench"
if [ -n "$controller" ]; then
    # The same desired state as a site: examples/site plus a posture and a spec for bench-01.
    site=$work/site
    cp -a "$here/../../examples/site" "$site"
    cat > "$site/postures/bench.yaml" <<'YAML'
description: Footprint benchmark on loopback.
auth:
  method: network
  allowed_cidrs: [127.0.0.0/8]
YAML
    python3 - "$site/specs/bench.yaml" <<'PY'
import json, sys
files = [{"path": f"/etc/bench/file{i:02d}.conf", "content": f"value={i}\n" * 20, "mode": "0644"} for i in range(20)]
spec = {"schema_version": 1, "access": {"posture": "bench"}, "platform": {"files": files},
        "health": [{"name": "true", "type": "command", "argv": ["/bin/true"], "interval": "5s", "timeout": "5s"},
                   {"name": "disk", "type": "disk_free", "path": "/", "min_free_percent": 1, "interval": "5s", "timeout": "5s"}],
        "apply": {"trigger": "schedule", "interval": "1m", "splay": "0s", "drift": "remediate"}}
json.dump(spec, open(sys.argv[1], "w"), indent=1)  # JSON is YAML
PY
    sed -e 's/^spec: demo/spec: bench/' "$site/nodes/demo-01.yaml" > "$site/nodes/bench-01.yaml"
    # The site's time zone must exist in the root, or every run fails there and the node never becomes
    # platform-ready (it would retry with backoff instead of turning at the interval).
    tz=$(sed -n 's/^[[:space:]]*timezone:[[:space:]]*//p' "$site/site.yaml" | head -n 1)
    mkdir -p "$root/usr/share/zoneinfo/$(dirname "${tz:-Etc/UTC}")"
    printf 'TZif2 bench zone\n' > "$root/usr/share/zoneinfo/${tz:-Etc/UTC}"
    "$controller" validate --site "$site" >/dev/null
    "$controller" serve --site "$site" --state "$work/state" --listen "127.0.0.1:$port" --access-log false \
        > "$work/controller.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        [ -f "$work/state/tls/ca.pem" ] && curl -fsS --cacert "$work/state/tls/ca.pem" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    fingerprint=$(openssl x509 -in "$work/state/tls/ca.pem" -outform DER | sha256sum | cut -d' ' -f1)
    url=https://127.0.0.1:$port
    echo "controller: $("$controller" --version 2>/dev/null || echo nodeform-controller) on $url (TLS, SQLite state)"
else
    python3 "$here/fake_controller.py" "$port" "$work/spec.json" "$work/controller-stats.json" &
    pids+=($!)
    sleep 0.5
    fingerprint=5d41402abc4b2a76b9719d911017c592ae2f5d6d0d1f8b2f8c7b7a1f0e9d8c7b
    url=http://127.0.0.1:$port
    echo "controller: bench/agent/fake_controller.py on $url"
fi
cat > "$work/seed.yaml" <<SEED
identity: bench-01
controller_url: $url
token: bench-token-0123456789
ca_fingerprint: $fingerprint
SEED
clk=$(getconf CLK_TCK)
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# RSS split into private anonymous memory and file-backed pages (shared libraries), plus PSS.
breakdown() { awk '/^Rss:/{r=$2} /^Pss:/{p=$2} /^Anonymous:/{a=$2} END{printf "RSS %.1f MiB = anonymous %.1f MiB + file-backed %.1f MiB (binary and shared libraries); PSS %.1f MiB\n", r/1024, a/1024, (r-a)/1024, p/1024}' "/proc/$1/smaps_rollup"; }
libs() { awk '/^[0-9a-f]/{n=$6} /^Rss/{if(n!="")r[n]+=$2} END{for(k in r) if(r[k]>=256) printf "%s %.1f MiB; ", k, r[k]/1024}' "/proc/$1/smaps" | sed 's|/usr/lib/x86_64-linux-gnu/||g'; echo; }
spooled() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("spooled",0), "spooled,", d.get("spool_dropped",0), "dropped")' "$root/var/lib/nodeform/daemon.json" 2>/dev/null || echo "? spooled"; }
turns_done() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("turns",0))' "$root/var/lib/nodeform/daemon.json" 2>/dev/null || echo 0; }

if [ "$peers_only" = 0 ]; then
echo "== A: ${duration}s at a 1 s interval"
"$agent" run --config /dev/null --seed "$work/seed.yaml" --root "$root" --splay 0ms --interval 1s --log-level warning \
    2> "$work/agent-a.log" &
apid=$!; pids+=($apid)
sleep 5   # first converge, enrollment
t0_ticks=$(cpu_ticks $apid); t0=$(date +%s.%N); turns0=$(turns_done)
min=999999; max=0
end=$(( $(date +%s) + duration ))
while [ "$(date +%s)" -lt "$end" ]; do
    r=$(rss_kib $apid); [ "$r" -lt "$min" ] && min=$r; [ "$r" -gt "$max" ] && max=$r
    sleep 5
done
t1_ticks=$(cpu_ticks $apid); t1=$(date +%s.%N); turns1=$(turns_done)
python3 - "$t0" "$t1" "$t0_ticks" "$t1_ticks" "$clk" "$turns0" "$turns1" "$min" "$max" "$(hwm_kib $apid)" <<'PY'
import sys
t0, t1, c0, c1, clk, n0, n1, mn, mx, hwm = map(float, sys.argv[1:])
wall, cpu = t1 - t0, (c1 - c0) / clk
turns = n1 - n0
print(f"  turns: {turns:.0f} in {wall:.0f} s; CPU {cpu:.2f} s = {100*cpu/wall:.2f}% of one core; "
      f"{1000*cpu/max(turns,1):.1f} ms CPU per turn")
print(f"  RSS min {mn/1024:.1f} MiB, max {mx/1024:.1f} MiB, peak (VmHWM) {hwm/1024:.1f} MiB")
PY
echo "  $(breakdown $apid)"
echo "  largest mappings: $(libs $apid)"
kill -TERM $apid; wait $apid || true

echo "== A': CPU between runs (interval 1h, after the first run): 60 s idle"
rm -rf "$root/var/lib/nodeform/daemon.json"
"$agent" run --config /dev/null --seed "$work/seed.yaml" --root "$root" --splay 0ms --interval 1h --log-level warning \
    2> "$work/agent-idle.log" &
ipid=$!; pids+=($ipid)
sleep 5
i0=$(cpu_ticks $ipid); sleep 60; i1=$(cpu_ticks $ipid)
echo "  idle CPU over 60 s: $(( i1 - i0 )) ticks of 1/$clk s (health checks every 5 s included); RSS $(( $(rss_kib $ipid) / 1024 )) MiB"
kill -TERM $ipid; wait $ipid || true

echo "== B: RSS over $turns turns at --interval $fast"
"$agent" run --config /dev/null --seed "$work/seed.yaml" --root "$root" --splay 0ms --interval "$fast" --max-turns "$turns" \
    --log-level warning 2> "$work/agent-b.log" &
bpid=$!; pids+=($bpid)
b0=$(date +%s)
next=100
while kill -0 $bpid 2>/dev/null; do
    n=$(turns_done)
    if [ "$n" -ge "$next" ] && kill -0 $bpid 2>/dev/null; then
        echo "  after $n turns: $(breakdown $bpid); peak $(hwm_kib $bpid) KiB, CPU $(( $(cpu_ticks $bpid) / clk )) s; $(spooled)"
        next=$(( next * 2 > turns ? turns : next * 2 ))
        [ "$n" -ge "$turns" ] && next=$(( turns + 1 ))
    fi
    # sample just before the last turn ends
    if [ "$n" -ge $(( turns - 50 )) ] && [ "$next" -le "$turns" ]; then
        echo "  after $n turns: $(breakdown $bpid); peak $(hwm_kib $bpid) KiB; $(spooled)"
        next=$(( turns + 1 ))
    fi
    sleep 0.2
done
wait $bpid || true
if [ -n "$controller" ]; then
    stored=$("$controller" node show bench-01 --state "$work/state" --site "$work/site" 2>/dev/null | awk '/^reports:/ {print $2}')
    echo "  $turns turns in $(( $(date +%s) - b0 )) s; controller reports stored for bench-01: $stored"
else
    echo "  $turns turns in $(( $(date +%s) - b0 )) s; controller: $(cat "$work/controller-stats.json")"
fi

fi

if [ "$peers" = 1 ]; then
    echo "== C: peers' daemons, idle RSS after 60 s"
    # idle_peer PID NAME LOG: a peer daemon's RSS and CPU after 60 s idle, then it is stopped.
    idle_peer() {
        pids+=("$1"); sleep 60
        if kill -0 "$1" 2>/dev/null; then
            echo "  $2: RSS $(( $(rss_kib "$1") / 1024 )) MiB, CPU $(( $(cpu_ticks "$1") / clk )) s in 60 s"
        else
            echo "  ${2%% (*}: exited (see $3)"
        fi
        kill "$1" || true
    }
    if command -v puppet >/dev/null; then
        # No puppet server here: the daemon stays up, waiting for its certificate (retrying every 10 s).
        puppet agent --no-daemonize --server 127.0.0.1 --masterport 1 --waitforcert 10 --runinterval 60 \
            --vardir "$work/puppet-var" --confdir "$work/puppet-conf" --logdest "$work/puppet.log" &
        idle_peer $! "puppet agent (daemon, waiting for a server)" "$work/puppet.log"
    else
        echo "  puppet: not installed"
    fi
    if command -v cf-execd >/dev/null; then
        cf-execd --no-fork --inform >"$work/cf-execd.log" 2>&1 &
        idle_peer $! "cf-execd (idle between its 5-minute cf-agent runs)" "$work/cf-execd.log"
    else
        echo "  cf-execd: not installed"
    fi
fi
