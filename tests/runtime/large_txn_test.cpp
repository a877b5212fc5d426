// Large transactions: their settled changes stream to the WAL before COMMIT, a statement
// too large for memory spills to a file and streams at its end or at COMMIT. Either way the
// WAL gets exactly BEGIN, the changes, COMMIT (or ROLLBACK), subscribers see only committed
// transactions, and memory stays bounded.
#include <catch2/catch.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "replica.hpp"
#include <dosql/cdc.hpp>
#include <dosql/database.hpp>
#include "runtime/support.hpp"
#include "test_util.hpp"

using namespace dosql;
using test::must;

namespace {

// The WAL entries from `from` on, once at least `n` of them were written (the WAL writer
// appends asynchronously).
std::vector<wal_entry> wait_wal(const std::string& wal_dir, uint64_t from, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto es = test::read_from(wal_dir, from);
    if (es.size() >= n || std::chrono::steady_clock::now() > deadline) return es;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::vector<wal_entry> drain_committed(const std::shared_ptr<database>& db) {
  cdc::subscribe_options o;
  o.stop_at_tail = true;
  o.include_transaction_control = true;
  auto sub = must(cdc::create_cdc(db).subscribe(o));
  std::vector<wal_entry> out;
  for (auto& e : *sub) out.push_back(e);
  if (sub->err()) FAIL(sub->err().to_string());
  return out;
}

}  // namespace

TEST_CASE("a transaction streams its settled changes before COMMIT; subscribers see them only after it",
          "[large][stream]") {
  test::temp_dir d;
  runtime rt;
  database_options opts;
  opts.stream_threshold_bytes = 1;  // stream after every statement
  auto db = must(rt.open(d.path(), opts));
  must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
  uint64_t before = db->last_lsn();
  auto tx = must(db->begin());
  must(tx.exec("INSERT INTO t VALUES(1, 'a'), (2, 'b')"));
  // Written (BEGIN + 2 inserts) while the transaction is still open...
  auto es = wait_wal(db->wal_dir(), before + 1, 3);
  REQUIRE(es.size() == 3);
  CHECK(es[0].op == op_type::begin);
  CHECK(es[1].op == op_type::insert);
  CHECK(db->last_lsn() == before);  // ...but not committed: last_lsn() is the last COMMIT handed over
  must(tx.exec("SAVEPOINT s"));
  must(tx.exec("INSERT INTO t VALUES(3, 'rolled back')"));
  must(tx.exec("ROLLBACK TO s"));  // the savepoint holds back streaming: nothing of it reached the WAL
  must(tx.exec("INSERT INTO t VALUES(4, 'kept')"));
  REQUIRE_FALSE(tx.exec("INSERT INTO t VALUES(5, 'x'), (1, 'duplicate')"));  // statement abort
  must(tx.exec("RELEASE s"));
  must(tx.exec("UPDATE t SET v = 'b2' WHERE id = 2"));
  // ...and a subscriber does not see any of it yet
  for (auto& e : drain_committed(db)) CHECK(e.lsn <= before);
  auto commit_lsn = must(tx.commit());
  es = test::read_from(db->wal_dir(), before + 1);
  std::vector<std::string> ops;
  for (auto& e : es) ops.push_back(std::string(to_string(e.op)) + (e.table.empty() ? "" : " " + e.table));
  CHECK(ops == std::vector<std::string>{"BEGIN", "INSERT t", "INSERT t", "INSERT t", "UPDATE t", "COMMIT"});
  REQUIRE(es.size() == 6);
  CHECK(es.back().lsn == commit_lsn);
  for (size_t i = 0; i < es.size(); ++i) {
    CHECK(es[i].lsn == before + 1 + i);
    CHECK(es[i].txn_id == es[0].txn_id);
  }
  auto seen = drain_committed(db);
  REQUIRE(seen.size() >= 6);
  CHECK(seen.back().lsn == commit_lsn);
  test::temp_dir rd;
  test::replica rep(rd / "r.sqlite");
  rep.catch_up(db->wal_dir());
  CHECK(test::dump_tables(d / "db.sqlite") == test::dump_tables(rep.db()));
  CHECK(must(db->query("SELECT group_concat(id || v, ',') FROM (SELECT * FROM t ORDER BY id)")).rows[0][0] ==
        value(std::string("1a,2b2,4kept")));
}

TEST_CASE("a streamed transaction that rolls back ends with ROLLBACK in the WAL and is never delivered",
          "[large][stream]") {
  test::temp_dir d;
  runtime rt;
  database_options opts;
  opts.stream_threshold_bytes = 1;
  uint64_t rolled_first = 0, after_lsn = 0;
  {
    auto db = must(rt.open(d.path(), opts));
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
    uint64_t before = db->last_lsn();
    {
      auto tx = must(db->begin());
      must(tx.exec("INSERT INTO t VALUES(1, 'never')"));
      REQUIRE(wait_wal(db->wal_dir(), before + 1, 2).size() == 2);
      REQUIRE_FALSE(tx.rollback());
    }
    {
      auto tx = must(db->begin());
      must(tx.exec("INSERT INTO t VALUES(2, 'never either')"));
      // destroyed without commit(): rolled back
    }
    must(db->exec("INSERT INTO t VALUES(3, 'committed')"));
    after_lsn = db->last_lsn();
    auto es = test::read_from(db->wal_dir(), before + 1);
    std::vector<std::string> ops;
    for (auto& e : es) ops.emplace_back(to_string(e.op));
    CHECK(ops == std::vector<std::string>{"BEGIN", "INSERT", "ROLLBACK", "BEGIN", "INSERT", "ROLLBACK",
                                          "BEGIN", "INSERT", "COMMIT"});
    rolled_first = before + 1;
    for (auto& e : drain_committed(db)) {
      CHECK((e.lsn < rolled_first || e.lsn > rolled_first + 5));
      if (is_row_change(e.op)) CHECK(e.table == "t");
    }
    CHECK(db->last_lsn() == after_lsn);
  }
  // Reopening replays nothing wrong: the rolled-back rows are absent, the LSNs continue.
  auto db = must(rt.open(d.path(), opts));
  CHECK(must(db->query("SELECT group_concat(id) FROM t")).rows[0][0] == value(std::string("3")));
  CHECK(db->last_lsn() == after_lsn);
  test::temp_dir rd;
  test::replica rep(rd / "r.sqlite");
  rep.catch_up(db->wal_dir());
  CHECK(test::dump_tables(d / "db.sqlite") == test::dump_tables(rep.db()));
}

TEST_CASE("a spilled transaction streams whole into the WAL, ROLLBACK TO reaching into the spill",
          "[large]") {
  test::temp_dir d;
  runtime rt;
  database_options opts;
  opts.spill_threshold_bytes = 4096;  // spill every few rows
  auto db = must(rt.open(d.path(), opts));
  must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, pad TEXT)"));
  uint64_t before = db->last_lsn();
  auto tx = must(db->begin());
  auto pad = std::string(300, 'x');
  for (int i = 0; i < 100; ++i) must(tx.exec("INSERT INTO t VALUES(?, ?)", {int64_t{i}, pad}));
  must(tx.exec("SAVEPOINT s"));
  for (int i = 100; i < 200; ++i) must(tx.exec("INSERT INTO t VALUES(?, ?)", {int64_t{i}, pad}));
  must(tx.exec("ROLLBACK TO s"));  // cuts back into spilled chunks
  for (int i = 200; i < 250; ++i) must(tx.exec("INSERT INTO t VALUES(?, ?)", {int64_t{i}, pad}));
  REQUIRE_FALSE(tx.exec("INSERT INTO t VALUES(5, 'dup')"));  // statement abort
  must(tx.exec("RELEASE s"));
  auto commit_lsn = must(tx.commit());
  CHECK(commit_lsn == before + 152);
  auto es = test::read_from(db->wal_dir(), before + 1);
  REQUIRE(es.size() == 152);
  CHECK(es.front().op == op_type::begin);
  CHECK(es.back().op == op_type::commit);
  for (size_t i = 1; i < es.size(); ++i) {
    CHECK(es[i].lsn == es[0].lsn + i);
    CHECK(es[i].txn_id == es[0].txn_id);
  }
  test::temp_dir rd;
  test::replica rep(rd / "r.sqlite");
  rep.catch_up(db->wal_dir());
  CHECK(test::dump_tables(d / "db.sqlite") == test::dump_tables(rep.db()));
  CHECK(must(db->query("SELECT count(*) FROM t")).rows[0][0] == value(int64_t{150}));
}

