// dosql-cache: the cache-invalidation example's program.
//
//   dosql-cache --dir D demo [--redis HOST:PORT] [--seconds N] [--keys K] [--readers R]
//                            [--writers W] [--slot NAME] [--redis-prefix P] [--seed S]
//   dosql-cache --dir D bench [--redis HOST:PORT] [--commits N] [--backlog N] [--ttl-ms T]
//                             [--ttl-commits N]
//
// Opens (or creates) the database D with the guide's users/products/orders tables, starts a
// cache manager with the guide's configuration on the in-memory KV (or Redis with --redis),
// waits until its invalidator applied what was committed while it was not running, then runs
// writers and readers (read-through) for N seconds, waits until the invalidator applied every
// write it made, and prints hit rate, invalidations/s and the stale reads seen (none), after
// comparing every cached key with the database. Exit 0 when there were no stale reads and the
// cache matches the database; 1 otherwise; 2 for bad arguments.
#include <CLI/CLI.hpp>

#include <algorithm>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "workload.hpp"

using namespace dosql_cache;

namespace {

int fail(const dosql::error& e) {
  std::fprintf(stderr, "dosql-cache: %s\n", e.to_string().c_str());
  return 1;
}

struct demo_args {
  std::string redis, redis_prefix, slot = "dosql-cache";
  double seconds = 5;
  int keys = 50, readers = 4, writers = 2;
  uint64_t seed = 0;
};

int demo(const std::string& dir, const demo_args& a) {
  dosql::runtime rt;
  auto db = rt.open(dir);
  if (!db) return fail(db.err());
  if (auto r = (*db)->exec(demo_schema); !r) return fail(r.err());

  std::shared_ptr<backend> b;
  if (a.redis.empty()) {
    b = make_memory_backend();
  } else {
    auto ro = parse_redis_address(a.redis);
    if (!ro) return std::fprintf(stderr, "dosql-cache: %s\n", ro.err().to_string().c_str()), 2;
    ro->key_prefix = a.redis_prefix;
    b = make_redis_backend(*ro);
  }
  cache_config cfg = guide_config();
  cfg.invalidation.slot = a.slot;
  const auto t0 = std::chrono::steady_clock::now();
  auto cm = cache_manager::start(*db, b, cfg);
  if (!cm) return fail(cm.err());
  if (!(*cm)->wait_caught_up(ms(120000)))
    return fail(dosql::error(dosql::ec::closed, "the invalidator did not catch up within 120 s"));
  const double catch_up_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("backend %s; invalidator caught up at lsn %llu in %.1f ms (%llu backlog transactions applied)\n",
              b->name().c_str(), static_cast<unsigned long long>((*cm)->applied_lsn()), catch_up_ms,
              static_cast<unsigned long long>((*cm)->invalidation()->stats().transactions));
  std::fflush(stdout);

  workload_options wo;
  wo.keys = a.keys;
  wo.readers = a.readers;
  wo.writers = a.writers;
  wo.seed = a.seed ? a.seed : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  workload w(*db, **cm, wo);
  if (auto e = w.prepare()) return fail(e);
  const auto before = (*cm)->invalidation()->stats();

  std::atomic<bool> stop{false};
  error run_err;
  const auto start = std::chrono::steady_clock::now();
  std::thread runner([&] { run_err = w.run(stop); });
  std::this_thread::sleep_for(std::chrono::duration<double>(a.seconds));
  stop = true;
  runner.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (run_err) return fail(run_err);

  // Exit only once the invalidator applied every write made.
  const uint64_t last = (*db)->last_lsn();
  const auto w0 = std::chrono::steady_clock::now();
  if (!(*cm)->wait_for(last, ms(120000)))
    return fail(dosql::error(dosql::ec::closed, "the invalidator did not apply lsn " + std::to_string(last) + " within 120 s"));
  const double drain_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count();
  w.hist().check();
  auto cmp = w.compare_cache_with_database();

  const auto st = (*cm)->stats();
  const auto inv = (*cm)->invalidation()->stats();
  const uint64_t lookups = st.hits + st.misses;
  std::printf("ran %.1f s: %llu writes (%.0f/s), %llu reads (%.0f/s), %llu read-your-writes reads after wait_for(commit)\n", secs,
              static_cast<unsigned long long>(w.writes()), w.writes() / secs, static_cast<unsigned long long>(w.reads()),
              w.reads() / secs, static_cast<unsigned long long>(w.ryw_checks()));
  std::printf("hit rate %.1f%% (%llu hits, %llu misses; fills stored %llu, refused as stale %llu; %llu reads around the cache)\n",
              lookups ? 100.0 * st.hits / lookups : 0.0, static_cast<unsigned long long>(st.hits),
              static_cast<unsigned long long>(st.misses), static_cast<unsigned long long>(st.fills_stored),
              static_cast<unsigned long long>(st.fills_refused), static_cast<unsigned long long>(st.bypassed));
  std::printf("invalidations: %llu cache ops in %llu transactions (%.0f ops/s); backend failures retried: %llu\n",
              static_cast<unsigned long long>(inv.ops - before.ops),
              static_cast<unsigned long long>(inv.transactions - before.transactions), (inv.ops - before.ops) / secs,
              static_cast<unsigned long long>(inv.backend_failures));
  std::printf("invalidator applied the last write (lsn %llu) %.1f ms after the writers stopped\n",
              static_cast<unsigned long long>(last), drain_ms);
  std::printf("stale reads: %llu (of %llu checked)\n", static_cast<unsigned long long>(w.hist().stale_reads()),
              static_cast<unsigned long long>(w.hist().reads_checked()));
  for (auto& ex : w.hist().stale_examples()) std::printf("  stale: %s\n", ex.c_str());
  if (cmp)
    std::printf("cache matches the database: %llu cached keys compared\n", static_cast<unsigned long long>(*cmp));
  else
    std::printf("cache differs from the database: %s\n", cmp.err().to_string().c_str());
  (*cm)->stop();
  return w.hist().stale_reads() == 0 && cmp ? 0 : 1;
}


struct bench_args {
  std::string redis;
  int commits = 2000, backlog = 20000, ttl_ms = 200, ttl_commits = 100;
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())))];
}

