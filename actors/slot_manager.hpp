// The slot-manager actor: owns the replication slots of one database (see runtime/slots.hpp
// for the semantics). Detached: it fsyncs slot files and compacts the WAL.
//
// Protocol (every reply is a msgpack std::string [code: uint8, message: str, payload]):
//   (slot_create_atom, name, msgpack{start_lsn, tables, ops})  -> payload: slot
//   (get_atom, name) -> slot;  (slot_list_atom) -> [slot...];  (slot_ack_atom, name, lsn) -> slot
//   (slot_drop_atom, name) -> nil;  (slot_check_atom) -> nil (idle, retention, compaction)
// A slot is msgpack [name, acked, created_ms, last_ack_ms, [tables], [ops], invalidated, reason,
// stalled, lag_entries, lag_bytes, lag_ms].
#pragma once

#include <caf/actor.hpp>
#include <msgpack.hpp>

#include <memory>

#include "runtime/slots.hpp"

namespace dosql::actors {

using slot_create_atom = caf::atom_constant<caf::atom("s_create")>;
using slot_list_atom = caf::atom_constant<caf::atom("s_list")>;
using slot_ack_atom = caf::atom_constant<caf::atom("s_ack")>;
using slot_drop_atom = caf::atom_constant<caf::atom("s_drop")>;
using slot_check_atom = caf::atom_constant<caf::atom("s_check")>;

caf::actor spawn_slot_manager(std::shared_ptr<database> db, cdc::slot_config cfg);

/// Slot (de)serialisation shared by the actor and the facade.
std::string encode_slot(const cdc::slot_info& s);
bool decode_slot(const msgpack::object& o, cdc::slot_info& s);
/// Reads a slot file (DIR/slots/NAME.slot) whole: IO_ERROR, or DECODE_ERROR naming the path.
/// Used by the owner's slot manager and by read-only tools beside it.
result<cdc::slot_info> read_slot_file(const std::string& path);

}  // namespace dosql::actors
