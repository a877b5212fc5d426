// dosql's public entry point: a runtime (owning the CAF actor system) opens databases; a
// database runs SQL over SQLite and captures every committed change into its WAL, through
// the WAL-writer actor, with no set-up.
//
// Guarantees (the crash-safety contract, tested by killing real processes):
//  1. A write that returned success is in both SQLite and the WAL, and survives kill -9 and
//     power loss (its COMMIT was fdatasync'd before exec() returned).
//  2. After any crash, SQLite and the WAL agree: no COMMIT in the WAL for a transaction
//     missing from SQLite, no change in SQLite without its WAL entries (recovery replays or
//     discards to make it so).
//  3. LSNs never change once durable.
// Each transaction appears in the WAL as BEGIN, its changes, COMMIT with consecutive LSNs
// and one txn id. A rolled-back transaction leaves nothing, or BEGIN, changes, ROLLBACK if
// part of it was streamed to the WAL before (large transactions) or it was cut by a crash
// (recovery writes the ROLLBACK); subscribers deliver committed transactions only.
// Thread safety: every member function may be called from any thread. Writes are serialised
// on one SQLite connection; SELECTs outside a transaction run on a pool of read-only
// connections. A transaction object belongs to the thread that began it.
#pragma once

#include <caf/fwd.hpp>

#include <chrono>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/value.hpp>
#include <dosql/config.hpp>
#include <dosql/entry.hpp>
#include <dosql/error.hpp>

struct sqlite3;  // sqlite3.h

namespace dosql {

struct runtime_options {
  size_t scheduler_threads = 0;  ///< CAF worker threads (0: one per core)
  /// CAF's scheduler: work sharing wakes an idle worker faster (live-tail latency); work
  /// stealing (CAF's default) spreads many busy actors better.
  enum class scheduler_policy : uint8_t { sharing, stealing } policy = scheduler_policy::sharing;
  /// CAF's middleman, for remote subscribers (<dosql/remote.hpp>): off unless enabled.
  struct network_options {
    bool enabled = false;
    /// TLS on every middleman connection (CAF's openssl module). A server needs certificate
    /// and key (PEM files); a client that sets cafile verifies the server against it (and a
    /// server that sets cafile requires client certificates). Without certificate and key,
    /// connections are encrypted but not authenticated (anonymous Diffie-Hellman).
    bool tls = false;
    std::string certificate{}, key{}, cafile{}, passphrase{};
    /// Both sides send a heartbeat this often; a connection silent for connection_timeout is
    /// closed (a cut link is noticed within about that time).
    std::chrono::milliseconds heartbeat{500};
    std::chrono::milliseconds connection_timeout{4000};
  } network;
};

struct database_options {
  wal_config wal;                ///< the guide's WALConfig (+ sync policy, retention)
  /// false (default): when `wal` is all defaults and the directory exists, the WAL settings
  /// its owner recorded in dosql.conf are used instead (a tool never rewrites them). true:
  /// `wal` is used, and recorded, as given, defaults included.
  bool wal_as_given = false;
  bool foreign_keys = true;      ///< PRAGMA foreign_keys (cascades are captured)
  uint64_t checkpoint_frames = 2000;  ///< SQLite WAL frames before dosql checkpoints
  bool create = true;            ///< create the directory if missing
  /// A transaction whose captured changes exceed this many bytes spills them to a file in
  /// the data directory and streams them to the WAL at commit (memory stays bounded).
  size_t spill_threshold_bytes = 8 << 20;
  /// Inside an explicit transaction, once this many bytes of settled changes (below every
  /// savepoint and the current statement) are buffered, they are handed to the WAL writer
  /// before COMMIT, which writes them and starts their writeback: the COMMIT then only adds
  /// the rest, and its fdatasync finds most of the transaction on disk already. Streamed
  /// entries stay invisible to subscribers until the COMMIT; a ROLLBACK after streaming
  /// is written as a ROLLBACK entry. 0 turns streaming off.
  size_t stream_threshold_bytes = 64 << 10;
  /// Group commit: while other threads are committing, the WAL writer waits up to this long
  /// for their transactions before it syncs, so that one fdatasync covers them all
  /// (PostgreSQL's commit_delay with commit_siblings = 1). A lone writer never waits.
  uint32_t group_commit_delay_us = 200;
  /// `dosql wal DIR repair`: recovery may drop entries below what was durable (the
  /// durable-mark rule, docs/ARCHITECTURE.md "Recovery"); the operator accepted the loss.
  /// Never recorded in dosql.conf.
  bool repair = false;
};

struct exec_result {
  int64_t changes = 0;            ///< rows changed by the last statement (0 unless it is DML)
  int64_t last_insert_rowid = 0;
  uint64_t commit_lsn = 0;        ///< LSN of the last COMMIT written (0: nothing captured)
};

struct query_result {
  std::vector<std::string> columns;
  std::vector<std::vector<value>> rows;
  int64_t changes = 0;      ///< rows changed by the last statement (0 unless it is DML)
  uint64_t commit_lsn = 0;  ///< as exec_result::commit_lsn (0 inside a transaction object)
};

/// What opening the directory found and repaired.
struct recovery_info {
  wal_open_report wal;
  bool created = false;
  bool discarded_sqlite_wal = false;  ///< SQLite was ahead of the WAL (its -wal was dropped)
  bool rebuilt_sqlite = false;        ///< repair: SQLite's file was ahead; moved aside, rebuilt from the WAL
  uint64_t sqlite_lsn = 0;            ///< last WAL commit SQLite held when opened
  uint64_t replayed_transactions = 0; ///< committed WAL transactions re-applied to SQLite
  uint64_t closed_orphan_lsn = 0;     ///< ROLLBACK appended for a transaction cut by a crash
};

class database;
class runtime;
namespace remote {
class connection;
}

/// A transaction held by one thread: BEGIN on creation, ROLLBACK on destruction unless
/// commit() ran. Other threads' writes wait until it ends.
class transaction {
 public:
  transaction(transaction&&) noexcept;
  transaction& operator=(transaction&&) = delete;
  ~transaction();
  result<exec_result> exec(std::string_view sql, const std::vector<value>& params = {});
  result<query_result> query(std::string_view sql, const std::vector<value>& params = {});
  /// Commits; returns once the commit is durable. The commit LSN (0 if nothing changed).
  result<uint64_t> commit();
  error rollback();

