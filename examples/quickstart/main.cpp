// Embedding dosql: open a data directory, write with SQL, read the captured change stream.
// This file is the README's embedding example (a test keeps the two identical); it runs as
// ./build/dosql_quickstart [DIR].
#include <dosql/dosql.hpp>

#include <cstdio>
#include <string>

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

  {
    auto tx = d.begin();  // rolled back: it is in the WAL, but no subscriber ever sees it
    if (!ok(tx)) return 1;
    ok(tx->exec("UPDATE users SET email = 'nobody@example.com'"));
  }

  // Every committed change, in LSN order: read back what we just did as change events.
  dosql::cdc::subscribe_options o;
  o.from_lsn = from;       // exclusive: what follows the table's creation
  o.stop_at_tail = true;   // end at the tail present now instead of following it
  auto changes = dosql::cdc::create_cdc(*db).subscribe_changes<dosql::row>(o);
  if (!ok(changes)) return 1;
  for (const auto& ev : *changes) std::printf("%s\n", dosql::cdc::to_json(ev).c_str());
  if (changes->err()) return std::fprintf(stderr, "dosql: %s\n", changes->err().to_string().c_str()), 1;

  std::printf("data directory: %s (last lsn %llu, durable %llu)\n", d.dir().c_str(),
              static_cast<unsigned long long>(d.last_lsn()), static_cast<unsigned long long>(d.durable_lsn()));
  return 0;
}
