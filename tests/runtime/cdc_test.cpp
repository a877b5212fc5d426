// Subscriptions: ordering, exactly-once across restarts, filters, transaction boundaries,
// the live tail, stop() from another thread, LSN_NOT_FOUND, bounded buffering.
#include <catch2/catch.hpp>
#include <caf/all.hpp>

#include <future>
#include <set>
#include <thread>

#include "actors/messages.hpp"
#include <dosql/cdc.hpp>
#include "runtime/support.hpp"
#include "test_util.hpp"
#include "wal/log.hpp"

using namespace dosql;
using test::must;

namespace {


struct fixture : test::db_fixture {
  fixture() {
    must(db->exec("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); "
                  "CREATE TABLE orders(id INTEGER PRIMARY KEY, total REAL)"));
  }
  std::vector<wal_entry> drain(cdc::subscribe_options o) {
    o.stop_at_tail = true;
    auto sub = must(cdc::create_cdc(db).subscribe(o));
    std::vector<wal_entry> out;
    for (auto& e : *sub) out.push_back(e);
    if (sub->err()) FAIL(sub->err().to_string());
    return out;
  }
  std::vector<std::string> names(const std::vector<wal_entry>& es) {
    std::vector<std::string> out;
    for (auto& e : es) out.push_back(std::string(to_string(e.op)) + (e.table.empty() ? "" : " " + e.table));
    return out;
  }
};

// What a crash in the middle of an append leaves: BEGIN (lsn 4) and an INSERT into t, no COMMIT.
void append_torn_insert(const std::string& wal_dir, const row& r) {
  auto log = test::open_log(wal_dir);
  std::vector<wal_entry> torn(2);
  torn[0].op = op_type::begin;
  torn[0].txn_id = torn[1].txn_id = "txn_4";
  torn[1].op = op_type::insert;
  torn[1].table = "t";
  std::string img, key;
  codec::encode_row(r, img);
  codec::encode_key({r.values[0]}, key);
  torn[1].after = bytes(img.begin(), img.end());
  torn[1].key = bytes(key.begin(), key.end());
  REQUIRE(log->append_batch(torn));
}

}  // namespace

TEST_CASE("a subscription delivers every committed entry once, in LSN order, and resumes exactly",
          "[cdc]") {
  fixture f;
  for (int i = 0; i < 300; ++i) must(f.db->exec("INSERT INTO users(name) VALUES(?)", {std::string("u") + std::to_string(i)}));
  cdc::subscribe_options everything;
  everything.include_transaction_control = true;
  auto all = f.drain(everything);
  REQUIRE(all.size() == 6 + 300 * 3);  // two DDL transactions (each autocommit), then 300 of 3
  for (size_t i = 0; i < all.size(); ++i) REQUIRE(all[i].lsn == i + 1);
  // Restart from every 97th position: exactly the rest, no gap, no duplicate.
  for (uint64_t from = 0; from < all.size(); from += 97) {
    cdc::subscribe_options o = everything;
    o.from_lsn = from;
    o.batch_size = 7;
    o.max_buffer_size = 20;
    auto rest = f.drain(o);
    REQUIRE(rest.size() == all.size() - from);
    REQUIRE(rest.front().lsn == from + 1);
    REQUIRE(rest.back() == all.back());
  }
}

