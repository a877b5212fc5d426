// Reliability helpers: backoff schedule and with_retry, the persistent dead-letter queue
// (including kill -9 of a process right after an add), the token-bucket rate limiter, the
// adaptive batch sizer, and the exactly-once sink (including kill -9 at a random moment of
// an apply loop: output rows == stored LSN, nothing acknowledged lost, no duplicates).
#include <catch2/catch.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <stdexcept>
#include <thread>

#include <dosql/reliability.hpp>
#include "wal/sqlite_util.hpp"
#include "support.hpp"

using namespace dosql;
using namespace dosql::reliability;
using namespace std::chrono_literals;
using test::must;

namespace {

void ok(const error& e) {
  if (e) FAIL(e.to_string());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

wal_entry entry_at(uint64_t lsn) {
  wal_entry e = test::make_entry(lsn, 64);
  e.lsn = lsn;
  return e;
}

int64_t count_rows(sqlite3* db, const char* sql) {
  auto st = must(dosql::detail::prepare(db, sql));
  REQUIRE(sqlite3_step(st.get()) == SQLITE_ROW);
  return sqlite3_column_int64(st.get(), 0);
}

error insert_row(sqlite3* db, uint64_t lsn) {
  auto st = dosql::detail::prepare(db, "INSERT INTO out(lsn) VALUES(?1)");
  if (!st) return st.err();
  sqlite3_bind_int64(st->get(), 1, static_cast<int64_t>(lsn));
  int rc = sqlite3_step(st->get());
  if (rc != SQLITE_DONE) return dosql::detail::sql_error(db, "INSERT INTO out", rc);
  return {};
}

/// Runs `body` in a forked child that reports progress as int64 values on a pipe; the parent
/// reads them until `should_kill(last value, time since first value)` says so, then SIGKILLs the
/// child. Returns the largest value read. The child must never exit by itself.
template <class Body, class Kill>
int64_t run_and_kill(Body body, Kill should_kill) {
  auto [pid, rfd] = test::fork_child([&](int out) {
    body(out);
    for (;;) ::pause();
  });
  int64_t last = -1;
  bool started = false;
  auto first = std::chrono::steady_clock::now();
  auto give_up = first + 20s;
  pollfd pfd{rfd, POLLIN, 0};
  while (std::chrono::steady_clock::now() < give_up) {
    if (::poll(&pfd, 1, 1) > 0) {
      int64_t v;
      if (::read(rfd, &v, sizeof v) != sizeof v) break;  // the child died
      if (!started) started = true, first = std::chrono::steady_clock::now();
      last = std::max(last, v);
    }
    if (started && should_kill(last, std::chrono::steady_clock::now() - first)) break;
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  // Values written before the kill are acknowledged too.
  while (::poll(&pfd, 1, 0) > 0) {
    int64_t v;
    if (::read(rfd, &v, sizeof v) != sizeof v) break;
    last = std::max(last, v);
  }
  ::close(rfd);
  INFO("child status " << status);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
  return last;
}

void report(int fd, int64_t v) {
  if (::write(fd, &v, sizeof v) != sizeof v) ::_exit(3);
}

}  // namespace

// ---- retry ---------------------------------------------------------------------------------

TEST_CASE("reliability: backoff schedule grows by the multiplier and is capped", "[reliability]") {
  retry_config cfg;
  cfg.jitter = 0;
  auto d = retry_delays(cfg, 1);
  REQUIRE(d.size() == 4);  // 5 attempts, 4 waits
  CHECK(d[0] == 100ms);
  CHECK(d[1] == 200ms);
  CHECK(d[2] == 400ms);
  CHECK(d[3] == 800ms);

  cfg.max_attempts = 12;
  d = retry_delays(cfg, 1);
  REQUIRE(d.size() == 11);
  for (size_t i = 1; i < d.size(); ++i) CHECK(d[i] == std::min<std::chrono::microseconds>(d[i - 1] * 2, 30000ms));
  CHECK(d.back() == 30000ms);  // 100 * 2^10 = 102400 ms, capped

  cfg.backoff_multiplier = 3;
  cfg.initial_delay_ms = 10;
  cfg.max_attempts = 4;
  d = retry_delays(cfg, 1);
  CHECK(d == std::vector<std::chrono::microseconds>{10ms, 30ms, 90ms});

  cfg.max_attempts = 0;  // treated as one attempt: no waits
  CHECK(retry_delays(cfg, 1).empty());
}

TEST_CASE("reliability: jitter stays within +-fraction and never exceeds max_delay", "[reliability]") {
  retry_config cfg;
  cfg.max_attempts = 12;
  cfg.jitter = 0.2;
  bool varied = false;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    auto d = retry_delays(cfg, seed);
    REQUIRE(d.size() == 11);
    CHECK(d == retry_delays(cfg, seed));  // deterministic per seed
    for (size_t i = 0; i < d.size(); ++i) {
      double base = std::min(100.0 * std::pow(2.0, static_cast<double>(i)), 30000.0) * 1000.0;
      double us = static_cast<double>(d[i].count());
      INFO("seed " << seed << " wait " << i << ": " << us << " us, base " << base);
      CHECK(us >= base * 0.8 - 1);
      CHECK(us <= std::min(base * 1.2, 30000e3));
      if (std::abs(us - base) > 1000) varied = true;
    }
  }
  CHECK(varied);
  CHECK(retry_delay(cfg, 1, 1.0) == 120ms);
  CHECK(retry_delay(cfg, 1, -1.0) == 80ms);
  CHECK(retry_delay(cfg, 3, 0.0) == 400ms);
  CHECK(retry_delay(cfg, 20, 1.0) == 30000ms);
  CHECK(retry_delay(cfg, 20, -1.0) == 24000ms);
}

TEST_CASE("reliability: with_retry succeeds after failures, sleeping the schedule", "[reliability]") {
  retry_config cfg;
  cfg.initial_delay_ms = 2;
  cfg.jitter = 0;
  int calls = 0;
  auto t0 = std::chrono::steady_clock::now();
  result<int> r = with_retry(
      [&]() -> result<int> {
        if (++calls < 4) return error(ec::io_error, "flaky " + std::to_string(calls));
        return 42;
      },
      cfg);
  double took = seconds_since(t0);
  REQUIRE(r.ok());
  CHECK(*r == 42);
  CHECK(calls == 4);
  CHECK(took >= 0.014);  // 2 + 4 + 8 ms
  CHECK(took < 2.0);

  calls = 0;
  error e = with_retry([&]() -> error { return ++calls == 2 ? error() : error(ec::busy, "locked"); }, cfg);
  CHECK(!e);
  CHECK(calls == 2);
}

TEST_CASE("reliability: with_retry gives up after max_attempts naming them", "[reliability]") {
  retry_config cfg;
  cfg.max_attempts = 4;
  cfg.initial_delay_ms = 1;
  int calls = 0;
  error e = with_retry(
      [&] {
        ++calls;
        error x(ec::lsn_not_found, "lsn 5 is gone (call " + std::to_string(calls) + ")");
        x.oldest_lsn = 100;
        return x;
      },
      cfg);
  CHECK(calls == 4);
  REQUIRE(e);
  CHECK(e.code() == ec::lsn_not_found);
  CHECK(e.oldest_lsn == 100);
  CHECK(e.message() == "gave up after 4 attempts: lsn 5 is gone (call 4)");

  calls = 0;
  cfg.max_attempts = 1;
  auto r = with_retry([&]() -> result<std::string> { ++calls; return error(ec::io_error, "down"); }, cfg);
  CHECK(calls == 1);
  REQUIRE(!r.ok());
  CHECK(r.err().message() == "gave up after 1 attempt: down");
}

TEST_CASE("reliability: with_retry stops at once on a non-retryable error", "[reliability]") {
  retry_config cfg;
  cfg.initial_delay_ms = 1;
  cfg.retryable = [](const error& e) { return e.code() == ec::io_error || e.code() == ec::busy; };
  int calls = 0;
  error e = with_retry([&] { ++calls; return error(ec::decode_error, "bad bytes"); }, cfg);
  CHECK(calls == 1);
  CHECK(e.code() == ec::decode_error);
  CHECK(e.message() == "bad bytes");  // unchanged

  calls = 0;  // retryable first, then non-retryable: stops at the second
  e = with_retry([&] { return ++calls == 1 ? error(ec::io_error, "eio") : error(ec::invalid_argument, "no"); }, cfg);
  CHECK(calls == 2);
  CHECK(e.code() == ec::invalid_argument);
}

// ---- dead letter queue ---------------------------------------------------------------------

TEST_CASE("reliability: dead letter queue add, list, get, remove", "[reliability]") {
  test::temp_dir d;
  auto q = must(dead_letter_queue::open(d / "dead_letters.sqlite"));
  CHECK(must(q->size()) == 0);
  auto e7 = entry_at(7), e3 = entry_at(3), e5 = entry_at(5);
  e5.origin = entry_origin::entered;
  e5.key = bytes{};  // present but empty differs from absent
  int64_t before = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  ok(q->add(e7, "timeout", 5));
  ok(q->add(e3, "500 from analytics", 5));
  ok(q->add(e5, "bad row", 2));
  CHECK(must(q->size()) == 3);

  auto all = must(q->list());
  REQUIRE(all.size() == 3);
  CHECK(all[0].entry == e3);
  CHECK(all[1].entry == e5);
  CHECK(all[2].entry == e7);
  CHECK(all[1].last_error == "bad row");
  CHECK(all[1].attempts == 2);
  CHECK(all[1].first_failure_ms >= before);
  CHECK(all[1].last_failure_ms == all[1].first_failure_ms);

  // The same LSN again: attempts accumulate, error and last failure updated, first kept.
  std::this_thread::sleep_for(5ms);
  ok(q->add(e5, "still bad", 3));
  CHECK(must(q->size()) == 3);
  auto g = must(q->get(5));
  REQUIRE(g);
  CHECK(g->entry == e5);
  CHECK(g->attempts == 5);
  CHECK(g->last_error == "still bad");
  CHECK(g->first_failure_ms == all[1].first_failure_ms);
  CHECK(g->last_failure_ms > g->first_failure_ms);
  CHECK(!must(q->get(6)));

  CHECK(must(q->remove(3)));
  CHECK(!must(q->remove(3)));
  CHECK(must(q->size()) == 2);
  all = must(q->list());
  REQUIRE(all.size() == 2);
  CHECK(all[0].entry.lsn == 5);
  CHECK(all[1].entry.lsn == 7);

  // The queue is its own SQLite file in WAL mode.
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2((d / "dead_letters.sqlite").c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  auto st = must(dosql::detail::prepare(raw, "PRAGMA journal_mode"));
  REQUIRE(sqlite3_step(st.get()) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0))) == "wal");
  st.reset();
  CHECK(count_rows(raw, "SELECT count(*) FROM dead_letters WHERE tbl = 'orders' OR tbl = 'users'") == 2);
  sqlite3_close(raw);
}

