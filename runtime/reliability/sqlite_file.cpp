#include "runtime/reliability/sqlite_file.hpp"

#include <filesystem>

#include "wal/file.hpp"
#include "wal/sqlite_util.hpp"

namespace dosql::reliability::sqlite_file {

result<db_ptr> open_durable(const std::string& path, const char* schema) {
  if (path.empty()) return error(ec::invalid_argument, "empty database path");
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  db_ptr db(raw);
  if (rc != SQLITE_OK) {
    return error(ec::sql_error, "cannot open " + path + ": " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db.get(), 5000);
  {
    auto st = dosql::detail::prepare(db.get(), "PRAGMA journal_mode=WAL");
    if (!st) return st.err();
    rc = sqlite3_step(st->get());
    if (rc != SQLITE_ROW) return dosql::detail::sql_error(db.get(), "PRAGMA journal_mode=WAL", rc);
    std::string mode = reinterpret_cast<const char*>(sqlite3_column_text(st->get(), 0));
    if (mode != "wal") return error(ec::sql_error, path + ": could not switch to WAL journal mode (got " + mode + ")");
  }
  if (auto e = dosql::detail::exec_simple(db.get(), "PRAGMA synchronous=FULL")) return e;
  if (auto e = dosql::detail::exec_simple(db.get(), schema)) return error(e.code(), path + ": " + e.message());
  auto dir = std::filesystem::path(path).parent_path().string();
  if (auto e = wal::sync_dir(dir.empty() ? "." : dir)) return e;
  return db;
}

error step_done(sqlite3* db, sqlite3_stmt* s) {
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
  }
  if (rc != SQLITE_DONE) return dosql::detail::sql_error(db, sqlite3_sql(s), rc);
  return {};
}

error bind_text(sqlite3* db, sqlite3_stmt* s, int i, std::string_view t) {
  int rc = sqlite3_bind_text64(s, i, t.data(), t.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) return dosql::detail::sql_error(db, sqlite3_sql(s), rc);
  return {};
}

error bind_i64(sqlite3* db, sqlite3_stmt* s, int i, int64_t v) {
  int rc = sqlite3_bind_int64(s, i, v);
  if (rc != SQLITE_OK) return dosql::detail::sql_error(db, sqlite3_sql(s), rc);
  return {};
}

rollback_guard::~rollback_guard() {
  if (db_ && !sqlite3_get_autocommit(db_)) (void)dosql::detail::exec_simple(db_, "ROLLBACK");
}

}  // namespace dosql::reliability::sqlite_file
