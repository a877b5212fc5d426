// The WAL-writer actor: the only writer of the WAL. It appends transaction messages in the
// order it receives them, group-commits (one fdatasync for every transaction appended while
// the previous sync ran), and publishes the durable tail to blocked committers (durable_tail)
// and to listening actors (tail_atom messages).
//
// Detached: it blocks in write() and fdatasync(), so it runs on its own thread.
// Invariant: a transaction message's first_lsn equals the log's next LSN when it is
// appended (the database predicts LSNs under its writer lock); anything else is refused and
// fails the WAL, because it would mean the database and the log disagree.
//
// Protocol: wal_writer_actor (actors/protocol.hpp):
//   (append_atom, std::string txn_message)          -> nothing (progress via the tail)
//   (sync_atom)                                     -> uint64_t durable lsn
//   (compact_atom, uint64_t below_lsn)              -> wal::compact_report
//   (listen_atom, wal_listener_actor)               -> nothing; the listener gets (tail_atom, uint64_t),
//                                                      and (failed_atom, std::string) if the WAL fails
//   (retain_atom)                                   -> nothing; applies the retention policy now
//   (flush_atom)                                    -> nothing; its own group-commit turn
// Errors (sync, compact) are caf::errors in the dosql category (actors/errors.hpp).
//
// Retention (wal_config::retention_policy): after a segment seals, the writer removes the
// sealed segments that neither the policy nor any replication slot keeps, below
// min(wal::retention_point, slot floor). It only try-locks retention_mutex(): if a slot is
// being created or someone compacts meanwhile, it skips, and the next seal tries again.
#pragma once

#include <caf/actor_system.hpp>
#include <functional>
#include <memory>
#include <mutex>

#include "actors/durable_tail.hpp"
#include "actors/protocol.hpp"
#include "wal/log.hpp"

namespace dosql::actors {

/// Held (process-wide) by whatever lowers what the WAL must keep (creating a slot) and by
/// whatever removes WAL segments (compaction, retention), so that a compaction never races a
/// creation. Other processes are kept out by the data directory's lock.
std::mutex& retention_mutex();

/// The first LSN the data directory's replication slots still need (UINT64_MAX: none), read
/// with retention_mutex() held; an error (a damaged slot file) means nothing may be removed.
using slot_floor_fn = std::function<result<uint64_t>()>;

/// `slot_floor` may be empty (no slots: retention alone decides).
wal_writer_actor spawn_wal_writer(caf::actor_system& sys, std::shared_ptr<wal::log> log,
                                  std::shared_ptr<durable_tail> tail, slot_floor_fn slot_floor = {});

}  // namespace dosql::actors
