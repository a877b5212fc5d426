// The demo's workload (shared by `dosql-cache demo` and the tests): the guide's three tables
// and cache configuration, writers that change rows (updates, inserts, deletes, moves of the
// key column), readers that read rows through the cache, and a checker that proves no read
// returned a value older than a commit the invalidator had applied before the read.
//
// The checker: every write records, per cache key, the commit LSN and the row's JSON after it
// (read inside the transaction) or "absent"; every read records the key, the invalidator's
// applied LSN P taken before the read, and what it returned. A read is stale if the value it
// returned belongs only to states of the key older than the last commit <= P. A read is
// checked once every commit up to the database's last LSN after it is recorded (writers
// announce a floor below their commit before they begin), so the check is exact, no timing.
#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>

#include "cache_manager.hpp"

namespace dosql_cache {

/// The demo's tables: users, products, orders (each row has a `version` bumped by every update).
extern const char* demo_schema;
/// The guide's configuration: users -> user:$id (update_on_change, user:email:$email,
/// users:list:*), products -> product:$id (ttl 300 s, products:category:$category_id,
/// products:search:*), orders -> order:$id (user:$user_id:orders, orders:recent).
cache_config guide_config();

class history {
 public:
  /// A writer is about to begin a transaction: its commit will be above `floor`.
  void begin_write(int writer, uint64_t floor);
  /// The writer's transaction committed at `lsn` (0: it did not) with these effects
  /// (key -> row JSON, or nullopt for no row).
  void end_write(int writer, uint64_t lsn, const std::vector<std::pair<std::string, std::optional<std::string>>>& effects);
  /// The state of keys as of `lsn` (initial rows; absent keys as nullopt).
  void record_state(uint64_t lsn, const std::vector<std::pair<std::string, std::optional<std::string>>>& state);
  /// `horizon`: the database's last LSN after the read (whatever it returned is at or below it).
  void record_read(const std::string& key, uint64_t applied_before, const std::optional<std::string>& value,
                   uint64_t horizon);
  /// Checks the reads that can be checked now (all when no writer is in flight).
  void check();
  uint64_t reads_checked() const;
  uint64_t stale_reads() const;
  std::vector<std::string> stale_examples() const;

 private:
  struct read_rec {
    std::string key;
    uint64_t p;
    uint64_t h;
    uint64_t horizon;
  };
  void check_one(const read_rec& r);
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> h_;  // key -> (lsn, hash)
  std::map<int, uint64_t> inflight_;
  std::deque<read_rec> reads_;
  uint64_t checked_ = 0, stale_ = 0;
  std::vector<std::string> examples_;
};

struct workload_options {
  int keys = 50;       ///< ids 1..keys per table (products move within 1..2*keys)
  int writers = 2;
  int readers = 4;
  uint64_t seed = 1;
  /// Every this-many-th write waits for its invalidation and reads its own write back (0: never).
  int read_your_writes_every = 10;
};

/// Runs writers and readers against `db` through `cm` until `stop` is set.
class workload {
 public:
  workload(std::shared_ptr<dosql::database> db, cache_manager& cm, workload_options o) : db_(std::move(db)), cm_(cm), o_(o) {}
  /// Creates the tables and seeds missing rows; records the state of every key as of a
  /// snapshot (call after the invalidator caught up, before run()).
  error prepare();
  /// Runs until `stop`; returns the first error a thread met (none expected).
  error run(const std::atomic<bool>& stop);
  /// One writer's transaction (exposed for tests that write beside a stopped invalidator).
  error write_one(std::mt19937_64& rng, int writer);
  /// One read through the cache, recorded.
  error read_one(std::mt19937_64& rng);
  /// After the invalidator applied everything: every cached key equals the database's row.
  /// Returns the number of cached keys compared, or an error naming the first mismatch.
  result<uint64_t> compare_cache_with_database();

  history& hist() { return h_; }
  uint64_t writes() const { return writes_.load(); }
  uint64_t reads() const { return reads_.load(); }
  uint64_t ryw_checks() const { return ryw_.load(); }

  static result<std::optional<std::string>> fetch_row(dosql::read_snapshot& s, const std::string& table, int64_t id);
  std::vector<std::string> key_space() const;

 private:
  std::shared_ptr<dosql::database> db_;
  cache_manager& cm_;
  workload_options o_;
  history h_;
  std::atomic<uint64_t> writes_{0}, reads_{0}, ryw_{0};
};

}  // namespace dosql_cache
