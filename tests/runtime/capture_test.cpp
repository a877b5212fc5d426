// What capture writes into the WAL for the cases SQLite's hooks make tricky, and that a
// replica built only from the WAL equals the database.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "replica.hpp"
#include "actors/messages.hpp"
#include <dosql/json.hpp>
#include "wal/msgpack_sink.hpp"
#include <dosql/database.hpp>
#include "runtime/support.hpp"
#include "test_util.hpp"

using namespace dosql;
using test::must;

namespace {


struct fixture : test::db_fixture {
  uint64_t mark = 0;
  // Entries appended since the last call.
  std::vector<wal_entry> since() {
    auto all = test::read_from(db->wal_dir(), mark + 1);
    if (!all.empty()) mark = all.back().lsn;
    return all;
  }
  std::vector<std::string> ops(const std::vector<wal_entry>& es) {
    std::vector<std::string> out;
    for (auto& e : es) out.push_back(std::string(to_string(e.op)) + (e.table.empty() ? "" : " " + e.table));
    return out;
  }
  void check_replica() {
    test::temp_dir rd;
    test::replica rep(rd / "replica.sqlite");
    rep.catch_up(db->wal_dir());
    auto q = must(db->query("SELECT 1"));
    (void)q;
    auto mine = test::dump_tables(d / "db.sqlite");
    auto theirs = test::dump_tables(rep.db());
    CHECK(mine == theirs);
  }
};

row image(const std::optional<bytes>& b) {
  REQUIRE(b.has_value());
  auto r = codec::decode_row(std::string_view(reinterpret_cast<const char*>(b->data()), b->size()));
  REQUIRE(r);
  return *r;
}

}  // namespace

TEST_CASE("a transaction is BEGIN, changes, COMMIT with consecutive LSNs and one txn id", "[capture]") {
  fixture f;
  must(f.db->exec("CREATE TABLE users(id TEXT PRIMARY KEY, name TEXT, email TEXT)"));
  auto ddl = f.since();
  REQUIRE(f.ops(ddl) == std::vector<std::string>{"BEGIN", "SCHEMA users", "COMMIT"});
  auto s = image(ddl[1].after);
  CHECK(*s.find("change_type") == value(std::string("create_table")));
  CHECK(*s.find("schema_version") == value(int64_t{1}));
  must(f.db->exec("BEGIN; INSERT INTO users VALUES('user-1', 'Alice', 'alice@example.com'); "
                  "UPDATE users SET name='Alice Smith' WHERE id='user-1'; COMMIT"));
  auto es = f.since();
  REQUIRE(f.ops(es) == std::vector<std::string>{"BEGIN", "INSERT users", "UPDATE users", "COMMIT"});
  for (size_t i = 1; i < es.size(); ++i) {
    CHECK(es[i].lsn == es[0].lsn + i);
    CHECK(es[i].txn_id == es[0].txn_id);
  }
  auto after = image(es[2].after), before = image(es[2].before);
  CHECK(after.columns == std::vector<std::string>{"id", "name", "email"});
  CHECK(*after.find("name") == value(std::string("Alice Smith")));
  CHECK(*before.find("name") == value(std::string("Alice")));
  CHECK(*before.find("email") == value(std::string("alice@example.com")));  // every column
  CHECK_FALSE(es[1].before.has_value());
  // Rendered as JSON, the images are the guide's "data" and "oldData" payloads.
  CHECK(to_json(after) == R"({"id":"user-1","name":"Alice Smith","email":"alice@example.com"})");
  CHECK(to_json(before) == R"({"id":"user-1","name":"Alice","email":"alice@example.com"})");
  CHECK(to_json(value(bytes{0, 255, 16})) == R"({"$base64":"AP8Q"})");
  CHECK(to_json(value(100.0)) == "100.0");
  must(f.db->exec("DELETE FROM users"));
  es = f.since();
  REQUIRE(f.ops(es) == std::vector<std::string>{"BEGIN", "DELETE users", "COMMIT"});
  CHECK_FALSE(es[1].after.has_value());
  f.check_replica();
}

