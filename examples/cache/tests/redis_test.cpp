// Redis going away under a running cache: a clear error when it is down at start; killed
// (SIGKILL) and restarted empty mid-run while readers and writers go on: nothing crashes,
// reads go around the cache, the invalidator retries with backoff, and once Redis is back no
// read returns a stale value and the cache matches the database.
#include "support.hpp"

#include <random>
#include <thread>

using namespace cache_test;
using namespace dosql_cache;
using namespace std::chrono_literals;

TEST_CASE("a Redis that is down at start is a clear error naming it", "[cache][redis][down]") {
  db_fixture f;
  redis_server rs;
  auto o = rs.options("down:");
  rs.kill9();
  auto cm = cache_manager::start(f.db, make_redis_backend(o), guide_config());
  REQUIRE_FALSE(cm);
  CHECK(cm.err().code() == dosql::ec::io_error);
  CHECK_THAT(cm.err().message(), Catch::Contains("redis 127.0.0.1:" + std::to_string(rs.port())));
}

TEST_CASE("Redis killed and restarted mid-run: no crash, retries, no stale read once it is back", "[cache][redis][restart]") {
  const uint64_t seed = std::random_device{}();
  INFO("seed " << seed);
  redis_server rs;
  db_fixture f;
  auto b = make_redis_backend(rs.options("mid:"));
  auto cm = must(cache_manager::start(f.db, b, guide_config()));
  REQUIRE(cm->wait_caught_up(60s));
  workload_options wo;
  wo.keys = 15;
  wo.seed = seed;
  wo.read_your_writes_every = 0;  // writers must not wait for an invalidator stuck on a dead Redis
  workload w(f.db, *cm, wo);
  must(w.prepare());
  std::atomic<bool> stop{false};
  dosql::error err;
  std::thread runner([&] { err = w.run(stop); });
  auto wait_writes = [&](uint64_t n) {
    for (int i = 0; i < 6000 && w.writes() < n && !err; ++i) std::this_thread::sleep_for(10ms);  // (hang guard)
  };
  wait_writes(300);
  rs.kill9();
  const uint64_t at_kill = w.writes();
  wait_writes(at_kill + 300);  // writes and reads go on without Redis
  const uint64_t reads_down = w.reads();
  rs.start();                  // empty: its markers are gone
  wait_writes(w.writes() + 500);
  stop = true;
  runner.join();
  must(err);
  REQUIRE(cm->wait_for(f.db->last_lsn(), 60s));
  w.hist().check();
  for (auto& ex : w.hist().stale_examples()) UNSCOPED_INFO(ex);
  CHECK(w.hist().stale_reads() == 0);
  CHECK(reads_down > 0);
  CHECK(cm->stats().backend_errors > 0);                  // reads went around the cache
  CHECK(cm->invalidation()->stats().backend_failures > 0);  // the invalidator retried
  CHECK(cm->stats().hits > 0);
  must(w.compare_cache_with_database());
}
