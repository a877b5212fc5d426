// Internal SQLite helpers: RAII statements, binding dosql values, reading columns, and
// turning SQLite failures into dosql errors that carry SQLite's message and the statement.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/value.hpp>
#include <dosql/error.hpp>

namespace dosql::detail {

struct stmt_deleter {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_deleter>;

std::string quote_ident(std::string_view name);
error sql_error(sqlite3* db, std::string_view sql, int rc);
result<stmt_ptr> prepare(sqlite3* db, std::string_view sql);
/// Runs SQL with no parameters and no result rows (may hold several statements).
error exec_simple(sqlite3* db, const char* sql);
/// Binds `v` to parameter `index`. With `copy` false SQLite keeps pointing at v's bytes
/// (SQLITE_STATIC): the caller must rebind or clear the parameter before `v` goes away.
error bind_value(sqlite3_stmt* s, int index, const value& v, bool copy = true);
value column_value(sqlite3_stmt* s, int col);
value to_value(sqlite3_value* v);

}  // namespace dosql::detail
