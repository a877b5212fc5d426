// Typed change events, DECODE_ERROR policies, the table helper, batches and the WAL capturer,
// consumer actors, and the callback stream's pause/resume/status/ack.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <dosql/stream.hpp>
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
  // A paused stream pauses its reader too: nothing more is read from the WAL into memory (the
  // 30 new entries stay on disk) instead of filling the credit window.
  CHECK(stream.status().buffered_entries == 0);
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

// ---- subscriptions end cleanly (issue 10) ---------------------------------------------------

#include <caf/all.hpp>

#include <cstdio>

#include "actors/subscription_reader.hpp"
#include <dosql/slots.hpp>

namespace {

// Runs `f` on this thread while a watchdog aborts the whole binary (with a message) if it has
// not returned within 30 s: a hang is the bug looked for; nothing else here depends on timing.
template <class F>
void within_watchdog(const char* what, F f) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread dog([&] {
    std::unique_lock<std::mutex> g(mu);
    if (!cv.wait_for(g, 30s, [&] { return done; })) {
      std::fprintf(stderr, "watchdog: '%s' did not return within 30 s\n", what);
      std::fflush(stderr);
      std::abort();
    }
  });
  f();
  {
    std::lock_guard<std::mutex> g(mu);
    done = true;
  }
  cv.notify_all();
  dog.join();
}

// A flag set by another thread, with the error it came with.
struct ending {
  std::mutex mu;
  std::condition_variable cv;
  bool ended = false;
  std::vector<error> errors;
  void error_seen(const error& e) {
    std::lock_guard<std::mutex> g(mu);
    errors.push_back(e);
  }
  void end() {
    {
      std::lock_guard<std::mutex> g(mu);
      ended = true;
    }
    cv.notify_all();
  }
  void wait() {  // only under within_watchdog
    std::unique_lock<std::mutex> g(mu);
    cv.wait(g, [&] { return ended; });
  }
};

struct ending_consumer : cdc::consumer {
  std::shared_ptr<ending> e = std::make_shared<ending>();
  uint64_t on_batch(std::span<const entry_view> v) override { return v.back().lsn; }
  void on_end(const error& err) override {
    e->error_seen(err);
    e->end();
  }
};

// A user actor speaking the consumer protocol: acknowledges everything, records the end.
cdc::consumer_actor::behavior_type acking_actor(cdc::consumer_actor::pointer self, std::shared_ptr<ending> e) {
  return {
    [](cdc::batch_atom, const cdc::batch& b) -> uint64_t {
      std::vector<entry_view> v;
      (void)cdc::decode_batch(b, v);  // (no Catch2 assertions off the test thread)
      return v.empty() ? 0 : v.back().lsn;
    },
    [=](cdc::end_atom, const cdc::subscription_end& end) {
      e->error_seen(end.to_error());
      e->end();
    },
    [](cdc::heartbeat_atom, uint64_t) {},
    [=](cdc::watch_atom, const cdc::reader_control_actor& r) { self->monitor(r); },
  };
}

}  // namespace

