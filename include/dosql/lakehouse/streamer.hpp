// The lakehouse streamer (the guide's createLakehouseStreamer, issue 16): it reads a database's
// change stream and sends it, in the guide's CDCBatch shape, over a WebSocket (ws:// or wss://)
// to a lakehouse receiver (`dosql lakehouse serve`), which writes Parquet changelog files. The
// wire protocol and the exactly-once argument are in docs/LAKEHOUSE.md.
//
// Semantics:
//  - The receiver's per-source watermark (the lastLsn of the last batch it holds durably) is the
//    truth. connect() says hello and learns it (welcome); start(from) reads the change stream
//    after max(from, the slot's acknowledged LSN when a slot is configured, the watermark), so
//    nothing at or below the watermark is sent again as new data, on every (re)connect.
//  - Batches carry the row changes (INSERT/UPDATE/DELETE) of committed transactions, in LSN
//    order, at most max_batch_size events, sent once full or max_batch_age after their first
//    event. Batch n's previousLsn is batch n-1's lastLsn. A batch is kept (pending) until the
//    receiver acknowledges it; a retry resends the same batch (same id, sequence number, LSNs and
//    events) with isRetry and retryCount + 1.
//  - Batches carry the stream's schema changes too (add/drop/rename column, ...), in LSN order
//    with the row changes, so that the receiver evolves the Iceberg schemas (docs/LAKEHOUSE.md,
//    "Schema evolution"). A non-retryable nack (e.g. an unsafe type change) stops the streamer,
//    or, with `dead_letters`, puts the batch's changes into that queue and goes on.
//  - A retryable nack, a lost connection or a receiver that is down are retried with the retry
//    config's capped exponential backoff (reliability::retry_delay): reconnect, hello, then the
//    pending batches again, in order (those the welcome's watermark covers are dropped: durable).
//    After retry.max_attempts consecutive failures (0: never give up) the streamer stops in
//    state `failed` with last_error set.
//  - With a slot, the slot is acknowledged only up to the watermark the receiver confirmed, so
//    the WAL keeps everything not yet durable on the receiver.
//  - Acks carry the receiver's buffer utilisation and a suggested delay: above 0.8 the streamer
//    signals slow_down and waits the suggested delay between batches, at 1.0 (or a nack for a
//    full buffer) pause (it sends nothing new, only heartbeats, until the utilisation falls),
//    back under 0.5 resume. Each change of signal reaches on_backpressure once.
//  - Memory is bounded: at most max_pending_batches batches are held unacknowledged; beyond that
//    the streamer stops reading (the subscription's credit window fills and its reader waits: the
//    backlog stays in the WAL on disk).
// Threading: the streamer runs one network thread and one reading thread of its own; every
// member function may be called from any thread; callbacks run on the network thread (keep
// them short, do not call stop() from them).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <dosql/database.hpp>
#include <dosql/error.hpp>
#include <dosql/reliability/dead_letter_queue.hpp>
#include <dosql/reliability/retry.hpp>

