#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the demo on the default data
# directory (./dosql-data, or the directory given as the first argument).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
bash tools/setup.sh
for d in examples/*/; do npm_deps "$d" || exit 1; done  # the examples' npm packages
configure_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
exec ./build/dosql_quickstart "${1:-dosql-data}"
