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
//  - `from_lsn` below the oldest retained entry fails with LSN_NOT_FOUND naming the oldest
//    (from_lsn = 0 included), unless `from_oldest` is set; beyond the durable end of the WAL
//    it is INVALID_ARGUMENT.
//  - The database closing ends every subscription promptly with CLOSED (entries already queued
//    for the consumer are handed out first); subscribing to a closed database fails with CLOSED.
// Thread safety: a subscription is iterated by one thread; stop() may be called from any.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <dosql/database.hpp>
#include <dosql/json.hpp>
#include <dosql/value.hpp>
#include <dosql/subscribe_options.hpp>
#include <dosql/filter.hpp>
#include <dosql/entry.hpp>

namespace dosql::cdc {

class subscription;
template <class T>
class change_subscription;

/// The guide's batching options (subscribeBatched, createWALCapturer): a batch goes out when it
/// holds max_batch_size entries, or when max_batch_age has passed since its first entry
/// arrived, whichever comes first (Kafka's batch.size / linger.ms). An age of 0 takes what has
/// arrived and does not wait for more.
struct batch_options {
  uint32_t max_batch_size = 1000;
  std::chrono::milliseconds max_batch_age{5000};
};

/// The guide's getStatus(), for every kind of subscription (subscription::status(),
/// cdc_stream::status()).
struct subscription_status {
  bool active = false;
  bool paused = false;
  uint64_t current_lsn = 0;        ///< last LSN processed by the handlers
  uint64_t entries_processed = 0;
  uint64_t buffered_entries = 0;   ///< received, waiting (paused) or unacknowledged
  int64_t last_entry_at = 0;       ///< Unix ms when the last entry was processed
  /// Entries the handlers would still receive: row changes and SCHEMA entries of committed
  /// transactions after current_lsn that match the filter (no BEGIN/COMMIT); 0 when caught up.
  uint64_t lag_entries = 0;
  /// Age of the oldest commit among those entries (now - its COMMIT timestamp): it grows while
  /// the stream is paused or its handlers stall; 0 when caught up.
  int64_t lag_ms = 0;
};

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
    /// Valid until the iterator moves on (one entry object is reused: no allocation per entry).
    reference operator*() const { return s_->current_; }
    pointer operator->() const { return &s_->current_; }
    iterator& operator++() {
      if (!s_->advance()) s_ = nullptr;
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(const iterator& o) const { return s_ == o.s_; }

   private:
    subscription* s_ = nullptr;
  };
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

  /// The next entry (blocking); nullopt when the range has ended (stop, error, tail).
  std::optional<wal_entry> next();
  /// The next batch (blocking; empty: the range ended). From subscribe_batched: batched by
  /// its batch_options. Otherwise: the rest of the current batch, or the next whole batch as
  /// the reader sent it (up to subscribe_options::batch_size).
  std::vector<wal_entry> next_batch();
  /// The next batch by `b`: blocks for the first entry, then gathers entries until the batch
  /// holds b.max_batch_size or b.max_batch_age has passed since that first entry (or the range
  /// ended: what was gathered is returned, and the next call returns empty).
  std::vector<wal_entry> next_batch(const batch_options& b);
  /// Ends the iteration promptly; callable from any thread.
  void stop();
  /// Why the range ended, if not by stop(): LSN_NOT_FOUND, DECODE_ERROR, CORRUPTION, ...
  const error& err() const noexcept { return err_; }
  /// LSN of the last entry handed out (the position to resume from).
  uint64_t position() const noexcept { return position_; }
  /// The position to acknowledge (callable from any thread): every entry up to it was handed
  /// out and the iterating thread came back for the next one (so it was processed), or was
  /// skipped by the filter (with heartbeats: while the iterating thread waits, caught up).
  uint64_t settled_lsn() const;
  /// Entries received from the reader and not yet handed out (bounded by max_buffer_size
  /// plus the batch being iterated).
  size_t buffered() const;
  /// The guide's getStatus(), callable from any thread: active (entries may still come),
  /// current_lsn (the last entry handed out, or the start), entries_processed (handed out),
  /// buffered_entries (received from the reader, not yet taken by the iterating thread),
  /// lag_entries / lag_ms as for slots (entries of committed transactions after current_lsn
  /// that match the filter, and the age of the oldest such commit; 0 when caught up).
  /// paused and last_entry_at stay false / 0 (an iterator is paused by not iterating).
  subscription_status status() const;

