#include "invalidator.hpp"

#include <caf/all.hpp>

#include <cctype>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

namespace dosql_cache {

namespace cdc = dosql::cdc;
using dosql::ec;

std::string interpolate(const std::string& pattern, const dosql::row& r) {
  std::string out;
  out.reserve(pattern.size() + 16);
  for (size_t i = 0; i < pattern.size();) {
    if (pattern[i] != '$') {
      out += pattern[i++];
      continue;
    }
    size_t j = i + 1;
    while (j < pattern.size() && (std::isalnum(static_cast<unsigned char>(pattern[j])) || pattern[j] == '_')) ++j;
    if (j == i + 1) {  // a lone '$'
      out += pattern[i++];
      continue;
    }
    if (const dosql::value* v = r.find(std::string_view(pattern).substr(i + 1, j - i - 1))) {
      if (auto* s = std::get_if<std::string>(v))
        out += *s;
      else
        out += dosql::to_json(*v);
    }
    i = j;
  }
  return out;
}

struct invalidator::core {
  std::shared_ptr<dosql::database> db;
  std::shared_ptr<backend> b;
  planner plan;
  invalidator_options o;
  std::unique_ptr<cdc::slot_manager> slots;
  cdc::actor_subscription sub;
  cdc::consumer_actor actor;

  std::mutex slot_mu;
  uint64_t acked = 0;  // guarded by slot_mu
  int64_t last_ack_ms = 0;

  mutable std::mutex mu;
  mutable std::condition_variable cv;
  uint64_t applied = 0, target = 0;  // guarded by mu
  bool ended = false, exited = false;
  error why;

  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> transactions{0}, ops{0}, flushes{0}, failures{0};

  // The actor's thread only.
  std::vector<op> pending;
  bool pending_flush = false, in_txn = false;
  std::deque<std::pair<int64_t, uint64_t>> samples;  // (steady ms, applied): the marker window
  int64_t last_housekeeping = 0, last_report = 0;

  uint64_t applied_now() const {
    std::lock_guard<std::mutex> g(mu);
    return applied;
  }
  void advance(uint64_t lsn) {
    {
      std::lock_guard<std::mutex> g(mu);
      if (lsn <= applied) return;
      applied = lsn;
    }
    cv.notify_all();
  }
  void end(const error& e) {
    {
      std::lock_guard<std::mutex> g(mu);
      if (!ended && e && !stopping) why = e;
      ended = true;
    }
    if (e && !stopping) std::fprintf(stderr, "dosql-cache: invalidator stopped: %s\n", e.to_string().c_str());
    cv.notify_all();
  }
  void report(const std::string& what) {
    const int64_t now = steady_ms();
    if (now - last_report < 1000) return;
    last_report = now;
    std::fprintf(stderr, "dosql-cache: %s\n", what.c_str());
  }

  error on_entry(const dosql::entry_view& v) {
    switch (v.op) {
      case dosql::op_type::begin:
        pending.clear();
        pending_flush = false;
        in_txn = true;
        return {};
      case dosql::op_type::commit:
        in_txn = false;
        return apply_txn(v.lsn);
      case dosql::op_type::rollback:
        pending.clear();
        pending_flush = in_txn = false;
        return {};
      case dosql::op_type::schema:  // a configured table's shape changed: cached rows are void
        pending_flush = true;
        pending.clear();
        return {};
      default:
        break;
    }
    if (pending_flush) return {};
    auto ev = cdc::to_event(v);
    if (!ev) return ev.err();
    if (auto* ch = std::get_if<cdc::change_event<dosql::row>>(&*ev)) plan(*ch, pending);
    if (pending.size() > o.max_txn_ops) {
      pending.clear();
      pending_flush = true;
    }
    return {};
  }

  error apply_txn(uint64_t commit) {
    std::vector<op> todo;
    if (pending_flush) {
      todo.push_back(op{op::kind::flush, "", "", ms{0}});
    } else {
      todo = std::move(pending);
    }
    pending.clear();
    pending_flush = false;
    if (!todo.empty()) {
      int64_t delay = 100;
      for (;;) {
        error e = b->apply(commit, todo);
        if (!e) break;
        ++failures;
        report("invalidation of the commit at lsn " + std::to_string(commit) + " failed: " + e.to_string() +
               " (retrying with backoff)");
        for (int64_t slept = 0; slept < delay; slept += 20) {
          if (stopping) return error(ec::closed, "stopped while retrying the commit at lsn " + std::to_string(commit)).at(commit);
          std::this_thread::sleep_for(ms(20));
        }
        delay = std::min<int64_t>(delay * 2, 2000);
      }
      ++transactions;
      ops += todo.size();
      if (todo.front().k == op::kind::flush) ++flushes;
    }
    advance(commit);
    return {};
  }