TEST_CASE("peak RSS of a 1,000,000-row transaction stays bounded", "[large]") {
  bool one_statement = GENERATE(true, false);
  INFO((one_statement ? "one statement" : "1,000 statements"));
  test::temp_dir d;
  int p[2];
  REQUIRE(::pipe(p) == 0);
  pid_t pid = ::fork();
  if (pid == 0) {  // a fresh process, so that ru_maxrss measures this transaction only
    ::close(p[0]);
    long rss[3] = {0, 0, 0};
    {
      runtime rt;
      auto db = rt.open(d.path());
      if (!db) _exit(2);
      if (!(*db)->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, pad TEXT)")) _exit(3);
      struct rusage ru;
      ::getrusage(RUSAGE_SELF, &ru);
      rss[0] = ru.ru_maxrss;
      if (one_statement) {
        // One statement inserting 1M rows of ~150 bytes: ~200 MB of row images (spilled).
        if (!(*db)->exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) "
                         "INSERT INTO t SELECT i, 'name ' || i, printf('%.120c', 'x') FROM n"))
          _exit(4);
      } else {
        // 1,000 statements of 1,000 rows in one transaction (streamed as they settle).
        auto tx = (*db)->begin();
        if (!tx) _exit(4);
        for (int64_t k = 0; k < 1000; ++k)
          if (!tx->exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
                        "INSERT INTO t SELECT ?1 * 1000 + i, 'name ' || i, printf('%.120c', 'x') FROM n", {k}))
            _exit(4);
        if (!tx->commit()) _exit(4);
      }
      ::getrusage(RUSAGE_SELF, &ru);
      rss[1] = ru.ru_maxrss;
      rss[2] = static_cast<long>((*db)->last_lsn());
    }
    if (::write(p[1], rss, sizeof rss) != sizeof rss) _exit(5);
    _exit(0);
  }
  ::close(p[1]);
  long rss[3] = {0, 0, 0};
  auto n = ::read(p[0], rss, sizeof rss);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(n == sizeof rss);
  uint64_t wal_bytes = 0;
  for (auto& f : test::list_files(d / "wal"))
    if (f.size() > 4 && f.substr(f.size() - 4) == ".wal") wal_bytes += test::file_size(d / "wal/" + f);
  INFO("peak RSS before " << rss[0] / 1024 << " MiB, after " << rss[1] / 1024 << " MiB; WAL " << (wal_bytes >> 20)
                          << " MiB; last lsn " << rss[2]);
  CHECK(rss[2] == 3 + 1000002);  // DDL transaction (3 entries), then BEGIN + 1M + COMMIT
  CHECK(wal_bytes > (190u << 20));
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(rss[1] - rss[0] < 100 * 1024);  // < 100 MiB growth for ~250 MiB of captured changes
#endif
  WARN("1M-row transaction (" << (one_statement ? "one statement" : "1,000 statements") << "): peak RSS grew by " << (rss[1] - rss[0]) / 1024 << " MiB, WAL holds " << (wal_bytes >> 20) << " MiB");
}