TEST_CASE("partial rollbacks: failed statements and ROLLBACK TO leave exactly what SQLite kept", "[capture]") {
  fixture f;
  must(f.db->exec("CREATE TABLE u(id INTEGER PRIMARY KEY, code TEXT UNIQUE)"));
  f.since();
  auto tx = must(f.db->begin());
  must(tx.exec("INSERT INTO u VALUES(1, 'a')"));
  // A multi-row statement failing midway (ABORT): its first rows are undone.
  auto bad = tx.exec("INSERT INTO u VALUES(2, 'b'), (3, 'c'), (4, 'a')");
  REQUIRE_FALSE(bad);
  must(tx.exec("SAVEPOINT s1"));
  must(tx.exec("INSERT INTO u VALUES(5, 'e')"));
  must(tx.exec("ROLLBACK TO s1"));
  must(tx.exec("INSERT INTO u VALUES(6, 'f')"));
  must(tx.exec("RELEASE s1"));
  must(tx.commit());
  auto es = f.since();
  REQUIRE(f.ops(es) == std::vector<std::string>{"BEGIN", "INSERT u", "INSERT u", "COMMIT"});
  CHECK(*image(es[2].after).find("id") == value(int64_t{6}));
  // A savepoint that opens the transaction commits at its RELEASE.
  must(f.db->exec("SAVEPOINT outer_sp; INSERT INTO u VALUES(7, 'g'); RELEASE outer_sp"));
  CHECK(f.ops(f.since()) == std::vector<std::string>{"BEGIN", "INSERT u", "COMMIT"});
  // A rolled-back transaction leaves nothing.
  must(f.db->exec("BEGIN; INSERT INTO u VALUES(8, 'h'); ROLLBACK"));
  CHECK(f.since().empty());
  // OR FAIL keeps part of a failed statement: the transaction must be rolled back.
  must(f.db->exec("CREATE TABLE fl(id INTEGER PRIMARY KEY, v INTEGER UNIQUE)"));
  f.since();
  auto tx2 = must(f.db->begin());
  must(tx2.exec("INSERT INTO fl VALUES(1, 1)"));
  REQUIRE_FALSE(tx2.exec("INSERT OR FAIL INTO fl VALUES(2, 2), (3, 1)"));
  auto blocked = tx2.exec("INSERT INTO fl VALUES(9, 9)");
  REQUIRE_FALSE(blocked);
  CHECK(blocked.err().message().find("ROLLBACK") != std::string::npos);
  REQUIRE_FALSE(tx2.commit());
  CHECK(f.since().empty());
  f.check_replica();
}

TEST_CASE("REPLACE, UPSERT, key changes, cascades, triggers, WITHOUT ROWID, key-less tables", "[capture]") {
  fixture f;
  must(f.db->exec(R"(
    CREATE TABLE users(id TEXT PRIMARY KEY, name TEXT, score REAL, avatar BLOB);
    CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id TEXT REFERENCES users(id) ON DELETE CASCADE, total REAL, status TEXT);
    CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT);
    CREATE TRIGGER orders_audit AFTER UPDATE ON orders BEGIN INSERT INTO audit(what) VALUES('order ' || new.id); END;
    CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
    CREATE TABLE events(msg TEXT, n INTEGER);
  )"));
  f.since();
  must(f.db->exec("INSERT INTO users VALUES('u1', 'Ann', 100.0, x'00ff'), ('u2', NULL, NULL, NULL)"));
  auto es = f.since();
  CHECK(*image(es[1].after).find("score") == value(100.0));  // REAL stays REAL (SQLite 3.40 quirk)
  CHECK(*image(es[1].after).find("avatar") == value(bytes{0, 255}));
  CHECK(is_null(*image(es[2].after).find("name")));
  must(f.db->exec("INSERT INTO orders VALUES(1, 'u1', 10.5, 'new'), (2, 'u1', 20, 'new'), (3, 'u2', 1, 'new')"));
  must(f.db->exec("UPDATE orders SET status='paid' WHERE id=1"));  // trigger writes audit
  f.since();
  must(f.db->exec("UPDATE orders SET id=100 WHERE id=2"));  // primary-key change
  es = f.since();
  REQUIRE(f.ops(es) == std::vector<std::string>{"BEGIN", "UPDATE orders", "INSERT audit", "COMMIT"});
  must(f.db->exec("DELETE FROM users WHERE id='u1'"));  // cascades to orders
  es = f.since();
  REQUIRE(f.ops(es) == std::vector<std::string>{"BEGIN", "DELETE users", "DELETE orders", "DELETE orders", "COMMIT"});
  must(f.db->exec("INSERT INTO kv VALUES('a', 1)"));
  must(f.db->exec("REPLACE INTO kv VALUES('a', 2)"));
  es = f.since();
  CHECK(f.ops(es) == std::vector<std::string>{"BEGIN", "INSERT kv", "COMMIT", "BEGIN", "DELETE kv", "INSERT kv", "COMMIT"});
  must(f.db->exec("INSERT INTO kv VALUES('a', 3) ON CONFLICT(k) DO UPDATE SET v = v + excluded.v"));
  es = f.since();
  REQUIRE(f.ops(es) == std::vector<std::string>{"BEGIN", "UPDATE kv", "COMMIT"});
  CHECK(*image(es[1].after).find("v") == value(int64_t{5}));
  must(f.db->exec("INSERT INTO events VALUES('x', 1), ('y', 2), ('z', 3)"));
  must(f.db->exec("UPDATE events SET n = n * 10 WHERE msg='y'"));
  must(f.db->exec("UPDATE events SET rowid = rowid + 100 WHERE msg='z'"));
  must(f.db->exec("DELETE FROM events WHERE msg='x'"));
  f.check_replica();
  f.since();
  must(f.db->exec("DELETE FROM events"));  // no WHERE: one DELETE per row
  es = f.since();
  auto names = f.ops(es);
  CHECK(std::count(names.begin(), names.end(), "DELETE events") == 2);
  f.check_replica();
}

