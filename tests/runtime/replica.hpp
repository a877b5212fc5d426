// Test support: a replica built only from the change stream (the WAL), applied
// incrementally, and a row-for-row comparison of two SQLite databases' user tables.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/apply.hpp"
#include "wal/reader.hpp"

namespace dosql::test {

class replica {
 public:
  explicit replica(const std::string& path);
  ~replica();
  /// Applies every WAL entry after the last one applied, up to the tail. Throws on error.
  void catch_up(const std::string& wal_dir);
  sqlite3* db() const { return db_; }
  uint64_t applied_lsn() const { return applied_; }

 private:
  sqlite3* db_ = nullptr;
  std::unique_ptr<detail::applier> ap_;
  uint64_t applied_ = 0;
};

/// Every user table's rows (sorted), rendered as text; tables without a primary key
/// include their rowid. Skips sqlite_* and _dosql_* tables.
std::vector<std::string> dump_tables(sqlite3* db);
std::vector<std::string> dump_tables(const std::string& path);

}  // namespace dosql::test
