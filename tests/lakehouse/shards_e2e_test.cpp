// Issue 18, "Shards": three databases (shards), each written concurrently by its own writer
// thread, each streamed by its own `dosql lakehouse stream` process into ONE `dosql lakehouse
// serve`. One streamer is SIGKILLed mid-stream and started again. Beside the writers, a mover
// moves keys between shards (DELETE on the shard holding the key; once that commit returned and
// the wall clock passed its millisecond, INSERT on the next shard): a cross-shard causal chain,
// and the case where last-writer-wins by HLC matters (a late DELETE from the old shard must not
// remove the row the new shard inserted). At the end the running streamers are SIGKILLed too and
// a `--stop-at-tail` streamer per shard catches up.
//
// Then DuckDB and npm icebird (tests/lakehouse/check_shards.mjs) read the lake and check: every
// (source, _lsn) exactly once, every committed change present with the HLC its database gave it,
// `_hlc` strictly increasing per source along `_lsn`, every data file's rows sorted by `_hlc` and
// the table's declared sort order, each moved key's changes in ORDER BY _hlc alternating INSERT
// (new shard) / DELETE (same shard), the changelog applied in `_hlc` order equal to the union of
// the shards' tables, and the current-state table (icebird) equal to it too.
//
// What the HLC guarantees across shards here: no message is exchanged between the databases
// (the public API has no way to feed one database's HLC into another's clock), so a change on
// shard 2 orders after one on shard 1 when it is stamped after shard 1's stamp's millisecond has
// passed on shard 2's clock: with clocks in sync (one host here) that is "after the commit
// returned and a millisecond passed". Within one millisecond the logical counters of two
// databases are unrelated. Every wait is bounded; nothing asserts on time.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include <dosql/cdc.hpp>
#include <dosql/database.hpp>

#include "cli/support.hpp"
#include "common/scratch.hpp"
#include "lakehouse/receiver_procs.hpp"
#include "test_util.hpp"

using namespace dosql;
using json = nlohmann::json;
using test::has;

namespace {

constexpr int shards = 3;
constexpr int64_t moving_keys = 12;  // ids 0..11 move between shards; shard i's own ids are 1000 * (i + 1) + ...

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

test::child streamer(const std::string& dir, const std::string& source, uint16_t port, const std::string& err,
                     bool stop_at_tail) {
  std::vector<std::string> a{"lakehouse", "stream", dir, "--to", "ws://127.0.0.1:" + std::to_string(port),
                             "--source", source, "--max-batch-size", "50", "--max-batch-age", "20ms",
                             "--retry-initial", "20ms", "--retry-max", "200ms", "--io-timeout", "5s"};
  if (stop_at_tail) a.push_back("--stop-at-tail");
  return test::spawn_dosql(a, {}, err);
}

std::string source_name(int i) { return "shard" + std::to_string(i + 1); }

}  // namespace