TEST_CASE("reliability: dead letters persist across close and reopen", "[reliability]") {
  test::temp_dir d;
  std::vector<wal_entry> added;
  {
    auto q = must(dead_letter_queue::open(d / "dlq.sqlite"));
    for (uint64_t lsn = 1; lsn <= 20; ++lsn) {
      added.push_back(entry_at(lsn * 10));
      ok(q->add(added.back(), "failure " + std::to_string(lsn), static_cast<uint32_t>(lsn)));
    }
    CHECK(must(q->remove(50)));
  }
  auto q = must(dead_letter_queue::open(d / "dlq.sqlite"));
  auto all = must(q->list());
  REQUIRE(all.size() == 19);
  size_t i = 0;
  for (auto& e : added) {
    if (e.lsn == 50) continue;
    INFO("lsn " << e.lsn);
    CHECK(all[i].entry == e);
    CHECK(all[i].attempts == e.lsn / 10);
    CHECK(all[i].last_error == "failure " + std::to_string(e.lsn / 10));
    ++i;
  }
}

TEST_CASE("reliability: retry_dead_letters removes successes and updates failures", "[reliability]") {
  test::temp_dir d;
  auto q = must(dead_letter_queue::open(d / "dlq.sqlite"));
  for (uint64_t lsn : {4, 1, 3, 2, 5}) ok(q->add(entry_at(lsn), "first failure", 5));
  auto before = must(q->list());
  std::this_thread::sleep_for(5ms);

  std::vector<uint64_t> seen;
  auto sum = must(q->retry_dead_letters([&](const wal_entry& e) -> error {
    seen.push_back(e.lsn);
    if (e != entry_at(e.lsn)) return error(ec::invalid_argument, "entry not rebuilt exactly");
    if (e.lsn % 2 == 0) return error(ec::io_error, "sink down for " + std::to_string(e.lsn));
    return {};
  }));
  CHECK(seen == std::vector<uint64_t>{1, 2, 3, 4, 5});  // LSN order
  CHECK(sum.succeeded == 3);
  CHECK(sum.still_failing == 2);

  auto left = must(q->list());
  REQUIRE(left.size() == 2);
  CHECK(left[0].entry.lsn == 2);
  CHECK(left[1].entry.lsn == 4);
  for (auto& l : left) {
    CHECK(l.attempts == 6);
    CHECK(l.last_error == "IO_ERROR: sink down for " + std::to_string(l.entry.lsn));
    CHECK(l.first_failure_ms == before[l.entry.lsn - 1].first_failure_ms);  // before is in LSN order 1..5
    CHECK(l.last_failure_ms > l.first_failure_ms);
  }

  // The handler may use the queue itself (no lock held while it runs).
  sum = must(q->retry_dead_letters([&](const wal_entry& e) -> error {
    CHECK(must(q->size()) >= 1);
    return e.lsn == 2 ? error() : error(ec::io_error, "again");
  }));
  CHECK(sum.succeeded == 1);
  CHECK(sum.still_failing == 1);
  auto last = must(q->get(4));
  REQUIRE(last);
  CHECK(last->attempts == 7);
  CHECK(must(q->size()) == 1);
}

