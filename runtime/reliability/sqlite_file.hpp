// Internal: the SQLite plumbing the reliability helpers that keep a file of their own share
// (the dead letter queue and exactly_once_sink): a durable open, binding text and integers,
// stepping a statement to its end, and rolling back an unfinished transaction. Generic
// statement helpers (prepare, exec_simple, sql_error) are wal/sqlite_util.hpp's.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <dosql/error.hpp>

namespace dosql::reliability::sqlite_file {

struct db_closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;

/// Opens (creating if missing) `path` for durable writes: WAL journal, synchronous=FULL, a
/// busy timeout so another process holding the write lock briefly is waited for; runs
/// `schema`; syncs the directory so a newly created file's name is durable too.
result<db_ptr> open_durable(const std::string& path, const char* schema);

/// Steps a statement that returns no rows (or whose rows are ignored) to completion.
error step_done(sqlite3* db, sqlite3_stmt* s);
error bind_text(sqlite3* db, sqlite3_stmt* s, int i, std::string_view t);
error bind_i64(sqlite3* db, sqlite3_stmt* s, int i, int64_t v);

/// Rolls back the connection's open transaction on scope exit unless released.
class rollback_guard {
 public:
  explicit rollback_guard(sqlite3* db) : db_(db) {}
  ~rollback_guard();
  void release() { db_ = nullptr; }
  rollback_guard(const rollback_guard&) = delete;
  rollback_guard& operator=(const rollback_guard&) = delete;

 private:
  sqlite3* db_;
};

}  // namespace dosql::reliability::sqlite_file
