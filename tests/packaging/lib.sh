# Shared by the packaging tests: where the packages and the cached Debian root are, skipping, failing.
set -euo pipefail
src=${NODEFORM_SOURCE_DIR:?}
name=$(basename "$0" .sh)
skip() { echo "[  SKIPPED ] $name: $*"; exit 77; }
fail() { echo "FAIL $name: $*" >&2; exit 1; }
ok() { echo "ok   $name: $*"; }

deb_dir=${NODEFORM_DEB_DIR:-$src/build-release}
agent_deb=$(ls "$deb_dir"/nodeform-agent_*.deb 2>/dev/null | head -n 1 || true)
controller_deb=$(ls "$deb_dir"/nodeform-controller_*.deb 2>/dev/null | head -n 1 || true)
[ -n "$agent_deb" ] && [ -n "$controller_deb" ] ||
  skip "no packages in $deb_dir (scripts/check-packages.sh build-release builds them; NODEFORM_DEB_DIR names another directory)"

need_root() {
  [ "$(id -u)" = 0 ] || skip "needs root"
  base=$(cat /var/cache/nodeform-test/agent-rootfs.path 2>/dev/null || true)
  [ -n "${NODEFORM_TEST_ROOTFS:-}" ] && base=$NODEFORM_TEST_ROOTFS
  [ -n "$base" ] && [ -x "$base/bin/sh" ] || skip "no cached Debian root: run scripts/test-setup.sh"
}

# Runs a command chrooted into $root in a private mount namespace.
inroot() {
  unshare --mount --fork sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; mount --rbind /sys "$root/sys"
    exec chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"' sh "$root" "$@"
}
