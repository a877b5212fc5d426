// The subscription reader actor: one per subscription. It reads the WAL segments itself (its
// own cdc::cursor, wal/cursor.hpp: never the writer's memory), only up to the durable tail, filters, and
// pushes batches to its consumer under a count-bounded credit window.
//
// Protocol: subscription_reader_actor and consumer_actor (actors/protocol.hpp, which documents
// the consumer's side):
//   reader -> consumer: request (batch_atom, batch) -> consumer replies uint64_t (the ack: the
//                       last LSN it processed; the batch's entries leave the window)
//   reader -> consumer: (end_atom, subscription_end{code, message, lsn, oldest_lsn}) once: the
//                       range ended (code NONE: stop_at_tail reached the tail)
//   reader -> consumer: (heartbeat_atom, uint64_t lsn)  only with opts.heartbeats: nothing is in
//                       flight and every entry up to lsn was delivered or skipped by the filter
//                       (a caught-up filtered consumer may acknowledge lsn; no reply)
//   writer -> reader:   (tail_atom, uint64_t durable_lsn)   (registered with listen_atom)
//                       (failed_atom, std::string why)     the WAL failed (a write or fdatasync)
//   anyone -> reader:   (pause_atom) no new batch until (resume_atom); acks of batches in flight
//                       still count. (pump_atom) is its own next turn.
// The reader monitors the writer and the consumer: the writer stopping (the database closed)
// ends the range with CLOSED; the writer failing (alive, accepting nothing) ends it with
// IO_ERROR saying the WAL writer failed and why; the consumer dying, or answering a batch with
// an error, ends it with SUBSCRIPTION_FAILED naming the first unacknowledged LSN. Either way
// the reader quits and never waits on a dead peer; `on_finish` hears every ending.
// A batch's records use the WAL's own framing (wal/FORMAT.md), so a consumer decodes them
// zero-copy with decode_batch().
//
// Invariants: entries leave in strictly increasing LSN order, each once; never more than
// max_buffer_size entries are unacknowledged; only committed transactions (unless asked).
#pragma once

#include <caf/actor_system.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/protocol.hpp"
#include <dosql/subscribe_options.hpp>

namespace dosql::actors {

/// What the reader has seen acknowledged, for status() from any thread (written by the reader).
struct reader_progress {
  std::atomic<uint64_t> acked_entries{0};  ///< entries of batches the consumer acknowledged
  std::atomic<uint64_t> acked_lsn{0};      ///< the last LSN it acknowledged
  std::atomic<uint64_t> inflight{0};       ///< entries sent, not yet acknowledged
  std::atomic<int64_t> last_ack_at{0};     ///< Unix ms of the last acknowledgement
};

struct reader_config {
  std::string wal_dir;
  wal_tail_source_actor writer;  // for tail notifications
  consumer_actor consumer;       // receives batches
  cdc::subscribe_options opts;
  uint64_t start_lsn = 1;  // first LSN to consider (from_lsn + 1, or from from_time)
  // Called once, on the reader's thread, with how the range ended (error{}: the tail was
  // reached with stop_at_tail). Optional.
  std::function<void(const error&)> on_finish;
  std::shared_ptr<reader_progress> progress;  ///< optional
};

subscription_reader_actor spawn_subscription_reader(caf::actor_system& sys, std::shared_ptr<const reader_config> cfg);

}  // namespace dosql::actors
