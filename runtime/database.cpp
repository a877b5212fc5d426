// The database: open/recovery, the exec wrapper and its commit protocol (see
// docs/ARCHITECTURE.md, "Commit protocol"), transactions, queries, checkpoints.
#include "runtime/database.hpp"

#include <caf/all.hpp>
#include <fcntl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "actors/durable_tail.hpp"
#include "actors/messages.hpp"
#include "actors/errors.hpp"
#include "actors/slot_manager.hpp"
#include "actors/wal_writer.hpp"
#include "runtime/apply.hpp"
#include "runtime/capture.hpp"
#include "wal/sqlite_util.hpp"
#include "wal/file.hpp"
#include "wal/format.hpp"
#include "wal/reader.hpp"

namespace dosql {

using detail::stmt_ptr;
using kind = detail::statement_info::kind;

namespace {

constexpr int data_format_version = 1;
constexpr const char* marker_name = "DOSQL";
constexpr const char* sqlite_name = "db.sqlite";

bool starts_with_keyword(std::string_view text, std::string_view kw) {
  size_t i = 0;
  for (;;) {  // skip white space and comments
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (text.substr(i, 2) == "--") {
      while (i < text.size() && text[i] != '\n') ++i;
    } else if (text.substr(i, 2) == "/*") {
      auto e = text.find("*/", i + 2);
      i = e == std::string_view::npos ? text.size() : e + 2;
    } else {
      break;
    }
  }
  if (text.size() - i < kw.size()) return false;
  for (size_t k = 0; k < kw.size(); ++k)
    if (std::toupper(static_cast<unsigned char>(text[i + k])) != kw[k]) return false;
  return i + kw.size() == text.size() || !std::isalnum(static_cast<unsigned char>(text[i + kw.size()]));
}

bool contains_fail(std::string_view text) {
  for (size_t i = 0; i + 4 <= text.size(); ++i)
    if (sqlite3_strnicmp(text.data() + i, "FAIL", 4) == 0) return true;
  return false;
}

std::string trim_sql(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && (std::isspace(static_cast<unsigned char>(s.back())) || s.back() == ';')) s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

// ---------------------------------------------------------------------------------------
struct database::impl {
  runtime* rt = nullptr;
  std::string dir;
  database_options opts;
  wal::unique_fd dir_lock;
  sqlite3* db = nullptr;
  detail::capture cap;
  std::mutex mu;  // the writer lock: SQLite writes and LSN prediction happen under it
  std::shared_ptr<actors::durable_tail> tail;
  std::weak_ptr<wal::log> log_ref;
  caf::actor writer;
  uint64_t next_lsn = 1;         // guarded by mu: the LSN the next entry handed over gets
  uint64_t txn_first = 0;        // guarded by mu: LSN of the open transaction's BEGIN, once streamed
  uint64_t last_chunk = 0;       // guarded by mu: last LSN of its last chunk handed over
  std::atomic<uint64_t> handed{0};  // last LSN handed to the writer
  int64_t schema_version = 0;    // guarded by mu
  int64_t pending_schema = 0;    // schema version inside the open transaction
  int64_t last_changes = 0;      // guarded by mu: rows changed by the last statement stepped
  bool aborted = false;          // PostgreSQL-style: the open transaction failed midway
  bool fail_possible = false;    // the schema mentions FAIL (ON CONFLICT FAIL, RAISE(FAIL))
  stmt_ptr meta_update, begin_stmt, commit_stmt, rollback_stmt;
  // Prepared statements by the script text that starts with them (plain DML and SELECT
  // only): exec() of the same SQL skips sqlite3_prepare. Guarded by mu.
  struct cached_stmt {
    stmt_ptr st;
    detail::statement_info info;
    size_t length = 0;  // bytes of the script this statement takes
  };
  struct text_hash {  // lookups by the caller's string_view, without copying the SQL
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, cached_stmt, text_hash, std::equal_to<>> stmt_cache;
  // The writer-lock holder's committer count, released at the moment it hands its
  // transaction to the WAL writer (so the writer never waits for a thread that is done).
  actors::durable_tail::committer_scope* committer = nullptr;
  // The thread holding a transaction object: its own db.exec() would wait for itself.
  std::atomic<std::thread::id> txn_owner{};
  error self_deadlock() const {
    if (txn_owner.load(std::memory_order_acquire) != std::this_thread::get_id()) return {};
    return error(ec::invalid_argument, "this thread holds an open transaction on " + dir +
                                           ": use the transaction's exec()/query(), or end it first");
  }
  static constexpr size_t stmt_cache_max = 256, stmt_cache_max_text = 4096;
  std::mutex pool_mu;
  std::vector<sqlite3*> pool;
  recovery_info rec;
  uint64_t checkpointed_lsn = 0;  // SQLite's main file's LSN before recovery (durable: see recover())
  std::atomic<int> wal_frames{0};
  bool closed = false;

