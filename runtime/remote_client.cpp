// The client side of remote subscribers (<dosql/remote.hpp>): runtime::connect, the slot calls,
// and per subscription a controller actor that the server's reader feeds. The controller hands
// each batch to the application's consumer actor and acknowledges it to the server only when the
// consumer did (the credit window spans the link), acknowledges the slot, polls the lag, and
// on a lost link reconnects with backoff and resumes after the last LSN it handed on.
#include <dosql/remote.hpp>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <random>

#include "actors/errors.hpp"
#include "runtime/remote_protocol.hpp"

namespace dosql::remote {

namespace {

using r_retry_atom = caf::atom_constant<caf::atom("r_retry")>;
using r_poll_atom = caf::atom_constant<caf::atom("r_poll")>;
using r_quit_atom = caf::atom_constant<caf::atom("r_quit")>;

caf::io::middleman_actor middleman_of(caf::actor_system& sys, bool tls) {
  return tls ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
}

std::string where_of(const std::string& host, uint16_t port) { return host + ":" + std::to_string(port); }

// Whether an error from connecting or subscribing is worth another try: the link or the server
// being away is; a refusal (token, options, slot) is not.
bool transient(const error& e) {
  switch (e.code()) {
    case ec::io_error:
    case ec::closed:
    case ec::busy:  // the server's session limit
      return true;
    default:
      return false;
  }
}

// The anchor of connection-level sessions: an actor that only lives. (It takes an argument: a
// spawn with none trips UBSan in CAF 0.17's init_fun_factory.)
caf::behavior anchor_behavior(caf::event_based_actor*, int) {
  return {[](r_quit_atom) {}};
}

}  // namespace

// ---- shared subscription state --------------------------------------------------------------

struct subscription::state {
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  remote_status st;                 // guarded by mu
  bool started = false;             // first r_sub answered (or failed)
  bool ended = false;
  bool stopped = false;             // stop() by the owner
  error outcome;
  int64_t down_since = 0;           // Unix ms the link was lost (0: up)
  caf::actor controller;
  caf::actor_system* sys = nullptr;

