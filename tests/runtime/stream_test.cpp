// Typed change events, DECODE_ERROR policies, the table helper, batches and the WAL capturer,
// consumer actors, and the callback stream's pause/resume/status/ack.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "runtime/stream.hpp"
#include "runtime/support.hpp"
#include "test_util.hpp"

using namespace dosql;
using test::must;
using namespace std::chrono_literals;

namespace {


struct user {
  int64_t id;
  std::string name;
};

user to_user(const row& r) {
  auto* name = r.find("name");
  if (!name || !std::holds_alternative<std::string>(*name)) throw std::runtime_error("name is not text");
  return {std::get<int64_t>(*r.find("id")), std::get<std::string>(*name)};
}

struct fixture : test::db_fixture {
  fixture() {
    must(db->exec("CREATE TABLE users(id INTEGER PRIMARY KEY, name); CREATE TABLE orders(id INTEGER PRIMARY KEY, total REAL)"));
  }
};

// Waits (bounded) for a condition polled from the test thread.
template <class F>
bool eventually(F f) {
  for (int i = 0; i < 500; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return f();
}

}  // namespace

TEST_CASE("typed change events decode rows into the user's type", "[stream]") {
  fixture f;
  must(f.db->exec("INSERT INTO users VALUES(1, 'Alice')"));
  must(f.db->exec("UPDATE users SET name = 'Alice Smith' WHERE id = 1"));
  must(f.db->exec("INSERT INTO orders VALUES(1, 5)"));
  must(f.db->exec("DELETE FROM users WHERE id = 1"));
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.filter.tables = {"users"};
  o.filter.operations = {op_type::insert, op_type::update, op_type::del};
  auto sub = must(cdc::create_cdc(f.db).subscribe_changes<user>(o, to_user));
  std::vector<std::string> seen;
  for (auto& ev : sub) {
    auto& c = std::get<cdc::change_event<user>>(ev);
    if (c.type == cdc::change_type::insert) seen.push_back("new " + c.data->name);
    if (c.type == cdc::change_type::update) seen.push_back(c.old_data->name + " -> " + c.data->name);
    if (c.type == cdc::change_type::del) seen.push_back("gone " + c.old_data->name);
  }
  CHECK_FALSE(sub.err());
  CHECK(seen == std::vector<std::string>{"new Alice", "Alice -> Alice Smith", "gone Alice Smith"});
  // The table helper gives rows by default.
  auto t = must(cdc::subscribe_table(f.db, "orders"));
  auto first = t.next();
  REQUIRE(first);
  CHECK(std::get<cdc::change_event<row>>(*first).data->find("total") != nullptr);
}

TEST_CASE("a decoder that throws gives DECODE_ERROR with the LSN: stop or skip", "[stream]") {
  fixture f;
  must(f.db->exec("INSERT INTO users VALUES(1, 'ok')"));
  auto bad = must(f.db->exec("INSERT INTO users VALUES(2, 42)")).commit_lsn;  // name is not text
  must(f.db->exec("INSERT INTO users VALUES(3, 'fine')"));
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.filter.operations = {op_type::insert};
  auto stop = must(cdc::create_cdc(f.db).subscribe_changes<user>(o, to_user, cdc::decode_error_policy::stop));
  size_t n = 0;
  for (auto& ev : stop) n += std::holds_alternative<cdc::change_event<user>>(ev);
  CHECK(n == 1);
  REQUIRE(stop.err().code() == ec::decode_error);
  CHECK(stop.err().message().find("lsn " + std::to_string(bad - 1)) != std::string::npos);
  auto skip = must(cdc::create_cdc(f.db).subscribe_changes<user>(o, to_user, cdc::decode_error_policy::skip));
  std::vector<std::string> names;
  for (auto& ev : skip) names.push_back(std::get<cdc::change_event<user>>(ev).data->name);
  CHECK(names == std::vector<std::string>{"ok", "fine"});
  CHECK(skip.decode_errors().size() == 1);
  CHECK_FALSE(skip.err());
}

TEST_CASE("the WAL capturer yields numbered batches and resumes from set_position", "[stream]") {
  fixture f;
  auto tx = must(f.db->begin());
  for (int i = 0; i < 2500; ++i) must(tx.exec("INSERT INTO orders(total) VALUES(?)", {double(i)}));
  must(tx.commit());
  cdc::capturer_options o;
  o.max_batch_size = 1000;
  o.stop_at_tail = true;
  o.filter.tables = {"orders"};
  o.filter.operations = {op_type::insert};
  auto cap = cdc::create_cdc(f.db).create_wal_capturer(o);
  uint64_t total = 0, expect_id = 1, last_end = 0;
  while (auto b = cap.capture_next()) {
    CHECK(b->batch_id == expect_id++);
    CHECK(b->entries.size() <= 1000);
    CHECK(b->start_lsn > last_end);
    CHECK(b->end_lsn == b->entries.back().lsn);
    total += b->entries.size();
    last_end = b->end_lsn;
    cap.set_position(b->end_lsn);
    if (total >= 1200) break;
  }
  // A new capturer from the acknowledged position sees exactly the rest.
  o.from_lsn = cap.position();
  auto rest = cdc::create_cdc(f.db).create_wal_capturer(o);
  while (auto b = rest.capture_next()) total += b->entries.size();
  CHECK(total == 2500);
}

TEST_CASE("a consumer actor (the small interface) receives batches and acknowledges them", "[stream]") {
  fixture f;
  struct counter : cdc::consumer {
    std::mutex mu;
    std::condition_variable cv;
    uint64_t entries = 0, last = 0;
    bool ended = false, ordered = true;
    error end_error;
    uint64_t on_batch(std::span<const entry_view> es) override {  // on the consumer's thread
      std::lock_guard<std::mutex> g(mu);
      for (auto& e : es) {
        ordered = ordered && e.lsn > last;
        last = e.lsn;
        ++entries;
      }
      return last;
    }
    void on_end(const error& e) override {
      std::lock_guard<std::mutex> g(mu);
      end_error = e;
      ended = true;
      cv.notify_all();
    }
  };
  for (int i = 0; i < 100; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('x')"));
  auto c = std::make_shared<counter>();
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.batch_size = 9;
  o.max_buffer_size = 20;
  auto cdc = cdc::create_cdc(f.db);
  auto sub = must(cdc::spawn_consumer(cdc, c, o));
  std::unique_lock<std::mutex> g(c->mu);
  REQUIRE(c->cv.wait_for(g, 10s, [&] { return c->ended; }));
  CHECK_FALSE(c->end_error);
  CHECK(c->ordered);
  CHECK(c->entries == 102);  // two SCHEMA entries and the 100 inserts
}

TEST_CASE("the callback stream: handlers, pause/resume, status, manual ack", "[stream]") {
  fixture f;
  std::atomic<int> changes{0}, commits{0}, ends{0};
  cdc::stream_options o;
  o.filter.tables = {"users"};
  o.handler.on_change = [&](const cdc::change_event<row>&) { ++changes; };
  o.handler.on_transaction = [&](const cdc::transaction_event& t) { commits += t.type == cdc::transaction_event::kind::commit; };
  o.handler.on_end = [&] { ++ends; };
  auto stream = cdc::create_cdc_stream(cdc::create_cdc(f.db), o);
  REQUIRE_FALSE(stream.start());
  for (int i = 0; i < 10; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('a')"));
  REQUIRE(eventually([&] { return changes == 10; }));
  CHECK(commits == 11);  // the CREATE TABLE users transaction passes the table filter too
  auto st = stream.status();
  CHECK(st.active);
  CHECK(st.entries_processed >= 30);  // BEGIN, change, COMMIT each
  CHECK(st.current_lsn == f.db->durable_lsn());
  CHECK(st.lag_entries == 0);
  stream.pause();
  REQUIRE(eventually([&] { return stream.status().paused; }));
  for (int i = 0; i < 10; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('b')"));
  std::this_thread::sleep_for(100ms);
  CHECK(changes == 10);  // nothing handled while paused
  CHECK(stream.status().lag_entries > 0);
  stream.resume();
  REQUIRE(eventually([&] { return changes == 20; }));
  stream.stop();
  CHECK(ends == 1);
  CHECK_FALSE(stream.status().active);

  // Manual acknowledgement: without ack() the window (8 entries) fills and delivery stops.
  std::atomic<uint64_t> last{0};
  cdc::stream_options m;
  m.auto_ack = false;
  m.max_buffer_size = 8;
  m.batch_size = 4;
  m.filter.tables = {"orders"};
  m.handler.on_change = [&](const cdc::change_event<row>& c) { last = c.lsn; ++changes; };
  auto manual = cdc::create_cdc_stream(cdc::create_cdc(f.db), m);
  REQUIRE_FALSE(manual.start());
  changes = 0;
  auto tx = must(f.db->begin());
  for (int i = 0; i < 50; ++i) must(tx.exec("INSERT INTO orders(total) VALUES(1)"));
  must(tx.commit());
  REQUIRE(eventually([&] { return changes >= 1; }));
  std::this_thread::sleep_for(100ms);
  CHECK(changes <= 8);
  manual.ack(last);
  REQUIRE(eventually([&] {
    manual.ack(last);
    return changes == 50;
  }));
}

TEST_CASE("stream_status lag: 0 when caught up (filtered), entries it would receive and a growing age when paused",
          "[stream][lag]") {
  fixture f;
  std::atomic<int> changes{0};
  cdc::stream_options o;
  o.filter.tables = {"users"};
  o.handler.on_change = [&](const cdc::change_event<row>&) { ++changes; };
  auto stream = cdc::create_cdc_stream(cdc::create_cdc(f.db), o);
  REQUIRE_FALSE(stream.start());
  for (int i = 0; i < 3; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('a')"));
  REQUIRE(eventually([&] { return changes == 3; }));
  for (int i = 0; i < 5; ++i) must(f.db->exec("INSERT INTO orders(total) VALUES(1)"));  // filtered out
  auto st = stream.status();
  CHECK(st.lag_entries == 0);  // not the BEGIN/COMMIT or the orders it will never receive
  CHECK(st.lag_ms == 0);
  stream.pause();
  REQUIRE(eventually([&] { return stream.status().paused; }));
  for (int i = 0; i < 2; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('b')"));
  std::this_thread::sleep_for(150ms);
  st = stream.status();
  CHECK(st.lag_entries == 2);
  CHECK(st.lag_ms >= 150);  // the oldest unprocessed commit's age grows while paused
  stream.resume();
  REQUIRE(eventually([&] { return changes == 5; }));
  REQUIRE(eventually([&] { return stream.status().lag_entries == 0; }));
  CHECK(stream.status().lag_ms == 0);
  stream.stop();
}
