// The published side of remote subscribers (<dosql/remote.hpp>): the gate (token check), one
// session per authenticated client anchor, and per remote subscription the ordinary
// subscription reader (actors/subscription_reader.hpp) whose consumer is the client's actor
// behind CAF's middleman: the reader's request/ack window is the credit window over the wire.
#include <dosql/remote.hpp>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <set>

#include "actors/errors.hpp"
#include "runtime/reader_setup.hpp"
#include "runtime/remote_protocol.hpp"

namespace dosql::remote {

// ---- set-up shared by both sides ----------------------------------------------------------

void configure_network(caf::actor_system_config& cfg, const runtime_options::network_options& opts) {
  cfg.load<caf::io::middleman>();
  if (opts.tls) {
    cfg.load<caf::openssl::manager>();
    cfg.openssl_certificate = opts.certificate;
    cfg.openssl_key = opts.key;
    cfg.openssl_cafile = opts.cafile;
    cfg.openssl_passphrase = opts.passphrase;
  }
  cfg.set("middleman.heartbeat-interval", caf::timespan{opts.heartbeat});
  cfg.set("middleman.connection-timeout", caf::timespan{opts.connection_timeout});
  cfg.add_message_type<wire_subscribe>("dosql.wire_subscribe");
  cfg.add_message_type<sub_reply>("dosql.sub_reply");
  cfg.add_message_type<sub_lag>("dosql.sub_lag");
  cfg.add_message_type<session_actor>("dosql.session_actor");
  cfg.add_message_type<gate_actor>("dosql.gate_actor");
  cfg.add_message_type<cdc::consumer_actor>("dosql.consumer_actor");
}

result<wire_subscribe> to_wire(const cdc::subscribe_options& o) {
  if (!o.row_filters.empty())
    return error(ec::invalid_argument,
                 "row_filters (C++ functions) cannot travel to a remote service; use `where` (a SQL expression)");
  if (o.filter.predicate)
    return error(ec::invalid_argument, "filter.predicate (a C++ function) cannot travel to a remote service");
  wire_subscribe w;
  w.from_lsn = o.from_lsn;
  w.from_oldest = o.from_oldest;
  w.has_from_time = o.from_time.has_value();
  w.from_time = o.from_time.value_or(0);
  w.filter.tables = o.filter.tables;
  w.filter.operations = o.filter.operations;
  w.filter.txn_ids = o.filter.txn_ids;
  w.filter.columns = o.columns;
  w.filter.where = o.where;
  w.include_transaction_control = o.include_transaction_control;
  w.include_uncommitted = o.include_uncommitted;
  w.max_buffer_size = o.max_buffer_size;
  w.batch_size = o.batch_size;
  w.stop_at_tail = o.stop_at_tail;
  w.on_overflow = static_cast<uint8_t>(o.on_overflow);
  w.heartbeats = o.heartbeats;
  return w;
}

cdc::subscribe_options from_wire(const wire_subscribe& w) {
  cdc::subscribe_options o;
  o.from_lsn = w.from_lsn;
  o.from_oldest = w.from_oldest;
  if (w.has_from_time) o.from_time = w.from_time;
  o.filter = cdc::to_filter(w.filter);
  o.columns = w.filter.columns;
  o.where = w.filter.where;
  o.include_transaction_control = w.include_transaction_control;
  o.include_uncommitted = w.include_uncommitted;
  o.max_buffer_size = std::min(w.max_buffer_size, max_remote_window);
  o.batch_size = w.batch_size;
  o.stop_at_tail = w.stop_at_tail;
  o.on_overflow = w.on_overflow == static_cast<uint8_t>(cdc::overflow_policy::fail) ? cdc::overflow_policy::fail
                                                                                   : cdc::overflow_policy::wait;
  o.heartbeats = w.heartbeats;
  return o;
}

std::string_view to_string(link_state s) noexcept {
  switch (s) {
    case link_state::connecting: return "connecting";
    case link_state::streaming: return "streaming";
    case link_state::reconnecting: return "reconnecting";
    case link_state::ended: return "ended";
  }
  return "unknown";
}

namespace {

// ---- the service's shared bookkeeping -------------------------------------------------------

struct service_shared {
  std::atomic<uint64_t> sessions{0};
  std::atomic<uint64_t> refused{0};
  std::mutex mu;
  std::set<caf::actor_addr> live;  // sessions, for stop()
};

// ---- session --------------------------------------------------------------------------------

struct session_state {
  std::shared_ptr<database> db;
  actors::slot_manager_actor slots;
  caf::actor anchor;
  caf::node_id client;
  struct sub {
    actors::subscription_reader_actor reader;
    cdc::subscribe_options selection;
  };
  std::map<uint64_t, sub> subs;
  uint64_t next = 1;
  static inline const char* name = "dosql.remote_session";
};

caf::error denied() {
  return actors::to_caf(error(ec::invalid_argument, "not authenticated for this session"));
}

session_actor::behavior_type session(session_actor::stateful_pointer<session_state> self, std::shared_ptr<database> db,
                                     actors::slot_manager_actor slots, caf::actor anchor,
                                     std::shared_ptr<service_shared> shared) {
  auto& st = self->state;
  st.db = std::move(db);
  st.slots = std::move(slots);
  st.anchor = anchor;
  st.client = anchor.node();
  self->monitor(anchor);
  {
    std::lock_guard<std::mutex> g(shared->mu);
    shared->live.insert(self->address());
  }
  shared->sessions.fetch_add(1);
  self->attach_functor([shared, addr = self->address()] {
    {
      std::lock_guard<std::mutex> g(shared->mu);
      shared->live.erase(addr);
    }
    shared->sessions.fetch_sub(1);
  });
  auto stop_all = [self] {
    for (auto& [id, s] : self->state.subs) caf::anon_send_exit(s.reader, caf::exit_reason::user_shutdown);
    self->state.subs.clear();
  };
  self->set_exit_handler([self, stop_all](caf::exit_msg& m) {
    stop_all();
    self->quit(m.reason);
  });
  self->set_down_handler([self, stop_all](caf::down_msg& dm) {
    if (dm.source == self->state.anchor.address()) {  // the client went away (or its link did)
      stop_all();
      self->quit();
      return;
    }
    for (auto it = self->state.subs.begin(); it != self->state.subs.end(); ++it)
      if (it->second.reader.address() == dm.source) {
        self->state.subs.erase(it);
        break;
      }
  });
  // Only the authenticated client's node (and this process) may talk to a session.
  auto authorized = [self] {
    auto& s = self->current_sender();
    return s && (s->node() == self->state.client || s->node() == self->node());
  };
  // Starts a reader for `consumer`.
  auto start = [self](cdc::subscribe_options opts, cdc::consumer_actor consumer, uint64_t slot_acked) -> result<sub_reply> {
    auto& st = self->state;
    if (st.subs.size() >= max_subscriptions_per_session)
      return error(ec::invalid_argument, "a session may hold at most " + std::to_string(max_subscriptions_per_session) +
                                             " subscriptions");
    cdc::cdc_handle h(st.db);
    auto cfg = cdc::make_reader_config(h, std::move(opts));
    if (!cfg) return cfg.err();
    (*cfg)->consumer = std::move(consumer);
    auto selection = (*cfg)->opts;
    uint64_t start_after = (*cfg)->start_lsn - 1;
    auto reader = actors::spawn_subscription_reader(self->system(), *cfg);
    self->monitor(reader);
    uint64_t id = st.next++;
    st.subs.emplace(id, session_state::sub{reader, std::move(selection)});
    return sub_reply{id, reader.id(), start_after, slot_acked};
  };
  auto reply = [](result<sub_reply> r) -> caf::result<sub_reply> {
    if (!r) return actors::to_caf(r.err());
    return *r;
  };
  return {
      [=](r_sub_atom, wire_subscribe& w, cdc::consumer_actor& consumer) -> caf::result<sub_reply> {
        if (!authorized()) return denied();
        if (!consumer) return actors::to_caf(error(ec::invalid_argument, "subscribe: no consumer actor"));
        if (w.slot.empty()) return reply(start(from_wire(w), consumer, 0));
        auto rp = self->make_response_promise<sub_reply>();
        self->request(self->state.slots, std::chrono::minutes(1), caf::get_atom::value, w.slot)
            .then(
                [=](cdc::slot_info& info) mutable {
                  auto o = cdc::slot_subscribe_options(info, from_wire(w));
                  if (!o) {
                    rp.deliver(actors::to_caf(o.err()));
                    return;
                  }
                  auto r = start(std::move(*o), consumer, info.acked_lsn);
                  if (!r)
                    rp.deliver(actors::to_caf(r.err()));
                  else
                    rp.deliver(*r);
                },
                [=](caf::error& e) mutable { rp.deliver(e); });
        return rp;
      },
      [=](r_stop_atom, uint64_t id) {
        if (!authorized()) return;
        auto it = self->state.subs.find(id);
        if (it == self->state.subs.end()) return;
        caf::anon_send_exit(it->second.reader, caf::exit_reason::user_shutdown);
        self->state.subs.erase(it);
      },
      [=](r_pause_atom, uint64_t id) {
        if (!authorized()) return;
        if (auto it = self->state.subs.find(id); it != self->state.subs.end())
          caf::anon_send(it->second.reader, actors::pause_atom::value);
      },
      [=](r_resume_atom, uint64_t id) {
        if (!authorized()) return;
        if (auto it = self->state.subs.find(id); it != self->state.subs.end())
          caf::anon_send(it->second.reader, actors::resume_atom::value);
      },
      [=](r_status_atom, uint64_t id, uint64_t current) -> caf::result<sub_lag> {
        if (!authorized()) return denied();
        auto it = self->state.subs.find(id);
        if (it == self->state.subs.end())
          return actors::to_caf(error(ec::subscription_failed, "no subscription " + std::to_string(id) + " in this session"));
        cdc::subscription_status s;
        s.current_lsn = current;
        cdc::fill_lag(*self->state.db, it->second.selection, s);
        return sub_lag{s.lag_entries, s.lag_ms, self->state.db->durable_lsn()};
      },
      [=](r_durable_atom) -> caf::result<uint64_t> {
        if (!authorized()) return denied();
        return self->state.db->durable_lsn();
      },
      [=](actors::slot_create_atom, std::string& name, uint64_t start,
          cdc::slot_filter& filter) -> caf::result<cdc::slot_info> {
        if (!authorized()) return denied();
        if (auto e = cdc::check_where(*self->state.db, filter.where))
          return actors::to_caf(error(e.code(), "slot '" + name + "' filter: " + e.message()));
        if (start == UINT64_MAX) start = self->state.db->durable_lsn();
        return self->delegate(self->state.slots, actors::slot_create_atom::value, std::move(name), start,
                              std::move(filter));
      },
      [=](caf::get_atom, std::string& name) -> caf::result<cdc::slot_info> {
        if (!authorized()) return denied();
        return self->delegate(self->state.slots, caf::get_atom::value, std::move(name));
      },
      [=](actors::slot_list_atom) -> caf::result<actors::slot_listing> {
        if (!authorized()) return denied();
        return self->delegate(self->state.slots, actors::slot_list_atom::value);
      },
      [=](actors::slot_ack_atom, std::string& name, uint64_t lsn) -> caf::result<cdc::slot_info> {
        if (!authorized()) return denied();
        return self->delegate(self->state.slots, actors::slot_ack_atom::value, std::move(name), lsn);
      },
      [=](actors::slot_drop_atom, std::string& name) -> caf::result<void> {
        if (!authorized()) return denied();
        return self->delegate(self->state.slots, actors::slot_drop_atom::value, std::move(name));
      },
  };
}

// ---- gate -----------------------------------------------------------------------------------

struct gate_state {
  static inline const char* name = "dosql.remote_gate";
};

gate_actor::behavior_type gate(gate_actor::stateful_pointer<gate_state> self, std::shared_ptr<database> db,
                               actors::slot_manager_actor slots, std::string token, uint32_t max_sessions,
                               std::shared_ptr<service_shared> shared) {
  return {
      [=](r_hello_atom, uint32_t version, const std::string& given, caf::actor anchor) -> caf::result<session_actor> {
        auto& sender = self->current_sender();
        std::string who = sender ? to_string(sender->node()) : std::string("an unknown node");
        auto refuse = [&](const std::string& why) -> caf::result<session_actor> {
          shared->refused.fetch_add(1);
          spdlog::warn("remote: refused a connection from {}: {}", who, why);
          return actors::to_caf(error(ec::invalid_argument, why));
        };
        if (version != protocol_version)
          return refuse("protocol version " + std::to_string(version) + " is not supported (this server speaks " +
                        std::to_string(protocol_version) + ")");
        if (given.size() != token.size() || CRYPTO_memcmp(given.data(), token.data(), token.size()) != 0)
          return refuse("authentication failed: wrong token");
        if (!anchor || !sender || anchor.node() != sender->node())
          return refuse("the hello's anchor actor is not on the sending node");
        if (shared->sessions.load() >= max_sessions) {
          shared->refused.fetch_add(1);
          spdlog::warn("remote: refused a connection from {}: {} sessions are open (publish_options::max_sessions)", who,
                       max_sessions);
          return actors::to_caf(error(ec::busy, "the server has " + std::to_string(max_sessions) +
                                                    " sessions open; try again later"));
        }
        return self->spawn(session, db, slots, anchor, shared);
      },
  };
}

}  // namespace

// ---- service --------------------------------------------------------------------------------

struct service::impl {
  caf::actor_system* sys = nullptr;
  std::shared_ptr<database> db;
  std::shared_ptr<cdc::slot_manager> slots;
  gate_actor gate;
  uint16_t port = 0;
  bool tls = false;
  std::shared_ptr<service_shared> shared;
  bool stopped = false;
};

service::service(std::unique_ptr<impl> p) : p_(std::move(p)) {}
service::~service() { stop(); }
uint16_t service::port() const noexcept { return p_->port; }
uint64_t service::sessions() const { return p_->shared->sessions.load(); }
uint64_t service::refused() const { return p_->shared->refused.load(); }

void service::stop() {
  if (!p_ || p_->stopped) return;
  p_->stopped = true;
  {
    // Closes the port (the openssl module's middleman actor for a TLS port).
    caf::scoped_actor self{*p_->sys};
    auto mm = p_->tls ? p_->sys->openssl_manager().actor_handle() : p_->sys->middleman().actor_handle();
    self->request(mm, std::chrono::seconds(5), caf::unpublish_atom::value, p_->gate.address(), p_->port)
        .receive([] {}, [](caf::error&) {});
  }
  std::vector<caf::actor_addr> live;
  {
    std::lock_guard<std::mutex> g(p_->shared->mu);
    live.assign(p_->shared->live.begin(), p_->shared->live.end());
  }
  caf::scoped_actor self{*p_->sys};
  for (auto& a : live) {
    if (auto h = caf::actor_cast<caf::actor>(a)) {
      self->monitor(h);
      caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
      self->receive([](caf::down_msg&) {}, caf::after(std::chrono::seconds(5)) >> [] {});
    }
  }
  caf::anon_send_exit(p_->gate, caf::exit_reason::user_shutdown);
}

result<std::unique_ptr<service>> publish(std::shared_ptr<database> db, publish_options opts) {
  if (!db) return error(ec::invalid_argument, "publish: no database");
  auto& rt = db->owner();
  if (!rt.options().network.enabled)
    return error(ec::invalid_argument, "publish: the runtime was made without runtime_options::network.enabled");
  if (opts.token.size() < 8) return error(ec::invalid_argument, "publish: the token must have at least 8 characters");
  auto p = std::make_unique<service::impl>();
  p->sys = &rt.system();
  p->db = db;
  p->tls = rt.options().network.tls;
  p->slots = opts.slots ? opts.slots : cdc::create_slot_manager(db);
  p->shared = std::make_shared<service_shared>();
  p->gate = p->sys->spawn(gate, db, cdc::slot_manager_access::actor_of(*p->slots), opts.token, opts.max_sessions, p->shared);
  auto port = p->tls ? caf::openssl::publish(p->gate, opts.port, opts.address.c_str(), true)
                     : p->sys->middleman().publish(p->gate, opts.port, opts.address.c_str(), true);
  if (!port) {
    caf::anon_send_exit(p->gate, caf::exit_reason::user_shutdown);
    return error(ec::io_error, "publish: cannot listen on " + opts.address + ":" + std::to_string(opts.port) + ": " +
                                   p->sys->render(port.error()));
  }
  p->port = *port;
  spdlog::info("remote: CDC service of {} published on {}:{}{}", db->dir(), opts.address, p->port,
               p->tls ? " (TLS)" : "");
  return std::make_unique<service>(std::move(p));
}

}  // namespace dosql::remote
