// End to end, with real processes (issue 16's main test): `dosql lakehouse stream DIR` ->
// `dosql lakehouse serve`, while a writer process commits inserts, updates and deletes (NULLs,
// REALs, blobs, unicode text) into DIR. The streamer is SIGKILLed at random moments
// (DOSQL_LH_KILL_ROUNDS rounds, default 50), then, with one streamer running, the receiver is
// (as many rounds). At the end a last `stream --stop-at-tail` must exit 0, and DuckDB
// (tests/lakehouse/check_stream_changelog.mjs) reads the Parquet changelog: every change of the source
// exactly once (no (_source, _lsn) twice, none missing), and the changelog applied in _lsn order
// per key equals the source table.
// Every wait is bounded; nothing asserts on time.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include <dosql/cdc.hpp>
#include <dosql/database.hpp>

#include "cli/support.hpp"
#include "common/scratch.hpp"
#include "test_util.hpp"
#include "lakehouse/receiver_procs.hpp"

using namespace dosql;
using json = nlohmann::json;
using test::has;
using test::lh::receiver_proc;
using test::lh::restart_receiver;

namespace {

int rounds() {
  const char* r = std::getenv("DOSQL_LH_KILL_ROUNDS");
  return r && *r ? std::max(1, std::atoi(r)) : 50;
}

test::child streamer(const std::string& dir, uint16_t port, const std::string& err, bool stop_at_tail) {
  std::vector<std::string> a{"lakehouse", "stream", dir, "--to", "ws://127.0.0.1:" + std::to_string(port),
                             "--source", "shop", "--max-batch-size", "200", "--max-batch-age", "20ms",
                             "--retry-initial", "20ms", "--retry-max", "200ms", "--io-timeout", "5s"};
  if (stop_at_tail) a.push_back("--stop-at-tail");
  return test::spawn_dosql(a, {}, err);
}

// One transaction per `dosql sql` run: an upsert, an update and a delete of random keys, with
// NULLs, REALs, blobs and unicode text; until DIR/STOP exists. Each commit adds a line to
// DIR/COMMITS.
const char* writer_script =
    "while [ ! -e \"$1/STOP\" ]; do \"$2\" sql \"$1/src\" -e \""
    "BEGIN;"
    "INSERT INTO t(id, v, r, b) VALUES (abs(random()) % 60,"
    " CASE WHEN random() % 4 = 0 THEN NULL ELSE 'ü€😀 ' || hex(randomblob(3)) || ' ñ' END,"
    " CASE WHEN random() % 3 = 0 THEN NULL ELSE random() / 7.0 END,"
    " CASE WHEN random() % 3 = 0 THEN NULL ELSE randomblob(abs(random()) % 9) END)"
    " ON CONFLICT(id) DO UPDATE SET v = excluded.v, r = excluded.r, b = excluded.b;"
    "UPDATE t SET r = coalesce(r, 0.5) * 1.5, v = v || 'é' WHERE id = abs(random()) % 60;"
    "DELETE FROM t WHERE id = abs(random()) % 60;"
    "COMMIT;\" >/dev/null || exit 1; echo >> \"$1/COMMITS\"; done";

}  // namespace

