#include "projector.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <map>

#include "order.hpp"

namespace es {

namespace cdc = dosql::cdc;
using dosql::reliability::offset_store;

namespace {

std::string projection_schema(const projection_tables& t) {
  return "CREATE TABLE IF NOT EXISTS " + t.order_summary +
         " (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, total_amount REAL NOT NULL, "
         "item_count INTEGER NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
         "CREATE TABLE IF NOT EXISTS " +
         t.customer_orders +
         " (customer_id TEXT NOT NULL, order_id TEXT NOT NULL, total_amount REAL NOT NULL, status TEXT NOT NULL, "
         "PRIMARY KEY (customer_id, order_id));";
}

std::string drop_sql(const projection_tables& t) {
  return "DROP TABLE IF EXISTS " + t.order_summary + "; DROP TABLE IF EXISTS " + t.customer_orders + ";";
}

const int64_t* integer(const dosql::value& v) { return std::get_if<int64_t>(&v); }

}  // namespace

error initialize_projections(dosql::database& db) {
  auto r = db.exec(projection_schema({}) +
                   "CREATE TABLE IF NOT EXISTS projection_state (name TEXT PRIMARY KEY, lsn INTEGER NOT NULL, "
                   "updated_at INTEGER NOT NULL);");
  if (!r) return error::of(r.err());
  return {};
}

error project_event(dosql::transaction& tx, const projection_tables& t, const stored_event& e) {
  if (e.aggregate_type != order_type) return {};
  const std::string& id = e.aggregate_id;
  auto fail = [&](const std::string& why) {
    return error(errc::invalid_input, "projection: event " + e.event_type + " of order " + id + " (version " +
                                          std::to_string(e.version) + "): " + why);
  };
  // Every UPDATE must hit exactly the order's row: anything else means the projection and
  // the events disagree, which exactly-once must never let happen.
  auto one = [&](const dosql::result<dosql::exec_result>& r, const std::string& table) -> error {
    if (!r) return error::of(r.err());
    if (r->changes != 1) return fail("the order has no row in " + table);
    return {};
  };
  auto set_status = [&](const char* status) -> error {
    if (auto err = one(tx.exec("UPDATE " + t.customer_orders + " SET status = ? WHERE customer_id = (SELECT customer_id FROM " +
                                   t.order_summary + " WHERE order_id = ?) AND order_id = ?",
                               {std::string(status), id, id}),
                       t.customer_orders))
      return err;
    return one(tx.exec("UPDATE " + t.order_summary + " SET status = ?, updated_at = ? WHERE order_id = ?",
                       {std::string(status), e.timestamp, id}),
               t.order_summary);
  };
  const json& p = e.payload;
  try {
    if (e.event_type == "OrderCreated") {
      double total = 0;
      for (const auto& i : p.at("items")) total += i.at("price").get<double>() * static_cast<double>(i.at("quantity").get<int64_t>());
      std::string customer = p.at("customerId").get<std::string>();
      auto r = tx.exec("INSERT INTO " + t.order_summary +
                           " (order_id, customer_id, total_amount, item_count, status, created_at, updated_at) "
                           "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                       {id, customer, total, static_cast<int64_t>(p.at("items").size()), e.timestamp, e.timestamp});
      if (!r) return error::of(r.err());
      r = tx.exec("INSERT INTO " + t.customer_orders + " (customer_id, order_id, total_amount, status) VALUES (?, ?, ?, 'pending')",
                  {customer, id, total});
      if (!r) return error::of(r.err());
      return {};
    }
    if (e.event_type == "OrderItemAdded") {
      double amount = p.at("price").get<double>() * static_cast<double>(p.at("quantity").get<int64_t>());
      if (auto err = one(tx.exec("UPDATE " + t.customer_orders + " SET total_amount = total_amount + ? WHERE customer_id = (SELECT customer_id FROM " +
                                     t.order_summary + " WHERE order_id = ?) AND order_id = ?",
                                 {amount, id, id}),
                         t.customer_orders))
        return err;
      return one(tx.exec("UPDATE " + t.order_summary +
                             " SET total_amount = total_amount + ?, item_count = item_count + 1, updated_at = ? WHERE order_id = ?",
                         {amount, e.timestamp, id}),
                 t.order_summary);
    }
    if (e.event_type == "OrderConfirmed") return set_status("confirmed");
    if (e.event_type == "OrderShipped") return set_status("shipped");
    if (e.event_type == "OrderCancelled") return set_status("cancelled");
  } catch (const json::exception& ex) {
    return fail(std::string("malformed payload: ") + ex.what());
  }
  return fail("unknown event type");
}

// ---- the offset store -----------------------------------------------------------------------

namespace {
thread_local dosql::transaction* current_unit = nullptr;
}

dosql::transaction& dosql_offset_store::unit_transaction() {
  if (!current_unit) throw std::logic_error("dosql_offset_store::unit_transaction() outside a unit");
  return *current_unit;
}

dosql::result<uint64_t> dosql_offset_store::last_applied(const std::string& source) const {
  auto q = db_->query("SELECT lsn FROM projection_state WHERE name = ?", {source});
  if (!q) return q.err();
  if (q->rows.empty() || !integer(q->rows[0][0])) return uint64_t{0};
  return static_cast<uint64_t>(*integer(q->rows[0][0]));
}

dosql::error dosql_offset_store::commit(const std::string& source, uint64_t lsn, const unit_body& body) {
  if (current_unit) return dosql::error(dosql::ec::invalid_argument, "offset store: a unit is already running on this thread");
  auto tx = db_->begin();
  if (!tx) return tx.err();
  auto q = tx->query("SELECT lsn FROM projection_state WHERE name = ?", {source});
  if (!q) return q.err();
  uint64_t last = q->rows.empty() || !integer(q->rows[0][0]) ? 0 : static_cast<uint64_t>(*integer(q->rows[0][0]));
  struct reset {
    ~reset() { current_unit = nullptr; }
  } guard;
  current_unit = &*tx;
  auto act = body(last);  // an exception leaves through the guard; tx rolls back
  current_unit = nullptr;
  if (!act) return act.err();
  if (*act == offset_store::unit_action::skip) return tx->rollback();
  auto w = tx->exec("INSERT INTO projection_state (name, lsn, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                    "lsn = max(lsn, excluded.lsn), updated_at = excluded.updated_at",
                    {source, static_cast<int64_t>(lsn), dosql::now_ms()});
  if (!w) return w.err();
  auto c = tx->commit();
  if (!c) return c.err();
  return {};
}

std::mutex& projection_lock(const dosql::database& db) {
  static std::mutex registry_mu;
  static std::map<const dosql::database*, std::unique_ptr<std::mutex>> locks;  // a few per process, kept
  std::lock_guard<std::mutex> g(registry_mu);
  auto& m = locks[&db];
  if (!m) m = std::make_unique<std::mutex>();
  return *m;
}

// ---- comparisons ----------------------------------------------------------------------------

result<std::vector<std::vector<dosql::value>>> dump_table(dosql::database& db, const std::string& table) {
  std::string order = table.rfind("customer_orders", 0) == 0 ? "customer_id, order_id" : "order_id";
  auto q = db.query("SELECT * FROM " + table + " ORDER BY " + order);
  if (!q) return error::of(q.err());
  return std::move(q->rows);
}

// ---- rebuild --------------------------------------------------------------------------------

namespace {

/// Replays the events after *lsn (up to the tail present now) into `t`, a transaction per
/// 500 events; *lsn becomes the last event's LSN.
error replay_into(const std::shared_ptr<dosql::database>& db, const projection_tables& t, uint64_t* lsn, uint64_t* count) {
  auto store = event_store::open(db);
  if (!store) return store.err();
  auto sub = (*store)->subscribe_to_events(*lsn, {order_type}, /*stop_at_tail=*/true);
  if (!sub) return sub.err();
  for (;;) {
    auto tx = db->begin();
    if (!tx) return error::of(tx.err());
    int n = 0;
    uint64_t last = *lsn;
    for (; n < 500; ++n) {
      auto ev = (*sub)->next();
      if (!ev) break;
      if (auto e = project_event(*tx, t, ev->event)) return e;
      last = ev->lsn;
    }
    if (n > 0) {
      auto c = tx->commit();
      if (!c) return error::of(c.err());
      *lsn = last;
      *count += static_cast<uint64_t>(n);
    }
    if (n < 500) break;
  }
  if ((*sub)->err()) return (*sub)->err();
  return {};
}

result<int64_t> count_rows(dosql::database& db, const std::string& table) {
  auto q = db.query("SELECT count(*) FROM " + table);
  if (!q) return error::of(q.err());
  return *integer(q->rows.at(0).at(0));
}

}  // namespace

result<rebuild_report> rebuild(const std::shared_ptr<dosql::database>& db, uint64_t from_lsn) {
  if (auto e = initialize_projections(*db)) return e;
  auto fresh = projection_tables::with_suffix("__rebuild");
  // A rebuild cut by a crash left its fresh tables: they start over.
  if (auto r = db->exec(drop_sql(fresh) + projection_schema(fresh)); !r) return error::of(r.err());
  rebuild_report rep;
  rep.lsn = from_lsn;
  dosql_offset_store offsets(db);
  const projection_tables live;
  // The bulk of the history is replayed beside the live projector; the last stretch and the
  // swap hold the projection lock, so the live projector (in this process) cannot move ahead
  // of what was replayed in between. (The live position is checked inside the swap anyway.)
  if (auto e = replay_into(db, fresh, &rep.lsn, &rep.events)) return e;
  std::lock_guard<std::mutex> pause(projection_lock(*db));
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (auto e = replay_into(db, fresh, &rep.lsn, &rep.events)) return e;
    bool behind = false;
    auto e = offsets.commit(projection_name, rep.lsn, [&](uint64_t live_lsn) -> dosql::result<offset_store::unit_action> {
      if (live_lsn > rep.lsn) {
        behind = true;
        return offset_store::unit_action::skip;
      }
      auto& tx = dosql_offset_store::unit_transaction();
      for (const std::string& sql : {"DROP TABLE IF EXISTS " + live.order_summary, "DROP TABLE IF EXISTS " + live.customer_orders,
                                     "ALTER TABLE " + fresh.order_summary + " RENAME TO " + live.order_summary,
                                     "ALTER TABLE " + fresh.customer_orders + " RENAME TO " + live.customer_orders})
        if (auto r = tx.exec(sql); !r) return r.err();
      return offset_store::unit_action::commit;
    });
    if (e) return error::of(e);
    if (behind) continue;
    auto o = count_rows(*db, live.order_summary);
    if (!o) return o.err();
    auto c = count_rows(*db, live.customer_orders);
    if (!c) return c.err();
    rep.orders = *o;
    rep.customer_orders = *c;
    return rep;
  }
  return error(errc::storage, "rebuild: the live projection is ahead of the events replayed (another process?); try again");
}

result<verify_report> verify(const std::shared_ptr<dosql::database>& db) {
  if (auto e = initialize_projections(*db)) return e;
  auto scratch = projection_tables::with_suffix("__verify");
  if (auto r = db->exec(drop_sql(scratch) + projection_schema(scratch)); !r) return error::of(r.err());
  verify_report rep;
  uint64_t events = 0;
  auto e = replay_into(db, scratch, &rep.lsn, &events);
  auto drop = [&] { (void)db->exec(drop_sql(scratch)); };
  if (e) {
    drop();
    return e;
  }
  auto live_lsn = dosql_offset_store(db).last_applied(projection_name);
  if (!live_lsn) {
    drop();
    return error::of(live_lsn.err());
  }
  // The live position is the last event it applied; an event-free history leaves it at 0.
  if (*live_lsn != rep.lsn) {
    drop();
    return error(errc::invalid_input, "verify: the live projection is at lsn " + std::to_string(*live_lsn) + ", the events end at lsn " +
                                          std::to_string(rep.lsn) + " (let the projector catch up; stop writers)");
  }
  const projection_tables live;
  rep.equal = true;
  for (auto [a, b] : {std::pair{live.order_summary, scratch.order_summary}, std::pair{live.customer_orders, scratch.customer_orders}}) {
    auto x = dump_table(*db, a);
    auto y = dump_table(*db, b);
    if (!x || !y) {
      drop();
      return !x ? x.err() : y.err();
    }
    (a == live.order_summary ? rep.orders : rep.customer_orders) = static_cast<int64_t>(x->size());
    if (*x == *y) continue;
    rep.equal = false;
    std::string diff = a + ": " + std::to_string(x->size()) + " live rows, " + std::to_string(y->size()) + " rebuilt";
    for (size_t i = 0; i < std::min(x->size(), y->size()); ++i) {
      if ((*x)[i] == (*y)[i]) continue;
      auto show = [](const std::vector<dosql::value>& r) {
        std::string s;
        for (const auto& v : r) s += (s.empty() ? "" : ", ") + dosql::to_string(v);
        return "(" + s + ")";
      };
      diff += "; first difference at row " + std::to_string(i) + ": live " + show((*x)[i]) + ", rebuilt " + show((*y)[i]);
      break;
    }
    if (rep.difference.empty()) rep.difference = diff;
  }
  drop();
  return rep;
}

// ---- the projector actor --------------------------------------------------------------------

struct projector::core {
  core(std::shared_ptr<dosql::database> d, std::string s) : db(std::move(d)), offsets(db), slot(std::move(s)) {}
  std::shared_ptr<dosql::database> db;
  dosql_offset_store offsets;
  std::string slot;
  cdc::slot_manager* slots = nullptr;  // owned by the projector, which stops the actor first
  const projection_tables live;
  std::function<void(uint64_t)> on_applied;
  /// Slot acknowledgements (an fsync'd file replace each) at most this often; the position in
  /// projection_state is what exactly-once rests on, the slot only pins the WAL and shows lag.
  static constexpr std::chrono::milliseconds ack_interval{100};

