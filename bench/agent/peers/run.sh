#!/usr/bin/env bash
# Issue 7's peer benchmark: one desired state (60 installed packages, 10 users in one group with SSH
# keys, a sudoers drop-in, 20 files, 11 directories, 10 symlinks) converged by nodeform-agent, `puppet apply`,
# `ansible-playbook -c local` and `cf-agent`, each in its own fresh copy of a debootstrapped
# Debian 12 root: first run, then --noop-runs no-op runs; wall time and peak RSS by GNU time.
# usage: sudo bench/agent/peers/run.sh --agent PATH [--out FILE] [--work DIR] [--rootfs DIR]
#                                      [--noop-runs N] [--tools LIST] [--keep]
#   --agent      nodeform-agent from a build without sanitizers (RelWithDebInfo)
#   --out        also write the Markdown table to FILE
#   --work       work directory (default /var/tmp/nodeform-bench-peers); nothing is written elsewhere
#   --rootfs     source root (default: the test root named in /var/cache/nodeform-test/agent-rootfs.path)
#   --noop-runs  no-op runs per tool, the median is reported (default 3)
#   --tools      comma-separated subset of nodeform-chroot,nodeform-root,puppet,ansible,cfengine
#                (default: all; the harness row always runs), e.g. for a quick check of one manifest
#   --keep       keep the per-tool roots and logs of this run (default: remove the roots, keep logs)
# The base root (source + puppet, ansible-core, cfengine3 from the apt mirror) is cached in
# WORK/base-KEY and reused; every run copies it afresh for each tool. Every tool runs inside
# `unshare --mount --pid --fork` with /proc, /sys (ro) and /dev mounted in the private namespace, so
# no mount outlives its run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
agent=
out=
work=/var/tmp/nodeform-bench-peers
rootfs=
noop_runs=3
tools=nodeform-chroot,nodeform-root,puppet,ansible,cfengine
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --rootfs) rootfs=$2; shift 2 ;;
        --noop-runs) noop_runs=$2; shift 2 ;;
        --tools) tools=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$agent" ] && [ -x "$agent" ] || { echo "--agent PATH: the nodeform-agent binary (build without sanitizers)" >&2; exit 2; }
agent=$(readlink -f "$agent")
[ "$(id -u)" = 0 ] || { echo "run as root (chroot, unshare, useradd)" >&2; exit 2; }
case "$noop_runs" in ''|*[!0-9]*|0) echo "--noop-runs: a positive integer" >&2; exit 2 ;; esac
for t in ${tools//,/ }; do
    case "$t" in nodeform-chroot|nodeform-root|puppet|ansible|cfengine) ;;
        *) echo "--tools: unknown tool '$t' (nodeform-chroot, nodeform-root, puppet, ansible, cfengine)" >&2; exit 2 ;;
    esac
done
for tool in /usr/bin/time ssh-keygen unshare python3 findmnt; do
    command -v "$tool" >/dev/null || { echo "missing $tool (Debian packages: time openssh-client util-linux python3)" >&2; exit 2; }
done
if [ -z "$rootfs" ]; then
    rootfs=$(cat /var/cache/nodeform-test/agent-rootfs.path 2>/dev/null || true)
fi
[ -n "$rootfs" ] && [ -x "$rootfs/usr/bin/apt-get" ] || { echo "no debootstrapped root (run scripts/test-setup.sh or pass --rootfs)" >&2; exit 2; }
if ldd "$agent" | grep -Eq 'lib(a|ub|t)san'; then echo "$agent is built with sanitizers: use a release build" >&2; exit 2; fi
t_start=$(date +%s.%N)
load_start=$(sed 's/ [0-9]*\/.*//' /proc/loadavg)
mkdir -p "$work"
work=$(readlink -f "$work")
run=$work/run
peers_pkgs="puppet ansible-core cfengine3"