  ~impl();
  error open_sqlite();
  error recover(wal::log& log);
  error reload_catalog();
  result<exec_result> run(std::string_view sql, const std::vector<value>& params, bool object_txn,
                          uint64_t& wait_lsn, query_result* out);
  error run_statement(sqlite3_stmt* st, const detail::statement_info& info, std::string_view text,
                      bool object_txn, uint64_t& wait_lsn, query_result* out);
  error step_write(sqlite3_stmt* st, const detail::statement_info& info, std::string_view text,
                   query_result* out);
  error commit(sqlite3_stmt* st, std::string_view text, uint64_t& wait_lsn);
  error hand_over(detail::capture::mark upto, uint32_t close_flags);
  void maybe_stream();
  error rollback_all();
  void start_txn();
  error step_rows(sqlite3_stmt* st, std::string_view text, query_result* out);
  void maybe_checkpoint();
  error checkpoint_locked(int mode);
  result<sqlite3*> reader();
  void give_back(sqlite3* r);
  error wait_durable(uint64_t lsn) { return lsn ? tail->wait(lsn) : error{}; }
};

database::impl::~impl() {
  for (auto* r : pool) sqlite3_close_v2(r);
  stmt_cache.clear();
  meta_update.reset();
  begin_stmt.reset();
  commit_stmt.reset();
  rollback_stmt.reset();
  if (db) sqlite3_close_v2(db);
}

static int on_wal_commit(void* p, sqlite3*, const char*, int frames) {
  static_cast<database::impl*>(p)->wal_frames.store(frames, std::memory_order_relaxed);
  return SQLITE_OK;
}

error database::impl::open_sqlite() {
  auto path = wal::join(dir, sqlite_name);
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return detail::sql_error(db, "open " + path, rc);
  if (!sqlite3_compileoption_used("ENABLE_PREUPDATE_HOOK"))
    return error(ec::invalid_argument, "this SQLite library lacks the preupdate hook (SQLITE_ENABLE_PREUPDATE_HOOK)");
  // Hooks first: statements prepared before the preupdate hook would skip it (capture notes §2).
  cap.set_enabled(false);
  cap.set_internal(true);
  cap.attach(db);
  sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_wal_hook(db, &on_wal_commit, this);
  if (auto e = detail::exec_simple(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                                       "PRAGMA wal_autocheckpoint=0;"))
    return e;
  return detail::exec_simple(db, "CREATE TABLE IF NOT EXISTS _dosql_meta(k INTEGER PRIMARY KEY, lsn INTEGER NOT NULL, "
                                 "schema_version INTEGER NOT NULL); "
                                 "INSERT OR IGNORE INTO _dosql_meta VALUES(1, 0, 0);");
}

error database::impl::reload_catalog() {
  if (auto e = cap.tables().load(db)) return e;
  auto s = detail::prepare(db, "SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%FAIL%'");
  if (!s) return s.err();
  sqlite3_step(s->get());
  fail_possible = sqlite3_column_int(s->get(), 0) > 0;
  return {};
}

// Brings SQLite and the WAL into agreement (guarantee 2): SQLite may be behind the WAL
// (its commits are not synced: synchronous=NORMAL) or, after a crash between the SQLite
// commit and the WAL append, ahead of it.
error database::impl::recover(wal::log& log) {
  auto read_meta = [&](uint64_t& lsn, int64_t& sv) -> error {
    auto s = detail::prepare(db, "SELECT lsn, schema_version FROM _dosql_meta WHERE k=1");
    if (!s) return s.err();
    if (sqlite3_step(s->get()) != SQLITE_ROW) return error(ec::corruption, "_dosql_meta has no row");
    lsn = static_cast<uint64_t>(sqlite3_column_int64(s->get(), 0));
    sv = sqlite3_column_int64(s->get(), 1);
    return {};
  };
  uint64_t m = 0;
  if (auto e = read_meta(m, schema_version)) return e;
  uint64_t w = log.last_lsn();
  if (m > w && checkpointed_lsn > w) {
    // Decided before SQLite's -wal is touched (wal::log refuses this unless repairing, and a
    // repair refuses it before opening the log: see runtime::open).
    return error(ec::corruption, "database " + dir + ": SQLite's checkpointed state is at lsn " +
                                     std::to_string(checkpointed_lsn) + ", beyond the end of the WAL (" +
                                     std::to_string(w) + "); nothing was changed");
  }
  if (m > w) {
    // SQLite holds commits the WAL lost. Checkpoints never pass the durable WAL, so the main
    // database file is at or behind it: drop SQLite's own WAL and replay ours.
    spdlog::warn("dosql {}: SQLite is at lsn {} but the WAL ends at {}; discarding SQLite's -wal", dir, m, w);
    meta_update.reset();
    sqlite3_close_v2(db);
    db = nullptr;
    for (auto suffix : {"-wal", "-shm"}) (void)wal::remove_file(wal::join(dir, std::string(sqlite_name) + suffix));
    if (auto e = open_sqlite()) return e;
    if (auto e = read_meta(m, schema_version)) return e;
    rec.discarded_sqlite_wal = true;
    if (m > w)
      return error(ec::corruption, "database " + dir + ": SQLite's checkpointed state is at lsn " + std::to_string(m) +
                                       ", beyond the end of the WAL (" + std::to_string(w) + ")");
  }
  rec.sqlite_lsn = m;
  if (m < w) {
    // wal.verify_checksums (recorded in dosql.conf) decides whether the replay checks CRCs;
    // the limit keeps parsing without them safe (every record up to W is completely written).
    wal::reader_options ro;
    ro.verify_checksums = opts.wal.verify_checksums;
    auto r = wal::reader::open(log.dir(), ro);
    if (!r) return r.err();
    (*r)->set_limit(w);
    if (auto e = (*r)->seek(m + 1)) {
      return error(e.code(), "database " + dir + ": cannot replay the WAL from lsn " + std::to_string(m + 1) + ": " + e.message());
    }
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, nullptr);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FKEY, 0, nullptr);
    auto meta = detail::prepare(db, "UPDATE _dosql_meta SET lsn=?1, schema_version=schema_version+?2 WHERE k=1");
    if (!meta) return meta.err();
    int64_t schema_changes = 0;
    detail::applier ap(db, [&](uint64_t commit_lsn) -> error {
      sqlite3_reset(meta->get());
      sqlite3_bind_int64(meta->get(), 1, static_cast<int64_t>(commit_lsn));
      sqlite3_bind_int64(meta->get(), 2, schema_changes);
      schema_changes = 0;
      if (sqlite3_step(meta->get()) != SQLITE_DONE) return detail::sql_error(db, "UPDATE _dosql_meta", SQLITE_ERROR);
      return {};
    });
    if (auto e = ap.load()) return e;
    entry_view v;
    std::string orphan_txn;
    wal::reader::status s;
    while ((s = (*r)->next(v)) == wal::reader::status::entry) {
      if (v.op == op_type::begin) orphan_txn = std::string(v.txn_id), schema_changes = 0;
      if (v.op == op_type::schema) ++schema_changes;
      if (auto e = ap.apply(v))
        return error(e.code(), "database " + dir + ": replaying lsn " + std::to_string(v.lsn) + " failed: " + e.message());
    }
    if (s == wal::reader::status::error) return (*r)->last_error();
    rec.replayed_transactions = ap.committed();
    if (ap.in_transaction()) {
      // A transaction cut by the crash (BEGIN and some changes, no COMMIT): close it so that
      // the stream stays well formed.
      if (auto e = ap.abort()) return e;
      std::vector<wal_entry> rb(1);
      rb[0].timestamp = now_ms();
      rb[0].txn_id = orphan_txn;
      rb[0].op = op_type::rollback;
      auto lsn = log.append_batch(rb);
      if (!lsn) return lsn.err();
      if (auto e = log.sync()) return e;
      rec.closed_orphan_lsn = *lsn;
    }
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 1, nullptr);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, nullptr);
    if (auto e = read_meta(m, schema_version)) return e;
  }
  return {};
}

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
  using cols_t = std::vector<std::pair<std::string, std::string>>;
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
  row img;
  auto add = [&](const char* k, value v) {
    img.columns.emplace_back(k);
    img.values.push_back(std::move(v));
  };
  std::string change, table = info.ddl_table;
  switch (info.ddl_code) {
    case SQLITE_CREATE_TABLE: change = "create_table"; break;
    case SQLITE_DROP_TABLE: change = "drop_table"; break;
    case SQLITE_CREATE_INDEX: change = "create_index"; break;
    case SQLITE_DROP_INDEX: change = "drop_index"; break;
    case SQLITE_CREATE_TRIGGER: change = "create_trigger"; break;
    case SQLITE_DROP_TRIGGER: change = "drop_trigger"; break;
    case SQLITE_CREATE_VIEW: change = "create_view"; break;
    case SQLITE_DROP_VIEW: change = "drop_view"; break;
    default: break;
  }
  add("change_type", std::string());  // filled below
  add("table", std::string());
  if (info.ddl_code == SQLITE_ALTER_TABLE) {
    auto after = columns_of(table);
    if (!cap.tables().find(table)) {  // RENAME TO: the new name is the table that appeared
      for (auto& [name, _] : cap.tables().tables())
        if (std::find(tables_before.begin(), tables_before.end(), name) == tables_before.end()) table = name;
      change = "rename_table";
      add("old_table", info.ddl_table);
    } else if (after.size() > before.size()) {
      change = "add_column";
      add("column", after.back().first);
      add("new_type", after.back().second);
    } else if (after.size() < before.size()) {
      change = "drop_column";
      for (auto& b : before)
        if (std::find(after.begin(), after.end(), b) == after.end()) {
          add("column", b.first);
          add("old_type", b.second);
        }
    } else {
      change = "alter_column";
      for (size_t i = 0; i < after.size(); ++i)
        if (after[i] != before[i]) {
          add("column", after[i].first);
          add("old_column", before[i].first);
          add("old_type", before[i].second);
          add("new_type", after[i].second);
        }
    }
  } else if (info.ddl_object != info.ddl_table) {
    add("object", info.ddl_object);
  }
  img.values[0] = change;
  img.values[1] = table;
  add("schema_version", static_cast<int64_t>(++pending_schema));
  char* expanded = sqlite3_expanded_sql(st);
  add("sql", trim_sql(expanded ? expanded : std::string(text)));
  sqlite3_free(expanded);
  std::string enc;
  codec::encode_row(img, enc);
  cap.add_schema_entry(table, enc);
  return {};
}