  struct impl;

 private:
  friend class cdc_handle;
  template <class T>
  friend class change_subscription;
  explicit subscription(std::unique_ptr<impl> p);
  enum class fill_status : uint8_t { got, timeout, ended };
  fill_status fill(const std::chrono::steady_clock::time_point* deadline);
  void take(std::vector<wal_entry>& out, size_t n);
  /// Moves to the next entry, decoding it into current_ (capacity reused).
  bool advance();
  std::unique_ptr<impl> p_;
  std::string batch_msg_;          // the current batch; views_ point into it
  std::vector<entry_view> views_;
  size_t next_ = 0;
  wal_entry current_;
  uint64_t position_ = 0;
  std::atomic<uint64_t> handed_{0}, handed_lsn_{0};  // for status() from other threads
  error err_;
  bool ended_ = false;
  std::optional<batch_options> batching_;  // set by subscribe_batched
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
  /// entered / left: an UPDATE delivered as insert / delete by a row filter.
  entry_origin origin = entry_origin::wal;
  hlc_stamp hlc{};  ///< the entry's hybrid logical clock (<dosql/entry.hpp>); last: aggregate inits keep working
};

struct transaction_event {
  enum class kind : uint8_t { begin, commit, rollback } type = kind::begin;
  std::string txn_id;
  int64_t timestamp = 0;
  uint64_t lsn = 0;
  hlc_stamp hlc{};
};

struct schema_change_event {
  std::string table;
  std::string txn_id;
  std::string change_type;  ///< create_table, drop_table, add_column, drop_column, alter_column, ...
  std::optional<std::string> column, old_column, old_type, new_type;
  int64_t schema_version = 0;
  std::string sql;
  int64_t timestamp = 0;
  uint64_t lsn = 0;
  hlc_stamp hlc{};
};

template <class T>
using event = std::variant<change_event<T>, transaction_event, schema_change_event>;

/// Decodes a row image into T; the default gives dosql::row.
template <class T>
using decoder = std::function<T(const row&)>;

/// The guide's JSON shapes, camelCase, one line each (the one event renderer: the API, `dosql
/// tail` and `dosql serve` all print these). Every event has "id" (its LSN, as a string),
/// "type", "txnId", "timestamp" (ISO 8601 UTC, ms), "lsn" and "hlc" (to_string(hlc_stamp):
/// "<physical ms>.<logical>.<node>", zero-padded so that comparing the strings orders events
/// across databases); then
///  - a row change: "table", "data" (insert/update), "oldData" (update/delete), "origin"
///    ("entered"/"left", from a row filter);
///  - "begin" / "commit" / "rollback": nothing more;
///  - "schema_change": "table", "changeType", "column", "oldColumn", "oldType", "newType"
///    (those that apply), "schemaVersion", "sql" (absent when a column mask withheld it).
/// `o.lossless_text`: TEXT that is not valid UTF-8 as {"$text_base64": ...} (see include/dosql/json.hpp).
std::string to_json(const change_event<row>& e, const json_options& o = {});
std::string to_json(const transaction_event& e);
std::string to_json(const schema_change_event& e);
std::string to_json(const event<row>& e, const json_options& o = {});

/// Turns a raw entry into an event (DECODE_ERROR naming the LSN if an image is malformed).
result<event<row>> to_event(const entry_view& e);
inline result<event<row>> to_event(const wal_entry& e) { return to_event(view_of(e)); }