  void end(const error& e) {
    {
      std::lock_guard<std::mutex> g(mu);
      if (ended) return;
      ended = true;
      started = true;
      outcome = e;
      st.state = link_state::ended;
      st.stream.active = false;
    }
    cv.notify_all();
  }
};

// Where and how to reach the service: a connection's and each of its subscriptions'.
struct link_params {
  caf::actor_system* sys = nullptr;
  bool tls = false;
  std::string host;
  uint16_t port = 0;
  std::string token;
  reconnect_options ro;
};

namespace {

struct controller_state : link_params {
  wire_subscribe wire;  // from_lsn is rewritten at each reconnection
  cdc::consumer_actor user;
  std::shared_ptr<subscription::state> shared;
  // the link
  session_actor session;
  uint64_t sub_id = 0;
  uint64_t reader_id = 0;
  caf::node_id server;
  uint64_t epoch = 0;  // bumped at every link loss: answers of older attempts are ignored
  // While a subscribe request is out, the new reader may already send (its first batch can
  // overtake the reply): what comes from the server's node then waits here, tagged with its
  // sender's id, and is handled (or refused) once the reply names the reader.
  bool sub_pending = false;
  std::vector<std::pair<uint64_t, std::function<void(bool)>>> early;
  uint32_t attempts = 0;
  bool paused = false;
  bool quitting = false;
  // positions
  uint64_t forwarded = 0;  // last LSN handed to the consumer
  uint64_t acked = 0;      // last LSN the consumer acknowledged
  uint64_t inflight = 0;   // entries handed, not acknowledged
  uint64_t processed = 0;
  uint64_t slot_acked = 0;     // the slot's position on the server, as last heard
  uint64_t slot_wanted = 0;    // what should be acknowledged to the slot
  bool slot_ack_busy = false;
  static inline const char* name = "dosql.remote_subscription";
};

using ctl_pointer = caf::stateful_actor<controller_state>*;

void update(ctl_pointer self, const std::function<void(remote_status&)>& f) {
  auto& sh = *self->state.shared;
  std::lock_guard<std::mutex> g(sh.mu);
  f(sh.st);
}

void connect_now(ctl_pointer self);

// Messages held while the subscribe reply was pending: handled in order if they came from the
// reader it names, refused otherwise.
void drain_early(ctl_pointer self) {
  auto& s = self->state;
  s.sub_pending = false;
  auto held = std::move(s.early);
  s.early.clear();
  for (auto& [sender, f] : held) f(s.reader_id != 0 && sender == s.reader_id);
}
void drop_early(ctl_pointer self) {
  self->state.reader_id = 0;
  drain_early(self);
}

// The link is gone (or never came): retry after a backoff, unless the attempts are used up.
void lost(ctl_pointer self, const error& why) {
  auto& s = self->state;
  if (s.quitting) return;
  ++s.epoch;
  drop_early(self);
  if (s.session) self->demonitor(s.session.address());
  s.session = nullptr;
  s.reader_id = 0;
  auto& sh = *s.shared;
  {
    std::lock_guard<std::mutex> g(sh.mu);
    sh.st.last_error = why;
    if (sh.st.state != link_state::connecting) sh.st.state = link_state::reconnecting;
    if (!sh.down_since) sh.down_since = now_ms();
  }
  ++s.attempts;
  if (s.ro.max_attempts && s.attempts >= s.ro.max_attempts) {
    error e(why.code(), "gave up after " + std::to_string(s.attempts) + " attempts to reach " + where_of(s.host, s.port) +
                            ": " + why.message());
    e.lsn = s.acked;
    s.quitting = true;
    caf::anon_send(s.user, cdc::end_atom::value, cdc::subscription_end::of(e));
    sh.end(e);
    self->quit();
    return;
  }
  auto base = s.ro.initial_backoff.count() << std::min<uint32_t>(s.attempts - 1, 16);
  auto capped = std::min<int64_t>(base, s.ro.max_backoff.count());
  static thread_local std::mt19937 rng{std::random_device{}()};
  auto jitter = std::uniform_int_distribution<int64_t>(0, std::max<int64_t>(1, capped / 4))(rng);
  spdlog::warn("remote: link to {} lost ({}); reconnecting in {} ms", where_of(s.host, s.port), why.message(),
               capped + jitter);
  self->delayed_send(self, std::chrono::milliseconds(capped + jitter), r_retry_atom::value, s.epoch);
}

// The subscription cannot go on: tell the consumer, the server and the owner.
void finish(ctl_pointer self, const error& e) {
  auto& s = self->state;
  if (s.quitting) return;
  s.quitting = true;
  if (s.session && s.sub_id) self->send(s.session, r_stop_atom::value, s.sub_id);
  caf::anon_send(s.user, cdc::end_atom::value, cdc::subscription_end::of(e));
  s.shared->end(e);
  self->quit();
}

// Acknowledges the slot up to slot_wanted (one request at a time; the newest position wins).
void ack_slot(ctl_pointer self) {
  auto& s = self->state;
  if (s.wire.slot.empty() || s.slot_ack_busy || !s.session || s.slot_wanted <= s.slot_acked) return;
  s.slot_ack_busy = true;
  uint64_t lsn = s.slot_wanted;
  self->request(s.session, std::chrono::seconds(30), actors::slot_ack_atom::value, s.wire.slot, lsn)
      .then(
          [=](cdc::slot_info& info) {
            auto& s = self->state;
            s.slot_ack_busy = false;
            s.slot_acked = std::max(s.slot_acked, info.acked_lsn);
            update(self, [&](remote_status& st) { st.slot_acked_lsn = s.slot_acked; });
            ack_slot(self);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            s.slot_ack_busy = false;
            auto e = actors::from_caf(err, "the slot manager");
            if (e.code() == ec::invalid_argument || e.code() == ec::slot_not_found) {
              spdlog::error("remote: acknowledging slot '{}' at {}: {}", s.wire.slot, lsn, e.message());
              finish(self, e);
            }
            // a lost link: retried after reconnecting
          });
}

void subscribe_now(ctl_pointer self, session_actor session, uint64_t epoch) {
  auto& s = self->state;
  s.session = session;
  self->monitor(session);
  s.wire.from_lsn = std::max(s.wire.from_lsn, s.forwarded);
  s.sub_pending = true;
  self->request(session, s.ro.connect_timeout, r_sub_atom::value, s.wire, caf::actor_cast<cdc::consumer_actor>(self))
      .then(
          [=](sub_reply& r) {
            auto& s = self->state;
            if (epoch != s.epoch || s.quitting) return;
            s.sub_id = r.id;
            s.reader_id = r.reader_id;
            s.server = s.session.node();
            s.attempts = 0;
            if (s.forwarded < r.start_after) s.forwarded = r.start_after;
            if (s.acked < r.start_after) s.acked = r.start_after;
            s.slot_acked = std::max(s.slot_acked, r.slot_acked);
            drain_early(self);  // what the reader sent before this reply came, in order
            if (s.quitting) return;
            if (s.paused) self->send(s.session, r_pause_atom::value, s.sub_id);
            auto& sh = *s.shared;
            {
              std::lock_guard<std::mutex> g(sh.mu);
              if (sh.st.state == link_state::reconnecting) ++sh.st.reconnects;
              sh.st.state = link_state::streaming;
              sh.st.stream.active = true;
              sh.st.stream.current_lsn = s.acked;
              sh.st.slot_acked_lsn = s.slot_acked;
              sh.down_since = 0;
              sh.started = true;
            }
            sh.cv.notify_all();
            ack_slot(self);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            if (epoch != s.epoch || s.quitting) return;
            drop_early(self);
            auto e = actors::from_caf(err, "the remote service");
            if (transient(e)) return lost(self, e);
            finish(self, e);
          });
}

void connect_now(ctl_pointer self) {
  auto& s = self->state;
  uint64_t epoch = s.epoch;
  auto mm = middleman_of(*s.sys, s.tls);
  self->request(mm, s.ro.connect_timeout, caf::connect_atom::value, s.host, s.port)
      .then(
          [=](caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>&) {
            auto& s = self->state;
            if (epoch != s.epoch || s.quitting) return;
            if (!ptr) return lost(self, error(ec::io_error, where_of(s.host, s.port) + " publishes no actor"));
            auto gate = caf::actor_cast<gate_actor>(ptr);
            self->request(gate, s.ro.connect_timeout, r_hello_atom::value, protocol_version, s.token,
                          caf::actor_cast<caf::actor>(self))
                .then(
                    [=](session_actor& session) {
                      if (epoch != self->state.epoch || self->state.quitting) return;
                      subscribe_now(self, session, epoch);
                    },
                    [=](caf::error& err) {
                      if (epoch != self->state.epoch || self->state.quitting) return;
                      auto e = actors::from_caf(err, "the remote service");
                      if (transient(e)) return lost(self, e);
                      finish(self, e);
                    });
          },
          [=](caf::error& err) {
            auto& s = self->state;
            if (epoch != s.epoch || s.quitting) return;
            lost(self, error(ec::io_error, "cannot connect to " + where_of(s.host, s.port) + ": " + s.sys->render(err)));
          });
}

// From the current reader only: a batch of an earlier link is stale. (`snd`: the message's
// sender, taken before make_response_promise(), which takes it over.)
bool from_reader(ctl_pointer self, const caf::strong_actor_ptr& snd) {
  auto& s = self->state;
  return snd && s.reader_id && snd->id() == s.reader_id && snd->node() == s.server;
}

// A batch of the current reader: handed to the consumer; its ack goes back when the consumer's
// does (the credit window spans the link).
void on_batch(ctl_pointer self, cdc::batch b, caf::typed_response_promise<uint64_t> rp) {
  auto& s = self->state;
  if (b.last_lsn <= s.forwarded) {  // already handed on
    rp.deliver(b.last_lsn);
    return;
  }
  if (b.first_lsn <= s.forwarded) {
    rp.deliver(actors::to_caf(error(ec::invalid_argument, "batch " + std::to_string(b.first_lsn) + ".." +
                                                              std::to_string(b.last_lsn) + " overlaps LSN " +
                                                              std::to_string(s.forwarded) + " already delivered")));
    return;
  }
  s.forwarded = b.last_lsn;
  uint32_t count = b.count;
  uint64_t first = b.first_lsn;
  s.inflight += count;
  update(self, [&](remote_status& st) { st.stream.buffered_entries = s.inflight; });
  self->request(s.user, caf::infinite, cdc::batch_atom::value, std::move(b))
      .then(
          [=](uint64_t ack) mutable {
            auto& s = self->state;
            s.inflight -= count;
            s.processed += count;
            s.acked = std::max(s.acked, ack);
            update(self, [&](remote_status& st) {
              st.stream.current_lsn = s.acked;
              st.stream.entries_processed = s.processed;
              st.stream.buffered_entries = s.inflight;
              st.stream.last_entry_at = now_ms();
            });
            if (!s.wire.slot.empty()) {
              s.slot_wanted = std::max(s.slot_wanted, s.acked);
              ack_slot(self);
            }
            rp.deliver(ack);
          },
          [=](caf::error& err) mutable {
            rp.deliver(err);
            auto e = actors::from_caf(err, "the consumer");
            error f(ec::subscription_failed, "the consumer failed: " + e.message());
            f.lsn = first;
            finish(self, f);
          });
}

// A heartbeat of the current reader: nothing in flight, everything up to lsn delivered or
// filtered out, so a reconnection may start there and the slot may move there.
void on_heartbeat(ctl_pointer self, uint64_t lsn) {
  auto& s = self->state;
  caf::anon_send(s.user, cdc::heartbeat_atom::value, lsn);
  if (s.inflight == 0 && lsn > s.forwarded) s.forwarded = lsn;
  if (!s.wire.slot.empty() && s.inflight == 0 && lsn > s.slot_wanted) {
    s.slot_wanted = lsn;
    ack_slot(self);
  }
}

// Runs `f` now for the current reader's messages, later (drain_early) for those that may be the
// new reader's while its subscribe reply is pending; false: neither (stale).
bool route(ctl_pointer self, const caf::strong_actor_ptr& snd, std::function<void(bool)> f) {
  auto& s = self->state;
  if (from_reader(self, snd)) {
    f(true);
    return true;
  }
  if (s.sub_pending && snd && s.session && snd->node() == s.session.node()) {
    s.early.emplace_back(snd->id(), std::move(f));
    return true;
  }
  return false;
}

error stale_batch() { return error(ec::subscription_failed, "stale batch from an earlier link"); }

caf::behavior controller(ctl_pointer self, controller_state init) {
  self->state = std::move(init);
  self->monitor(self->state.user);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& s = self->state;
    if (dm.source == s.user.address()) {  // the application's consumer is gone
      error e(ec::subscription_failed, "the consumer actor stopped");
      e.lsn = s.acked + 1;
      return finish(self, e);
    }
    if (s.session && dm.source == s.session.address())
      lost(self, error(ec::io_error, "the link to " + where_of(s.host, s.port) + " was lost: " + self->system().render(dm.reason)));
  });
  self->delayed_send(self, self->state.ro.status_interval, r_poll_atom::value);
  connect_now(self);
  return {
      [=](cdc::batch_atom, cdc::batch& b) -> caf::result<uint64_t> {
        caf::strong_actor_ptr snd = self->current_sender();  // before the promise takes it over
        if (!from_reader(self, snd) && !(self->state.sub_pending && snd && self->state.session &&
                                         snd->node() == self->state.session.node()))
          return actors::to_caf(stale_batch());
        auto rp = self->make_response_promise<uint64_t>();
        bool routed = route(self, snd, [=, b = std::move(b)](bool ok) mutable {
          if (ok)
            on_batch(self, std::move(b), rp);
          else
            rp.deliver(actors::to_caf(stale_batch()));
        });
        if (!routed) return actors::to_caf(stale_batch());
        return rp;
      },
      [=](cdc::end_atom, cdc::subscription_end& end) {
        route(self, self->current_sender(), [=](bool ok) {
          if (!ok || self->state.quitting) return;
          auto e = end.to_error();
          if (e.code() == ec::closed) return lost(self, e);  // the server's database closed: it may come back
          finish(self, e);
        });
      },
      [=](cdc::heartbeat_atom, uint64_t lsn) {
        route(self, self->current_sender(), [=](bool ok) {
          if (ok) on_heartbeat(self, lsn);
        });
      },
      [=](cdc::watch_atom, cdc::reader_control_actor&) {},
      [=](cdc::pause_atom) {
        auto& s = self->state;
        s.paused = true;
        update(self, [](remote_status& st) { st.stream.paused = true; });
        if (s.session && s.sub_id) self->send(s.session, r_pause_atom::value, s.sub_id);
      },
      [=](cdc::resume_atom) {
        auto& s = self->state;
        s.paused = false;
        update(self, [](remote_status& st) { st.stream.paused = false; });
        if (s.session && s.sub_id) self->send(s.session, r_resume_atom::value, s.sub_id);
      },
      [=](r_retry_atom, uint64_t epoch) {
        if (epoch != self->state.epoch || self->state.quitting) return;
        connect_now(self);
      },
      [=](r_poll_atom) {
        auto& s = self->state;
        if (s.quitting) return;
        self->delayed_send(self, s.ro.status_interval, r_poll_atom::value);
        int64_t down = 0;
        {
          std::lock_guard<std::mutex> g(s.shared->mu);
          down = s.shared->down_since;
          s.shared->st.outage_ms = down ? now_ms() - down : 0;
        }
        if (!s.session || !s.sub_id || !s.reader_id) return;
        uint64_t epoch = s.epoch;
        self->request(s.session, s.ro.status_interval * 2, r_status_atom::value, s.sub_id, s.acked)
            .then(
                [=](sub_lag& l) {
                  if (epoch != self->state.epoch) return;
                  update(self, [&](remote_status& st) {
                    st.stream.lag_entries = l.lag_entries;
                    st.stream.lag_ms = l.lag_ms;
                    st.lag_measured_at = now_ms();
                  });
                },
                [](caf::error&) {});  // a lost link shows as the session going down
      },
      [=](r_quit_atom) {  // stop() by the owner
        auto& s = self->state;
        s.quitting = true;
        if (s.session && s.sub_id) self->send(s.session, r_stop_atom::value, s.sub_id);
        s.shared->end(error{});
        self->quit();
      },
  };
}

}  // namespace

