// Where the streamer's row changes come from (lakehouse/streamer.cpp): one interface, two
// sources, both on the one delivery engine (cdc::cursor under both):
//  - embedded: a dosql::database, through its public subscription API (cdc_handle::subscribe,
//    subscription::next_batch(batch_options): the reader actor's credit window bounds what is
//    buffered; a streamer that stops asking stops the reader), optionally from a replication
//    slot (slot_manager::subscribe_from_slot, acknowledged through update_slot);
//  - a directory another process owns: a cdc::cursor over its WAL files, read-only and without
//    the lock, up to the durable tail the owner publishes (as `dosql tail DIR`).
// Both hand out committed row changes (INSERT, UPDATE, DELETE) and schema changes (SCHEMA
// entries: the stream's schema-change events), in LSN order.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <dosql/database.hpp>
#include <dosql/entry.hpp>
#include <dosql/error.hpp>

#include "lakehouse/changelog.hpp"

namespace dosql::lakehouse::detail {

class change_source {
 public:
  virtual ~change_source() = default;
  /// (Re)starts reading after `from` (exclusive). With `stop_at_tail`, the source ends at the
  /// durable tail present at the first open (a reopen keeps that end).
  virtual error open(uint64_t from, bool stop_at_tail) = 0;
  /// Up to `n` entries: waits for the first, then gathers until `n` or `age` after the first.
  /// Empty: the source ended (ended() true, err() says why if not cleanly) or was interrupted.
  virtual std::vector<wal_entry> next_batch(uint32_t n, std::chrono::milliseconds age) = 0;
  virtual bool ended() const = 0;
  virtual error err() const = 0;
  /// From another thread: a next_batch() in progress returns soon (empty); open() again to go on.
  virtual void interrupt() = 0;
  /// The source's durable tail now (for lag), 0 if unknown.
  virtual uint64_t tail_lsn() = 0;
  /// The columns and declared types of `table` now (empty if it has none / does not exist).
  virtual std::vector<source_column> columns(const std::string& table) = 0;
  /// Where a slot says to start (its acknowledged LSN), if the source has a slot.
  virtual std::optional<uint64_t> slot_position() { return std::nullopt; }
  /// Acknowledges the slot up to `lsn` (forward only; no-op without a slot).
  virtual error ack_slot(uint64_t) { return {}; }
};

/// The columns and declared types a CREATE TABLE statement gives its table (run on an empty
/// in-memory SQLite database; empty if it does not run there, e.g. CREATE TABLE ... AS SELECT).
std::vector<source_column> columns_of_create(const std::string& sql, const std::string& table);

/// A database's change stream through the public API; `slot`: consume that slot (it must exist).
result<std::unique_ptr<change_source>> embedded_source(std::shared_ptr<database> db, std::vector<std::string> tables,
                                                       std::optional<std::string> slot);
/// A data directory's WAL, read-only, no lock.
result<std::unique_ptr<change_source>> directory_source(const std::string& dir, std::vector<std::string> tables,
                                                        std::chrono::milliseconds poll);

}  // namespace dosql::lakehouse::detail