// The commit protocol. REQUIRES: mu held; `st` is the statement that commits.
error database::impl::commit(sqlite3_stmt* st, std::string_view text, uint64_t& wait_lsn) {
  if (aborted) {
    (void)rollback_all();
    return error(ec::sql_error, "the transaction failed earlier and was rolled back instead of committed");
  }
  uint32_t count = cap.count();
  // BEGIN (unless streamed already), the entries not streamed yet, COMMIT.
  uint64_t commit_lsn = next_lsn + (txn_first ? 0 : 1) + (count - cap.streamed().count);
  if (count > 0) {
    // The LSN the COMMIT will get goes into SQLite in the same transaction: recovery replays
    // exactly the WAL transactions SQLite does not have.
    sqlite3_reset(meta_update.get());
    sqlite3_bind_int64(meta_update.get(), 1, static_cast<int64_t>(commit_lsn));
    sqlite3_bind_int64(meta_update.get(), 2, pending_schema);
    cap.set_internal(true);
    int rc = sqlite3_step(meta_update.get());
    cap.set_internal(false);
    if (rc != SQLITE_DONE) return detail::sql_error(db, "UPDATE _dosql_meta", rc);
    cap.meta_written = true;
  }
  cap.set_enabled(true);
  int rc = sqlite3_step(st);
  cap.set_enabled(false);
  if (rc != SQLITE_DONE) {
    auto e = detail::sql_error(db, text, rc);
    if (sqlite3_get_autocommit(db)) {
      (void)rollback_all();
      return error(e.code(), e.message() + " (the transaction was rolled back)");
    }
    cap.meta_written = false;  // still open (a deferred foreign key): it can be fixed and retried
    return e;
  }
  if (count > 0) {
    // SQLite has committed (visible, not yet durable). Hand the rest of the transaction to
    // the WAL writer while still holding the writer lock, so that messages arrive in commit
    // (= LSN) order.
    if (auto e = hand_over(cap.current(), actors::txn_closes)) return e;
    // Released after the send: once the writer sees no committers, every handed-over
    // transaction is already in its mailbox, ahead of its re-sent flush.
    if (committer) committer->release();
    handed.store(commit_lsn, std::memory_order_release);
    wait_lsn = commit_lsn;
  }
  schema_version = pending_schema;
  start_txn();
  return {};
}

