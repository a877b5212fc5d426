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
#include "wal/error.hpp"

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
  // Marks are absolute (spilled part included), always at entry boundaries.
  mark current() const noexcept { return {spilled_bytes_ + entries_.size(), count_}; }
  void truncate(mark m) noexcept;
  void clear() noexcept;
  uint32_t count() const noexcept { return count_; }
  /// The entries still in memory (all of them unless the transaction spilled).
  const std::string& entries() const noexcept { return entries_; }
  uint32_t in_memory_count() const noexcept { return count_ - spilled_count_; }

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
  /// Reads a spilled chunk back (for streaming it to the WAL writer at commit).
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
  uint32_t count_ = 0;   // entries in the transaction, spilled ones included
  std::string spill_dir_;
  size_t spill_threshold_ = SIZE_MAX;
  int spill_fd_ = -1;
  uint64_t spilled_bytes_ = 0;
  uint32_t spilled_count_ = 0;
  std::vector<spill_chunk> chunks_;
  std::string key_, before_, after_;  // scratch
};

}  // namespace dosql::detail
