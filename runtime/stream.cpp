#include <dosql/stream.hpp>
#include "runtime/reader_setup.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>

#include "actors/errors.hpp"
#include "actors/slot_manager.hpp"
#include "actors/subscription_reader.hpp"
#include "wal/reader.hpp"

namespace dosql::cdc {
namespace {

using ack_atom = caf::atom_constant<caf::atom("d_sack")>;
// The callback stream's actor: a consumer that its cdc_stream also pauses, resumes and acks.
using stream_actor_handle = consumer_actor::extend<caf::reacts_to<pause_atom>, caf::reacts_to<resume_atom>,
                                                           caf::reacts_to<ack_atom, uint64_t>>;

}  // namespace

actor_subscription::actor_subscription(reader_control_actor reader, consumer_actor consumer,
                                       std::shared_ptr<end_state> end)
    : reader_(std::move(reader)), consumer_(std::move(consumer)), end_(std::move(end)) {}
actor_subscription::~actor_subscription() { stop(); }
void actor_subscription::stop() {
  if (reader_) caf::anon_send_exit(reader_, caf::exit_reason::user_shutdown);
  reader_ = nullptr;
}

subscription_status actor_subscription::status() const {
  if (!status_) return {};
  auto st = status_();
  st.active = !outcome().has_value() && reader_;
  return st;
}

std::optional<error> actor_subscription::outcome() const {
  if (!end_) return std::nullopt;
  std::lock_guard<std::mutex> g(end_->mu);
  if (!end_->ended) return std::nullopt;
  return end_->err;
}

result<actor_subscription> subscribe_actor(cdc_handle& cdc, consumer_actor consumer, subscribe_options opts) {
  auto cfg = make_reader_config(cdc, std::move(opts));
  if (!cfg) return cfg.err();
  (*cfg)->consumer = consumer;
  auto end = std::make_shared<actor_subscription::end_state>();
  (*cfg)->on_finish = [end](const error& e) {
    std::lock_guard<std::mutex> g(end->mu);
    if (end->ended) return;
    end->ended = true;
    end->err = e;
  };
  auto progress = std::make_shared<actors::reader_progress>();
  (*cfg)->progress = progress;
  const uint64_t start = (*cfg)->start_lsn - 1;
  auto reader = actors::spawn_subscription_reader(cdc.db().owner().system(), *cfg);
  actor_subscription sub(reader, consumer, std::move(end));
  sub.status_ = [progress, start, db = cdc.db_ptr(), sel = (*cfg)->opts]() {
    subscription_status st;
    st.current_lsn = std::max(start, progress->acked_lsn.load(std::memory_order_relaxed));
    st.entries_processed = progress->acked_entries.load(std::memory_order_relaxed);
    st.buffered_entries = progress->inflight.load(std::memory_order_relaxed);
    st.last_entry_at = progress->last_ack_at.load(std::memory_order_relaxed);
    fill_lag(*db, sel, st);
    return st;
  };
  return sub;
}

namespace {
// Why a reader that stopped without an end_atom stopped (nullopt: stop() by its owner).
std::optional<error> reader_down(caf::actor_system& sys, const caf::down_msg& dm) {
  if (dm.reason == caf::exit_reason::user_shutdown) return std::nullopt;
  return error(ec::subscription_failed, "the subscription's reader stopped without ending it (" + sys.render(dm.reason) + ")");
}
}  // namespace

namespace {

struct consumer_state {
  std::shared_ptr<consumer> c;
  std::vector<entry_view> views;
  static inline const char* name = "dosql.consumer";
};

consumer_actor::behavior_type consumer_behavior(consumer_actor::stateful_pointer<consumer_state> self,
                                                        std::shared_ptr<consumer> c) {
  self->state.c = std::move(c);
  self->set_down_handler([=](caf::down_msg& dm) {
    if (auto e = reader_down(self->system(), dm)) self->state.c->on_end(*e);
    self->quit();
  });
  return {
    [=](watch_atom, const reader_control_actor& reader) { self->monitor(reader); },
    [=](batch_atom, const batch& b) -> caf::result<uint64_t> {
      auto& st = self->state;
      error e = decode_batch(b, st.views);
      if (!e) {
        try {
          return st.c->on_batch(st.views);
        } catch (const std::exception& ex) {
          e = error(ec::subscription_failed, std::string("on_batch failed: ") + ex.what());
        } catch (...) {
          e = error(ec::subscription_failed, "on_batch failed: a non-standard exception");
        }
        uint64_t first = st.views.empty() ? 0 : st.views.front().lsn;
        e = error(e.code(), "subscription failed at lsn " + std::to_string(first) + ": " + e.message()).at(first);
      }
      // Nothing of this batch is acknowledged: the reader ends the subscription.
      st.c->on_end(e);
      self->quit();
      return actors::to_caf(e);
    },
    [=](end_atom, const subscription_end& end) {
      self->state.c->on_end(end.to_error());
      self->quit();
    },
    [=](heartbeat_atom, uint64_t) {},
  };
}

}  // namespace

result<actor_subscription> spawn_consumer(cdc_handle& cdc, std::shared_ptr<consumer> c, subscribe_options opts) {
  auto actor = cdc.db().owner().system().spawn<caf::detached>(consumer_behavior, std::move(c));
  auto sub = subscribe_actor(cdc, actor, std::move(opts));
  if (!sub) {
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    return sub;
  }
  caf::anon_send(actor, watch_atom::value, sub->reader());
  return sub;
}

// ---- cdc_stream -------------------------------------------------------------------------------

struct cdc_stream::state {
  cdc_handle cdc;
  stream_options opts;
  mutable std::mutex mu;
  stream_status st;  // guarded by mu
  bool ended = false;
  actor_subscription sub;
  stream_actor_handle actor;
  state(cdc_handle c, stream_options o) : cdc(std::move(c)), opts(std::move(o)) {}
};

namespace {

struct stream_actor_state {
  std::shared_ptr<cdc_stream::state> s;
  struct pending {
    caf::typed_response_promise<uint64_t> rp;
    batch msg;
    uint64_t last = 0;
    uint32_t count = 0;
  };
  std::deque<pending> waiting;  // received while paused
  std::deque<pending> unacked;  // processed, awaiting ack() (auto_ack off)
  bool paused = false;
  std::vector<entry_view> views;
  static inline const char* name = "dosql.cdc_stream";
};
using stream_actor = stream_actor_handle::stateful_base<stream_actor_state>;

void end_stream(std::shared_ptr<cdc_stream::state> s, const error& e) {
  {
    std::lock_guard<std::mutex> g(s->mu);
    if (s->ended) return;
    s->ended = true;
    s->st.active = false;
  }
  if (e && s->opts.handler.on_error) s->opts.handler.on_error(e);
  if (s->opts.handler.on_end) s->opts.handler.on_end();
}

// Runs the handlers over one batch; false if the stream must stop.
bool process(stream_actor* self, stream_actor_state::pending& p) {
  auto& st = self->state;
  auto& h = st.s->opts.handler;
  if (auto e = decode_batch(p.msg, st.views)) {
    end_stream(st.s, e);
    return false;
  }
  if (!st.views.empty()) p.last = st.views.back().lsn;
  const auto& o = st.s->opts;
  for (auto& v : st.views) {
    error err;
    wal_entry entry = v.to_entry();
    auto ev = to_event(entry);
    uint32_t attempts = 1;
    if (!ev) {
      err = ev.err();  // DECODE_ERROR naming the LSN: not worth retrying
    } else {
      // One call of the entry's handler; a throw is a SUBSCRIPTION_FAILED about this entry.
      auto call = [&]() -> error {
        try {
          if (auto* c = std::get_if<change_event<row>>(&*ev)) {
            if (h.on_change) h.on_change(*c);
          } else if (auto* t = std::get_if<transaction_event>(&*ev)) {
            if (h.on_transaction) h.on_transaction(*t);
          } else if (h.on_schema_change) {
            h.on_schema_change(std::get<schema_change_event>(*ev));
          }
          return {};
        } catch (const std::exception& ex) {
          return error(ec::subscription_failed, "lsn " + std::to_string(v.lsn) + ": handler failed: " + ex.what()).at(v.lsn);
        } catch (...) {
          return error(ec::subscription_failed, "lsn " + std::to_string(v.lsn) + ": handler failed: a non-standard exception")
              .at(v.lsn);
        }
      };
      if (o.on_failure == failure_policy::retry || o.on_failure == failure_policy::dead_letter) {
        attempts = std::max<uint32_t>(o.retry.max_attempts, 1);
        err = reliability::with_retry(call, o.retry);
      } else {
        err = call();
      }
    }
    if (err) {
      if (o.on_failure == failure_policy::dead_letter) {
        if (auto de = o.dead_letters->add(entry, err.message(), attempts)) {
          error stop(ec::subscription_failed, "lsn " + std::to_string(v.lsn) + ": " + err.message() +
                                                  "; storing it as a dead letter failed: " + de.to_string());
          end_stream(st.s, stop.at(v.lsn));
          return false;
        }
        if (h.on_error) h.on_error(err);
      } else if (o.on_failure == failure_policy::skip) {
        if (h.on_error) h.on_error(err);
      } else {  // stop, retry: this entry and everything after it stay unacknowledged
        end_stream(st.s, err);
        return false;
      }
    }
    std::lock_guard<std::mutex> g(st.s->mu);
    ++st.s->st.entries_processed;
    st.s->st.current_lsn = v.lsn;
    st.s->st.last_entry_at = now_ms();
    st.s->st.lag_ms = st.s->st.last_entry_at - v.timestamp;
  }
  return true;
}

void refresh_buffered(stream_actor* self) {
  uint64_t n = 0;
  for (auto& p : self->state.waiting) n += p.count;
  for (auto& p : self->state.unacked) n += p.count;
  std::lock_guard<std::mutex> g(self->state.s->mu);
  self->state.s->st.buffered_entries = n;
}

// Processes waiting batches unless paused; acknowledges as the options say.
void drain(stream_actor* self) {
  auto& st = self->state;
  while (!st.paused && !st.waiting.empty()) {
    auto p = std::move(st.waiting.front());
    st.waiting.pop_front();
    if (!process(self, p)) {
      self->quit();
      return;
    }
    if (st.s->opts.auto_ack)
      p.rp.deliver(p.last);
    else
      st.unacked.push_back(std::move(p));
  }
  refresh_buffered(self);
}

stream_actor_handle::behavior_type stream_behavior(stream_actor* self, std::shared_ptr<cdc_stream::state> s) {
  self->state.s = std::move(s);
  self->set_down_handler([=](caf::down_msg& dm) {
    if (auto e = reader_down(self->system(), dm)) {
      end_stream(self->state.s, *e);
      self->quit();
    }
  });
  return {
    [=](watch_atom, const reader_control_actor& reader) { self->monitor(reader); },
    [=](batch_atom, batch& msg) -> caf::result<uint64_t> {
      auto& st = self->state;
      stream_actor_state::pending p;
      p.rp = self->make_response_promise<uint64_t>();
      p.count = msg.count;
      p.msg = std::move(msg);
      auto rp = p.rp;
      st.waiting.push_back(std::move(p));
      drain(self);
      return rp;
    },
    [=](pause_atom) {
      self->state.paused = true;
      std::lock_guard<std::mutex> g(self->state.s->mu);
      self->state.s->st.paused = true;
    },
    [=](resume_atom) {
      self->state.paused = false;
      {
        std::lock_guard<std::mutex> g(self->state.s->mu);
        self->state.s->st.paused = false;
      }
      drain(self);
    },
    [=](ack_atom, uint64_t lsn) {
      auto& un = self->state.unacked;
      while (!un.empty() && un.front().last <= lsn) {
        un.front().rp.deliver(un.front().last);
        un.pop_front();
      }
      refresh_buffered(self);
    },
    [=](end_atom, const subscription_end& end) {
      end_stream(self->state.s, end.to_error());
      self->quit();
    },
    [=](heartbeat_atom, uint64_t) {},
  };
}

}  // namespace

cdc_stream::cdc_stream(cdc_handle cdc, stream_options opts)
    : s_(std::make_shared<state>(std::move(cdc), std::move(opts))) {}
cdc_stream::cdc_stream(cdc_stream&&) noexcept = default;
cdc_stream::~cdc_stream() {
  if (s_) stop();
}

error cdc_stream::start() {
  if (s_->actor) return error(ec::invalid_argument, "the stream was started already");
  if (s_->opts.on_failure == failure_policy::dead_letter && !s_->opts.dead_letters)
    return error(ec::invalid_argument, "failure_policy::dead_letter needs stream_options::dead_letters");
  auto& sys = s_->cdc.db().owner().system();
  // Handlers may block (network, disk): the stream actor gets its own thread.
  s_->actor = sys.spawn<caf::detached>(stream_behavior, s_);
  subscribe_options o;
  o.from_lsn = s_->opts.from_lsn;
  o.filter = s_->opts.filter;
  o.include_transaction_control = static_cast<bool>(s_->opts.handler.on_transaction);
  o.max_buffer_size = s_->opts.max_buffer_size;
  o.batch_size = s_->opts.batch_size;
  auto sub = subscribe_actor(s_->cdc, s_->actor, std::move(o));
  if (!sub) {
    caf::anon_send_exit(s_->actor, caf::exit_reason::user_shutdown);
    return sub.err();
  }
  s_->sub = std::move(*sub);
  caf::anon_send(s_->actor, watch_atom::value, s_->sub.reader());
  std::lock_guard<std::mutex> g(s_->mu);
  s_->st.active = true;
  s_->st.current_lsn = s_->opts.from_lsn;
  return {};
}

// The stream's actor holds what it has (no acks, no handler calls) and the reader sends no new
// batch (it reads nothing more from the WAL) until resume.
void cdc_stream::pause() {
  if (s_->actor) caf::anon_send(s_->actor, pause_atom::value);
  if (auto& r = s_->sub.reader()) caf::anon_send(r, pause_atom::value);
}
void cdc_stream::resume() {
  if (auto& r = s_->sub.reader()) caf::anon_send(r, resume_atom::value);
  if (s_->actor) caf::anon_send(s_->actor, resume_atom::value);
}
void cdc_stream::ack(uint64_t lsn) {
  if (s_->actor) caf::anon_send(s_->actor, ack_atom::value, lsn);
}

void cdc_stream::stop() {
  s_->sub.stop();
  if (s_->actor) {
    caf::scoped_actor self{s_->cdc.db().owner().system()};
    self->monitor(s_->actor);
    caf::anon_send_exit(s_->actor, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {});
    s_->actor = nullptr;
  }
  end_stream(s_, error{});
}

stream_status cdc_stream::status() const {
  stream_status st;
  {
    std::lock_guard<std::mutex> g(s_->mu);
    st = s_->st;
  }
  // Lag as the consumer sees it: entries it would still receive, and the age of the oldest
  // commit among them (growing while paused or stalled); the WAL is read outside the lock.
  subscribe_options sel;
  sel.filter = s_->opts.filter;
  fill_lag(s_->cdc.db(), sel, st);
  return st;
}

}  // namespace dosql::cdc
