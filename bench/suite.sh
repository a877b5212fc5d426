#!/usr/bin/env bash
# bench/suite.sh -- every benchmark in one command, one table (issue 6).
#
#   bench/suite.sh [--quick] [--reps R] [--rev REV] [--build-dir DIR] [--no-build] [--no-micro]
#                  [--remote-only]
#
# 1. Builds peer_bench, wal_bench, db_bench and cdc_bench (Release -O2, DOSQL_TESTS=OFF) in its
#    own build dir (default build-suite/: cmake/ for the working tree, cmake-rev/ for --rev).
#    --rev REV builds that git revision from a snapshot
#    (git archive) instead of the working tree, so edits in progress do not leak in.
# 2. Describes the machine (nproc, CPU, RAM, kernel, disk, fdatasync latency) and starts the
#    peer: ../shared/peer/pg_cdc_peer.sh start (PostgreSQL 15 + wal2json, 127.0.0.1:55432);
#    it is stopped at the end, also on failure or Ctrl-C.
# 3. R repetitions (default 3) of every comparison, PostgreSQL and dosql alternated (odd
#    repetitions PostgreSQL first), each side pinned to CPU 0 and unpinned:
#      run  N K   the peer's generated workload file (N txns x K statements, mix 60/30/10):
#                 PostgreSQL via `pg_cdc_peer.sh run N K`, dosql via `peer_bench run FILE`
#                 (commit throughput; then decode + deliver the stream to one consumer
#                 writing JSON to a file; dosql's stream checked against the peer's oracle)
#      lat  N     commit-to-consumer latency, N single-row INSERTs 1 ms apart
#                 (`pg_cdc_peer.sh latency N --pace-ms 1` / `peer_bench latency DIR N 1`)
#      remote, rlat  remote subscribers (issue 18), dosql only, beside the PostgreSQL `run` of
#                 the 100-row shape and `lat` above (pg_recvlogical over TCP): `peer_bench
#                 remote-run FILE DIR --reps 2` (delivery to an in-process consumer actor and to
#                 a remote one in a second process over 127.0.0.1, both orders) and `peer_bench
#                 remote-latency DIR N 1` (in-process, then remote).
#    Shapes: 10000x1, 1000x100, 1x100000 (inserts), latency 5000; --quick: 1000x1, 100x100,
#    1x10000, latency 500 and 1 repetition. --remote-only: only the 100-row shape, the latency
#    cases and the remote cases (no step 4): the issue-18 comparison in a few minutes.
#    Contention guard (the peer's): before each case wait up to $SUITE_QUIET_WAIT s (30) for
#    other processes to use < $SUITE_MAX_FOREIGN % (10) of the machine; a run during which they
#    used more is kept but flagged contended and left out of the medians when clean runs
#    exist; cases short of R clean runs are rerun for up to $SUITE_FILL_BUDGET s (600).
# 4. dosql's own benchmarks once, with their targets: wal_bench, db_bench (dosql vs SQLite
#    FULL pairs), cdc_bench read (raw, decoded, 8 consumers) over a 10M-row WAL and rss.
# 5. Prints the table and writes it to BUILD_DIR/suite-<UTC stamp>.md (and suite-latest.md);
#    raw results (one JSON object per run) in BUILD_DIR/suite-<stamp>.jsonl.
#
# Env: PGPEER_SCRIPT (../shared/peer/pg_cdc_peer.sh), PGPEER_DIR (/tmp/pgpeer),
#      DOSQL_BENCH_DIR (/tmp: scratch data directories, removed afterwards).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEER=${PGPEER_SCRIPT:-$ROOT/../shared/peer/pg_cdc_peer.sh}
export PGPEER_DIR=${PGPEER_DIR:-${TMPDIR:-/tmp}/pgpeer}
WORK=$PGPEER_DIR/work
SCRATCH=${DOSQL_BENCH_DIR:-/tmp}/dosql-suite-$$
MAX_FOREIGN=${SUITE_MAX_FOREIGN:-10}
QUIET_WAIT=${SUITE_QUIET_WAIT:-30}
QUICK=0 REPS="" REV="" BUILD=$ROOT/build-suite DO_BUILD=1 DO_MICRO=1 REMOTE_ONLY=0
CMDLINE="bench/suite.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift;;
    --reps) REPS=$2; shift 2;;
    --rev) REV=$2; shift 2;;
    --build-dir) BUILD=$(realpath -m "$2"); shift 2;;
    --no-build) DO_BUILD=0; shift;;
    --no-micro) DO_MICRO=0; shift;;
    --remote-only) REMOTE_ONLY=1 DO_MICRO=0; shift;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0;;
    *) echo "suite.sh: unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
