// Change-event lines of `dosql tail` and `dosql serve`: the guide's structured change event
// (json: cdc::to_json, the one renderer of that shape), PostgreSQL wal2json format-version 2,
// and the Debezium envelope.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include <dosql/cdc.hpp>
#include <dosql/json.hpp>
#include "tools/cli/cli.hpp"

namespace dosql::cli {
namespace {

result<std::optional<row>> image(bool present, std::string_view bytes, const entry_view& e, const char* which) {
  if (!present) return std::optional<row>{};
  auto r = codec::decode_row(bytes);
  if (!r)
    return error(r.err().code(), "lsn " + std::to_string(e.lsn) + " (" + which + " image): " + r.err().message()).at(e.lsn);
  return std::optional<row>(std::move(*r));
}

const char* pg_type(const value& v) {
  switch (v.index()) {
    case 1: return "bigint";
    case 2: return "double precision";
    case 3: return "text";
    case 4: return "bytea";
    default: return "unknown";
  }
}

// wal2json renders bytea as "\\x0102..."; everything else as JSON.
std::string pg_value(const value& v, const json_options& jo) {
  if (auto* b = std::get_if<bytes>(&v)) {
    static const char* hex = "0123456789abcdef";
    std::string s = "\\x";
    for (auto c : *b) {
      s += hex[c >> 4];
      s += hex[c & 15];
    }
    return json_string(s);
  }
  return to_json(v, jo);
}

std::string pg_columns(const row& r, const json_options& jo) {
  std::string s = "[";
  for (size_t i = 0; i < r.size(); ++i) {
    if (i) s += ',';
    s += "{\"name\":" + json_string(r.columns[i]) + ",\"type\":" + json_string(pg_type(r.values[i])) +
         ",\"value\":" + pg_value(r.values[i], jo) + "}";
  }
  return s + "]";
}

// wal2json's xid is a number: txn_<n> gives n; another id stays a string.
std::string xid(std::string_view txn) {
  if (txn.starts_with("txn_") && txn.size() > 4 && txn.substr(4).find_first_not_of("0123456789") == std::string_view::npos)
    return std::string(txn.substr(4));
  return json_string(txn);
}

}  // namespace

result<std::string> render_change(tail_format f, const entry_view& e, uint64_t tx_order, uint64_t tx_table_order,
                                  const json_options& jo) {
  if (f == tail_format::json) {
    if (e.op != op_type::schema && !is_row_change(e.op)) return std::string();
    auto ev = cdc::to_event(e);
    if (!ev) return ev.err();
    return cdc::to_json(*ev, jo);
  }
  if (!is_row_change(e.op)) return std::string();  // (schema changes: only in the json format)
  auto before = image(e.has_before, e.before, e, "before");
  if (!before) return before.err();
  auto after = image(e.has_after, e.after, e, "after");
  if (!after) return after.err();
  const std::string lsn = std::to_string(e.lsn);
  switch (f) {
    case tail_format::json:
      break;
    case tail_format::wal2json: {
      const char* action = e.op == op_type::insert ? "I" : e.op == op_type::update ? "U" : "D";
      std::string s = std::string("{\"action\":\"") + action + "\",\"schema\":\"public\",\"table\":" + json_string(e.table);
      if (*after && e.op != op_type::del) s += ",\"columns\":" + pg_columns(**after, jo);
      // The old row image, whole (REPLICA IDENTITY FULL): the WAL key has no column names.
      if (*before && e.op != op_type::insert) s += ",\"identity\":" + pg_columns(**before, jo);
      return s + "}";
    }
    case tail_format::debezium: {
      const char* op = e.op == op_type::insert ? "c" : e.op == op_type::update ? "u" : "d";
      std::string s = "{\"before\":" + ((*before && e.op != op_type::insert) ? to_json(**before, jo) : std::string("null")) +
                      ",\"after\":" + ((*after && e.op != op_type::del) ? to_json(**after, jo) : std::string("null")) +
                      ",\"source\":{\"connector\":\"dosql\",\"table\":" + json_string(e.table) + ",\"lsn\":" + lsn +
                      ",\"txId\":" + json_string(e.txn_id) + ",\"ts_ms\":" + std::to_string(e.timestamp) +
                      "},\"op\":\"" + op + "\",\"ts_ms\":" + std::to_string(now_ms());
      if (tx_order)
        s += ",\"transaction\":{\"id\":" + json_string(e.txn_id) + ",\"total_order\":" + std::to_string(tx_order) +
             ",\"data_collection_order\":" + std::to_string(tx_table_order) + "}";
      return s + "}";
    }
  }
  return std::string();
}

std::string render_tx(tail_format f, const entry_view& e, uint64_t event_count,
                      const std::vector<std::pair<std::string, uint64_t>>& tables) {
  const bool begin = e.op == op_type::begin;
  switch (f) {
    case tail_format::json: {
      cdc::transaction_event t;
      t.type = begin ? cdc::transaction_event::kind::begin : cdc::transaction_event::kind::commit;
      t.txn_id = e.txn_id;
      t.timestamp = e.timestamp;
      t.hlc = e.hlc;
      t.lsn = e.lsn;
      return cdc::to_json(t);
    }
    case tail_format::wal2json:
      return std::string("{\"action\":\"") + (begin ? "B" : "C") + "\",\"xid\":" + xid(e.txn_id) + "}";
    case tail_format::debezium: {
      std::string s = std::string("{\"status\":\"") + (begin ? "BEGIN" : "END") + "\",\"id\":" + json_string(e.txn_id);
      if (begin) {
        s += ",\"event_count\":null,\"data_collections\":null";
      } else {
        s += ",\"event_count\":" + std::to_string(event_count) + ",\"data_collections\":[";
        for (size_t i = 0; i < tables.size(); ++i)
          s += std::string(i ? "," : "") + "{\"data_collection\":" + json_string(tables[i].first) +
               ",\"event_count\":" + std::to_string(tables[i].second) + "}";
        s += "]";
      }
      return s + ",\"ts_ms\":" + std::to_string(e.timestamp) + "}";
    }
  }
  return std::string();
}

result<std::string> event_renderer::render(const entry_view& e) {
  if (e.op == op_type::begin) {
    printed_ = 0;
    tables_.clear();
    return render_tx(f_, e, 0, {});
  }
  if (e.op == op_type::commit || e.op == op_type::rollback) {
    std::string line = printed_ ? render_tx(f_, e, printed_, tables_) : std::string();
    printed_ = 0;
    tables_.clear();
    return line;
  }
  uint64_t table_order = 0;
  if (tx_) {
    auto it = std::find_if(tables_.begin(), tables_.end(), [&](auto& t) { return t.first == e.table; });
    if (it == tables_.end()) it = tables_.insert(tables_.end(), {std::string(e.table), 0});
    table_order = ++it->second;
  }
  auto line = render_change(f_, e, tx_ ? printed_ + 1 : 0, table_order, jo_);
  if (line && !line->empty()) ++printed_;
  return line;
}

cdc::cursor_options change_cursor_options(uint64_t from, bool tx, const std::vector<std::string>& tables,
                                          const std::vector<op_type>& ops, tail_format f,
                                          const std::map<std::string, std::string>& where) {
  cdc::cursor_options c;
  c.start_lsn = from + 1;
  c.include_transaction_control = tx;
  c.filter.tables = tables;
  c.filter.operations = ops;
  if (f != tail_format::json) c.filter.predicate = [](const entry_view& e) { return e.op != op_type::schema; };
  c.where = where;
  return c;
}

}  // namespace dosql::cli
