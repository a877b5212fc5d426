// Change capture on the database's single writer connection (internal). SQLite's preupdate
// hook writes each row change, already msgpack-encoded, into the open transaction's buffer;
// the exec wrapper (database.cpp) cuts the buffer back at statement and savepoint marks
// (partial rollbacks are invisible to every hook) and hands the buffer to the WAL writer at
// commit. The authorizer classifies each statement when it is prepared.
//
// Invariants:
//  - The buffer holds exactly the changes of the open transaction that SQLite still has:
//    every undo (statement abort, ROLLBACK TO, ROLLBACK) cuts it back to the matching mark.
//  - Nothing is captured for the temp schema or dosql's own tables; writes SQLite's hooks
//    would report wrongly (attached databases, incremental blob I/O, VACUUM) are refused.
//  - A commit with captured changes but no meta-LSN write (one that bypassed the wrapper)
//    is vetoed by the commit hook.
// Thread safety: none; used under the database's writer mutex only.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/catalog.hpp"
#include <dosql/error.hpp>

namespace dosql::detail {

/// What the authorizer saw while a statement was prepared.
struct statement_info {
  enum class kind : uint8_t { other, begin, commit, rollback, savepoint, release, rollback_to };
  kind k = kind::other;
  std::string savepoint;  // for savepoint/release/rollback_to
  // DDL on the main database: the authorizer code and its arguments.
  int ddl_code = 0;
  std::string ddl_object;   // table (or index/trigger/view) name
  std::string ddl_table;    // table an index/trigger belongs to; ALTER's table
  std::string ddl_column;   // DROP COLUMN's column
  std::string denied;       // non-empty: the statement is refused, and why
};

class capture {
 public:
  struct mark {
    size_t bytes = 0;
    uint32_t count = 0;
  };

  /// Registers the hooks on `db` (which must have prepared nothing yet).
  void attach(sqlite3* db);
  ~capture();
  sqlite3* db() const noexcept { return db_; }

  detail::catalog& tables() noexcept { return catalog_; }

  // -- per statement --
  void begin_prepare() { info_ = {}; }
  const statement_info& info() const noexcept { return info_; }
  /// While false, the hooks capture nothing (replay, internal statements).
  void set_enabled(bool on) noexcept { enabled_ = on; }
  /// Allows writes to dosql's own tables (meta updates) while set.
  void set_internal(bool on) noexcept { internal_ = on; }
  /// An error raised inside a hook during the last step (cleared on read).
  error take_hook_error() { return std::exchange(hook_error_, error{}); }

  // -- the open transaction's buffer --
  // The buffer is [streamed prefix][spill file][memory]. The streamed prefix was handed to
  // the WAL writer before COMMIT (settled entries: below every savepoint's and the current
  // statement's marks, so no undo can reach them). Marks are absolute (all three parts
  // included), always at entry boundaries, and never below the streamed prefix.
  mark current() const noexcept { return {streamed_bytes_ + spilled_bytes_ + entries_.size(), count_}; }
  mark streamed() const noexcept { return {streamed_bytes_, streamed_count_}; }
  void truncate(mark m) noexcept;
  void clear() noexcept;
  uint32_t count() const noexcept { return count_; }
  /// The in-memory entries below `m` (which must cover the spill file) and their count.
  std::string_view memory_part(mark m, uint32_t& count) const noexcept {
    count = m.count - streamed_count_ - spilled_count_;
    return std::string_view(entries_).substr(0, m.bytes - streamed_bytes_ - spilled_bytes_);
  }
  /// True when `m` lies at or beyond the spill file's end (so memory_part(m) is defined).
  bool covers_spill(mark m) const noexcept { return m.bytes >= streamed_bytes_ + spilled_bytes_; }
  /// The entries below `m` (spilled ones included) were handed to the WAL writer: they
  /// leave the buffer. REQUIRES: covers_spill(m).
  void drop_prefix(mark m);

  /// A large transaction's buffer moves to an unlinked file in `dir` once it holds more
  /// than `threshold` bytes, so that its row images are never all in memory.
  void set_spill(std::string dir, size_t threshold) {
    spill_dir_ = std::move(dir);
    spill_threshold_ = threshold;
  }
  struct spill_chunk {
    uint64_t offset = 0, bytes = 0;
    uint32_t count = 0;
  };
  const std::vector<spill_chunk>& spilled() const noexcept { return chunks_; }
  /// Reads a spilled chunk back (for handing it to the WAL writer).
  error read_chunk(const spill_chunk& c, std::string& out) const;
  /// Appends a SCHEMA entry (after image = msgpack map of the change).
  void add_schema_entry(const std::string& table, const std::string& image);

  bool meta_written = false;       // the wrapper wrote _dosql_meta for this commit
  bool txn_rolled_back = false;    // the rollback hook fired (the whole transaction is gone)
  bool txn_has_ddl = false;        // reload the catalog if this transaction is undone

  // savepoint stack: name and buffer mark at SAVEPOINT time
  struct savepoint_mark {
    std::string name;
    mark at;
  };
  std::vector<savepoint_mark> savepoints;
  bool txn_opened_by_savepoint = false;

 private:
  static void on_preupdate(void* self, sqlite3* db, int op, const char* zdb, const char* table,
                           sqlite3_int64 k1, sqlite3_int64 k2);
  static int on_commit(void* self);
  static void on_rollback(void* self);
  static int on_authorize(void* self, int code, const char* a1, const char* a2, const char* a3,
                          const char* a4);
  void record(int op, const char* table, sqlite3_int64 k1, sqlite3_int64 k2);

  sqlite3* db_ = nullptr;
  detail::catalog catalog_;
  statement_info info_;
  bool enabled_ = true;
  bool internal_ = false;
  error hook_error_;
  void maybe_spill();
  std::string entries_;  // packed entries of the open transaction (the part in memory)
  uint32_t count_ = 0;   // entries in the transaction, streamed and spilled ones included
  uint64_t streamed_bytes_ = 0;  // the prefix already handed to the WAL writer
  uint32_t streamed_count_ = 0;
  std::string spill_dir_;
  size_t spill_threshold_ = SIZE_MAX;
  int spill_fd_ = -1;
  uint64_t spilled_bytes_ = 0;   // in the spill file (which starts after the streamed prefix)
  uint32_t spilled_count_ = 0;
  std::vector<spill_chunk> chunks_;
  std::string key_, before_, after_;  // scratch
};

/// Why dosql refuses `PRAGMA name` (with `arg` = its value, null when read), on any
/// connection; empty if allowed. Reading a PRAGMA is allowed except wal_checkpoint.
std::string pragma_refusal(const char* name, const char* arg);

}  // namespace dosql::detail