TEST_CASE("closing the database ends every kind of subscription with CLOSED, and none hangs", "[stream][endings]") {
  fixture f;
  for (int i = 0; i < 20; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('a')"));
  auto cdc = cdc::create_cdc(f.db);
  auto slots = cdc::create_slot_manager(f.db);
  must(slots->create_slot("s", [] {
    cdc::create_slot_options o;
    o.start_lsn = 0;
    return o;
  }()));

  // Blocking consumers, each on its own thread, reading until their range ends.
  auto iter = must(cdc.subscribe({}));
  auto batched = must(cdc.subscribe_batched({}));
  auto typed = must(cdc.subscribe_changes<row>({}));
  auto from_slot = must(slots->subscribe_from_slot("s"));
  cdc::capturer_options co;
  co.max_batch_size = 7;
  auto capturer = cdc.create_wal_capturer(co);
  error iter_err, batched_err, typed_err, slot_err, capturer_err;
  std::atomic<size_t> iter_n{0};
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    for (const wal_entry& e : *iter) iter_n += e.lsn > 0;
    iter_err = iter->err();
  });
  threads.emplace_back([&] {
    while (!batched->next_batch().empty()) {
    }
    batched_err = batched->err();
  });
  threads.emplace_back([&] {
    while (typed.next()) {
    }
    typed_err = typed.err();
  });
  threads.emplace_back([&] {
    while (from_slot->next()) {
    }
    slot_err = from_slot->err();
  });
  threads.emplace_back([&] {
    while (capturer.capture_next()) {
    }
    capturer_err = capturer.err();
  });

  // Callback stream, consumer interface, user actor.
  auto streamed = std::make_shared<ending>();
  cdc::stream_options so;
  so.handler.on_error = [streamed](const error& e) { streamed->error_seen(e); };
  so.handler.on_end = [streamed] { streamed->end(); };
  auto stream = cdc::create_cdc_stream(cdc, so);
  REQUIRE_FALSE(stream.start());
  auto consumer = std::make_shared<ending_consumer>();
  auto consumer_sub = must(cdc::spawn_consumer(cdc, consumer, {}));
  auto user_end = std::make_shared<ending>();
  auto user = f.rt.system().spawn(acking_actor, user_end);
  auto user_sub = must(cdc::subscribe_actor(cdc, user, {}));

  // Some of them are blocked by now, some maybe not yet: either way the close must end them.
  within_watchdog("the iterator reaching the inserts", [&] {
    while (iter_n < 20) std::this_thread::sleep_for(1ms);
  });
  REQUIRE_FALSE(f.db->close());

  within_watchdog("blocking subscriptions after close", [&] {
    for (auto& t : threads) t.join();
  });
  for (auto* e : {&iter_err, &batched_err, &typed_err, &slot_err, &capturer_err}) {
    INFO(e->to_string());
    CHECK(e->code() == ec::closed);
    CHECK(e->message().find("closed") != std::string::npos);
  }
  within_watchdog("callback stream after close", [&] { streamed->wait(); });
  REQUIRE(streamed->errors.size() == 1);
  CHECK(streamed->errors[0].code() == ec::closed);
  CHECK_FALSE(stream.status().active);
  within_watchdog("consumer interface after close", [&] { consumer->e->wait(); });
  REQUIRE(consumer->e->errors.size() == 1);
  CHECK(consumer->e->errors[0].code() == ec::closed);
  within_watchdog("user actor after close", [&] { user_end->wait(); });
  REQUIRE(user_end->errors.size() == 1);
  CHECK(user_end->errors[0].code() == ec::closed);
  within_watchdog("actor_subscription::outcome after close", [&] {
    while (!user_sub.outcome()) std::this_thread::sleep_for(1ms);
  });
  CHECK(user_sub.outcome()->code() == ec::closed);

  // Subscribing to a closed database fails at once, by every path.
  within_watchdog("subscribing to a closed database", [&] {
    auto s = cdc.subscribe({});
    REQUIRE_FALSE(s);
    CHECK(s.err().code() == ec::closed);
    auto t = cdc.subscribe_changes<row>({});
    REQUIRE_FALSE(t);
    CHECK(t.err().code() == ec::closed);
    auto fs = slots->subscribe_from_slot("s");
    REQUIRE_FALSE(fs);
    CHECK(fs.err().code() == ec::closed);
    auto cap = cdc.create_wal_capturer({});
    CHECK_FALSE(cap.capture_next());
    CHECK(cap.err().code() == ec::closed);
    auto st = cdc::create_cdc_stream(cdc, {});
    auto se = st.start();
    CHECK(se.code() == ec::closed);
    auto c = cdc::spawn_consumer(cdc, std::make_shared<ending_consumer>(), {});
    REQUIRE_FALSE(c);
    CHECK(c.err().code() == ec::closed);
    auto a = cdc::subscribe_actor(cdc, user, {});
    REQUIRE_FALSE(a);
    CHECK(a.err().code() == ec::closed);
    CHECK(f.db->exec("INSERT INTO users(name) VALUES('x')").err().code() == ec::closed);
  });
  caf::anon_send_exit(user, caf::exit_reason::user_shutdown);
}

