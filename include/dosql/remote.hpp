// Remote subscribers (issue 18): the CDC service of a database published on a CAF middleman
// port, and the same subscribe / slots / consumer-actor API used from another process or
// machine.
//
//   server:  auto svc = dosql::remote::publish(db, {.port = 4711, .token = "s3cret"});
//   client:  dosql::runtime rt({.network = {.enabled = true}});
//            auto conn = rt.connect("10.0.0.1", 4711, "s3cret");
//            auto sub = (*conn)->subscribe_from_slot("billing", consumer_actor, {});
//
// Both runtimes must have runtime_options::network.enabled (TLS: network.tls on both sides).
// Invariants:
//  - Authentication first. The only actor a new connection can reach is the service's gate,
//    which honours nothing but a hello carrying the right token (compared in constant time).
//    Every other actor of the service (sessions, readers) answers only the node that
//    authenticated with it. A wrong or missing token gets INVALID_ARGUMENT and no data.
//  - Backpressure over the wire. The credit window (subscribe_options::max_buffer_size) spans
//    the link: the server's reader sends at most that many entries not yet acknowledged by the
//    client's consumer actor, so a consumer that stops reading holds the server's memory for
//    it to the window (max_remote_window caps what a client may ask for).
//  - Failure. A lost link (CAF's heartbeats and connection timeout notice a silent one) puts
//    the subscription into `reconnecting`; it reconnects with exponential backoff and resumes
//    after the last LSN its consumer was handed (never below its slot's acknowledged LSN), so
//    nothing is lost and nothing past the slot is delivered twice. A slot subscription
//    acknowledges the slot (durably, on the server) with every batch its consumer acknowledges.
//  - Only committed transactions travel (unless asked otherwise), in LSN order, each entry once
//    per subscription (stale batches from a lost link are dropped).
#pragma once

#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <dosql/cdc.hpp>
#include <dosql/consumer.hpp>
#include <dosql/slots.hpp>

namespace dosql {
class database;
class runtime;
}  // namespace dosql

namespace dosql::remote {

/// The most entries a remote subscription may keep unacknowledged (the server's memory bound per
/// subscription is this many entries; larger requests are lowered to it).
constexpr uint32_t max_remote_window = 65536;
/// Subscriptions one authenticated connection may hold at once.
constexpr uint32_t max_subscriptions_per_session = 64;

struct publish_options {
  std::string address = "127.0.0.1";  ///< interface to listen on ("0.0.0.0": all)
  uint16_t port = 0;                   ///< 0: any free port (service::port() tells)
  std::string token{};                 ///< required, at least 8 characters
  /// Authenticated sessions at once (one per client runtime's connection or subscription);
  /// a hello beyond it is refused with BUSY.
  uint32_t max_sessions = 1024;
  /// The slot manager remote clients use. Give the one the application already has (one per
  /// database); null: the service makes its own.
  std::shared_ptr<cdc::slot_manager> slots{};
};

/// A published CDC service; unpublished (port closed, sessions and their readers stopped) when
/// destroyed or stop()ped. Must not outlive its database or runtime.
class service {
 public:
  ~service();
  service(const service&) = delete;
  service& operator=(const service&) = delete;
  uint16_t port() const noexcept;
  /// Authenticated connections currently open, and hellos refused so far.
  uint64_t sessions() const;
  uint64_t refused() const;
  void stop();

  struct impl;
  explicit service(std::unique_ptr<impl> p);