TEST_CASE("schema changes are SCHEMA entries with the guide's fields", "[capture]") {
  fixture f;
  must(f.db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT)"));
  must(f.db->exec("ALTER TABLE t ADD COLUMN b REAL"));
  must(f.db->exec("ALTER TABLE t RENAME COLUMN a TO a2"));
  must(f.db->exec("INSERT INTO t VALUES(1, 'x', 2.5)"));
  must(f.db->exec("ALTER TABLE t DROP COLUMN b"));
  must(f.db->exec("CREATE INDEX t_a2 ON t(a2)"));
  must(f.db->exec("ALTER TABLE t RENAME TO t2"));
  must(f.db->exec("DROP TABLE t2"));
  std::vector<std::string> kinds;
  int64_t version = 0;
  for (auto& e : test::read_from(f.db->wal_dir(), 0)) {
    if (e.op != op_type::schema) continue;
    auto img = image(e.after);
    kinds.push_back(std::get<std::string>(*img.find("change_type")));
    auto v = std::get<int64_t>(*img.find("schema_version"));
    CHECK(v == version + 1);
    version = v;
    if (kinds.back() == "add_column") {
      CHECK(*img.find("column") == value(std::string("b")));
      CHECK(*img.find("new_type") == value(std::string("REAL")));
    }
    if (kinds.back() == "alter_column") CHECK(*img.find("old_column") == value(std::string("a")));
    if (kinds.back() == "rename_table") CHECK(*img.find("old_table") == value(std::string("t")));
  }
  CHECK(kinds == std::vector<std::string>{"create_table", "add_column", "alter_column", "drop_column",
                                          "create_index", "rename_table", "drop_table"});
  f.check_replica();
}

TEST_CASE("DDL that changes nothing (IF NOT EXISTS / IF EXISTS) writes no SCHEMA entry", "[capture]") {
  fixture f;
  must(f.db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT); CREATE INDEX ta ON t(a); "
                  "CREATE VIEW v AS SELECT id FROM t; "
                  "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END"));
  auto schema_entries = [&] {
    size_t n = 0;
    for (auto& e : test::read_from(f.db->wal_dir(), 0)) n += e.op == op_type::schema;
    return n;
  };
  auto before = schema_entries();
  uint64_t last = f.db->last_lsn();
  for (auto sql : {"CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, a TEXT)", "CREATE INDEX IF NOT EXISTS ta ON t(a)",
                   "CREATE VIEW IF NOT EXISTS v AS SELECT 1", "CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN SELECT 2; END",
                   "DROP TABLE IF EXISTS missing", "DROP INDEX IF EXISTS missing_i", "DROP VIEW IF EXISTS missing_v",
                   "DROP TRIGGER IF EXISTS missing_tr"}) {
    INFO(sql);
    must(f.db->exec(sql));
    CHECK(schema_entries() == before);
    CHECK(f.db->last_lsn() == last);  // nothing at all was written: no empty transaction either
  }
  // In a transaction with real changes: only the changes are captured.
  must(f.db->exec("BEGIN; CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t(a) VALUES('r'); COMMIT"));
  CHECK(schema_entries() == before);
  // And a real one is still captured, with the next schema version.
  must(f.db->exec("CREATE TABLE IF NOT EXISTS u(id INTEGER PRIMARY KEY)"));
  CHECK(schema_entries() == before + 1);
  f.check_replica();
}