TEST_CASE("reliability: a dead letter survives kill -9 right after add", "[reliability]") {
  test::temp_dir d;
  std::string path = d / "dead_letters.sqlite";
  auto e = entry_at(123);
  int64_t acked = run_and_kill(
      [&](int fd) {
        auto q = dead_letter_queue::open(path);
        if (!q) ::_exit(1);
        if ((*q)->add(e, "handler failed 5 times", 5)) ::_exit(2);
        report(fd, 1);
        // the child then sleeps (pause) until killed, with the queue still open
      },
      [](int64_t last, auto) { return last >= 1; });
  REQUIRE(acked == 1);
  auto q = must(dead_letter_queue::open(path));
  auto got = must(q->get(123));
  REQUIRE(got);
  CHECK(got->entry == e);
  CHECK(got->attempts == 5);
  CHECK(got->last_error == "handler failed 5 times");
  CHECK(must(q->size()) == 1);
}

// ---- rate limiter --------------------------------------------------------------------------

TEST_CASE("reliability: rate limiter paces consumption at the rate", "[reliability]") {
  rate_limiter rl(500, 50);  // starts with 50 tokens
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 30; ++i) rl.consume(10);  // 300 tokens: 50 from the full bucket, 250 at 500/s
  double took = seconds_since(t0);
  double expected = (300.0 - 50.0) / 500.0;  // 0.5 s
  INFO("took " << took << " s, expected " << expected);
  CHECK(took >= 0.8 * expected);
  CHECK(took <= expected + 0.4);
}

