#include <dosql/filter.hpp>
#include "wal/sql_predicate.hpp"

#include <nlohmann/json.hpp>

namespace dosql::cdc {

namespace {

using json = nlohmann::json;

json string_array(const std::vector<std::string>& v) { return json(v); }

const char* op_name(op_type o) {
  switch (o) {
    case op_type::insert: return "insert";
    case op_type::update: return "update";
    case op_type::del: return "delete";
    case op_type::schema: return "schema";
    default: return "?";
  }
}

struct parser {
  std::string what;
  error bad(const std::string& field, const std::string& why) const {
    return error(ec::invalid_argument, what + "." + field + ": " + why);
  }
  result<std::vector<std::string>> strings(const json& v, const std::string& field) const {
    if (!v.is_array()) return bad(field, "expected an array of strings");
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) return bad(field + "[" + std::to_string(i) + "]", "expected a string");
      out.push_back(v[i].get<std::string>());
    }
    return out;
  }
};

}  // namespace

bool filter::matches(const entry_view& e) const {
  if (!tables.empty() && std::find(tables.begin(), tables.end(), e.table) == tables.end()) return false;
  if (!operations.empty() && std::find(operations.begin(), operations.end(), e.op) == operations.end()) return false;
  if (!txn_ids.empty() && std::find(txn_ids.begin(), txn_ids.end(), e.txn_id) == txn_ids.end()) return false;
  return !predicate || predicate(e);
}

std::string to_json(const filter_spec& f) {
  json j = json::object();
  if (!f.tables.empty()) j["tables"] = string_array(f.tables);
  if (!f.operations.empty()) {
    json ops = json::array();
    for (auto o : f.operations) ops.push_back(op_name(o));
    j["operations"] = ops;
  }
  if (!f.txn_ids.empty()) j["txnIds"] = string_array(f.txn_ids);
  if (!f.columns.empty()) {
    json c = json::object();
    for (auto& [t, m] : f.columns) {
      json mj = json::object();
      if (!m.include.empty()) mj["include"] = string_array(m.include);
      if (!m.exclude.empty()) mj["exclude"] = string_array(m.exclude);
      c[t] = mj;
    }
    j["columns"] = c;
  }
  if (!f.where.empty()) j["where"] = json(f.where);
  return j.dump();
}

result<filter_spec> parse_filter_spec(std::string_view text, std::string_view what) {
  parser p{std::string(what)};
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    return error(ec::invalid_argument, std::string(what) + ": not JSON: " + e.what());
  }
  if (!j.is_object()) return error(ec::invalid_argument, std::string(what) + ": expected a JSON object");
  filter_spec f;
  for (auto& [k, v] : j.items()) {
    if (k == "tables" || k == "txnIds") {
      auto s = p.strings(v, k);
      if (!s) return s.err();
      (k == "tables" ? f.tables : f.txn_ids) = std::move(*s);
    } else if (k == "operations") {
      auto s = p.strings(v, k);
      if (!s) return s.err();
      for (size_t i = 0; i < s->size(); ++i) {
        auto& n = (*s)[i];
        auto o = n == "insert" ? std::optional(op_type::insert)
                 : n == "update" ? std::optional(op_type::update)
                 : n == "delete" ? std::optional(op_type::del)
                 : n == "schema" ? std::optional(op_type::schema)
                                 : std::nullopt;
        if (!o) return p.bad(k + "[" + std::to_string(i) + "]", "\"" + n + "\" is not insert, update, delete or schema");
        f.operations.push_back(*o);
      }
    } else if (k == "columns") {
      if (!v.is_object()) return p.bad(k, "expected an object {table: {include, exclude}}");
      for (auto& [t, m] : v.items()) {
        if (!m.is_object()) return p.bad(k + "." + t, "expected an object {include, exclude}");
        column_mask mask;
        for (auto& [mk, mv] : m.items()) {
          if (mk != "include" && mk != "exclude") return p.bad(k + "." + t + "." + mk, "unknown field (include or exclude)");
          auto s = p.strings(mv, k + "." + t + "." + mk);
          if (!s) return s.err();
          (mk == "include" ? mask.include : mask.exclude) = std::move(*s);
        }
        f.columns[t] = std::move(mask);
      }
    } else if (k == "where") {
      if (!v.is_object()) return p.bad(k, "expected an object {table: \"SQL expression\"}");
      for (auto& [t, e] : v.items()) {
        if (!e.is_string()) return p.bad(k + "." + t, "expected a SQL expression as a string");
        f.where[t] = e.get<std::string>();
      }
    } else {
      return p.bad(k, "unknown field (tables, operations, txnIds, columns, where)");
    }
  }
  return f;
}

result<std::map<std::string, sql_predicate>> compile_where(const filter_spec& f, const columns_lookup& columns_of) {
  std::map<std::string, sql_predicate> out;
  for (auto& [table, expr] : f.where) {
    auto cols = columns_of(table);
    if (!cols)
      return error(ec::invalid_argument, "row filter on table '" + table + "': '" + expr + "': no such table");
    auto p = sql_predicate::compile(table, expr, *cols);
    if (!p) return p.err();
    out.emplace(table, std::move(*p));
  }
  return out;
}

}  // namespace dosql::cdc
