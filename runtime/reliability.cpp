#include <dosql/reliability.hpp>

#include <cassert>
#include <cmath>
#include <filesystem>
#include <random>
#include <thread>

#include "wal/sqlite_util.hpp"
#include "wal/file.hpp"
#include "wal/format.hpp"

namespace dosql::reliability {

// ---- retry -------------------------------------------------------------------------------

std::chrono::microseconds retry_delay(const retry_config& cfg, uint32_t attempt, double u) {
  const double max_us = 1000.0 * cfg.max_delay_ms;
  const double mult = std::max(cfg.backoff_multiplier, 0.0);
  double base = 1000.0 * cfg.initial_delay_ms * std::pow(mult, attempt > 0 ? attempt - 1.0 : 0.0);
  if (!(base <= max_us)) base = max_us;  // also catches inf and nan
  const double j = std::clamp(cfg.jitter, 0.0, 1.0);
  double d = std::min(max_us, base * (1.0 + j * std::clamp(u, -1.0, 1.0)));
  return std::chrono::microseconds(static_cast<int64_t>(std::max(d, 0.0)));
}

std::vector<std::chrono::microseconds> retry_delays(const retry_config& cfg, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<std::chrono::microseconds> out;
  const uint32_t attempts = std::max<uint32_t>(cfg.max_attempts, 1);
  for (uint32_t a = 1; a < attempts; ++a) out.push_back(retry_delay(cfg, a, dist(rng)));
  return out;
}

namespace detail {

void sleep_before_retry(const retry_config& cfg, uint32_t attempt) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  auto d = retry_delay(cfg, attempt, dist(rng));
  if (d.count() > 0) std::this_thread::sleep_for(d);
}

error gave_up(const error& last, uint32_t attempts) {
  error e(last.code(), "gave up after " + std::to_string(attempts) + (attempts == 1 ? " attempt: " : " attempts: ") +
                           last.message());
  e.oldest_lsn = last.oldest_lsn;
  e.lsn = last.lsn;
  return e;
}

}  // namespace detail

// ---- shared SQLite plumbing --------------------------------------------------------------

namespace {

struct db_closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;

/// Steps a statement that returns no rows (or whose rows are ignored) to completion.
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

/// Opens `path` for durable writes: WAL journal, synchronous=FULL, a busy timeout so another
/// process holding the write lock briefly is waited for; runs `schema`; syncs the directory
/// so a newly created file's name is durable too.
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

/// Rolls back the connection's open transaction on scope exit unless released.
class rollback_guard {
 public:
  explicit rollback_guard(sqlite3* db) : db_(db) {}
  ~rollback_guard() {
    if (db_ && !sqlite3_get_autocommit(db_)) (void)dosql::detail::exec_simple(db_, "ROLLBACK");
  }
  void release() { db_ = nullptr; }
  rollback_guard(const rollback_guard&) = delete;
  rollback_guard& operator=(const rollback_guard&) = delete;