// Commit -> invalidation applied (p50/p99), the invalidator's catch-up rate (invalidations/s),
// and beside it a read-through cache with a TTL only: how long it serves the old row.
int bench(const std::string& dir, const bench_args& a) {
  dosql::runtime rt;
  auto db = rt.open(dir);
  if (!db) return fail(db.err());
  if (auto r = (*db)->exec(demo_schema); !r) return fail(r.err());
  for (int64_t i = 1; i <= 100; ++i) {
    auto r = (*db)->exec("INSERT OR IGNORE INTO products(id, name, category_id, price) VALUES(?, 'p', 1, 1.0)", {i});
    if (!r) return fail(r.err());
    r = (*db)->exec("INSERT OR IGNORE INTO orders(id, user_id, total, status) VALUES(?, 1, 1.0, 'new')", {i});
    if (!r) return fail(r.err());
  }
  std::shared_ptr<backend> b;
  if (a.redis.empty()) {
    b = make_memory_backend();
  } else {
    auto ro = parse_redis_address(a.redis);
    if (!ro) return std::fprintf(stderr, "dosql-cache: %s\n", ro.err().to_string().c_str()), 2;
    ro->key_prefix = "bench:";
    b = make_redis_backend(*ro);
  }
  cache_config cfg = guide_config();
  cfg.invalidation.slot = "dosql-cache-bench";
  cfg.invalidation.on_start = invalidator_options::startup::flush;
  auto fetch = [](int64_t id) {
    return [id](dosql::read_snapshot& s) { return workload::fetch_row(s, "orders", id); };
  };
  using clk = std::chrono::steady_clock;
  auto ms_since = [](clk::time_point t) { return std::chrono::duration<double, std::milli>(clk::now() - t).count(); };

  // 1. Latency: a cached order changes; from exec() returning (durable) to the invalidation applied.
  std::vector<double> lat;
  uint64_t still_cached = 0;
  {
    auto cm = cache_manager::start(*db, b, cfg);
    if (!cm) return fail(cm.err());
    if (!(*cm)->wait_caught_up(ms(120000))) return fail(dosql::error(dosql::ec::closed, "no catch-up"));
    for (int i = 0; i < a.commits; ++i) {
      const int64_t id = 1 + i % 100;
      const std::string key = "order:" + std::to_string(id);
      if (auto v = (*cm)->get(key, fetch(id)); !v) return fail(v.err());
      auto r = (*db)->exec("UPDATE orders SET total = total + 1, version = version + 1 WHERE id = ?", {id});
      if (!r) return fail(r.err());
      const auto t = clk::now();
      if (!(*cm)->wait_for(r->commit_lsn, ms(30000))) return fail(dosql::error(dosql::ec::closed, "invalidation timed out"));
      lat.push_back(ms_since(t));
      auto c = b->get(key);
      if (c && *c) ++still_cached;
      std::this_thread::sleep_for(ms(1));
    }
  }
  // 2. Throughput: a backlog written while the invalidator is down, then applied on restart.
  double rate = 0, txn_rate = 0;
  uint64_t backlog_ops = 0;
  {
    for (int i = 0; i < a.backlog; ++i) {
      auto r = (*db)->exec("UPDATE orders SET total = total + 1, version = version + 1 WHERE id = ?", {int64_t{1 + i % 100}});
      if (!r) return fail(r.err());
    }
    cfg.invalidation.on_start = invalidator_options::startup::resume;
    const auto t = clk::now();
    auto cm = cache_manager::start(*db, b, cfg);
    if (!cm) return fail(cm.err());
    if (!(*cm)->wait_caught_up(ms(600000))) return fail(dosql::error(dosql::ec::closed, "no catch-up"));
    const double secs = ms_since(t) / 1000;
    const auto st = (*cm)->invalidation()->stats();
    backlog_ops = st.ops;
    rate = static_cast<double>(st.ops) / secs;
    txn_rate = static_cast<double>(st.transactions) / secs;
  }
  // 3. TTL only (no invalidator): how long a read-through cache serves the old row after a commit.
  std::vector<double> stale;
  for (int i = 0; i < a.ttl_commits; ++i) {
    const int64_t id = 1 + i % 100;
    const std::string key = "ttl-only:order:" + std::to_string(id);
    auto read = [&]() -> dosql::result<std::optional<std::string>> {
      auto c = b->get(key);
      if (!c) return c.err();
      if (*c) return std::optional<std::string>((*c)->value);
      auto s = (*db)->snapshot();
      if (!s) return s.err();
      auto v = workload::fetch_row(*s, "orders", id);
      if (v && *v) (void)b->fill(key, **v, s->lsn(), ms(a.ttl_ms));
      return v;
    };
    if (auto v = read(); !v) return fail(v.err());
    auto r = (*db)->exec("UPDATE orders SET total = total + 1, version = version + 1 WHERE id = ?", {id});
    if (!r) return fail(r.err());
    const auto t = clk::now();
    std::optional<std::string> now;
    {
      auto s = (*db)->snapshot();
      if (!s) return fail(s.err());
      auto v = workload::fetch_row(*s, "orders", id);
      if (!v) return fail(v.err());
      now = *v;
    }
    for (;;) {
      auto v = read();
      if (!v) return fail(v.err());
      if (*v == now) break;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    stale.push_back(ms_since(t));
  }
  std::printf("backend %s\n", b->name().c_str());
  std::printf("commit -> invalidation applied (%d commits, 1 ms apart): p50 %.3f ms, p99 %.3f ms, max %.3f ms; "
              "still cached after wait_for: %llu\n",
              a.commits, pct(lat, 50), pct(lat, 99), pct(lat, 100), static_cast<unsigned long long>(still_cached));
  std::printf("catch-up of a %d-transaction backlog: %.0f invalidations/s (%.0f transactions/s, %llu cache ops)\n", a.backlog,
              rate, txn_rate, static_cast<unsigned long long>(backlog_ops));
  std::printf("TTL-only read-through cache (TTL %d ms, %d commits): old row served for p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
              a.ttl_ms, a.ttl_commits, pct(stale, 50), pct(stale, 99), pct(stale, 100));
  return still_cached == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dosql-cache: CDC-driven cache invalidation on dosql (in-memory KV or Redis), with no stale fills"};
  std::string dir;
  app.add_option("--dir", dir, "data directory (created if missing)")->required();
  app.require_subcommand(1);
  demo_args a;
  auto* d = app.add_subcommand("demo", "run writers and readers through the cache; print hit rate, invalidations/s, stale reads");
  d->add_option("--redis", a.redis, "cache in Redis at HOST:PORT instead of the in-memory KV");
  d->add_option("--redis-prefix", a.redis_prefix, "prefix of every Redis key the cache writes");
  d->add_option("--seconds", a.seconds, "how long writers and readers run (default 5)")->check(CLI::Range(0.0, 86400.0));
  d->add_option("--keys", a.keys, "rows per table (default 50)")->check(CLI::Range(1, 1000000));
  d->add_option("--readers", a.readers, "reader threads (default 4)")->check(CLI::Range(0, 64));
  d->add_option("--writers", a.writers, "writer threads (default 2)")->check(CLI::Range(0, 64));
  d->add_option("--slot", a.slot, "the invalidator's replication slot (default dosql-cache)");
  d->add_option("--seed", a.seed, "random seed (default: from the clock)");
  bench_args ba;
  auto* bn = app.add_subcommand("bench", "measure commit -> invalidation latency, invalidations/s, and a TTL-only cache's staleness");
  bn->add_option("--redis", ba.redis, "cache in Redis at HOST:PORT instead of the in-memory KV");
  bn->add_option("--commits", ba.commits, "latency samples (default 2000)")->check(CLI::Range(1, 10000000));
  bn->add_option("--backlog", ba.backlog, "transactions applied on catch-up (default 20000)")->check(CLI::Range(1, 10000000));
  bn->add_option("--ttl-ms", ba.ttl_ms, "the TTL-only cache's TTL (default 200)")->check(CLI::Range(1, 3600000));
  bn->add_option("--ttl-commits", ba.ttl_commits, "TTL-only samples (default 100)")->check(CLI::Range(1, 100000));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (d->parsed()) return demo(dir, a);
  if (bn->parsed()) return bench(dir, ba);
  return 2;
}