# Unmount anything still mounted under WORK (only possible if a namespace was left behind).
unmount_leftovers() {
    findmnt -rn -o TARGET | awk -v w="$work/" 'index($0, w) == 1' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
}
cleanup() {
    unmount_leftovers
    if [ "$keep" = 0 ]; then rm -rf "$run"/root-* "$work"/base-*.tmp; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap runs

# The namespace wrappers, as argv prefixes (GNU time must exec them, so no shell functions):
# ROOT CMD... runs CMD in a private mount and pid namespace with ROOT's /proc, /sys (ro), /dev
# mounted and a clean environment; in_root chroots into ROOT, on_host runs CMD from outside
# (for nodeform-agent --root).
ns_mounts='mount -t proc proc "$0/proc" && mount -t sysfs -o ro sysfs "$0/sys" && mount --bind /dev "$0/dev"'
clean_env=(/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
in_root=(unshare --mount --pid --fork -- sh -c "$ns_mounts"' && exec chroot "$0" '"${clean_env[*]}"' "$@"')
on_host=(unshare --mount --pid --fork -- sh -c "$ns_mounts"' && exec '"${clean_env[*]}"' "$@"')
in_root() { "${in_root[@]}" "$@"; }

# --- base root: the test root plus the three peers, cached by source root and peer list ---
key=$(printf '%s %s' "$(readlink -f "$rootfs")" "$peers_pkgs" | sha256sum | cut -c1-12)
base=$work/base-$key
if [ ! -f "$base/.nodeform-bench-ready" ]; then
    echo "== preparing $base (copy of $rootfs + $peers_pkgs from the apt mirror)"
    rm -rf "$base.tmp" "$base"
    cp -a "$rootfs" "$base.tmp"
    in_root "$base.tmp" apt-get update -qq
    in_root "$base.tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $peers_pkgs > "$work/prepare-apt.log" 2>&1 || { echo "apt-get install failed: $work/prepare-apt.log" >&2; exit 4; }
    in_root "$base.tmp" apt-get clean
    # CFEngine's apt package module ships as a template in masterfiles; the policy uses it directly.
    install -D -m 0755 "$base.tmp/usr/share/cfengine3/masterfiles/modules/packages/vendored/apt_get.mustache" \
        "$base.tmp/var/lib/cfengine3/modules/packages/apt_get"
    touch "$base.tmp/.nodeform-bench-ready"
    mv "$base.tmp" "$base"
fi

# --- desired state, written once for all tools ---
rm -rf "$run"
mkdir -p "$run/keys" "$run/inputs" "$run/logs"
for i in 01 02 03 04 05 06 07 08 09 10; do
    ssh-keygen -q -t ed25519 -N '' -C "bench$i@nodeform-bench" -f "$run/keys/bench$i"
    rm -f "$run/keys/bench$i"  # only the public key is needed
done
python3 "$here/gen_state.py" "$run/inputs" "$run/keys" "$here/packages.txt"
# Refuse a package list the root does not already have: the package step must be a check for all.
python3 "$here/verify_state.py" "$base" "$run/inputs/state.json" 2>/dev/null | grep -q 'package .* not installed' &&
    { echo "packages.txt names a package that $base does not have installed" >&2; exit 3; }

# --- one tool: fresh root, first run, no-op runs, verification ---
results=$run/results.tsv
: > "$results"
# measure TOOL LABEL CMD...: one timed run; appends "wall_s rss_kib rc" to $run/logs/TOOL.times
measure() {
    local tool=$1 label=$2; shift 2
    local rc=0 t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$run/logs/$tool-$label.time" "$@" > "$run/logs/$tool-$label.log" 2>&1 || rc=$?
    t1=$(date +%s%N)
    # wall time in ns from date (GNU time's %e has 10 ms resolution); RSS from GNU time
    echo "$(( (t1 - t0) / 1000 ))e-6 $(tail -1 "$run/logs/$tool-$label.time") $rc" >> "$run/logs/$tool.times"
}
# noop_clean TOOL LOG: did the run change nothing? (each tool's own report)
noop_clean() {
    local tool=$1 log=$2 rc=$3
    case "$tool" in
        nodeform-*) python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["counts"].get("changed",0)==0 and r["counts"].get("failed",0)==0 else 1)' "$log" 2>/dev/null ;;
        puppet) [ "$rc" = 0 ] ;;  # --detailed-exitcodes: 0 = no changes, no failures
        ansible) grep -Eq 'changed=0 +unreachable=0 +failed=0' "$log" ;;
        cfengine) ! grep -Eq '(^| )(info|error):' "$log" ;;  # -I prints every repair as info:
        baseline) true ;;
    esac
}
bench_tool() {
    local tool=$1 version=$2; shift 2
    [ "$tool" = baseline ] || [[ ",$tools," == *",$tool,"* ]] || return 0
    local r=$run/root-$tool
    echo "== $tool ($version)"
    cp -a "$base" "$r"
    mkdir -p "$r/opt/bench"
    cp "$run/inputs/"* "$r/opt/bench/"
    chmod 0600 "$r/opt/bench/policy.cf"  # cf-agent refuses policy others can write
    cp "$agent" "$r/opt/bench/nodeform-agent"
    # Shared libraries the agent needs that the root lacks (found by ldd), for the chrooted run.
    mkdir -p "$r/opt/bench/lib"
    ldd "$agent" | awk '/=> \// {print $3}' | while read -r lib; do
        [ -e "$r$lib" ] || cp -L "$lib" "$r/opt/bench/lib/"
    done
    # Write the fresh copy back to disk now: otherwise its dirty pages are flushed by the first fsync of
    # the measured run (useradd, file writes), which made first runs 10x slower at random.
    sync
    local cmd=("$@")
    # "@ROOT@" in the command stands for this tool's root
    cmd=("${cmd[@]//@ROOT@/$r}")
    measure "$tool" first "${cmd[@]}"
    local i first_rc
    first_rc=$(awk 'NR==1 {print $3}' "$run/logs/$tool.times")
    local clean=yes
    for i in $(seq 1 "$noop_runs"); do
        measure "$tool" "noop$i" "${cmd[@]}"
        noop_clean "$tool" "$run/logs/$tool-noop$i.log" "$(awk -v n=$((i + 1)) 'NR==n {print $3}' "$run/logs/$tool.times")" || clean=no
    done
    local verified=ok
    if [ "$tool" != baseline ]; then
        verified=$(python3 "$here/verify_state.py" "$r" "$run/inputs/state.json" || true)
    fi
    python3 - "$run/logs/$tool.times" "$tool" "$version" "$first_rc" "$clean" "$verified" >> "$results" <<'PY'
import statistics, sys
times, tool, version, first_rc, clean, verified = sys.argv[1:]
rows = [l.split() for l in open(times) if l.strip()]
first = rows[0]
noop = rows[1:]
wall = statistics.median(float(r[0]) for r in noop)
rss = max(int(r[1]) for r in rows) / 1024
print("\t".join([tool, version, f"{float(first[0]):.3f}", f"{wall:.3f}", f"{rss:.1f}", first_rc, clean, verified.replace("\t", " ")]))
PY
    [ "$keep" = 1 ] || rm -rf "$r"
}