TEST_CASE("reliability: rate limiter try_consume and threads", "[reliability]") {
  // Refill arithmetic on a stepped clock: exact, whatever the machine's load.
  auto t = std::chrono::steady_clock::now();
  rate_limiter rl(1000, 5, [&] { return t; });
  CHECK(rl.try_consume(5));
  CHECK(!rl.try_consume(2));  // empty
  t += 1ms;
  CHECK(!rl.try_consume(2));  // one token accrued
  t += 1ms;
  CHECK(rl.try_consume(2));
  CHECK(rl.available() == Approx(0).margin(1e-9));
  t += 1s;
  CHECK(rl.available() == Approx(5));  // never beyond the burst
  // A request larger than the burst is allowed and puts the bucket in debt.
  rate_limiter big(1000, 5, [&] { return t; });
  CHECK(big.try_consume(5));
  CHECK(!big.try_consume(1));
  t += 20ms;
  CHECK(big.available() == Approx(5));  // 20 accrued, capped at the burst
  CHECK(big.try_consume(5));
  t += 3ms;
  CHECK(!big.try_consume(4));
  CHECK(big.try_consume(3));

  // consume() sleeps until its tokens accrue (real time: only the lower bound is a property).
  rate_limiter slow(1000, 5);
  auto t0 = std::chrono::steady_clock::now();
  slow.consume(25);
  CHECK(seconds_since(t0) >= 0.8 * 0.020);
  // Four threads share one bucket: 4 * 50 tokens at 1000/s with a burst of 10.
  rate_limiter shared(1000, 10);
  t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&] {
      for (int j = 0; j < 50; ++j) shared.consume(1);
    });
  for (auto& th : ts) th.join();
  double took = seconds_since(t0);
  INFO("took " << took);
  CHECK(took >= 0.8 * 0.190);  // (how much longer it took under load is for benchmarks)
}

