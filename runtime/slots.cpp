#include <dosql/slots.hpp>

#include <caf/all.hpp>

#include <thread>

#include "actors/errors.hpp"
#include "actors/slot_manager.hpp"
#include "wal/sqlite_util.hpp"
#include "wal/msgpack_sink.hpp"

namespace dosql::cdc {

struct slot_manager::impl {
  std::shared_ptr<database> db;
  caf::actor actor;

  // Sends a request and decodes the [code, message, payload] reply; payload goes to `out`.
  template <class... Ts>
  error call(msgpack::object_handle& out, Ts&&... xs) {
    caf::scoped_actor self{db->owner().system()};
    error err(ec::io_error, "the slot manager did not answer");
    self->request(actor, std::chrono::minutes(1), std::forward<Ts>(xs)...)
        .receive(
            [&](const std::string& r) {
              try {
                out = msgpack::unpack(r.data(), r.size());
                auto& a = out.get().via.array;
                auto code = static_cast<ec>(a.ptr[0].as<uint8_t>());
                err = code == ec::none ? error{} : error(code, a.ptr[1].as<std::string>());
              } catch (const std::exception& e) {
                err = error(ec::decode_error, std::string("slot manager reply: ") + e.what());
              }
            },
            [&](caf::error& e) { err = actors::from_caf(e, "the slot manager"); });
    return err;
  }
  template <class... Ts>
  result<slot_info> call_slot(Ts&&... xs) {
    msgpack::object_handle oh;
    if (auto e = call(oh, std::forward<Ts>(xs)...)) return e;
    slot_info s;
    if (!actors::decode_slot(oh.get().via.array.ptr[2], s)) return error(ec::decode_error, "slot manager reply");
    return s;
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
  std::vector<uint8_t> ops;
  for (auto o : opts.filter.operations) ops.push_back(static_cast<uint8_t>(o));
  if (!opts.snapshot) {
    uint64_t start = opts.start_lsn == UINT64_MAX ? p_->db->durable_lsn() : opts.start_lsn;
    return p_->call_slot(actors::slot_create_atom::value, name, start, opts.filter.tables, ops);
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
  auto slot = p_->call_slot(actors::slot_create_atom::value, name, lsn, opts.filter.tables, ops);
  if (!slot) return slot;
  if (snapshot) *snapshot = std::move(snap);
  return slot;
}

result<slot_info> slot_manager::get_slot(const std::string& name) { return p_->call_slot(caf::get_atom::value, name); }

std::vector<slot_info> slot_manager::list_slots(error* problem) {
  msgpack::object_handle oh;
  std::vector<slot_info> out;
  auto err = p_->call(oh, actors::slot_list_atom::value);
  if (problem) *problem = err;
  if (oh.get().type != msgpack::type::ARRAY || oh.get().via.array.size != 3 ||
      oh.get().via.array.ptr[2].type != msgpack::type::ARRAY)
    return out;
  auto& arr = oh.get().via.array.ptr[2].via.array;
  for (uint32_t i = 0; i < arr.size; ++i) {
    slot_info s;
    if (actors::decode_slot(arr.ptr[i], s)) out.push_back(std::move(s));
  }
  return out;
}

error slot_manager::update_slot(const std::string& name, uint64_t lsn) {
  auto r = p_->call_slot(actors::slot_ack_atom::value, name, lsn);
  return r ? error{} : r.err();
}

error slot_manager::delete_slot(const std::string& name) {
  msgpack::object_handle oh;
  return p_->call(oh, actors::slot_drop_atom::value, name);
}

error slot_manager::check() {
  msgpack::object_handle oh;
  return p_->call(oh, actors::slot_check_atom::value);
}

result<std::unique_ptr<subscription>> slot_manager::subscribe_from_slot(const std::string& name, subscribe_options extra) {
  auto s = get_slot(name);
  if (!s) return s.err();
  if (s->invalidated) {
    error e(ec::lsn_not_found, "replication slot '" + name + "' was invalidated: " + s->invalid_reason +
                                   "; re-create it (with a snapshot) to resume");
    return e;
  }
  extra.from_lsn = s->acked_lsn;
  extra.heartbeats = true;  // a filtered consumer learns its position past other tables' changes
  extra.filter.tables = s->filter.tables;
  extra.filter.operations = s->filter.operations;
  return cdc_handle(p_->db).subscribe(std::move(extra));
}

}  // namespace dosql::cdc