TEST_CASE("JSON text: escapes, invalid UTF-8, REALs that stay REALs, and it always parses", "[json]") {
  CHECK(to_json(value(std::string("a\"b\\c\n\t\x01 é €"))) == "\"a\\\"b\\\\c\\n\\t\\u0001 é €\"");
  CHECK(to_json(value(std::string("bad \xff\xfe end \xC3"))) == "\"bad \xEF\xBF\xBD\xEF\xBF\xBD end \xEF\xBF\xBD\"");
  CHECK(to_json(value(std::string("\xED\xA0\x80"))) == "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");  // a surrogate
  CHECK(to_json(value(0.1)) == "0.1");
  CHECK(to_json(value(-2.5)) == "-2.5");
  CHECK(to_json(value(1e300)) == "1e+300");
  CHECK(to_json(value(std::nan(""))) == "null");
  CHECK(to_json(value(INT64_MIN)) == "-9223372036854775808");
  CHECK(to_json(value(nullptr)) == "null");
  CHECK(to_json(row{{"a\"", "b"}, {int64_t{1}, bytes{}}}) == R"({"a\"":1,"b":{"$base64":""}})");
  // Random bytes always make valid JSON that reads back as the same text where it was UTF-8.
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 4 == 0 ? rng() % 256 : 32 + rng() % 95);
    auto text = to_json(value(s));
    INFO(text);
    auto parsed = nlohmann::json::parse(text);  // throws on invalid JSON or UTF-8
    bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) CHECK(parsed.get<std::string>() == s);
  }
}

