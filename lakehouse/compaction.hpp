// Compaction of the lakehouse's Iceberg tables (`dosql lakehouse compact`, docs/LAKEHOUSE.md
// "Compaction and snapshot expiry"): small data files rewritten into larger ones as one
// "replace" snapshot, old snapshots expired, unreferenced files deleted.
//
// Per table (T = L/<namespace>/<table dir>):
//  1. the current snapshot's live data files smaller than target_file_bytes are grouped by
//     their schema (the Parquet file's columns and field ids, lakehouse/parquet_reader.hpp), in
//     sequence-number order, and packed into bins of about target_file_bytes; a group with fewer
//     than min_input_files small files is left alone, and so is a bin of one file;
//  2. each bin becomes one new file T/data/compact-<uuid>.parquet (parquet_writer: durable before
//     the commit; the same columns, field ids, key-value `iceberg.schema`);
//  3. one commit (iceberg::table::prepare_replace + the compare-and-swap of the receiver's
//     commit): the rewritten files DELETED, the new ones ADDED, totals of records unchanged; the
//     same metadata version expires the snapshots `expire` does not keep. The summary carries the
//     previous snapshot's dosql.* keys (but dosql.files, which names the new files) and
//     `dosql.marks`: per source the newest {last-lsn, sequence, flush-tables} of the whole
//     history, so the receiver's recovery finds every source's mark after expiry;
//  4. the sweep (iceberg::table::sweep): every file no remaining snapshot references is deleted
//     (the rewritten files once no retained snapshot names them, expired manifests and lists,
//     metadata versions beyond previous_versions_max, orphans of an interrupted compaction).
// Crash safety: before the commit nothing is visible (a crash leaves orphans, swept by the next
// compaction or receiver start); after it, only unreferenced files remain to delete.
// A table with equality deletes (a current-state table): its deletes are applied. Every data file
// is rewritten (whatever its size) without the rows a delete of a higher sequence number removes
// (key columns compared by field id), and the delete files leave in the same replace snapshot, so
// the compacted table has no delete files and the same rows. Position deletes are refused
// (INVALID_ARGUMENT naming the table; dosql writes none). compact() takes L/_dosql/LOCK (the
// receiver's lock): BUSY naming the directory if a receiver runs.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <dosql/error.hpp>

#include "lakehouse/iceberg_table.hpp"

namespace dosql::lakehouse {

struct compact_options {
  std::string dir;              ///< L, the receiver's directory
  std::optional<std::string> table;  ///< "<namespace>/<table dir>" (or "<namespace>/<table>": _changelog added); all if unset
  uint64_t target_file_bytes = 128ull << 20;
  size_t min_input_files = 2;
  iceberg::expire_policy expire;
  std::function<void(const std::string&)> log;  ///< one line per action; may be empty
};

struct compact_report {
  std::string table;  ///< the table directory
  size_t files_before = 0, files_after = 0, rewritten = 0, written = 0;
  size_t snapshots_before = 0, snapshots_after = 0;
  size_t removed_files = 0;  ///< deleted by the sweep
  size_t applied_delete_files = 0, applied_rows = 0;  ///< equality-delete files applied; data rows they removed
  bool committed = false;    ///< a replace snapshot or an expiry was committed
  std::string skipped;       ///< why the table was left alone (compact() of every table), else empty
};

/// Compacts one table whose directory the caller has locked (the receiver, or compact()).
result<compact_report> compact_table(const std::string& table_dir, const compact_options& o);

/// Takes L/_dosql/LOCK, then compacts each table (o.table, or every L/<ns>/<dir> with metadata).
result<std::vector<compact_report>> compact(const compact_options& o);

}  // namespace dosql::lakehouse