// ---- adaptive batch sizer ------------------------------------------------------------------

TEST_CASE("reliability: adaptive batch sizer grows and shrinks within bounds", "[reliability]") {
  adaptive_batch_sizer s(10, 1000, 100, 100us);
  CHECK(s.size() == 100);
  s.record(100, 1ms);  // 10 us per event: fast
  CHECK(s.size() == 150);
  s.record(150, 15ms);  // exactly on target: unchanged
  CHECK(s.size() == 150);
  for (int i = 0; i < 20; ++i) {
    s.record(s.size(), std::chrono::microseconds(s.size()));
    CHECK(s.size() <= 1000);
  }
  CHECK(s.size() == 1000);
  s.record(1000, 1s);  // 1000 us per event: slow
  CHECK(s.size() == 500);
  for (int i = 0; i < 20; ++i) {
    s.record(s.size(), 1s);
    CHECK(s.size() >= 10);
  }
  CHECK(s.size() == 10);
  s.record(0, 1s);  // ignored
  CHECK(s.size() == 10);

  adaptive_batch_sizer tiny(0, 0, 50, 1ms);  // min raised to 1, max to min
  CHECK(tiny.size() == 1);
  tiny.record(1, 1us);
  CHECK(tiny.size() == 1);
  adaptive_batch_sizer small(1, 3, 1, 1ms);
  small.record(1, 1us);  // 1 * 1.5 rounds down: grows by one at least
  CHECK(small.size() == 2);
  small.record(2, 1us);
  CHECK(small.size() == 3);
  small.record(3, 1us);
  CHECK(small.size() == 3);
}

// ---- exactly-once sink ---------------------------------------------------------------------

TEST_CASE("reliability: exactly_once_sink skips applied LSNs per source", "[reliability]") {
  test::temp_dir d;
  auto sink = must(exactly_once_sink::open(d / "consumer.sqlite"));
  ok(dosql::detail::exec_simple(sink->db(), "CREATE TABLE out(lsn INTEGER, source TEXT)"));
  CHECK(must(sink->last_applied("a")) == 0);

  int runs = 0;
  auto work = [&](uint64_t lsn) {
    return [&, lsn](sqlite3* db) -> error {
      ++runs;
      return insert_row(db, lsn);
    };
  };
  ok(sink->apply("a", 5, work(5)));
  ok(sink->apply("a", 5, work(5)));  // redelivered: skipped
  CHECK(runs == 1);
  ok(sink->apply("a", 3, work(3)));  // older: skipped
  CHECK(runs == 1);
  CHECK(must(sink->last_applied("a")) == 5);
  ok(sink->apply("b", 1, work(1)));  // another source has its own position
  ok(sink->apply("a", 6, work(6)));
  CHECK(runs == 3);
  CHECK(must(sink->last_applied("a")) == 6);
  CHECK(must(sink->last_applied("b")) == 1);
  CHECK(count_rows(sink->db(), "SELECT count(*) FROM out") == 3);

  auto bad = sink->apply("a", 0, work(0));
  CHECK(bad.code() == ec::invalid_argument);
  CHECK(runs == 3);

  // Persistent across reopen.
  sink.reset();
  sink = must(exactly_once_sink::open(d / "consumer.sqlite"));
  CHECK(must(sink->last_applied("a")) == 6);
  ok(sink->apply("a", 6, work(6)));
  CHECK(runs == 3);
}