// Hands the buffered entries below `upto` to the WAL writer (BEGIN first if none was
// handed yet); `close_flags` (txn_closes, txn_aborts) ends the transaction after them.
// REQUIRES: mu held; cap.covers_spill(upto).
error database::impl::hand_over(detail::capture::mark upto, uint32_t close_flags) {
  uint32_t opens = 0;
  if (!txn_first) {
    txn_first = next_lsn;
    opens = actors::txn_opens;
  }
  auto txn_id = "txn_" + std::to_string(txn_first);
  int64_t ts = now_ms();
  // One chunk in flight at a time: the row images of a large transaction are never all in
  // memory (here or in the writer's mailbox). The writer is usually done long before.
  auto wait_last = [&]() -> error { return last_chunk ? tail->wait_written(std::exchange(last_chunk, 0)) : error{}; };
  std::string chunk;
  for (auto& c : cap.spilled()) {
    if (auto e = wait_last()) return e;
    if (auto e = cap.read_chunk(c, chunk)) {
      tail->fail(e);  // the WAL cannot have the transaction: reopen recovers
      return e;
    }
    std::string msg;
    actors::begin_txn_message(msg, txn_id, next_lsn, ts, opens, c.count);
    msg += chunk;
    caf::anon_send(writer, actors::append_atom::value, std::move(msg));
    next_lsn += c.count + (opens ? 1 : 0);
    last_chunk = next_lsn - 1;
    opens = 0;
  }
  uint32_t n = 0;
  auto mem = cap.memory_part(upto, n);
  if (n > 0 || opens || close_flags) {
    if (!close_flags)
      if (auto e = wait_last()) return e;
    std::string msg;
    msg.reserve(mem.size() + 64);
    actors::begin_txn_message(msg, txn_id, next_lsn, ts, opens | close_flags, n);
    msg += mem;
    caf::anon_send(writer, actors::append_atom::value, std::move(msg));
    next_lsn += n + (opens ? 1 : 0) + (close_flags ? 1 : 0);
    last_chunk = close_flags ? 0 : next_lsn - 1;
  }
  cap.drop_prefix(upto);
  if (close_flags) txn_first = 0;
  return {};
}

// After a statement of an explicit transaction succeeded: streams the settled entries to
// the WAL writer once enough of them are buffered (see stream_threshold_bytes).
void database::impl::maybe_stream() {
  if (!opts.stream_threshold_bytes || aborted) return;
  auto upto = cap.savepoints.empty() ? cap.current() : cap.savepoints.front().at;
  if (upto.bytes - cap.streamed().bytes < opts.stream_threshold_bytes || !cap.covers_spill(upto)) return;
  if (auto e = hand_over(upto, 0)) spdlog::error("dosql {}: streaming a transaction to the WAL: {}", dir, e.to_string());
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

error database::impl::checkpoint_locked(int mode) {
  // Invariant: SQLite's database file never gets ahead of the durable WAL.
  if (tail->value() < next_lsn - 1) return {};
  // Nothing to copy (SQLite's -wal is empty): no call, so that a read-only run writes nothing.
  if (mode == SQLITE_CHECKPOINT_TRUNCATE) {
    struct stat st;
    auto sqlite_wal = wal::join(dir, std::string(sqlite_name) + "-wal");
    if (::stat(sqlite_wal.c_str(), &st) == 0 && st.st_size == 0) return {};
  }
  int log_frames = 0, done = 0;
  int rc = sqlite3_wal_checkpoint_v2(db, "main", mode, &log_frames, &done);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) return detail::sql_error(db, "checkpoint", rc);
  if (rc == SQLITE_OK && done == log_frames) wal_frames.store(0);
  return {};
}

void database::impl::maybe_checkpoint() {
  if (wal_frames.load(std::memory_order_relaxed) < static_cast<int>(opts.checkpoint_frames)) return;
  std::unique_lock<std::mutex> g(mu, std::try_to_lock);
  if (!g || !sqlite3_get_autocommit(db)) return;
  if (auto e = checkpoint_locked(SQLITE_CHECKPOINT_PASSIVE)) spdlog::warn("dosql {}: {}", dir, e.to_string());
}

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

