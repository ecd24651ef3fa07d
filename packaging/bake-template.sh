#!/usr/bin/env bash
# Bakes a VM template with nodeform-agent: a qcow2 image plus its kernel and initrd (docs/packaging.md).
#
# usage: packaging/bake-template.sh [options] AGENT_DEB OUTDIR
#   AGENT_DEB        the nodeform-agent .deb (cmake --build BUILD --target package)
#   OUTDIR           receives nodeform-template.qcow2, vmlinuz, initrd.img and key (the cache key)
#   --base-root DIR  start from a copy of this debootstrapped Debian 12 root (default: debootstrap one)
#   --cache DIR      where the package layer and finished images are kept, keyed by their inputs
#                    (default /var/cache/nodeform-bake); a bake whose inputs are unchanged is a copy
#   --size SIZE      the image's file system size (default 3G; the qcow2 holds only what is used)
#   --seed-file FILE bake a fixed seed (/etc/nodeform/seed.yaml): single-use images only; templates
#                    get their seed per clone (SMBIOS serial or cloud-init)
#   --in-place ROOT  only bake the agent into ROOT (e.g. a mounted cloud image) and clear its identity;
#                    no image, no cache (AGENT_DEB is then the only positional argument)
#   --with-docker    also docker.io, docker-compose and a local image nodeform/busybox:local (a busybox
#                    root imported at boot by nodeform-local-image.service, before the agent starts): for
#                    stacks without a registry (the e2e tests); give it its own --cache
#
# Layers: (1) the base root plus cloud-init, qemu-guest-agent, a kernel and what a VM boot needs,
# keyed by the base and the package list; (2) the agent installed and enabled, the machine's identity
# cleared (machine-id, SSH host keys, cloud-init and agent state), the ext4 image made with
# `mkfs.ext4 -d` and converted to qcow2; keyed by layer 1, the .deb, this script and the seed.
# The image is a bare ext4 file system (no partition table or boot loader): boot it with -kernel
# vmlinuz -initrd initrd.img -append "root=/dev/vda". Needs root, debootstrap (without --base-root),
# the Debian mirror (layer 1), e2fsprogs, qemu-utils. Exit codes: 0 baked, 2 usage, 1 a step failed.
set -euo pipefail

PACKAGES=(systemd-sysv udev cloud-init qemu-guest-agent linux-image-amd64 ifupdown isc-dhcp-client
  openssh-server sudo locales apparmor ca-certificates curl)
MIRROR=${NODEFORM_MIRROR:-http://deb.debian.org/debian}

usage() { sed -n '2,26p' "$0" >&2; exit 2; }
step() { echo "bake-template: $(date +%H:%M:%S) $*"; }
fail() { echo "bake-template: $*" >&2; exit 1; }

base="" cache=/var/cache/nodeform-bake size=3G seed="" inplace="" docker=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --base-root) base=$(realpath "$2"); shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --seed-file) seed=$(realpath "$2"); shift 2 ;;
    --in-place) inplace=$(realpath "$2"); shift 2 ;;
    --with-docker) docker=1; shift ;;
    -h|--help) usage ;;
    -*) echo "bake-template: unknown option $1" >&2; usage ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$inplace" ]; then [ ${#args[@]} -eq 1 ] || usage; else [ ${#args[@]} -eq 2 ] || usage; fi
[ -z "$docker" ] || [ -z "$inplace" ] || { echo "bake-template: --with-docker bakes an image, not --in-place" >&2; usage; }
[ -z "$docker" ] || PACKAGES+=(docker.io docker-compose busybox-static)
deb=$(realpath "${args[0]}")
[ -f "$deb" ] || fail "$deb: no such file"
[ "$(id -u)" = 0 ] || fail "must run as root (chroot, mkfs)"

