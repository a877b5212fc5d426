// The slot-manager actor: owns the replication slots of one database (include/dosql/slots.hpp
// documents the semantics). Detached: it fsyncs slot files and compacts the WAL.
//
// Protocol: slot_manager_actor (actors/protocol.hpp); a failure is a caf::error in the dosql
// category (actors/errors.hpp) carrying the dosql code and message:
//   (slot_create_atom, name, uint64_t start_lsn, slot_filter) -> slot_info
//   (get_atom, name) -> slot_info;  (slot_ack_atom, name, lsn) -> slot_info
//   (slot_list_atom) -> slot_listing (every readable slot; `problem` names damaged slot files)
//   (slot_drop_atom, name) -> nothing;  (slot_check_atom) -> nothing (idle, retention, compaction)
// A slot file holds msgpack [name, acked, created_ms, last_ack_ms, [tables], [ops], invalidated,
// reason, stalled, lag_entries, lag_bytes, lag_ms] (encode_slot).
#pragma once

#include <msgpack.hpp>

#include <functional>
#include <memory>
#include <mutex>

#include "actors/protocol.hpp"
#include "actors/wal_writer.hpp"  // retention_mutex()
#include <dosql/slot_types.hpp>
#include "wal/cursor.hpp"
#include "wal/log.hpp"

namespace dosql::actors {

/// What the slot manager needs of its database (the runtime fills it in): where it lives, its
/// durable end, the active segment's use, and applying its retention policy.
struct slot_host {
  std::string dir;      ///< the data directory (slots live in DIR/slots)
  std::string wal_dir;
  std::function<uint64_t()> durable_lsn;
  std::function<wal::log::active_usage()> active_segment;
  std::function<result<wal::compact_report>()> apply_retention;
};

slot_manager_actor spawn_slot_manager(caf::actor_system& sys, slot_host host, cdc::slot_config cfg);

/// Slot (de)serialisation shared by the actor and the facade.
std::string encode_slot(const cdc::slot_info& s);
bool decode_slot(const msgpack::object& o, cdc::slot_info& s);
/// Reads a slot file (DIR/slots/NAME.slot) whole: IO_ERROR, or DECODE_ERROR naming the path
/// when it is damaged (checksum, length, a name that is not the file's). Reads the current
/// format (magic "DSQSLOT1", length, CRC-32C, msgpack) and the old unchecksummed msgpack one.
/// Used by the owner's slot manager and by read-only tools beside it.
result<cdc::slot_info> read_slot_file(const std::string& path);
/// The bytes of a slot file in the current (checksummed) format.
std::string encode_slot_file(const cdc::slot_info& s);


/// The first LSN the slots of data directory `dir` still need: the minimum of acked + 1 over
/// every slot file that is not invalidated (UINT64_MAX, `slot` empty: no such slot). A
/// damaged slot file is an error naming it (its position is unknown: nothing may be removed).
struct slot_floor {
  uint64_t lsn = UINT64_MAX;
  std::string slot;
};
result<slot_floor> read_slot_floor(const std::string& dir);

/// What a consumer positioned after `after` would still receive from the WAL in `wal_dir`, up
/// to `limit`: the row changes and SCHEMA entries of committed transactions that `selection`
/// passes (cdc::selection_of: its filter and its row filters, so an UPDATE of a row outside a
/// `where` does not count; no BEGIN/COMMIT, nothing rolled back, nothing of a transaction not
/// yet decided), and the COMMIT timestamp (Unix ms) of the oldest such transaction (0: none).
/// Counted by the delivery engine itself (cdc::cursor), so it is what a subscription with that
/// selection would deliver.
struct pending_info {
  uint64_t entries = 0;
  int64_t oldest_commit_ms = 0;
};
result<pending_info> pending_for(const std::string& wal_dir, uint64_t after, uint64_t limit, cdc::cursor_options selection);

}  // namespace dosql::actors