 private:
  sqlite3* db_;
};

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

// ---- dead letter queue -------------------------------------------------------------------

result<std::unique_ptr<dead_letter_queue>> dead_letter_queue::open(const std::string& path) {
  auto db = open_durable(path, dlq_schema);
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

// ---- rate limiter ------------------------------------------------------------------------

rate_limiter::rate_limiter(double tokens_per_second, double burst, clock_fn clock)
    : clock_(clock ? std::move(clock) : clock_fn([] { return std::chrono::steady_clock::now(); })),
      rate_(tokens_per_second > 0 ? tokens_per_second : 1e-9),
      burst_(burst > 0 ? burst : 1e-9),
      tokens_(burst_),
      last_(clock_()) {
  assert(tokens_per_second > 0 && burst > 0);
}

void rate_limiter::refill_locked(std::chrono::steady_clock::time_point now) {
  std::chrono::duration<double> dt = now - last_;
  if (dt.count() > 0) tokens_ = std::min(burst_, tokens_ + dt.count() * rate_);
  last_ = now;
}

void rate_limiter::consume(double n) {
  if (!(n > 0)) return;
  double wait_s = 0;
  {
    std::lock_guard lock(mu_);
    refill_locked(clock_());
    tokens_ -= n;  // reserve now: later callers queue behind this debt
    if (tokens_ < 0) wait_s = -tokens_ / rate_;
  }
  if (wait_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
}

bool rate_limiter::try_consume(double n) {
  if (!(n > 0)) return true;
  std::lock_guard lock(mu_);
  refill_locked(clock_());
  if (tokens_ < n) return false;
  tokens_ -= n;
  return true;
}

double rate_limiter::available() {
  std::lock_guard lock(mu_);
  refill_locked(clock_());
  return tokens_;
}

// ---- adaptive batch sizer ----------------------------------------------------------------

adaptive_batch_sizer::adaptive_batch_sizer(size_t min, size_t max, size_t initial,
                                           std::chrono::microseconds target_per_event)
    : min_(std::max<size_t>(min, 1)),
      max_(std::max(max, min_)),
      target_(target_per_event),
      size_(std::clamp(initial, min_, max_)) {}

void adaptive_batch_sizer::record(size_t batch_size, std::chrono::microseconds elapsed) {
  if (batch_size == 0) return;
  const double per_event = static_cast<double>(elapsed.count()) / static_cast<double>(batch_size);
  const double target = static_cast<double>(target_.count());
  std::lock_guard lock(mu_);
  size_t cur = size_.load(std::memory_order_relaxed);
  size_t next = cur;
  if (per_event < target) {
    next = std::min(max_, std::max(cur + 1, cur + cur / 2));
  } else if (per_event > target) {
    next = std::max(min_, cur / 2);
  }
  size_.store(next, std::memory_order_relaxed);
}

// ---- exactly-once sink -------------------------------------------------------------------

result<std::unique_ptr<exactly_once_sink>> exactly_once_sink::open(const std::string& path) {
  auto db = open_durable(path, "CREATE TABLE IF NOT EXISTS _dosql_applied(source TEXT PRIMARY KEY, lsn INTEGER NOT NULL)");
  if (!db) return db.err();
  return std::unique_ptr<exactly_once_sink>(new exactly_once_sink(db->release(), path));
}

exactly_once_sink::~exactly_once_sink() { sqlite3_close_v2(db_); }

namespace {

result<uint64_t> read_applied(sqlite3* db, const std::string& source) {
  auto st = dosql::detail::prepare(db, "SELECT lsn FROM _dosql_applied WHERE source = ?1");
  if (!st) return st.err();
  if (auto e = bind_text(db, st->get(), 1, source)) return e;
  int rc = sqlite3_step(st->get());
  if (rc == SQLITE_DONE) return uint64_t{0};
  if (rc != SQLITE_ROW) return dosql::detail::sql_error(db, sqlite3_sql(st->get()), rc);
  return static_cast<uint64_t>(sqlite3_column_int64(st->get(), 0));
}

}  // namespace

result<uint64_t> exactly_once_sink::last_applied(const std::string& source) const {
  std::lock_guard lock(mu_);
  return read_applied(db_, source);
}

error exactly_once_sink::apply(const std::string& source, uint64_t lsn, const std::function<error(sqlite3*)>& work) {
  if (lsn == 0) return error(ec::invalid_argument, "exactly_once_sink::apply: lsn 0 for source '" + source + "' (LSNs start at 1)");
  std::lock_guard lock(mu_);
  if (!sqlite3_get_autocommit(db_)) {
    return error(ec::invalid_argument, path_ + ": apply called inside an open transaction");
  }
  // IMMEDIATE takes the write lock first, so the check below and the write cannot race with
  // another connection applying the same source.
  if (auto e = dosql::detail::exec_simple(db_, "BEGIN IMMEDIATE")) return e;
  rollback_guard guard(db_);
  auto last = read_applied(db_, source);
  if (!last) return last.err();
  if (lsn <= *last) return {};  // already applied: the guard ends the read-only transaction
  if (auto e = work(db_)) return e;
  if (sqlite3_get_autocommit(db_)) {
    return error(ec::invalid_argument, path_ + ": the work for source '" + source + "' lsn " + std::to_string(lsn) +
                                           " ended the transaction itself; its writes were not made atomic with the lsn")
        .at(lsn);
  }
  {
    auto st = dosql::detail::prepare(db_, "INSERT INTO _dosql_applied(source, lsn) VALUES(?1, ?2)"
                                          " ON CONFLICT(source) DO UPDATE SET lsn = excluded.lsn");
    if (!st) return st.err();
    if (auto e = bind_text(db_, st->get(), 1, source)) return e;
    if (auto e = bind_i64(db_, st->get(), 2, static_cast<int64_t>(lsn))) return e;
    if (auto e = step_done(db_, st->get())) return e;
  }
  if (auto e = dosql::detail::exec_simple(db_, "COMMIT")) return e;
  guard.release();
  return {};
}

}  // namespace dosql::reliability