# Runs a command chrooted into $1 in a private mount namespace (nothing stays mounted).
inroot() {
  unshare --mount --fork sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; mount --rbind /sys "$root/sys"
    exec chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"' sh "$@"
}
# Blocks daemon starts from maintainer scripts while packages are installed into a root.
no_daemons() { printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d"; chmod 755 "$1/usr/sbin/policy-rc.d"; }

# The local image of --with-docker in ROOT: a busybox root as a tar, and a unit that imports it once (at the
# first boot, after docker, before the agent) as nodeform/busybox:local; the guest needs no registry.
bake_local_image() {
  local root=$1 img
  step "local image: busybox root, imported at boot by nodeform-local-image.service"
  img=$(mktemp -d); mkdir "$img/bin"
  cp "$root/bin/busybox" "$img/bin/busybox"
  for applet in sh sleep true cat echo; do ln -s busybox "$img/bin/$applet"; done
  mkdir -p "$root/usr/share/nodeform/local-image"
  tar --owner=0 --group=0 -C "$img" -cf "$root/usr/share/nodeform/local-image/busybox.tar" .
  rm -rf "$img"
  cat >"$root/etc/systemd/system/nodeform-local-image.service" <<'UNIT'
[Unit]
Description=Import the baked local image nodeform/busybox:local (bake-template.sh --with-docker)
Requires=docker.service
After=docker.service
Before=nodeform-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'docker image inspect nodeform/busybox:local >/dev/null 2>&1 || exec docker import /usr/share/nodeform/local-image/busybox.tar nodeform/busybox:local'

[Install]
WantedBy=multi-user.target
UNIT
  inroot "$root" systemctl enable nodeform-local-image.service >/dev/null 2>&1 ||
    fail "cannot enable nodeform-local-image.service"
  [ -L "$root/etc/systemd/system/multi-user.target.wants/docker.service" ] ||
    fail "docker.service is not enabled after the install of docker.io"
}

# Installs and enables the agent in ROOT and clears every per-machine identity.
bake_agent() {
  local root=$1
  [ -x "$root/bin/sh" ] || fail "$root does not look like a root file system (no /bin/sh)"
  step "installing $(basename "$deb")"
  no_daemons "$root"
  cp "$deb" "$root/tmp/nodeform-agent.deb"
  inroot "$root" apt-get install -y -q --no-install-recommends /tmp/nodeform-agent.deb >"$root/tmp/bake.log" 2>&1 ||
    { tail -n 20 "$root/tmp/bake.log" >&2; fail "installing the agent failed"; }
  rm -f "$root/tmp/nodeform-agent.deb" "$root/tmp/bake.log" "$root/usr/sbin/policy-rc.d"
  step "enabling nodeform-agent.service and qemu-guest-agent"
  # the package's postinst enabled the agent (deb-systemd-helper); check it, and enable the guest agent
  [ -L "$root/etc/systemd/system/multi-user.target.wants/nodeform-agent.service" ] ||
    fail "nodeform-agent.service is not enabled after the install"
  inroot "$root" systemctl enable qemu-guest-agent.service >/dev/null 2>&1 || true
  if [ -n "$seed" ]; then
    step "baking seed $seed"
    install -D -m 0600 "$seed" "$root/etc/nodeform/seed.yaml"
  fi
  step "clearing per-machine identity (machine-id, SSH host keys, cloud-init and agent state)"
  find "$root/var/lib/nodeform" -mindepth 1 -delete
  rm -rf "$root"/var/lib/cloud/* "$root"/var/log/cloud-init*.log
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_* "$root/var/lib/systemd/random-seed"
  inroot "$root" apt-get clean
}

if [ -n "$inplace" ]; then
  bake_agent "$inplace"
  step "done: $inplace is ready to become a template"
  exit 0
fi

out=${args[1]}
mkdir -p "$out" "$cache"
sha() { sha256sum | cut -c1-16; }
key1=$( { echo "${base:-debootstrap bookworm $MIRROR}"; echo "${PACKAGES[*]}"; } | sha)
# The .deb by what it installs (its control files: md5sums of every file, control, maintainer scripts), so
# a rebuild of the same sources does not bake again.
deb_control=$(mktemp -d); dpkg-deb -e "$deb" "$deb_control/c"
key2=$( { echo "$key1"; cat "$deb_control"/c/*; sha256sum "$0" | cut -d' ' -f1; [ -z "$seed" ] || sha256sum "$seed"; echo "$size"; } | sha)
rm -rf "$deb_control"
layer1=$cache/layer1-$key1
image=$cache/template-$key2

if [ ! -f "$image/done" ]; then
  if [ ! -f "$layer1/done" ]; then
    rm -rf "$layer1"; mkdir -p "$layer1"
    trap '[ -f "$layer1/done" ] || rm -rf "$layer1/rootfs"' EXIT  # keeps only the logs of a failed layer
    if [ -n "$base" ]; then
      step "layer 1: copying the base root $base"
      cp -a "$base" "$layer1/rootfs"
    else
      step "layer 1: debootstrap bookworm (about a minute)"
      debootstrap --variant=minbase bookworm "$layer1/rootfs" "$MIRROR" >"$layer1/debootstrap.log" 2>&1 ||
        { tail -n 20 "$layer1/debootstrap.log" >&2; fail "debootstrap failed (log: $layer1/debootstrap.log)"; }
    fi
    r=$layer1/rootfs
    no_daemons "$r"
    step "layer 1: apt-get install ${PACKAGES[*]} (a few minutes)"
    { inroot "$r" apt-get update -q && inroot "$r" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
      >"$layer1/apt.log" 2>&1 || { tail -n 20 "$layer1/apt.log" >&2; fail "installing the VM packages failed (log: $layer1/apt.log)"; }
    rm -f "$r/usr/sbin/policy-rc.d"
    # What a VM boot needs beyond the packages: the root on the whole virtio disk, DHCP on eth0
    # (net.ifnames=0), a locale for cloud-init, a serial console.
    echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" >"$r/etc/fstab"
    printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' >"$r/etc/network/interfaces"
    sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' "$r/etc/locale.gen"
    inroot "$r" locale-gen >/dev/null
    echo nodeform-template >"$r/etc/hostname"
    inroot "$r" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true
    touch "$layer1/done"
  else
    step "layer 1: cached ($layer1)"
  fi
  rm -rf "$image"; mkdir -p "$image"
  trap '[ -f "$image/done" ] || rm -rf "$image"' EXIT  # a failed bake leaves no half image behind
  work=$image/rootfs
  step "layer 2: copying layer 1"
  cp -a "$layer1/rootfs" "$work"
  bake_agent "$work"
  [ -z "$docker" ] || bake_local_image "$work"
  kernel=$(cd "$work/boot" && ls vmlinuz-* | sort -V | tail -n 1)
  cp "$work/boot/$kernel" "$image/vmlinuz"
  cp "$work/boot/initrd.img-${kernel#vmlinuz-}" "$image/initrd.img"
  step "layer 2: mkfs.ext4 -d ($size)"
  mkfs.ext4 -q -F -L nodeform-root -d "$work" "$image/root.raw" "$size" >/dev/null
  step "layer 2: qemu-img convert to qcow2"
  qemu-img convert -f raw -O qcow2 "$image/root.raw" "$image/nodeform-template.qcow2"
  rm -rf "$image/root.raw" "$work"
  echo "$key2" >"$image/key"
  touch "$image/done"
  # older images of this cache (another .deb): keep the newest two
  ls -td "$cache"/template-*/ | tail -n +3 | xargs -r rm -rf
else
  step "cached: $image"
fi
for f in nodeform-template.qcow2 vmlinuz initrd.img key; do
  ln -f "$image/$f" "$out/$f" 2>/dev/null || cp "$image/$f" "$out/$f"
done
step "done: $out/nodeform-template.qcow2 ($(du -h --apparent-size "$out/nodeform-template.qcow2" | cut -f1)), vmlinuz, initrd.img"