subscription::subscription(std::shared_ptr<state> s) : s_(std::move(s)) {}
subscription::~subscription() { stop(); }

void subscription::stop() {
  if (!s_) return;
  {
    std::lock_guard<std::mutex> g(s_->mu);
    if (s_->stopped) return;
    s_->stopped = true;
  }
  if (s_->controller) caf::anon_send(s_->controller, r_quit_atom::value);
}

std::optional<error> subscription::outcome() const {
  if (!s_) return std::nullopt;
  std::lock_guard<std::mutex> g(s_->mu);
  if (!s_->ended || s_->stopped) return std::nullopt;
  return s_->outcome;
}

std::optional<error> subscription::wait(std::chrono::milliseconds timeout) const {
  if (!s_) return std::nullopt;
  std::unique_lock<std::mutex> g(s_->mu);
  s_->cv.wait_for(g, timeout, [&] { return s_->ended; });
  if (!s_->ended) return std::nullopt;
  return s_->outcome;
}

remote_status subscription::status() const {
  if (!s_) return {};
  std::lock_guard<std::mutex> g(s_->mu);
  remote_status st = s_->st;
  st.outage_ms = s_->down_since ? now_ms() - s_->down_since : 0;
  return st;
}

// ---- connection -----------------------------------------------------------------------------