TEST_CASE("reliability: exactly_once_sink keeps neither output nor LSN of failed work", "[reliability]") {
  test::temp_dir d;
  auto sink = must(exactly_once_sink::open(d / "consumer.sqlite"));
  ok(dosql::detail::exec_simple(sink->db(), "CREATE TABLE out(lsn INTEGER)"));
  ok(sink->apply("s", 1, [](sqlite3* db) { return insert_row(db, 1); }));

  error e = sink->apply("s", 2, [](sqlite3* db) -> error {
    if (auto x = insert_row(db, 2)) return x;
    return error(ec::io_error, "downstream refused");
  });
  CHECK(e.code() == ec::io_error);
  CHECK(e.message() == "downstream refused");
  CHECK(must(sink->last_applied("s")) == 1);
  CHECK(count_rows(sink->db(), "SELECT count(*) FROM out") == 1);
  CHECK(sqlite3_get_autocommit(sink->db()));

  // A throwing work is rolled back too, and the exception passes through.
  CHECK_THROWS_AS(sink->apply("s", 2,
                              [](sqlite3* db) -> error {
                                (void)insert_row(db, 2);
                                throw std::runtime_error("bug");
                              }),
                  std::runtime_error);
  CHECK(must(sink->last_applied("s")) == 1);
  CHECK(count_rows(sink->db(), "SELECT count(*) FROM out") == 1);

  // A work that commits on its own is reported.
  e = sink->apply("s", 2, [](sqlite3* db) { return dosql::detail::exec_simple(db, "COMMIT"); });
  CHECK(e.code() == ec::invalid_argument);
  CHECK(must(sink->last_applied("s")) == 1);

  // The retry then applies it once.
  ok(sink->apply("s", 2, [](sqlite3* db) { return insert_row(db, 2); }));
  CHECK(must(sink->last_applied("s")) == 2);
  CHECK(count_rows(sink->db(), "SELECT count(*) FROM out") == 2);
}

TEST_CASE("reliability: exactly_once_sink under kill -9 keeps output and LSN together", "[reliability]") {
  test::temp_dir d;
  std::string path = d / "consumer.sqlite";
  constexpr uint64_t n = 300;
  std::mt19937_64 rng(std::random_device{}());
  uint64_t acked_max = 0;
  for (int round = 0; round < 3; ++round) {
    auto kill_after = std::chrono::microseconds(2000 + rng() % 60000);
    int64_t acked = run_and_kill(
        [&](int fd) {
          auto sink = exactly_once_sink::open(path);
          if (!sink) ::_exit(1);
          auto& s = **sink;
          if (dosql::detail::exec_simple(s.db(), "CREATE TABLE IF NOT EXISTS out(lsn INTEGER PRIMARY KEY)")) ::_exit(2);
          report(fd, 0);  // ready
          for (uint64_t lsn = 1; lsn <= n; ++lsn) {
            if (s.apply("src", lsn, [lsn](sqlite3* db) { return insert_row(db, lsn); })) ::_exit(4);
            report(fd, static_cast<int64_t>(lsn));
          }
        },
        [&](int64_t, auto since) { return since >= kill_after; });
    auto sink = must(exactly_once_sink::open(path));
    uint64_t last = must(sink->last_applied("src"));
    INFO("round " << round << ": acknowledged " << acked << ", last applied " << last);
    CHECK(static_cast<uint64_t>(std::max<int64_t>(acked, 0)) <= last);
    CHECK(last >= acked_max);
    CHECK(count_rows(sink->db(), "SELECT count(*) FROM out") == static_cast<int64_t>(last));
    CHECK(count_rows(sink->db(), "SELECT coalesce(max(lsn), 0) FROM out") == static_cast<int64_t>(last));
    acked_max = last;
  }
  // Redelivering everything from the start: only the missing LSNs are applied.
  auto sink = must(exactly_once_sink::open(path));
  int runs = 0;
  uint64_t before = must(sink->last_applied("src"));
  for (uint64_t lsn = 1; lsn <= n; ++lsn) {
    ok(sink->apply("src", lsn, [&runs, lsn](sqlite3* db) {
      ++runs;
      return insert_row(db, lsn);
    }));
  }
  CHECK(runs == static_cast<int>(n - before));
  CHECK(must(sink->last_applied("src")) == n);
  CHECK(count_rows(sink->db(), "SELECT count(*) FROM out") == static_cast<int64_t>(n));
}
