// Restart safety: the invalidator consumes a replication slot, so what was committed while it
// was not running is invalidated when it comes back, before it reports itself caught up.
//  - in-process: stop the manager, write, start a new one on the same cache;
//  - for real: `dosql-cache demo` on Redis SIGKILLed at a random moment while it writes and
//    reads, more writes while it is down, then restarted: its readers (which start once it
//    caught up) see no stale value and the cache it leaves matches the database.
#include "support.hpp"

#include <signal.h>

#include <random>
#include <thread>

using namespace cache_test;
using namespace dosql_cache;
using namespace std::chrono_literals;

namespace {

// Changes while no invalidator runs: every user renamed, products moved, orders deleted.
void write_while_down(const std::shared_ptr<dosql::database>& db, int round) {
  const std::string tag = std::to_string(round);
  for (const std::string& sql : std::vector<std::string>{"UPDATE users SET name = name || '~" + tag + "', version = version + 1",
                   "UPDATE OR IGNORE products SET id = id + 1000 * (" + tag + " + 1), version = version + 1 WHERE id % 3 = 0 AND id < 1000",
                   "UPDATE products SET price = price + 1, version = version + 1", "DELETE FROM orders WHERE id % 4 = 1"}) {
    auto r = db->exec(sql);
    if (!r) FAIL(r.err().to_string());
  }
}

}  // namespace

TEST_CASE("a restarted invalidator applies what was committed while it was down before it is caught up",
          "[cache][restart]") {
  const std::string which = GENERATE(as<std::string>{}, "memory", "redis");
  INFO("backend " << which);
  std::unique_ptr<redis_server> rs;
  if (which == "redis") rs = std::make_unique<redis_server>();
  db_fixture f;
  auto b = make_backend(which, rs.get());
  for (int i = 1; i <= 10; ++i) {
    auto r = f.db->exec("INSERT INTO users(id, name, email) VALUES(?, 'u', 'e')", {int64_t{i}});
    REQUIRE(r);
  }
  auto fetch = [](int64_t id) {
    return [id](dosql::read_snapshot& s) { return workload::fetch_row(s, "users", id); };
  };
  {
    auto cm = must(cache_manager::start(f.db, b, guide_config()));
    REQUIRE(cm->wait_caught_up(60s));
    for (int64_t i = 1; i <= 10; ++i) must(cm->get("user:" + std::to_string(i), fetch(i)));
    CHECK(cm->stats().fills_stored == 10);
  }  // stopped: its slot stays
  auto r = f.db->exec("UPDATE users SET name = 'renamed', version = version + 1 WHERE id <= 5");
  REQUIRE(r);
  const uint64_t c = r->commit_lsn;
  for (int64_t i = 1; i <= 10; ++i) CHECK(must(b->get("user:" + std::to_string(i))).has_value());  // stale now

  auto cm = must(cache_manager::start(f.db, b, guide_config()));
  REQUIRE(cm->wait_caught_up(60s));
  CHECK(cm->applied_lsn() >= c);
  auto snap = must(f.db->snapshot());
  for (int64_t i = 1; i <= 10; ++i) {
    auto in_cache = must(b->get("user:" + std::to_string(i)));
    REQUIRE(in_cache);  // users is update_on_change: rewritten, not deleted
    CHECK(in_cache->value == *must(workload::fetch_row(snap, "users", i)));
  }
  CHECK(cm->invalidation()->stats().transactions >= 1);
}

TEST_CASE("without its slot's history the cache is flushed: nothing older is served", "[cache][restart]") {
  db_fixture f;
  auto b = make_memory_backend();
  REQUIRE(f.db->exec("INSERT INTO users(id, name, email) VALUES(1, 'u', 'e')"));
  const uint64_t l = must(f.db->snapshot()).lsn();
  REQUIRE(must(b->fill("user:1", "from before", l, 1h)) == fill_outcome::stored);
  REQUIRE(f.db->exec("UPDATE users SET name = 'changed' WHERE id = 1"));  // with no invalidator running
  auto cfg = guide_config();
  cfg.invalidation.slot = "fresh";  // no such slot yet: what the cache holds cannot be judged
  auto cm = must(cache_manager::start(f.db, b, cfg));
  REQUIRE(cm->wait_caught_up(60s));
  CHECK_FALSE(must(b->get("user:1")));
  CHECK(cm->invalidation()->stats().flushes == 1);
}

TEST_CASE("dosql-cache demo is SIGKILLed mid-run, the database changes, the restarted demo reads nothing stale",
          "[cache][restart][kill]") {
  redis_server rs;
  temp_dir d;
  const std::string dir = d.path() + "/db";
  const std::string redis = "127.0.0.1:" + std::to_string(rs.port());
  std::mt19937_64 rng(std::random_device{}());
  for (int round = 0; round < 3; ++round) {
    INFO("round " << round);
    child c = spawn({DOSQL_CACHE_BIN, "--dir", dir, "demo", "--redis", redis, "--seconds", "60", "--keys", "20"});
    REQUIRE(read_until(c, "caught up at lsn", 60000));
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 1500));  // somewhere in its run
    ::kill(c.pid, SIGKILL);
    CHECK(finish(c, 60000) == -SIGKILL);
    // The invalidator is down; the database goes on.
    {
      dosql::runtime rt;
      auto db = must(rt.open(dir));
      write_while_down(db, round);
    }
  }
  child c = spawn({DOSQL_CACHE_BIN, "--dir", dir, "demo", "--redis", redis, "--seconds", "1", "--keys", "20"});
  const int status = finish(c, 300000);
  INFO(c.out);
  CHECK(status == 0);
  CHECK(c.out.find("stale reads: 0 ") != std::string::npos);
  CHECK(c.out.find("cache matches the database") != std::string::npos);
}
