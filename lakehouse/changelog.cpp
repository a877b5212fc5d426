#include "lakehouse/changelog.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "lakehouse/iceberg_table.hpp"

namespace dosql::lakehouse {

namespace {

const column_spec cdc_columns[changelog_cdc_columns] = {
    {"_op", column_type::string, false, 1},      {"_lsn", column_type::int64, false, 2},
    {"_txn_id", column_type::string, true, 3},   {"_ts", column_type::timestamp, false, 4},
    {"_source", column_type::string, false, 5},
};

bool contains(const std::string& upper, std::string_view what) { return upper.find(what) != std::string::npos; }

std::string describe(const value& v) {
  std::string s = dosql::to_string(v);
  if (s.size() > 40) s = s.substr(0, 40) + "...";
  switch (v.index()) {
    case 1: return "INTEGER " + s;
    case 2: return "REAL " + s;
    case 3: return "TEXT '" + s + "'";
    default: return "BLOB " + s;
  }
}

}  // namespace

column_type type_for_declared(std::string_view declared) noexcept {
  std::string u(declared);
  std::transform(u.begin(), u.end(), u.begin(), [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
  if (contains(u, "INT")) return column_type::int64;
  if (contains(u, "CHAR") || contains(u, "CLOB") || contains(u, "TEXT")) return column_type::string;
  if (contains(u, "BLOB")) return column_type::binary;
  if (u.find_first_not_of(" \t\r\n") == std::string::npos) return column_type::string;  // no type
  if (contains(u, "REAL") || contains(u, "FLOA") || contains(u, "DOUB")) return column_type::float64;
  return column_type::string;  // NUMERIC affinity
}

bool promotable(column_type from, column_type to) noexcept {
  // (column_type has no 32-bit float: float -> double cannot arise here)
  return from == to || (from == column_type::int32 && to == column_type::int64);
}

namespace {

bool is_changelog(const schema& s) {
  return s.columns.size() >= changelog_cdc_columns &&
         std::equal(std::begin(cdc_columns), std::end(cdc_columns), s.columns.begin());
}

bool is_hlc(const column_spec& c) { return c.name == hlc_column && c.type == column_type::string && !c.optional; }

error unsafe(const std::string& column, column_type from, column_type to, const std::string& declared) {
  return error(ec::invalid_argument, "column '" + column + "': unsafe type change " + std::string(iceberg::type_name(from)) + " -> " +
                                         std::string(iceberg::type_name(to)) + " (declared '" + declared +
                                         "'): not a safe promotion (int -> long, float -> double)");
}

error check_name(const std::string& name) {
  if (name.empty()) return error(ec::invalid_argument, "changelog schema: a column has no name");
  if (name == hlc_column) return error(ec::invalid_argument, "changelog schema: source column '" + name + "' clashes with a CDC column");
  for (const auto& cdc : cdc_columns)
    if (name == cdc.name) return error(ec::invalid_argument, "changelog schema: source column '" + name + "' clashes with a CDC column");
  return {};
}

}  // namespace

size_t changelog_prefix(const schema& s) noexcept {
  return is_changelog(s) && s.columns.size() > changelog_cdc_columns && is_hlc(s.columns[changelog_cdc_columns])
             ? changelog_cdc_columns + 1
             : changelog_cdc_columns;
}

int32_t hlc_field_id(const schema& s) noexcept {
  return changelog_prefix(s) > changelog_cdc_columns ? s.columns[changelog_cdc_columns].field_id : 0;
}

schema with_hlc(const schema& s, int32_t& last_column_id) {
  for (const auto& c : s.columns) last_column_id = std::max(last_column_id, c.field_id);
  if (!is_changelog(s) || changelog_prefix(s) > changelog_cdc_columns) return s;
  schema out = s;
  out.columns.insert(out.columns.begin() + changelog_cdc_columns,
                     column_spec{std::string(hlc_column), column_type::string, false, ++last_column_id});
  return out;
}

result<schema> changelog_schema(std::span<const source_column> columns, const schema* previous, int32_t last_column_id) {
  schema s;
  s.columns.assign(std::begin(cdc_columns), std::end(cdc_columns));
  std::map<std::string, const column_spec*> prev;
  int32_t next = std::max<int32_t>(static_cast<int32_t>(changelog_cdc_columns), last_column_id) + 1;
  if (previous) {
    if (!is_changelog(*previous))
      return error(ec::invalid_argument, "changelog schema: the previous schema is not a changelog schema");
    const size_t prefix = changelog_prefix(*previous);
    if (prefix > changelog_cdc_columns) s.columns.push_back(previous->columns[changelog_cdc_columns]);  // _hlc keeps its id
    for (size_t i = prefix; i < previous->columns.size(); ++i) prev[previous->columns[i].name] = &previous->columns[i];
    for (const auto& c : previous->columns) next = std::max(next, c.field_id + 1);
  }
  std::set<std::string> seen;
  for (const auto& c : columns) {
    if (auto e = check_name(c.name)) return e;
    if (!seen.insert(c.name).second)
      return error(ec::invalid_argument, "changelog schema: column '" + c.name + "' appears twice");
    column_spec spec{c.name, type_for_declared(c.declared_type), true, 0};
    auto it = prev.find(c.name);
    if (it == prev.end()) {
      spec.field_id = next++;
    } else if (!c.typed) {
      spec = *it->second;
    } else {
      if (!promotable(it->second->type, spec.type)) return unsafe(c.name, it->second->type, spec.type, c.declared_type);
      spec.field_id = it->second->field_id;
    }
    s.columns.push_back(std::move(spec));
  }
  if (auto e = validate(s)) return e;
  return s;
}

result<schema> evolve_schema(const schema& current, const column_change& c, int32_t& last_column_id) {
  // A changelog schema keeps its CDC columns in front; any other schema (the current-state
  // table's) is the table's columns alone.
  const auto first = static_cast<std::ptrdiff_t>(is_changelog(current) ? changelog_prefix(current) : 0);
  for (const auto& col : current.columns) last_column_id = std::max(last_column_id, col.field_id);
  schema s = current;
  auto find = [&](const std::string& name) {
    auto it = std::find_if(s.columns.begin() + first, s.columns.end(),
                           [&](const column_spec& x) { return x.name == name; });
    return it == s.columns.end() ? nullptr : &*it;
  };
  if (c.change_type == "add_column") {
    if (auto e = check_name(c.column)) return e;
    auto type = type_for_declared(c.new_type);
    if (auto* have = find(c.column)) {  // applied before (the column list had it already)
      if (!promotable(have->type, type)) return unsafe(c.column, have->type, type, c.new_type);
      have->type = type;
      return s;
    }
    s.columns.push_back({c.column, type, true, ++last_column_id});
  } else if (c.change_type == "drop_column") {
    auto it = std::find_if(s.columns.begin() + first, s.columns.end(),
                           [&](const column_spec& x) { return x.name == c.column; });
    if (it != s.columns.end()) s.columns.erase(it);
  } else if (c.change_type == "alter_column") {
    if (auto e = check_name(c.column)) return e;
    const std::string& from = c.old_column.empty() ? c.column : c.old_column;
    auto* col = find(from);
    if (!col) {
      if (find(c.column)) col = find(c.column);  // the rename was applied before
      else return error(ec::invalid_argument, "schema evolution: column '" + from + "' to alter is not in the schema");
    } else if (from != c.column && find(c.column)) {
      return error(ec::invalid_argument, "schema evolution: cannot rename column '" + from + "' to '" + c.column +
                                             "': a column of that name exists");
    }
    auto type = type_for_declared(c.new_type);
    if (!promotable(col->type, type)) return unsafe(c.column, col->type, type, c.new_type);
    col->name = c.column;
    col->type = type;
  }
  if (auto e = validate(s)) return e;
  return s;
}

namespace {

error lossy(const change& c, const column_spec& col, const value& v, std::string_view why = "") {
  return error(ec::invalid_argument, "changelog: lsn " + std::to_string(c.lsn) + ", column '" + col.name + "' (" +
                                         std::string(to_string(col.type)) + "): " + describe(v) +
                                         " cannot be stored without loss" + (why.empty() ? "" : std::string(": ") + std::string(why)))
      .at(c.lsn);
}

// Stores `v` into `out` in `col`'s type, or returns why it cannot be stored exactly.
error convert(const change& c, const column_spec& col, const value& v, value& out) {
  if (is_null(v)) {
    out = nullptr;
    return {};
  }
  switch (col.type) {
    case column_type::int64:
      if (auto* i = std::get_if<int64_t>(&v)) {
        out = *i;
        return {};
      }
      if (auto* d = std::get_if<double>(&v)) {
        // [-2^63, 2^63): both bounds exact as doubles.
        if (std::isfinite(*d) && std::trunc(*d) == *d && *d >= -9223372036854775808.0 && *d < 9223372036854775808.0) {
          out = static_cast<int64_t>(*d);
          return {};
        }
      }
      return lossy(c, col, v);
    case column_type::float64:
      if (auto* d = std::get_if<double>(&v)) {
        out = *d;
        return {};
      }
      if (auto* i = std::get_if<int64_t>(&v)) {
        if (*i < -(int64_t{1} << 53) || *i > (int64_t{1} << 53)) return lossy(c, col, v, "beyond 2^53");
        out = static_cast<double>(*i);
        return {};
      }
      return lossy(c, col, v);
    case column_type::string:
      if (auto* s = std::get_if<std::string>(&v)) {
        if (!valid_utf8(*s)) return lossy(c, col, v, "not valid UTF-8");
        out = *s;
        return {};
      }
      if (auto* i = std::get_if<int64_t>(&v)) {
        out = std::to_string(*i);
        return {};
      }
      if (auto* d = std::get_if<double>(&v)) {
        char buf[64];
        auto r = std::to_chars(buf, buf + sizeof buf, *d);  // shortest text that reads back exactly
        out = std::string(buf, r.ptr);
        return {};
      }
      return lossy(c, col, v);
    case column_type::binary:
      if (auto* b = std::get_if<bytes>(&v)) {
        out = *b;
        return {};
      }
      if (auto* s = std::get_if<std::string>(&v)) {
        out = bytes(s->begin(), s->end());
        return {};
      }
      return lossy(c, col, v);
    default:
      return lossy(c, col, v, "not a changelog column type");
  }
}

}  // namespace

result<std::vector<value>> changelog_row(const schema& s, const change& c) {
  auto bad = [&](std::string why) {
    return error(ec::invalid_argument, "changelog: lsn " + std::to_string(c.lsn) + ": " + why).at(c.lsn);
  };
  if (c.op != "INSERT" && c.op != "UPDATE" && c.op != "DELETE") return bad("op '" + std::string(c.op) + "' is not a row change");
  if (c.lsn > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return bad("LSN above INT64_MAX");
  if (c.timestamp_ms > std::numeric_limits<int64_t>::max() / 1000 || c.timestamp_ms < std::numeric_limits<int64_t>::min() / 1000)
    return bad("timestamp " + std::to_string(c.timestamp_ms) + " ms out of range");
  if (s.columns.size() < changelog_cdc_columns || !std::equal(std::begin(cdc_columns), std::end(cdc_columns), s.columns.begin()))
    return bad("the schema is not a changelog schema");
  std::vector<value> out(s.columns.size(), value(nullptr));
  out[0] = std::string(c.op);
  out[1] = static_cast<int64_t>(c.lsn);
  if (!c.txn_id.empty()) out[2] = std::string(c.txn_id);
  out[3] = c.timestamp_ms * 1000;
  out[4] = std::string(c.source);
  const size_t prefix = changelog_prefix(s);
  if (prefix > changelog_cdc_columns) out[changelog_cdc_columns] = to_string(c.hlc);
  if (!c.image) return out;
  for (size_t i = 0; i < c.image->columns.size(); ++i) {
    const auto& name = c.image->columns[i];
    size_t k = prefix;
    while (k < s.columns.size() && s.columns[k].name != name) ++k;
    if (k == s.columns.size()) return bad("column '" + name + "' is not in the changelog schema (the table changed?)");
    if (auto e = convert(c, s.columns[k], c.image->values[i], out[k])) return e;
  }
  return out;
}

}  // namespace dosql::lakehouse
