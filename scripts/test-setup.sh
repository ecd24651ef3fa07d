#!/bin/sh
# Prepares the real systems the root tests use, once, and caches them (and checks that PostgreSQL 15 is there
# for the store tests, which start their own cluster):
#   a debootstrapped Debian bookworm root (minbase + the packages below, apt lists fetched) under
#   /var/cache/nodeform-test/rootfs-<key>, where <key> hashes the package list, suite and mirror.
# Prints the root's path; tests find it through /var/cache/nodeform-test/agent-rootfs.path
# (or NODEFORM_TEST_ROOTFS). Needs root, debootstrap and the Debian mirror. Safe to run repeatedly.
set -eu

CACHE=${NODEFORM_TEST_CACHE:-/var/cache/nodeform-test}
SUITE=bookworm
# What the agent's root tests need preinstalled: accounts (passwd), sudo + visudo, systemd for
# systemctl --root and nspawn --boot, apt to install more from the mirror.
PACKAGES="passwd,sudo,systemd,systemd-sysv,apt,dbus"
# The host's mirror (deb822 sources first, then the classic list); deb.debian.org as a last resort.
MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
[ -n "$MIRROR" ] || MIRROR=$(sed -n 's/^deb[[:space:]]\+\(http[^[:space:]]*\).*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian

if [ "$(id -u)" -ne 0 ]; then
    echo "test-setup.sh: must run as root (debootstrap)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "test-setup.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

KEY=$(printf '%s\n%s\n%s\nv1\n' "$SUITE" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-16)
ROOT="$CACHE/rootfs-$KEY"
mkdir -p "$CACHE"

if [ ! -f "$ROOT/.nodeform-complete" ]; then
    BUILD="$CACHE/.build-$KEY-$$"
    rm -rf "$BUILD"
    trap 'rm -rf "$BUILD"' EXIT
    echo "test-setup.sh: debootstrap $SUITE into $ROOT (mirror $MIRROR) ..." >&2
    start=$(date +%s)
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$BUILD" "$MIRROR" >"$CACHE/debootstrap-$KEY.log" 2>&1 || {
        echo "test-setup.sh: debootstrap failed; see $CACHE/debootstrap-$KEY.log" >&2
        tail -n 20 "$CACHE/debootstrap-$KEY.log" >&2
        exit 1
    }
    # Name resolution inside the root for apt; daemons never start from maintainer scripts in tests.
    cp /etc/resolv.conf "$BUILD/etc/resolv.conf" 2>/dev/null || true
    printf '#!/bin/sh\nexit 101\n' >"$BUILD/usr/sbin/policy-rc.d"
    chmod 0755 "$BUILD/usr/sbin/policy-rc.d"
    # Fetch the package lists once so each test's apt-get install does not have to.
    unshare --mount --fork -- sh -c "mount -t proc proc '$BUILD/proc' && chroot '$BUILD' apt-get update -q" \
        >>"$CACHE/debootstrap-$KEY.log" 2>&1 || echo "test-setup.sh: warning: apt-get update in the root failed" >&2
    chroot "$BUILD" apt-get clean >/dev/null 2>&1 || true
    touch "$BUILD/.nodeform-complete"
    rm -rf "$ROOT"
    mv "$BUILD" "$ROOT"
    trap - EXIT
    echo "test-setup.sh: root ready in $(( $(date +%s) - start )) s" >&2
fi
# apt lists older than the agent's 24 h bound would make every test run apt-get update: refresh them.
if [ -z "$(find "$ROOT/var/lib/apt/lists" -maxdepth 1 -name '*_Packages' -mmin -1200 2>/dev/null | head -n 1)" ]; then
    unshare --mount --fork -- sh -c "mount -t proc proc '$ROOT/proc' && chroot '$ROOT' apt-get update -q" >/dev/null 2>&1 || true
fi
printf '%s\n' "$ROOT" >"$CACHE/agent-rootfs.path"
# The PostgreSQL store tests start their own throwaway cluster (scripts/test-postgres.sh, ctest fixture
# "postgres"); they need only the server's binaries and the user postgres.
if [ ! -x "${NODEFORM_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}/initdb" ] || ! id postgres >/dev/null 2>&1; then
    echo "test-setup.sh: warning: postgresql-15 is not installed; the PostgreSQL store tests will fail (scripts/install-deps.sh test)" >&2
fi
echo "$ROOT"
