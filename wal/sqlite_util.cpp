#include "wal/sqlite_util.hpp"

namespace dosql::detail {

std::string quote_ident(std::string_view name) {
  std::string s = "\"";
  for (char c : name) {
    if (c == '"') s += '"';
    s += c;
  }
  return s + "\"";
}

error sql_error(sqlite3* db, std::string_view sql, int rc) {
  std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string stmt(sql);
  while (!stmt.empty() && (stmt.back() == ' ' || stmt.back() == '\n' || stmt.back() == ';')) stmt.pop_back();
  return error(ec::sql_error, msg + " (SQLite error " + std::to_string(rc) + ") in statement: " + stmt);
}

result<stmt_ptr> prepare(sqlite3* db, std::string_view sql) {
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &s, nullptr);
  if (rc != SQLITE_OK) return sql_error(db, sql, rc);
  return stmt_ptr(s);
}

error exec_simple(sqlite3* db, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return error(ec::sql_error, msg + " (SQLite error " + std::to_string(rc) + ") in statement: " + sql);
  }
  return {};
}

error bind_value(sqlite3_stmt* s, int i, const value& v, bool copy) {
  int rc = SQLITE_OK;
  auto del = copy ? SQLITE_TRANSIENT : SQLITE_STATIC;
  switch (v.index()) {
    case 0: rc = sqlite3_bind_null(s, i); break;
    case 1: rc = sqlite3_bind_int64(s, i, std::get<int64_t>(v)); break;
    case 2: rc = sqlite3_bind_double(s, i, std::get<double>(v)); break;
    case 3: {
      auto& t = std::get<std::string>(v);
      rc = sqlite3_bind_text64(s, i, t.data(), t.size(), del, SQLITE_UTF8);
      break;
    }
    case 4: {
      auto& b = std::get<bytes>(v);
      rc = sqlite3_bind_blob64(s, i, b.data(), b.size(), del);
      break;
    }
  }
  if (rc != SQLITE_OK) return sql_error(sqlite3_db_handle(s), sqlite3_sql(s), rc);
  return {};
}

value to_value(sqlite3_value* v) {
  switch (sqlite3_value_type(v)) {
    case SQLITE_INTEGER: return static_cast<int64_t>(sqlite3_value_int64(v));
    case SQLITE_FLOAT: return sqlite3_value_double(v);
    case SQLITE_TEXT:
      return std::string(reinterpret_cast<const char*>(sqlite3_value_text(v)),
                         static_cast<size_t>(sqlite3_value_bytes(v)));
    case SQLITE_BLOB: {
      auto p = static_cast<const uint8_t*>(sqlite3_value_blob(v));
      return bytes(p, p + sqlite3_value_bytes(v));
    }
    default: return nullptr;
  }
}

value column_value(sqlite3_stmt* s, int col) { return to_value(sqlite3_column_value(s, col)); }

}  // namespace dosql::detail
