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
// Protocol:
//   (append_atom, std::string txn_message)          -> nothing (progress via the tail)
//   (sync_atom)                                     -> uint64_t durable lsn
//   (compact_atom, uint64_t below_lsn)              -> std::vector<uint64_t>{oldest lsn after,
//                                                      bytes removed, archived 0|1, first lsn of each removed segment...}
//   (listen_atom, caf::actor)                       -> nothing; the actor gets (tail_atom, uint64_t),
//                                                      and (failed_atom, std::string) if the WAL fails
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <memory>

#include "actors/durable_tail.hpp"
#include "wal/log.hpp"

namespace dosql::actors {

caf::actor spawn_wal_writer(caf::actor_system& sys, std::shared_ptr<wal::log> log,
                            std::shared_ptr<durable_tail> tail);

}  // namespace dosql::actors
