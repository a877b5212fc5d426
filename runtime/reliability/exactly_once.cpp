#include <dosql/reliability/exactly_once.hpp>

#include "runtime/reliability/sqlite_file.hpp"
#include "wal/sqlite_util.hpp"

namespace dosql::reliability {

// ---- the rule, once for every offset_store ---------------------------------------------------

error exactly_once::apply(const std::string& source, uint64_t lsn, const std::function<error()>& work) {
  if (lsn == 0) {
    return error(ec::invalid_argument, "exactly_once::apply: lsn 0 for source '" + source + "' (LSNs start at 1)");
  }
  return store_->commit(source, lsn, [&](uint64_t last) -> result<offset_store::unit_action> {
    if (lsn <= last) return offset_store::unit_action::skip;  // already applied: work never runs
    if (auto e = work()) return e;
    return offset_store::unit_action::commit;
  });
}

// ---- the SQLite offset store -------------------------------------------------------------

namespace {

result<uint64_t> read_applied(sqlite3* db, const std::string& source) {
  auto st = dosql::detail::prepare(db, "SELECT lsn FROM _dosql_applied WHERE source = ?1");
  if (!st) return st.err();
  if (auto e = sqlite_file::bind_text(db, st->get(), 1, source)) return e;
  int rc = sqlite3_step(st->get());
  if (rc == SQLITE_DONE) return uint64_t{0};
  if (rc != SQLITE_ROW) return dosql::detail::sql_error(db, sqlite3_sql(st->get()), rc);
  return static_cast<uint64_t>(sqlite3_column_int64(st->get(), 0));
}

}  // namespace

result<std::unique_ptr<exactly_once_sink>> exactly_once_sink::open(const std::string& path) {
  auto db = sqlite_file::open_durable(
      path, "CREATE TABLE IF NOT EXISTS _dosql_applied(source TEXT PRIMARY KEY, lsn INTEGER NOT NULL)");
  if (!db) return db.err();
  return std::unique_ptr<exactly_once_sink>(new exactly_once_sink(db->release(), path));
}

exactly_once_sink::~exactly_once_sink() { sqlite3_close_v2(db_); }

result<uint64_t> exactly_once_sink::last_applied(const std::string& source) const {
  std::lock_guard lock(mu_);
  return read_applied(db_, source);
}

error exactly_once_sink::apply(const std::string& source, uint64_t lsn, const std::function<error(sqlite3*)>& work) {
  return exactly_once(*this).apply(source, lsn, [&] { return work(db_); });
}

error exactly_once_sink::commit(const std::string& source, uint64_t lsn, const unit_body& body) {
  std::lock_guard lock(mu_);
  if (!sqlite3_get_autocommit(db_)) {
    return error(ec::invalid_argument, path_ + ": apply called inside an open transaction");
  }
  // IMMEDIATE takes the write lock first, so the read below and the write cannot race with
  // another connection applying the same source.
  if (auto e = dosql::detail::exec_simple(db_, "BEGIN IMMEDIATE")) return e;
  sqlite_file::rollback_guard guard(db_);
  auto last = read_applied(db_, source);
  if (!last) return last.err();
  auto action = body(*last);
  if (!action) return action.err();
  if (*action == unit_action::skip) return {};  // the guard ends the read-only transaction
  if (sqlite3_get_autocommit(db_)) {
    return error(ec::invalid_argument, path_ + ": the work for source '" + source + "' lsn " + std::to_string(lsn) +
                                           " ended the transaction itself; its writes were not made atomic with the lsn")
        .at(lsn);
  }
  {
    auto st = dosql::detail::prepare(db_, "INSERT INTO _dosql_applied(source, lsn) VALUES(?1, ?2)"
                                          " ON CONFLICT(source) DO UPDATE SET lsn = excluded.lsn");
    if (!st) return st.err();
    if (auto e = sqlite_file::bind_text(db_, st->get(), 1, source)) return e;
    if (auto e = sqlite_file::bind_i64(db_, st->get(), 2, static_cast<int64_t>(lsn))) return e;
    if (auto e = sqlite_file::step_done(db_, st->get())) return e;
  }
  if (auto e = dosql::detail::exec_simple(db_, "COMMIT")) return e;
  guard.release();
  return {};
}

}  // namespace dosql::reliability