  std::mutex mu;
  std::condition_variable cv;
  uint64_t slot_acked = 0;           // guarded by mu
  uint64_t want_ack = 0;             // guarded by mu: applied (or settled), not yet acknowledged
  std::chrono::steady_clock::time_point last_ack{};  // guarded by mu
  std::optional<error> failed;       // guarded by mu
  bool ended = false;                // guarded by mu

  // Runs on the actor's thread: one transaction for every batch gathered (see the actor).
  error apply(const std::vector<positioned_event>& evs, uint64_t last_lsn) {
    std::lock_guard<std::mutex> g(projection_lock(*db));
    error failure;
    auto e = offsets.commit(projection_name, last_lsn, [&](uint64_t applied) -> dosql::result<offset_store::unit_action> {
      if (last_lsn <= applied) return offset_store::unit_action::skip;  // all of it is in (a redelivery)
      auto& tx = dosql_offset_store::unit_transaction();
      for (const auto& pe : evs) {
        if (pe.lsn <= applied) continue;  // applied before the crash (or by a rebuild's swap)
        if (auto err = project_event(tx, live, pe.event)) {
          failure = err;
          return dosql::error(dosql::ec::invalid_argument, err.to_string());
        }
      }
      return offset_store::unit_action::commit;
    });
    if (e) return failure ? failure : error::of(e);
    settled(last_lsn);
    if (on_applied) on_applied(last_lsn);
    return {};
  }

