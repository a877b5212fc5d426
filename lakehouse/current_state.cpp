#include "lakehouse/current_state.hpp"

#include <algorithm>
#include <map>
#include <string>

namespace dosql::lakehouse {

std::string key_text(const std::vector<value>& key) {
  std::string out;
  for (const auto& v : key) {
    out.push_back(static_cast<char>('0' + v.index()));
    std::string b;
    if (auto* i = std::get_if<int64_t>(&v)) b = std::to_string(*i);
    else if (auto* d = std::get_if<double>(&v)) b.assign(reinterpret_cast<const char*>(d), sizeof *d);
    else if (auto* s = std::get_if<std::string>(&v)) b = *s;
    else if (auto* x = std::get_if<bytes>(&v)) b.assign(x->begin(), x->end());
    out += std::to_string(b.size());
    out.push_back(':');
    out += b;
  }
  return out;
}

schema current_shape::key_schema() const {
  schema k;
  for (auto i : key_index) k.columns.push_back(table_schema.columns[i]);
  return k;
}

std::vector<int32_t> key_ids_of(const schema& changelog, std::span<const source_column> columns) {
  std::vector<const source_column*> keys;
  for (const auto& c : columns)
    if (c.pk > 0) keys.push_back(&c);
  std::stable_sort(keys.begin(), keys.end(), [](const source_column* a, const source_column* b) { return a->pk < b->pk; });
  std::vector<int32_t> ids;
  for (const auto* k : keys) {
    auto it = std::find_if(changelog.columns.begin() + static_cast<std::ptrdiff_t>(std::min(changelog_prefix(changelog), changelog.columns.size())),
                           changelog.columns.end(), [&](const column_spec& c) { return c.name == k->name; });
    if (it == changelog.columns.end()) return {};  // (not a schema of these columns)
    ids.push_back(it->field_id);
  }
  return ids;
}

std::optional<current_shape> current_shape_for(const schema& changelog, std::span<const int32_t> key_ids) {
  const size_t prefix = changelog_prefix(changelog);
  if (key_ids.empty() || changelog.columns.size() < prefix) return std::nullopt;
  current_shape s;
  s.table_schema.columns.assign(changelog.columns.begin() + static_cast<std::ptrdiff_t>(prefix), changelog.columns.end());
  for (auto id : key_ids) {
    size_t i = 0;
    while (i < s.table_schema.columns.size() && s.table_schema.columns[i].field_id != id) ++i;
    if (i == s.table_schema.columns.size()) return std::nullopt;
    s.table_schema.columns[i].optional = false;
    s.key_index.push_back(i);
    s.key_ids.push_back(id);
  }
  return s;
}

std::optional<current_shape> current_shape_of(const schema& changelog, std::span<const source_column> columns) {
  auto ids = key_ids_of(changelog, columns);
  return current_shape_for(changelog, ids);
}

std::vector<value> project_row(const schema& from, const schema& to, const std::vector<value>& row) {
  std::vector<value> out;
  out.reserve(to.columns.size());
  for (const auto& c : to.columns) {
    size_t i = 0;
    while (i < from.columns.size() && from.columns[i].field_id != c.field_id) ++i;
    out.push_back(i < from.columns.size() && i < row.size() ? row[i] : value{nullptr});
  }
  return out;
}

std::vector<value> state_row(const schema& changelog, std::vector<value> changelog_row) {
  changelog_row.erase(changelog_row.begin(),
                      changelog_row.begin() + static_cast<std::ptrdiff_t>(std::min(changelog_prefix(changelog), changelog_row.size())));
  return changelog_row;
}

result<std::vector<value>> key_of(const current_shape& s, const std::vector<value>& row, uint64_t lsn) {
  std::vector<value> key;
  for (auto i : s.key_index) {
    if (i >= row.size() || is_null(row[i]))
      return error(ec::invalid_argument, "current state: lsn " + std::to_string(lsn) + ": primary-key column '" +
                                             s.table_schema.columns[i].name +
                                             "' is NULL (the current-state table's identifier fields are required)")
          .at(lsn);
    key.push_back(row[i]);
  }
  return key;
}

collapsed collapse(const current_shape& s, std::span<const state_change> changes, const key_clocks* held) {
  struct slot {
    std::vector<value> key;
    std::string text;
    const std::vector<value>* row = nullptr;  // the last applied change's row (nullptr: deleted)
    bool applied = false;                     // some change of the flush won for this key
    hlc_stamp newest{};
  };
  std::vector<slot> slots;  // in first-touch order
  std::map<std::string, size_t> index;
  auto touch = [&](std::vector<value> key) -> slot& {
    auto text = key_text(key);
    auto [it, fresh] = index.emplace(text, slots.size());
    if (fresh) slots.push_back({std::move(key), std::move(text), nullptr, false, {}});
    return slots[it->second];
  };
  // Last writer wins by HLC: a change older than what the table holds for its key is skipped.
  auto wins = [&](slot& sl, const hlc_stamp& h) {
    if (held) {
      auto it = held->find(sl.text);
      if (it != held->end() && h < it->second) return false;
    }
    if (sl.applied && h < sl.newest) return false;
    sl.applied = true;
    sl.newest = h;
    return true;
  };
  for (const auto& c : changes) {
    if (c.old_key) {
      auto& sl = touch(*c.old_key);
      if (wins(sl, c.hlc)) sl.row = nullptr;
    }
    if (c.row) {
      std::vector<value> key;
      for (auto i : s.key_index) key.push_back((*c.row)[i]);
      auto& sl = touch(std::move(key));
      if (wins(sl, c.hlc)) sl.row = &*c.row;
    }
  }
  collapsed out;
  for (auto& sl : slots) {
    if (!sl.applied) continue;
    if (sl.row) out.rows.push_back(*sl.row);
    out.deletes.push_back(std::move(sl.key));
    out.clocks[std::move(sl.text)] = sl.newest;
  }
  return out;
}

}  // namespace dosql::lakehouse