TEST_CASE("lakehouse stream -> serve: SIGKILL of the streamer and of the receiver, every change lands exactly once",
          "[e2e][kill]") {
  test::temp_dir d;
  const std::string src = d / "src", lake = d / "lake";
  CHECK_OK(test::dosql_run("sql " + test::q(src) +
                                 " -e \"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r REAL, b BLOB)\""));
  const int n = rounds();
  std::mt19937 rng(std::random_device{}());
  auto pause = [&](int lo, int hi) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(lo, hi)(rng)));
  };

  auto recv = std::make_unique<receiver_proc>(lake, 0, d / "serve.err");
  REQUIRE(recv->port != 0);
  const uint16_t port = recv->port;

  pid_t writer = ::fork();
  if (writer == 0) {
    ::execl("/bin/sh", "sh", "-c", writer_script, "sh", d.path().c_str(), DOSQL_CLI, static_cast<char*>(nullptr));
    _exit(127);
  }
  REQUIRE(writer > 0);

  // 1. The streamer is killed at random moments; each new one goes on from the watermark.
  for (int i = 0; i < n; ++i) {
    auto s = streamer(src, port, d / "stream.err", false);
    pause(30, 400);
    ::kill(s.pid, SIGKILL);
    test::wait_exit(s.pid);
    ::close(s.out);
  }
  // 2. One streamer runs; the receiver is killed at random moments and started again.
  auto s = streamer(src, port, d / "stream.err", false);
  for (int i = 0; i < n; ++i) {
    pause(30, 400);
    recv->kill9();
    recv = restart_receiver(lake, port, d / "serve.err");
  }
  pause(100, 300);
  // 3. Writes stop (after at least min_commits transactions, however slow the build: ASan); the
  // streamer stops (SIGTERM: exit 0); a last one catches up to the tail.
  constexpr size_t min_commits = 100;
  auto commits = [&] { return std::filesystem::exists(d / "COMMITS") ? test::read_file(d / "COMMITS").size() : 0; };
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(180);
       commits() < min_commits && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  test::write_file(d / "STOP", "");
  CHECK(test::wait_exit(writer, std::chrono::seconds(60)) == 0);
  ::kill(s.pid, SIGTERM);
  std::string running_status;
  test::read_until(s.out, running_status, [](const std::string& x) { return has(x, "\n"); }, std::chrono::seconds(60));
  CHECK(test::wait_exit(s.pid, std::chrono::seconds(60)) == 0);
  ::close(s.out);
  {
    // It lived through every receiver kill: it reconnected, and sent batches again.
    INFO("streamer through the receiver kills: " << running_status << test::read_file(d / "stream.err"));
    auto st = json::parse(running_status.substr(0, running_status.find('\n')));
    CHECK(st["reconnects"].get<uint64_t>() >= 1);
    CHECK(st["batches"].get<uint64_t>() >= 1);
  }
  auto last = streamer(src, port, d / "last.err", true);
  std::string status;
  test::read_until(last.out, status, [](const std::string& x) { return has(x, "\n"); }, std::chrono::seconds(120));
  int last_rc = test::wait_exit(last.pid, std::chrono::seconds(10));
  ::close(last.out);
  INFO("last streamer: " << status << test::read_file(d / "last.err"));
  REQUIRE(last_rc == 0);
  REQUIRE(recv->terminate() == 0);

  // The source's rows and the LSNs of its row changes.
  json expected;
  expected["columns"] = json::array({{{"name", "id"}}, {{"name", "v"}}, {{"name", "r"}}, {{"name", "b"}, {"blob", true}}});
  {
    runtime rt;
    auto db = test::must(rt.open(src));
    auto q = test::must(db->query("SELECT id, v, r, CASE WHEN b IS NULL THEN NULL ELSE hex(b) END FROM t ORDER BY id"));
    expected["rows"] = json::array();
    for (auto& r : q.rows) {
      json o;
      o["id"] = std::get<int64_t>(r[0]);
      o["v"] = is_null(r[1]) ? json(nullptr) : json(std::get<std::string>(r[1]));
      o["r"] = is_null(r[2]) ? json(nullptr) : json(std::get<double>(r[2]));
      o["b"] = is_null(r[3]) ? json(nullptr) : json(std::get<std::string>(r[3]));
      expected["rows"].push_back(o);
    }
    cdc::subscribe_options so;
    so.stop_at_tail = true;
    so.filter.operations = {op_type::insert, op_type::update, op_type::del};
    auto sub = test::must(cdc::create_cdc(db).subscribe(so));
    json lsns = json::array();
    for (auto& e : *sub) lsns.push_back(e.lsn);
    INFO("changes in the source: " << lsns.size());
    CHECK(lsns.size() >= min_commits);  // (each transaction has at least its upsert)
    expected["lsns"]["shop"] = lsns;
    expected["current"] = true;  // t has a primary key: its current-state table is checked too
    REQUIRE_FALSE(db->close());
  }
  test::write_file(d / "expected.json", expected.dump());
  std::string cmd = "cd " + test::q(DOSQL_LH_TESTS) + " && node check_stream_changelog.mjs " + test::q(lake) +
                    " dosql t id " + test::q(d / "expected.json") + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  while (size_t k = std::fread(buf, 1, sizeof buf, p)) out.append(buf, k);
  int rc = ::pclose(p);
  INFO("check_changelog: " << out);
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 0);
}

TEST_CASE("lakehouse stream --slot --stop-at-tail: exit 0, the slot acknowledged up to the receiver's watermark only",
          "[cli][slot]") {
  test::temp_dir d;
  const std::string src = d / "src", lake = d / "lake";
  CHECK_OK(test::dosql_run("sql " + test::q(src) +
                           " -e \"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES(1, 'a'), (2, NULL);"
                           " CREATE TABLE u(k TEXT PRIMARY KEY); INSERT INTO u VALUES('x')\""));
  CHECK_OK(test::dosql_run("slots " + test::q(src) + " create lake --from 0"));
  receiver_proc recv(lake, 0, d / "serve.err");
  REQUIRE(recv.port != 0);
  const std::string to = "ws://127.0.0.1:" + std::to_string(recv.port);
  auto r = test::dosql_run("lakehouse stream " + test::q(src) + " --to " + to +
                           " --source a --slot lake --table t --stop-at-tail");
  CHECK_OK(r);
  auto st = json::parse(r.out);
  CHECK(st["state"] == "stopped");
  CHECK(st["entries"] == 3);  // --table t: t's CREATE TABLE and 2 inserts; u's are not sent
  const uint64_t wm = st["watermark"].get<uint64_t>();
  CHECK(wm > 0);
  auto slots = test::dosql_run("slots " + test::q(src) + " list --json");
  CHECK_OK(slots);
  auto slot = json::parse(test::lines(slots.out).at(0));
  INFO(slots.out);
  CHECK(slot["acked_lsn"].get<uint64_t>() == wm);  // up to the watermark, not the WAL's tail
  // Again: nothing new is sent (it starts after the watermark).
  auto again = test::dosql_run("lakehouse stream " + test::q(src) + " --to " + to + " --source a --table t --stop-at-tail");
  CHECK_OK(again);
  CHECK(json::parse(again.out)["batches"] == 0);
  // Usage and connection errors name what is wrong, on stderr, exit non-zero.
  auto bad = test::dosql_run("lakehouse stream " + test::q(src) + " --to http://x --source a");
  CHECK(bad.code != 0);
  CHECK(has(bad.err, "ws:// or wss://"));
  CHECK(bad.out.empty());
  auto bad_src = test::dosql_run("lakehouse stream " + test::q(src) + " --to " + to + " --source 'a b'");
  CHECK(bad_src.code != 0);
  CHECK(has(bad_src.err, "source id"));
  auto nodir = test::dosql_run("lakehouse stream " + test::q(d / "nope") + " --to " + to + " --source a");
  CHECK(nodir.code != 0);
  CHECK(has(nodir.err, "nope"));
  auto refused = test::dosql_run("lakehouse stream " + test::q(src) + " --to ws://127.0.0.1:1 --source a "
                                 "--retry-attempts 2 --retry-initial 10ms --stop-at-tail");
  CHECK(refused.code == 1);
  CHECK(has(refused.err, "gave up after 2 attempts"));
  CHECK(recv.terminate() == 0);
}