/// What a typed subscription does with an entry its decoder rejects (or whose image is
/// malformed): end with DECODE_ERROR carrying the LSN, or report it and skip the entry.
enum class decode_error_policy : uint8_t { stop, skip };

/// Typed change events over a raw subscription (the guide's subscribeChanges<T>).
template <class T>
class change_subscription {
 public:
  change_subscription(std::unique_ptr<subscription> sub, decoder<T> dec, decode_error_policy policy)
      : sub_(std::move(sub)), dec_(std::move(dec)), policy_(policy) {}

  /// The next event (blocking); nullopt when the range ended (see err()).
  std::optional<event<T>> next() {
    for (;;) {
      if (!sub_->advance()) {
        if (!err_) err_ = sub_->err();
        return std::nullopt;
      }
      auto ev = to_event(sub_->current_);
      error e;
      if (ev) {
        if (auto* c = std::get_if<change_event<row>>(&*ev)) {
          auto typed = convert(*c, e);
          if (!e) return event<T>(std::move(typed));
        } else if (auto* t = std::get_if<transaction_event>(&*ev)) {
          return event<T>(std::move(*t));
        } else {
          return event<T>(std::get<schema_change_event>(std::move(*ev)));
        }
      } else {
        e = ev.err();
      }
      skipped_errors_.push_back(e);
      if (policy_ == decode_error_policy::stop) {
        err_ = e;
        sub_->stop();
        return std::nullopt;
      }
    }
  }
  class iterator {
   public:
    using value_type = event<T>;
    using difference_type = std::ptrdiff_t;
    using iterator_category = std::input_iterator_tag;
    iterator() = default;
    explicit iterator(change_subscription* s) : s_(s) { ++*this; }
    const event<T>& operator*() const { return *cur_; }
    const event<T>* operator->() const { return &*cur_; }
    iterator& operator++() {
      cur_ = s_->next();
      if (!cur_) s_ = nullptr;
      return *this;
    }
    bool operator==(const iterator& o) const { return s_ == o.s_; }

   private:
    change_subscription* s_ = nullptr;
    std::optional<event<T>> cur_;
  };
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }
  void stop() { sub_->stop(); }
  const error& err() const noexcept { return err_; }
  /// Decode errors met so far (with decode_error_policy::skip, the skipped entries' errors).
  const std::vector<error>& decode_errors() const noexcept { return skipped_errors_; }
  uint64_t position() const noexcept { return sub_->position(); }
  /// The guide's getStatus() (subscription::status()), callable from any thread.
  subscription_status status() const { return sub_->status(); }
  subscription& raw() { return *sub_; }

 private:
  change_event<T> convert(change_event<row>& c, error& e) {
    change_event<T> out;
    out.id = std::move(c.id);
    out.type = c.type;
    out.table = std::move(c.table);
    out.txn_id = std::move(c.txn_id);
    out.timestamp = c.timestamp;
    out.hlc = c.hlc;
    out.lsn = c.lsn;
    out.key = std::move(c.key);
    out.origin = c.origin;
    try {
      if (c.data) out.data = dec_(*c.data);
      if (c.old_data) out.old_data = dec_(*c.old_data);
    } catch (const std::exception& ex) {
      e = error(ec::decode_error, "lsn " + std::to_string(out.lsn) + " (" + out.table + "): decoder failed: " + ex.what()).at(out.lsn);
    }
    return out;
  }
  std::unique_ptr<subscription> sub_;
  decoder<T> dec_;
  decode_error_policy policy_;
  error err_;
  std::vector<error> skipped_errors_;
};

/// One batch of the WAL capturer (the guide's CaptureBatch).
struct capture_batch {
  uint64_t batch_id = 0;  ///< 1, 2, ... per capturer
  std::vector<wal_entry> entries;
  uint64_t start_lsn = 0, end_lsn = 0;
};

