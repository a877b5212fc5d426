#!/usr/bin/env bash
# The read of a current-state table with equality deletes beside the same table after
# `dosql lakehouse compact` applied them (docs/BENCHMARKS.md, "Compaction and manifest merging"):
#   bench/lakehouse_current_read.sh PATH/dosql [ROWS] [FLUSH_ROWS] [RUNS]
# A keyed table gets ROWS inserts, then updates of every 3rd row and deletes of every 5th, in
# transactions of 1,000 changes; `dosql lakehouse stream` sends them to `dosql lakehouse serve`
# flushing every FLUSH_ROWS rows (many small files and delete files); a copy of the lake is
# compacted; bench/lakehouse_compact_read.mjs then reads both (alternating, median of RUNS).
set -euo pipefail
dosql=$(realpath "${1:?usage: bench/lakehouse_current_read.sh PATH/dosql [ROWS] [FLUSH_ROWS] [RUNS]}")
rows=${2:-20000} flush=${3:-500} runs=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d /tmp/dosql-current-read-XXXXXX)
trap 'kill $srv 2>/dev/null || true; rm -rf "$dir"' EXIT
"$dosql" sql "$dir/src" -e "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, total REAL, qty INTEGER, note TEXT)"
for ((lo = 1; lo <= rows; lo += 1000)); do
  hi=$((lo + 999 < rows ? lo + 999 : rows))
  "$dosql" sql "$dir/src" -e "WITH RECURSIVE c(i) AS (SELECT $lo UNION ALL SELECT i + 1 FROM c WHERE i < $hi) INSERT INTO orders SELECT i, 'customer-' || (i % 500), i * 0.25, i % 100, 'note ' || i FROM c"
done
for ((lo = 1; lo <= rows; lo += 3000)); do
  hi=$((lo + 2999))
  "$dosql" sql "$dir/src" -e "UPDATE orders SET qty = qty + 1, note = 'updated' WHERE id BETWEEN $lo AND $hi AND id % 3 = 0"
  "$dosql" sql "$dir/src" -e "DELETE FROM orders WHERE id BETWEEN $lo AND $hi AND id % 5 = 0"
done
"$dosql" lakehouse serve --dir "$dir/lake" --port 0 --flush-rows "$flush" > "$dir/serve.out" 2> "$dir/serve.err" &
srv=$!
for _ in $(seq 100); do grep -q "listening on" "$dir/serve.out" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/serve.out" | head -1)
"$dosql" lakehouse stream "$dir/src" --to "ws://127.0.0.1:$port" --source bench --stop-at-tail --max-batch-size "$flush" > /dev/null
kill -TERM $srv; wait $srv || true
cp -r "$dir/lake" "$dir/compacted"
"$dosql" lakehouse compact --dir "$dir/compacted" --table dosql/orders
echo "source rows: $("$dosql" sql "$dir/src" -e "SELECT count(*) FROM orders" | tail -1)"
node "$here/bench/lakehouse_compact_read.mjs" "$dir/lake/dosql/orders" "$dir/compacted/dosql/orders" --runs "$runs"
