#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the release build's test suite,
# the same suite under ASan+UBSan, and the WAL segment-reader fuzzer for a bounded time.
#   tools/test.sh            everything (what CI runs)
#   FUZZ_SECONDS=N           fuzzing time (default 60)
#   DOSQL_SKIP_SANITIZE=1    skip the sanitizer build (quicker local runs)
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
bash tools/setup.sh
rm -f build/ctest.log build-asan/ctest.log

echo "=== release build + tests"
configure_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build && ctest --output-on-failure -j "$JOBS" | tee "$ROOT/build/ctest.log")

echo "=== install package + an outside project built against it"
rm -rf build/install build/package-test
cmake --install build --prefix "$ROOT/build/install" >/dev/null
cmake -S tests/package -B build/package-test -G Ninja -DCMAKE_PREFIX_PATH="$ROOT/build/install" >/dev/null
cmake --build build/package-test >/dev/null
rm -rf build/package-data && ./build/package-test/app build/package-data
# ... and through pkg-config
PKG_CONFIG_PATH="$ROOT/build/install/lib/pkgconfig" c++ -std=c++20 tests/package/app.cpp \
  $(PKG_CONFIG_PATH="$ROOT/build/install/lib/pkgconfig" pkg-config --cflags --libs dosql) -o build/package-test/app-pc
rm -rf build/package-data && ./build/package-test/app-pc build/package-data

if [ "${DOSQL_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "=== ASan+UBSan build + tests"
  configure_build build-asan -DCMAKE_BUILD_TYPE=Debug -DDOSQL_SANITIZE=ON -DDOSQL_BENCH=OFF
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -j "$JOBS" | tee "$ROOT/build-asan/ctest.log")
fi

echo "=== fuzz: WAL segment reader (${FUZZ_SECONDS:-60}s)"
CXX=clang++ configure_build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDOSQL_FUZZ=ON \
  -DDOSQL_TESTS=OFF -DDOSQL_BENCH=OFF -DCMAKE_CXX_COMPILER=clang++
corpus_work=$(mktemp -d)
cp tests/fuzz/corpus/* "$corpus_work"/
./build-fuzz/fuzz_segment_reader -max_total_time="${FUZZ_SECONDS:-60}" -timeout=10 \
  -rss_limit_mb=2048 "$corpus_work" tests/fuzz/corpus 2>&1 | tail -n 5
rm -rf "$corpus_work"

# One closing line for the whole run: every ctest test of both builds, plus the fuzz run.
total=3  # the fuzz run and the two package tests
for f in build/ctest.log build-asan/ctest.log; do
  [ -f "$f" ] || continue
  n=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$f" | tail -n 1)
  total=$((total + ${n:-0}))
done
echo "all: $total passed, 0 failed"
