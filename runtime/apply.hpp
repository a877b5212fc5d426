// Applies WAL entries to a SQLite connection: crash recovery replays committed transactions
// into the database with it, and a replica built only from the change stream uses the same
// code (tests compare the two row for row).
//
// Rows are matched by primary key (by rowid for tables without one); an UPDATE is applied as
// "delete the old identity, insert the full new image". SCHEMA entries re-run their DDL text.
// REQUIRES: the connection has triggers and foreign keys disabled (sqlite3_db_config), so
// that cascades and trigger writes, which are in the stream already, are not applied twice.
// Invariant: a transaction is applied inside one SQLite transaction; ROLLBACK discards it.
#pragma once

#include <sqlite3.h>

#include <functional>
#include <map>
#include <string>

#include "runtime/catalog.hpp"
#include "wal/sqlite_util.hpp"
#include "wal/entry.hpp"

namespace dosql::detail {

class applier {
 public:
  /// `on_commit(commit_lsn)` runs inside the SQLite transaction just before it commits
  /// (recovery writes _dosql_meta there).
  explicit applier(sqlite3* db, std::function<error(uint64_t)> on_commit = {});
  error load();  // (re)read the catalog
  error apply(const entry_view& e);
  bool in_transaction() const noexcept { return in_txn_; }
  /// Rolls back an open transaction (an orphan at the end of the log).
  error abort();
  uint64_t committed() const noexcept { return committed_; }

 private:
  error apply_row(const entry_view& e);
  result<sqlite3_stmt*> cached(const std::string& sql);

  sqlite3* db_;
  std::function<error(uint64_t)> on_commit_;
  catalog catalog_;
  std::map<std::string, stmt_ptr> stmts_;
  bool in_txn_ = false;
  uint64_t committed_ = 0;
};

}  // namespace dosql::detail
