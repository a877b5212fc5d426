#include "replica.hpp"

#include <algorithm>
#include <stdexcept>

#include "runtime/catalog.hpp"
#include "wal/sqlite_util.hpp"

namespace dosql::test {

replica::replica(const std::string& path) {
  if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) throw std::runtime_error("replica: cannot open " + path);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, nullptr);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_FKEY, 0, nullptr);
  (void)detail::exec_simple(db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF");
  ap_ = std::make_unique<detail::applier>(db_);
  if (auto e = ap_->load()) throw std::runtime_error(e.to_string());
}

replica::~replica() {
  ap_.reset();
  sqlite3_close_v2(db_);
}

void replica::catch_up(const std::string& wal_dir) {
  auto r = wal::reader::open(wal_dir);
  if (!r) throw std::runtime_error("replica: " + r.err().to_string());
  if (auto e = (*r)->seek(applied_ + 1)) throw std::runtime_error("replica: " + e.to_string());
  entry_view v;
  wal::reader::status s;
  while ((s = (*r)->next(v)) == wal::reader::status::entry) {
    if (auto e = ap_->apply(v)) throw std::runtime_error("replica: lsn " + std::to_string(v.lsn) + ": " + e.to_string());
    applied_ = v.lsn;
  }
  if (s == wal::reader::status::error) throw std::runtime_error("replica: " + (*r)->last_error().to_string());
  if (ap_->in_transaction()) throw std::runtime_error("replica: the stream ends inside a transaction");
}

std::vector<std::string> dump_tables(sqlite3* db) {
  detail::catalog cat;
  if (auto e = cat.load(db)) throw std::runtime_error(e.to_string());
  std::vector<std::string> names;
  for (auto& [n, _] : cat.tables()) names.push_back(n);
  std::sort(names.begin(), names.end());
  std::vector<std::string> out;
  for (auto& n : names) {
    const auto& t = *cat.find(n);
    std::string cols = t.keyed_by_rowid() && !t.without_rowid ? "rowid" : "";
    for (auto& c : t.stored) cols += (cols.empty() ? "" : ", ") + detail::quote_ident(c.name);
    auto s = detail::prepare(db, "SELECT " + cols + " FROM " + detail::quote_ident(n));
    if (!s) throw std::runtime_error(s.err().to_string());
    std::vector<std::string> rows;
    while (sqlite3_step(s->get()) == SQLITE_ROW) {
      std::string line = n + ":";
      for (int i = 0; i < sqlite3_column_count(s->get()); ++i) {
        auto v = detail::column_value(s->get(), i);
        line += " " + std::to_string(v.index()) + "/" + to_string(v);
      }
      rows.push_back(std::move(line));
    }
    std::sort(rows.begin(), rows.end());
    out.push_back(n + " (" + std::to_string(rows.size()) + " rows)");
    out.insert(out.end(), rows.begin(), rows.end());
  }
  return out;
}

std::vector<std::string> dump_tables(const std::string& path) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  auto out = dump_tables(db);
  sqlite3_close_v2(db);
  return out;
}

}  // namespace dosql::test
