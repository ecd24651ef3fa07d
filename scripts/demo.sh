#!/usr/bin/env bash
# The main job, end to end on this machine, on a real VM:
#   install and build → bake the VM template (cached) → start the controller on loopback → `node create` a
#   local QEMU VM (provider qemu) from the example site → it boots, reads its seed from SMBIOS, enrolls, pulls
#   its spec, converges and reports platform-ready with nobody logging in → `node list` shows it `ready` →
#   drift made inside the VM through the guest agent is repaired at once by the agent's drift watcher → `node destroy`.
# Usage: scripts/demo.sh [WORKDIR]           (default /tmp/nodeform-demo; needs root and the Debian mirror;
#                                             software emulation: about 5-10 minutes after the first bake)
#        scripts/demo.sh --quick [WORKDIR]   the agent converges a debootstrapped root instead of a VM (~1 min):
#   install and build → validate and render the example site → start the controller on loopback
#   (TLS with a generated site CA) → the agent enrolls with its seed, pulls its spec and converges a
#   real Debian root filesystem → the controller shows the node `ready` → a second run changes nothing
#   → drift by hand is found by `plan` and repaired by `apply`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
quick=0
if [ "${1:-}" = --quick ]; then quick=1; shift; fi
work=${1:-/tmp/nodeform-demo}
port=${NODEFORM_DEMO_PORT:-18443}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$quick" = 0 ]; then exec bash scripts/demo-vm.sh "$work"; fi

say "1. install and build"
build=${NODEFORM_DEMO_BUILD:-}   # an existing build tree to use instead of building build/
if [ -z "$build" ]; then
  scripts/install-deps.sh demo
  scripts/build.sh build -DNODEFORM_SANITIZE=OFF -DNODEFORM_BUILD_TESTS=OFF  # the two programs only
  build=$repo/build
fi
ctl=$build/controller/nodeform-controller
agent=$build/agent/nodeform-agent

say "2. validate and render the example site"
"$ctl" validate --site examples/site
"$ctl" render --site examples/site demo-01 | head -c 600; echo " …"

say "3. a Debian root filesystem for the node (debootstrap, cached)"
base=$(scripts/test-setup.sh)
rm -rf "$work"; mkdir -p "$work"
cp -a "$base" "$work/root"
echo "node root: $work/root"

say "4. controller on 127.0.0.1:$port"
"$ctl" serve --site examples/site --state "$work/state" --listen "127.0.0.1:$port" >"$work/controller.log" 2>&1 &
ctl_pid=$!
trap 'kill $ctl_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ -f "$work/state/tls/ca.pem" ] && curl -fsS --cacert "$work/state/tls/ca.pem" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
fingerprint=$(openssl x509 -in "$work/state/tls/ca.pem" -outform DER | sha256sum | cut -d' ' -f1)
echo "controller up; CA fingerprint $fingerprint"

say "5. the node's seed (what Proxmox would put in the SMBIOS serial)"
cat >"$work/seed.yaml" <<SEED
identity: demo-01
controller_url: https://127.0.0.1:$port
token: demo-posture-uses-network-auth
ca_fingerprint: $fingerprint
SEED
"$agent" seed show --seed "$work/seed.yaml"

say "6. nodeform-agent apply: fetch the spec and converge the root"
"$agent" apply --seed "$work/seed.yaml" --root "$work/root" --node-root

say "7. the controller's view"
"$ctl" node list --state "$work/state" --site examples/site

say "8. a second run changes nothing"
"$agent" apply --seed "$work/seed.yaml" --root "$work/root" --node-root | tail -n 1

say "9. drift by hand: chmod /etc/motd, remove bob from group demo"
chmod 600 "$work/root/etc/motd"
chroot "$work/root" gpasswd -d bob demo >/dev/null
set +e
"$agent" plan --seed "$work/seed.yaml" --root "$work/root"
echo "plan exit code: $? (2 = changes pending)"
set -e
"$agent" apply --seed "$work/seed.yaml" --root "$work/root" --node-root
"$ctl" node list --state "$work/state" --site examples/site

say "done — controller log: $work/controller.log"
