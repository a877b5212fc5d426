// `dosql slots DIR list|create NAME [--from LSN] [--table T]... [--op O]... [--where T:EXPR]...|ack NAME LSN|drop NAME`:
// replication slots, through the database's slot manager (needs the directory's lock).
#include "cli.hpp"
#include <dosql/slots.hpp>

#include "runtime/reader_setup.hpp"

namespace dosql::cli {

namespace {

std::string state_of(const cdc::slot_info& s) {
  if (s.invalidated) return "invalidated: " + s.invalid_reason;
  return s.stalled ? "stalled" : "ok";
}

}  // namespace

int run_slots(const slots_options& o) {
  runtime rt;
  auto opts = load_database_options(o.dir);
  if (!opts) return fail(opts.err());
  opts->create = o.action == "create";
  auto db = rt.open(o.dir, *opts);
  if (!db) return fail(db.err());
  cdc::slot_config cfg;
  cfg.check_interval = std::chrono::milliseconds(0);
  int rc = 0;
  {
    auto slots = cdc::create_slot_manager(*db, cfg);
    if (o.action == "list") {
      error problem;
      auto all = slots->list_slots(&problem);
      if (problem) rc = fail(problem);  // a damaged slot file: the others are listed, exit 1
      if (o.json) {
        std::string out;
        for (auto& s : all)
          out += "{\"name\":" + json_string(s.name) + ",\"acked_lsn\":" + std::to_string(s.acked_lsn) +
                 ",\"lag_entries\":" + std::to_string(s.lag_entries) + ",\"lag_bytes\":" + std::to_string(s.lag_bytes) +
                 ",\"lag_ms\":" + std::to_string(s.lag_ms) + ",\"last_ack_at\":" + std::to_string(s.last_ack_at) +
                 ",\"state\":" + json_string(state_of(s)) + "}\n";
        write_out(out);
      } else {
        std::vector<std::string> cols{"name", "acked_lsn", "lag_entries", "lag_bytes", "lag_ms", "last_ack", "state"};
        std::vector<std::vector<value>> rows;
        for (auto& s : all)
          rows.push_back({s.name, static_cast<int64_t>(s.acked_lsn), static_cast<int64_t>(s.lag_entries),
                          static_cast<int64_t>(s.lag_bytes), s.lag_ms, iso_time(s.last_ack_at), state_of(s)});
        write_out(render_table(cols, rows));
      }
    } else if (o.action == "create") {
      cdc::create_slot_options co;
      if (o.from) co.start_lsn = *o.from;
      co.filter.tables = o.tables;
      co.filter.operations = o.ops;
      co.filter.where = o.where;
      if (auto we = cdc::check_where(**db, o.where)) {
        (void)fail(error(we.code(), "--where: " + we.message()));
        rc = 2;  // a usage error, as for tail --where
      } else if (auto s = slots->create_slot(o.name, co); !s) {
        rc = fail(s.err());
      } else {
        write_out("created slot " + s->name + " at lsn " + std::to_string(s->acked_lsn) + "\n");
      }
    } else if (o.action == "ack") {
      if (auto e = slots->update_slot(o.name, o.lsn)) rc = fail(e);
      else write_out("slot " + o.name + " acknowledged up to lsn " + std::to_string(o.lsn) + "\n");
    } else if (o.action == "drop") {
      if (auto e = slots->delete_slot(o.name)) rc = fail(e);
      else write_out("dropped slot " + o.name + "\n");
    }
  }
  if (auto e = (*db)->close(); e && rc == 0) rc = fail(e);
  return rc;
}

}  // namespace dosql::cli
