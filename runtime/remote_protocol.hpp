// (Internal) The wire protocol of remote subscribers (<dosql/remote.hpp>): what crosses CAF's
// middleman between a client runtime and a published CDC service.
//
//   client -> gate:    (r_hello_atom, uint32_t version, std::string token, caf::actor anchor)
//                      -> session_actor. The gate honours nothing else. The session lives while
//                      `anchor` (a client actor) lives and answers only the anchor's node.
//   client -> session: (r_sub_atom, wire_subscribe, consumer_actor) -> sub_reply: a reader for
//                      that consumer (the server's subscription reader, unchanged: batches as
//                      requests, the reply is the ack, end/heartbeat as in-process);
//                      (r_stop_atom, id), (r_pause_atom, id), (r_resume_atom, id);
//                      (r_status_atom, id, uint64_t current_lsn) -> sub_lag;
//                      (r_durable_atom) -> uint64_t;
//                      the slot manager's requests (actors/protocol.hpp), relayed to it.
// Errors are caf::errors in the "dosql" category (actors/errors.hpp), so a dosql::error crosses
// whole. Every type here is registered by name (register_remote_protocol) for the middleman.
#pragma once

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <map>
#include <string>

#include <dosql/database.hpp>
#include <dosql/subscribe_options.hpp>

#include "actors/protocol.hpp"

namespace dosql::remote {

constexpr uint32_t protocol_version = 1;

using r_hello_atom = caf::atom_constant<caf::atom("r_hello")>;
using r_sub_atom = caf::atom_constant<caf::atom("r_sub")>;
using r_stop_atom = caf::atom_constant<caf::atom("r_stop")>;
using r_pause_atom = caf::atom_constant<caf::atom("r_pause")>;
using r_resume_atom = caf::atom_constant<caf::atom("r_resume")>;
using r_status_atom = caf::atom_constant<caf::atom("r_status")>;
using r_durable_atom = caf::atom_constant<caf::atom("r_durable")>;

/// subscribe_options without its C++ functions (row_filters, filter.predicate), plus the slot.
struct wire_subscribe {
  uint64_t from_lsn = 0;
  bool from_oldest = false;
  bool has_from_time = false;
  int64_t from_time = 0;
  cdc::filter_spec filter;  // tables, operations, txn ids, column masks, where
  bool include_transaction_control = false;
  bool include_uncommitted = false;
  uint32_t max_buffer_size = 4096;
  uint32_t batch_size = 512;
  bool stop_at_tail = false;
  uint8_t on_overflow = 0;
  bool heartbeats = false;
  std::string slot;  ///< non-empty: resume after this slot (subscribe_from_slot)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, wire_subscribe& x) {
  return f(caf::meta::type_name("dosql.wire_subscribe"), x.from_lsn, x.from_oldest, x.has_from_time, x.from_time,
           x.filter, x.include_transaction_control, x.include_uncommitted, x.max_buffer_size, x.batch_size,
           x.stop_at_tail, x.on_overflow, x.heartbeats, x.slot);
}

/// INVALID_ARGUMENT for what cannot travel (row_filters, filter.predicate).
result<wire_subscribe> to_wire(const cdc::subscribe_options& o);
cdc::subscribe_options from_wire(const wire_subscribe& w);

struct sub_reply {
  uint64_t id = 0;           ///< the subscription's id in its session
  uint64_t reader_id = 0;    ///< the reader's actor id: batches from anyone else are stale
  uint64_t start_after = 0;  ///< the LSN the stream starts after
  uint64_t slot_acked = 0;   ///< slot subscriptions: the slot's acknowledged LSN
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sub_reply& x) {
  return f(caf::meta::type_name("dosql.sub_reply"), x.id, x.reader_id, x.start_after, x.slot_acked);
}

struct sub_lag {
  uint64_t lag_entries = 0;
  int64_t lag_ms = 0;
  uint64_t durable_lsn = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sub_lag& x) {
  return f(caf::meta::type_name("dosql.sub_lag"), x.lag_entries, x.lag_ms, x.durable_lsn);
}

using session_actor = caf::typed_actor<
    caf::replies_to<r_sub_atom, wire_subscribe, cdc::consumer_actor>::with<sub_reply>,
    caf::reacts_to<r_stop_atom, uint64_t>, caf::reacts_to<r_pause_atom, uint64_t>,
    caf::reacts_to<r_resume_atom, uint64_t>,
    caf::replies_to<r_status_atom, uint64_t, uint64_t>::with<sub_lag>,
    caf::replies_to<r_durable_atom>::with<uint64_t>,
    caf::replies_to<actors::slot_create_atom, std::string, uint64_t, cdc::slot_filter>::with<cdc::slot_info>,
    caf::replies_to<caf::get_atom, std::string>::with<cdc::slot_info>,
    caf::replies_to<actors::slot_list_atom>::with<actors::slot_listing>,
    caf::replies_to<actors::slot_ack_atom, std::string, uint64_t>::with<cdc::slot_info>,
    caf::replies_to<actors::slot_drop_atom, std::string>::with<void>>;

using gate_actor =
    caf::typed_actor<caf::replies_to<r_hello_atom, uint32_t, std::string, caf::actor>::with<session_actor>>;

/// Loads CAF's middleman (and its openssl module with opts.tls), sets heartbeats and the
/// connection timeout, and registers the remote protocol's types. Called by runtime's
/// constructor when network.enabled.
void configure_network(caf::actor_system_config& cfg, const runtime_options::network_options& opts);

}  // namespace dosql::remote
