// The commit protocol (docs/ARCHITECTURE.md, "Data flow of one commit"): LSN prediction,
// the hand-over to the WAL writer, streaming large transactions, checkpoints.
#include "runtime/database_impl.hpp"

namespace dosql {

using namespace detail;

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

}  // namespace dosql
