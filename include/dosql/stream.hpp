// Consumer actors and the callback stream (the guide's createCDCStream).
//
// A consumer is an actor that receives batches from a subscription's reader actor and answers
// each with the LSN it processed (the ack that returns credit). Users either write such an
// actor themselves (consumer_actor, documented with an example in <dosql/consumer.hpp>:
// `(batch_atom, batch)` -> uint64_t, `(end_atom, subscription_end)`, heartbeats, watch), or
// fill the small `consumer` interface, or use the callback stream.
// Invariant: a consumer holds at most max_buffer_size unacknowledged entries; pausing a stream
// stops acknowledging, so its reader stops reading (backpressure down to the WAL on disk).
// Endings: the database closing ends every subscription with CLOSED; a consumer actor that
// dies or answers a batch with an error (on_batch throwing) ends it with SUBSCRIPTION_FAILED
// whose `lsn` is the first entry not acknowledged (see actor_subscription::outcome()).
#pragma once


#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include <dosql/cdc.hpp>
#include <dosql/consumer.hpp>
#include <dosql/reliability.hpp>

namespace dosql::cdc {

/// A running subscription that feeds an actor; stops when destroyed unless detach()ed.
class actor_subscription {
 public:
  /// How the subscription ended, filled by the reader.
  struct end_state {
    mutable std::mutex mu;
    bool ended = false;  // guarded by mu
    error err;           // guarded by mu
  };
  actor_subscription() = default;
  actor_subscription(reader_control_actor reader, consumer_actor consumer,
                     std::shared_ptr<end_state> end = nullptr);
  actor_subscription(actor_subscription&&) noexcept = default;
  actor_subscription& operator=(actor_subscription&&) noexcept = default;
  ~actor_subscription();
  /// Ends the subscription: the reader stops (the consumer actor is left to its owner).
  void stop();
  /// Lets the subscription run after this handle is gone.
  void detach() { reader_ = nullptr; }
  /// The reader: it takes (pause_atom) and (resume_atom); send it to the consumer with
  /// (watch_atom, reader()) so that the consumer notices a reader that stops.
  const reader_control_actor& reader() const noexcept { return reader_; }
  const consumer_actor& consumer() const noexcept { return consumer_; }
  /// Never blocks: nullopt while the range runs (or after stop()); once it ended, why
  /// (error{}: stop_at_tail reached the tail; CLOSED: the database closed; SUBSCRIPTION_FAILED
  /// with error::lsn: the consumer died or failed on that entry's batch).
  std::optional<error> outcome() const;
  /// The guide's getStatus(), callable from any thread: active until the range ended;
  /// current_lsn the last LSN the consumer acknowledged (the start before any);
  /// entries_processed the entries of acknowledged batches; buffered_entries those sent and not
  /// yet acknowledged; last_entry_at the last acknowledgement's time; lag_entries / lag_ms as
  /// for slots (what is still to come after current_lsn, and the age of its oldest commit).
  subscription_status status() const;

 private:
  friend result<actor_subscription> subscribe_actor(cdc_handle&, consumer_actor, subscribe_options);
  std::function<subscription_status()> status_;
  reader_control_actor reader_;
  consumer_actor consumer_;
  std::shared_ptr<end_state> end_;
};

/// Feeds `consumer` (<dosql/consumer.hpp>). The caller sends it (watch_atom, reader()) if it
/// should notice a reader that stops without an end_atom.
result<actor_subscription> subscribe_actor(cdc_handle& cdc, consumer_actor consumer, subscribe_options opts);

/// The small consumer interface, run by an actor on its own thread.
struct consumer {
  virtual ~consumer() = default;
  /// Processes entries (views valid during the call); returns the LSN processed, which
  /// acknowledges the batch. Throwing ends the subscription: on_end gets SUBSCRIPTION_FAILED
  /// whose lsn is the batch's first entry (nothing of the batch is acknowledged).
  virtual uint64_t on_batch(std::span<const entry_view> entries) = 0;
  /// The range ended: error{} when stop_at_tail reached the tail, else why.
  virtual void on_end(const error&) {}
};
result<actor_subscription> spawn_consumer(cdc_handle& cdc, std::shared_ptr<consumer> c, subscribe_options opts);

// ---- the callback stream ------------------------------------------------------------------

struct stream_handler {
  std::function<void(const change_event<row>&)> on_change;
  std::function<void(const transaction_event&)> on_transaction;
  std::function<void(const schema_change_event&)> on_schema_change;
  std::function<void(const error&)> on_error;
  std::function<void()> on_end;
};

/// What the callback stream does when a handler throws or an entry does not decode.
enum class failure_policy : uint8_t {
  /// End the stream: on_error gets SUBSCRIPTION_FAILED (a handler threw) or DECODE_ERROR, with
  /// error::lsn the entry's LSN; that entry is not acknowledged and nothing after it is
  /// processed (resume from status().current_lsn). Loses nothing (Debezium's default).
  stop,
  /// Run the handler again after `retry`'s backoff (reliability::with_retry); if it still
  /// fails, stop as above. (A decode failure is not retried.)
  retry,
  /// After the `retry` attempts, add the entry to `dead_letters` (durably), report the error
  /// to on_error and go on; a dead-letter store that fails stops the stream.
  dead_letter,
  /// Report the error to on_error and go on: at-most-once, the entry is lost to this stream.
  skip,
};

struct stream_options {
  uint64_t from_lsn = 0;  ///< exclusive
  cdc::filter filter;
  stream_handler handler;
  /// Acknowledge each batch once its handlers returned; otherwise call cdc_stream::ack().
  bool auto_ack = true;
  uint32_t max_buffer_size = 4096;
  uint32_t batch_size = 512;
  /// A handler throwing, or an entry that does not decode.
  failure_policy on_failure = failure_policy::stop;
  /// Attempts and backoff for failure_policy::retry and ::dead_letter (max_attempts 1: none).
  reliability::retry_config retry;
  /// Where failure_policy::dead_letter stores failed entries (required for it).
  std::shared_ptr<reliability::dead_letter_queue> dead_letters;
};

/// The guide's getStatus() (the same shape for every kind of subscription).
using stream_status = subscription_status;

class cdc_stream {
 public:
  cdc_stream(cdc_handle cdc, stream_options opts);
  cdc_stream(cdc_stream&&) noexcept;
  ~cdc_stream();
  error start();
  void pause();
  void resume();
  void stop();
  /// With auto_ack off: acknowledges everything up to `lsn`.
  void ack(uint64_t lsn);
  stream_status status() const;

  struct state;

 private:
  std::shared_ptr<state> s_;
};

inline cdc_stream create_cdc_stream(cdc_handle cdc, stream_options opts) {
  return cdc_stream(std::move(cdc), std::move(opts));
}

}  // namespace dosql::cdc