TEST_CASE("filters by table, operation, txn id and predicate, and BEGIN/COMMIT never split", "[cdc]") {
  fixture f;
  must(f.db->exec("BEGIN; INSERT INTO users VALUES(1, 'a'); INSERT INTO orders VALUES(1, 9.5); COMMIT"));
  must(f.db->exec("UPDATE users SET name = 'b' WHERE id = 1"));
  must(f.db->exec("INSERT INTO orders VALUES(2, 200)"));
  must(f.db->exec("DELETE FROM users WHERE id = 1"));
  cdc::subscribe_options o;
  o.filter.tables = {"users"};
  // A table filter passes that table's schema changes too.
  CHECK(f.names(f.drain(o)) == std::vector<std::string>{"SCHEMA users", "INSERT users", "UPDATE users", "DELETE users"});
  o.include_transaction_control = true;
  CHECK(f.names(f.drain(o)) == std::vector<std::string>{"BEGIN", "SCHEMA users", "COMMIT", "BEGIN", "INSERT users",
                                                        "COMMIT", "BEGIN", "UPDATE users", "COMMIT", "BEGIN",
                                                        "DELETE users", "COMMIT"});
  cdc::subscribe_options ops;
  ops.filter.operations = {op_type::update, op_type::del};
  CHECK(f.names(f.drain(ops)) == std::vector<std::string>{"UPDATE users", "DELETE users"});
  cdc::subscribe_options pred;
  pred.filter.tables = {"orders"};
  pred.filter.predicate = [](const entry_view& e) {
    auto r = codec::decode_row(e.after);
    auto* t = r ? r->find("total") : nullptr;  // SCHEMA entries have no such column
    return t && std::holds_alternative<double>(*t) && std::get<double>(*t) > 100;
  };
  auto big = f.drain(pred);
  REQUIRE(big.size() == 1);
  auto ev = must(cdc::to_event(big[0]));
  auto& c = std::get<cdc::change_event<row>>(ev);
  CHECK(c.type == cdc::change_type::insert);
  CHECK(*c.data->find("id") == value(int64_t{2}));
  auto json = cdc::to_json(c);
  CHECK(json.find(R"("type":"insert","table":"orders")") != std::string::npos);
  CHECK(json.find(R"("data":{"id":2,"total":200.0})") != std::string::npos);
  cdc::subscribe_options tx;
  tx.filter.txn_ids = {big[0].txn_id};
  CHECK(f.drain(tx).size() == 1);
  cdc::subscribe_options schema;
  schema.filter.operations = {op_type::schema};
  auto ddl = f.drain(schema);
  REQUIRE(ddl.size() == 2);
  auto s = std::get<cdc::schema_change_event>(must(cdc::to_event(ddl[1])));
  CHECK(s.change_type == "create_table");
  CHECK(s.table == "orders");
  CHECK(s.schema_version == 2);
  CHECK(s.txn_id == ddl[1].txn_id);
  // The guide's JSON, camelCase like every other field.
  auto sj = cdc::to_json(s);
  CHECK(sj.rfind("{\"id\":\"" + std::to_string(ddl[1].lsn) + "\",\"type\":\"schema_change\",\"table\":\"orders\","
                 "\"txnId\":\"" + ddl[1].txn_id + "\",\"timestamp\":\"", 0) == 0);
  CHECK(sj.find(",\"changeType\":\"create_table\",") != std::string::npos);
  CHECK(sj.find(",\"schemaVersion\":2,\"sql\":\"CREATE TABLE orders") != std::string::npos);
  CHECK(sj.find("change_type") == std::string::npos);
  CHECK(sj.find("schema_version") == std::string::npos);
  cdc::schema_change_event alter;
  alter.table = "t";
  alter.txn_id = "txn_9";
  alter.change_type = "alter_column";
  alter.column = "c";
  alter.old_column = "b";
  alter.old_type = "INTEGER";
  alter.new_type = "TEXT";
  alter.schema_version = 7;
  alter.sql = "ALTER TABLE t RENAME COLUMN b TO c";
  alter.timestamp = 1737542400123;
  alter.lsn = 42;
  alter.hlc = {1737542400124, 3, 77};
  CHECK(cdc::to_json(alter) ==
        R"({"id":"42","type":"schema_change","table":"t","txnId":"txn_9","timestamp":"2025-01-22T10:40:00.123Z",)"
        R"("lsn":42,"hlc":"001737542400124.00003.0000000077","changeType":"alter_column","column":"c","oldColumn":"b","oldType":"INTEGER","newType":"TEXT",)"
        R"("schemaVersion":7,"sql":"ALTER TABLE t RENAME COLUMN b TO c"})");
  cdc::transaction_event t{cdc::transaction_event::kind::rollback, "txn_9", 1737542400123, 43};
  CHECK(cdc::to_json(t) == R"({"id":"43","type":"rollback","txnId":"txn_9","timestamp":"2025-01-22T10:40:00.123Z",)"
                           R"("lsn":43,"hlc":"000000000000000.00000.0000000000"})");
  CHECK(cdc::to_json(cdc::event<row>(t)) == cdc::to_json(t));
}

