// The read models of the event-sourcing example: the guide's `order_summary` and
// `customer_orders` tables, kept by a projector consumer actor, exactly once across crashes.
//
// Where they live: in the same dosql database as the events (see the README, "Event
// sourcing"). The projector subscribes to the `events` table only (INSERTs), so its own writes
// to the projection tables are never fed back to it.
//
// Exactly once: each batch of events is applied in ONE dosql transaction that also moves the
// projection's position (table `projection_state`, through `dosql_offset_store`, an
// reliability::offset_store over a dosql transaction). That transaction reads the position
// first and applies only events above it, so after a crash (the transaction either committed
// or left nothing) events redelivered from the slot are skipped, and none is lost.
// The replication slot (`order-projector` by default; filter: table events, INSERT) pins the
// WAL the projector still needs and gives its lag; it is acknowledged after each commit (and
// past other tables' entries on heartbeats), so it is never ahead of the position. A restart
// resumes from max(slot, position).
//
// rebuild(from_lsn) replays the events into fresh tables (order_summary__rebuild, ...) from the
// change stream, then swaps them in, in one transaction that drops the old tables, renames the
// new ones and sets the position to the LSN the rebuild reached. A live projector in the same
// process keeps running beside the bulk of the replay; it pauses (projection_lock) only for the
// last stretch and the swap, and afterwards skips what the swap already covers.
#pragma once

#include <caf/fwd.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "event_store.hpp"

namespace es {

inline constexpr const char* projection_name = "orders";
inline constexpr const char* default_projector_slot = "order-projector";

/// The names of one set of projection tables (live, being rebuilt, or being verified).
struct projection_tables {
  std::string order_summary = "order_summary";
  std::string customer_orders = "customer_orders";
  static projection_tables with_suffix(const std::string& suffix) {
    return {"order_summary" + suffix, "customer_orders" + suffix};
  }
};

/// Creates the live projection tables and `projection_state` (idempotent).
error initialize_projections(dosql::database& db);
/// The one projection logic: folds one event into `t` inside `tx`. Events of other aggregate
/// types are ignored; an event that does not fit the tables (an order missing, an unknown
/// Order event) is an error naming it.
error project_event(dosql::transaction& tx, const projection_tables& t, const stored_event& e);

/// A reliability::offset_store over the dosql database itself: table
/// projection_state(name, lsn, updated_at), read and written in the unit's dosql transaction,
/// under dosql's single writer (so no other unit commits between the read and the commit).
class dosql_offset_store final : public dosql::reliability::offset_store {
 public:
  explicit dosql_offset_store(std::shared_ptr<dosql::database> db) : db_(std::move(db)) {}
  dosql::result<uint64_t> last_applied(const std::string& source) const override;
  /// The position never goes back: committing an LSN below the stored one keeps the stored one.
  dosql::error commit(const std::string& source, uint64_t lsn, const unit_body& body) override;
  /// The transaction of the unit running on this thread (only inside a unit's body).
  static dosql::transaction& unit_transaction();

 private:
  std::shared_ptr<dosql::database> db_;
};

/// Held by the projector around each batch and by rebuild() around its last catch-up and swap
/// (one per database in this process; taken before dosql's writer, never after).
std::mutex& projection_lock(const dosql::database& db);

/// Rows of a table ordered by its primary key (for row-for-row comparisons).
result<std::vector<std::vector<dosql::value>>> dump_table(dosql::database& db, const std::string& table);

struct rebuild_report {
  uint64_t lsn = 0;          ///< the position the rebuilt tables hold
  uint64_t events = 0;       ///< events replayed
  int64_t orders = 0;        ///< rows of order_summary
  int64_t customer_orders = 0;
};

/// Replays the events after `from_lsn` into fresh tables and swaps them in atomically (see the
/// header comment).
result<rebuild_report> rebuild(const std::shared_ptr<dosql::database>& db, uint64_t from_lsn = 0);

struct verify_report {
  bool equal = false;
  uint64_t lsn = 0;          ///< the position both sides hold
  int64_t orders = 0, customer_orders = 0;
  std::string difference;    ///< the first difference, when not equal
};
/// Rebuilds into scratch tables (never swapped) and compares them with the live ones row for
/// row. The live projection must be caught up and nobody appending: both sides at one LSN
/// (invalid_input otherwise).
result<verify_report> verify(const std::shared_ptr<dosql::database>& db);

struct projector_options {
  std::string slot = default_projector_slot;
  uint32_t max_buffer_size = 2048;
  uint32_t batch_size = 512;
  /// Replay from this LSN instead of max(slot, position): events at or below the position are
  /// delivered again and skipped (operators after restoring a slot; tests of the skip rule).
  std::optional<uint64_t> from_lsn;
  /// Called on the projector's thread after each commit with the position it reached
  /// (observers, the lag benchmark). Must not block.
  std::function<void(uint64_t lsn)> on_applied;
};

/// The running projector: a detached consumer actor (it writes and fsyncs) fed by a
/// subscription to `events` resumed from the slot.
class projector {
 public:
  static result<std::unique_ptr<projector>> start(std::shared_ptr<dosql::database> db, projector_options o = {});
  ~projector();
  projector(const projector&) = delete;
  projector& operator=(const projector&) = delete;
  /// Stops the subscription and the actor (idempotent).
  void stop();
  /// Waits until every committed event is applied (the subscription's lag is 0 with nothing
  /// in flight), the projector failed (its error), or the timeout (invalid_input saying so).
  error wait_caught_up(std::chrono::milliseconds timeout);
  /// The subscription's status (current_lsn: the last batch acknowledged; lag).
  dosql::cdc::subscription_status status() const;
  /// Why the projector stopped, if it did.
  std::optional<error> failure() const;
  const std::string& slot() const;
  dosql::cdc::slot_manager& slots();

  struct core;

 private:
  projector() = default;
  std::shared_ptr<core> core_;
  std::unique_ptr<dosql::cdc::slot_manager> slots_;
  dosql::cdc::actor_subscription sub_;
  dosql::cdc::consumer_actor actor_;
  bool actor_running_ = false;
};

}  // namespace es
