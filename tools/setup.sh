#!/usr/bin/env bash
# Installs dosql's build and test dependencies from Debian's packages, idempotently:
# only missing packages are installed, and `apt-get update` runs only when something
# is missing and the package lists are absent or too old to find it.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libcaf-dev libmsgpack-cxx-dev libspdlog-dev catch2 libbenchmark-dev
  libsqlite3-dev sqlite3 libboost-dev libcli11-dev nlohmann-json3-dev libssl-dev openssl
  clang libfuzzer-14-dev libclang-rt-14-dev
  libhiredis-dev redis-server chromium
  libzstd-dev iproute2
  avro-bin python3-avro libavro-dev
)
[ $# -gt 0 ] && packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "setup: installing ${missing[*]}"
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
  echo "setup: package lists are stale; running apt-get update"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
