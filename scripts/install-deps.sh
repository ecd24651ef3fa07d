#!/usr/bin/env bash
# Installs every Debian 12 package nodeform needs to build, test, demo and benchmark.
# Usage: scripts/install-deps.sh [build|demo|test|all|bench]   (default: all). Idempotent; needs root.
set -euo pipefail
what="${1:-all}"

build_pkgs=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libyaml-cpp-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev
  libsqlite3-dev libpq-dev libvalijson-dev libboost-dev libboost-system-dev
  libgtest-dev libgmock-dev help2man
)
# Real systems the tests converge and talk to (see docs/testing.md).
# docker.io + docker-compose (v1): the stacks root test starts its own dockerd in private namespaces.
# lintian, qemu-utils: the packaging tests (lintian on the .debs; the baked template's qcow2 image).
# qemu-system-x86, cloud-image-utils: the e2e tests and the demo boot real VMs (provider qemu, cloud-localds).
# chromium: the status page browser test (headless); prometheus: promtool checks the alert rules.
# postgresql-15: the PostgreSQL store tests start a throwaway cluster (scripts/test-postgres.sh; no service).
# gnupg, dpkg-dev: the apt sources root test signs a repository it builds (dpkg-scanpackages) and serves on loopback.
test_pkgs=(
  clang libclang-rt-14-dev debootstrap systemd-container iproute2 util-linux
  passwd sudo sqlite3 curl openssl e2fsprogs docker.io docker-compose
  lintian qemu-utils qemu-system-x86 cloud-image-utils python3 chromium prometheus postgresql-15 gnupg dpkg-dev
)

# The demo boots a VM from the baked template (qemu, cloud-localds, mkfs.ext4; python3 talks to its guest agent);
# `demo.sh --quick` converges a debootstrapped root from a controller on loopback.
demo_pkgs=(debootstrap util-linux passwd curl openssl qemu-utils qemu-system-x86 cloud-image-utils e2fsprogs python3)
# Peers and load tools for bench/ (not needed by the tests).
bench_pkgs=(wrk nginx hyperfine puppet cfengine3 ansible-core python3 time openssh-client)

case "$what" in
  build) pkgs=("${build_pkgs[@]}") ;;
  demo) pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}") ;;
  bench) pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}" "${bench_pkgs[@]}") ;;
  test|all) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 [build|demo|test|all|bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # policy-rc.d keeps package postinst scripts from starting daemons on the build machine.
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "install-deps: ${#pkgs[@]} packages present"
