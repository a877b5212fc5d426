// Recovery: the WAL replayed into SQLite at open, and planned read-only for tools
// (docs/ARCHITECTURE.md, "Crash safety").
#include "runtime/database_impl.hpp"

namespace dosql {

using namespace detail;

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

result<wal::recovery_plan> plan_database_recovery(const std::string& dir, const database_options& opts,
                                                 uint64_t* sqlite_checkpointed) {
  auto cp = sqlite_checkpointed_lsn(dir);
  if (!cp) return cp.err();
  if (sqlite_checkpointed) *sqlite_checkpointed = *cp;
  return wal::log::plan_recovery(wal::join(dir, "wal"), opts.wal, wal_recovery_options(*cp, false));
}

}  // namespace dosql