TEST_CASE("the live tail wakes a waiting subscriber, and stop() from another thread ends it", "[cdc]") {
  fixture f;
  cdc::subscribe_options o;
  o.from_lsn = f.db->last_lsn();
  auto sub = must(cdc::create_cdc(f.db).subscribe(o));
  std::thread writer([&] {
    for (int i = 0; i < 50; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('live')"));
  });
  int seen = 0;
  for (auto& e : *sub) {
    CHECK(e.table == "users");
    if (++seen == 50) break;
  }
  writer.join();
  CHECK(seen == 50);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    sub->stop();
  });
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(sub->next().has_value());  // blocks at the tail until stop()
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  stopper.join();
}

TEST_CASE("a delivered entry is never beyond database::durable_lsn(): a consumer may acknowledge it at once",
          "[cdc][durable]") {
  // The writer tells the readers about a new durable tail; a consumer that receives an entry
  // and acknowledges it (update_slot, subscribe from it) must find durable_lsn() already there,
  // or it is refused as "beyond the end of the WAL".
  fixture f;
  cdc::subscribe_options o;
  o.from_lsn = f.db->durable_lsn();
  auto sub = must(cdc::create_cdc(f.db).subscribe(o));
  constexpr int n = 3000;
  std::thread writer([&] {
    for (int i = 0; i < n; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('w')"));
  });
  int seen = 0, beyond = 0;
  uint64_t first_beyond = 0;
  for (auto& e : *sub) {
    if (e.lsn > f.db->durable_lsn() && !beyond++) first_beyond = e.lsn;
    if (++seen == n) break;
  }
  writer.join();
  CHECK(seen == n);
  INFO("first entry delivered beyond durable_lsn(): " << first_beyond);
  CHECK(beyond == 0);
}

TEST_CASE("an LSN below the oldest retained one is LSN_NOT_FOUND naming it", "[cdc]") {
  test::temp_dir d;
  runtime rt;
  database_options opts;
  opts.wal.max_entries_per_segment = 50;
  auto db = must(rt.open(d.path(), opts));
  must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY)"));
  for (int i = 0; i < 100; ++i) must(db->exec("INSERT INTO t VALUES(?)", {int64_t{i}}));
  auto rep = must(db->compact(120));
  REQUIRE(rep.oldest_lsn == 101);
  CHECK(rep.removed == std::vector<uint64_t>{1, 51});
  cdc::subscribe_options o;
  o.from_lsn = 50;
  auto r = cdc::create_cdc(db).subscribe(o);
  REQUIRE_FALSE(r);
  CHECK(r.err().code() == ec::lsn_not_found);
  CHECK(r.err().oldest_lsn == 101);
  o.from_lsn = 100;
  o.stop_at_tail = true;
  o.include_transaction_control = true;
  auto ok = must(cdc::create_cdc(db).subscribe(o));
  size_t n = 0;
  for (auto& e : *ok) n += e.lsn > 100;
  CHECK(n == db->last_lsn() - 100);
}

