#include "actors/subscription_reader.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <map>

#include "actors/errors.hpp"
#include "wal/cursor.hpp"
#include "wal/format.hpp"
#include "wal/msgpack_sink.hpp"

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
  uint64_t batch_first = 0;
  bool ended = false, pump_scheduled = false;
  std::map<uint64_t, uint64_t> inflight_first;  // batch number -> its first LSN (sent, not acked)
  uint64_t batches_sent = 0;
  uint64_t heartbeat = 0;    // the last position sent in a heartbeat (opts.heartbeats)
  static inline const char* name = "dosql.subscription_reader";
};
using reader_actor = caf::stateful_actor<reader_state>;

void finish(reader_actor* self, const error& e) {
  auto& st = self->state;
  if (st.ended) return;
  st.ended = true;
  if (st.cfg->consumer)
    self->send(st.cfg->consumer, end_atom::value, static_cast<uint8_t>(e.code()), e.message(), e.oldest_lsn, e.lsn);
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
  while (!st.ended && st.inflight < o.max_buffer_size) {
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
    std::string msg;
    msg.reserve(st.batch.size() + 24);
    detail::string_sink sink{msg};
    msgpack::packer<detail::string_sink> pk(sink);
    pk.pack_array(3);
    pk.pack_uint64(st.batch_first);
    pk.pack_uint32(st.batch_count);
    pk.pack_bin(static_cast<uint32_t>(st.batch.size()));
    pk.pack_bin_body(st.batch.data(), static_cast<uint32_t>(st.batch.size()));
    uint32_t n = st.batch_count;
    uint64_t id = ++st.batches_sent;
    st.inflight_first.emplace(id, st.batch_first);
    st.inflight += n;
    st.batch.clear();
    st.batch_count = 0;
    // No timeout: a slow consumer is backpressure; a dead one is noticed by the monitor.
    self->request(st.cfg->consumer, caf::infinite, batch_atom::value, std::move(msg))
        .then(
            [=](uint64_t) {
              self->state.inflight -= n;
              self->state.inflight_first.erase(id);
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

caf::behavior subscription_reader(reader_actor* self, std::shared_ptr<const reader_config> cfg) {
  auto& st = self->state;
  st.cfg = cfg;
  st.heartbeat = cfg->start_lsn - 1;
  auto init = [&]() -> error {
    cdc::cursor_options co;
    co.start_lsn = cfg->start_lsn;
    co.include_uncommitted = cfg->opts.include_uncommitted;
    co.include_transaction_control = cfg->opts.include_transaction_control;
    co.filter = cfg->opts.filter;
    co.columns = cfg->opts.columns;
    co.row_filters = cfg->opts.row_filters;
    co.where = cfg->opts.where;  // (validated against the tables at subscribe)
    auto c = cdc::cursor::open(cfg->wal_dir, std::move(co));
    if (!c) return c.err();
    st.cur = std::move(*c);
    st.cur->set_limit(0);  // nothing before the writer's first tail notification
    st.durable = 0;
    return {};
  };
  if (!cfg->writer) {
    finish(self, error(ec::closed, "cannot subscribe: the database of " + cfg->wal_dir + " is closed"));
    return {[=](tail_atom, uint64_t) {}, [=](failed_atom, const std::string&) {}};
  }
  if (auto e = init()) {
    finish(self, e);
    return {[=](tail_atom, uint64_t) {}, [=](failed_atom, const std::string&) {}};
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
  self->send(cfg->writer, listen_atom::value, caf::actor_cast<caf::actor>(self));
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
    [=](failed_atom, const std::string& why) {
      // The writer is alive but accepts nothing more: nothing will follow at the tail.
      finish(self, error(ec::io_error, "the WAL writer of " + self->state.cfg->wal_dir + " failed: " + why));
      self->quit();
    },
  };
}

}  // namespace

caf::actor spawn_subscription_reader(caf::actor_system& sys, std::shared_ptr<const reader_config> cfg) {
  return sys.spawn(subscription_reader, std::move(cfg));
}

uint32_t batch_count(std::string_view msg) noexcept {
  // [first_lsn, count, records]: fixarray(3), then two msgpack unsigned integers.
  auto p = reinterpret_cast<const uint8_t*>(msg.data());
  size_t n = msg.size(), i = 1;
  if (n < 3 || p[0] != 0x93) return 0;
  auto read_uint = [&](uint64_t& v) {
    if (i >= n) return false;
    uint8_t t = p[i++];
    size_t len = t < 0x80 ? 0 : t == 0xcc ? 1 : t == 0xcd ? 2 : t == 0xce ? 4 : t == 0xcf ? 8 : 99;
    if (len == 99 || i + len > n) return false;
    v = len == 0 ? t : 0;
    for (size_t k = 0; k < len; ++k) v = v << 8 | p[i++];
    return true;
  };
  uint64_t first = 0, count = 0;
  if (!read_uint(first) || !read_uint(count)) return 0;
  return static_cast<uint32_t>(count);
}

error decode_batch(const std::string& msg, std::vector<entry_view>& out) {
  out.clear();
  msgpack::object_handle oh;
  try {
    size_t off = 0;
    oh = msgpack::unpack(msg.data(), msg.size(), off, detail::reference_all);
  } catch (const std::exception& e) {
    return error(ec::decode_error, std::string("batch: ") + e.what());
  }
  const auto& o = oh.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 3 || o.via.array.ptr[2].type != msgpack::type::BIN)
    return error(ec::decode_error, "batch: bad envelope");
  const auto& bin = o.via.array.ptr[2].via.bin;
  size_t off = 0;
  while (off < bin.size) {
    auto r = wal::parse_record(bin.ptr + off, bin.size - off, false);
    if (r.status != wal::parse_status::ok) return error(ec::decode_error, "batch: bad record");
    out.push_back(r.entry);
    off += r.size;
  }
  return {};
}

}  // namespace dosql::actors