if [ "$QUICK" = 1 ]; then
  REPS=${REPS:-1} SHAPES=("1000 1 60,30,10" "100 100 60,30,10" "1 10000 100,0,0") LAT_N=500
  CDC_ROWS=1000000 RSS_ROWS=500000 FILL_BUDGET=${SUITE_FILL_BUDGET:-0}
  GB_ARGS=(--benchmark_repetitions=1 --benchmark_min_time=0.2)
else
  REPS=${REPS:-3} SHAPES=("10000 1 60,30,10" "1000 100 60,30,10" "1 100000 100,0,0") LAT_N=5000
  CDC_ROWS=10000000 RSS_ROWS=5000000 FILL_BUDGET=${SUITE_FILL_BUDGET:-600}
  GB_ARGS=(--benchmark_repetitions=3)
fi
CPUS_VARIANTS=(0 all)
shape_name() { set -- $1; echo "${1}x${2}"; }
SHAPE_K1=$(shape_name "${SHAPES[0]}") SHAPE_K100=$(shape_name "${SHAPES[1]}") SHAPE_BIG=$(shape_name "${SHAPES[2]}")
[ "$REMOTE_ONLY" = 1 ] && SHAPES=("${SHAPES[1]}")

log() { echo "[suite] $*" >&2; }
die() { echo "[suite] ERROR: $*" >&2; exit 1; }
[ -x "$PEER" ] || [ -f "$PEER" ] || die "peer script not found: $PEER"
command -v python3 >/dev/null || die "python3 is needed (the peer installs it: $PEER start)"
REPORT="python3 $ROOT/bench/suite_report.py"

# ---- 1. build ---------------------------------------------------------------------------------
SRC=$ROOT
if [ -n "$REV" ]; then
  SRC=$BUILD/src
  rm -rf "$SRC"; mkdir -p "$SRC"
  git -C "$ROOT" archive "$REV" | tar -x -C "$SRC"
  log "building revision $(git -C "$ROOT" rev-parse --short "$REV") from a snapshot in $SRC"
fi
BENCHES=(peer_bench wal_bench db_bench cdc_bench)
[ "$REMOTE_ONLY" = 1 ] && BENCHES=(peer_bench)
BIN=$BUILD/cmake                       # the working tree
[ -n "$REV" ] && BIN=$BUILD/cmake-rev  # a snapshot (CMake ties a build dir to one source dir)
if [ "$DO_BUILD" = 1 ]; then
  log "building (Release) in $BIN"
  if [ -f "$BIN/CMakeCache.txt" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$SRC" "$BIN/CMakeCache.txt"; then
    log "$BIN was configured for another source directory: starting it afresh"
    rm -rf "$BIN"
  fi
  # Release at -O2 (the project's documented figures are -O2; GCC 12's -O3 also trips a false
  # -Wrestrict in <string> under -Werror).
  cmake -S "$SRC" -B "$BIN" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
    -DDOSQL_TESTS=OFF -DDOSQL_BENCH=ON >/dev/null
  ninja -C "$BIN" "${BENCHES[@]}" >&2
fi
for b in "${BENCHES[@]}"; do [ -x "$BIN/$b" ] || die "missing $BIN/$b (build failed?)"; done
if [ -n "$REV" ]; then
  DESC_REV="$(git -C "$ROOT" rev-parse --short "$REV") (snapshot)"
else
  DESC_REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || echo ' + uncommitted changes in the working tree')"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$BUILD/suite-$STAMP.jsonl MD=$BUILD/suite-$STAMP.md MACHINE=$BUILD/suite-$STAMP.machine.json
