#include <catch2/catch.hpp>

#include <thread>

#include <dosql/database.hpp>
#include <dosql/value.hpp>
#include "runtime/support.hpp"
#include "test_util.hpp"

using namespace dosql;
using test::must;

namespace {

std::shared_ptr<database> open_db(runtime& rt, const std::string& dir, database_options opts = {}) {
  auto db = rt.open(dir, opts);
  if (!db) FAIL("open: " << db.err().to_string());
  return *db;
}


}  // namespace

TEST_CASE("exec and query with parameters of every type", "[database]") {
  test::temp_dir d;
  runtime rt;
  auto db = open_db(rt, d.path());
  CHECK(db->recovery().created);
  must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, note)"));
  auto r = must(db->exec("INSERT INTO t(name, score, data, note) VALUES(?, ?, ?, ?)",
                         {std::string("alice"), 1.5, bytes{1, 2, 3}, nullptr}));
  CHECK(r.changes == 1);
  CHECK(r.last_insert_rowid == 1);
  CHECK(r.commit_lsn > 0);
  CHECK(db->durable_lsn() >= r.commit_lsn);
  auto q = must(db->query("SELECT id, name, score, data, note FROM t WHERE name = ?", {std::string("alice")}));
  REQUIRE(q.rows.size() == 1);
  CHECK(q.columns == std::vector<std::string>{"id", "name", "score", "data", "note"});
  CHECK(q.rows[0][0] == value(int64_t{1}));
  CHECK(q.rows[0][1] == value(std::string("alice")));
  CHECK(q.rows[0][2] == value(1.5));
  CHECK(q.rows[0][3] == value(bytes{1, 2, 3}));
  CHECK(is_null(q.rows[0][4]));
}

TEST_CASE("bad SQL and constraint violations name the statement and leave no WAL entry", "[database]") {
  test::temp_dir d;
  runtime rt;
  auto db = open_db(rt, d.path());
  must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"));
  uint64_t before = db->last_lsn();
  auto bad = db->exec("INSER INTO t VALUES(1)");
  REQUIRE_FALSE(bad);
  CHECK(bad.err().code() == ec::sql_error);
  CHECK(bad.err().message().find("INSER INTO t") != std::string::npos);
  auto viol = db->exec("INSERT INTO t(id, v) VALUES(1, NULL)");
  REQUIRE_FALSE(viol);
  CHECK(viol.err().message().find("NOT NULL") != std::string::npos);
  CHECK(db->last_lsn() == before);
  must(db->exec("INSERT INTO t(id, v) VALUES(1, 'ok')"));  // still usable
  CHECK(db->last_lsn() == before + 3);
  auto params = db->exec("INSERT INTO t(id, v) VALUES(?, ?)", {int64_t{2}});
  REQUIRE_FALSE(params);
  CHECK(params.err().code() == ec::invalid_argument);
  auto open_txn = db->exec("BEGIN; INSERT INTO t(id, v) VALUES(5, 'x')");
  REQUIRE_FALSE(open_txn);
  CHECK(must(db->query("SELECT count(*) FROM t")).rows[0][0] == value(int64_t{1}));
  auto vac = db->exec("VACUUM");
  REQUIRE_FALSE(vac);
  CHECK(vac.err().message().find("VACUUM") != std::string::npos);
  auto meta = db->exec("UPDATE _dosql_meta SET lsn = 0");
  REQUIRE_FALSE(meta);
  CHECK(db->last_lsn() == before + 3);
}

TEST_CASE("a directory that is not dosql's, or in use, is refused untouched", "[database]") {
  test::temp_dir d;
  test::write_file(d / "precious.txt", "keep me");
  runtime rt;
  auto r = rt.open(d.path());
  REQUIRE_FALSE(r);
  CHECK(r.err().message().find("not a dosql data directory") != std::string::npos);
  CHECK(test::list_files(d.path()) == std::vector<std::string>{"precious.txt"});
  // A first open killed while writing the marker leaves only DOSQL.tmp: that is still new.
  test::temp_dir d3;
  test::write_file(d3 / "DOSQL.tmp", "dosql da");
  CHECK(open_db(rt, d3.path())->recovery().created);
  test::temp_dir d2;
  auto db = open_db(rt, d2.path());
  auto again = rt.open(d2.path());
  REQUIRE_FALSE(again);
  CHECK(again.err().code() == ec::busy);
  CHECK(again.err().message().find("open by pid") != std::string::npos);
  db.reset();
  test::write_file(d2 / "DOSQL", "dosql data directory\nformat 99\n");
  auto newer = rt.open(d2.path());
  REQUIRE_FALSE(newer);
  CHECK(newer.err().code() == ec::format_version);
}

