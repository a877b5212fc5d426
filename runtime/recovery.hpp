// (Internal) Recovery planning for tools: what opening a data directory would do to its WAL,
// decided reading only. Defined in runtime/database.cpp; `dosql wal repair` uses it.
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

}  // namespace dosql
