// Embedding dosql: open a data directory, write with SQL, read the captured change stream.
// This file is the README's embedding example (a test keeps the two identical) and the demo
// that tools/demo.sh runs.
#include <cstdio>
#include <string>

#include "runtime/database.hpp"
#include "wal/reader.hpp"

using dosql::value;

// Prints a row image {column: value, ...}.
static std::string render(std::string_view image) {
  auto row = dosql::codec::decode_row(image);
  if (!row) return row.err().to_string();
  std::string s = "{";
  for (size_t i = 0; i < row->size(); ++i)
    s += (i ? ", " : "") + row->columns[i] + ": " + dosql::to_string(row->values[i]);
  return s + "}";
}

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "dosql-data";
  dosql::runtime rt;          // owns the actor system (the WAL writer runs in it)
  auto db = rt.open(dir);     // creates the directory, or recovers it after a crash
  if (!db) {
    std::fprintf(stderr, "dosql: %s\n", db.err().to_string().c_str());
    return 1;
  }
  dosql::database& d = **db;
  auto ok = [](const auto& r) {
    if (!r) std::fprintf(stderr, "dosql: %s\n", r.err().to_string().c_str());
    return r.ok();
  };
  // CDC is on for every table: no set-up.
  if (!ok(d.exec("CREATE TABLE IF NOT EXISTS users(id TEXT PRIMARY KEY, name TEXT, email TEXT)"))) return 1;
  uint64_t from = d.last_lsn();
  // Each call returns once its commit is durable.
  ok(d.exec("INSERT INTO users(id, name, email) VALUES(?, ?, ?) ON CONFLICT(id) DO NOTHING",
            {std::string("user-1"), std::string("Alice"), std::string("alice@example.com")}));
  ok(d.exec("UPDATE users SET name = ? WHERE id = ?", {std::string("Alice Smith"), std::string("user-1")}));
  {
    auto tx = d.begin();  // a multi-statement transaction, rolled back unless committed
    if (!ok(tx)) return 1;
    ok(tx->exec("INSERT INTO users VALUES('user-2', 'Bob', NULL) ON CONFLICT DO NOTHING"));
    ok(tx->exec("DELETE FROM users WHERE id = ?", {std::string("user-1")}));
    ok(tx->commit());
  }
  auto rows = d.query("SELECT id, name FROM users ORDER BY id");
  if (ok(rows))
    for (auto& r : rows->rows) std::printf("row: %s %s\n", dosql::to_string(r[0]).c_str(), dosql::to_string(r[1]).c_str());

  // Every committed change is in the WAL, in LSN order: read back what we just did.
  auto reader = dosql::wal::reader::open(d.wal_dir());
  if (!reader || (*reader)->seek(from + 1)) return 1;
  dosql::entry_view e;
  while ((*reader)->next(e) == dosql::wal::reader::status::entry) {
    std::printf("lsn %-4llu %-7s %-8.*s %.*s", static_cast<unsigned long long>(e.lsn),
                std::string(dosql::to_string(e.op)).c_str(), static_cast<int>(e.txn_id.size()), e.txn_id.data(),
                static_cast<int>(e.table.size()), e.table.data());
    if (e.has_before) std::printf(" before=%s", render(e.before).c_str());
    if (e.has_after) std::printf(" after=%s", render(e.after).c_str());
    std::printf("\n");
  }
  std::printf("data directory: %s (last lsn %llu, durable %llu)\n", d.dir().c_str(),
              static_cast<unsigned long long>(d.last_lsn()), static_cast<unsigned long long>(d.durable_lsn()));
  return 0;
}
