#!/bin/sh
# Provisioning overhead against the Proxmox VE stand-in: 20 nodes in parallel with fixed task durations.
# usage: bench/provisioning/run.sh [BUILD_DIR]   (needs the provisioning-bench target built)
# Prints one line per run: wall time / critical path (goal <= 1.1) and API calls per node.
set -eu
build=${1:-build}
bin="$build/tests/provisioning-bench"
[ -x "$bin" ] || { echo "build it first: ninja -C $build provisioning-bench (a tree configured with -DNODEFORM_BUILD_TESTS=ON)" >&2; exit 2; }
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
# clone 8 s, resize 1 s, start 1 s, boot (until the guest agent answers) 10 s: critical path 20 s.
"$bin" --nodes 20 --parallel 20 --clone-ms 8000 --resize-ms 1000 --start-ms 1000 --boot-ms 10000
# The same with short tasks: the fixed costs (gates, polling granularity) weigh more.
"$bin" --nodes 20 --parallel 20 --clone-ms 2000 --resize-ms 500 --start-ms 500 --boot-ms 2000
