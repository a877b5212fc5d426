// The event store of the event-sourcing example (the guide's "Example: Event Sourcing"), on
// <dosql/...> only: the guide's `events` table in a dosql database, appended to with optimistic
// concurrency, read back per aggregate, and followed through dosql's change stream.
//
// Invariants:
//  - An aggregate's events have versions 1, 2, 3, ... without a gap: append(agg, expected, events)
//    writes events expected+1 .. expected+n in ONE transaction, after checking (inside it, under
//    the database's single writer) that the aggregate's current version is `expected`; otherwise
//    it writes nothing and fails with a conflict naming the aggregate, the expected and the
//    actual version. UNIQUE(aggregate_id, version) backs this up in SQLite itself.
//  - The table is append-only: triggers refuse every UPDATE and DELETE of an event, and an
//    INSERT that would replace one (INSERT OR REPLACE), each with an error naming the table.
//  - A snapshot (table `snapshots`) is written in the same transaction as the event whose
//    version it captures, so it never runs ahead of the events.
// Thread safety: every member may be called from any thread (dosql serialises the writes).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <dosql/dosql.hpp>

namespace es {

using json = nlohmann::json;

// ---- errors: what the example's callers must tell apart (exit codes, retries) --------------

enum class errc : uint8_t {
  none = 0,
  conflict,        ///< optimistic concurrency: the aggregate moved on (retry after reloading)
  rule_violation,  ///< the aggregate's rules refuse the command
  not_found,       ///< no such aggregate
  invalid_input,   ///< a malformed command or event
  storage,         ///< dosql refused (the dosql::error's text is in the message)
};
std::string_view to_string(errc c) noexcept;

class [[nodiscard]] error {
 public:
  error() = default;
  error(errc code, std::string message) : code_(code), message_(std::move(message)) {}
  static error of(const dosql::error& e) { return error(errc::storage, e.to_string()); }
  errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  explicit operator bool() const noexcept { return code_ != errc::none; }
  /// "CONFLICT: ..."
  std::string to_string() const;

 private:
  errc code_ = errc::none;
  std::string message_;
};

template <class T>
class [[nodiscard]] result {
 public:
  result(T v) : v_(std::move(v)) {}      // NOLINT: implicit by design
  result(error e) : v_(std::move(e)) {}  // NOLINT
  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  T& operator*() & { return std::get<0>(v_); }
  T&& operator*() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  const error& err() const { return std::get<1>(v_); }

 private:
  std::variant<T, error> v_;
};

// ---- events ---------------------------------------------------------------------------------

/// The guide's metadata: who and why (absent fields are left out of the JSON).
struct metadata {
  std::string user_id, correlation_id, causation_id;
  json to_json() const;
  static metadata from_json(const json& j);
};

/// An event as the domain produces it, before it has an id, a version and a time.
struct new_event {
  std::string event_type;
  json payload = json::object();
  metadata meta;
};

/// The guide's DomainEvent, as stored.
struct stored_event {
  std::string event_id;
  std::string aggregate_id;
  std::string aggregate_type;
  std::string event_type;
  int64_t version = 0;
  int64_t timestamp = 0;  ///< Unix ms
  json payload;
  json metadata;
  /// The guide's camelCase shape.
  json to_json() const;
};

/// An event delivered by the change stream, with the LSN of its row in the WAL.
struct positioned_event {
  uint64_t lsn = 0;
  stored_event event;
};

struct aggregate_ref {
  std::string id;
  std::string type;
};

struct snapshot {
  int64_t version = 0;
  json state;
};

struct append_result {
  int64_t version = 0;      ///< the aggregate's version after the append
  uint64_t commit_lsn = 0;  ///< the commit's LSN in the WAL
  std::vector<stored_event> events;
};

struct loaded_stream {
  std::optional<snapshot> snap;      ///< the newest snapshot, if any
  std::vector<stored_event> events;  ///< the events after it (all of them without one)
  int64_t version() const { return events.empty() ? (snap ? snap->version : 0) : events.back().version; }
};

/// Creates the schema (idempotent): events, its append-only triggers, snapshots.
error initialize(dosql::database& db);

/// Decodes an `events` row image (as the change stream delivers it); DECODE-level errors
/// are invalid_input naming the column.
result<stored_event> event_from_row(const dosql::row& r);

/// Follows the `events` table's change stream (INSERTs only: the table is append-only), in
/// LSN order, from `from_lsn` (exclusive), optionally only some aggregate types. Built on a
/// dosql subscription: it blocks until the next event commits, never polls.
class event_subscription {
 public:
  /// The next event; nullopt when the range ended (stop(), stop_at_tail reached, an error:
  /// see err()).
  std::optional<positioned_event> next();
  void stop();
  const error& err() const noexcept { return err_; }
  /// The raw subscription (status(), settled_lsn()).
  dosql::cdc::subscription& raw() { return *sub_; }

 private:
  friend class event_store;
  explicit event_subscription(std::unique_ptr<dosql::cdc::subscription> s) : sub_(std::move(s)) {}
  std::unique_ptr<dosql::cdc::subscription> sub_;
  error err_;
};

/// The change-stream filter of the `events` table (INSERTs), and of some aggregate types.
dosql::cdc::subscribe_options events_stream_options(uint64_t from_lsn, const std::vector<std::string>& aggregate_types);

class event_store {
 public:
  /// `db` must be open; initialize() is called.
  static result<std::unique_ptr<event_store>> open(std::shared_ptr<dosql::database> db);

  /// Given the events as they will be stored: the aggregate's state to snapshot at the new
  /// version, or nullopt (or an error, which cancels the append).
  using snapshot_fn = std::function<result<std::optional<json>>(const std::vector<stored_event>&)>;
  /// Appends `events` as versions expected_version+1 .. in one transaction (see the header
  /// comment); what `snap` returns is stored with them as the state at the new version. At
  /// least one event; every event type non-empty, every payload a JSON object.
  result<append_result> append(const aggregate_ref& aggregate, int64_t expected_version,
                               const std::vector<new_event>& events, const snapshot_fn& snap = {});
  /// The newest snapshot and the events after it.
  result<loaded_stream> load(const std::string& aggregate_id);
  /// Every event of the aggregate, from version 1.
  result<std::vector<stored_event>> history(const std::string& aggregate_id);
  /// The guide's subscribeToEvents(fromLSN, {aggregateTypes}).
  result<std::unique_ptr<event_subscription>> subscribe_to_events(uint64_t from_lsn = 0,
                                                                  const std::vector<std::string>& aggregate_types = {},
                                                                  bool stop_at_tail = false);
  dosql::database& db() { return *db_; }
  const std::shared_ptr<dosql::database>& db_ptr() const { return db_; }

 private:
  explicit event_store(std::shared_ptr<dosql::database> db) : db_(std::move(db)) {}
  std::shared_ptr<dosql::database> db_;
};

/// A random (version 4) UUID.
std::string new_uuid();

}  // namespace es