namespace dosql::lakehouse {

/// The guide's LakehouseStreamerConfig.
struct streamer_config {
  std::string url;                ///< lakehouseUrl: ws://HOST:PORT[/path] or wss://... (path default /v1/ingest)
  std::string source_id;          ///< sourceDoId: letters, digits, '.', '_', '-'
  std::string shard_name;         ///< sourceShardName (default: source_id)
  std::string token;              ///< sent as "Authorization: Bearer T" when not empty
  std::vector<std::string> tables;  ///< only these tables (empty: all)
  uint32_t max_batch_size = 1000;   ///< maxBatchSize: events per batch
  std::chrono::milliseconds max_batch_age{5000};  ///< maxBatchAge: a batch leaves this long after its first event
  /// retry: maxAttempts (0 here: never give up), initialDelayMs, maxDelayMs, backoffMultiplier.
  reliability::retry_config retry{.max_attempts = 0, .initial_delay_ms = 100, .max_delay_ms = 10000,
                                  .backoff_multiplier = 2.0, .jitter = 0.2, .retryable = {}};
  std::chrono::milliseconds heartbeat_interval{30000};  ///< heartbeatInterval
  /// exactlyOnce: start after the receiver's watermark and never acknowledge a slot beyond it.
  /// false: start at max(from, slot) only, and acknowledge the slot on each ack as well.
  bool exactly_once = true;
  std::optional<std::string> slot_name;  ///< consume this replication slot (it must exist)
  uint32_t max_pending_batches = 16;     ///< batches held unacknowledged at most
  uint32_t max_in_flight = 4;            ///< batches sent and not yet answered at most
  /// Connect / handshake / reply deadline: a receiver that accepts the TCP connection and then
  /// says nothing for this long counts as down (the connection is retried).
  std::chrono::milliseconds io_timeout{10000};
  /// TLS (wss://): CA file to verify the receiver's certificate with (empty: the system's), or
  /// no verification at all (tests with a self-signed certificate).
  std::string ca_file;
  bool tls_verify = true;
  /// Read-only directory mode: how often the WAL is polled at its tail.
  std::chrono::milliseconds poll_interval{20};
  /// Where a batch the receiver refuses for good (a non-retryable nack: an unsafe schema change,
  /// a value that cannot be stored) goes: its changes are added to this queue (durably), the
  /// receiver is told to move past its LSNs (the batch is resent as `deadLettered`, without
  /// events) and the stream goes on (Kafka Connect's errors.tolerance=all with a dead-letter
  /// queue). Unset (the default): such a nack stops the streamer in state `failed`, nothing
  /// acknowledged past the batch before it (errors.tolerance=none).
  std::shared_ptr<reliability::dead_letter_queue> dead_letters;
};

enum class streamer_state : uint8_t {
  idle,          ///< created, not connected
  connecting,    ///< (re)connecting, or waiting to retry
  connected,     ///< welcome received, not started
  streaming,
  paused,        ///< streaming, under backpressure pause
  stopped,       ///< stop() ran, or the stream reached its end (stop_at_tail) with everything acked
  failed,        ///< gave up (last_error says why)
};
std::string_view to_string(streamer_state s) noexcept;

/// The guide's BackpressureSignal.
struct backpressure_signal {
  enum class kind : uint8_t { pause, slow_down, resume } type = kind::resume;
  double buffer_utilization = 0;  ///< 0..1, the receiver's
  uint32_t suggested_delay_ms = 0;
};
std::string_view to_string(backpressure_signal::kind k) noexcept;

/// The guide's getStatus().
struct streamer_status {
  streamer_state state = streamer_state::idle;
  uint64_t total_entries_sent = 0;   ///< events in batches sent (retries not counted again)
  uint64_t total_batches_sent = 0;   ///< batches sent the first time
  uint64_t total_batches_acked = 0;
  uint64_t retries = 0;              ///< batches sent again (nack, reconnect)
  uint64_t reconnects = 0;
  uint64_t pending_batches = 0;      ///< built and not acknowledged
  uint64_t last_acked_lsn = 0;       ///< the receiver's confirmed watermark
  uint64_t read_lsn = 0;             ///< the last LSN read from the change stream
  /// The source's durable tail minus last_acked_lsn: WAL positions not yet durable on the receiver
  /// (a caught-up stream keeps the few transaction-control entries after its last change).
  uint64_t lag_lsn = 0;
  uint64_t next_sequence = 0;        ///< the sequence number of the next new batch
  backpressure_signal::kind backpressure = backpressure_signal::kind::resume;
  double buffer_utilization = 0;
  std::string last_error;            ///< the last failure (connection, nack, ...), "" if none
  uint64_t dead_lettered_batches = 0;  ///< batches refused for good and put in the dead-letter queue
  uint64_t dead_lettered_entries = 0;  ///< the changes (WAL entries) they held
};

/// The guide's getCheckpoint().
struct streamer_checkpoint {
  uint64_t committed_lsn = 0;  ///< the receiver's confirmed watermark: resume with start(committed_lsn)
  std::vector<std::string> pending_batch_ids;
};

class streamer {
 public:
  /// Embedded: streams `db`'s change stream through its public subscription API (and, with
  /// cfg.slot_name, the slot's position, acknowledged up to the confirmed watermark).
  /// INVALID_ARGUMENT naming the field for a bad config (url, source id, sizes).
  static result<std::unique_ptr<streamer>> create(std::shared_ptr<database> db, streamer_config cfg);
  /// A data directory another process owns (or none): reads its WAL files read-only, without
  /// the directory's lock, up to the durable tail its owner publishes (as `dosql tail DIR`).
  /// No slot (a slot needs the lock: open the database and use create()); exactly-once rests on
  /// the receiver's watermark alone.
  static result<std::unique_ptr<streamer>> open_directory(const std::string& dir, streamer_config cfg);

  ~streamer();  ///< stop()s
  streamer(const streamer&) = delete;
  streamer& operator=(const streamer&) = delete;

  /// Connects, says hello and waits for the welcome (bounded by io_timeout, retried by the
  /// retry config). The receiver's watermark is then in checkpoint().committed_lsn.
  error connect();
  /// Starts streaming after max(from_lsn, the slot's acknowledged LSN, the watermark). With
  /// `stop_at_tail`, reads up to the tail present now and stops (state stopped) once all of it
  /// is acknowledged (wait()). INVALID_ARGUMENT if not connected or already started.
  error start(uint64_t from_lsn = 0, bool stop_at_tail = false);
  /// Stops reading and sending, closes the connection; pending batches stay unacknowledged
  /// (the next run resends from the watermark). Idempotent.
  void stop();
  /// Blocks until the streamer stopped (stop_at_tail reached and acknowledged, stop(), or failed)
  /// or `timeout` passed; the final error (error{} when it stopped cleanly), nullopt on timeout.
  std::optional<error> wait(std::chrono::milliseconds timeout);

  streamer_status status() const;
  streamer_checkpoint checkpoint() const;
  /// The guide's onBackpressure(callback): each change of signal.
  void on_backpressure(std::function<void(const backpressure_signal&)> cb);

  struct impl;

 private:
  explicit streamer(std::unique_ptr<impl> p);
  std::unique_ptr<impl> p_;
};

/// The guide's createLakehouseStreamer(reader, backend, config).
inline result<std::unique_ptr<streamer>> create_lakehouse_streamer(std::shared_ptr<database> db, streamer_config cfg) {
  return streamer::create(std::move(db), std::move(cfg));
}

}  // namespace dosql::lakehouse
