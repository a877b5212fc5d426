#include <dosql/slots.hpp>

#include <algorithm>
#include <caf/all.hpp>

#include <thread>

#include "actors/errors.hpp"
#include "actors/slot_manager.hpp"
#include "wal/sqlite_util.hpp"
#include "runtime/reader_setup.hpp"

namespace dosql::cdc {

struct slot_manager::impl {
  std::shared_ptr<database> db;
  actors::slot_manager_actor actor;

  // One request, waited for; the manager's error (a caf::error in the dosql category) comes
  // back as the dosql::error it was.
  template <class T, class... Ts>
  result<T> call(Ts&&... xs) {
    caf::scoped_actor self{db->owner().system()};
    result<T> out = error(ec::io_error, "the slot manager did not answer");
    self->request(actor, std::chrono::minutes(1), std::forward<Ts>(xs)...)
        .receive([&](T& r) { out = std::move(r); }, [&](caf::error& e) { out = actors::from_caf(e, "the slot manager"); });
    return out;
  }
  template <class... Ts>
  error call_void(Ts&&... xs) {
    caf::scoped_actor self{db->owner().system()};
    error out(ec::io_error, "the slot manager did not answer");
    self->request(actor, std::chrono::minutes(1), std::forward<Ts>(xs)...)
        .receive([&] { out = {}; }, [&](caf::error& e) { out = actors::from_caf(e, "the slot manager"); });
    return out;
  }
};

slot_manager::slot_manager(std::shared_ptr<database> db, slot_config cfg) : p_(std::make_unique<impl>()) {
  p_->db = db;
  actors::slot_host host;
  host.dir = db->dir();
  host.wal_dir = db->wal_dir();
  host.durable_lsn = [db] { return db->durable_lsn(); };
  host.active_segment = [db] { return db->wal_active_segment(); };
  host.apply_retention = [db] { return db->apply_retention(); };
  p_->actor = actors::spawn_slot_manager(db->owner().system(), std::move(host), cfg);
}

slot_manager::~slot_manager() {
  caf::scoped_actor self{p_->db->owner().system()};
  self->monitor(p_->actor);
  caf::anon_send_exit(p_->actor, caf::exit_reason::user_shutdown);
  self->receive([](caf::down_msg&) {});
}

result<slot_info> slot_manager::create_slot(const std::string& name, create_slot_options opts, slot_snapshot* snapshot) {
  // The slot's row filters are checked now, not when its consumer first subscribes.
  if (auto e = check_where(*p_->db, opts.filter.where))
    return error(e.code(), "slot '" + name + "' filter: " + e.message());
  if (!opts.snapshot) {
    uint64_t start = opts.start_lsn == UINT64_MAX ? p_->db->durable_lsn() : opts.start_lsn;
    return p_->call<slot_info>(actors::slot_create_atom::value, name, start, opts.filter);
  }
  // Snapshot then stream: a read snapshot shows exactly the transactions up to its LSN
  // (all durable); the slot starts there, and its stream continues with the next
  // transaction: no gap, no overlap. Writers are not blocked while the tables are read.
  auto view = p_->db->snapshot();
  if (!view) return view.err();
  uint64_t lsn = view->lsn();
  slot_snapshot snap;
  snap.lsn = lsn;
  std::vector<std::string> tables = opts.filter.tables;
  if (tables.empty()) {
    auto names = view->query("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                             "AND name NOT LIKE '\\_dosql\\_%' ESCAPE '\\' ORDER BY name");
    if (!names) return names.err();
    for (auto& r : names->rows) tables.push_back(std::get<std::string>(r[0]));
  }
  for (auto& t : tables) {
    auto rows = view->query("SELECT * FROM " + detail::quote_ident(t));
    if (!rows) return rows.err();
    snap.tables[t] = std::move(*rows);
  }
  auto slot = p_->call<slot_info>(actors::slot_create_atom::value, name, lsn, opts.filter);
  if (!slot) return slot;
  if (snapshot) *snapshot = std::move(snap);
  return slot;
}

result<slot_info> slot_manager::get_slot(const std::string& name) { return p_->call<slot_info>(caf::get_atom::value, name); }

std::vector<slot_info> slot_manager::list_slots(error* problem) {
  auto r = p_->call<actors::slot_listing>(actors::slot_list_atom::value);
  if (!r) {
    if (problem) *problem = r.err();
    return {};
  }
  if (problem) *problem = actors::from_caf(r->problem);
  return std::move(r->slots);
}

error slot_manager::update_slot(const std::string& name, uint64_t lsn) {
  auto r = p_->call<slot_info>(actors::slot_ack_atom::value, name, lsn);
  return r ? error{} : r.err();
}

error slot_manager::delete_slot(const std::string& name) { return p_->call_void(actors::slot_drop_atom::value, name); }

error slot_manager::check() { return p_->call_void(actors::slot_check_atom::value); }

result<subscribe_options> slot_subscribe_options(const slot_info& s, subscribe_options extra) {
  if (s.invalidated) {
    error e(ec::lsn_not_found, "replication slot '" + s.name + "' was invalidated: " + s.invalid_reason +
                                   "; re-create it (with a snapshot) to resume");
    return e;
  }
  extra.from_lsn = std::max(extra.from_lsn, s.acked_lsn);  // past the slot: a consumer that knows more
  extra.heartbeats = true;  // a filtered consumer learns its position past other tables' changes
  extra.filter.tables = s.filter.tables;
  extra.filter.operations = s.filter.operations;
  extra.filter.txn_ids = s.filter.txn_ids;
  for (auto& [t, m] : s.filter.columns) extra.columns.emplace(t, m);
  for (auto& [t, expr] : s.filter.where) {
    auto [it, fresh] = extra.where.emplace(t, expr);
    if (!fresh) it->second = "(" + expr + ") AND (" + it->second + ")";
  }
  return extra;
}

result<std::unique_ptr<subscription>> slot_manager::subscribe_from_slot(const std::string& name, subscribe_options extra) {
  auto s = get_slot(name);
  if (!s) return s.err();
  auto opts = slot_subscribe_options(*s, std::move(extra));
  if (!opts) return opts.err();
  return cdc_handle(p_->db).subscribe(std::move(*opts));
}

actors::slot_manager_actor slot_manager_access::actor_of(slot_manager& m) { return m.p_->actor; }

}  // namespace dosql::cdc
