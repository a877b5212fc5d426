// exec/query on the writer connection: statements, DDL capture, the exec wrapper, and
// transaction objects.
#include "runtime/database_impl.hpp"
#include "runtime/ddl.hpp"

namespace dosql {

using namespace detail;

void database::impl::start_txn() {
  cap.clear();
  if (txn_first) {
    // The transaction ended without COMMIT after part of it was streamed: close it in the
    // WAL with a ROLLBACK (readers never deliver it). With nothing buffered any more, the
    // hand-over is that one message, and it resets txn_first.
    if (auto e = hand_over(cap.current(), actors::txn_aborts))
      spdlog::error("dosql {}: writing the ROLLBACK of txn_{}: {}", dir, txn_first, e.to_string());
    handed.store(next_lsn - 1, std::memory_order_release);
  }
  cap.txn_rolled_back = false;
  cap.txn_has_ddl = false;
  pending_schema = schema_version;
  aborted = false;
}

error database::impl::rollback_all() {
  bool had_ddl = cap.txn_has_ddl;
  error e;
  if (!sqlite3_get_autocommit(db)) {
    sqlite3_reset(rollback_stmt.get());
    int rc = sqlite3_step(rollback_stmt.get());
    if (rc != SQLITE_DONE) e = detail::sql_error(db, "ROLLBACK", rc);
  }
  start_txn();
  if (had_ddl) (void)reload_catalog();
  return e;
}

error database::impl::step_rows(sqlite3_stmt* st, std::string_view text, query_result* out) {
  if (out) {
    out->columns.clear();
    out->rows.clear();
    int n = sqlite3_column_count(st);
    for (int i = 0; i < n; ++i) out->columns.emplace_back(sqlite3_column_name(st, i));
  }
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (!out) continue;
    std::vector<value> row;
    int n = sqlite3_column_count(st);
    row.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) row.push_back(detail::column_value(st, i));
    out->rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return detail::sql_error(db, text, rc);
  last_changes = sqlite3_changes64(db);  // before the wrapper's own meta UPDATE changes it
  return {};
}

// Steps a statement that writes, and records a SCHEMA entry for DDL.
error database::impl::step_write(sqlite3_stmt* st, const detail::statement_info& info, std::string_view text,
                                 query_result* out) {
  using cols_t = detail::column_list;
  auto columns_of = [&](const std::string& table) {
    cols_t c;
    if (auto* t = cap.tables().find(table))
      for (auto& col : t->stored) c.emplace_back(col.name, col.type);
    return c;
  };
  // SQLite's schema cookie: DDL that changed nothing (IF NOT EXISTS on an existing object,
  // IF EXISTS on a missing one) leaves it as it was, and is not a schema change to capture.
  auto schema_cookie = [&]() -> result<int64_t> {
    auto q = detail::prepare(db, "PRAGMA schema_version");
    if (!q) return q.err();
    if (int rc = sqlite3_step(q->get()); rc != SQLITE_ROW) return detail::sql_error(db, "PRAGMA schema_version", rc);
    return static_cast<int64_t>(sqlite3_column_int64(q->get(), 0));
  };
  std::vector<std::string> tables_before;
  cols_t before;
  int64_t cookie_before = 0;
  if (info.ddl_code) {
    before = columns_of(info.ddl_table);
    for (auto& [name, _] : cap.tables().tables()) tables_before.push_back(name);
    auto c = schema_cookie();
    if (!c) return c.err();
    cookie_before = *c;
  }
  cap.set_enabled(true);
  auto e = step_rows(st, text, out);
  cap.set_enabled(false);
  if (auto he = cap.take_hook_error()) return error(he.code(), he.message() + " in statement: " + trim_sql(text));
  if (e || !info.ddl_code) return e;
  if (auto c = schema_cookie(); !c) {
    return c.err();
  } else if (*c == cookie_before) {
    return {};
  }
  if (auto le = reload_catalog()) return le;
  cap.txn_has_ddl = true;
  std::vector<std::string> tables_after;
  for (auto& [name, _] : cap.tables().tables()) tables_after.push_back(name);
  auto change = detail::classify_ddl({info.ddl_code, info.ddl_table, info.ddl_object}, tables_before, tables_after,
                                     before, columns_of(info.ddl_table));
  row img = detail::schema_change_row(change);
  auto add = [&](const char* k, value v) {
    img.columns.emplace_back(k);
    img.values.push_back(std::move(v));
  };
  const std::string& table = change.table;
  add("schema_version", static_cast<int64_t>(++pending_schema));
  char* expanded = sqlite3_expanded_sql(st);
  add("sql", trim_sql(expanded ? expanded : std::string(text)));
  sqlite3_free(expanded);
  std::string enc;
  codec::encode_row(img, enc);
  cap.add_schema_entry(table, enc);
  return {};
}

