// What a subscription asks of its reader (the guide's subscribe options): start position,
// filter, transaction framing, the consumer's credit window, column masks and row filters.
// Shared by the subscription reader actor (actors/subscription_reader.hpp) and the runtime's
// subscription API (include/dosql/cdc.hpp); the semantics are documented there.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include <dosql/filter.hpp>
#include <dosql/value.hpp>

namespace dosql::cdc {

/// What a subscription does when its consumer's window is full and entries are waiting.
enum class overflow_policy : uint8_t {
  wait,  ///< backpressure: the reader waits (entries stay on disk)
  fail,  ///< drop nothing, end the subscription with BUFFER_OVERFLOW instead of waiting
};

struct subscribe_options {
  uint64_t from_lsn = 0;                 ///< exclusive; beyond the durable end: INVALID_ARGUMENT
  /// When the entries after from_lsn were compacted away: start at the oldest retained entry
  /// (knowingly skipping the lost history) instead of failing with LSN_NOT_FOUND.
  bool from_oldest = false;
  std::optional<int64_t> from_time;      ///< Unix ms: start at the first transaction committed at or after it
  cdc::filter filter;
  bool include_transaction_control = false;
  bool include_uncommitted = false;
  uint32_t max_buffer_size = 4096;       ///< entries sent to the consumer and not yet acknowledged
  uint32_t batch_size = 512;             ///< entries per batch at most
  /// Stop at the tail present when the subscription started instead of following it.
  bool stop_at_tail = false;
  /// Per table: the columns this subscription may see.
  std::map<std::string, column_mask> columns;
  /// Per table: only rows matching the predicate. An UPDATE that makes a row match is
  /// delivered as an INSERT (origin entered), one that makes it stop matching as a DELETE
  /// (origin left), so the consumer's copy of the filtered set stays exact.
  std::map<std::string, std::function<bool(const row&)>> row_filters;
  /// Per table: only rows for which this SQL expression over the row's columns is true
  /// (`status = 'shipped' AND total > 100`; wal/sql_predicate.hpp), with the same
  /// enter/leave semantics (and ANDed with a row_filters entry of the same table). Compiled
  /// at subscribe time: an invalid expression, or one naming a table that does not exist, is
  /// INVALID_ARGUMENT naming it. One that stops compiling after a schema change (a column it
  /// names was dropped) ends the subscription with INVALID_ARGUMENT at that entry's LSN.
  std::map<std::string, std::string> where;
  overflow_policy on_overflow = overflow_policy::wait;
  /// Heartbeats (PostgreSQL keepalives, Debezium heartbeats): when the consumer is caught up
  /// and the reader has passed entries the filter skipped, it learns the position it is at
  /// (subscription::settled_lsn()), so that a filtered consumer can acknowledge past other
  /// tables' changes. On for subscribe_from_slot. A consumer actor then also receives
  /// (heartbeat_atom, uint64_t lsn) messages (actors/subscription_reader.hpp).
  bool heartbeats = false;
};

}  // namespace dosql::cdc