// ---------------------------------------------------------------------------------------
database::database(std::unique_ptr<impl> p) : p_(std::move(p)) {}

database::~database() {
  if (auto e = close()) spdlog::error("dosql {}: close: {}", p_->dir, e.to_string());
}

const std::string& database::dir() const noexcept { return p_->dir; }
std::string database::wal_dir() const { return wal::join(p_->dir, "wal"); }
uint64_t database::last_lsn() const { return p_->handed.load(std::memory_order_acquire); }
uint64_t database::durable_lsn() const { return p_->tail->value(); }
wal::log::active_usage database::wal_active_segment() const {
  auto l = p_->log_ref.lock();
  return l ? l->active_segment_usage() : wal::log::active_usage{};
}
const recovery_info& database::recovery() const noexcept { return p_->rec; }
caf::actor database::wal_writer() const { return p_->writer; }
runtime& database::owner() noexcept { return *p_->rt; }

result<exec_result> database::exec(std::string_view sql, const std::vector<value>& params) {
  if (auto e = p_->self_deadlock()) return e;
  uint64_t wait_lsn = 0;
  actors::durable_tail::committer_scope c(*p_->tail);  // the WAL writer waits for us a little
  std::unique_lock<std::mutex> g(p_->mu);
  p_->committer = &c;
  auto r = p_->run(sql, params, false, wait_lsn, nullptr);
  p_->committer = nullptr;
  g.unlock();
  c.release();
  // Early lock release: the next writer proceeds while this commit waits for its fdatasync.
  if (auto e = p_->wait_durable(wait_lsn)) return e;
  p_->maybe_checkpoint();
  return r;
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

result<transaction> database::begin() {
  if (auto e = p_->self_deadlock()) return e;
  transaction t(this);  // takes the writer lock for its lifetime
  if (p_->closed) return error(ec::closed, "database " + p_->dir + " is closed");
  sqlite3_reset(p_->begin_stmt.get());
  if (int rc = sqlite3_step(p_->begin_stmt.get()); rc != SQLITE_DONE) {
    t.done_ = true;
    return detail::sql_error(p_->db, "BEGIN IMMEDIATE", rc);
  }
  p_->start_txn();
  p_->txn_owner.store(std::this_thread::get_id(), std::memory_order_release);
  return t;
}

result<wal::compact_report> database::compact(uint64_t below_lsn) {
  if (p_->closed || !p_->writer) return error(ec::closed, "database " + p_->dir + " is closed");
  // Never below what a slot needs: its file is read now, under the directory's lock (this
  // process holds it) and the retention mutex (no slot is being created meanwhile).
  std::lock_guard<std::mutex> hold(actors::retention_mutex());
  auto floor = actors::read_slot_floor(p_->dir);
  if (!floor) return error(floor.err().code(), "no compaction: " + floor.err().message());
  below_lsn = std::min(below_lsn, floor->lsn);
  caf::scoped_actor self{p_->rt->system()};
  result<wal::compact_report> out = error(ec::io_error, "no reply from the WAL writer");
  self->request(p_->writer, std::chrono::minutes(5), actors::compact_atom::value, below_lsn)
      .receive(
          [&](const std::vector<uint64_t>& r) {
            wal::compact_report rep;
            rep.oldest_lsn = r.at(0);
            rep.bytes = r.at(1);
            rep.archived = r.at(2) != 0;
            rep.removed.assign(r.begin() + 3, r.end());
            out = rep;
          },
          [&](caf::error& e) {
            auto err = actors::from_caf(e, "the WAL writer");  // (its code crosses the actor boundary)
            out = error(err.code(), "compaction of " + wal_dir() + " failed: " + err.message());
          });
  return out;
}

result<wal::compact_report> database::apply_retention() {
  if (p_->closed || !p_->writer) return error(ec::closed, "database " + p_->dir + " is closed");
  auto point = wal::retention_point(wal_dir(), p_->opts.wal.retention);
  if (!point) return point.err();
  if (*point == 0) {  // nothing the policy would remove
    wal::compact_report none;
    auto firsts = wal::segment_firsts(wal_dir());
    if (firsts && !firsts->empty()) none.oldest_lsn = firsts->front();
    none.archived = p_->opts.wal.auto_archive;
    return none;
  }
  return compact(*point);
}

error database::close() {
  auto& p = *p_;
  std::unique_lock<std::mutex> g(p.mu);
  if (p.closed) return {};
  p.closed = true;
  error result_error;
  if (p.writer) {
    if (auto e = p.tail->wait(p.next_lsn - 1)) result_error = e;
    if (!result_error) {
      // Everything committed is durable in the WAL by now: a failed checkpoint (a full disk)
      // loses nothing and must not read as a failed commit; the next open checkpoints again.
      if (auto e = p.checkpoint_locked(SQLITE_CHECKPOINT_TRUNCATE))
        spdlog::warn("dosql {}: the checkpoint at close failed (every commit is durable in the WAL; the next open "
                     "retries it): {}", p.dir, e.to_string());
    }
    // Stop the writer and wait until it released the log (its directory lock included).
    auto& sys = p.rt->system();
    {
      caf::scoped_actor self{sys};
      self->monitor(p.writer);
      caf::anon_send_exit(p.writer, caf::exit_reason::user_shutdown);
      self->receive([](caf::down_msg&) {});
    }
    p.writer = nullptr;
    for (int i = 0; i < 1000 && !p.log_ref.expired(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto* r : p.pool) sqlite3_close_v2(r);
  p.pool.clear();
  p.stmt_cache.clear();
  p.meta_update.reset();
  p.begin_stmt.reset();
  p.commit_stmt.reset();
  p.rollback_stmt.reset();
  if (p.db) sqlite3_close_v2(p.db);
  p.db = nullptr;
  p.dir_lock.reset();
  return result_error;
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

// ---------------------------------------------------------------------------------------
struct runtime::state {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
};

void default_log_to_stderr() {
  // spdlog's own default logger writes to stdout, the application's data channel (JSON lines,
  // query results): replace it, once, unless the application installed its own.
  static std::once_flag once;
  std::call_once(once, [] {
    auto cur = spdlog::default_logger();
    if (cur && (!cur->name().empty() || cur->sinks().size() != 1 ||
                !dynamic_cast<spdlog::sinks::ansicolor_stdout_sink_mt*>(cur->sinks()[0].get())))
      return;
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("", std::make_shared<spdlog::sinks::ansicolor_stderr_sink_mt>()));
  });
}

runtime::runtime(runtime_options opts) : s_(std::make_unique<state>()) {
  default_log_to_stderr();
  if (opts.scheduler_threads) s_->cfg.set("scheduler.max-threads", opts.scheduler_threads);
  if (const char* p = std::getenv("DOSQL_SCHEDULER"); p && std::string_view(p) == "stealing")
    opts.policy = runtime_options::scheduler_policy::stealing;
  s_->cfg.set("scheduler.policy", opts.policy == runtime_options::scheduler_policy::sharing ? caf::atom("sharing")
                                                                                            : caf::atom("stealing"));
  actors::register_error_category(s_->cfg);  // dosql::error crosses actors as itself
  s_->sys = std::make_unique<caf::actor_system>(s_->cfg);
}

runtime::~runtime() = default;

caf::actor_system& runtime::system() { return *s_->sys; }

namespace {

// The DOSQL marker: "dosql data directory\nformat N\n". A directory without it must be empty.
error check_marker(const std::string& dir, bool& created) {
  auto marker = wal::join(dir, marker_name);
  if (wal::path_exists(marker)) {
    auto fd = wal::open_file(marker, O_RDONLY);
    if (!fd) return fd.err();
    char buf[128] = {};
    auto n = wal::pread_full(fd->get(), buf, sizeof buf - 1, 0, marker);
    if (!n) return n.err();
    int version = 0;
    const char* f = std::strstr(buf, "format ");
    if (std::strncmp(buf, "dosql data directory", 20) != 0 || !f || (version = std::atoi(f + 7)) <= 0)
      return error(ec::corruption, dir + ": the DOSQL marker file is damaged");
    if (version > data_format_version)
      return error(ec::format_version, dir + " was written by a newer dosql (data format " + std::to_string(version) +
                                           "; this build reads " + std::to_string(data_format_version) + ")");
    return {};
  }
  auto names = wal::list_dir(dir);
  if (!names) return names.err();
  // A creation cut short by a crash leaves only the unfinished marker: still a new directory.
  auto tmp = marker + ".tmp";
  if (names->size() == 1 && names->front() == std::string(marker_name) + ".tmp") {
    (void)wal::remove_file(tmp);
    names->clear();
  }
  if (!names->empty())
    return error(ec::invalid_argument, dir + " is not a dosql data directory (no DOSQL marker, and not empty); nothing was changed");
  std::string text = "dosql data directory\nformat " + std::to_string(data_format_version) + "\n";
  if (auto e = wal::replace_file(marker, text)) return e;
  created = true;
  return {};
}

}  // namespace

namespace {
constexpr const char* conf_name = "dosql.conf";

std::string options_text(const database_options& o) {
  return "# the WAL settings of this directory's owner (rewritten by dosql only when they change)\n"
         "target_segment_size=" + std::to_string(o.wal.target_segment_size) + "\n" +
         "max_entries_per_segment=" + std::to_string(o.wal.max_entries_per_segment) + "\n" +
         "verify_checksums=" + std::to_string(o.wal.verify_checksums) + "\n" +
         "auto_archive=" + std::to_string(o.wal.auto_archive) + "\n" +
         "sync=" + (o.wal.sync == wal_config::sync_policy::none ? "none" : "every_batch") + "\n" +
         "retention=" + (o.wal.retention.automatic ? "automatic" : "off") + "\n" +
         "retention_max_age_ms=" + std::to_string(o.wal.retention.max_age_ms) + "\n" +
         "retention_max_bytes=" + std::to_string(o.wal.retention.max_bytes) + "\n";
}

// Records the settings; an open that changes none of them writes nothing.
error save_options(const std::string& dir, const database_options& o) {
  auto text = options_text(o);
  auto path = wal::join(dir, conf_name);
  if (wal::path_exists(path)) {
    auto fd = wal::open_file(path, O_RDONLY);
    if (!fd) return fd.err();
    std::string cur(text.size() + 1, '\0');
    auto n = wal::pread_full(fd->get(), cur.data(), cur.size(), 0, path);
    if (!n) return n.err();
    if (*n == text.size() && cur.compare(0, *n, text) == 0) return {};
  }
  return wal::replace_file(path, text);
}
}  // namespace

namespace {

// The LSN recorded in SQLite's main database file alone, ignoring its -wal (immutable=1 reads
// only that file and writes nothing, not even -shm). Checkpoints never pass the durable WAL,
// so this LSN was durable: recovery must keep it. 0 when there is no database file yet.
result<uint64_t> sqlite_checkpointed_lsn(const std::string& dir) {
  auto path = wal::join(dir, sqlite_name);
  if (!wal::path_exists(path)) return uint64_t{0};
  std::string uri = "file:";
  for (char c : path) {  // percent-encode what a URI path cannot hold as is
    if (c == '%' || c == '?' || c == '#') {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      uri += buf;
    } else {
      uri += c;
    }
  }
  uri += "?immutable=1";
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(uri.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(db, sqlite3_close_v2);
  if (rc != SQLITE_OK) return detail::sql_error(db, "open " + path + " (read-only)", rc);
  sqlite3_stmt* raw = nullptr;
  rc = sqlite3_prepare_v2(db, "SELECT lsn FROM _dosql_meta WHERE k=1", -1, &raw, nullptr);
  if (rc != SQLITE_OK) return uint64_t{0};  // no _dosql_meta checkpointed yet
  stmt_ptr st(raw);
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_ROW) return static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
  if (rc == SQLITE_DONE) return uint64_t{0};
  return detail::sql_error(db, "read _dosql_meta of " + path, rc);
}

wal::recovery_options wal_recovery_options(uint64_t checkpointed, bool repair) {
  wal::recovery_options ro;
  ro.known_durable = checkpointed;
  ro.known_durable_source.assign("db.sqlite's checkpointed state records it");  // sqlite_name
  ro.accept_loss = repair;
  return ro;
}

}  // namespace

result<wal::recovery_plan> plan_database_recovery(const std::string& dir, const database_options& opts,
                                                 uint64_t* sqlite_checkpointed) {
  auto cp = sqlite_checkpointed_lsn(dir);
  if (!cp) return cp.err();
  if (sqlite_checkpointed) *sqlite_checkpointed = *cp;
  return wal::log::plan_recovery(wal::join(dir, "wal"), opts.wal, wal_recovery_options(*cp, false));
}

result<database_options> load_database_options(const std::string& dir) {
  database_options o;
  auto path = wal::join(dir, conf_name);
  if (!wal::path_exists(path)) return o;
  auto fd = wal::open_file(path, O_RDONLY);
  if (!fd) return fd.err();
  std::string text(4096, '\0');
  auto n = wal::pread_full(fd->get(), text.data(), text.size(), 0, path);
  if (!n) return n.err();
  text.resize(*n);
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    std::string line = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? text.size() : end + 1;
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    auto where = path + " line " + std::to_string(line_no);
    auto eq = line.find('=');
    if (eq == std::string::npos) return error(ec::invalid_argument, where + ": expected key=value, got '" + line + "'");
    auto key = line.substr(0, eq), val = line.substr(eq + 1);
    auto bad = [&](const char* want) {
      return error(ec::invalid_argument, where + ": bad value '" + val + "' for " + key + " (" + want + ")");
    };
    auto num = [&](uint64_t min, uint64_t max, uint64_t& out) {
      if (val.empty() || val.size() > 19 || val.find_first_not_of("0123456789") != std::string::npos) return false;
      out = std::stoull(val);
      return out >= min && out <= max;
    };
    uint64_t v = 0;
    if (key == "target_segment_size") {
      if (!num(76, uint64_t{1} << 40, v)) return bad("a byte count from 76");
      o.wal.target_segment_size = v;
    } else if (key == "max_entries_per_segment") {
      if (!num(1, UINT32_MAX, v)) return bad("a count from 1");
      o.wal.max_entries_per_segment = static_cast<uint32_t>(v);
    } else if (key == "verify_checksums" || key == "auto_archive") {
      if (!num(0, 1, v)) return bad("0 or 1");
      (key == "auto_archive" ? o.wal.auto_archive : o.wal.verify_checksums) = v != 0;
    } else if (key == "sync") {
      if (val != "none" && val != "every_batch") return bad("none or every_batch");
      o.wal.sync = val == "none" ? wal_config::sync_policy::none : wal_config::sync_policy::every_batch;
    } else if (key == "retention") {
      if (val != "automatic" && val != "off") return bad("automatic or off");
      o.wal.retention.automatic = val == "automatic";
    } else if (key == "retention_max_age_ms") {
      if (!num(0, UINT64_MAX / 2, v)) return bad("milliseconds, 0 for no age limit");
      o.wal.retention.max_age_ms = v;
    } else if (key == "retention_max_bytes") {
      if (!num(0, UINT64_MAX / 2, v)) return bad("a byte count, 0 for no size limit");
      o.wal.retention.max_bytes = v;
    } else {
      return error(ec::invalid_argument, where + ": unknown key '" + key + "'");
    }
  }
  return o;
}

result<std::shared_ptr<database>> runtime::open(const std::string& dir, const database_options& opts) {
  auto p = std::make_unique<database::impl>();
  p->rt = this;
  p->dir = dir;
  p->opts = opts;
  if (!opts.wal_as_given && opts.wal == wal_config{} && wal::path_exists(dir)) {
    // No explicit WAL settings: the ones its owner recorded (an error in dosql.conf names the
    // key; nothing is opened with settings nobody chose).
    auto recorded = load_database_options(dir);
    if (!recorded) return recorded.err();
    p->opts.wal = recorded->wal;
  }
  if (!wal::path_exists(dir)) {
    if (!opts.create) return error(ec::invalid_argument, dir + " does not exist");
    if (auto e = wal::make_dirs(dir)) return e;
  }
  if (auto e = check_marker(dir, p->rec.created)) return e;
  // One owner at a time, across processes; the kernel releases the lock if we die.
  auto lfd = wal::lock_dir(dir, dir);
  if (!lfd) return lfd.err();
  p->dir_lock = std::move(*lfd);
  // Recovery decides before it changes anything (docs/ARCHITECTURE.md, "Recovery"): SQLite's
  // checkpointed LSN is read without touching its -wal, and the WAL refuses to end below it
  // or below its durable mark, leaving every file as it was.
  auto checkpointed = sqlite_checkpointed_lsn(dir);
  if (!checkpointed) return checkpointed.err();
  p->checkpointed_lsn = *checkpointed;
  if (opts.repair) {
    auto plan = wal::log::plan_recovery(wal::join(dir, "wal"), p->opts.wal, wal_recovery_options(0, true));
    if (!plan) return plan.err();
    if (*checkpointed > plan->last_lsn) {
      // SQLite's file holds commits the WAL no longer has: rebuild it from the WAL (the
      // source of truth), keeping the old files aside for the operator.
      if (plan->oldest_lsn > 1)
        return error(ec::corruption, "database " + dir + ": cannot repair: " + sqlite_name +
                                         "'s checkpointed state is at lsn " + std::to_string(*checkpointed) +
                                         ", beyond the " + std::to_string(plan->last_lsn) +
                                         " entries the WAL keeps, and the WAL was compacted (it starts at lsn " +
                                         std::to_string(plan->oldest_lsn) +
                                         "), so SQLite cannot be rebuilt from it; nothing was changed");
      for (auto suffix : {"", "-wal", "-shm"}) {
        auto from = wal::join(dir, std::string(sqlite_name) + suffix);
        auto to = wal::join(dir, std::string(sqlite_name) + ".pre-repair" + suffix);
        if (wal::path_exists(from))
          if (auto e = wal::rename_file(from, to)) return error(e.code(), "cannot move aside: " + e.message());
      }
      if (auto e = wal::sync_dir(dir)) return e;
      spdlog::warn("dosql {}: repair: {} was ahead of the WAL; moved aside as {}.pre-repair, rebuilding from the WAL",
                   dir, sqlite_name, sqlite_name);
      *checkpointed = 0;
      p->checkpointed_lsn = 0;
      p->rec.rebuilt_sqlite = true;
    }
  }
  auto log = wal::log::open(wal::join(dir, "wal"), p->opts.wal, wal_recovery_options(*checkpointed, opts.repair));
  if (!log) return log.err();
  if (auto e = wal::record_lock_owner(p->dir_lock, dir)) return e;
  if (auto e = save_options(dir, p->opts)) return e;
  std::shared_ptr<wal::log> shared_log(std::move(*log));
  p->rec.wal = shared_log->report();
  if (p->rec.wal.torn_bytes)
    spdlog::warn("dosql {}: dropped a torn WAL tail of {} bytes at {}:{} ({})", dir, p->rec.wal.torn_bytes,
                 p->rec.wal.torn_segment, p->rec.wal.torn_offset, p->rec.wal.torn_reason);
  if (auto e = p->open_sqlite()) return e;
  if (auto e = p->recover(*shared_log)) return e;
  if (auto e = p->reload_catalog()) return e;
  if (p->opts.foreign_keys)
    if (auto e = detail::exec_simple(p->db, "PRAGMA foreign_keys=ON")) return e;
  auto prep = [&](stmt_ptr& dst, const char* sql) -> error {
    auto s = detail::prepare(p->db, sql);
    if (!s) return s.err();
    dst = std::move(*s);
    return {};
  };
  if (auto e = prep(p->meta_update, "UPDATE _dosql_meta SET lsn=?1, schema_version=?2 WHERE k=1")) return e;
  if (auto e = prep(p->begin_stmt, "BEGIN IMMEDIATE")) return e;
  if (auto e = prep(p->commit_stmt, "COMMIT")) return e;
  if (auto e = prep(p->rollback_stmt, "ROLLBACK")) return e;
  p->cap.set_internal(false);
  p->cap.set_spill(dir, opts.spill_threshold_bytes);
  p->next_lsn = shared_log->next_lsn();
  p->handed = shared_log->last_lsn();
  p->tail = std::make_shared<actors::durable_tail>(shared_log->durable_lsn());
  p->tail->group_commit_delay = std::chrono::microseconds(opts.group_commit_delay_us);
  p->log_ref = shared_log;
  p->writer = actors::spawn_wal_writer(system(), std::move(shared_log), p->tail, [dir]() -> result<uint64_t> {
    auto f = actors::read_slot_floor(dir);
    if (!f) return f.err();
    return f->lsn;
  });
  p->start_txn();
  // Everything recovered is durable in the WAL: let SQLite's file catch up (if it cannot, e.g.
  // on a full disk, SQLite's -wal keeps the data and a later checkpoint catches up).
  if (auto e = p->checkpoint_locked(SQLITE_CHECKPOINT_TRUNCATE))
    spdlog::warn("dosql {}: the checkpoint at open failed (nothing is lost; a later one retries): {}", dir, e.to_string());
  return std::shared_ptr<database>(new database(std::move(p)));
}

}  // namespace dosql