mkdir -p "$BUILD" "$SCRATCH"
: > "$RAW"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  log "stopping the peer"
  "$PEER" stop >&2 || true
  rm -rf "$SCRATCH"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 2. machine, peer ---------------------------------------------------------------------------
log "starting the peer ($PEER start)"
"$PEER" start >&2
FSYNC=$("$BIN/peer_bench" fsync "$SCRATCH/fsync" 300 | sed -n 's/^RESULT //p')
jq_py() { python3 -c 'import sys,json; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
CPU_MODEL=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)
VIRT=$(systemd-detect-virt 2>/dev/null || true)
IDLE=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo "?")
FS=$(findmnt -no SOURCE,FSTYPE --target "${DOSQL_BENCH_DIR:-/tmp}" 2>/dev/null | tr -s ' ' || echo "?")
OS=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -s)
CXX_V=$(c++ --version 2>/dev/null | head -1)
PG_V=$(/usr/lib/postgresql/15/bin/postgres --version 2>/dev/null || echo "PostgreSQL ?")
W2J_V=$(dpkg-query -W -f='${Version}' postgresql-15-wal2json 2>/dev/null || echo "?")
DESCRIPTION="$(nproc) vCPU ${CPU_MODEL} (systemd-detect-virt: ${VIRT:-none}; cpuidle driver $IDLE), $MEM RAM, $OS, kernel $(uname -r); \
scratch fs ${FS}; fdatasync of a 4 KiB block p50 $(jq_py "$FSYNC" fdatasync_4k_p50_us) µs, p99 $(jq_py "$FSYNC" fdatasync_4k_p99_us) µs; \
dosql $DESC_REV built Release -O2 with ${CXX_V}; ${PG_V}, wal2json ${W2J_V}"
log "machine: $DESCRIPTION"

