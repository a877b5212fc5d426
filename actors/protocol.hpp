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
//   wal_listener_actor and a cdc::reader_control_actor ((pause_atom) / (resume_atom): stop /
//   restart sending batches; batches in flight may still be acknowledged), plus (pump_atom)
//   (its own next turn).
// Slot manager (slot_manager_actor, actors/slot_manager.hpp): create, get, list, ack, drop,
//   check; replies are slot_info / slot_listing / nothing, failures a caf::error in the dosql
//   category (SLOT_NOT_FOUND, SLOT_EXISTS, INVALID_ARGUMENT, LSN_NOT_FOUND, DECODE_ERROR, ...).
//
// The consumer interface (batch, end, heartbeat, watch; pause/resume of the reader) is public:
// <dosql/consumer.hpp> (namespace dosql::cdc) documents it with an example; its names are
// brought in here.
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

#include <dosql/config.hpp>
#include <dosql/consumer.hpp>
#include <dosql/entry.hpp>
#include <dosql/error.hpp>
#include <dosql/slot_types.hpp>

// The inspect overloads of the shared vocabulary (found by ADL, so in the types' namespaces).
namespace dosql::cdc {
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, filter_spec& x) {
  // The spec travels as its JSON (parse(to_json(f)) == f), the form slots and clients use.
  std::string json;
  auto save = caf::meta::save_callback([&]() -> caf::error {
    json = to_json(x);
    return caf::none;
  });
  auto load = caf::meta::load_callback([&]() -> caf::error {
    auto p = parse_filter_spec(json);
    if (!p) return caf::make_error(caf::sec::invalid_argument, p.err().message());
    x = std::move(*p);
    return caf::none;
  });
  return f(caf::meta::type_name("dosql.filter_spec"), save, json, load);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, slot_info& x) {
  return f(caf::meta::type_name("dosql.slot_info"), x.name, x.acked_lsn, x.filter, x.created_at, x.last_ack_at,
           x.invalidated, x.invalid_reason, x.stalled, x.lag_entries, x.lag_bytes, x.lag_ms);
}
}  // namespace dosql::cdc

namespace dosql {
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, compact_report& x) {
  return f(caf::meta::type_name("dosql.compact_report"), x.removed, x.bytes, x.archived, x.oldest_lsn);
}
}  // namespace dosql

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

using pump_atom = caf::atom_constant<caf::atom("d_pump")>;
// The consumer's side (<dosql/consumer.hpp>).
using cdc::batch_atom;
using cdc::end_atom;
using cdc::heartbeat_atom;
using cdc::pause_atom;
using cdc::resume_atom;
using cdc::watch_atom;

using slot_create_atom = caf::atom_constant<caf::atom("s_create")>;
using slot_list_atom = caf::atom_constant<caf::atom("s_list")>;
using slot_ack_atom = caf::atom_constant<caf::atom("s_ack")>;
using slot_drop_atom = caf::atom_constant<caf::atom("s_drop")>;
using slot_check_atom = caf::atom_constant<caf::atom("s_check")>;

// ---- message structs --------------------------------------------------------------------------

using cdc::batch;
using cdc::consumer_actor;
using cdc::decode_batch;
using cdc::decode_records;
using cdc::reader_control_actor;
using cdc::subscription_end;

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
                                                       caf::replies_to<compact_atom, uint64_t>::with<compact_report>,
                                                       caf::reacts_to<flush_atom>, caf::reacts_to<retain_atom>>;

using subscription_reader_actor =
    reader_control_actor::extend<caf::reacts_to<tail_atom, uint64_t>, caf::reacts_to<failed_atom, std::string>,
                                 caf::reacts_to<pump_atom>>;

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