TEST_CASE("transactions: RAII object, SQL BEGIN/COMMIT, rollback", "[database]") {
  test::temp_dir d;
  runtime rt;
  auto db = open_db(rt, d.path());
  must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
  {
    auto tx = must(db->begin());
    must(tx.exec("INSERT INTO t VALUES(1, 'a')"));
    must(tx.exec("INSERT INTO t VALUES(2, 'b')"));
    CHECK(must(tx.query("SELECT count(*) FROM t")).rows[0][0] == value(int64_t{2}));
    auto lsn = must(tx.commit());
    CHECK(lsn == db->last_lsn());
  }
  {
    auto tx = must(db->begin());
    must(tx.exec("INSERT INTO t VALUES(3, 'c')"));
  }  // rolled back
  {
    auto tx = must(db->begin());
    auto self = db->exec("INSERT INTO t VALUES(9, 'self')");  // would wait for itself
    REQUIRE_FALSE(self);
    CHECK(self.err().message().find("holds an open transaction") != std::string::npos);
    REQUIRE_FALSE(tx.rollback());
  }
  must(db->exec("BEGIN; INSERT INTO t VALUES(4, 'd'); ROLLBACK"));
  must(db->exec("BEGIN; INSERT INTO t VALUES(5, 'e'); COMMIT"));
  auto q = must(db->query("SELECT id FROM t ORDER BY id"));
  REQUIRE(q.rows.size() == 3);
  CHECK(q.rows[2][0] == value(int64_t{5}));
}

TEST_CASE("several threads write at once, and every commit is durable and distinct", "[database]") {
  test::temp_dir d;
  runtime rt;
  auto db = open_db(rt, d.path());
  must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, thread INTEGER)"));
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int k = 0; k < 4; ++k)
    ts.emplace_back([&, k] {
      for (int i = 0; i < 100; ++i)
        if (!db->exec("INSERT INTO t(thread) VALUES(?)", {int64_t{k}})) ++failures;
    });
  for (auto& t : ts) t.join();
  CHECK(failures == 0);
  CHECK(must(db->query("SELECT count(*) FROM t")).rows[0][0] == value(int64_t{400}));
  CHECK(db->durable_lsn() == db->last_lsn());
}

TEST_CASE("reopen continues LSNs and keeps the data", "[database]") {
  test::temp_dir d;
  uint64_t last;
  {
    runtime rt;
    auto db = open_db(rt, d.path());
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
    must(db->exec("INSERT INTO t VALUES(1, 'x')"));
    last = db->last_lsn();
  }
  runtime rt;
  auto db = open_db(rt, d.path());
  CHECK_FALSE(db->recovery().created);
  CHECK(db->recovery().replayed_transactions == 0);
  CHECK(db->last_lsn() == last);
  auto r = must(db->exec("INSERT INTO t VALUES(2, 'y')"));
  CHECK(r.commit_lsn == last + 3);
}