TEST_CASE("a throwing stream handler stops with SUBSCRIPTION_FAILED at its LSN; retry, dead letter, skip are explicit",
          "[stream][endings]") {
  fixture f;
  std::vector<uint64_t> lsn;  // the INSERT of 'a'..'e'
  for (const char* n : {"a", "b", "c", "d", "e"})
    lsn.push_back(must(f.db->exec("INSERT INTO users(name) VALUES(?)", {std::string(n)})).commit_lsn - 1);
  const uint64_t bad = lsn[2];

  struct run {
    std::shared_ptr<ending> e = std::make_shared<ending>();
    std::mutex mu;
    std::vector<std::string> seen;
    int calls_on_c = 0;
  };
  // Starts a stream over users whose handler fails on 'c' the first `fail_times` calls.
  auto start = [&](run& r, cdc::stream_options o, int fail_times) {
    o.filter.tables = {"users"};
    o.filter.operations = {op_type::insert};
    o.handler.on_change = [&r, fail_times](const cdc::change_event<row>& c) {
      auto name = std::get<std::string>(*c.data->find("name"));
      std::lock_guard<std::mutex> g(r.mu);
      if (name == "c" && r.calls_on_c++ < fail_times) throw std::runtime_error("boom");
      r.seen.push_back(name);
      if (name == "e") r.e->end();
    };
    o.handler.on_error = [&r](const error& e) { r.e->error_seen(e); };
    o.handler.on_end = [&r] { r.e->end(); };
    auto s = std::make_unique<cdc::cdc_stream>(cdc::create_cdc(f.db), std::move(o));
    REQUIRE_FALSE(s->start());
    within_watchdog("the stream's end (or its last entry)", [&] { r.e->wait(); });
    return s;
  };

  SECTION("default: stop, losing nothing") {
    run r;
    auto s = start(r, {}, 1000);
    REQUIRE(r.e->errors.size() == 1);
    const error& e = r.e->errors[0];
    CHECK(e.code() == ec::subscription_failed);
    CHECK(e.lsn == bad);
    CHECK(e.message().find("boom") != std::string::npos);
    CHECK(e.message().find(std::to_string(bad)) != std::string::npos);
    CHECK(r.seen == std::vector<std::string>{"a", "b"});
    CHECK_FALSE(s->status().active);
    CHECK(s->status().current_lsn < bad);  // the failed entry is not processed: resume before it
  }
  SECTION("retry: succeeds on a later attempt") {
    run r;
    cdc::stream_options o;
    o.on_failure = cdc::failure_policy::retry;
    o.retry.max_attempts = 3;
    o.retry.initial_delay_ms = 1;
    o.retry.jitter = 0;
    auto s = start(r, o, 2);
    CHECK(r.e->errors.empty());
    CHECK(r.seen == std::vector<std::string>{"a", "b", "c", "d", "e"});
    CHECK(r.calls_on_c == 3);
  }
  SECTION("retry: gives up and stops at the LSN") {
    run r;
    cdc::stream_options o;
    o.on_failure = cdc::failure_policy::retry;
    o.retry.max_attempts = 2;
    o.retry.initial_delay_ms = 1;
    auto s = start(r, o, 1000);
    REQUIRE(r.e->errors.size() == 1);
    CHECK(r.e->errors[0].code() == ec::subscription_failed);
    CHECK(r.e->errors[0].lsn == bad);
    CHECK(r.e->errors[0].message().find("gave up after 2 attempts") != std::string::npos);
    CHECK(r.seen == std::vector<std::string>{"a", "b"});
  }
  SECTION("dead letter: the entry is stored durably, the stream goes on") {
    run r;
    cdc::stream_options o;
    o.on_failure = cdc::failure_policy::dead_letter;
    o.retry.max_attempts = 2;
    o.retry.initial_delay_ms = 1;
    o.dead_letters = must(reliability::dead_letter_queue::open(f.d / "dead.sqlite"));
    auto s = start(r, o, 1000);
    CHECK(r.seen == std::vector<std::string>{"a", "b", "d", "e"});
    REQUIRE(r.e->errors.size() == 1);
    CHECK(r.e->errors[0].lsn == bad);
    auto letters = must(o.dead_letters->list());
    REQUIRE(letters.size() == 1);
    CHECK(letters[0].entry.lsn == bad);
    CHECK(letters[0].attempts == 2);
    CHECK(letters[0].last_error.find("boom") != std::string::npos);
  }
  SECTION("skip: reported, then at-most-once") {
    run r;
    cdc::stream_options o;
    o.on_failure = cdc::failure_policy::skip;
    auto s = start(r, o, 1000);
    CHECK(r.seen == std::vector<std::string>{"a", "b", "d", "e"});
    REQUIRE(r.e->errors.size() == 1);
    CHECK(r.e->errors[0].code() == ec::subscription_failed);
    CHECK(r.e->errors[0].lsn == bad);
  }
  SECTION("dead letter without a queue is refused") {
    cdc::stream_options o;
    o.on_failure = cdc::failure_policy::dead_letter;
    auto s = cdc::create_cdc_stream(cdc::create_cdc(f.db), o);
    CHECK(s.start().code() == ec::invalid_argument);
  }
}

