// The dashboard's metrics (the guide's DashboardMetrics) over table `orders`, kept exact from
// the change stream, on dosql's public API only.
//
// Invariant: a metrics value published at LSN L equals the SQL aggregates over `orders` as of
// commit L: totalOrders = COUNT(*), ordersByStatus = COUNT(*) GROUP BY status, totalRevenue =
// SUM(total) (summed exactly in micro-units: no drift however many updates; it differs from
// SQLite's own floating SUM only by that SUM's rounding), recentOrders = the 10 rows first by
// `ORDER BY created_at DESC, id DESC` (SQLite's ordering of values, NULL last).
//
// How: metrics_state starts from a read_snapshot (aggregates and the `keep` newest rows, at the
// snapshot's LSN) and applies each committed insert/update/delete of `orders`. For the recent
// list it holds a *prefix*: the first |top| rows of the table in that order (or every row). A
// delete or an update of a row in it keeps a (shorter) prefix, a row that sorts above the
// prefix's last one joins it; when the prefix is shorter than 10 and the table holds more rows,
// the state no longer knows the 10 newest: needs_reload() says so and the consumer re-reads the
// whole state from a new snapshot (at an LSN at or past its position) and skips the entries the
// snapshot already holds. A SCHEMA change of `orders` also triggers a reload.
#pragma once

#include <dosql/dosql.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace dashboard {

inline constexpr const char* orders_schema =
    "CREATE TABLE IF NOT EXISTS orders(id TEXT PRIMARY KEY, user_id TEXT, total REAL, status TEXT, "
    "created_at INTEGER);"
    "CREATE INDEX IF NOT EXISTS orders_recent ON orders(created_at DESC, id DESC)";

/// The guide's Order, with SQL's NULLs kept (a NULL is a value too).
struct order {
  dosql::value id, user_id, total, status, created_at;
  bool operator==(const order&) const = default;
};

/// Status key of ordersByStatus for a NULL status (JSON keys are strings).
inline constexpr const char* null_status = "(null)";
/// The ordersByStatus key of a status value.
std::string status_key(const dosql::value& v);
/// SQLite's comparison of two values (NULL < numbers < TEXT < BLOB; BINARY collation).
int compare_sql(const dosql::value& a, const dosql::value& b);
/// A total in micro-units (what SUM adds: numbers, numeric text; NULL and the rest add 0; a
/// total beyond +-9.2e12, whose micro-units overflow int64, also adds 0).
int64_t micro_units(const dosql::value& total);

/// One published state (immutable once published; shared between threads).
struct metrics {
  int64_t total_orders = 0;
  double total_revenue = 0;
  std::map<std::string, int64_t> orders_by_status;  ///< no zero counts
  std::vector<order> recent_orders;                 ///< newest first, at most 10
  uint64_t lsn = 0;           ///< the last commit the metrics include
  int64_t commit_time = 0;    ///< Unix ms of that commit (0: unknown)
  /// What the stream delivered since the feed started (not SQL state: for rates on the page).
  uint64_t inserts_seen = 0, updates_seen = 0, deletes_seen = 0, reloads = 0;
};

/// The state of a consumer (see the header comment).
class metrics_state {
 public:
  explicit metrics_state(size_t recent = 10, size_t keep = 50) : recent_(recent), keep_(keep < recent ? recent : keep) {}
  /// Replaces everything by what `snap` shows (its lsn() becomes lsn()).
  dosql::error load(dosql::read_snapshot& snap);
  /// Applies one row change of `orders` (DECODE_ERROR naming the LSN if an image is bad).
  dosql::error apply(const dosql::entry_view& e);
  /// A schema change of `orders`: the state must be re-read.
  void invalidate() { stale_ = true; }
  /// The recent list is no longer known (or the schema changed): reload from a snapshot.
  bool needs_reload() const;
  /// Marks the end of a committed transaction.
  void commit(uint64_t lsn, int64_t time_ms) {
    lsn_ = lsn;
    commit_time_ = time_ms;
  }
  uint64_t lsn() const { return lsn_; }
  /// Sets the commit time of lsn() when it is learnt after a load.
  void set_commit_time(int64_t t) { commit_time_ = t; }
  std::shared_ptr<const metrics> publish() const;
  size_t prefix_size() const { return top_.size(); }

 private:
  struct key {
    dosql::value created_at, id;
  };
  struct newer_first {
    bool operator()(const key& a, const key& b) const;
  };
  void add(order o);
  void remove(const order& o);
  void count(const order& o, int sign);

  size_t recent_, keep_;
  int64_t total_ = 0;
  __int128 revenue_units_ = 0;
  std::map<std::string, int64_t> by_status_;
  std::map<key, order, newer_first> top_;  // the prefix, newest first
  uint64_t lsn_ = 0;
  int64_t commit_time_ = 0;
  bool stale_ = false;
  uint64_t inserts_ = 0, updates_ = 0, deletes_ = 0, reloads_ = 0;
};

/// Commit time (Unix ms) of the COMMIT at `lsn`, read from the WAL; 0 if it cannot be found.
int64_t commit_time_of(const std::shared_ptr<dosql::database>& db, uint64_t lsn);

/// The consumer: a snapshot, then a consumer actor (cdc::consumer_actor, spawned detached: a
/// reload queries SQLite) subscribed from the snapshot's LSN. Each committed transaction that
/// touched `orders` publishes a new metrics value through `publish` (called on the actor's
/// thread; keep it short).
class metrics_feed {
 public:
  using publish_fn = std::function<void(std::shared_ptr<const metrics>)>;
  struct options {
    size_t recent = 10;
    size_t keep = 50;
    uint32_t max_buffer_size = 4096;
    uint32_t batch_size = 512;
  };
  /// Requires table `orders` (orders_schema). Publishes the snapshot's state before returning.
  static dosql::result<std::unique_ptr<metrics_feed>> start(std::shared_ptr<dosql::database> db, publish_fn publish,
                                                            options opts);
  static dosql::result<std::unique_ptr<metrics_feed>> start(std::shared_ptr<dosql::database> db, publish_fn publish) {
    return start(std::move(db), std::move(publish), options{});
  }
  ~metrics_feed();
  /// Stops the subscription and the actor; idempotent.
  void stop();
  dosql::cdc::subscription_status status() const { return sub_.status(); }
  /// nullopt while running; why it ended otherwise.
  std::optional<dosql::error> outcome() const { return sub_.outcome(); }

 private:
  metrics_feed() = default;
  dosql::cdc::actor_subscription sub_;
  dosql::cdc::consumer_actor actor_;
  caf::actor_system* system_ = nullptr;
};

}  // namespace dashboard
