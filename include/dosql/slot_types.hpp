// The replication-slot vocabulary shared by the slot-manager actor (actors/slot_manager.hpp)
// and the runtime's slot API (include/dosql/slots.hpp, which documents the semantics).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <dosql/entry.hpp>
#include <dosql/filter.hpp>

namespace dosql::cdc {

/// What a slot remembers of its consumer's filter: the whole filter spec (tables, operations,
/// txn ids, column masks, SQL row filters), persisted in the slot file and applied by
/// subscribe_from_slot and `dosql tail --slot`.
using slot_filter = filter_spec;

struct slot_info {
  std::string name;
  uint64_t acked_lsn = 0;      ///< everything up to here was processed
  slot_filter filter;
  int64_t created_at = 0;      ///< Unix ms
  int64_t last_ack_at = 0;     ///< Unix ms of the last acknowledgement (or creation)
  bool invalidated = false;
  std::string invalid_reason;
  bool stalled = false;        ///< no acknowledgement for slot_idle_timeout
  /// Entries the slot's consumer would still receive: row changes and SCHEMA entries of
  /// committed transactions after acked_lsn that match the slot's filter (no BEGIN/COMMIT).
  uint64_t lag_entries = 0;
  uint64_t lag_bytes = 0;      ///< WAL bytes the slot holds back
  /// Age of the oldest commit among those entries (now - its COMMIT timestamp); 0 when
  /// lag_entries is 0. It grows while the consumer is stuck.
  int64_t lag_ms = 0;
};

struct slot_config {
  std::chrono::milliseconds idle_timeout{0};  ///< 0: never stalled
  bool invalidate_idle = false;               ///< invalidate stalled slots
  uint64_t max_slot_retention_bytes = 0;      ///< 0: unlimited
  /// How often the idle and retention-guard checks run; each then applies the database's
  /// retention (database_options::wal.retention), so an invalidated slot releases its WAL.
  std::chrono::milliseconds check_interval{1000};
};

}  // namespace dosql::cdc