TEST_CASE("a read snapshot shows exactly the commits up to its LSN and does not block writers", "[database]") {
  test::db_fixture f;
  must(f.db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
  must(f.db->exec("INSERT INTO t VALUES(1, 'before')"));
  uint64_t at = f.db->last_lsn();
  auto snap = must(f.db->snapshot());
  CHECK(snap.lsn() == at);
  CHECK(f.db->durable_lsn() >= at);
  // Another thread commits while the snapshot is open: it is not blocked...
  std::thread writer([&] { must(f.db->exec("INSERT INTO t VALUES(2, 'after')")); });
  writer.join();
  CHECK(f.db->last_lsn() > at);
  // ...and the snapshot does not see it, while a fresh query does.
  CHECK(must(snap.query("SELECT count(*) FROM t")).rows[0][0] == value(int64_t{1}));
  CHECK(must(snap.query("SELECT v FROM t WHERE id = ?", {int64_t{1}})).rows[0][0] == value(std::string("before")));
  CHECK(must(f.db->query("SELECT count(*) FROM t")).rows[0][0] == value(int64_t{2}));
  // Writes and several statements are refused, naming the statement.
  auto w = snap.query("DELETE FROM t");
  REQUIRE_FALSE(w);
  CHECK(w.err().message().find("DELETE FROM t") != std::string::npos);
  REQUIRE_FALSE(snap.query("SELECT nope FROM t"));
  // Its connection goes back to the pool and later snapshots move on.
  { auto moved = std::move(snap); }
  auto later = must(f.db->snapshot());
  CHECK(later.lsn() == f.db->last_lsn());
  CHECK(must(later.query("SELECT count(*) FROM t")).rows[0][0] == value(int64_t{2}));
}

TEST_CASE("changes and commit_lsn count the last statement only, in exec and query", "[database]") {
  test::db_fixture f;
  must(f.db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
  auto ins = must(f.db->exec("INSERT INTO t VALUES(1, 'a'), (2, 'b'), (3, 'c')"));
  CHECK(ins.changes == 3);
  CHECK(ins.commit_lsn == f.db->last_lsn());
  CHECK(must(f.db->exec("SELECT * FROM t")).changes == 0);  // not the INSERT's count again
  CHECK(must(f.db->exec("CREATE TABLE u(x)")).changes == 0);
  auto upd = must(f.db->query("UPDATE t SET v = 'z' WHERE id > 1 RETURNING id"));
  CHECK(upd.rows.size() == 2);
  CHECK(upd.changes == 2);
  CHECK(upd.commit_lsn == f.db->last_lsn());
  auto sel = must(f.db->query("SELECT count(*) FROM t"));
  CHECK(sel.changes == 0);
  CHECK(sel.commit_lsn == 0);
}

TEST_CASE("a NUL byte ends the script; text after one is refused before anything runs", "[database][nul]") {
  test::db_fixture f;
  must(f.db->exec("CREATE TABLE t(x)"));
  // Trailing NULs (printf '...;\0'): the script ends there, as in sqlite3_exec.
  must(f.db->exec(std::string("INSERT INTO t VALUES(1);\0", 25)));
  must(f.db->exec(std::string("INSERT INTO t VALUES(2)\0\0 \n", 28)));
  auto q = must(f.db->query(std::string("SELECT count(*) FROM t;\0", 24)));
  CHECK(q.rows.at(0).at(0) == value(int64_t{2}));
  // A statement after a NUL would be dropped silently: refused, and nothing of the script ran.
  auto r = f.db->exec(std::string("INSERT INTO t VALUES(3);\0INSERT INTO t VALUES(4);", 49));
  REQUIRE_FALSE(r);
  CHECK(r.err().code() == ec::invalid_argument);
  CHECK(r.err().message().find("NUL byte at offset 24") != std::string::npos);
  CHECK(must(f.db->query("SELECT count(*) FROM t")).rows.at(0).at(0) == value(int64_t{2}));
  auto only = f.db->exec(std::string("\0", 1));
  CHECK(only);
}

TEST_CASE("PRAGMAs that break durability or capture are refused alone and in scripts; reading stays allowed",
          "[database][pragma]") {
  test::db_fixture f;
  must(f.db->exec("CREATE TABLE t(x)"));
  for (const char* p : {"PRAGMA synchronous=OFF", "PRAGMA locking_mode=EXCLUSIVE", "PRAGMA writable_schema=ON",
                        "PRAGMA journal_mode=DELETE", "PRAGMA wal_autocheckpoint=1", "PRAGMA wal_checkpoint",
                        "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA schema_version=99", "PRAGMA main.synchronous=0",
                        "PRAGMA user_version=7", "PRAGMA application_id=42"}) {
    INFO(p);
    auto alone = f.db->query(p);  // a single statement: tried on the read pool first
    REQUIRE_FALSE(alone);
    CHECK(alone.err().code() == ec::invalid_argument);
    CHECK(alone.err().message().find("PRAGMA") != std::string::npos);
    auto ex = f.db->exec(p);
    REQUIRE_FALSE(ex);
    CHECK(ex.err().code() == ec::invalid_argument);
    auto script = f.db->exec(std::string("INSERT INTO t VALUES(1); ") + p);
    REQUIRE_FALSE(script);
    auto tx = must(f.db->begin());
    CHECK_FALSE(tx.exec(p));
  }
  // Reading them is fine, and nothing was changed.
  CHECK(must(f.db->query("PRAGMA user_version")).rows.at(0).at(0) == value(int64_t{0}));
  CHECK(must(f.db->query("PRAGMA application_id")).rows.at(0).at(0) == value(int64_t{0}));
  CHECK(must(f.db->query("PRAGMA journal_mode")).rows.at(0).at(0) == value(std::string("wal")));
  CHECK(must(f.db->query("PRAGMA locking_mode")).rows.at(0).at(0) == value(std::string("normal")));
  // Harmless ones still work.
  must(f.db->query("PRAGMA cache_size=-4000"));
  must(f.db->exec("PRAGMA foreign_keys=ON"));
  auto dir = f.d.path();
  REQUIRE_FALSE(f.db->close());
  f.db.reset();
  auto db = must(f.rt.open(dir));
  CHECK(must(db->query("PRAGMA user_version")).rows.at(0).at(0) == value(int64_t{0}));
}