struct connection::impl : link_params {
  std::mutex mu;
  caf::actor anchor;       // the connection-level session's anchor
  session_actor session;   // guarded by mu

  ~impl() {
    if (anchor) caf::anon_send_exit(anchor, caf::exit_reason::user_shutdown);
  }

  // Connects and authenticates (blocking, bounded by ro.connect_timeout per step).
  result<session_actor> open_session() {
    caf::scoped_actor self{*sys};
    gate_actor gate;
    error err(ec::io_error, "cannot connect to " + where_of(host, port));
    self->request(middleman_of(*sys, tls), ro.connect_timeout, caf::connect_atom::value, host, port)
        .receive(
            [&](caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>&) {
              if (ptr)
                gate = caf::actor_cast<gate_actor>(ptr);
              else
                err = error(ec::io_error, where_of(host, port) + " publishes no actor");
            },
            [&](caf::error& e) { err = error(ec::io_error, "cannot connect to " + where_of(host, port) + ": " + sys->render(e)); });
    if (!gate) return err;
    result<session_actor> out = err;
    self->request(gate, ro.connect_timeout, r_hello_atom::value, protocol_version, token, anchor)
        .receive([&](session_actor& s) { out = std::move(s); },
                 [&](caf::error& e) { out = actors::from_caf(e, "the remote service at " + where_of(host, port)); });
    return out;
  }

