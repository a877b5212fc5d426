// Subscriptions to the change stream (the guide's "Subscribing to CDC Streams").
//
// Each subscription has its own reader actor that reads the WAL segments (not the writer's
// memory) up to the durable tail and pushes batches to its consumer under a count-bounded
// request/ack credit window: never more than `max_buffer_size` entries sent and not yet
// acknowledged, so a stalled consumer stalls only its own reader and no memory grows with
// the backlog (it stays on disk).
//
// Semantics:
//  - `from_lsn` is exclusive: every matching entry with lsn > from_lsn, each exactly once, in
//    strictly increasing LSN order across all tables; 0 means from the beginning.
//  - Only committed transactions' entries are delivered (a transaction whose outcome is not in
//    the durable WAL yet is held back; rolled-back ones are skipped), unless
//    `include_uncommitted` is set: then entries are delivered as they become durable and each
//    transaction ends with COMMIT or ROLLBACK.
//  - With `include_transaction_control`, BEGIN and COMMIT are delivered around a transaction's
//    delivered changes; a filter never splits them (a transaction with no matching change
//    delivers nothing at all).
//  - `from_lsn` below the oldest retained entry fails with LSN_NOT_FOUND naming the oldest.
// Thread safety: a subscription is iterated by one thread; stop() may be called from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "runtime/database.hpp"
#include "runtime/value.hpp"
#include "wal/entry.hpp"

namespace dosql::cdc {

/// The guide's CDCFilter. Empty lists match everything.
struct filter {
  std::vector<std::string> tables;
  std::vector<op_type> operations;  ///< e.g. {op_type::insert, op_type::update}
  std::vector<std::string> txn_ids;
  /// A predicate over the raw entry (row changes and SCHEMA entries only).
  std::function<bool(const entry_view&)> predicate;

  /// True if the row change or SCHEMA entry `e` passes every criterion.
  bool matches(const entry_view& e) const;
};

struct subscribe_options {
  uint64_t from_lsn = 0;                 ///< exclusive
  std::optional<int64_t> from_time;      ///< Unix ms: start at the first transaction committed at or after it
  cdc::filter filter;
  bool include_transaction_control = false;
  bool include_uncommitted = false;
  uint32_t max_buffer_size = 4096;       ///< entries sent to the consumer and not yet acknowledged
  uint32_t batch_size = 512;             ///< entries per batch at most
  /// Stop at the tail present when the subscription started instead of following it.
  bool stop_at_tail = false;
};

class subscription;

/// A blocking input range of raw entries: `for (const wal_entry& e : sub) { ... }`.
/// It follows the live tail until stop() or the database closes; errors end the range and
/// are then available from error().
class subscription {
 public:
  ~subscription();
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;

  class iterator {
   public:
    using value_type = wal_entry;
    using difference_type = std::ptrdiff_t;
    using reference = const wal_entry&;
    using pointer = const wal_entry*;
    using iterator_category = std::input_iterator_tag;
    iterator() = default;
    explicit iterator(subscription* s) : s_(s) { ++*this; }
    reference operator*() const { return cur_; }
    pointer operator->() const { return &cur_; }
    iterator& operator++();
    void operator++(int) { ++*this; }
    bool operator==(const iterator& o) const { return s_ == o.s_; }

   private:
    subscription* s_ = nullptr;
    wal_entry cur_;
  };
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

  /// The next entry (blocking); nullopt when the range has ended (stop, error, tail).
  std::optional<wal_entry> next();
  /// Ends the iteration promptly; callable from any thread.
  void stop();
  /// Why the range ended, if not by stop(): LSN_NOT_FOUND, DECODE_ERROR, CORRUPTION, ...
  const error& err() const noexcept { return err_; }
  /// LSN of the last entry handed out (the position to resume from).
  uint64_t position() const noexcept { return position_; }
  /// Entries received from the reader and not yet handed out (bounded by max_buffer_size
  /// plus the batch being iterated).
  size_t buffered() const;

  struct impl;

 private:
  friend class cdc_handle;
  explicit subscription(std::unique_ptr<impl> p);
  bool fill();
  std::unique_ptr<impl> p_;
  std::vector<wal_entry> batch_;
  size_t next_ = 0;
  uint64_t position_ = 0;
  error err_;
  bool ended_ = false;
};

// ---- structured change events (the guide's ChangeEvent / TransactionEvent / SchemaChangeEvent)

enum class change_type : uint8_t { insert, update, del };
std::string_view to_string(change_type t) noexcept;

template <class T>
struct change_event {
  std::string id;  ///< the LSN as text
  change_type type = change_type::insert;
  std::string table;
  std::string txn_id;
  int64_t timestamp = 0;  ///< Unix ms
  uint64_t lsn = 0;
  std::optional<T> data;      ///< insert, update
  std::optional<T> old_data;  ///< update, delete
  std::optional<bytes> key;
};

struct transaction_event {
  enum class kind : uint8_t { begin, commit, rollback } type = kind::begin;
  std::string txn_id;
  int64_t timestamp = 0;
  uint64_t lsn = 0;
};

struct schema_change_event {
  std::string table;
  std::string change_type;  ///< create_table, drop_table, add_column, drop_column, alter_column, ...
  std::optional<std::string> column, old_column, old_type, new_type;
  int64_t schema_version = 0;
  std::string sql;
  int64_t timestamp = 0;
  uint64_t lsn = 0;
};

template <class T>
using event = std::variant<change_event<T>, transaction_event, schema_change_event>;

/// Decodes a row image into T; the default gives dosql::row.
template <class T>
using decoder = std::function<T(const row&)>;

/// The guide's JSON shape of an event: {"id","type","table","txnId","timestamp","lsn","data","oldData"}.
std::string to_json(const change_event<row>& e);

/// Turns a raw entry into an event (DECODE_ERROR naming the LSN if an image is malformed).
result<event<row>> to_event(const wal_entry& e);

/// Entry point, the guide's createCDC(): subscriptions over one database.
class cdc_handle {
 public:
  explicit cdc_handle(std::shared_ptr<database> db) : db_(std::move(db)) {}
  /// A raw-entry subscription.
  result<std::unique_ptr<subscription>> subscribe(subscribe_options opts = {});
  database& db() { return *db_; }

 private:
  std::shared_ptr<database> db_;
};

inline cdc_handle create_cdc(std::shared_ptr<database> db) { return cdc_handle(std::move(db)); }

}  // namespace dosql::cdc