TEST_CASE("a transaction cut by a crash is closed by recovery and never delivered", "[cdc]") {
  test::temp_dir d;
  {
    runtime rt;
    auto db = must(rt.open(d.path()));
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
  }
  append_torn_insert(d / "wal", row{{"id", "v"}, {int64_t{1}, std::string("ghost")}});
  runtime rt;
  auto db = must(rt.open(d.path()));
  CHECK(db->recovery().closed_orphan_lsn == 6);
  CHECK(must(db->query("SELECT count(*) FROM t")).rows[0][0] == value(int64_t{0}));
  must(db->exec("INSERT INTO t VALUES(2, 'real')"));
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.filter.tables = {"t"};
  o.filter.operations = {op_type::insert};
  auto sub = must(cdc::create_cdc(db).subscribe(o));
  std::vector<std::string> vals;
  for (auto& e : *sub) vals.push_back(std::get<std::string>(*codec::decode_row(
      std::string_view(reinterpret_cast<const char*>(e.after->data()), e.after->size()))->find("v")));
  CHECK(vals == std::vector<std::string>{"real"});
  // Resuming inside the rolled-back transaction does not deliver it either.
  o.from_lsn = 4;
  auto mid = must(cdc::create_cdc(db).subscribe(o));
  size_t n = 0;
  for (auto& e : *mid) n += e.lsn == 5;
  CHECK(n == 0);
}

TEST_CASE("a stalled consumer holds at most max_buffer_size entries while another keeps up", "[cdc]") {
  fixture f;
  cdc::subscribe_options slow_opts;
  slow_opts.max_buffer_size = 64;
  slow_opts.batch_size = 16;
  auto slow = must(cdc::create_cdc(f.db).subscribe(slow_opts));
  REQUIRE(slow->next().has_value());  // takes one entry, then stalls
  // A 1,000,000-entry backlog in one statement (spilled and streamed by the writer).
  must(f.db->exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) "
                  "INSERT INTO orders(total) SELECT i FROM n"));
  cdc::subscribe_options fast_opts;
  fast_opts.stop_at_tail = true;
  auto fast = must(cdc::create_cdc(f.db).subscribe(fast_opts));
  size_t n = 0;
  for (auto& e : *fast) n += e.op == op_type::insert;
  CHECK(n == 1000000);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(slow->buffered() <= 64 + 16);  // the backlog stays on disk
  size_t got = 1;
  while (got < 2 + 1000000) {  // the two SCHEMA entries and the 1,000,000 inserts
    REQUIRE(slow->next().has_value());
    ++got;
  }
  CHECK(slow->position() == f.db->last_lsn() - 1);  // the last insert; COMMIT is not delivered without control
}

TEST_CASE("column masks keep masked columns (and the key) inside the reader", "[cdc]") {
  fixture f;
  must(f.db->exec("CREATE TABLE acct(id INTEGER PRIMARY KEY, email TEXT, ssn TEXT, balance REAL)"));
  must(f.db->exec("INSERT INTO acct VALUES(1, 'a@x', '123-45', 10)"));
  must(f.db->exec("UPDATE acct SET balance = 20 WHERE id = 1"));
  cdc::subscribe_options o;
  o.filter.tables = {"acct"};
  o.filter.operations = {op_type::insert, op_type::update};
  o.columns["acct"].exclude = {"ssn"};
  auto es = f.drain(o);
  REQUIRE(es.size() == 2);
  for (auto& e : es) {
    auto after = codec::decode_row(std::string_view(reinterpret_cast<const char*>(e.after->data()), e.after->size()));
    REQUIRE(after);
    CHECK(after->find("ssn") == nullptr);
    CHECK(after->find("email") != nullptr);
    CHECK_FALSE(e.key.has_value());
    std::string raw(e.after->begin(), e.after->end());
    CHECK(raw.find("123-45") == std::string::npos);
  }
  cdc::subscribe_options inc = o;
  inc.columns["acct"] = {{"id", "balance"}, {}};
  auto only = f.drain(inc);
  auto img = codec::decode_row(std::string_view(reinterpret_cast<const char*>(only[1].before->data()), only[1].before->size()));
  CHECK(img->columns == std::vector<std::string>{"id", "balance"});
}

