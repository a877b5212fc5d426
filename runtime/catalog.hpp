// The shape of every user table as capture and replay need it: stored columns in the order
// SQLite's preupdate hook reports them, the primary key, rowid-ness and REAL affinity.
// Loaded by running SQL on a connection: never from inside a SQLite hook.
#pragma once

#include <sqlite3.h>

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <dosql/error.hpp>

namespace dosql::detail {

struct column_info {
  std::string name;
  std::string type;       // declared type
  bool real_affinity = false;
  bool generated = false;  // a STORED generated column (reported, never inserted)
};

struct table_info {
  std::string name;
  std::vector<column_info> stored;  // every non-VIRTUAL column, in cid order
  std::vector<size_t> pk;           // indices into `stored`, in primary-key order
  bool without_rowid = false;
  /// No declared primary key: rows are identified by rowid ("key" = [rowid]).
  bool keyed_by_rowid() const noexcept { return pk.empty(); }
};

class catalog {
 public:
  /// Reloads every table of the main database (skipping sqlite_* and _dosql_*).
  error load(sqlite3* db);
  const table_info* find(std::string_view table) const;
  const std::unordered_map<std::string, table_info>& tables() const noexcept { return tables_; }

 private:
  std::unordered_map<std::string, table_info> tables_;
};

/// True for dosql's own tables (_dosql_meta, ...), which users may not write.
inline bool is_internal_table(std::string_view t) noexcept { return t.substr(0, 7) == "_dosql_"; }

}  // namespace dosql::detail
