// (Internal) Recovery planning: what opening a data directory would do to its WAL, decided
// reading only (`dosql wal repair` says what it drops), and its durable floors. Defined in
// runtime/recovery.cpp.
#pragma once

#include <cstdint>
#include <string>

#include <dosql/database.hpp>

#include "wal/log.hpp"

namespace dosql {

/// What opening `dir` would do to its WAL, decided reading only (no lock taken: meant for
/// a directory no owner holds, e.g. `dosql wal repair` saying what it drops). Includes
/// SQLite's checkpointed LSN as a durable floor; `sqlite_checkpointed_lsn` gets it.
result<wal::recovery_plan> plan_database_recovery(const std::string& dir, const database_options& opts,
                                                 uint64_t* sqlite_checkpointed_lsn = nullptr);

/// The LSN recorded in SQLite's main database file alone (its -wal ignored): durable, so
/// recovery keeps it. 0 when there is no database file yet.
result<uint64_t> sqlite_checkpointed_lsn(const std::string& dir);
/// Recovery options with SQLite's checkpointed LSN as the known-durable floor.
wal::recovery_options wal_recovery_options(uint64_t checkpointed, bool repair);

}  // namespace dosql