TEST_CASE("a row filter delivers rows entering and leaving the set as insert and delete", "[cdc]") {
  fixture f;
  must(f.db->exec("INSERT INTO orders VALUES(1, 50)"));     // outside: not delivered
  must(f.db->exec("UPDATE orders SET total = 150 WHERE id = 1"));  // enters
  must(f.db->exec("UPDATE orders SET total = 180 WHERE id = 1"));  // stays: update
  must(f.db->exec("UPDATE orders SET total = 20 WHERE id = 1"));   // leaves
  must(f.db->exec("UPDATE orders SET total = 30 WHERE id = 1"));   // stays outside
  must(f.db->exec("INSERT INTO orders VALUES(2, 500)"));    // inside
  must(f.db->exec("DELETE FROM orders WHERE id = 2"));      // inside: delete
  cdc::subscribe_options o;
  o.filter.tables = {"orders"};
  o.filter.operations = {op_type::insert, op_type::update, op_type::del};
  if (GENERATE(false, true)) {
    o.where["orders"] = "total > 100";  // the same filter as a SQL expression
  } else {
    o.row_filters["orders"] = [](const row& r) { return std::get<double>(*r.find("total")) > 100; };
  }
  auto es = f.drain(o);
  REQUIRE(f.names(es) == std::vector<std::string>{"INSERT orders", "UPDATE orders", "DELETE orders", "INSERT orders",
                                                  "DELETE orders"});
  CHECK(es[0].origin == entry_origin::entered);
  CHECK_FALSE(es[0].before.has_value());
  CHECK(es[1].origin == entry_origin::wal);
  CHECK(es[2].origin == entry_origin::left);
  CHECK_FALSE(es[2].after.has_value());
  CHECK(es[3].origin == entry_origin::wal);
  auto json = cdc::to_json(std::get<cdc::change_event<row>>(must(cdc::to_event(es[0]))));
  CHECK(json.find(R"("origin":"entered")") != std::string::npos);
  // A consumer's copy of the filtered set is exact: replaying the events leaves it empty.
  std::set<int64_t> ids;
  for (auto& e : es) {
    auto ev = std::get<cdc::change_event<row>>(must(cdc::to_event(e)));
    const row& r = ev.data ? *ev.data : *ev.old_data;
    auto id = std::get<int64_t>(*r.find("id"));
    if (ev.type == cdc::change_type::del) ids.erase(id); else ids.insert(id);
  }
  CHECK(ids.empty());
}

TEST_CASE("SQL row filters: invalid at subscribe time is an error naming it; a dropped column ends the stream at its LSN",
          "[cdc][filter]") {
  fixture f;
  auto cdc = cdc::create_cdc(f.db);
  for (auto [table, expr, says] : {std::tuple{"orders", "totl > 100", "no such column: totl"},
                                   std::tuple{"orders", "total >", "syntax error"},
                                   std::tuple{"ordrs", "total > 100", "no such table"}}) {
    INFO(expr);
    cdc::subscribe_options o;
    o.where[table] = expr;
    auto s = cdc.subscribe(o);
    REQUIRE_FALSE(s);
    CHECK(s.err().code() == ec::invalid_argument);
    CHECK(s.err().message().find("'" + std::string(expr) + "'") != std::string::npos);
    CHECK(s.err().message().find(says) != std::string::npos);
  }
  // Valid now; then the column it names is dropped: the stream ends at the first row it can
  // no longer judge, naming the LSN, instead of guessing.
  cdc::subscribe_options o;
  o.from_lsn = f.db->last_lsn();
  o.filter.tables = {"orders"};
  o.filter.operations = {op_type::insert, op_type::update, op_type::del};
  o.where["orders"] = "total > 100";
  auto sub = must(cdc.subscribe(o));
  must(f.db->exec("INSERT INTO orders VALUES(7, 500)"));
  auto first = sub->next();
  REQUIRE(first.has_value());
  must(f.db->exec("CREATE TABLE orders2(id INTEGER PRIMARY KEY, note TEXT); INSERT INTO orders2 SELECT id, 'x' FROM orders; "
                  "DROP TABLE orders; ALTER TABLE orders2 RENAME TO orders"));
  auto bad = must(f.db->exec("INSERT INTO orders VALUES(8, 'y')"));
  auto next = sub->next();
  CHECK_FALSE(next.has_value());
  CHECK(sub->err().code() == ec::invalid_argument);
  CHECK(sub->err().lsn > 0);
  CHECK(sub->err().lsn <= bad.commit_lsn);
  CHECK(sub->err().message().find("no such column: total") != std::string::npos);
}