 private:
  friend class database;
  explicit transaction(database* db);
  database* db_;
  std::unique_lock<std::mutex> lock_;
  bool done_ = false;
};

/// A consistent read-only view of the database as of one commit: its queries see every
/// transaction up to lsn() and none after, while writers go on (a SQLite read transaction
/// on a connection of its own). Snapshot-then-stream: read the tables here, then subscribe
/// from lsn(): no gap and no overlap. Everything it shows is durable. Used by one thread at
/// a time; keep it short-lived (it holds back SQLite checkpoints); it must not outlive
/// its database.
class read_snapshot {
 public:
  read_snapshot(read_snapshot&& o) noexcept;
  read_snapshot& operator=(read_snapshot&&) = delete;
  ~read_snapshot();
  uint64_t lsn() const noexcept { return lsn_; }
  /// One read-only statement.
  result<query_result> query(std::string_view sql, const std::vector<value>& params = {});

 private:
  friend class database;
  read_snapshot(database* db, ::sqlite3* conn, uint64_t lsn) : db_(db), conn_(conn), lsn_(lsn) {}
  database* db_;
  ::sqlite3* conn_;
  uint64_t lsn_;
};

class database : public std::enable_shared_from_this<database> {
 public:
  ~database();
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  /// Runs one or more statements (positional `?` parameters are consumed in order across
  /// them). BEGIN/COMMIT may appear in the script, but a script may not leave a
  /// transaction open (use begin()). Returns once every commit it made is durable.
  result<exec_result> exec(std::string_view sql, const std::vector<value>& params = {});
  /// Runs statements and returns the rows of the last one.
  result<query_result> query(std::string_view sql, const std::vector<value>& params = {});
  result<transaction> begin();
  /// A consistent read-only view as of the last commit (see read_snapshot). Waits only for
  /// a transaction in progress to end and for the last commit's fdatasync.
  result<read_snapshot> snapshot();