  // One request to the session; on a lost link, one new session and one more try.
  template <class T, class... Ts>
  result<T> call(const Ts&... xs) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      session_actor s;
      {
        std::lock_guard<std::mutex> g(mu);
        if (!session) {
          auto fresh = open_session();
          if (!fresh) return fresh.err();
          session = *fresh;
        }
        s = session;
      }
      caf::scoped_actor self{*sys};
      result<T> out = error(ec::io_error, "no answer from " + where_of(host, port));
      bool link_lost = false;
      auto on_error = [&](caf::error& e) {
        link_lost = e.category() != caf::atom("dosql");
        out = actors::from_caf(e, "the remote service at " + where_of(host, port));
      };
      if constexpr (std::is_same_v<T, caf::unit_t>)
        self->request(s, std::chrono::minutes(1), xs...).receive([&] { out = caf::unit; }, on_error);
      else
        self->request(s, std::chrono::minutes(1), xs...).receive([&](T& r) { out = std::move(r); }, on_error);
      if (!link_lost || attempt == 1) return out;
      std::lock_guard<std::mutex> g(mu);
      if (session == s) session = nullptr;
    }
    return error(ec::io_error, "unreachable");
  }
};

connection::connection(std::unique_ptr<impl> p) : p_(std::move(p)) {}
connection::~connection() = default;
const std::string& connection::host() const noexcept { return p_->host; }
uint16_t connection::port() const noexcept { return p_->port; }