TEST_CASE("status() of an iterator subscription: processed, current LSN, buffered, lag as its consumer sees it",
          "[cdc][status]") {
  fixture f;
  cdc::subscribe_options o;
  o.from_lsn = f.db->last_lsn();
  o.filter.tables = {"users"};
  auto sub = must(cdc::create_cdc(f.db).subscribe(o));
  auto st = sub->status();
  CHECK(st.active);
  CHECK(st.current_lsn == o.from_lsn);
  CHECK(st.entries_processed == 0);
  CHECK(st.lag_entries == 0);
  CHECK(st.lag_ms == 0);
  for (int i = 0; i < 3; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('u')"));
  must(f.db->exec("INSERT INTO orders VALUES(1, 5)"));  // filtered out: never lag
  st = sub->status();
  CHECK(st.lag_entries == 3);
  auto a = sub->next();
  auto b = sub->next();
  REQUIRE(a);
  REQUIRE(b);
  st = sub->status();
  CHECK(st.entries_processed == 2);
  CHECK(st.current_lsn == b->lsn);
  CHECK(st.lag_entries == 1);
  REQUIRE(sub->next());
  st = sub->status();
  CHECK(st.entries_processed == 3);
  CHECK(st.lag_entries == 0);  // caught up, whatever other tables did
  CHECK(st.lag_ms == 0);
  sub->stop();
}

TEST_CASE("BUFFER_OVERFLOW only for a consumer that chose to fail instead of waiting", "[cdc]") {
  fixture f;
  cdc::subscribe_options o;
  o.max_buffer_size = 16;
  o.batch_size = 8;
  o.on_overflow = cdc::overflow_policy::fail;
  auto sub = must(cdc::create_cdc(f.db).subscribe(o));
  auto tx = must(f.db->begin());
  for (int i = 0; i < 100; ++i) must(tx.exec("INSERT INTO orders(total) VALUES(1)"));
  must(tx.commit());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the consumer does not read
  size_t n = 0;
  while (sub->next()) ++n;
  CHECK(n <= 16 + 8);
  REQUIRE(sub->err().code() == ec::buffer_overflow);
  CHECK(sub->err().message().find("16 entries") != std::string::npos);
}

TEST_CASE("from_time starts at the first transaction committed at or after it", "[cdc]") {
  fixture f;
  must(f.db->exec("INSERT INTO users VALUES(1, 'old')"));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto t = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  must(f.db->exec("INSERT INTO users VALUES(2, 'new')"));
  cdc::subscribe_options o;
  o.from_time = t;
  o.include_transaction_control = true;
  auto es = f.drain(o);
  REQUIRE(f.names(es) == std::vector<std::string>{"BEGIN", "INSERT users", "COMMIT"});
  CHECK(es[0].timestamp >= t);
}

TEST_CASE("include_uncommitted delivers entries as they become durable, ending with ROLLBACK", "[cdc]") {
  test::temp_dir d;
  {
    runtime rt;
    auto db = must(rt.open(d.path()));
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY)"));
  }
  append_torn_insert(d / "wal", row{{"id"}, {int64_t{7}}});
  runtime rt;
  auto db = must(rt.open(d.path()));
  cdc::subscribe_options o;
  o.from_lsn = 3;
  o.stop_at_tail = true;
  o.include_transaction_control = true;
  o.include_uncommitted = true;
  auto sub = must(cdc::create_cdc(db).subscribe(o));
  std::vector<std::string> ops;
  for (auto& e : *sub) ops.push_back(std::string(to_string(e.op)));
  CHECK(ops == std::vector<std::string>{"BEGIN", "INSERT", "ROLLBACK"});
}