  const std::string& dir() const noexcept;
  std::string wal_dir() const;
  uint64_t last_lsn() const;    ///< last COMMIT (or ROLLBACK) handed to the WAL writer
  uint64_t durable_lsn() const;  ///< last LSN known durable
  /// The WAL's active segment: first LSN and bytes in use (not its preallocated zero fill).
  /// All zero once the database is closed.
  segment_usage wal_active_segment() const;
  const recovery_info& recovery() const noexcept;
  /// The hybrid logical clock (<dosql/entry.hpp> hlc_stamp) across databases (shards):
  /// last_hlc() is this database's latest stamp (>= that of every entry it has written; {} once
  /// closed). observe_hlc(s) is the HLC's receive rule: every entry written after it gets a
  /// stamp greater than `s`, whatever this machine's clock says. Carry last_hlc() of one shard
  /// to observe_hlc() of another before a write that depends on the first (a move of a key
  /// between shards, say), and ordering by HLC puts the two in causal order.
  hlc_stamp last_hlc() const;
  hlc_stamp observe_hlc(const hlc_stamp& s);
  /// The WAL-writer actor (for subscriptions and tools; internally typed as
  /// actors::wal_writer_actor, actors/protocol.hpp).
  caf::actor wal_writer() const;
  runtime& owner() noexcept;

  /// Removes (with wal.auto_archive: moves to wal/archive/) every sealed WAL segment whose
  /// entries are all below `below_lsn`, and never one holding an entry a replication slot
  /// still needs (above the acknowledged LSN of any slot file in DIR/slots that is not
  /// invalidated; a damaged slot file fails the compaction with DECODE_ERROR naming it).
  /// The active segment always stays.
  result<compact_report> compact(uint64_t below_lsn);
  /// Applies the retention policy (wal.retention) now, as the WAL writer does after each
  /// segment seals: compact(wal::retention_point(...)), so slots still pin what they need.
  /// Removes nothing when the policy is not automatic.
  result<compact_report> apply_retention();

  /// Makes everything durable, checkpoints SQLite, stops the writer. Idempotent.
  error close();

  struct impl;

 private:
  friend class runtime;
  friend class transaction;
  friend class read_snapshot;
  explicit database(std::unique_ptr<impl> p);
  std::unique_ptr<impl> p_;
};


/// The options the data directory was last opened with (WAL settings are recorded in
/// DIR/dosql.conf at every open), so that tools act on it as its owner would; defaults if none.
result<database_options> load_database_options(const std::string& dir);

/// dosql logs (recovery warnings, failures) through spdlog's default logger. spdlog's initial
/// one writes to stdout; this replaces it (once) with one on stderr, unless the application has
/// installed its own. runtime's constructor calls it.
void default_log_to_stderr();

/// Owns the actor system. Destroy (or close) every database before the runtime.
class runtime {
 public:
  explicit runtime(runtime_options opts = {});
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Opens (creating if needed) the data directory `dir` and recovers it. Refuses a
  /// directory that is not dosql's, one written by a newer dosql, or one in use.
  result<std::shared_ptr<database>> open(const std::string& dir, const database_options& opts = {});
  caf::actor_system& system();
  /// Connects to a CDC service published with remote::publish (or `dosql serve --cdc-port`);
  /// needs runtime_options::network.enabled. See <dosql/remote.hpp>.
  result<std::shared_ptr<remote::connection>> connect(const std::string& host, uint16_t port, const std::string& token);
  const runtime_options& options() const noexcept;

 private:
  struct state;
  std::unique_ptr<state> s_;
};

}  // namespace dosql
