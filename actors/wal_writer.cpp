#include "actors/wal_writer.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "actors/errors.hpp"
#include "actors/messages.hpp"
#include "actors/protocol.hpp"

namespace dosql::actors {
namespace {

struct wal_writer_state {
  std::shared_ptr<wal::log> log;
  std::shared_ptr<durable_tail> tail;
  std::vector<wal_listener_actor> listeners;
  txn_message scratch;
  bool flush_scheduled = false;
  std::chrono::steady_clock::time_point first_unsynced;  // first append since the last sync
  bool failed = false;
  slot_floor_fn slot_floor;
  uint64_t rolls_seen = 0;  // log->rolls() when retention last ran
  static inline const char* name = "dosql.wal_writer";
};

using writer_actor = wal_writer_actor::stateful_base<wal_writer_state>;

void fail(writer_actor* self, error e) {
  spdlog::error("WAL writer failed: {}", e.to_string());
  auto& st = self->state;
  st.failed = true;
  // What the log made durable before failing stays acknowledged (a roll syncs earlier commits).
  if (st.log->config().sync == wal_config::sync_policy::every_batch) st.tail->publish(st.log->durable_lsn());
  // Listeners (subscription readers) would otherwise wait at the tail for ever.
  for (auto& l : st.listeners) self->send(l, failed_atom::value, e.message());
  st.tail->fail(std::move(e));
}

// Makes everything appended durable and tells everyone.
void flush(writer_actor* self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  if (st.failed) return;
  uint64_t durable;
  if (st.log->config().sync == wal_config::sync_policy::every_batch) {
    if (auto e = st.log->sync()) return fail(self, e);
    durable = st.log->durable_lsn();
  } else {
    durable = st.log->last_lsn();  // sync_policy::none: written is as durable as it gets
  }
  // The value first: a reader's consumer that acknowledges what it was just sent must find
  // database::durable_lsn() there already (update_slot refuses an LSN beyond it). Then the
  // readers (the delivery path is the latency consumers see), then the committers' wake-up.
  const bool moved = st.tail->advance(durable);
  for (auto& l : st.listeners) self->send(l, tail_atom::value, durable);
  if (moved) st.tail->wake();
  if (st.log->rolls() != st.rolls_seen && st.log->config().retention.automatic) {
    st.rolls_seen = st.log->rolls();
    self->send(self, retain_atom::value);  // after the appends already queued
  }
}

// Retention: removes the sealed segments that neither the policy nor a slot keeps.
void retain(writer_actor* self) {
  auto& st = self->state;
  if (st.failed || !st.log->config().retention.automatic) return;
  std::unique_lock<std::mutex> hold(retention_mutex(), std::try_to_lock);
  if (!hold.owns_lock()) return;  // a slot is being created, or someone compacts: the next seal retries
  const auto& dir = st.log->dir();
  uint64_t floor = UINT64_MAX;
  if (st.slot_floor) {
    auto f = st.slot_floor();
    if (!f) return spdlog::warn("WAL {}: no automatic compaction: {}", dir, f.err().to_string());
    floor = *f;
  }
  auto point = wal::retention_point(dir, st.log->config().retention);
  if (!point) return spdlog::warn("WAL {}: no automatic compaction: {}", dir, point.err().to_string());
  uint64_t below = std::min(*point, floor);
  if (below <= st.log->oldest_lsn()) return;
  auto r = st.log->compact(below);
  if (!r) return spdlog::warn("WAL {}: automatic compaction: {}", dir, r.err().to_string());
  if (!r->removed.empty())
    spdlog::debug("WAL {}: retention {} {} segment(s), {} bytes; oldest lsn now {}", dir,
                  r->archived ? "archived" : "removed", r->removed.size(), r->bytes, r->oldest_lsn);
}

wal_writer_actor::behavior_type wal_writer(writer_actor* self, std::shared_ptr<wal::log> log,
                                           std::shared_ptr<durable_tail> tail, slot_floor_fn slot_floor) {
  self->state.log = std::move(log);
  self->state.tail = std::move(tail);
  self->state.slot_floor = std::move(slot_floor);
  self->state.rolls_seen = self->state.log->rolls();
  // Nobody waits for ever on a writer that is gone (committers blocked in durable_tail::wait).
  self->attach_functor([t = self->state.tail] {
    if (!t->failed()) t->fail(error(ec::closed, "the WAL writer stopped (the database was closed)"));
  });
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& ls = self->state.listeners;
    ls.erase(std::remove_if(ls.begin(), ls.end(), [&](const wal_listener_actor& a) { return a.address() == dm.source; }),
             ls.end());
  });
  return {
    [=](append_atom, const std::string& msg) {
      auto& st = self->state;
      if (st.failed) return;
      if (auto e = decode_txn_message(msg, st.scratch)) return fail(self, e);
      if (st.scratch.first_lsn != st.log->next_lsn()) {
        return fail(self, error(ec::corruption, "transaction " + std::string(st.scratch.txn_id) +
                                                    " expected lsn " + std::to_string(st.scratch.first_lsn) +
                                                    " but the WAL is at " + std::to_string(st.log->next_lsn())));
      }
      auto r = st.log->append_views(st.scratch.entries);
      if (!r) return fail(self, r.err());
      if (st.scratch.flags != (txn_opens | txn_closes)) st.tail->publish_written(*r);  // a chunk of a large one
      if (!(st.scratch.flags & (txn_closes | txn_aborts))) {
        // A chunk of a transaction still running (or of a large one at commit): nobody waits
        // for it yet. Start its writeback so that the COMMIT's fdatasync finds it on disk.
        st.log->write_behind();
        return;
      }
      // Group commit: the flush message queues behind every append already waiting, so one
      // fdatasync covers them all.
      if (!st.flush_scheduled) {
        st.flush_scheduled = true;
        st.first_unsynced = std::chrono::steady_clock::now();
        self->send(self, flush_atom::value);
      }
    },
    [=](flush_atom) {
      auto& st = self->state;
      // Other threads are about to hand over their transactions: let them join this sync
      // (their appends queue ahead of the re-sent flush), within the group-commit delay.
      if (st.tail->committers() > 0 &&
          std::chrono::steady_clock::now() - st.first_unsynced < st.tail->group_commit_delay) {
        std::this_thread::yield();  // (a sleep of 10 us oversleeps by far here)
        self->send(self, flush_atom::value);
        return;
      }
      flush(self);
    },
    [=](sync_atom) -> caf::result<uint64_t> {
      flush(self);
      if (self->state.failed) return to_caf(self->state.tail->failure());
      return self->state.log->durable_lsn();
    },
    [=](compact_atom, uint64_t below) -> caf::result<wal::compact_report> {
      auto r = self->state.log->compact(below);
      if (!r) return to_caf(r.err());
      return std::move(*r);
    },
    [=](retain_atom) { retain(self); },
    [=](listen_atom, const wal_listener_actor& who) {
      self->monitor(who);
      self->state.listeners.push_back(who);
      self->send(who, tail_atom::value, self->state.log->durable_lsn());
      if (self->state.failed) self->send(who, failed_atom::value, self->state.tail->failure().message());
    },
  };
}

}  // namespace

std::mutex& retention_mutex() {
  static std::mutex m;
  return m;
}

wal_writer_actor spawn_wal_writer(caf::actor_system& sys, std::shared_ptr<wal::log> log,
                                  std::shared_ptr<durable_tail> tail, slot_floor_fn slot_floor) {
  return sys.spawn<caf::detached>(wal_writer, std::move(log), std::move(tail), std::move(slot_floor));
}

}  // namespace dosql::actors
