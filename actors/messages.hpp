// The actor protocol's atoms and the msgpack encoding of a transaction handed to the
// WAL writer (messages that cross actors carry msgpack bytes, ready for CAF's middleman).
//
// Transaction message (msgpack array):
//   [ version=1, txn_id: str, first_lsn: uint, timestamp_ms: int, flags: uint,
//     entries: [ [op: uint, table: str, key: bin|nil, before: bin|nil, after: bin|nil], ... ] ]
//   flags bit0: the chunk opens the transaction (the writer adds BEGIN before the entries)
//   flags bit1: the chunk closes it (the writer adds COMMIT after the entries)
//   flags bit2: the chunk aborts it (the writer adds ROLLBACK after the entries)
//   A small transaction is one chunk with bits 0 and 1. A large one is several chunks: its
//   settled entries are streamed while it runs (and a spilled part at commit); one that
//   rolls back after streaming ends with a ROLLBACK chunk.
#pragma once

#include <caf/atom.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "wal/entry.hpp"
#include <dosql/error.hpp>

namespace dosql::actors {

using append_atom = caf::atom_constant<caf::atom("d_append")>;
using flush_atom = caf::atom_constant<caf::atom("d_flush")>;
using sync_atom = caf::atom_constant<caf::atom("d_sync")>;
using compact_atom = caf::atom_constant<caf::atom("d_compact")>;
using listen_atom = caf::atom_constant<caf::atom("d_listen")>;
using tail_atom = caf::atom_constant<caf::atom("d_tail")>;
using retain_atom = caf::atom_constant<caf::atom("d_retain")>;
/// The WAL writer failed and accepts nothing more: (failed_atom, std::string why) to listeners.
using failed_atom = caf::atom_constant<caf::atom("d_failed")>;

constexpr uint8_t txn_message_version = 1;
constexpr uint32_t txn_opens = 1;
constexpr uint32_t txn_closes = 2;
constexpr uint32_t txn_aborts = 4;

/// Writes a transaction message header; the caller appends `count` packed entries after it.
void begin_txn_message(std::string& out, std::string_view txn_id, uint64_t first_lsn,
                       int64_t timestamp_ms, uint32_t flags, uint32_t count);

/// Appends one packed entry [op, table, key, before, after] (null views = absent).
void pack_entry(std::string& out, op_type op, std::string_view table, const std::string_view* key,
                const std::string_view* before, const std::string_view* after);

/// A decoded transaction message: views point into the message bytes.
struct txn_message {
  std::string_view txn_id;
  uint64_t first_lsn = 0;
  int64_t timestamp = 0;
  uint32_t flags = 0;
  std::vector<entry_view> entries;  // BEGIN/COMMIT/ROLLBACK included as the flags say; LSNs assigned
};

/// Decodes `msg`, filling `out` (BEGIN/COMMIT added per flags, LSNs from first_lsn on).
error decode_txn_message(std::string_view msg, txn_message& out);

}  // namespace dosql::actors
