// The consumer-actor interface: what an application's CAF actor implements to receive a
// subscription's committed changes (cdc::subscribe_actor, <dosql/stream.hpp>). It is a
// caf::typed_actor, so the compiler checks a consumer against it.
//
// A subscription's reader sends its consumer batches, at most subscribe_options::
// max_buffer_size entries unacknowledged at a time:
//   (batch_atom, batch) -> uint64_t   the reply is the ack: the LSN processed (batch::last_lsn);
//                                     the batch's entries leave the window and the reader sends
//                                     more. Replying with an error (to_caf(error)) ends the
//                                     subscription with SUBSCRIPTION_FAILED at the batch's first
//                                     LSN (or at the error's own LSN if it is a
//                                     SUBSCRIPTION_FAILED naming one).
//   (end_atom, subscription_end)      once, last: the range ended. code NONE: stop_at_tail reached
//                                     the tail; CLOSED: the database closed; SUBSCRIPTION_FAILED:
//                                     the consumer failed, lsn = the first LSN it did not
//                                     acknowledge (resume from lsn - 1); anything else: why the
//                                     reader stopped, lsn = the entry it is about (0: none).
//   (heartbeat_atom, uint64_t lsn)    only with subscribe_options::heartbeats: nothing in flight
//                                     and every entry up to lsn delivered or filtered out
//                                     (a caught-up filtered consumer may acknowledge lsn)
//   (watch_atom, reader_control_actor)
//                                     the subscriber's hint (dosql's own consumers get it): monitor
//                                     the reader, so that a reader stopping without an end_atom
//                                     does not leave the consumer waiting
// The reader monitors its consumer: a consumer that dies (or throws out of a handler) ends the
// subscription with SUBSCRIPTION_FAILED naming the first unacknowledged LSN; the reader never
// waits on it. The reader itself takes (pause_atom) and (resume_atom): paused, it sends no new
// batch (acks of batches in flight still count). A batch's records are the WAL's own framed
// records, copied as they are: decode_batch() gives zero-copy entry_views into them.
//
// Example (a consumer that counts changes and acknowledges every batch):
//
//   namespace cdc = dosql::cdc;
//   struct counter_state { uint64_t changes = 0; std::vector<dosql::entry_view> views; };
//   cdc::consumer_actor::behavior_type counter(cdc::consumer_actor::stateful_pointer<counter_state> self,
//                                              std::string name) {
//     return {
//       [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
//         if (auto e = cdc::decode_batch(b, self->state.views)) return cdc::to_caf(e);
//         self->state.changes += self->state.views.size();  // views point into b.records
//         return b.last_lsn;                                 // the ack
//       },
//       [=](cdc::end_atom, const cdc::subscription_end& end) {
//         if (end.code != dosql::ec::none) std::cerr << name << ": " << end.to_error().to_string() << "\n";
//         self->quit();
//       },
//       [=](cdc::heartbeat_atom, uint64_t) {},
//       [=](cdc::watch_atom, const cdc::reader_control_actor& reader) { self->monitor(reader); },
//     };
//   }
//   auto c = sys.spawn(counter, std::string("counter"));   // (pass an argument: a spawn with
//                                                          //  none trips UBSan on CAF 0.17)
//   auto sub = cdc::subscribe_actor(cdc_handle, c, opts);  // <dosql/stream.hpp>
//   caf::anon_send(c, cdc::watch_atom::value, sub->reader());
//
// A consumer that blocks (network, disk) should be spawned with caf::detached.
#pragma once

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/entry.hpp>
#include <dosql/error.hpp>

namespace dosql::cdc {

using batch_atom = caf::atom_constant<caf::atom("d_batch")>;
using end_atom = caf::atom_constant<caf::atom("d_end")>;
using heartbeat_atom = caf::atom_constant<caf::atom("d_hbeat")>;
using watch_atom = caf::atom_constant<caf::atom("d_watch")>;
using pause_atom = caf::atom_constant<caf::atom("d_pause")>;
using resume_atom = caf::atom_constant<caf::atom("d_resume")>;

/// Entries for a consumer: `records` holds `count` WAL records in the WAL's own framing,
/// LSNs first_lsn..last_lsn ascending (not necessarily contiguous: filtered entries are left
/// out). Decode with decode_batch().
struct batch {
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;
  uint32_t count = 0;
  std::string records;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, batch& x) {
  return f(caf::meta::type_name("dosql.batch"), x.first_lsn, x.last_lsn, x.count, x.records);
}

/// Decodes `b` into views pointing into b.records (valid while `b` lives, unmodified);
/// DECODE_ERROR naming the batch's first LSN if a record is damaged or the count is off.
error decode_batch(const batch& b, std::vector<entry_view>& out);
/// The same for records moved out of a batch (`count`: its batch::count).
error decode_records(std::string_view records, uint32_t count, std::vector<entry_view>& out);

/// How a subscription ended (the end_atom's payload): the dosql::error fields.
struct subscription_end {
  ec code = ec::none;       ///< NONE: stop_at_tail reached the tail
  std::string message;
  uint64_t lsn = 0;         ///< the entry the ending is about (SUBSCRIPTION_FAILED: first unacked)
  uint64_t oldest_lsn = 0;  ///< LSN_NOT_FOUND: the oldest LSN still in the WAL

  /// error{} for code NONE.
  error to_error() const;
  static subscription_end of(const error& e);
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, subscription_end& x) {
  return f(caf::meta::type_name("dosql.subscription_end"), x.code, x.message, x.lsn, x.oldest_lsn);
}

/// A dosql error as a caf::error (category "dosql": code, message and LSNs survive), for a
/// consumer that answers a batch with an error; error{} gives caf::error{}.
caf::error to_caf(const error& e);

/// What a consumer (or an application) may tell a subscription's reader.
using reader_control_actor = caf::typed_actor<caf::reacts_to<pause_atom>, caf::reacts_to<resume_atom>>;

/// The consumer interface (see the header comment).
using consumer_actor = caf::typed_actor<caf::replies_to<batch_atom, batch>::with<uint64_t>,
                                        caf::reacts_to<end_atom, subscription_end>,
                                        caf::reacts_to<heartbeat_atom, uint64_t>,
                                        caf::reacts_to<watch_atom, reader_control_actor>>;

}  // namespace dosql::cdc
