#!/bin/sh
# Regenerates the "Transcript against the stand-in" of docs/provisioning.md: pve-standin (process form) and the
# real nodeform-controller on examples/site. Prints Markdown-ready text on stdout; secrets are shown as "…".
# usage: bench/provisioning/transcript.sh [BUILD_DIR]   (needs nodeform-controller and pve-standin built)
set -eu
build=${1:-build}
src=$(cd "$(dirname "$0")/../.." && pwd)
ctl="$build/controller/nodeform-controller"
standin="$build/tests/pve-standin"
for b in "$ctl" "$standin"; do
    [ -x "$b" ] || { echo "build it first: ninja -C $build nodeform-controller pve-standin" >&2; exit 2; }
done
secret=00000000-fake-4000-8000-000000000000 # examples/site/secrets.yaml (fake)
port=${PORT:-18006}
fp=5d41402abc4b2a76b9719d911017c592ae2f5d6d0d1f8b2f8c7b7a1f0e9d8c7b
STATE=$(mktemp -d)
log=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$STATE" "$log"' EXIT INT TERM
cd "$src"
"$standin" --port "$port" --token-id 'nodeform@pve!controller' --token-secret "$secret" --nodes pve1,pve2,pve3 \
    --storages local,local-lvm,ceph-vm --bridges vmbr0,vmbr1 --template pve1:9000:debian12-tmpl,pve3:9001:debian12-db-tmpl \
    --task-ms qmclone=3000,resize=400,qmstart=800,qmshutdown=1500,qmdestroy=600,vzdump=2500 --boot-ms 3000 >"$log" 2>&1 &
pid=$!
sleep 1
echo "\$ pve-standin --port $port --token-id 'nodeform@pve!controller' --token-secret … --nodes pve1,pve2,pve3 \\"
echo "    --storages local,local-lvm,ceph-vm --bridges vmbr0,vmbr1 --template pve1:9000:debian12-tmpl,pve3:9001:debian12-db-tmpl \\"
echo "    --task-ms qmclone=3000,resize=400,qmstart=800,qmshutdown=1500,qmdestroy=600,vzdump=2500 --boot-ms 3000 &"
cat "$log"
# run WORDS...: prints the command as typed (with $STATE), its output and its exit code.
run() {
    shown=$(printf '%s ' "$@" | sed "s|$STATE|\$STATE|g")
    echo
    echo "\$ nodeform-controller ${shown% }"
    out=$(mktemp)
    set +e
    "$ctl" "$@" >"$out" 2>&1
    rc=$?
    set -e
    sed "s|$STATE|\$STATE|g; s|$secret|…|g" "$out"
    rm -f "$out"
    echo "[exit $rc]"
}
# The cloned step's receipt as JSON (needs jq).
receipt_json() {
    echo
    echo "\$ nodeform-controller node receipts web-01 --json --state \$STATE | jq '.[1]'"
    "$ctl" node receipts web-01 --json --state "$STATE" | jq '.[1]'
}
lab="--site examples/site --state $STATE --endpoint pve-lab=http://127.0.0.1:$port --ca-fingerprint $fp"
# shellcheck disable=SC2086
{
    run node plan web-01 $lab
    run node plan web-02 $lab
    run node create web-01 demo-01 mon-01 --parallel 3 --report-timeout 5s $lab
    run node list --site examples/site --state "$STATE"
    run node show web-01 --site examples/site --state "$STATE"
    run node receipts web-01 --state "$STATE"
    if command -v jq >/dev/null; then receipt_json; fi
    run node destroy demo-01 $lab
    run node destroy web-01 $lab
    run node destroy mon-01 --abandon $lab
    run node list --site examples/site --state "$STATE"
}