TEST_CASE("row and key codec: every SQL value round-trips; any msgpack encoding of them reads; damage is DECODE_ERROR",
          "[json][codec]") {
  row r{{"n", "i", "neg", "big", "small", "d", "s", "long", "b"},
        {nullptr, int64_t{42}, int64_t{-5}, INT64_MAX, INT64_MIN, 2.5, std::string("text"), std::string(70000, 'x'),
         bytes(300, 7)}};
  std::string img;
  codec::encode_row(r, img);
  auto back = codec::decode_row(img);
  REQUIRE(back);
  CHECK(*back == r);
  std::string key;
  codec::encode_key({value(int64_t{-1}), value(std::string("k"))}, key);
  auto k = codec::decode_key(key);
  REQUIRE(k);
  CHECK(*k == std::vector<value>{int64_t{-1}, std::string("k")});
  // Encodings dosql does not write but msgpack allows: int8 for a positive value, float32,
  // str8, bin8, map16.
  std::string other;
  dosql::detail::string_sink sink{other};
  msgpack::packer<dosql::detail::string_sink> pk(sink);
  pk.pack_map(2);
  pk.pack_str(1);
  pk.pack_str_body("a", 1);
  pk.pack_fix_int8(7);
  pk.pack_str(1);
  pk.pack_str_body("f", 1);
  pk.pack_float(0.5f);
  auto o = codec::decode_row(other);
  REQUIRE(o);
  CHECK(o->values == std::vector<value>{int64_t{7}, 0.5});
  // Every truncation and a few corruptions: an error, never a crash or a wrong success.
  for (size_t n = 0; n < img.size(); n += (n < 200 ? 1 : 997)) {
    auto t = codec::decode_row(std::string_view(img).substr(0, n));
    REQUIRE_FALSE(t);
    CHECK(t.err().code() == ec::decode_error);
  }
  CHECK_FALSE(codec::decode_row(img + "x"));                 // trailing bytes
  CHECK_FALSE(codec::decode_row(std::string("\x81\x01\x01", 3)));  // a column name that is not a string
  CHECK_FALSE(codec::decode_row(std::string("\x81\xa1" "a\xc3", 4)));  // true is not an SQL value
  CHECK_FALSE(codec::decode_row(std::string("\x81\xa1" "a\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 12)));  // > INT64_MAX
  CHECK_FALSE(codec::decode_key(std::string("\xdd\xff\xff\xff\xff", 5)));  // a huge count, no data
}

TEST_CASE("transaction messages to the WAL writer decode exactly; damage is DECODE_ERROR", "[codec]") {
  std::string msg;
  actors::begin_txn_message(msg, "txn_7", 7, -5, actors::txn_opens | actors::txn_closes, 2);
  std::string_view k("\x91\x01", 2), a("\x81\xa1x\x02", 4);
  actors::pack_entry(msg, op_type::insert, "t", &k, nullptr, &a);
  actors::pack_entry(msg, op_type::del, "u", &k, &a, nullptr);
  actors::txn_message m;
  REQUIRE_FALSE(actors::decode_txn_message(msg, m));
  CHECK(m.txn_id == "txn_7");
  CHECK(m.first_lsn == 7);
  CHECK(m.timestamp == -5);
  REQUIRE(m.entries.size() == 4);  // BEGIN, 2 changes, COMMIT
  CHECK(m.entries[0].op == op_type::begin);
  CHECK(m.entries[1].op == op_type::insert);
  CHECK(m.entries[1].table == "t");
  CHECK(m.entries[1].key == k);
  CHECK_FALSE(m.entries[1].has_before);
  CHECK(m.entries[1].after == a);
  CHECK(m.entries[2].before == a);
  CHECK(m.entries[3].op == op_type::commit);
  for (size_t i = 0; i < m.entries.size(); ++i) CHECK(m.entries[i].lsn == 7 + i);
  std::string ab;
  actors::begin_txn_message(ab, "txn_9", 9, 1, actors::txn_aborts, 0);
  REQUIRE_FALSE(actors::decode_txn_message(ab, m));
  REQUIRE(m.entries.size() == 1);
  CHECK(m.entries[0].op == op_type::rollback);
  std::string both;
  actors::begin_txn_message(both, "txn_9", 9, 1, actors::txn_closes | actors::txn_aborts, 0);
  CHECK(actors::decode_txn_message(both, m).code() == ec::decode_error);
  for (size_t n = 0; n < msg.size(); ++n) {
    auto e = actors::decode_txn_message(std::string_view(msg).substr(0, n), m);
    REQUIRE(e);
    CHECK(e.code() == ec::decode_error);
  }
  CHECK(actors::decode_txn_message(msg + "x", m).code() == ec::decode_error);
}

#include <dosql/cdc.hpp>

TEST_CASE("invalid UTF-8 TEXT: U+FFFD by default, its exact bytes as $text_base64 with lossless_text", "[json]") {
  const std::string bad("ok \xff\xfe \xC3", 7);
  json_options lossless;
  lossless.lossless_text = true;
  CHECK(to_json(value(bad)) == "\"ok \xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\"");
  CHECK(to_json(value(bad), lossless) == R"({"$text_base64":"b2sg//4gww=="})");
  CHECK(to_json(value(std::string("é €")), lossless) == "\"é €\"");  // valid TEXT unchanged
  CHECK(to_json(value(bytes{0, 255, 16}), lossless) == R"({"$base64":"AP8Q"})");  // BLOBs as before
  CHECK_FALSE(is_valid_utf8(bad));
  CHECK(is_valid_utf8("plain é"));
  row r{{"a", "b"}, {value(bad), value(int64_t{1})}};
  CHECK(to_json(r, lossless) == R"({"a":{"$text_base64":"b2sg//4gww=="},"b":1})");

  // Through the database and the change stream: the exact bytes come back.
  test::db_fixture f;
  must(f.db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)"));
  must(f.db->exec("INSERT INTO t VALUES(1, ?)", {value(bad)}));
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.filter.tables = {"t"};
  o.filter.operations = {op_type::insert};
  auto sub = must(cdc::create_cdc(f.db).subscribe_changes<row>(o));
  auto ev = sub.next();
  REQUIRE(ev);
  auto& c = std::get<cdc::change_event<row>>(*ev);
  CHECK(cdc::to_json(c).find("\"s\":\"ok \xEF\xBF\xBD") != std::string::npos);
  CHECK(cdc::to_json(c, lossless).find(R"("s":{"$text_base64":"b2sg//4gww=="})") != std::string::npos);
}
