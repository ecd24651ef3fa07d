#!/usr/bin/env bash
# Installs what the tests need, builds with ASan/UBSan, and runs every test (unit, integration, root, slow).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh all
scripts/build.sh build-test -DNODEFORM_SANITIZE=ON
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [ -x scripts/test-setup.sh ]; then scripts/test-setup.sh; fi
cd build-test
ctest --output-on-failure --timeout 600 -j2
