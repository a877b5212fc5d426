#include "actors/subscription_reader.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <map>

#include "actors/errors.hpp"
#include "wal/cursor.hpp"
#include "wal/format.hpp"

namespace dosql::actors {
namespace {

struct reader_state {
  std::shared_ptr<const reader_config> cfg;
  std::unique_ptr<cdc::cursor> cur;  // the delivery engine (wal/cursor.hpp)
  uint64_t durable = 0;
  uint64_t stop_at = UINT64_MAX;  // stop_at_tail: the tail when we started
  uint64_t inflight = 0;
  bool more = false;  // the cursor stopped with work left (a long undecided transaction)
  std::string batch;
  uint32_t batch_count = 0;
  uint64_t batch_first = 0, batch_last = 0;
  bool ended = false, pump_scheduled = false;
  bool paused = false;  // (pause_atom): no new batch until resume_atom
  std::map<uint64_t, uint64_t> inflight_first;  // batch number -> its first LSN (sent, not acked)
  uint64_t batches_sent = 0;
  uint64_t heartbeat = 0;    // the last position sent in a heartbeat (opts.heartbeats)
  static inline const char* name = "dosql.subscription_reader";
};
using reader_actor = subscription_reader_actor::stateful_base<reader_state>;

void finish(reader_actor* self, const error& e) {
  auto& st = self->state;
  if (st.ended) return;
  st.ended = true;
  if (st.cfg->consumer)
    self->send(st.cfg->consumer, end_atom::value, subscription_end::of(e));
  if (st.cfg->on_finish) st.cfg->on_finish(e);
}

// The consumer died or refused a batch: SUBSCRIPTION_FAILED at the first LSN it has not
// acknowledged (where a resumed subscription must start again), then quit.
void consumer_failed(reader_actor* self, const std::string& why) {
  auto& st = self->state;
  uint64_t lsn = 0;
  for (auto& [n, first] : st.inflight_first) lsn = lsn ? std::min(lsn, first) : first;
  if (!lsn && st.cur) lsn = st.cur->next_lsn();
  error e(ec::subscription_failed, "subscription failed at lsn " + std::to_string(lsn) + ": " + why);
  e.lsn = lsn;
  finish(self, e);
  self->quit();
}

void emit(reader_state& st, const entry_view& e) {
  if (st.batch_count == 0) st.batch_first = e.lsn;
  st.batch_last = e.lsn;
  wal::append_record(st.batch, e.lsn, e);
  ++st.batch_count;
}

// Fills the batch with up to `room` entries from the cursor; returns an error to end the range.
error fill(reader_state& st, uint32_t room) {
  st.cur->set_limit(std::min(st.durable, st.stop_at));
  st.more = false;
  entry_view v;
  while (st.batch_count < room) {
    switch (st.cur->next(v)) {
      case cdc::cursor::status::entry:
        emit(st, v);
        break;
      case cdc::cursor::status::tail:
        return {};
      case cdc::cursor::status::more:
        st.more = true;
        return {};
      case cdc::cursor::status::error:
        return st.cur->last_error();
    }
  }
  return {};
}

void pump(reader_actor* self) {
  auto& st = self->state;
  const auto& o = st.cfg->opts;
  while (!st.ended && !st.paused && st.inflight < o.max_buffer_size) {
    uint32_t room = static_cast<uint32_t>(std::min<uint64_t>(o.batch_size, o.max_buffer_size - st.inflight));
    if (auto e = fill(st, room)) {
      finish(self, e);
      break;
    }
    if (st.batch_count == 0) {
      // Nothing decided yet, but the look-ahead has more to read (a long transaction):
      // continue in a later turn.
      if (st.more && !st.pump_scheduled) {
        st.pump_scheduled = true;
        self->send(self, pump_atom::value);
      }
      break;
    }
    batch b;
    b.first_lsn = st.batch_first;
    b.last_lsn = st.batch_last;
    b.count = st.batch_count;
    b.records = std::move(st.batch);  // the WAL's own records, as framed on disk
    uint32_t n = st.batch_count;
    uint64_t id = ++st.batches_sent;
    st.inflight_first.emplace(id, st.batch_first);
    st.inflight += n;
    if (auto& p = st.cfg->progress) p->inflight.store(st.inflight, std::memory_order_relaxed);
    st.batch.clear();
    st.batch_count = 0;
    // No timeout: a slow consumer is backpressure; a dead one is noticed by the monitor.
    self->request(st.cfg->consumer, caf::infinite, batch_atom::value, std::move(b))
        .then(
            [=](uint64_t acked) {
              self->state.inflight -= n;
              self->state.inflight_first.erase(id);
              if (auto& p = self->state.cfg->progress) {
                p->acked_entries.fetch_add(n, std::memory_order_relaxed);
                if (acked > p->acked_lsn.load(std::memory_order_relaxed)) p->acked_lsn.store(acked, std::memory_order_relaxed);
                p->inflight.store(self->state.inflight, std::memory_order_relaxed);
                p->last_ack_at.store(now_ms(), std::memory_order_relaxed);
              }
              pump(self);
            },
            [=](caf::error& err) {
              auto e = from_caf(err, "the consumer failed");
              if (err.category() == error_category && e.code() == ec::subscription_failed && e.lsn) {
                finish(self, e);  // it says which entry, as itself
                self->quit();
              } else {
                consumer_failed(self, err.category() == error_category ? "the consumer failed: " + e.to_string()
                                                                       : e.message());
              }
            });
  }
  // A consumer that chose "fail instead of waiting": entries are waiting but its window is full.
  if (!st.ended && o.on_overflow == cdc::overflow_policy::fail && st.inflight >= o.max_buffer_size &&
      st.cur->next_lsn() <= std::min(st.durable, st.stop_at)) {
    error e(ec::buffer_overflow, "subscription buffer full (" + std::to_string(o.max_buffer_size) +
                                     " entries unacknowledged) with entries waiting from lsn " +
                                     std::to_string(st.cur->next_lsn()));
    finish(self, e);
  }
  // Heartbeat: caught up (nothing in flight, nothing to send) past entries the filter skipped:
  // the consumer learns that everything up to there is settled, and may acknowledge it.
  if (!st.ended && o.heartbeats && st.inflight == 0 && st.batch_count == 0) {
    uint64_t at = st.cur->settled_lsn();
    if (at > st.heartbeat) {
      st.heartbeat = at;
      self->send(st.cfg->consumer, heartbeat_atom::value, at);
    }
  }
  // stop_at_tail: done once everything up to the starting tail went out and was acked.
  if (!st.ended && st.stop_at != UINT64_MAX && st.inflight == 0 && st.cur->next_lsn() > st.stop_at)
    finish(self, error{});
  if (st.ended) self->quit();
}

// A reader whose range ended before it began: it ignores everything until it is gone.
subscription_reader_actor::behavior_type ended_reader() {
  return {[](tail_atom, uint64_t) {}, [](failed_atom, const std::string&) {}, [](pause_atom) {}, [](resume_atom) {},
          [](pump_atom) {}};
}

subscription_reader_actor::behavior_type subscription_reader(reader_actor* self,
                                                             std::shared_ptr<const reader_config> cfg) {
  auto& st = self->state;
  st.cfg = cfg;
  st.heartbeat = cfg->start_lsn - 1;
  auto init = [&]() -> error {
    cdc::cursor_options co = cdc::selection_of(cfg->opts);  // (where: validated at subscribe)
    co.start_lsn = cfg->start_lsn;
    co.include_uncommitted = cfg->opts.include_uncommitted;
    co.include_transaction_control = cfg->opts.include_transaction_control;
    auto c = cdc::cursor::open(cfg->wal_dir, std::move(co));
    if (!c) return c.err();
    st.cur = std::move(*c);
    st.cur->set_limit(0);  // nothing before the writer's first tail notification
    st.durable = 0;
    return {};
  };
  if (!cfg->writer) {
    finish(self, error(ec::closed, "cannot subscribe: the database of " + cfg->wal_dir + " is closed"));
    return ended_reader();
  }
  if (auto e = init()) {
    finish(self, e);
    return ended_reader();
  }
  // Never wait on a dead peer: the writer stopping means the database closed; the consumer
  // dying means nobody acknowledges again.
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& s = self->state;
    if (dm.source == s.cfg->writer.address()) {
      finish(self, error(ec::closed, "the database of " + s.cfg->wal_dir + " was closed"));
      self->quit();
    } else if (s.cfg->consumer && dm.source == s.cfg->consumer.address()) {
      consumer_failed(self, "the consumer actor stopped (" + self->system().render(dm.reason) + ")");
    }
  });
  self->monitor(cfg->writer);
  if (cfg->consumer) self->monitor(cfg->consumer);
  self->send(cfg->writer, listen_atom::value, caf::actor_cast<wal_listener_actor>(self));
  return {
    [=](tail_atom, uint64_t durable) {
      auto& s = self->state;
      if (s.stop_at == UINT64_MAX && s.cfg->opts.stop_at_tail) s.stop_at = durable;
      if (durable > s.durable) s.durable = durable;
      pump(self);
    },
    [=](pump_atom) {
      self->state.pump_scheduled = false;
      pump(self);
    },
    [=](pause_atom) { self->state.paused = true; },
    [=](resume_atom) {
      self->state.paused = false;
      pump(self);
    },
    [=](failed_atom, const std::string& why) {
      // The writer is alive but accepts nothing more: nothing will follow at the tail.
      finish(self, error(ec::io_error, "the WAL writer of " + self->state.cfg->wal_dir + " failed: " + why));
      self->quit();
    },
  };
}

}  // namespace

subscription_reader_actor spawn_subscription_reader(caf::actor_system& sys, std::shared_ptr<const reader_config> cfg) {
  return sys.spawn(subscription_reader, std::move(cfg));
}

}  // namespace dosql::actors
