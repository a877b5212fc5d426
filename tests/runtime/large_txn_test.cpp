// Large transactions spill their captured changes to a file and stream them into the WAL at
// commit: the WAL gets exactly BEGIN, the changes, COMMIT, and memory stays bounded.
#include <catch2/catch.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "replica.hpp"
#include "runtime/database.hpp"
#include "runtime/support.hpp"
#include "test_util.hpp"

using namespace dosql;
using test::must;

namespace {
}  // namespace

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
      // One statement inserting 1M rows of ~150 bytes: ~200 MB of row images.
      if (!(*db)->exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) "
                       "INSERT INTO t SELECT i, 'name ' || i, printf('%.120c', 'x') FROM n"))
        _exit(4);
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
  CHECK(wal_bytes > (200u << 20));
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(rss[1] - rss[0] < 100 * 1024);  // < 100 MiB growth for ~250 MiB of captured changes
#endif
  WARN("1M-row transaction: peak RSS grew by " << (rss[1] - rss[0]) / 1024 << " MiB, WAL holds " << (wal_bytes >> 20) << " MiB");
}
