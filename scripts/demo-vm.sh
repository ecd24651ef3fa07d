#!/usr/bin/env bash
# scripts/demo.sh's real-VM story (run it through scripts/demo.sh): a local QEMU VM from the baked template,
# provisioned by `nodeform-controller node create` from the example site, platform-ready with nobody logging in.
# Usage: scripts/demo-vm.sh [WORKDIR]   (default /tmp/nodeform-demo; root; NODEFORM_DEMO_BUILD=DIR reuses a
# release build tree with its .debs; NODEFORM_DEMO_PORT sets the controller's port, default 18443)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/nodeform-demo}
port=${NODEFORM_DEMO_PORT:-18443}
node=lab-01

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. install and build (the two programs and their .deb packages)"
build=${NODEFORM_DEMO_BUILD:-}
scripts/install-deps.sh demo
if [ -z "$build" ]; then
  scripts/build.sh build -DNODEFORM_SANITIZE=OFF -DNODEFORM_BUILD_TESTS=OFF
  build=$(pwd)/build
fi
[ -n "$(ls "$build"/nodeform-agent_*.deb 2>/dev/null)" ] || cmake --build "$build" --target package >/dev/null
ctl=$build/controller/nodeform-controller
agent_deb=$(ls "$build"/nodeform-agent_*.deb | head -n 1)

say "2. validate the example site"
"$ctl" validate --site examples/site

say "3. bake the VM template with this agent (cached by its inputs: the first bake builds a Debian root and"
echo "   installs the image's packages, about 5 minutes; a cached bake takes seconds)"
pkill_pids=()
cleanup() {
  for p in "${pkill_pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
base=$(scripts/test-setup.sh)
rm -rf "$work"
mkdir -p "$work"
start=$(date +%s)
packaging/bake-template.sh --base-root "$base" --cache /var/cache/nodeform-test/bake "$agent_deb" "$work/template" |
  tail -n 1
echo "template ready in $(($(date +%s) - start)) s: $work/template/nodeform-template.qcow2"

say "4. the site: examples/site plus a node with provider qemu"
cp -a examples/site "$work/site"
cat >"$work/site/nodes/$node.yaml" <<NODE
# A local QEMU VM on this machine (docs/provisioning.md, "Local QEMU VMs").
spec: demo
preset: small
overrides: {cores: 2, memory_mb: 1536, disk_gb: 4}
provider: qemu
qemu:
  template: $work/template/nodeform-template.qcow2
  state_dir: $work/vms
decommission: allow_immediate_destroy
NODE
cat "$work/site/nodes/$node.yaml"
"$ctl" validate --site "$work/site"

say "5. controller on 127.0.0.1:$port (the VM reaches it as 10.0.2.2)"
"$ctl" serve --site "$work/site" --state "$work/state" --listen "127.0.0.1:$port" --tls-hosts 10.0.2.2 \
  >"$work/controller.log" 2>&1 &
pkill_pids+=($!)
for _ in $(seq 1 100); do
  [ -f "$work/state/tls/ca.pem" ] && curl -fsS --cacert "$work/state/tls/ca.pem" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
# Every agent report as the controller receives it.
tail -n 0 -F "$work/controller.log" 2>/dev/null | grep --line-buffered "/v1/nodes/$node/reports\|/v1/enroll" |
  sed -u 's/^/   controller: /' &
pkill_pids+=($!)

say "6. node plan, then node create $node (each lifecycle step as it finishes; a first boot under software"
echo "   emulation takes 3-8 minutes, most of it cloud-init)"
"$ctl" node plan "$node" --site "$work/site" --state "$work/state" --controller-url "https://10.0.2.2:$port"
# --here: this command runs the lifecycle itself with the demo's own URL for the guest (10.0.2.2) and prints each
# step; without it the serving controller's reconciler would do the work (docs/controller.md "Lifecycle reconciler").
if ! "$ctl" node create "$node" --here --site "$work/site" --state "$work/state" \
  --controller-url "https://10.0.2.2:$port" --agent-timeout 15m --report-timeout 15m; then
  echo "node create failed; the VM's console (last 40 lines):"
  tail -n 40 "$work"/vms/vm-*/console.log || true
  exit 1
fi

say "7. the controller's view"
"$ctl" node list --site "$work/site" --state "$work/state"

# One command in the guest through the QEMU guest agent (guest-sync, guest-exec, guest-exec-status).
guest() {
  python3 - "$(ls "$work"/vms/vm-*/qga.sock | head -n 1)" "$@" <<'PY'
import base64, json, random, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
def call(cmd, args=None):
    f.write(json.dumps({"execute": cmd, **({"arguments": args} if args else {})}) + "\n"); f.flush()
    return json.loads(f.readline())
n = random.randint(1, 1 << 30); f.write(json.dumps({"execute": "guest-sync", "arguments": {"id": n}}) + "\n"); f.flush()
while json.loads(f.readline()).get("return") != n: pass
pid = call("guest-exec", {"path": sys.argv[2], "arg": sys.argv[3:], "capture-output": True})["return"]["pid"]
while not (st := call("guest-exec-status", {"pid": pid})["return"])["exited"]: time.sleep(0.2)
sys.stdout.write(base64.b64decode(st.get("out-data", "")).decode())
sys.exit(st.get("exitcode", 1))
PY
}

say "8. inside the VM (through the guest agent, nobody logged in)"
guest /usr/bin/ls -l /var/lib/nodeform/platform-ready
guest /usr/bin/id alice
guest /usr/bin/cat /etc/motd

say "9. drift inside the VM: /etc/motd emptied; the agent's drift watcher (inotify) sees it and repairs it at once"
guest /usr/bin/truncate -s 0 /etc/motd
start=$(date +%s)
until [ -n "$(guest /usr/bin/cat /etc/motd)" ]; do
  [ $(($(date +%s) - start)) -lt 300 ] || { echo "not repaired within 5 minutes"; exit 1; }
  sleep 1
done
echo "repaired within $(($(date +%s) - start)) s (the guest agent's round trip under emulation included):"
guest /usr/bin/journalctl -u nodeform-agent --no-pager -n 4 -o cat
guest /usr/bin/cat /etc/motd
"$ctl" node list --site "$work/site" --state "$work/state"

say "10. node destroy $node: QEMU stopped, overlay and seed removed, the node's credential revoked"
"$ctl" node destroy "$node" --here --site "$work/site" --state "$work/state"
ls "$work/vms"

say "done — controller log: $work/controller.log"
