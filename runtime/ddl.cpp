#include "runtime/ddl.hpp"

#include <sqlite3.h>

#include <algorithm>

namespace dosql::detail {

schema_change classify_ddl(const ddl_statement& s, const std::vector<std::string>& tables_before,
                           const std::vector<std::string>& tables_after, const column_list& before,
                           const column_list& after) {
  schema_change c;
  c.table = s.table;
  switch (s.code) {
    case SQLITE_CREATE_TABLE: c.change_type = "create_table"; break;
    case SQLITE_DROP_TABLE: c.change_type = "drop_table"; break;
    case SQLITE_CREATE_INDEX: c.change_type = "create_index"; break;
    case SQLITE_DROP_INDEX: c.change_type = "drop_index"; break;
    case SQLITE_CREATE_TRIGGER: c.change_type = "create_trigger"; break;
    case SQLITE_DROP_TRIGGER: c.change_type = "drop_trigger"; break;
    case SQLITE_CREATE_VIEW: c.change_type = "create_view"; break;
    case SQLITE_DROP_VIEW: c.change_type = "drop_view"; break;
    default: break;
  }
  if (s.code != SQLITE_ALTER_TABLE) {
    if (s.object != s.table) c.object = s.object;
    return c;
  }
  auto present = [](const std::vector<std::string>& v, const std::string& n) {
    return std::find(v.begin(), v.end(), n) != v.end();
  };
  if (!present(tables_after, s.table)) {  // RENAME TO: the new name is the table that appeared
    c.change_type = "rename_table";
    c.old_table = s.table;
    for (auto& name : tables_after)
      if (!present(tables_before, name)) c.table = name;
  } else if (after.size() > before.size()) {
    c.change_type = "add_column";
    c.column = after.back().first;
    c.new_type = after.back().second;
  } else if (after.size() < before.size()) {
    c.change_type = "drop_column";
    for (auto& b : before)
      if (std::find(after.begin(), after.end(), b) == after.end()) {
        c.column = b.first;
        c.old_type = b.second;
        break;
      }
  } else {
    c.change_type = "alter_column";
    for (size_t i = 0; i < after.size(); ++i)
      if (after[i] != before[i]) {
        c.column = after[i].first;
        c.old_column = before[i].first;
        c.old_type = before[i].second;
        c.new_type = after[i].second;
        break;
      }
  }
  return c;
}

row schema_change_row(const schema_change& c) {
  row r;
  auto add = [&](const char* k, const std::optional<std::string>& v) {
    if (!v) return;
    r.columns.emplace_back(k);
    r.values.emplace_back(*v);
  };
  add("change_type", c.change_type);
  add("table", c.table);
  add("old_table", c.old_table);
  add("object", c.object);
  add("column", c.column);
  add("old_column", c.old_column);
  add("old_type", c.old_type);
  add("new_type", c.new_type);
  return r;
}

}  // namespace dosql::detail