TEST_CASE("subscribe_batched: a batch goes out full, or when its age is up, never split otherwise", "[cdc][batched]") {
  fixture f;
  uint64_t from = f.db->last_lsn();
  // Five one-row transactions: 15 entries with BEGIN/COMMIT, 5 inserts without.
  for (int i = 1; i <= 5; ++i) must(f.db->exec("INSERT INTO users VALUES(" + std::to_string(i) + ", 'u')"));
  cdc::subscribe_options o;
  o.from_lsn = from;
  o.batch_size = 1;  // the reader sends one entry per batch: gathering is next_batch's work

  SECTION("by size: full batches of max_batch_size, across the reader's batches") {
    auto sub = must(cdc::create_cdc(f.db).subscribe_batched(o, cdc::batch_options{2, std::chrono::milliseconds(60000)}));
    auto b1 = sub->next_batch();
    auto b2 = sub->next_batch();
    REQUIRE(b1.size() == 2);  // waited for nothing but the second entry: a 60 s age never ran out
    REQUIRE(b2.size() == 2);
    CHECK(b1[0].lsn < b1[1].lsn);
    CHECK(b1[1].lsn < b2[0].lsn);
    CHECK(sub->status().entries_processed == 4);
  }
  SECTION("by age: a batch that cannot fill goes out when its age is up, with everything that arrived") {
    auto sub = must(cdc::create_cdc(f.db).subscribe_batched(o, cdc::batch_options{1000, std::chrono::milliseconds(200)}));
    std::vector<wal_entry> b;
    auto got = std::async(std::launch::async, [&] { b = sub->next_batch(); });
    // Without the age timer this never returns (1000 entries never come).
    REQUIRE(got.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
    REQUIRE(b.size() == 5);
    for (auto& e : b) CHECK(e.op == op_type::insert);
    // A commit while the next batch waits joins it.
    auto next = std::async(std::launch::async, [&] { return sub->next_batch(); });
    must(f.db->exec("INSERT INTO users VALUES(6, 'u'); INSERT INTO users VALUES(7, 'u')"));
    REQUIRE(next.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
    auto b2 = next.get();
    REQUIRE(b2.size() == 2);
    CHECK(b2[0].lsn > b.back().lsn);
    sub->stop();
  }
  SECTION("an age of 0 takes what has arrived; the end of the range ends the last batch") {
    o.stop_at_tail = true;
    auto sub = must(cdc::create_cdc(f.db).subscribe_batched(o, cdc::batch_options{1000, std::chrono::milliseconds(0)}));
    size_t total = 0, batches = 0;
    for (auto b = sub->next_batch(); !b.empty(); b = sub->next_batch()) total += b.size(), ++batches;
    CHECK(total == 5);
    CHECK(batches >= 1);
    CHECK_FALSE(sub->err());
  }
}

TEST_CASE("the WAL capturer batches by max_batch_size and max_batch_age, and reports status()", "[cdc][batched]") {
  fixture f;
  uint64_t from = f.db->last_lsn();
  for (int i = 1; i <= 7; ++i) must(f.db->exec("INSERT INTO orders VALUES(" + std::to_string(i) + ", 1.5)"));
  cdc::capturer_options o;
  o.from_lsn = from;
  o.max_batch_size = 3;
  o.max_batch_age = std::chrono::milliseconds(100);
  auto cap = cdc::create_cdc(f.db).create_wal_capturer(o);
  CHECK_FALSE(cap.status().active);
  CHECK(cap.status().current_lsn == from);
  std::vector<size_t> sizes;
  uint64_t last = from;
  while (sizes.size() < 3) {
    auto b = cap.capture_next();
    REQUIRE(b);
    sizes.push_back(b->entries.size());
    CHECK(b->start_lsn > last);
    last = b->end_lsn;
    cap.set_position(b->end_lsn);
  }
  // 7 inserts: two full batches of 3, then one that goes out by age with the last insert.
  CHECK(sizes == std::vector<size_t>{3, 3, 1});
  auto st = cap.status();
  CHECK(st.active);
  CHECK(st.entries_processed == 7);
  CHECK(st.current_lsn == last);
  CHECK(st.lag_entries == 0);
  cap.stop();
}

TEST_CASE("HLCs of committed entries increase with the LSN across committing threads and a reopen, and events carry them",
          "[cdc][hlc]") {
  test::temp_dir d;
  uint32_t node = 0;
  std::vector<wal_entry> first;
  {
    runtime rt;
    auto db = must(rt.open(d.path()));
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, who INTEGER)"));
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) must(db->exec("INSERT INTO t(who) VALUES(?)", {int64_t{t}}));
      });
    for (auto& t : ts) t.join();
    cdc::subscribe_options o;
    o.include_transaction_control = true;
    o.stop_at_tail = true;
    auto sub = must(cdc::create_cdc(db).subscribe(o));
    for (auto& e : *sub) first.push_back(e);
    REQUIRE_FALSE(sub->err());
  }
  REQUIRE(first.size() == 3 + 200 * 3);
  node = first.front().hlc.node;
  CHECK(node != 0);
  for (size_t i = 1; i < first.size(); ++i) {
    REQUIRE(first[i].hlc.node == node);
    REQUIRE(first[i - 1].hlc < first[i].hlc);
  }
  {
    runtime rt;
    auto db = must(rt.open(d.path()));
    must(db->exec("INSERT INTO t(who) VALUES(9)"));
    cdc::subscribe_options o;
    o.include_transaction_control = true;
    o.stop_at_tail = true;
    o.from_lsn = first.back().lsn;
    auto sub = must(cdc::create_cdc(db).subscribe(o));
    std::vector<wal_entry> more;
    for (auto& e : *sub) more.push_back(e);
    REQUIRE(more.size() == 3);
    CHECK(more[0].hlc.node == node);  // the same database after a reopen
    CHECK(first.back().hlc < more[0].hlc);
    auto ev = must(cdc::to_event(more[1]));
    auto json = cdc::to_json(ev);
    CHECK(json.find(",\"lsn\":" + std::to_string(more[1].lsn) + ",\"hlc\":\"" + to_string(more[1].hlc) + "\"") !=
          std::string::npos);
  }
}

