#!/usr/bin/env bash
# The main job: installs what is missing, builds, and starts the real-time dashboard
# (examples/dashboard) on the default data directory (./dosql-data, or the directory given as
# the first argument) with its load generator writing orders (RATE changes/s, default 50); it
# prints the URL to open (PORT, default 8080). Ctrl-C stops it and closes the database.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
bash tools/setup.sh
for d in examples/*/; do npm_deps "$d" || exit 1; done  # the examples' npm packages
configure_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
echo "demo: starting the dashboard; open the URL below (Ctrl-C stops it)" >&2
exec ./build/examples/dashboard/dosql-dashboard --dir "${1:-dosql-data}" --port "${PORT:-8080}" --generate "${RATE:-50}"