  void housekeeping() {
    const int64_t now = steady_ms();
    if (now - last_housekeeping < 100) return;
    last_housekeeping = now;
    samples.emplace_back(now, applied_now());
    uint64_t w = 0;
    while (!samples.empty() && samples.front().first <= now - o.marker_max_age.count()) {
      w = samples.front().second;
      samples.pop_front();
    }
    if (auto r = b->prune(w, o.max_markers); !r) report("pruning markers failed: " + r.err().to_string());
    b->maintain();
    ack(false);
  }

  void ack(bool force) {
    if (!slots) return;
    std::lock_guard<std::mutex> g(slot_mu);
    uint64_t a = applied_now();
    // A slot takes no acknowledgement beyond database::durable_lsn(), which can trail what the
    // reader delivered by a few LSNs: acknowledge the newest applied position within it.
    if (const uint64_t d = db->durable_lsn(); a > d) {
      a = acked;
      for (auto it = samples.rbegin(); it != samples.rend(); ++it)
        if (it->second <= d) {
          a = std::max(a, it->second);
          break;
        }
    }
    const int64_t now = steady_ms();
    if (a <= acked || (!force && now - last_ack_ms < o.ack_interval.count())) return;
    if (auto e = slots->update_slot(o.slot, a)) {
      std::fprintf(stderr, "dosql-cache: acknowledging slot %s at lsn %llu: %s\n", o.slot.c_str(),
                   static_cast<unsigned long long>(a), e.to_string().c_str());
      return;
    }
    acked = a;
    last_ack_ms = now;
  }
};

namespace {

struct actor_state {
  std::shared_ptr<invalidator::core> c;
  std::vector<dosql::entry_view> views;
  static inline const char* name = "dosql_cache.invalidator";
};

cdc::consumer_actor::behavior_type invalidator_actor(cdc::consumer_actor::stateful_pointer<actor_state> self,
                                                     std::shared_ptr<invalidator::core> c) {
  self->state.c = c;
  self->attach_functor([c] {
    {
      std::lock_guard<std::mutex> g(c->mu);
      c->exited = true;
    }
    c->cv.notify_all();
  });
  self->set_down_handler([=](caf::down_msg& dm) {
    if (dm.reason != caf::exit_reason::user_shutdown)
      c->end(error(ec::subscription_failed, "the subscription's reader stopped: " + self->system().render(dm.reason)));
    self->quit();
  });
  return {
      [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
        auto& views = self->state.views;
        if (auto e = cdc::decode_batch(b, views)) return cdc::to_caf(e);
        for (auto& v : views)
          if (auto e = c->on_entry(v)) return cdc::to_caf(e);
        c->housekeeping();
        return b.last_lsn;
      },
      [=](cdc::end_atom, const cdc::subscription_end& end) {
        c->end(end.to_error());
        self->quit();
      },
      [=](cdc::heartbeat_atom, uint64_t lsn) {
        if (!c->in_txn) c->advance(lsn);
        c->housekeeping();
      },
      [=](cdc::watch_atom, const cdc::reader_control_actor& reader) { self->monitor(reader); },
  };
}

}  // namespace

result<std::shared_ptr<invalidator>> invalidator::start(std::shared_ptr<dosql::database> db, std::shared_ptr<backend> b,
                                                        planner p, invalidator_options o) {
  auto c = std::make_shared<core>();
  c->db = db;
  c->b = std::move(b);
  c->plan = std::move(p);
  c->o = std::move(o);
  const auto& opts = c->o;
  auto handle = cdc::create_cdc(db);
  cdc::subscribe_options so;
  so.filter.tables = opts.tables;
  so.include_transaction_control = true;
  so.heartbeats = true;

  // Where to start, and whether what the cache holds can be trusted.
  bool flush = opts.on_start == invalidator_options::startup::flush;
  uint64_t from = 0;
  if (!opts.slot.empty()) {
    c->slots = cdc::create_slot_manager(db);
    auto s = c->slots->get_slot(opts.slot);
    if (s && s->invalidated) {
      std::fprintf(stderr, "dosql-cache: slot %s was invalidated (%s): flushing the cache\n", opts.slot.c_str(),
                   s->invalid_reason.c_str());
      flush = true;
    } else if (!s) {
      if (s.err().code() != ec::slot_not_found) return s.err();
      flush = true;  // nothing says what the cache saw: void it
    } else {
      from = s->acked_lsn;
    }
  }
  auto start_at_tail = [&]() -> error {
    if (c->slots) {
      (void)c->slots->delete_slot(opts.slot);
      cdc::create_slot_options co;
      co.filter.tables = opts.tables;
      auto s = c->slots->create_slot(opts.slot, co);
      if (!s) return s.err();
      from = s->acked_lsn;
    } else {
      from = db->durable_lsn();
    }
    // Everything cached before `from` may be stale: void it, and refuse fills read before it.
    // A slot whose flush did not happen must not remain (a later start would trust the cache).
    if (auto e = c->b->apply(from, {op{op::kind::flush, "", "", ms{0}}})) {
      if (c->slots) (void)c->slots->delete_slot(opts.slot);
      return e;
    }
    ++c->flushes;
    return {};
  };
  if (flush || !c->slots)
    if (auto e = start_at_tail()) return e;

  c->applied = from;
  c->acked = from;
  if (auto e = c->b->arm(db->last_lsn())) return e;  // (a Redis restarted empty while we were down)
  auto& sys = db->owner().system();
  c->actor = sys.spawn<caf::detached>(invalidator_actor, c);
  so.from_lsn = from;
  auto sub = cdc::subscribe_actor(handle, c->actor, so);
  if (!sub && sub.err().code() == ec::lsn_not_found && !flush) {
    std::fprintf(stderr, "dosql-cache: %s: flushing the cache and starting at the tail\n", sub.err().to_string().c_str());
    if (auto e = start_at_tail()) {
      caf::anon_send_exit(c->actor, caf::exit_reason::user_shutdown);
      return e;
    }
    c->applied = from;
    c->acked = from;
    so.from_lsn = from;
    sub = cdc::subscribe_actor(handle, c->actor, so);
  }
  if (!sub) {
    caf::anon_send_exit(c->actor, caf::exit_reason::user_shutdown);
    return sub.err();
  }
  {
    std::lock_guard<std::mutex> g(c->mu);
    c->target = db->last_lsn();
  }
  caf::anon_send(c->actor, cdc::watch_atom::value, sub->reader());
  c->sub = std::move(*sub);
  return std::shared_ptr<invalidator>(new invalidator(c));
}

invalidator::~invalidator() { stop(); }

uint64_t invalidator::applied_lsn() const { return c_->applied_now(); }

bool invalidator::caught_up() const {
  std::lock_guard<std::mutex> g(c_->mu);
  return c_->applied >= c_->target;
}

bool invalidator::wait_for(uint64_t lsn, ms timeout) const {
  std::unique_lock<std::mutex> g(c_->mu);
  c_->cv.wait_for(g, timeout, [&] { return c_->applied >= lsn || c_->ended; });
  return c_->applied >= lsn;
}

bool invalidator::wait_caught_up(ms timeout) const {
  uint64_t t;
  {
    std::lock_guard<std::mutex> g(c_->mu);
    t = c_->target;
  }
  return wait_for(t, timeout);
}

error invalidator::failure() const {
  std::lock_guard<std::mutex> g(c_->mu);
  return c_->why;
}

invalidator_stats invalidator::stats() const {
  return {c_->transactions.load(), c_->ops.load(), c_->flushes.load(), c_->failures.load()};
}

void invalidator::stop() {
  if (c_->stopping.exchange(true)) return;
  c_->sub.stop();
  caf::anon_send_exit(c_->actor, caf::exit_reason::user_shutdown);
  {
    std::unique_lock<std::mutex> g(c_->mu);
    c_->cv.wait_for(g, std::chrono::seconds(30), [&] { return c_->exited; });
    c_->ended = true;
  }
  c_->cv.notify_all();
  for (int i = 0; i < 200 && c_->db->durable_lsn() < c_->applied_now(); ++i)  // (at most 2 s)
    std::this_thread::sleep_for(ms(10));
  c_->samples.emplace_back(steady_ms(), c_->applied_now());  // (the actor is gone: ours now)
  c_->ack(true);
  c_->actor = cdc::consumer_actor{};
}

}  // namespace dosql_cache
