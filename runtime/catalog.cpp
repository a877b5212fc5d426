#include "runtime/catalog.hpp"

#include <algorithm>

#include "wal/sqlite_util.hpp"

namespace dosql::detail {
namespace {

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// SQLite's affinity rules (https://sqlite.org/datatype3.html, 3.1): REAL only if no INT,
// CHAR/CLOB/TEXT or BLOB rule matched first.
bool is_real_affinity(const std::string& declared) {
  auto t = upper(declared);
  auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (has("INT") || has("CHAR") || has("CLOB") || has("TEXT") || has("BLOB") || t.empty()) return false;
  return has("REAL") || has("FLOA") || has("DOUB");
}

}  // namespace

error catalog::load(sqlite3* db) {
  tables_.clear();
  auto list = prepare(db, "SELECT name, wr FROM pragma_table_list WHERE schema='main' AND type='table' "
                          "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_dosql\\_%' ESCAPE '\\'");
  if (!list) return list.err();
  auto cols = prepare(db, "SELECT name, type, pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid");
  if (!cols) return cols.err();
  int rc;
  while ((rc = sqlite3_step(list->get())) == SQLITE_ROW) {
    table_info t;
    t.name = reinterpret_cast<const char*>(sqlite3_column_text(list->get(), 0));
    t.without_rowid = sqlite3_column_int(list->get(), 1) != 0;
    sqlite3_reset(cols->get());
    sqlite3_bind_text(cols->get(), 1, t.name.c_str(), -1, SQLITE_TRANSIENT);
    std::vector<std::pair<int, size_t>> pk;  // (pk order, stored index)
    while ((rc = sqlite3_step(cols->get())) == SQLITE_ROW) {
      int hidden = sqlite3_column_int(cols->get(), 3);
      if (hidden == 1 || hidden == 2) continue;  // hidden (virtual tables) or VIRTUAL generated
      column_info c;
      c.name = reinterpret_cast<const char*>(sqlite3_column_text(cols->get(), 0));
      auto type = sqlite3_column_text(cols->get(), 1);
      c.type = type ? reinterpret_cast<const char*>(type) : "";
      c.real_affinity = is_real_affinity(c.type);
      c.generated = hidden == 3;
      int pko = sqlite3_column_int(cols->get(), 2);
      if (pko > 0) pk.emplace_back(pko, t.stored.size());
      t.stored.push_back(std::move(c));
    }
    if (rc != SQLITE_DONE) return sql_error(db, "pragma_table_xinfo", rc);
    std::sort(pk.begin(), pk.end());
    for (auto& p : pk) t.pk.push_back(p.second);
    auto name = t.name;
    tables_.emplace(std::move(name), std::move(t));
  }
  if (rc != SQLITE_DONE) return sql_error(db, "pragma_table_list", rc);
  return {};
}

const table_info* catalog::find(std::string_view table) const {
  auto it = tables_.find(std::string(table));
  return it == tables_.end() ? nullptr : &it->second;
}

}  // namespace dosql::detail
