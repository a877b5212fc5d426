#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the release build's test suite, an
# outside project built against the installed package, the same suite under ASan+UBSan, the
# WAL and subscription suites under TSan, and the WAL segment-reader fuzzer for a bounded time.
# Warnings are errors here (DOSQL_WERROR=ON); a user's own build does not need that.
#   tools/test.sh            everything (what CI runs)
#   FUZZ_SECONDS=N           fuzzing time (default 60)
#   DOSQL_SKIP_SANITIZE=1    skip the sanitizer builds (quicker local runs)
# Every step runs even if an earlier one failed; the closing line counts what really ran:
# each ctest test, each package build+run, the fuzz run. Exit status 1 if anything failed.
set -uo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
bash tools/setup.sh || exit 1
for d in examples/*/ tests/lakehouse/; do npm_deps "$d" || exit 1; done  # npm packages: the examples', the Parquet readers

passed=0
failed=0
failures=()
fail() {  # fail NAME
  failed=$((failed + 1))
  failures+=("$1")
  echo "!!! FAILED: $1"
}
ok() { passed=$((passed + 1)); }

# ctest_step NAME DIR [env...]: runs the suite, adds its counts (a suite that did not run at
# all counts as one failure).
ctest_step() {
  local name=$1 dir=$2
  shift 2
  local log="$dir/ctest.log"
  rm -f "$log"
  (cd "$dir" && env "$@" ctest --output-on-failure -j "$JOBS") 2>&1 | tee "$log"
  local line
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    fail "$name (ctest ran no test)"
    return
  fi
  local f n
  f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  n=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
  passed=$((passed + n - f))
  failed=$((failed + f))
  [ "$f" -eq 0 ] || failures+=("$name: $f of $n tests")
}

# catch_step NAME BINARY [env...]: runs a Catch2 binary directly, adds its test-case counts.
catch_step() {
  local name=$1 bin=$2
  shift 2
  local log="$bin.log"
  env "$@" "$bin" 2>&1 | tee "$log" | tail -n 20
  local all line
  all=$(grep -E '^All tests passed \([0-9]+ assertions? in [0-9]+ test cases?\)' "$log" | tail -n 1)
  line=$(grep -E '^test cases: +[0-9]+ \| +[0-9]+ passed \| +[0-9]+ failed' "$log" | tail -n 1)
  if [ -n "$all" ]; then
    passed=$((passed + $(sed -E 's/.* in ([0-9]+) test cases?\)/\1/' <<<"$all")))
  elif [ -n "$line" ]; then
    local p f
    p=$(sed -E 's/.*\| +([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.*\| +([0-9]+) failed.*/\1/' <<<"$line")
    passed=$((passed + p))
    failed=$((failed + f))
    failures+=("$name: $f test cases")
  else
    fail "$name (no Catch2 summary: crashed?)"
  fi
}

echo "=== release build + tests"
if configure_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDOSQL_WERROR=ON; then
  ctest_step release build
else
  fail "release build"
fi

echo "=== install package + an outside project built against it"
rm -rf build/install build/package-test
if cmake --install build --prefix "$ROOT/build/install" >/dev/null &&
   cmake -S tests/package -B build/package-test -G Ninja -DCMAKE_PREFIX_PATH="$ROOT/build/install" >/dev/null &&
   cmake --build build/package-test >/dev/null &&
   rm -rf build/package-data && ./build/package-test/app build/package-data; then
  ok
else
  fail "package: find_package(dosql)"
fi
# ... and through pkg-config
export PKG_CONFIG_PATH="$ROOT/build/install/lib/pkgconfig"
if mkdir -p build/package-test &&
   c++ -std=c++20 tests/package/app.cpp $(pkg-config --cflags --libs dosql) -o build/package-test/app-pc &&
   rm -rf build/package-data && ./build/package-test/app-pc build/package-data; then
  ok
else
  fail "package: pkg-config"
fi
unset PKG_CONFIG_PATH

if [ "${DOSQL_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "=== ASan+UBSan build + tests"
  if configure_build build-asan -DCMAKE_BUILD_TYPE=Debug -DDOSQL_SANITIZE=ON -DDOSQL_BENCH=OFF -DDOSQL_WERROR=ON; then
    # (the event-sourcing kill test runs its 50 rounds in the release build; 20 here)
    ctest_step asan build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ES_CRASH_ROUNDS=20 DOSQL_LH_KILL_ROUNDS=20
  else
    fail "asan build"
  fi

  # The WAL (writer, background syncer and segment preparer threads, readers beside a live
  # writer) under TSan. The actor-based suites are left out: Debian's libcaf_core is not built
  # with -fsanitize=thread, so TSan cannot see the happens-before edge of a mailbox hand-off
  # and reports every message as a race (docs/ARCHITECTURE.md, "Threads").
  echo "=== TSan build + WAL tests"
  if BUILD_TARGETS=wal_tests configure_build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
       -DDOSQL_TSAN=ON -DDOSQL_BENCH=OFF -DDOSQL_WERROR=ON; then
    catch_step tsan build-tsan/wal_tests TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
  else
    fail "tsan build"
  fi
fi

echo "=== fuzz: WAL segment reader (${FUZZ_SECONDS:-60}s)"
corpus_work=$(mktemp -d)
if CXX=clang++ BUILD_TARGETS=fuzz_segment_reader configure_build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDOSQL_FUZZ=ON \
     -DDOSQL_TESTS=OFF -DDOSQL_BENCH=OFF -DCMAKE_CXX_COMPILER=clang++ -DDOSQL_WERROR=ON &&
   cp tests/fuzz/corpus/* "$corpus_work"/ &&
   ./build-fuzz/fuzz_segment_reader -max_total_time="${FUZZ_SECONDS:-60}" -timeout=10 \
     -rss_limit_mb=2048 "$corpus_work" tests/fuzz/corpus > build-fuzz/fuzz.log 2>&1; then
  tail -n 5 build-fuzz/fuzz.log
  ok
else
  tail -n 30 build-fuzz/fuzz.log 2>/dev/null
  fail "fuzz"
fi
rm -rf "$corpus_work"

for f in "${failures[@]}"; do echo "failed: $f"; done
echo "all: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
