// The invalidator: a consumer actor (cdc::consumer_actor, <dosql/consumer.hpp>) fed by
// cdc::subscribe_actor from a replication slot. It turns each committed transaction's row
// changes into cache ops (a planner says which) and applies them to the backend atomically
// at the transaction's COMMIT LSN, then advances applied_lsn(): every commit up to there is
// reflected in the cache (its keys deleted or rewritten, stale fills refused for good).
//
// Restart safety: the slot's acknowledged LSN only ever names applied commits, so a restart
// (after kill -9 too) resumes after the last one acknowledged and re-applies the rest
// (idempotent). Until the backlog present at start is applied (caught_up()), the managers read
// around the cache. Policy when history is missing (no slot yet, an invalidated slot, the WAL
// compacted past it) or `startup::flush` is asked for: the whole cache is voided (a flush op
// at the current LSN: every older value is a miss, every older fill refused).
//
// A backend failure (Redis down) is retried with backoff (100 ms doubling to 2 s, reported on
// stderr once a second) without acknowledging, so nothing is skipped; the batch's
// transaction is applied once the backend answers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <dosql/dosql.hpp>

#include "backend.hpp"

namespace dosql_cache {

/// Appends the ops of one row change (called in commit order, per transaction).
using planner = std::function<void(const dosql::cdc::change_event<dosql::row>&, std::vector<op>&)>;

struct invalidator_options {
  std::string slot = "dosql-cache";  ///< the replication slot (created at the tail if missing)
  enum class startup : uint8_t {
    resume,  ///< apply what was committed since the slot's ack before reporting caught up
    flush,   ///< void the cache instead and start at the tail
  } on_start = startup::resume;
  std::vector<std::string> tables;  ///< the tables whose changes matter (the slot's filter)
  /// Markers are kept for commits applied within this window (fills whose read is older are
  /// refused), and at most max_markers key markers (the window shrinks beyond).
  ms marker_max_age{10000};
  size_t max_markers = 100000;
  /// A transaction with more ops than this voids the cache at its commit instead (bounded memory).
  size_t max_txn_ops = 10000;
  ms ack_interval{100};  ///< slot acknowledgements at most this often (and at stop)
};

struct invalidator_stats {
  uint64_t transactions = 0;  ///< committed transactions applied
  uint64_t ops = 0;           ///< cache ops applied (deletes, puts, prefix/tag deletes)
  uint64_t flushes = 0;
  uint64_t backend_failures = 0;  ///< failed apply attempts (each retried)
};

class invalidator {
 public:
  /// Subscribes from the slot (see the header comment). Returns at once; see caught_up().
  static result<std::shared_ptr<invalidator>> start(std::shared_ptr<dosql::database> db, std::shared_ptr<backend> b,
                                                    planner p, invalidator_options o);
  ~invalidator();
  /// Every commit up to this LSN is applied to the cache.
  uint64_t applied_lsn() const;
  /// The backlog present at start is applied.
  bool caught_up() const;
  /// Waits until applied_lsn() >= lsn (a writer's read-your-writes: wait_for(commit_lsn)).
  /// False on timeout or if the invalidator stopped.
  bool wait_for(uint64_t lsn, ms timeout) const;
  bool wait_caught_up(ms timeout) const;
  /// Why it stopped (error{} while running or after stop()).
  error failure() const;
  invalidator_stats stats() const;
  /// Stops the subscription, acknowledges what was applied. Idempotent.
  void stop();

  struct core;

 private:
  explicit invalidator(std::shared_ptr<core> c) : c_(std::move(c)) {}
  std::shared_ptr<core> c_;
};

/// `$column` substitution (the guide's interpolatePattern): each `$name` ([A-Za-z0-9_]+) is the
/// row's value of that column as text (TEXT as is, numbers as JSON, NULL as "null"); a column
/// the row lacks gives "".
std::string interpolate(const std::string& pattern, const dosql::row& r);

}  // namespace dosql_cache