error database::impl::run_statement(sqlite3_stmt* st, const detail::statement_info& info, std::string_view text,
                                    bool object_txn, uint64_t& wait_lsn, query_result* out) {
  bool autocommit = sqlite3_get_autocommit(db) != 0;
  auto find_savepoint = [&](const std::string& name) -> int {
    for (int i = static_cast<int>(cap.savepoints.size()) - 1; i >= 0; --i)
      if (sqlite3_stricmp(cap.savepoints[static_cast<size_t>(i)].name.c_str(), name.c_str()) == 0) return i;
    return -1;
  };
  if (aborted && info.k != kind::rollback && info.k != kind::rollback_to && info.k != kind::commit) {
    return error(ec::sql_error, "the current transaction failed; statements are ignored until ROLLBACK "
                                "(or ROLLBACK TO a savepoint): " + trim_sql(text));
  }
  switch (info.k) {
    case kind::begin: {
      if (object_txn) return error(ec::invalid_argument, "BEGIN inside a transaction object: " + trim_sql(text));
      auto e = step_rows(st, text, nullptr);
      if (!e) start_txn();
      return e;
    }
    case kind::savepoint: {
      if (autocommit) {
        start_txn();
        cap.txn_opened_by_savepoint = true;
      }
      cap.savepoints.push_back({info.savepoint, cap.current()});
      auto e = step_rows(st, text, nullptr);
      if (e) cap.savepoints.pop_back();
      return e;
    }
    case kind::release: {
      int i = find_savepoint(info.savepoint);
      if (i == 0 && cap.txn_opened_by_savepoint && !object_txn) return commit(st, text, wait_lsn);
      auto e = step_rows(st, text, nullptr);
      if (!e && i >= 0) cap.savepoints.resize(static_cast<size_t>(i));
      return e;
    }
    case kind::rollback_to: {
      int i = find_savepoint(info.savepoint);
      auto e = step_rows(st, text, nullptr);
      if (!e && i >= 0) {
        cap.truncate(cap.savepoints[static_cast<size_t>(i)].at);
        cap.savepoints.resize(static_cast<size_t>(i) + 1);
        aborted = false;
        if (cap.txn_has_ddl) (void)reload_catalog();
      }
      return e;
    }
    case kind::commit:
      if (autocommit) return step_rows(st, text, nullptr);  // SQLite's "no transaction is active"
      if (object_txn) return error(ec::invalid_argument, "use transaction::commit() instead of " + trim_sql(text));
      return commit(st, text, wait_lsn);
    case kind::rollback: {
      if (object_txn) return error(ec::invalid_argument, "use transaction::rollback() instead of " + trim_sql(text));
      if (autocommit) return step_rows(st, text, nullptr);
      return rollback_all();
    }
    case kind::other: break;
  }
  bool writes = !sqlite3_stmt_readonly(st) || info.ddl_code != 0;
  if (!writes) return step_rows(st, text, out);
  if (autocommit) {
    // An autocommit write becomes BEGIN IMMEDIATE; statement; COMMIT, captured as one transaction.
    sqlite3_reset(begin_stmt.get());
    if (int rc = sqlite3_step(begin_stmt.get()); rc != SQLITE_DONE) return detail::sql_error(db, "BEGIN IMMEDIATE", rc);
    start_txn();
    if (auto e = step_write(st, info, text, out)) {
      (void)rollback_all();
      return e;
    }
    sqlite3_reset(commit_stmt.get());
    return commit(commit_stmt.get(), "COMMIT", wait_lsn);
  }
  auto mark = cap.current();
  auto schema_mark = pending_schema;
  cap.txn_rolled_back = false;
  auto e = step_write(st, info, text, out);
  if (!e) {
    maybe_stream();
    return e;
  }
  if (cap.txn_rolled_back || sqlite3_get_autocommit(db)) {  // OR ROLLBACK, or SQLite gave up
    (void)rollback_all();
    return error(e.code(), e.message() + " (the transaction was rolled back)");
  }
  if (e.code() != ec::sql_error) {
    // A capture refusal (blob I/O, attached database): SQLite kept the change; undo it all.
    (void)rollback_all();
    return error(e.code(), e.message() + " (the transaction was rolled back)");
  }
  if (fail_possible || contains_fail(text)) {
    // Under OR FAIL / RAISE(FAIL), SQLite keeps part of a failed statement and no hook says
    // which part: fail the transaction, as PostgreSQL does, until ROLLBACK [TO].
    aborted = true;
    return error(e.code(), e.message() + " (the transaction must now be rolled back, or rolled back to a savepoint)");
  }
  // The default ABORT resolution undid exactly this statement: cut its changes off the buffer.
  cap.truncate(mark);
  pending_schema = schema_mark;
  if (cap.txn_has_ddl) (void)reload_catalog();
  return e;
}

