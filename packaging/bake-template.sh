#!/usr/bin/env bash
# Bakes nodeform-agent into a VM template's root filesystem.
#
# usage: packaging/bake-template.sh ROOTDIR AGENT_DEB [--seed-file FILE]
#   ROOTDIR    the template's root filesystem, mounted (e.g. a Debian 12 genericcloud image:
#              `losetup -fP --show debian-12-genericcloud-amd64.raw` then mount the first partition)
#   AGENT_DEB  the nodeform-agent .deb (cmake --build BUILD --target package)
#   --seed-file  bake a fixed seed (/etc/nodeform/seed.yaml) — only for single-use images;
#              templates normally get their seed per clone (SMBIOS serial or cloud-init).
#
# What it does, inside a private mount namespace chrooted into ROOTDIR:
#   installs the .deb (and qemu-guest-agent, cloud-init if missing), enables nodeform-agent,
#   then clears machine-id, SSH host keys, cloud-init and nodeform state so every clone is new.
# Exit codes: 0 baked, 2 usage, 1 any step failed (the step is named).
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
root=$(realpath "$1"); deb=$(realpath "$2"); shift 2
seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seed-file) seed=$(realpath "$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "bake-template: unknown option $1" >&2; usage ;;
  esac
done
[ -x "$root/bin/sh" ] || { echo "bake-template: $root does not look like a root filesystem (no /bin/sh)" >&2; exit 1; }
[ -f "$deb" ] || { echo "bake-template: $deb: no such file" >&2; exit 1; }

step() { echo "bake-template: $*"; }
inroot() {
  unshare --mount --fork sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; mount --rbind /sys "$root/sys"
    exec chroot "$root" "$@"' sh "$root" "$@"
}

step "installing $(basename "$deb")"
cp "$deb" "$root/tmp/nodeform-agent.deb"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
trap 'rm -f "$root/usr/sbin/policy-rc.d" "$root/tmp/nodeform-agent.deb"' EXIT
missing=()
for p in qemu-guest-agent cloud-init; do
  inroot dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  inroot env DEBIAN_FRONTEND=noninteractive apt-get update -q
  inroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
inroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/nodeform-agent.deb

step "enabling nodeform-agent.service and qemu-guest-agent"
inroot systemctl enable nodeform-agent.service
inroot systemctl enable qemu-guest-agent.service 2>/dev/null || true

if [ -n "$seed" ]; then
  step "baking seed $seed"
  install -D -m 0600 "$seed" "$root/etc/nodeform/seed.yaml"
fi

step "clearing per-machine identity"
rm -rf "$root/var/lib/nodeform/"* "$root/var/lib/cloud/"*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
step "done: $root is ready to become a template"