TEST_CASE("three shards into one receiver: every change once, ordered by HLC", "[e2e][shards]") {
  test::temp_dir d;
  const std::string lake = d / "lake";
  runtime rt;
  std::vector<std::shared_ptr<database>> db;
  std::vector<std::string> dirs;
  for (int i = 0; i < shards; ++i) {
    dirs.push_back(d / ("s" + std::to_string(i + 1)));
    db.push_back(test::must(rt.open(dirs.back())));
    REQUIRE(db[i]->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, shard INTEGER NOT NULL, v TEXT)"));
  }
  // The moving keys start on shard 1.
  std::vector<int> owner(moving_keys, 0);
  for (int64_t k = 0; k < moving_keys; ++k)
    REQUIRE(db[0]->exec("INSERT INTO t VALUES(?, 1, 'start')", {value(k)}));

  test::lh::receiver_proc recv(lake, 0, d / "serve.err");
  REQUIRE(recv.port != 0);
  std::vector<test::child> st;
  for (int i = 0; i < shards; ++i)
    st.push_back(streamer(dirs[i], source_name(i), recv.port, d / ("stream" + std::to_string(i + 1) + ".err"), false));

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::atomic<uint64_t>> commits(shards);
  std::vector<std::thread> writers;
  for (int i = 0; i < shards; ++i)
    writers.emplace_back([&, i] {
      std::mt19937 rng(static_cast<unsigned>(i * 7919 + 1));
      auto key = [&] { return value(int64_t{1000} * (i + 1) + std::uniform_int_distribution<int64_t>(0, 29)(rng)); };
      while (!stop) {
        auto e = db[i]->exec(
            "BEGIN;"
            "INSERT INTO t VALUES(?, ?, 'w' || hex(randomblob(2))) ON CONFLICT(id) DO UPDATE SET v = excluded.v;"
            "UPDATE t SET v = v || '+' WHERE id = ?;"
            "DELETE FROM t WHERE id = ?;"
            "COMMIT;",
            {key(), value(int64_t{i + 1}), key(), key()});
        if (!e) {
          ++failures;
          return;
        }
        ++commits[i];
      }
    });
  std::atomic<uint64_t> moves{0};
  std::thread mover([&] {
    for (int64_t n = 0; !stop; ++n) {
      const int64_t k = n % moving_keys;
      const int from = owner[k], to = (from + 1) % shards;
      if (!db[from]->exec("DELETE FROM t WHERE id = ?", {value(k)})) {
        ++failures;
        return;
      }
      // The DELETE's commit returned (durable); its stamp's physical ms is at most now. Shard
      // `to` stamps its INSERT at or after the next millisecond: a higher HLC.
      const int64_t t0 = wall_ms();
      while (wall_ms() <= t0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (!db[to]->exec("INSERT INTO t VALUES(?, ?, ?)", {value(k), value(int64_t{to + 1}), value("moved " + std::to_string(n))})) {
        ++failures;
        return;
      }
      owner[k] = to;
      ++moves;
    }
  });

  auto wait_for = [&](auto&& done, std::chrono::seconds limit) {
    for (auto until = std::chrono::steady_clock::now() + limit; !done() && std::chrono::steady_clock::now() < until;)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  };
  // Mid-stream, shard 2's streamer is SIGKILLed and started again (it goes on from the receiver's
  // watermark): its DELETEs of moved keys then land after the other shards' INSERTs.
  wait_for([&] { return commits[1] >= 40 && moves >= 10; }, std::chrono::seconds(120));
  ::kill(st[1].pid, SIGKILL);
  test::wait_exit(st[1].pid);
  ::close(st[1].out);
  wait_for([&] { return moves >= 25; }, std::chrono::seconds(120));
  st[1] = streamer(dirs[1], source_name(1), recv.port, d / "stream2b.err", false);
  constexpr uint64_t min_commits = 150, min_moves = 60;
  wait_for([&] {
    for (auto& c : commits)
      if (c < min_commits) return false;
    return moves >= min_moves;
  }, std::chrono::seconds(180));
  stop = true;
  for (auto& w : writers) w.join();
  mover.join();
  REQUIRE(failures == 0);
  INFO("commits " << commits[0] << " " << commits[1] << " " << commits[2] << ", moves " << moves);
  CHECK(moves >= 20);

  // The running streamers are SIGKILLed (one may not have connected yet: a slow start under a
  // sanitizer), a last one per shard catches up to the tail (SIGTERM's clean exit is
  // stream_e2e_test.cpp's).
  for (int i = 0; i < shards; ++i) {
    ::kill(st[i].pid, SIGKILL);
    test::wait_exit(st[i].pid);
    ::close(st[i].out);
  }
  for (int i = 0; i < shards; ++i) {
    auto last = streamer(dirs[i], source_name(i), recv.port, d / "last.err", true);
    std::string status;
    test::read_until(last.out, status, [](const std::string& x) { return has(x, "\n"); }, std::chrono::seconds(120));
    int rc = test::wait_exit(last.pid, std::chrono::seconds(10));
    ::close(last.out);
    INFO("last streamer of " << source_name(i) << ": " << status << test::read_file(d / "last.err"));
    REQUIRE(rc == 0);
  }
  REQUIRE(recv.terminate() == 0);

  // What the shards hold: their rows (the union: each key is on one shard), and per shard the LSN
  // and HLC of every row change.
  json expected;
  expected["rows"] = json::array();
  expected["moving"] = moving_keys;
  for (int i = 0; i < shards; ++i) {
    auto q = test::must(db[i]->query("SELECT id, shard, v FROM t ORDER BY id"));
    for (auto& r : q.rows)
      expected["rows"].push_back({{"id", std::get<int64_t>(r[0])}, {"shard", std::get<int64_t>(r[1])}, {"v", std::get<std::string>(r[2])}});
    cdc::subscribe_options so;
    so.stop_at_tail = true;
    so.filter.operations = {op_type::insert, op_type::update, op_type::del};
    auto sub = test::must(cdc::create_cdc(db[i]).subscribe(so));
    json changes = json::object();
    for (auto& e : *sub) changes[std::to_string(e.lsn)] = to_string(e.hlc);
    expected["changes"][source_name(i)] = changes;
  }
  for (auto& x : db) REQUIRE_FALSE(x->close());
  std::sort(expected["rows"].begin(), expected["rows"].end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
  test::write_file(d / "expected.json", expected.dump());
  std::string cmd = "cd " + test::q(DOSQL_LH_TESTS) + " && node check_shards.mjs " + test::q(lake) + " dosql t " +
                    test::q(d / "expected.json") + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  while (size_t k = std::fread(buf, 1, sizeof buf, p)) out.append(buf, k);
  int rc = ::pclose(p);
  INFO("check_shards: " << out << "\nreceiver: " << test::read_file(d / "serve.err"));
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 0);
}