namespace {

// A user actor that takes batches and never answers (its owner kills it).
struct holder {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t first = 0;
};
cdc::consumer_actor::behavior_type holding_actor(cdc::consumer_actor::pointer self, std::shared_ptr<holder> h) {
  return {
    [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
      std::vector<entry_view> v;
      (void)cdc::decode_batch(b, v);
      {
        std::lock_guard<std::mutex> g(h->mu);
        if (!h->first && !v.empty()) h->first = v.front().lsn;
      }
      h->cv.notify_all();
      return self->make_response_promise<uint64_t>();
    },
    [](cdc::end_atom, const cdc::subscription_end&) {},
    [](cdc::heartbeat_atom, uint64_t) {},
    [](cdc::watch_atom, const cdc::reader_control_actor&) {},
  };
}

struct throwing_consumer : cdc::consumer {
  std::shared_ptr<ending> e = std::make_shared<ending>();
  std::atomic<uint64_t> first{0};
  uint64_t on_batch(std::span<const entry_view> v) override {
    first = v.front().lsn;
    throw std::runtime_error("consumer broke");
  }
  void on_end(const error& err) override {
    e->error_seen(err);
    e->end();
  }
};

}  // namespace

TEST_CASE("a consumer that throws or dies ends its subscription with SUBSCRIPTION_FAILED and the LSN",
          "[stream][endings]") {
  fixture f;
  for (int i = 0; i < 5; ++i) must(f.db->exec("INSERT INTO users(name) VALUES('a')"));
  auto cdc = cdc::create_cdc(f.db);

  SECTION("the consumer interface's on_batch throws") {
    auto c = std::make_shared<throwing_consumer>();
    auto sub = must(cdc::spawn_consumer(cdc, c, {}));
    within_watchdog("on_end after on_batch threw", [&] { c->e->wait(); });
    REQUIRE(c->e->errors.size() == 1);
    CHECK(c->e->errors[0].code() == ec::subscription_failed);
    CHECK(c->first > 0);
    CHECK(c->e->errors[0].lsn == c->first);
    CHECK(c->e->errors[0].message().find("consumer broke") != std::string::npos);
    within_watchdog("outcome after on_batch threw", [&] {
      while (!sub.outcome()) std::this_thread::sleep_for(1ms);
    });
    CHECK(sub.outcome()->code() == ec::subscription_failed);
    CHECK(sub.outcome()->lsn == c->first);
    // The consumer's own error crossed the actor boundary as itself: said once, not wrapped.
    auto msg = sub.outcome()->message();
    CHECK(msg.find("consumer broke") != std::string::npos);
    CHECK(msg.find("subscription failed at lsn") == msg.rfind("subscription failed at lsn"));
    CHECK(msg.find("SUBSCRIPTION_FAILED") == std::string::npos);
  }
  SECTION("a user actor dies holding a batch") {
    auto h = std::make_shared<holder>();
    auto user = f.rt.system().spawn(holding_actor, h);
    cdc::subscribe_options o;
    o.from_lsn = 3;
    auto sub = must(cdc::subscribe_actor(cdc, user, o));
    within_watchdog("the first batch", [&] {
      std::unique_lock<std::mutex> g(h->mu);
      h->cv.wait(g, [&] { return h->first != 0; });
    });
    CHECK(h->first > 3);
    caf::anon_send_exit(user, caf::exit_reason::kill);
    within_watchdog("outcome after the consumer died", [&] {
      while (!sub.outcome()) std::this_thread::sleep_for(1ms);
    });
    CHECK(sub.outcome()->code() == ec::subscription_failed);
    CHECK(sub.outcome()->lsn == h->first);
    CHECK(sub.outcome()->message().find("lsn " + std::to_string(h->first)) != std::string::npos);
    must(f.db->exec("INSERT INTO users(name) VALUES('later')"));  // the ended reader is gone, not waiting
  }
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