agent_version=$("$agent" --version 2>/dev/null | head -1 | awk '{print $NF}')
ver() { in_root "$base" "$@" 2>/dev/null | head -1; }
puppet_version=$(ver puppet --version)
ansible_version=$(ver ansible-playbook --version | sed -n 's/.*core \([0-9.]*\).*/\1/p')
cf_version=$(ver cf-agent --version | awk '{print $NF}')

# The cost of the harness itself (unshare + mounts + chroot + env), included in every row.
bench_tool baseline "—" "${in_root[@]}" @ROOT@ /bin/true
bench_tool nodeform-chroot "$agent_version" "${in_root[@]}" @ROOT@ env LD_LIBRARY_PATH=/opt/bench/lib /opt/bench/nodeform-agent apply \
    --spec /opt/bench/nodeform-spec.json --json --no-report
bench_tool nodeform-root "$agent_version" "${on_host[@]}" @ROOT@ "$agent" apply \
    --spec @ROOT@/opt/bench/nodeform-spec.json --root @ROOT@ --json --no-report
bench_tool puppet "$puppet_version" "${in_root[@]}" @ROOT@ puppet apply --detailed-exitcodes /opt/bench/site.pp
bench_tool ansible "$ansible_version" "${in_root[@]}" @ROOT@ ansible-playbook -c local -i localhost, /opt/bench/playbook.yml
bench_tool cfengine "$cf_version" "${in_root[@]}" @ROOT@ cf-agent -K -I -f /opt/bench/policy.cf

total=$(python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.0f}')" "$t_start")
python3 - "$results" "$noop_runs" "$total" "$load_start" "$(sed 's/ [0-9]*\/.*//' /proc/loadavg)" "$(nproc)" \
    > "$run/table.md" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
n, total, load0, load, cores = sys.argv[2:]
by = {r[0]: r for r in rows}
ref = by.get("nodeform-chroot")
base = float(by["baseline"][3]) if "baseline" in by else 0.0
names = {"baseline": "harness only (unshare + chroot `/bin/true`)", "nodeform-chroot": "nodeform-agent apply (chrooted)",
         "nodeform-root": "nodeform-agent apply --root (from outside)", "puppet": "puppet apply",
         "ansible": "ansible-playbook -c local", "cfengine": "cf-agent -K"}
print(f"| tool | version | first run s | no-op run s (median of {n}) | no-op − harness s | peak RSS MiB "
      "| first ÷ nodeform | no-op ÷ nodeform | first exit | no-op changed nothing | end state |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    tool, version, first, noop, rss, rc, clean, verified = r
    if ref and tool not in ("baseline", "nodeform-chroot", "nodeform-root"):
        ratios = (f"{float(first) / max(float(ref[2]), 1e-3):.1f}×", f"{float(noop) / max(float(ref[3]), 1e-3):.0f}×")
    else:
        ratios = ("—", "—")
    net = "—" if tool == "baseline" else f"{float(noop) - base:.3f}"
    print(f"| {names.get(tool, tool)} | {version} | {float(first):.3f} | {float(noop):.3f} | {net} | {rss} "
          f"| {ratios[0]} | {ratios[1]} | {rc} | {clean} | {verified} |")
print()
print(f"Total run time {total} s; load average (1/5/15 min) {load0} at the start, {load} at the end ({cores} cores). Peak RSS = GNU time %M: the "
      "largest single process of the run's tree (not the sum of the tree).")
PY
cat "$run/table.md"
[ -z "$out" ] || cp "$run/table.md" "$out"
echo "logs: $run/logs"