result<cdc::slot_info> connection::create_slot(const std::string& name, cdc::create_slot_options opts) {
  if (opts.snapshot)
    return error(ec::invalid_argument, "create_slot: a snapshot is not available over a remote connection");
  return p_->call<cdc::slot_info>(actors::slot_create_atom::value, name, opts.start_lsn, opts.filter);
}
result<cdc::slot_info> connection::get_slot(const std::string& name) {
  return p_->call<cdc::slot_info>(caf::get_atom::value, name);
}
result<std::vector<cdc::slot_info>> connection::list_slots() {
  auto r = p_->call<actors::slot_listing>(actors::slot_list_atom::value);
  if (!r) return r.err();
  if (auto e = actors::from_caf(r->problem)) return e;
  return std::move(r->slots);
}
error connection::update_slot(const std::string& name, uint64_t lsn) {
  auto r = p_->call<cdc::slot_info>(actors::slot_ack_atom::value, name, lsn);
  return r ? error{} : r.err();
}
error connection::delete_slot(const std::string& name) {
  auto r = p_->call<caf::unit_t>(actors::slot_drop_atom::value, name);
  return r ? error{} : r.err();
}
result<uint64_t> connection::durable_lsn() { return p_->call<uint64_t>(r_durable_atom::value); }

namespace {
result<subscription> start_subscription(connection::impl& c, cdc::consumer_actor consumer, wire_subscribe w) {
  if (!consumer) return error(ec::invalid_argument, "subscribe: no consumer actor");
  auto shared = std::make_shared<subscription::state>();
  shared->sys = c.sys;
  controller_state init;
  static_cast<link_params&>(init) = c;
  init.forwarded = w.from_lsn;
  init.acked = w.from_lsn;
  init.wire = std::move(w);
  init.user = consumer;
  init.shared = shared;
  shared->st.stream.current_lsn = init.acked;
  shared->controller = c.sys->spawn(controller, std::move(init));
  // The first connection decides: refused options, a wrong token or a missing slot are the
  // caller's errors now; an unreachable server keeps retrying in the background.
  std::unique_lock<std::mutex> g(shared->mu);
  shared->cv.wait_for(g, c.ro.connect_timeout * 2, [&] { return shared->started; });
  if (shared->ended && shared->outcome) {
    auto e = shared->outcome;
    return e;
  }
  g.unlock();
  return subscription(shared);
}
}  // namespace

result<subscription> connection::subscribe_actor(cdc::consumer_actor consumer, cdc::subscribe_options opts) {
  auto w = to_wire(opts);
  if (!w) return w.err();
  return start_subscription(*p_, std::move(consumer), std::move(*w));
}

result<subscription> connection::subscribe_from_slot(const std::string& name, cdc::consumer_actor consumer,
                                                     cdc::subscribe_options extra) {
  auto w = to_wire(extra);
  if (!w) return w.err();
  w->slot = name;
  w->heartbeats = true;
  return start_subscription(*p_, std::move(consumer), std::move(*w));
}

result<std::shared_ptr<connection>> connect(runtime& rt, const std::string& host, uint16_t port, const std::string& token,
                                            reconnect_options ro) {
  if (!rt.options().network.enabled)
    return error(ec::invalid_argument, "connect: the runtime was made without runtime_options::network.enabled");
  auto p = std::make_unique<connection::impl>();
  p->sys = &rt.system();
  p->tls = rt.options().network.tls;
  p->host = host;
  p->port = port;
  p->token = token;
  p->ro = ro;
  p->anchor = p->sys->spawn(anchor_behavior, 0);
  auto s = p->open_session();
  if (!s) return s.err();
  p->session = *s;
  return std::make_shared<connection>(std::move(p));
}

}  // namespace dosql::remote

namespace dosql {
result<std::shared_ptr<remote::connection>> runtime::connect(const std::string& host, uint16_t port,
                                                             const std::string& token) {
  return remote::connect(*this, host, port, token);
}
}  // namespace dosql
