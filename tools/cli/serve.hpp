// `dosql serve`: the parts without Boost.Beast (the server itself is serve.cpp, the only
// translation unit that includes Beast): the client protocol, the bearer token, the registry of
// live subscriptions and the Prometheus text of GET /metrics.
//
// The protocol (WebSocket text frames, JSON):
//   client -> {"type":"subscribe","from_lsn":N,"tables":[..],"operations":["insert","update","delete"],"where":{"t":"expr"},
//              "include_transactions":bool,"format":"json"|"wal2json"|"debezium","window":N}
//             (every field but "type" optional; once per connection). from_lsn: an LSN (decimal
//             integer <= the WAL's durable end; 0 = from lsn 1, LSN_NOT_FOUND once compacted) or
//             "oldest" (from the oldest retained entry); anything else closes with 1002
//   server -> {"type":"subscribed","subscription":"ID","from_lsn":N,"last_lsn":N,"format":"..."}
//             then one event per frame (`dosql tail`'s lines), committed transactions only
//   client -> {"type":"ack","lsn":N}   with a window: N > 0 events may be unacknowledged; acks are
//             cumulative and N may not exceed the last event's LSN sent (else close 1008 naming N)
//   server -> {"type":"error","code":"LSN_NOT_FOUND","message":"..."} before it closes on an error
//             ("FORBIDDEN" and 1008: a table outside the token's scope, see bearer_tokens)
// Invariants: events of a subscription are sent in strictly increasing LSN order (a transaction's
// BEGIN and COMMIT events share their entries' order); nothing of an uncommitted or rolled-back
// transaction is ever sent; a malformed or unexpected message closes the connection (1002).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/cdc.hpp>
#include <dosql/slots.hpp>
#include "tools/cli/cli.hpp"

namespace dosql::cli::serve {

// ---- the client protocol -------------------------------------------------------------------

/// include/dosql/cdc.hpp's subscribe_options and filter, as far as a remote client may set them.
struct subscribe_request {
  /// exclusive; 0: from lsn 1 (LSN_NOT_FOUND if compacted); beyond the WAL's end: an error
  uint64_t from_lsn = 0;
  bool from_oldest = false;  ///< "from_lsn":"oldest": from the oldest retained entry
  std::vector<std::string> tables;
  std::vector<op_type> operations;
  /// Per table: a SQL row filter ({"orders":"total > 100"}), as tail --where: checked against
  /// the table at subscribe time (an invalid one closes with INVALID_ARGUMENT naming it).
  std::map<std::string, std::string> where;
  bool include_transactions = false;  ///< BEGIN/COMMIT events around delivered changes
  tail_format format = tail_format::json;
  uint32_t window = 0;  ///< events sent and not yet acknowledged, at most (0: no acks needed)
  bool lossless_text = false;  ///< TEXT that is not valid UTF-8 as {"$text_base64": ...}
};

struct client_message {
  enum class kind : uint8_t { subscribe, ack } type = kind::subscribe;
  subscribe_request subscribe;
  uint64_t ack_lsn = 0;
};

/// Parses one text frame; INVALID_ARGUMENT with a short reason (the close reason) otherwise.
/// Unknown fields are refused, so that a misspelt option does not silently do nothing.
result<client_message> parse_client_message(std::string_view text);

std::string subscribed_message(uint64_t id, const subscribe_request& r, uint64_t last_lsn);
std::string error_message(const error& e);
/// {"type":"error","code":CODE,"message":MESSAGE} (e.g. FORBIDDEN, a request outside the token's scope).
std::string error_message(std::string_view code, std::string_view message);
const char* format_name(tail_format f);

// ---- authentication ------------------------------------------------------------------------

/// What a token may read. Every token is read-only: serve never writes to DIR (an ack only moves
/// the connection's window).
struct token_scope {
  /// The tables its subscriptions may read; nullopt: every table, empty: none (e.g. /metrics only).
  std::optional<std::vector<std::string>> tables;
  /// Per table: the columns its events carry (include/dosql/cdc.hpp's column_mask).
  std::map<std::string, cdc::column_mask> columns;
  /// May read GET /metrics (which shows every subscription and slot of the server). Default:
  /// true for a token without table or column limits, false otherwise.
  bool metrics = true;
  bool may_read(const std::string& table) const;
};

/// The tokens every CDC endpoint requires, each with its scope. Only their SHA-256 digests are
/// kept; a presented token is hashed and compared with every one in constant time (neither its
/// content nor its length leaks through timing).
///
/// --token T and $DOSQL_SERVE_TOKEN give one unrestricted token, and so does a --token-file
/// holding a bare token. A token file whose first non-blank character is `{` holds JSON lines,
/// one token per non-blank line:
///   {"token":"T","tables":["orders"],"columns":{"orders":{"include":["id","total"]}},"metrics":false}
/// where every field but "token" is optional (see token_scope).
class bearer_tokens {
 public:
  /// From --token, else --token-file, else $DOSQL_SERVE_TOKEN; nullopt with --no-auth.
  /// INVALID_ARGUMENT when none is given without --no-auth, or both are, or a file is malformed.
  static result<std::optional<bearer_tokens>> load(const serve_options& o);
  /// The JSON lines of a token file (`from` names it in errors).
  static result<bearer_tokens> parse_lines(std::string_view text, const std::string& from);
  explicit bearer_tokens(std::string_view token);  ///< one unrestricted token
  /// The scope of the token in `authorization` ("Bearer <token>", scheme case-insensitive), or
  /// nullptr if it is not one of them.
  const token_scope* scope_of(std::string_view authorization) const;
  size_t size() const noexcept { return tokens_.size(); }

