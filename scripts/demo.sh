#!/usr/bin/env bash
# The main job: install, build, validate and render the example site.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
scripts/build.sh build
./build/controller/nodeform-controller validate --site examples/site
