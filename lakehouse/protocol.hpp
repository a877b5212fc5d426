// The lakehouse wire protocol, version 1 (docs/LAKEHOUSE.md, "Wire protocol"): every message the
// streamer and the receiver exchange, as C++ values, with one parser and one renderer for each.
//
// Invariants:
// - render(m) is one line of JSON (camelCase field names, as in the guide); parse(render(m))
//   gives m back exactly, events included: a batch's events are cdc::to_json's shape with
//   json_options::lossless_text, and their values parse back to the same storage class and bits
//   (INTEGER: a JSON integer; REAL: a number with '.' or an exponent; TEXT: a string, or
//   {"$text_base64": ...} when not valid UTF-8; BLOB: {"$base64": ...}; NULL: null). A REAL NaN
//   or infinity, which JSON lacks, is rendered null by cdc::to_json and so arrives as NULL.
// - parse() never throws: a frame that is not JSON, has no known "type", lacks a required field
//   or has one of the wrong type is INVALID_ARGUMENT naming the message type and the field
//   ("batch: field 'lastLsn' must be an unsigned integer"); for an event, its index and LSN.
//   Unknown fields are ignored (a newer peer may add some).
// - Each event's "hlc" (cdc::to_json's, issue 18) is parsed into its hlc_stamp; a malformed one
//   is INVALID_ARGUMENT; an event without one (a streamer from before it) gets {physical: its
//   timestamp, logical: 0, node: 0}, the stamp the WAL gives entries of format version 1.
// - parse() checks the shape of each message, not its meaning: LSN order within a batch, sequence
//   numbers and watermarks are the receiver's to judge (check_batch() does the LSN-order part).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <dosql/cdc.hpp>
#include <dosql/error.hpp>

#include "lakehouse/changelog.hpp"

namespace dosql::lakehouse::protocol {

inline constexpr int version = 1;
/// The WebSocket path of the ingest endpoint.
inline constexpr std::string_view ingest_path = "/v1/ingest";

struct hello {
  int protocol = version;
  std::string source_id;
  std::string shard_name;
  bool operator==(const hello&) const = default;
};

struct welcome {
  int protocol = version;
  std::string source_id;
  uint64_t watermark = 0;      ///< durable: every batch with lastLsn <= watermark has landed
  uint64_t next_sequence = 1;  ///< the sequence number the receiver expects next
  uint64_t max_frame_bytes = 0;
  bool operator==(const welcome&) const = default;
};

/// A schema change of a source table, carried in a batch's `events` in LSN order with the row
/// changes: cdc::to_json's "schema_change" object, plus "columns" (the table's columns and
/// declared types after the change, as the streamer knows them; absent when it does not).
struct schema_event {
  cdc::schema_change_event event;
  std::optional<std::vector<source_column>> columns;
};

struct batch {
  std::string batch_id;
  std::string source_id;
  uint64_t sequence_number = 0;
  uint64_t previous_lsn = 0;
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;
  int64_t created_at = 0;  ///< Unix ms
  uint64_t size_bytes = 0;
  bool is_retry = false;
  uint32_t retry_count = 0;
  /// Per table with an event in the batch: its columns and declared types.
  std::map<std::string, std::vector<source_column>> schemas;
  /// Row changes (insert, update, delete), in LSN order.
  std::vector<cdc::change_event<row>> events;
  /// Schema changes, in LSN order; on the wire they are in `events` too, merged by LSN.
  std::vector<schema_event> schema_changes;
  /// The streamer put this batch's changes into its dead-letter queue after a non-retryable
  /// nack and sends it again without events, so that the receiver moves past its LSNs.
  bool dead_lettered = false;
};

struct ack {
  std::string batch_id;
  uint64_t sequence_number = 0;
  uint64_t last_lsn = 0;
  bool duplicate = false;
  uint64_t watermark = 0;
  double buffer_utilization = 0;
  uint64_t suggested_delay_ms = 0;
  bool operator==(const ack&) const = default;
};

struct nack {
  std::string batch_id;
  uint64_t sequence_number = 0;
  bool retryable = true;
  std::string reason;
  double buffer_utilization = 0;
  uint64_t suggested_delay_ms = 0;
  bool operator==(const nack&) const = default;
};

struct heartbeat {
  std::string source_id;
  uint64_t lsn = 0;
  int64_t timestamp = 0;  ///< Unix ms
  bool operator==(const heartbeat&) const = default;
};

struct heartbeat_ack {
  std::string source_id;
  uint64_t watermark = 0;
  double buffer_utilization = 0;
  uint64_t suggested_delay_ms = 0;
  bool operator==(const heartbeat_ack&) const = default;
};

/// Error codes of an `error` frame.
inline constexpr std::string_view malformed = "MALFORMED", too_large = "TOO_LARGE", protocol_violation = "PROTOCOL",
                                  unauthorized = "UNAUTHORIZED";

struct error_frame {
  std::string code;
  std::string message;
  bool operator==(const error_frame&) const = default;
};

using message = std::variant<hello, welcome, batch, ack, nack, heartbeat, heartbeat_ack, error_frame>;

/// The "type" of each message: "hello", "welcome", "batch", ...
std::string_view type_name(const message& m) noexcept;

/// Parses one text frame (see the invariants above).
result<message> parse(std::string_view text);

std::string render(const hello& m);
std::string render(const welcome& m);
/// The events are rendered with cdc::to_json(e, {.lossless_text = true}).
std::string render(const batch& m);
/// One schema event as it goes into a batch's `events` (cdc::to_json + "columns").
std::string render(const schema_event& e);
/// A batch whose events are already JSON text (cdc::to_json with lossless_text), one per element:
/// what a streamer that renders events once uses. Same output as render(batch).
std::string render_batch(const batch& header, const std::vector<std::string>& event_json);
std::string render(const ack& m);
std::string render(const nack& m);
std::string render(const heartbeat& m);
std::string render(const heartbeat_ack& m);
std::string render(const error_frame& m);
std::string render(const message& m);

/// The LSN rules of one batch: previousLsn < firstLsn <= lastLsn; every event's LSN (row and
/// schema changes alike) within [firstLsn, lastLsn] and not below the one before it of its kind;
/// every row change's table in `schemas`; a dead-lettered batch has no events.
/// INVALID_ARGUMENT naming the batch and what is wrong.
error check_batch(const batch& b);

/// The inverse of to_string(hlc_stamp) (<dosql/entry.hpp>): exactly "<15 digits>.<5 digits>.<10
/// digits>" with physical < 2^48, logical <= 65535, node < 2^32; nullopt otherwise.
std::optional<hlc_stamp> parse_hlc(std::string_view text) noexcept;

/// A JSON value of an event image back to a dosql value (the inverse of dosql::to_json with
/// lossless_text). `what` names it in errors.
result<value> value_from_json_text(std::string_view json_text, const std::string& what = "value");

}  // namespace dosql::lakehouse::protocol