TEST_CASE("observe_hlc is the HLC's receive rule: a write after observing another shard's later stamp is stamped "
          "after it, even when this machine's clock is behind",
          "[cdc][hlc]") {
  test::temp_dir a_dir, b_dir;
  runtime rt;
  auto a = must(rt.open(a_dir.path()));
  auto b = must(rt.open(b_dir.path()));
  must(a->exec("CREATE TABLE t(id INTEGER PRIMARY KEY)"));
  must(b->exec("CREATE TABLE t(id INTEGER PRIMARY KEY)"));
  must(a->exec("INSERT INTO t VALUES(1)"));
  hlc_stamp on_a = a->last_hlc();
  CHECK(on_a.node != 0);
  CHECK(on_a.node != b->last_hlc().node);
  // Shard A's clock runs a minute ahead of B's (as if B's were a minute behind).
  hlc_stamp ahead{on_a.physical + 60000, 7, on_a.node};
  auto after = b->observe_hlc(ahead);
  CHECK(ahead < after);
  must(b->exec("INSERT INTO t VALUES(2)"));
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.filter.operations = {op_type::insert};
  auto sub = must(cdc::create_cdc(b).subscribe(o));
  std::vector<wal_entry> got;
  for (auto& e : *sub) got.push_back(e);
  REQUIRE(got.size() == 1);
  CHECK(ahead < got[0].hlc);
  CHECK(got[0].hlc.physical >= ahead.physical);
  CHECK(b->last_hlc() >= got[0].hlc);
  must(a->close());
  must(b->close());
  CHECK(a->last_hlc() == hlc_stamp{});
}