 private:
  std::unique_ptr<impl> p_;
};

/// Publishes `db`'s CDC service on opts.address:opts.port with CAF's middleman (TLS when the
/// runtime has network.tls). INVALID_ARGUMENT without network.enabled or with a short token;
/// IO_ERROR if the port cannot be opened.
result<std::unique_ptr<service>> publish(std::shared_ptr<database> db, publish_options opts);

/// The link state of a remote subscription.
enum class link_state : uint8_t {
  connecting,    ///< first connection in progress
  streaming,     ///< connected, entries flowing (or caught up)
  reconnecting,  ///< the link was lost; retrying with backoff
  ended,         ///< finished (outcome() says why)
};
std::string_view to_string(link_state s) noexcept;

/// A remote subscription's status: the in-process fields (current_lsn = last LSN its consumer
/// acknowledged, buffered_entries = handed to it and not acknowledged, lag as measured by the
/// server at the last status poll) plus the link.
struct remote_status {
  cdc::subscription_status stream;
  link_state state = link_state::connecting;
  error last_error;            ///< the last link failure (kept after reconnecting)
  uint64_t reconnects = 0;     ///< successful reconnections
  int64_t outage_ms = 0;       ///< how long the link has been down (0 while connected)
  int64_t lag_measured_at = 0; ///< Unix ms of the server's last lag figure
  uint64_t slot_acked_lsn = 0; ///< slot subscriptions: the slot's acknowledged LSN on the server
};

struct reconnect_options {
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  /// 0: retry for ever.
  uint32_t max_attempts = 0;
  /// How long one connection attempt (TCP, TLS, hello) may take.
  std::chrono::milliseconds connect_timeout{5000};
  /// How often the server's lag figure is asked for (also a liveness check of the session).
  std::chrono::milliseconds status_interval{1000};
};

/// A running remote subscription; stops (and, if it has a slot, leaves the slot where its
/// consumer acknowledged) when destroyed.
class subscription {
 public:
  struct state;
  subscription() = default;
  explicit subscription(std::shared_ptr<state> s);
  subscription(subscription&&) noexcept = default;
  subscription& operator=(subscription&&) noexcept = default;
  ~subscription();
  void stop();
  /// nullopt while running; once ended, why (error{}: stop_at_tail reached the tail).
  std::optional<error> outcome() const;
  remote_status status() const;
  /// Blocks until the subscription ended or `timeout` passed; its outcome if it ended.
  std::optional<error> wait(std::chrono::milliseconds timeout) const;

 private:
  std::shared_ptr<state> s_;
};

/// A connection to a published CDC service (runtime::connect). Thread-safe. Slot calls go to
/// the server's slot manager (durable there); subscriptions hold their own links and reconnect
/// on their own.
class connection {
 public:
  struct impl;
  explicit connection(std::unique_ptr<impl> p);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// Feeds `consumer` (the <dosql/consumer.hpp> interface, unchanged) with the server's
  /// committed changes. opts as in-process, except that row_filters and filter.predicate
  /// (C++ functions) cannot travel: INVALID_ARGUMENT (use `where`, a SQL expression).
  result<subscription> subscribe_actor(cdc::consumer_actor consumer, cdc::subscribe_options opts);
  /// The same, resuming after slot `name` (its filter, heartbeats on) and acknowledging the slot
  /// with every batch the consumer acknowledges.
  result<subscription> subscribe_from_slot(const std::string& name, cdc::consumer_actor consumer,
                                           cdc::subscribe_options extra = {});

  /// The slot manager's calls (<dosql/slots.hpp>), run by the server. snapshot is not
  /// available remotely (INVALID_ARGUMENT).
  result<cdc::slot_info> create_slot(const std::string& name, cdc::create_slot_options opts = {});
  result<cdc::slot_info> get_slot(const std::string& name);
  result<std::vector<cdc::slot_info>> list_slots();
  error update_slot(const std::string& name, uint64_t lsn);
  error delete_slot(const std::string& name);
  /// The server's durable LSN (a round trip: also a liveness check).
  result<uint64_t> durable_lsn();

  const std::string& host() const noexcept;
  uint16_t port() const noexcept;

 private:
  std::unique_ptr<impl> p_;
};

/// runtime::connect with reconnect settings (runtime::connect uses the defaults).
result<std::shared_ptr<connection>> connect(runtime& rt, const std::string& host, uint16_t port,
                                            const std::string& token, reconnect_options ro = {});

}  // namespace dosql::remote