 private:
  bearer_tokens() = default;
  struct entry {
    std::array<unsigned char, 32> digest{};
    token_scope scope;
  };
  std::vector<entry> tokens_;
};

// ---- live subscriptions and metrics --------------------------------------------------------

/// One subscription's counters: written by its connection's strand, read by /metrics.
struct subscription_stats {
  uint64_t id = 0;
  cdc::slot_filter filter;             ///< set before it is registered, then constant
  std::atomic<uint64_t> delivered{0};  ///< events written to the client
  std::atomic<uint64_t> position{0};   ///< every event up to this LSN was written (or filtered out)
  std::atomic<uint64_t> queued{0};     ///< events waiting in the connection's outgoing queue
  std::atomic<uint64_t> queued_bytes{0};  ///< bytes of the frames waiting there
};

/// The server's live subscriptions and connection count. Thread-safe.
class registry {
 public:
  std::shared_ptr<subscription_stats> add_subscription(cdc::slot_filter filter = {});
  void remove_subscription(uint64_t id);
  std::vector<std::shared_ptr<subscription_stats>> subscriptions() const;
  std::atomic<int64_t> connections{0};
  /// WebSocket streams (at most max_streams: one more is refused with 503 before the upgrade).
  std::atomic<int64_t> streams{0};
  int64_t max_streams = 0;
  std::atomic<uint64_t> refused_streams{0};      ///< upgrades refused at max_streams
  std::atomic<uint64_t> refused_connections{0};  ///< connections closed at accept (beyond the headroom)
  /// Counts a new stream unless max_streams are open.
  bool try_add_stream();

 private:
  mutable std::mutex mu_;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::shared_ptr<subscription_stats>> subs_;
};

/// The slots of DIR (DIR/slots/NAME.slot), read without the lock; none if the folder is
/// missing. A damaged slot file is listed in `damaged` (name, the reason naming the file), never
/// skipped silently: /metrics reports it as dosql_slot_damaged.
struct slot_listing {
  std::vector<cdc::slot_info> slots;
  std::vector<std::pair<std::string, std::string>> damaged;
};
result<slot_listing> read_slots(const std::string& dir);

/// The Prometheus text exposition (format 0.0.4) of GET /metrics for the data directory `dir`.
result<std::string> metrics_text(const std::string& dir, const registry& reg);

}  // namespace dosql::cli::serve
