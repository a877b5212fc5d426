// The typed actor protocol of dosql: every message between its actors, as atoms, structs with
// CAF 0.17 `inspect` overloads (so they can later cross CAF's middleman), and
// `caf::typed_actor` aliases, one per actor. The compiler checks each send and request against
// them. Errors travel as caf::error in the "dosql" category (actors/errors.hpp): to_caf() on the
// sending side, from_caf() gives back the dosql::error with its code, message and LSNs.
//
// WAL writer (wal_writer_actor, actors/wal_writer.hpp):
//   (append_atom, std::string txn)    hand-off of one transaction message (actors/messages.hpp);
//                                     no reply: progress is the durable tail
//   (sync_atom) -> uint64_t           makes everything appended durable; the durable LSN
//   (compact_atom, uint64_t below) -> wal::compact_report
//   (listen_atom, wal_listener_actor) registers a listener for (tail_atom, uint64_t durable_lsn)
//                                     and (failed_atom, std::string why: the WAL failed)
//   (flush_atom), (retain_atom)       its own group-commit and retention turns (sent to itself)
// Subscription reader (subscription_reader_actor, actors/subscription_reader.hpp): a
//   wal_listener_actor, plus (pause_atom) / (resume_atom) (stop / restart sending batches;
//   batches in flight may still be acknowledged) and (pump_atom) (its own next turn).
// Slot manager (slot_manager_actor, actors/slot_manager.hpp): create, get, list, ack, drop,
//   check; replies are slot_info / slot_listing / nothing, failures a caf::error in the dosql
//   category (SLOT_NOT_FOUND, SLOT_EXISTS, INVALID_ARGUMENT, LSN_NOT_FOUND, DECODE_ERROR, ...).
//
// ---- The consumer-actor interface (public: example apps implement it) -----------------------
// A subscription's reader sends its consumer batches of committed changes, at most
// subscribe_options::max_buffer_size entries unacknowledged at a time:
//   (batch_atom, batch) -> uint64_t   the reply is the ack: the LSN processed (batch::last_lsn);
//                                     the batch's entries leave the window and the reader sends
//                                     more. Replying with an error (to_caf(error)) ends the
//                                     subscription with SUBSCRIPTION_FAILED at the batch's first
//                                     LSN (or at the error's own LSN if it is a
//                                     SUBSCRIPTION_FAILED naming one).
//   (end_atom, subscription_end)      once, last: the range ended. code NONE: stop_at_tail reached
//                                     the tail; CLOSED: the database closed; SUBSCRIPTION_FAILED:
//                                     the consumer failed, lsn = the first LSN it did not
//                                     acknowledge (resume after lsn - 1); anything else: why the
//                                     reader stopped, lsn = the entry it is about (0: none).
//   (heartbeat_atom, uint64_t lsn)    only with subscribe_options::heartbeats: nothing in flight
//                                     and every entry up to lsn delivered or filtered out
//   (watch_atom, subscription_reader_actor)
//                                     sent by subscribe_actor's callers after spawning the reader:
//                                     monitor it, so that a reader stopping without an end_atom
//                                     does not leave the consumer waiting
// The reader monitors its consumer: a consumer that dies (or throws out of a handler) ends the
// subscription with SUBSCRIPTION_FAILED naming the first unacknowledged LSN; the reader never
// waits on it. A batch's records are the WAL's own framed records (wal/FORMAT.md), copied as
// they are: decode_batch() gives zero-copy entry_views into them.
//
// Example (a consumer that counts changes and acknowledges every batch):
//
//   struct counter_state { uint64_t changes = 0; std::vector<dosql::entry_view> views; };
//   namespace da = dosql::actors;
//   da::consumer_actor::behavior_type counter(da::consumer_actor::stateful_pointer<counter_state> self,
//                                             std::string name) {
//     return {
//       [=](da::batch_atom, const da::batch& b) -> caf::result<uint64_t> {
//         if (auto e = da::decode_batch(b, self->state.views)) return da::to_caf(e);
//         self->state.changes += self->state.views.size();  // views point into b.records
//         return b.last_lsn;                                 // the ack
//       },
//       [=](da::end_atom, const da::subscription_end& end) {
//         if (end.code != dosql::ec::none) std::cerr << name << ": " << end.to_error().to_string() << "\n";
//         self->quit();
//       },
//       [=](da::heartbeat_atom, uint64_t) {},
//       [=](da::watch_atom, const da::subscription_reader_actor& reader) { self->monitor(reader); },
//     };
//   }
//   auto c = sys.spawn(counter, std::string("counter"));  // (pass an argument: a spawn with
//                                                         //  none trips UBSan on CAF 0.17)
//   auto sub = dosql::cdc::subscribe_actor(cdc, c, opts); // runtime/stream.hpp
//
// A consumer that blocks (network, disk) should be spawned with caf::detached.
#pragma once

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/save_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "actors/slot_types.hpp"
#include "wal/entry.hpp"
#include "wal/error.hpp"
#include "wal/log.hpp"

