// The subscription reader actor: one per subscription. It reads the WAL segments itself (its
// own cdc::cursor, wal/cursor.hpp: never the writer's memory), only up to the durable tail, filters, and
// pushes batches to its consumer under a count-bounded credit window.
//
// Protocol:
//   reader -> consumer: request (batch_atom, std::string batch)  -> consumer replies uint64_t
//                       (the last LSN it processed: the ack; the batch's entries leave the window)
//   reader -> consumer: (end_atom, uint8_t code, std::string message, uint64_t oldest_lsn,
//                        uint64_t lsn)
//                       once: the range ended (code 0: stop_at_tail reached the tail); lsn is
//                       the entry the error is about (0: none), see dosql::error::lsn
//   reader -> consumer: (heartbeat_atom, uint64_t lsn)  only with opts.heartbeats: nothing is in
//                       flight and every entry up to lsn was delivered or skipped by the filter
//                       (a caught-up filtered consumer may acknowledge lsn; no reply)
//   writer -> reader:   (tail_atom, uint64_t durable_lsn)   (registered with listen_atom)
//                       (failed_atom, std::string why)     the WAL failed (a write or fdatasync)
// The reader monitors the writer and the consumer: the writer stopping (the database closed)
// ends the range with CLOSED; the writer failing (alive, accepting nothing) ends it with
// IO_ERROR saying the WAL writer failed and why; the consumer dying, or answering a batch with an error, ends it
// with SUBSCRIPTION_FAILED naming the first unacknowledged LSN. Either way the reader quits and
// never waits on a dead peer; `on_finish` hears every ending.
// A batch is msgpack [first_lsn: uint, count: uint, records: bin] whose records use the WAL's
// own framing (wal/FORMAT.md), so a consumer decodes them zero-copy with decode_batch().
//
// Invariants: entries leave in strictly increasing LSN order, each once; never more than
// max_buffer_size entries are unacknowledged; only committed transactions (unless asked).
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/messages.hpp"
#include <dosql/subscribe_options.hpp>

namespace dosql::actors {

using batch_atom = caf::atom_constant<caf::atom("d_batch")>;
using end_atom = caf::atom_constant<caf::atom("d_end")>;
using pump_atom = caf::atom_constant<caf::atom("d_pump")>;
/// (watch_atom, caf::actor reader): asks dosql's own consumers to monitor their reader, so that
/// a reader stopping without an end_atom ends the range instead of leaving it waiting.
using watch_atom = caf::atom_constant<caf::atom("d_watch")>;
using heartbeat_atom = caf::atom_constant<caf::atom("d_hbeat")>;

struct reader_config {
  std::string wal_dir;
  caf::actor writer;    // for tail notifications
  caf::actor consumer;  // receives batches
  cdc::subscribe_options opts;
  uint64_t start_lsn = 1;  // first LSN to consider (from_lsn + 1, or from from_time)
  // Called once, on the reader's thread, with how the range ended (error{}: the tail was
  // reached with stop_at_tail). Optional.
  std::function<void(const error&)> on_finish;
};

caf::actor spawn_subscription_reader(caf::actor_system& sys, std::shared_ptr<const reader_config> cfg);

}  // namespace dosql::actors

namespace dosql::actors {

/// The entry count of a batch message, from its header alone (0 if malformed).
uint32_t batch_count(std::string_view msg) noexcept;

/// Decodes a batch message into views pointing into `msg`.
error decode_batch(const std::string& msg, std::vector<entry_view>& out);

}  // namespace dosql::actors