struct capturer_options {
  uint64_t from_lsn = 0;              ///< exclusive
  uint32_t max_batch_size = 1000;
  /// How long a batch that is not full waits for more entries, from its first entry (the
  /// guide's maxBatchAge; batch_options). 0: what has arrived goes out at once.
  std::chrono::milliseconds max_batch_age{0};
  cdc::filter filter;
  bool include_transaction_control = false;
  bool stop_at_tail = false;
};

/// Batches of raw entries for bulk consumers (the guide's createWALCapturer).
class wal_capturer {
 public:
  wal_capturer(std::shared_ptr<database> db, capturer_options opts) : db_(std::move(db)), opts_(std::move(opts)) {}
  /// The next batch (blocking); nullopt when the range ended (error() says why, if not stop()).
  std::optional<capture_batch> capture_next();
  /// Where capturing resumes (exclusive) the next time a stream starts; also restarts a
  /// running stream from there.
  void set_position(uint64_t lsn);
  uint64_t position() const noexcept { return position_; }
  void stop();
  const error& err() const noexcept { return err_; }
  /// The guide's getStatus() of the running capture stream (subscription::status()); before
  /// the first capture_next(), inactive at position().
  subscription_status status() const;

 private:
  std::shared_ptr<database> db_;
  capturer_options opts_;
  std::unique_ptr<subscription> sub_;
  uint64_t position_ = 0, next_id_ = 0;
  bool restart_ = true;
  error err_;
  friend class cdc_handle;
};

/// Entry point, the guide's createCDC(): subscriptions over one database.
class cdc_handle {
 public:
  explicit cdc_handle(std::shared_ptr<database> db) : db_(std::move(db)) {}
  /// A raw-entry subscription.
  result<std::unique_ptr<subscription>> subscribe(subscribe_options opts = {});
  /// Typed change events (the guide's subscribeChanges<T>); the default decoder gives rows.
  template <class T = row>
  result<change_subscription<T>> subscribe_changes(subscribe_options opts, decoder<T> dec = {},
                                                   decode_error_policy policy = decode_error_policy::stop) {
    if (!dec) {
      if constexpr (std::is_same_v<T, row>)
        dec = [](const row& r) { return r; };
      else
        return error(ec::invalid_argument, "subscribe_changes<T> needs a decoder for this T");
    }
    auto sub = subscribe(std::move(opts));
    if (!sub) return sub.err();
    return change_subscription<T>(std::move(*sub), std::move(dec), policy);
  }
  /// The guide's subscribeBatched: raw entries a batch at a time, by max batch size and max
  /// batch age (subscription::next_batch(); see batch_options).
  result<std::unique_ptr<subscription>> subscribe_batched(subscribe_options opts, batch_options b = {}) {
    auto s = subscribe(std::move(opts));
    if (s) (*s)->batching_ = b;
    return s;
  }
  wal_capturer create_wal_capturer(capturer_options opts) { return wal_capturer(db_, std::move(opts)); }
  database& db() { return *db_; }
  const std::shared_ptr<database>& db_ptr() const { return db_; }

 private:
  std::shared_ptr<database> db_;
};

/// The guide's subscribeTable<T>(reader, "orders", fromLSN, decoder).
template <class T = row>
result<change_subscription<T>> subscribe_table(std::shared_ptr<database> db, const std::string& table,
                                               uint64_t from_lsn = 0, decoder<T> dec = {}) {
  subscribe_options o;
  o.from_lsn = from_lsn;
  o.filter.tables = {table};
  o.filter.operations = {op_type::insert, op_type::update, op_type::del};
  return cdc_handle(std::move(db)).subscribe_changes<T>(std::move(o), std::move(dec));
}


inline cdc_handle create_cdc(std::shared_ptr<database> db) { return cdc_handle(std::move(db)); }

}  // namespace dosql::cdc