result<exec_result> database::impl::run(std::string_view sql, const std::vector<value>& params, bool object_txn,
                                        uint64_t& wait_lsn, query_result* out) {
  if (closed) return error(ec::closed, "database " + dir + " is closed");
  if (tail->failed()) return error(ec::io_error, "database " + dir + ": " + tail->failure().message());
  exec_result res;
  const char* p = sql.data();
  const char* end = p + sql.size();
  // A NUL byte ends the script, as in sqlite3_exec() (SQLite never reads past one): trailing
  // NULs and white space are ignored; a statement after a NUL would be silently dropped, so
  // that is refused before anything runs.
  if (auto nul = sql.find('\0'); nul != std::string_view::npos) {
    auto after = sql.substr(nul);
    auto stmt = after.find_first_not_of(std::string_view(" \t\r\n\f\v;\0", 8));
    if (stmt != std::string_view::npos)
      return error(ec::invalid_argument, "the SQL has a NUL byte at offset " + std::to_string(nul) +
                                             " followed by more text; SQL text cannot contain NUL bytes");
    end = p + nul;
  }
  size_t next_param = 0;
  while (p < end) {
    std::string_view remaining(p, static_cast<size_t>(end - p));
    sqlite3_stmt* raw = nullptr;
    stmt_ptr st;  // owns `raw` unless it lives in the cache
    detail::statement_info info;
    std::string_view text;
    auto hit = remaining.size() <= stmt_cache_max_text ? stmt_cache.find(remaining) : stmt_cache.end();
    if (hit != stmt_cache.end()) {
      raw = hit->second.st.get();
      sqlite3_reset(raw);
      sqlite3_clear_bindings(raw);
      info = hit->second.info;
      text = remaining.substr(0, hit->second.length);
      p += hit->second.length;
    } else {
      cap.begin_prepare();
      const char* rest = nullptr;
      int rc = sqlite3_prepare_v3(db, p, static_cast<int>(end - p), SQLITE_PREPARE_PERSISTENT, &raw, &rest);
      if (rc != SQLITE_OK) {  // SQLite gives no end for a statement it could not parse
        std::string_view t = remaining.substr(0, remaining.find(';'));
        if (!cap.info().denied.empty())
          return error(ec::invalid_argument, cap.info().denied + " in statement: " + trim_sql(t));
        return detail::sql_error(db, t, rc);
      }
      text = std::string_view(p, static_cast<size_t>(rest - p));
      if (!raw && rest <= p) break;  // SQLite consumed nothing: never loop in place
      p = rest;
      if (!raw) continue;
      st.reset(raw);
      info = cap.info();
      if (starts_with_keyword(text, "VACUUM"))
        return error(ec::invalid_argument, "VACUUM is not supported: it renumbers rowids behind the change stream's back "
                                           "in statement: " + trim_sql(text));
      if (info.k == kind::other && info.ddl_code == 0 && remaining.size() <= stmt_cache_max_text) {
        if (stmt_cache.size() >= stmt_cache_max) stmt_cache.clear();
        stmt_cache.emplace(std::string(remaining), cached_stmt{std::move(st), info, text.size()});
      }
    }
    // A cached statement must not keep a read transaction open after this call, nor point
    // at the caller's parameters (bound without a copy below).
    struct resetter {
      sqlite3_stmt* s;
      ~resetter() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset_after{raw};
    int n = sqlite3_bind_parameter_count(raw);
    bool last = std::all_of(p, end, [](char c) { return std::isspace(static_cast<unsigned char>(c)) || c == ';'; });
    if (next_param + static_cast<size_t>(n) > params.size() ||
        (last && next_param + static_cast<size_t>(n) != params.size())) {
      return error(ec::invalid_argument, std::to_string(params.size()) + " parameter(s) given, but the SQL uses " +
                                             std::to_string(next_param + static_cast<size_t>(n)) +
                                             (last ? "" : " so far") + "; statement: " + trim_sql(text));
    }
    for (int i = 1; i <= n; ++i)
      if (auto e = detail::bind_value(raw, i, params[next_param++], false)) return e;
    if (auto e = run_statement(raw, info, text, object_txn, wait_lsn, out)) return e;
    res.changes = sqlite3_stmt_readonly(raw) || info.ddl_code ? 0 : last_changes;
    res.last_insert_rowid = sqlite3_last_insert_rowid(db);
  }
  if (next_param != params.size())
    return error(ec::invalid_argument, std::to_string(params.size()) + " parameter(s) given, but the SQL uses " +
                                           std::to_string(next_param));
  if (!object_txn && !sqlite3_get_autocommit(db)) {
    (void)rollback_all();
    return error(ec::invalid_argument, "the SQL left a transaction open, so it was rolled back; "
                                       "end it with COMMIT, or use database::begin() for a multi-call transaction");
  }
  res.commit_lsn = wait_lsn;
  return res;
}

// ---------------------------------------------------------------------------------------
transaction::transaction(database* db) : db_(db), lock_(db->p_->mu) {}
transaction::transaction(transaction&& o) noexcept : db_(o.db_), lock_(std::move(o.lock_)), done_(o.done_) {
  o.done_ = true;
}
transaction::~transaction() {
  if (!done_ && lock_.owns_lock()) {
    (void)db_->p_->rollback_all();
    db_->p_->txn_owner.store(std::thread::id{}, std::memory_order_release);
  }
}

result<exec_result> transaction::exec(std::string_view sql, const std::vector<value>& params) {
  if (done_) return error(ec::closed, "the transaction has ended");
  uint64_t wait_lsn = 0;
  return db_->p_->run(sql, params, true, wait_lsn, nullptr);
}

result<query_result> transaction::query(std::string_view sql, const std::vector<value>& params) {
  if (done_) return error(ec::closed, "the transaction has ended");
  uint64_t wait_lsn = 0;
  query_result out;
  auto r = db_->p_->run(sql, params, true, wait_lsn, &out);
  if (!r) return r.err();
  out.changes = r->changes;
  return out;
}

result<uint64_t> transaction::commit() {
  if (done_) return error(ec::closed, "the transaction has ended");
  done_ = true;
  auto& p = *db_->p_;
  uint64_t wait_lsn = 0;
  actors::durable_tail::committer_scope c(*p.tail);
  p.committer = &c;
  sqlite3_reset(p.commit_stmt.get());
  auto e = p.commit(p.commit_stmt.get(), "COMMIT", wait_lsn);
  p.committer = nullptr;
  if (e && !sqlite3_get_autocommit(p.db)) (void)p.rollback_all();
  p.txn_owner.store(std::thread::id{}, std::memory_order_release);
  lock_.unlock();
  c.release();
  if (e) return e;
  if (auto we = p.wait_durable(wait_lsn)) return we;
  p.maybe_checkpoint();
  return wait_lsn;
}

error transaction::rollback() {
  if (done_) return error(ec::closed, "the transaction has ended");
  done_ = true;
  auto e = db_->p_->rollback_all();
  db_->p_->txn_owner.store(std::thread::id{}, std::memory_order_release);
  lock_.unlock();
  return e;
}

}  // namespace dosql
