// Reads off the writer lock: the pool of read-only connections, query(), snapshots.
#include "runtime/database_impl.hpp"

namespace dosql {

using namespace detail;

result<sqlite3*> database::impl::reader() {
  {
    std::lock_guard<std::mutex> g(pool_mu);
    if (!pool.empty()) {
      auto* r = pool.back();
      pool.pop_back();
      return r;
    }
  }
  sqlite3* r = nullptr;
  auto path = wal::join(dir, sqlite_name);
  int rc = sqlite3_open_v2(path.c_str(), &r, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    auto e = detail::sql_error(r, "open " + path, rc);
    sqlite3_close_v2(r);
    return e;
  }
  sqlite3_db_config(r, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_busy_timeout(r, 5000);
  // No PRAGMA is set on a pooled reader: one with a value (or one dosql refuses) is denied
  // here, so the statement goes to the writer connection, which refuses it with the reason
  // (detail::pragma_refusal) or runs it there.
  sqlite3_set_authorizer(
      r,
      [](void*, int code, const char* a1, const char* a2, const char*, const char*) {
        return code == SQLITE_PRAGMA && (a2 || !detail::pragma_refusal(a1, a2).empty()) ? SQLITE_DENY : SQLITE_OK;
      },
      nullptr);
  return r;
}

void database::impl::give_back(sqlite3* r) {
  std::lock_guard<std::mutex> g(pool_mu);
  pool.push_back(r);
}

namespace {

// Runs `sql` on the read-only connection `r` if it is one read-only statement whose
// parameters are all given. Returns false (nothing run) otherwise.
bool query_readonly(sqlite3* r, std::string_view sql, const std::vector<value>& params, query_result& out, error& e) {
  sqlite3_stmt* raw = nullptr;
  const char* rest = nullptr;
  int rc = sqlite3_prepare_v3(r, sql.data(), static_cast<int>(sql.size()), 0, &raw, &rest);
  stmt_ptr st(raw);
  if (rc != SQLITE_OK) {
    e = detail::sql_error(r, sql, rc);
    return false;
  }
  bool single = raw && std::all_of(rest, sql.data() + sql.size(),
                                   [](char c) { return std::isspace(static_cast<unsigned char>(c)) || c == ';'; });
  if (!single || !sqlite3_stmt_readonly(raw) || static_cast<size_t>(sqlite3_bind_parameter_count(raw)) != params.size())
    return false;
  for (size_t i = 0; i < params.size() && !e; ++i) e = detail::bind_value(raw, static_cast<int>(i + 1), params[i]);
  if (e) return true;
  out.columns.clear();
  int n = sqlite3_column_count(raw);
  for (int i = 0; i < n; ++i) out.columns.emplace_back(sqlite3_column_name(raw, i));
  while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
    std::vector<value> row;
    for (int i = 0; i < n; ++i) row.push_back(detail::column_value(raw, i));
    out.rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) e = detail::sql_error(r, sql, rc);
  return true;
}

}  // namespace

result<query_result> database::query(std::string_view sql, const std::vector<value>& params) {
  query_result out;
  // A single read-only statement runs on a pooled read-only connection, beside the writer.
  {
    auto r = p_->reader();
    if (!r) return r.err();
    error e;
    bool ran = query_readonly(*r, sql, params, out, e);
    p_->give_back(*r);
    if (ran) {
      if (e) return e;
      return out;
    }
  }
  if (auto e = p_->self_deadlock()) return e;
  uint64_t wait_lsn = 0;
  std::unique_lock<std::mutex> g(p_->mu);
  auto r = p_->run(sql, params, false, wait_lsn, &out);
  g.unlock();
  if (auto e = p_->wait_durable(wait_lsn)) return e;
  if (!r) return r.err();
  out.changes = r->changes;
  out.commit_lsn = r->commit_lsn;
  return out;
}

result<read_snapshot> database::snapshot() {
  if (auto e = p_->self_deadlock()) return e;
  auto r = p_->reader();
  if (!r) return r.err();
  uint64_t lsn = 0;
  {
    // Under the writer lock no transaction is open, so SQLite's state is exactly every
    // transaction handed to the WAL writer up to last_lsn(). The read transaction starts
    // at its first read and keeps that state.
    std::lock_guard<std::mutex> g(p_->mu);
    if (p_->closed) {
      p_->give_back(*r);
      return error(ec::closed, "database " + p_->dir + " is closed");
    }
    char* msg = nullptr;
    int rc = sqlite3_exec(*r, "BEGIN; SELECT count(*) FROM sqlite_schema", nullptr, nullptr, &msg);
    if (rc != SQLITE_OK) {
      error e(ec::sql_error, std::string("starting a read snapshot: ") + (msg ? msg : sqlite3_errstr(rc)));
      sqlite3_free(msg);
      if (!sqlite3_get_autocommit(*r)) sqlite3_exec(*r, "ROLLBACK", nullptr, nullptr, nullptr);
      p_->give_back(*r);
      return e;
    }
    lsn = p_->handed.load(std::memory_order_acquire);
  }
  read_snapshot snap(this, *r, lsn);
  // What it shows must not be taken back by a crash.
  if (auto e = p_->wait_durable(lsn)) return e;
  return snap;
}

read_snapshot::read_snapshot(read_snapshot&& o) noexcept
    : db_(std::exchange(o.db_, nullptr)), conn_(std::exchange(o.conn_, nullptr)), lsn_(o.lsn_) {}

read_snapshot::~read_snapshot() {
  if (!conn_) return;
  sqlite3_exec(conn_, "ROLLBACK", nullptr, nullptr, nullptr);
  db_->p_->give_back(conn_);
}

result<query_result> read_snapshot::query(std::string_view sql, const std::vector<value>& params) {
  query_result out;
  error e;
  if (!query_readonly(conn_, sql, params, out, e)) {
    if (e) return e;
    return error(ec::invalid_argument, "a read snapshot runs one read-only statement with all its parameters: " +
                                           trim_sql(sql));
  }
  if (e) return e;
  return out;
}

}  // namespace dosql
