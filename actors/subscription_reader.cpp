#include "actors/subscription_reader.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <deque>
#include <map>

#include "actors/errors.hpp"
#include "wal/sql_predicate.hpp"
#include "wal/value.hpp"
#include "wal/format.hpp"
#include "wal/msgpack_sink.hpp"
#include "wal/reader.hpp"

namespace dosql::actors {
namespace {

struct decision {
  uint64_t begin = 0, end = 0;
  bool committed = false;
};

struct reader_state {
  std::shared_ptr<const reader_config> cfg;
  std::unique_ptr<wal::reader> main, ahead;  // delivering cursor, look-ahead cursor
  uint64_t durable = 0;
  uint64_t stop_at = UINT64_MAX;  // stop_at_tail: the tail when we started
  uint64_t inflight = 0;
  std::deque<decision> decisions;  // outcomes of transactions ahead of `main`
  uint64_t ahead_txn = 0;          // BEGIN lsn of the transaction the look-ahead is inside
  bool ahead_more = false;         // the look-ahead stopped short of the durable tail
  // The transaction `main` is inside: its BEGIN (held until a change of it is delivered).
  bool in_txn = false, begin_sent = false;
  wal_entry pending_begin;
  std::string batch;
  uint32_t batch_count = 0;
  uint64_t batch_first = 0;
  bool ended = false, pump_scheduled = false;
  std::string scratch[2];  // images rewritten by a column mask or row filter
  std::map<std::string, cdc::sql_predicate> where;  // opts.where, compiled (validated at subscribe)
  bool first = true;      // no entry at or after the start seen yet
  bool resumed_mid = false;  // inside the transaction the start fell into (its BEGIN unseen)
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
  if (!lsn && st.main) lsn = st.main->next_lsn();
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

// Applies the table's row filter (enter/leave) and column mask to a row change; returns false
// if the entry is not delivered. `scratch` owns any rewritten images that `v` points to.
bool shape(const cdc::subscribe_options& o, std::map<std::string, cdc::sql_predicate>& where, entry_view& v,
           std::string (&scratch)[2], error& err) {
  std::string table(v.table);
  auto rf = o.row_filters.find(table);
  auto wh = where.find(table);
  auto cm = o.columns.find(table);
  if (rf == o.row_filters.end() && wh == where.end() && cm == o.columns.end()) return true;
  auto decode = [&](bool has, std::string_view img, std::optional<row>& out) {
    if (!has) return true;
    auto r = codec::decode_row(img);
    if (!r) {
      err = error(ec::decode_error, "lsn " + std::to_string(v.lsn) + ": " + r.err().message()).at(v.lsn);
      return false;
    }
    out = std::move(*r);
    return true;
  };
  std::optional<row> before, after;
  if (!decode(v.has_before, v.before, before) || !decode(v.has_after, v.after, after)) return false;
  if (rf != o.row_filters.end() || wh != where.end()) {
    auto in_set = [&](const std::optional<row>& r) {
      if (!r || err) return false;
      if (rf != o.row_filters.end() && !rf->second(*r)) return false;
      if (wh == where.end()) return true;
      auto m = wh->second.matches(*r);
      if (!m) {
        err = error(m.err().code(), "lsn " + std::to_string(v.lsn) + ": " + m.err().message()).at(v.lsn);
        return false;
      }
      return *m;
    };
    bool b = in_set(before), a = in_set(after);
    if (err) return false;
    if (v.op == op_type::insert && !a) return false;
    if (v.op == op_type::del && !b) return false;
    if (v.op == op_type::update) {
      if (!a && !b) return false;
      if (a && !b) {  // entered the filtered set
        v.op = op_type::insert;
        v.origin = entry_origin::entered;
        v.has_before = false;
        before.reset();
      } else if (b && !a) {  // left it
        v.op = op_type::del;
        v.origin = entry_origin::left;
        v.has_after = false;
        after.reset();
      }
    }
  }
  if (cm != o.columns.end()) {
    auto visible = [&](const std::string& c) { return cm->second.visible(c); };
    bool removed = false;
    for (auto* r : {&before, &after}) {
      if (!*r) continue;
      row kept;
      for (size_t i = 0; i < (*r)->size(); ++i) {
        if (visible((*r)->columns[i])) {
          kept.columns.push_back((*r)->columns[i]);
          kept.values.push_back((*r)->values[i]);
        } else {
          removed = true;
        }
      }
      **r = std::move(kept);
    }
    if (removed) {
      v.has_key = false;
      v.key = {};
    }
  }
  scratch[0].clear();
  scratch[1].clear();
  if (before) codec::encode_row(*before, scratch[0]);
  if (after) codec::encode_row(*after, scratch[1]);
  v.before = v.has_before ? std::string_view(scratch[0]) : std::string_view{};
  v.after = v.has_after ? std::string_view(scratch[1]) : std::string_view{};
  return true;
}

// Moves the look-ahead cursor toward the durable tail, recording each transaction's outcome;
// at most a bounded number of entries per call (the actor stays responsive): `st.ahead_more`
// says it stopped before the tail.
error look_ahead(reader_state& st) {
  st.ahead->set_limit(std::min(st.durable, st.stop_at));
  st.ahead_more = true;
  entry_view v;
  for (int i = 0; i < 65536; ++i) {
    auto s = st.ahead->next(v);
    if (s == wal::reader::status::tail) {
      st.ahead_more = false;
      return {};
    }
    if (s == wal::reader::status::error) return st.ahead->last_error();
    if (v.op == op_type::begin) st.ahead_txn = v.lsn;
    if (v.op == op_type::commit || v.op == op_type::rollback) {
      st.decisions.push_back({st.ahead_txn, v.lsn, v.op == op_type::commit});
      st.ahead_txn = 0;
    }
  }
  return {};
}

// Fills the batch with up to `room` entries; returns an error to end the range.
error fill(reader_state& st, uint32_t room) {
  const auto& o = st.cfg->opts;
  uint64_t limit = std::min(st.durable, st.stop_at);
  if (!o.include_uncommitted) {
    if (auto e = look_ahead(st)) return e;
    // Everything before the transaction the look-ahead is still inside has been decided.
    uint64_t decided = st.ahead_txn ? st.ahead_txn - 1 : st.ahead->next_lsn() - 1;
    limit = std::min(limit, decided);
  }
  st.main->set_limit(limit);
  entry_view v;
  while (st.batch_count < room) {
    auto s = st.main->next(v);
    if (s == wal::reader::status::tail) return {};
    if (s == wal::reader::status::error) return st.main->last_error();
    if (v.lsn < st.cfg->start_lsn) continue;
    if (st.first) {
      st.first = false;
      // Resuming inside a transaction: its BEGIN (and earlier changes) went to this consumer
      // before, so its COMMIT belongs to the stream.
      if (v.op != op_type::begin) st.in_txn = st.begin_sent = st.resumed_mid = true;
    }
    switch (v.op) {
      case op_type::begin:
        if (!o.include_uncommitted) {
          while (!st.decisions.empty() && st.decisions.front().begin < v.lsn) st.decisions.pop_front();
          if (!st.decisions.empty() && st.decisions.front().begin == v.lsn && !st.decisions.front().committed) {
            // Rolled back: skip the whole transaction.
            uint64_t end = st.decisions.front().end;
            st.decisions.pop_front();
            if (auto e = st.main->seek(end + 1)) return e;
            st.main->set_limit(limit);
            continue;
          }
        }
        st.in_txn = true;
        st.begin_sent = false;
        if (o.include_transaction_control) st.pending_begin = v.to_entry();
        break;
      case op_type::commit:
      case op_type::rollback: {
        bool dropped = !o.include_uncommitted && st.resumed_mid && !st.decisions.empty() &&
                       st.decisions.front().begin == 0 && !st.decisions.front().committed;
        if (o.include_transaction_control && st.begin_sent && !dropped) emit(st, v);
        st.in_txn = st.begin_sent = st.resumed_mid = false;
        if (!st.decisions.empty() && st.decisions.front().end == v.lsn) st.decisions.pop_front();
        break;
      }
      default:
        // Resuming inside a transaction (its BEGIN is before the start): its outcome is the
        // look-ahead's first decision.
        if (!o.include_uncommitted && st.resumed_mid && !st.decisions.empty() && st.decisions.front().begin == 0 &&
            !st.decisions.front().committed)
          break;
        if (!o.filter.matches(v)) break;
        if (is_row_change(v.op)) {
          error err;
          if (!shape(o, st.where, v, st.scratch, err)) {
            if (err) return err;
            break;
          }
        }
        if (o.include_transaction_control && st.in_txn && !st.begin_sent) {
          emit(st, view_of(st.pending_begin));
          st.begin_sent = true;
        }
        st.begin_sent = true;
        emit(st, v);
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
      if (st.ahead_more && !st.pump_scheduled) {
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
      st.main->next_lsn() <= std::min(st.durable, st.stop_at)) {
    error e(ec::buffer_overflow, "subscription buffer full (" + std::to_string(o.max_buffer_size) +
                                     " entries unacknowledged) with entries waiting from lsn " +
                                     std::to_string(st.main->next_lsn()));
    finish(self, e);
  }
  // Heartbeat: caught up (nothing in flight, nothing to send) past entries the filter skipped:
  // the consumer learns that everything up to there is settled, and may acknowledge it.
  if (!st.ended && o.heartbeats && st.inflight == 0 && st.batch_count == 0) {
    uint64_t at = st.main->next_lsn() - 1;
    if (at > st.heartbeat) {
      st.heartbeat = at;
      self->send(st.cfg->consumer, heartbeat_atom::value, at);
    }
  }
  // stop_at_tail: done once everything up to the starting tail went out and was acked.
  if (!st.ended && st.stop_at != UINT64_MAX && st.inflight == 0 && st.main->next_lsn() > st.stop_at)
    finish(self, error{});
  if (st.ended) self->quit();
}

caf::behavior subscription_reader(reader_actor* self, std::shared_ptr<const reader_config> cfg) {
  auto& st = self->state;
  st.cfg = cfg;
  st.heartbeat = cfg->start_lsn - 1;
  auto init = [&]() -> error {
    for (auto& [table, expr] : cfg->opts.where) {  // (validated against the tables at subscribe)
      auto p = cdc::sql_predicate::compile(table, expr, {});
      if (!p) return p.err();
      st.where.emplace(table, std::move(*p));
    }
    wal::reader_options ro;
    // With the look-ahead running (committed-only mode), every record the delivering cursor
    // reads has been read and checksummed by the look-ahead already: verify once. The
    // look-ahead itself always verifies: a damaged COMMIT misread as ROLLBACK would make the
    // delivering cursor skip a committed transaction.
    wal::reader_options main_ro = ro;
    main_ro.verify_checksums = cfg->opts.include_uncommitted;
    auto m = wal::reader::open(cfg->wal_dir, main_ro);
    if (!m) return m.err();
    st.main = std::move(*m);
    if (auto e = st.main->seek(cfg->start_lsn)) return e;
    auto a = wal::reader::open(cfg->wal_dir, ro);
    if (!a) return a.err();
    st.ahead = std::move(*a);
    // The look-ahead starts at the transaction boundary at or before the start.
    if (auto e = st.ahead->seek(cfg->start_lsn)) return e;
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
