#!/usr/bin/env bash
# Builds the .deb packages from a release tree (cmake --build BUILD --target package) and checks what an
# operator installs: each program, its unit, conffile, man page and copyright are in its package, the
# package depends on the shared libraries the program needs (dpkg-shlibdeps) and on nothing of the agent's
# static C++ runtime, and the packaged binaries run. Usage: scripts/check-packages.sh BUILD_DIR   (a tree with -DNODEFORM_SANITIZE=OFF)
set -euo pipefail
build=${1:?usage: scripts/check-packages.sh BUILD_DIR}
fail() { echo "check-packages: $*" >&2; exit 1; }
rm -f "$build"/nodeform-*.deb
cmake --build "$build" --target package >/dev/null
work=$(mktemp -d /tmp/nodeform-check-packages.XXXXXX)
trap 'rm -rf "$work"' EXIT
for program in agent controller; do
  deb=$(ls "$build"/nodeform-"$program"_*.deb) || fail "no nodeform-$program package in $build"
  contents=$(dpkg-deb -c "$deb")
  grep -q " ./usr/bin/nodeform-$program\$" <<<"$contents" || fail "$deb has no usr/bin/nodeform-$program"
  for f in lib/systemd/system/nodeform-$program.service etc/nodeform/$program.yaml \
    usr/share/man/man1/nodeform-$program.1.gz usr/share/doc/nodeform-$program/copyright; do
    grep -q " ./$f\$" <<<"$contents" || fail "$deb has no /$f"
  done
  depends=$(dpkg-deb -f "$deb" Depends)
  for lib in libc6 libssl3; do
    [[ $depends == *"$lib "* || $depends == *"$lib," || $depends == *"$lib" ]] ||
      fail "$deb: Depends lacks $lib (dpkg-shlibdeps did not run?): $depends"
  done
  if [ "$program" = agent ]; then
    for lib in libstdc++6 libyaml-cpp libcpp-httplib libsystemd0; do
      [[ $depends != *"$lib"* ]] || fail "$deb depends on $lib, which the agent must not load: $depends"
    done
  fi
  dpkg-deb -x "$deb" "$work/$program"
  "$work/$program/usr/bin/nodeform-$program" --version >/dev/null || fail "the packaged nodeform-$program does not run"
  echo "check-packages: $(basename "$deb"): the program, its unit, conffile, man page; Depends: $depends"
done