# ---- 3. the comparisons -------------------------------------------------------------------------
# run_case CASE REP CMD...: wait for a quiet machine, run, append the RESULT (+ case, rep,
# contended) to $RAW; a failed command is recorded as failed and the suite goes on.
run_case() {
  local case=$1 rep=$2; shift 2
  local q out err line f cont
  q=$($REPORT quiet "$MAX_FOREIGN" "$QUIET_WAIT")
  log "rep $rep: $case"
  out=$SCRATCH/out.txt err=$SCRATCH/err.txt
  if "$@" >"$out" 2>"$err"; then :; else log "  exit $? (see below)"; fi
  line=$(sed -n 's/^RESULT //p' "$out" | tail -1)
  grep -v '^\[pgpeer\]' "$err" | tail -2 | sed 's/^/  /' >&2 || true
  if [ -z "$line" ]; then
    local e; e=$(tail -3 "$err" | tr '\n' ' ' | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')
    echo "{\"case\": \"$case\", \"rep\": $rep, \"failed\": true, \"error\": $e}" >> "$RAW"
    log "  FAILED: $(tail -1 "$err")"
    return 0
  fi
  f=$(jq_py "$line" foreign_cpu_pct)
  cont=false
  if awk -v f="$f" -v m="$MAX_FOREIGN" 'BEGIN{exit !(f>m)}'; then
    cont=true; log "  contended: other processes used ${f}% of the machine (left out of medians)"
  fi
  python3 - "$line" "$case" "$rep" "$cont" "$q" >> "$RAW" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
r.update({"case": sys.argv[2], "rep": int(sys.argv[3]), "contended": sys.argv[4] == "true",
          "quiet": json.loads(sys.argv[5])})
print(json.dumps(r))
PY
}

pin() { if [ "$1" = all ]; then echo ""; else echo "taskset -c $1"; fi; }

# Every case of one repetition as "CASE|COMMAND" lines, PostgreSQL and dosql alternated.
cases_of_rep() {
  local rep=$1 s n k mix shape cp sqlf oracle pgc dqc
  for s in "${SHAPES[@]}"; do
    set -- $s; n=$1 k=$2 mix=$3 shape=${1}x${2}
    sqlf=$WORK/wl_${n}x${k}_${mix//,/-}_s42.sql oracle=$WORK/oracle_${n}x${k}_${mix//,/-}_s42.jsonl
    for cp in "${CPUS_VARIANTS[@]}"; do
      pgc="run $shape pg cpus=$cp|$PEER run $n $k --mix $mix --sync on --cpus $cp"
      dqc="run $shape dosql cpus=$cp|$(pin "$cp") $BIN/peer_bench run $sqlf $SCRATCH/db --oracle $oracle"
      if [ $((rep % 2)) = 1 ]; then printf '%s\n%s\n' "$pgc" "$dqc"; else printf '%s\n%s\n' "$dqc" "$pgc"; fi
      # remote subscribers: after the peer's run of this shape (its file and oracle exist)
      if [ "$shape" = "$SHAPE_K100" ]; then
        printf '%s\n' "remote $shape dosql cpus=$cp|$(pin "$cp") $BIN/peer_bench remote-run $sqlf $SCRATCH/rdb --oracle $oracle --reps 2"
      fi
    done
  done
  for cp in "${CPUS_VARIANTS[@]}"; do
    pgc="lat $LAT_N pg cpus=$cp|$PEER latency $LAT_N --pace-ms 1 --sync on --cpus $cp"
    dqc="lat $LAT_N dosql cpus=$cp|$(pin "$cp") $BIN/peer_bench latency $SCRATCH/lat $LAT_N 1"
    if [ $((rep % 2)) = 1 ]; then printf '%s\n%s\n' "$pgc" "$dqc"; else printf '%s\n%s\n' "$dqc" "$pgc"; fi
    printf '%s\n' "rlat $LAT_N dosql cpus=$cp|$(pin "$cp") $BIN/peer_bench remote-latency $SCRATCH/rlat $LAT_N 1"
  done
}

declare -A CMD_OF=()
for rep in $(seq 1 "$REPS"); do
  while IFS='|' read -r c cmd; do
    CMD_OF[$c]=$cmd
    # shellcheck disable=SC2086
    run_case "$c" "$rep" $cmd
  done < <(cases_of_rep "$rep")
done
# Fill: cases with fewer than REPS clean runs, within the budget.
deadline=$(( $(date +%s) + FILL_BUDGET )) extra=$REPS
while [ "$(date +%s)" -lt "$deadline" ]; do
  missing=0 extra=$((extra + 1))
  for c in "${!CMD_OF[@]}"; do
    [ "$($REPORT clean "$RAW" "$c" "$REPS")" = 1 ] && continue
    missing=1; [ "$(date +%s)" -lt "$deadline" ] || break
    # shellcheck disable=SC2086
    run_case "$c" "$extra" ${CMD_OF[$c]}
  done
  [ "$missing" = 1 ] || break
done

# ---- 4. dosql's own benchmarks --------------------------------------------------------------
CDC_JSON="{}"
if [ "$DO_MICRO" = 1 ]; then
  "$PEER" stop >&2 || true  # nothing of PostgreSQL's runs beside them
  $REPORT quiet "$MAX_FOREIGN" "$QUIET_WAIT" >/dev/null
  log "wal_bench"
  DOSQL_BENCH_DIR=$SCRATCH $REPORT wrap "$BUILD/suite-$STAMP.wal_bench.cpu" -- "$BIN/wal_bench" "${GB_ARGS[@]}" \
    --benchmark_report_aggregates_only=true --benchmark_out="$BUILD/suite-$STAMP.wal_bench.json" \
    --benchmark_out_format=json >&2 || log "wal_bench failed"
  $REPORT quiet "$MAX_FOREIGN" "$QUIET_WAIT" >/dev/null
  log "db_bench"
  DOSQL_BENCH_DIR=$SCRATCH $REPORT wrap "$BUILD/suite-$STAMP.db_bench.cpu" -- "$BIN/db_bench" "${GB_ARGS[@]}" \
    --benchmark_filter='^BM_[a-z0-9_]+/(dosql|sqlite_full)/' --benchmark_report_aggregates_only=true \
    --benchmark_out="$BUILD/suite-$STAMP.db_bench.json" --benchmark_out_format=json >&2 || log "db_bench failed"
  log "cdc_bench: building a $CDC_ROWS-row WAL"
  "$BIN/cdc_bench" build "$SCRATCH/cdc" "$CDC_ROWS" >&2 || log "cdc_bench build failed"
  for spec in "raw1 raw 1" "event1 event 1" "raw8 raw 8"; do
    set -- $spec
    $REPORT quiet "$MAX_FOREIGN" "$QUIET_WAIT" >/dev/null
    log "cdc_bench read $2 $3"
    $REPORT wrap "$BUILD/suite-$STAMP.cdc_$1.cpu" -- "$BIN/cdc_bench" read "$SCRATCH/cdc" "$2" "$3" 4096 512 3 \
      > "$BUILD/suite-$STAMP.cdc_$1.txt" || log "cdc_bench read $2 $3 failed"
  done
  rm -rf "$SCRATCH/cdc"
  $REPORT quiet "$MAX_FOREIGN" "$QUIET_WAIT" >/dev/null
  log "cdc_bench rss $RSS_ROWS"
  $REPORT wrap "$BUILD/suite-$STAMP.cdc_rss.cpu" -- "$BIN/cdc_bench" rss "$SCRATCH/rss" "$RSS_ROWS" \
    > "$BUILD/suite-$STAMP.cdc_rss.txt" || log "cdc_bench rss failed"
  rm -rf "$SCRATCH/rss"
  P=$BUILD/suite-$STAMP
  CDC_JSON="{\"entries\": \"$CDC_ROWS\", \"rss_rows\": \"$RSS_ROWS\", \"raw1\": \"$P.cdc_raw1.txt\", \"event1\": \"$P.cdc_event1.txt\", \"raw8\": \"$P.cdc_raw8.txt\", \"rss\": \"$P.cdc_rss.txt\"}"
fi

# ---- 5. the table ---------------------------------------------------------------------------
python3 - "$MACHINE" <<PY
import json, sys
json.dump({"stamp": "$STAMP", "command": "$CMDLINE", "description": """$DESCRIPTION""", "reps": $REPS,
           "max_foreign": $MAX_FOREIGN, "cpus_variants": "${CPUS_VARIANTS[*]}".split(),
           "shapes": {"k1": "$SHAPE_K1", "k100": "$SHAPE_K100", "big": "$SHAPE_BIG"},
           "latency_n": $LAT_N,
           "wal_bench_json": "$BUILD/suite-$STAMP.wal_bench.json" if $DO_MICRO else "",
           "db_bench_json": "$BUILD/suite-$STAMP.db_bench.json" if $DO_MICRO else "",
           "cdc_bench": json.loads('$CDC_JSON')}, open(sys.argv[1], "w"), indent=1)
PY
echo
$REPORT table "$RAW" "$MACHINE" "$MD"
cp "$MD" "$BUILD/suite-latest.md"
log "table: $MD (raw runs: $RAW)"