  // Everything up to lsn is applied (or another table's): the slot may move there.
  void settled(uint64_t lsn) {
    std::lock_guard<std::mutex> g(mu);
    want_ack = std::max(want_ack, lsn);
  }

  // Acknowledges the slot up to what is settled, unless one went out less than ack_interval
  // ago (then *deferred is set; `force` ignores the interval). Never ahead of the position.
  error ack(bool force, bool* deferred) {
    uint64_t lsn;
    {
      std::lock_guard<std::mutex> g(mu);
      *deferred = false;
      if (want_ack <= slot_acked) return {};
      if (!force && std::chrono::steady_clock::now() - last_ack < ack_interval) {
        *deferred = true;
        return {};
      }
      lsn = want_ack;
    }
    if (auto e = slots->update_slot(slot, lsn)) return error::of(e);
    {
      std::lock_guard<std::mutex> g(mu);
      slot_acked = std::max(slot_acked, lsn);
      last_ack = std::chrono::steady_clock::now();
    }
    cv.notify_all();
    return {};
  }

  void end(const dosql::error& e) {
    {
      std::lock_guard<std::mutex> g(mu);
      ended = true;
      if (e && !failed) failed = error::of(e);
    }
    cv.notify_all();
  }
};

namespace {

struct projector_state {
  std::vector<dosql::entry_view> views;
  // Batches received and not yet applied: the reader sends a batch per commit it reads, so
  // under load many wait in the mailbox; they are applied together, in one transaction,
  // when the self-sent flush (a heartbeat with lsn 0) comes after them.
  std::vector<positioned_event> events;
  std::vector<std::pair<caf::typed_response_promise<uint64_t>, uint64_t>> acks;
  uint64_t last_lsn = 0;
  bool flush_sent = false;
  bool ack_timer = false;
};

constexpr size_t max_gathered = 8192;

using projector_pointer = cdc::consumer_actor::stateful_pointer<projector_state>;

void fail_all(projector_pointer self, const dosql::error& e, std::shared_ptr<projector::core> core) {
  auto& st = self->state;
  for (auto& [rp, lsn] : st.acks) rp.deliver(cdc::to_caf(e));
  st.acks.clear();
  st.events.clear();
  core->end(e);
  self->quit();
}

// Applies what was gathered and answers every batch it came from.
void flush(projector_pointer self, const std::shared_ptr<projector::core>& core) {
  auto& st = self->state;
  if (st.acks.empty()) return;
  uint64_t first = st.acks.front().second;
  if (auto e = core->apply(st.events, st.last_lsn)) {
    fail_all(self, dosql::error(dosql::ec::subscription_failed, "projector: " + e.to_string()).at(first), core);
    return;
  }
  for (auto& [rp, lsn] : st.acks) rp.deliver(lsn);
  st.acks.clear();
  st.events.clear();
}

void ack_slot(projector_pointer self, const std::shared_ptr<projector::core>& core) {
  bool deferred = false;
  if (auto e = core->ack(false, &deferred)) {
    fail_all(self, dosql::error(dosql::ec::io_error, "projector: acknowledging the slot: " + e.to_string()), core);
    return;
  }
  if (deferred && !self->state.ack_timer) {
    self->state.ack_timer = true;
    self->delayed_send(self, projector::core::ack_interval, cdc::heartbeat_atom::value, uint64_t{0});
  }
}

cdc::consumer_actor::behavior_type projector_actor(projector_pointer self, std::shared_ptr<projector::core> core) {
  self->set_down_handler([=](caf::down_msg&) {  // the reader is gone (an end_atom came first if it could)
    flush(self, core);
    core->end(dosql::error(dosql::ec::closed, "the projector's subscription reader stopped"));
    self->quit();
  });
  return {
      [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
        auto& st = self->state;
        // A batch that does not decode ends the subscription at its LSN; what was gathered
        // before it is still applied.
        size_t before = st.events.size();
        auto refuse = [&](const dosql::error& e) -> caf::result<uint64_t> {
          st.events.resize(before);
          flush(self, core);
          return cdc::to_caf(e);
        };
        if (auto e = cdc::decode_batch(b, st.views)) return refuse(e);
        for (const auto& v : st.views) {
          if (v.op != dosql::op_type::insert || v.table != "events" || !v.has_after) continue;
          auto r = dosql::codec::decode_row(v.after);
          if (!r) return refuse(dosql::error(r.err().code(), r.err().message()).at(v.lsn));
          auto ev = event_from_row(*r);
          if (!ev) return refuse(dosql::error(dosql::ec::decode_error, "lsn " + std::to_string(v.lsn) + ": " + ev.err().message()).at(v.lsn));
          st.events.push_back({v.lsn, std::move(*ev)});
        }
        st.acks.emplace_back(self->make_response_promise<uint64_t>(), b.last_lsn);
        st.last_lsn = b.last_lsn;
        if (st.events.size() >= max_gathered) {
          flush(self, core);
        } else if (!st.flush_sent) {
          st.flush_sent = true;  // queued behind the batches already waiting
          self->send(self, cdc::heartbeat_atom::value, uint64_t{0});
        }
        return caf::delegated<uint64_t>{};
      },
      [=](cdc::end_atom, const cdc::subscription_end& end) {
        flush(self, core);
        core->end(end.to_error());
        self->quit();
      },
      [=](cdc::heartbeat_atom, uint64_t lsn) {
        auto& st = self->state;
        if (lsn == 0) {  // our own: the flush, or the slot acknowledgement's timer
          if (st.flush_sent) {
            st.flush_sent = false;
            flush(self, core);
          } else {
            st.ack_timer = false;
          }
        } else {
          // The reader's: everything up to lsn was applied or is another table's.
          core->settled(lsn);
        }
        ack_slot(self, core);
      },
      [=](cdc::watch_atom, const cdc::reader_control_actor& reader) { self->monitor(reader); },
  };
}

}  // namespace

result<std::unique_ptr<projector>> projector::start(std::shared_ptr<dosql::database> db, projector_options o) {
  if (auto e = initialize_projections(*db)) return e;
  std::unique_ptr<projector> p(new projector);
  p->core_ = std::make_shared<core>(db, o.slot);
  p->slots_ = cdc::create_slot_manager(db);
  p->core_->slots = p->slots_.get();
  p->core_->on_applied = std::move(o.on_applied);
  auto applied = p->core_->offsets.last_applied(projection_name);
  if (!applied) return error::of(applied.err());
  uint64_t from = *applied;
  auto slot = p->slots_->get_slot(o.slot);
  if (slot) {
    from = std::max(from, slot->acked_lsn);
    p->core_->slot_acked = slot->acked_lsn;
  } else if (slot.err().code() == dosql::ec::slot_not_found) {
    cdc::create_slot_options co;
    co.start_lsn = *applied;
    co.filter.tables = {"events"};
    co.filter.operations = {dosql::op_type::insert};
    auto c = p->slots_->create_slot(o.slot, co);
    if (!c) return error::of(c.err());
    p->core_->slot_acked = c->acked_lsn;
  } else {
    return error::of(slot.err());
  }
  if (o.from_lsn) from = *o.from_lsn;
  auto opts = events_stream_options(from, {});
  opts.heartbeats = true;
  opts.max_buffer_size = o.max_buffer_size;
  opts.batch_size = o.batch_size;
  p->actor_ = db->owner().system().spawn<caf::detached>(projector_actor, p->core_);
  auto handle = cdc::create_cdc(db);
  auto sub = cdc::subscribe_actor(handle, p->actor_, std::move(opts));
  if (!sub) {
    caf::anon_send_exit(p->actor_, caf::exit_reason::user_shutdown);
    return error::of(sub.err());
  }
  p->actor_running_ = true;
  caf::anon_send(p->actor_, cdc::watch_atom::value, sub->reader());
  p->sub_ = std::move(*sub);
  return p;
}

projector::~projector() { stop(); }

void projector::stop() {
  sub_.stop();
  if (actor_running_) {
    // The actor may be in the middle of a batch: wait for it to finish before the slot
    // manager and the database it uses go away.
    caf::scoped_actor self{core_->db->owner().system()};
    self->monitor(actor_);
    caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
    self->receive([](const caf::down_msg&) {});
    actor_running_ = false;
    // The slot catches up with what was applied (acknowledgements are throttled).
    bool deferred = false;
    (void)core_->ack(true, &deferred);
  }
}

error projector::wait_caught_up(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lk(core_->mu);
  for (;;) {
    if (core_->failed) return *core_->failed;
    if (core_->ended) return error(errc::storage, "the projector stopped");
    lk.unlock();
    auto st = sub_.status();
    lk.lock();
    if (st.lag_entries == 0 && st.buffered_entries == 0) return {};
    if (std::chrono::steady_clock::now() >= deadline)
      return error(errc::storage, "the projector did not catch up in " + std::to_string(timeout.count()) + " ms (lag " +
                                      std::to_string(st.lag_entries) + " entries)");
    // Woken by each slot acknowledgement; the short bound also covers a lag that ends with
    // entries of other tables (no acknowledgement needed).
    core_->cv.wait_for(lk, std::chrono::milliseconds(20));
  }
}

dosql::cdc::subscription_status projector::status() const { return sub_.status(); }

std::optional<error> projector::failure() const {
  std::lock_guard<std::mutex> g(core_->mu);
  return core_->failed;
}

const std::string& projector::slot() const { return core_->slot; }
dosql::cdc::slot_manager& projector::slots() { return *slots_; }

}  // namespace es
