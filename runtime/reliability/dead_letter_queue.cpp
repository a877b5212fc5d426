#include <dosql/reliability/dead_letter_queue.hpp>

#include <sqlite3.h>

#include "runtime/reliability/sqlite_file.hpp"
#include "wal/format.hpp"
#include "wal/sqlite_util.hpp"

namespace dosql::reliability {

using sqlite_file::bind_i64;
using sqlite_file::bind_text;
using sqlite_file::step_done;

namespace {

constexpr const char* dlq_schema =
    "CREATE TABLE IF NOT EXISTS dead_letters("
    " lsn INTEGER PRIMARY KEY,"
    " tbl TEXT NOT NULL,"
    " op TEXT NOT NULL,"
    " txn_id TEXT NOT NULL,"
    " entry BLOB NOT NULL,"  // wal::append_record framing: LSN, CRC, every field
    " error TEXT NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " first_failure_ms INTEGER NOT NULL,"
    " last_failure_ms INTEGER NOT NULL)";

#define DOSQL_DLQ_SELECT "SELECT lsn, entry, error, attempts, first_failure_ms, last_failure_ms FROM dead_letters"
constexpr const char* dlq_list_sql = DOSQL_DLQ_SELECT " ORDER BY lsn";
constexpr const char* dlq_get_sql = DOSQL_DLQ_SELECT " WHERE lsn = ?1";
#undef DOSQL_DLQ_SELECT

result<dead_letter> read_dead_letter(sqlite3_stmt* s, const std::string& path) {
  auto lsn = static_cast<uint64_t>(sqlite3_column_int64(s, 0));
  auto p = static_cast<const char*>(sqlite3_column_blob(s, 1));
  auto n = static_cast<size_t>(sqlite3_column_bytes(s, 1));
  auto rec = wal::parse_record(p, p ? n : 0, true);
  if (rec.status != wal::parse_status::ok || rec.size != n || rec.lsn != lsn) {
    return error(ec::corruption, path + ": dead letter for lsn " + std::to_string(lsn) +
                                     " does not decode (" + (rec.status == wal::parse_status::bad ? rec.why : "truncated or mismatched") + ")")
        .at(lsn);
  }
  dead_letter d;
  d.entry = rec.entry.to_entry();
  auto t = sqlite3_column_text(s, 2);
  d.last_error = t ? reinterpret_cast<const char*>(t) : "";
  d.attempts = static_cast<uint32_t>(sqlite3_column_int64(s, 3));
  d.first_failure_ms = sqlite3_column_int64(s, 4);
  d.last_failure_ms = sqlite3_column_int64(s, 5);
  return d;
}

}  // namespace

result<std::unique_ptr<dead_letter_queue>> dead_letter_queue::open(const std::string& path) {
  auto db = sqlite_file::open_durable(path, dlq_schema);
  if (!db) return db.err();
  return std::unique_ptr<dead_letter_queue>(new dead_letter_queue(db->release(), path));
}

dead_letter_queue::~dead_letter_queue() { sqlite3_close_v2(db_); }

error dead_letter_queue::add(const wal_entry& e, const std::string& error_text, uint32_t attempts) {
  std::string rec;
  wal::append_record(rec, e.lsn, e);
  static constexpr const char* sql =
      "INSERT INTO dead_letters(lsn, tbl, op, txn_id, entry, error, attempts, first_failure_ms, last_failure_ms)"
      " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"
      " ON CONFLICT(lsn) DO UPDATE SET tbl = excluded.tbl, op = excluded.op, txn_id = excluded.txn_id,"
      " entry = excluded.entry, error = excluded.error, attempts = attempts + excluded.attempts,"
      " last_failure_ms = excluded.last_failure_ms";
  std::lock_guard lock(mu_);
  auto st = dosql::detail::prepare(db_, sql);
  if (!st) return st.err();
  sqlite3_stmt* s = st->get();
  if (auto err = bind_i64(db_, s, 1, static_cast<int64_t>(e.lsn))) return err;
  if (auto err = bind_text(db_, s, 2, e.table)) return err;
  if (auto err = bind_text(db_, s, 3, to_string(e.op))) return err;
  if (auto err = bind_text(db_, s, 4, e.txn_id)) return err;
  int rc = sqlite3_bind_blob64(s, 5, rec.data(), rec.size(), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) return dosql::detail::sql_error(db_, sql, rc);
  if (auto err = bind_text(db_, s, 6, error_text)) return err;
  if (auto err = bind_i64(db_, s, 7, attempts)) return err;
  if (auto err = bind_i64(db_, s, 8, now_ms())) return err;
  return step_done(db_, s);
}

result<std::vector<dead_letter>> dead_letter_queue::list() const {
  std::lock_guard lock(mu_);
  auto st = dosql::detail::prepare(db_, dlq_list_sql);
  if (!st) return st.err();
  std::vector<dead_letter> out;
  int rc;
  while ((rc = sqlite3_step(st->get())) == SQLITE_ROW) {
    auto d = read_dead_letter(st->get(), path_);
    if (!d) return d.err();
    out.push_back(std::move(d).value());
  }
  if (rc != SQLITE_DONE) return dosql::detail::sql_error(db_, sqlite3_sql(st->get()), rc);
  return out;
}

result<std::optional<dead_letter>> dead_letter_queue::get(uint64_t lsn) const {
  std::lock_guard lock(mu_);
  auto st = dosql::detail::prepare(db_, dlq_get_sql);
  if (!st) return st.err();
  if (auto e = bind_i64(db_, st->get(), 1, static_cast<int64_t>(lsn))) return e;
  int rc = sqlite3_step(st->get());
  if (rc == SQLITE_DONE) return std::optional<dead_letter>();
  if (rc != SQLITE_ROW) return dosql::detail::sql_error(db_, sqlite3_sql(st->get()), rc);
  auto d = read_dead_letter(st->get(), path_);
  if (!d) return d.err();
  return std::optional<dead_letter>(std::move(d).value());
}

result<size_t> dead_letter_queue::size() const {
  std::lock_guard lock(mu_);
  auto st = dosql::detail::prepare(db_, "SELECT count(*) FROM dead_letters");
  if (!st) return st.err();
  int rc = sqlite3_step(st->get());
  if (rc != SQLITE_ROW) return dosql::detail::sql_error(db_, sqlite3_sql(st->get()), rc);
  return static_cast<size_t>(sqlite3_column_int64(st->get(), 0));
}

result<bool> dead_letter_queue::remove(uint64_t lsn) {
  std::lock_guard lock(mu_);
  auto st = dosql::detail::prepare(db_, "DELETE FROM dead_letters WHERE lsn = ?1");
  if (!st) return st.err();
  if (auto e = bind_i64(db_, st->get(), 1, static_cast<int64_t>(lsn))) return e;
  if (auto e = step_done(db_, st->get())) return e;
  return sqlite3_changes(db_) > 0;
}

error dead_letter_queue::record_failure(uint64_t lsn, const std::string& error_text) {
  std::lock_guard lock(mu_);
  auto st = dosql::detail::prepare(
      db_, "UPDATE dead_letters SET attempts = attempts + 1, error = ?1, last_failure_ms = ?2 WHERE lsn = ?3");
  if (!st) return st.err();
  sqlite3_stmt* s = st->get();
  if (auto e = bind_text(db_, s, 1, error_text)) return e;
  if (auto e = bind_i64(db_, s, 2, now_ms())) return e;
  if (auto e = bind_i64(db_, s, 3, static_cast<int64_t>(lsn))) return e;
  return step_done(db_, s);
}

result<retry_summary> dead_letter_queue::retry_dead_letters(const std::function<error(const wal_entry&)>& handler) {
  auto all = list();
  if (!all) return all.err();
  retry_summary sum;
  for (auto& d : *all) {
    if (auto failed = handler(d.entry)) {
      if (auto e = record_failure(d.entry.lsn, failed.to_string())) return e;
      ++sum.still_failing;
    } else {
      auto removed = remove(d.entry.lsn);
      if (!removed) return removed.err();
      ++sum.succeeded;
    }
  }
  return sum;
}

}  // namespace dosql::reliability
