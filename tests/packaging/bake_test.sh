# packaging/bake-template.sh from the cached Debian root and the agent package: the qcow2 image (read with
# debugfs, no mount) has the agent installed and enabled and no machine-id, SSH host keys, cloud-init or
# agent state; its kernel and initrd lie beside it. The cloud-init user-data of docs/cloud-init.md passes
# `cloud-init schema` run by the image's own cloud-init. The bake is cached under
# /var/cache/nodeform-test/bake by a key of its inputs (a fresh machine bakes once: a few minutes).
. "$(dirname "$0")/lib.sh"
need_root
for tool in qemu-img debugfs mkfs.ext4; do
  command -v "$tool" >/dev/null || skip "$tool missing: scripts/install-deps.sh test"
done
cache=${NODEFORM_BAKE_CACHE:-/var/cache/nodeform-test/bake}
work=$(mktemp -d /var/tmp/nodeform-bake-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
"$src/packaging/bake-template.sh" --base-root "$base" --cache "$cache" "$agent_deb" "$work/out" | tee "$work/bake.log" ||
  fail "bake-template.sh failed"
ok "baked in $(( $(date +%s) - start )) s"
for f in nodeform-template.qcow2 vmlinuz initrd.img; do [ -s "$work/out/$f" ] || fail "no $f beside the image"; done
info=$(qemu-img info --output=json "$work/out/nodeform-template.qcow2")
grep -q '"format": "qcow2"' <<<"$info" || fail "not a qcow2 image: $info"
qemu-img convert -f qcow2 -O raw "$work/out/nodeform-template.qcow2" "$work/root.raw"
fsq() { debugfs -R "$1" "$work/root.raw" 2>/dev/null; }
# names in a directory of the image (ls -p: /inode/mode/uid/gid/name/size/)
names() { fsq "ls -p $1" | awk -F/ 'NF > 5 && $6 != "." && $6 != ".." { print $6 }'; }

[ -n "$(fsq 'stat /usr/bin/nodeform-agent' | grep -m1 'Type: regular')" ] || fail "the image has no /usr/bin/nodeform-agent"
link=$(fsq 'stat /etc/systemd/system/multi-user.target.wants/nodeform-agent.service' | grep -m1 'Fast link dest' || true)
[[ $link == *"/lib/systemd/system/nodeform-agent.service"* ]] || fail "nodeform-agent.service is not enabled in the image"
[ -n "$(names /etc/systemd/system/multi-user.target.wants | grep -x qemu-guest-agent.service || true)" ] ||
  [ -n "$(names /etc/systemd/system/sysinit.target.wants; names /lib/systemd/system | grep -x qemu-guest-agent.service)" ] ||
  fail "qemu-guest-agent is not in the image"
size=$(fsq 'stat /etc/machine-id' | sed -n 's/.*Size: \([0-9]*\).*/\1/p' | head -n 1)
[ "$size" = 0 ] || fail "/etc/machine-id is not empty in the image (size ${size:-missing})"
[ -z "$(fsq 'stat /var/lib/dbus/machine-id' | grep -m1 Inode || true)" ] || fail "the image keeps /var/lib/dbus/machine-id"
[ -z "$(names /etc/ssh | grep '^ssh_host_' || true)" ] || fail "SSH host keys in the image: $(names /etc/ssh | grep ssh_host_)"
[ -n "$(names /etc/ssh | grep -x sshd_config || true)" ] || fail "the image has no /etc/ssh/sshd_config (openssh-server)"
[ -z "$(names /var/lib/cloud)" ] || fail "cloud-init state in the image: $(names /var/lib/cloud | tr '\n' ' ')"
[ -n "$(names /etc/cloud | grep -x cloud.cfg || true)" ] || fail "the image has no cloud-init"
[ -z "$(names /var/lib/nodeform)" ] || fail "agent state in the image: $(names /var/lib/nodeform | tr '\n' ' ')"
ok "image: agent installed and enabled, qemu-guest-agent and cloud-init present; no machine-id, host keys, cloud-init or agent state"
echo "image: $(du -h --apparent-size "$work/out/nodeform-template.qcow2" | cut -f1) qcow2 ($(du -h "$work/out/nodeform-template.qcow2" | cut -f1) on disk)"

# ---- the user-data of docs/cloud-init.md: each snippet file is in the doc verbatim and passes the schema
layer1=$(ls -td "$cache"/layer1-*/ | head -n 1)rootfs
[ -x "$layer1/usr/bin/cloud-init" ] || fail "no cloud-init in the bake's package layer $layer1"
snippets=("$src"/packaging/cloud-init/*.yaml)
[ ${#snippets[@]} -eq 3 ] || fail "expected the three user-data snippets, found ${#snippets[@]}"
python3 - "$src/docs/cloud-init.md" "${snippets[@]}" <<'PY' || fail "docs/cloud-init.md does not show a snippet verbatim"
import sys
doc = open(sys.argv[1]).read()
for path in sys.argv[2:]:
    if open(path).read() not in doc:
        sys.exit(f"{path} is not in {sys.argv[1]} verbatim")
PY
mkdir -p "$work/userdata" && cp "${snippets[@]}" "$work/userdata/"
for s in "${snippets[@]}"; do
  f=/mnt/userdata/$(basename "$s")
  # in a private mount namespace over the cached layer: the user-data bind-mounted, logs to a tmpfs
  out=$(unshare --mount --fork sh -c '
    root=$1; dir=$2; f=$3
    mount -t proc proc "$root/proc"; mount -t tmpfs tmpfs "$root/var/log"; mount -t tmpfs tmpfs "$root/run"
    mount -t tmpfs tmpfs "$root/mnt"; mkdir "$root/mnt/userdata"; mount --bind -o ro "$dir" "$root/mnt/userdata"
    exec chroot "$root" cloud-init schema --config-file "$f"' sh "$layer1" "$work/userdata" "$f" 2>&1) ||
    fail "cloud-init schema --config-file $(basename "$s"): $out"
  grep -Eq '^Valid (schema|cloud-config)' <<<"$out" || fail "cloud-init schema $(basename "$s"): $out"
done
ok "cloud-init schema: the three user-data snippets are valid"
