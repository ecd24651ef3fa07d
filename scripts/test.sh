#!/usr/bin/env bash
# Installs what the tests need, builds with ASan/UBSan (and the two programs as shipped), prepares the real systems the tests use
# (a cached debootstrapped Debian root and the baked VM template), runs every test (labels unit, integration,
# root, slow, packaging, e2e),
# then runs each fuzz harness for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh all
# -O1 -g1 (line tables): sanitizer reports keep file:line, and the tree builds ~3x faster than at -O2 -g (Beast and
# valijson translation units took minutes each on CI's 2 cores).
scripts/build.sh build-test -DNODEFORM_SANITIZE=ON -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG"
# The shipped configuration too (optimized, no sanitizers, the agent's static C++ runtime): it must compile
# warning-free at -O2, and the agent's link check (agent/cmake/check_needed.cmake) runs on it.
scripts/build.sh build-release -DNODEFORM_SANITIZE=OFF -DNODEFORM_BUILD_TESTS=OFF
scripts/check-packages.sh build-release  # the .debs carry the programs, their units and their dependencies
scripts/test-setup.sh >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export NODEFORM_DEB_DIR=$PWD/build-release  # the packages the packaging tests install (check-packages.sh built them)
# The e2e tests boot VMs from the template baked with this agent package: cached by a key of its inputs, so
# only a changed agent re-bakes (30-100 s; a fresh machine also builds the package layer once, a few minutes).
agent_deb=$(ls build-release/nodeform-agent_*.deb | head -n 1)
packaging/bake-template.sh --base-root "$(cat /var/cache/nodeform-test/agent-rootfs.path)" \
  --cache /var/cache/nodeform-test/bake "$agent_deb" /var/cache/nodeform-test/e2e-template >/dev/null
export NODEFORM_E2E_TEMPLATE=/var/cache/nodeform-test/e2e-template/nodeform-template.qcow2
# The first-boot test's template also has docker, docker-compose and a local image for its Compose stack (its own
# cache: another package layer, once ~5 min; then per agent .deb like the one above).
packaging/bake-template.sh --with-docker --base-root "$(cat /var/cache/nodeform-test/agent-rootfs.path)" \
  --cache /var/cache/nodeform-test/bake-docker "$agent_deb" /var/cache/nodeform-test/e2e-docker-template >/dev/null
export NODEFORM_E2E_DOCKER_TEMPLATE=/var/cache/nodeform-test/e2e-docker-template/nodeform-template.qcow2
(cd build-test && ctest --output-on-failure --timeout 900 -j2 | tee ctest.log)
# Here (root, everything installed) no test may skip: a skipped test would pass without testing anything.
if [ "${NODEFORM_ALLOW_SKIPS:-0}" != 1 ] && grep -q '(Skipped)' build-test/ctest.log; then
  echo "test.sh: tests were skipped (set NODEFORM_ALLOW_SKIPS=1 to accept):" >&2
  grep '(Skipped)' build-test/ctest.log >&2
  exit 1
fi
NODEFORM_FUZZ_BUILD_DIR=build-fuzz scripts/fuzz.sh "${NODEFORM_FUZZ_SECONDS:-30}"
