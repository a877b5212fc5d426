// The database object: SQLite open and catalog, the facade, compaction and close (see
// runtime/database_impl.hpp for the other parts).
#include "runtime/database_impl.hpp"

namespace dosql {

using namespace detail;

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
hlc_stamp database::last_hlc() const {
  auto l = p_->log_ref.lock();
  return l ? wal::unpack_hlc(l->clock().last(), l->node_id()) : hlc_stamp{};
}
hlc_stamp database::observe_hlc(const hlc_stamp& s) {
  auto l = p_->log_ref.lock();
  return l ? l->clock().update(s) : hlc_stamp{};
}
caf::actor database::wal_writer() const { return caf::actor_cast<caf::actor>(p_->writer); }
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
          [&](compact_report& r) { out = std::move(r); },
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

}  // namespace dosql