// The inspect overloads of the shared vocabulary (found by ADL, so in the types' namespaces).
namespace dosql::cdc {
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, slot_filter& x) {
  // Operations travel as their bytes (CAF 0.17 reads a vector of enums through an
  // uninitialised temporary, which g++ warns about).
  std::vector<uint8_t> ops;
  auto save = caf::meta::save_callback([&]() -> caf::error {
    for (auto o : x.operations) ops.push_back(static_cast<uint8_t>(o));
    return caf::none;
  });
  auto load = caf::meta::load_callback([&]() -> caf::error {
    x.operations.clear();
    for (auto o : ops) x.operations.push_back(static_cast<op_type>(o));
    return caf::none;
  });
  return f(caf::meta::type_name("dosql.slot_filter"), x.tables, save, ops, load);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, slot_info& x) {
  return f(caf::meta::type_name("dosql.slot_info"), x.name, x.acked_lsn, x.filter, x.created_at, x.last_ack_at,
           x.invalidated, x.invalid_reason, x.stalled, x.lag_entries, x.lag_bytes, x.lag_ms);
}
}  // namespace dosql::cdc

namespace dosql::wal {
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, compact_report& x) {
  return f(caf::meta::type_name("dosql.compact_report"), x.removed, x.bytes, x.archived, x.oldest_lsn);
}
}  // namespace dosql::wal

namespace caf {
class actor_system_config;
}

namespace dosql::actors {

// ---- atoms (at most 10 characters, dosql's prefixed) -----------------------------------------

using append_atom = caf::atom_constant<caf::atom("d_append")>;
using flush_atom = caf::atom_constant<caf::atom("d_flush")>;
using sync_atom = caf::atom_constant<caf::atom("d_sync")>;
using compact_atom = caf::atom_constant<caf::atom("d_compact")>;
using listen_atom = caf::atom_constant<caf::atom("d_listen")>;
using tail_atom = caf::atom_constant<caf::atom("d_tail")>;
using retain_atom = caf::atom_constant<caf::atom("d_retain")>;
/// The WAL writer failed and accepts nothing more: (failed_atom, std::string why) to listeners.
using failed_atom = caf::atom_constant<caf::atom("d_failed")>;

using batch_atom = caf::atom_constant<caf::atom("d_batch")>;
using end_atom = caf::atom_constant<caf::atom("d_end")>;
using heartbeat_atom = caf::atom_constant<caf::atom("d_hbeat")>;
using watch_atom = caf::atom_constant<caf::atom("d_watch")>;
using pump_atom = caf::atom_constant<caf::atom("d_pump")>;
using pause_atom = caf::atom_constant<caf::atom("d_pause")>;
using resume_atom = caf::atom_constant<caf::atom("d_resume")>;

using slot_create_atom = caf::atom_constant<caf::atom("s_create")>;
using slot_list_atom = caf::atom_constant<caf::atom("s_list")>;
using slot_ack_atom = caf::atom_constant<caf::atom("s_ack")>;
using slot_drop_atom = caf::atom_constant<caf::atom("s_drop")>;
using slot_check_atom = caf::atom_constant<caf::atom("s_check")>;

// ---- message structs --------------------------------------------------------------------------

/// Entries for a consumer: `records` holds `count` WAL records in the WAL's own framing
/// (wal/FORMAT.md), LSNs first_lsn..last_lsn ascending (not necessarily contiguous: filtered
/// entries are left out). Decode with decode_batch().
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

/// The slot manager's answer to slot_list_atom: every readable slot and, if some slot files
/// are damaged, a DECODE_ERROR naming them (the list is still complete otherwise).
struct slot_listing {
  std::vector<cdc::slot_info> slots;
  caf::error problem;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, slot_listing& x) {
  return f(caf::meta::type_name("dosql.slot_listing"), x.slots, x.problem);
}

// ---- actor interfaces -------------------------------------------------------------------------

/// Whoever wants the WAL's durable tail: subscription readers, probes.
using wal_listener_actor =
    caf::typed_actor<caf::reacts_to<tail_atom, uint64_t>, caf::reacts_to<failed_atom, std::string>>;

/// The part of the WAL writer a subscription reader needs.
using wal_tail_source_actor = caf::typed_actor<caf::reacts_to<listen_atom, wal_listener_actor>>;

using wal_writer_actor = wal_tail_source_actor::extend<caf::reacts_to<append_atom, std::string>,
                                                       caf::replies_to<sync_atom>::with<uint64_t>,
                                                       caf::replies_to<compact_atom, uint64_t>::with<wal::compact_report>,
                                                       caf::reacts_to<flush_atom>, caf::reacts_to<retain_atom>>;

using subscription_reader_actor =
    wal_listener_actor::extend<caf::reacts_to<pause_atom>, caf::reacts_to<resume_atom>, caf::reacts_to<pump_atom>>;

/// The public consumer interface (see the header comment).
using consumer_actor = caf::typed_actor<caf::replies_to<batch_atom, batch>::with<uint64_t>,
                                        caf::reacts_to<end_atom, subscription_end>,
                                        caf::reacts_to<heartbeat_atom, uint64_t>,
                                        caf::reacts_to<watch_atom, subscription_reader_actor>>;

using slot_manager_actor =
    caf::typed_actor<caf::replies_to<slot_create_atom, std::string, uint64_t, cdc::slot_filter>::with<cdc::slot_info>,
                     caf::replies_to<caf::get_atom, std::string>::with<cdc::slot_info>,
                     caf::replies_to<slot_list_atom>::with<slot_listing>,
                     caf::replies_to<slot_ack_atom, std::string, uint64_t>::with<cdc::slot_info>,
                     caf::replies_to<slot_drop_atom, std::string>::with<void>,
                     caf::replies_to<slot_check_atom>::with<void>>;

/// Registers the protocol with `cfg`: the "dosql" error category (register_error_category) and
/// the message types' names (for rendering now, for the middleman later). The runtime calls it
/// once per actor system.
void register_protocol(caf::actor_system_config& cfg);

}  // namespace dosql::actors
