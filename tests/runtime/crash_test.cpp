// kill -9 at random moments during a tricky workload, for real: a forked child commits
// transactions (each records its sequence number in `ledger`) and reports each one whose
// exec() returned; the parent SIGKILLs it, reopens the directory, and checks the contract:
//  1. every acknowledged transaction is in SQLite and in the WAL,
//  2. SQLite equals a replica built only from the WAL, row for row (no COMMIT without its
//     data, no data without its COMMIT),
//  3. LSNs recovered earlier never change.
// The power-loss variant also cuts the WAL back to its last fdatasync'd size while SQLite's
// files stay as the kernel left them (SQLite ahead of the log).
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <sstream>

#include "fault_fs.hpp"
#include "replica.hpp"
#include <dosql/database.hpp>
#include "test_util.hpp"
#include "wal/crc32c.hpp"
#include "wal/format.hpp"

using namespace dosql;

namespace {

int rounds() {
  const char* s = std::getenv("DOSQL_SOAK_ROUNDS");
  return s && *s ? std::atoi(s) : 200;
}

const char* schema = R"(
  CREATE TABLE IF NOT EXISTS ledger(seq INTEGER PRIMARY KEY, note TEXT);
  CREATE TABLE IF NOT EXISTS users(id TEXT PRIMARY KEY, name TEXT, score REAL, avatar BLOB);
  CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
                                    total REAL, status TEXT);
  CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY, what TEXT);
  CREATE TRIGGER IF NOT EXISTS orders_audit AFTER UPDATE OF status ON orders
    BEGIN INSERT INTO audit(what) VALUES('order ' || new.id || ' ' || new.status); END;
  CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS events(msg TEXT, n INTEGER);
  CREATE TABLE IF NOT EXISTS uniq(id INTEGER PRIMARY KEY, code TEXT UNIQUE);
)";

// One transaction of the workload; returns false if it was meant to fail or roll back.
bool one_txn(database& db, std::mt19937_64& rng, int64_t seq) {
  auto r = [&](int n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); };
  auto ledger = [&](transaction& tx, const char* note) {
    auto x = tx.exec("INSERT INTO ledger VALUES(?, ?)", {seq, std::string(note)});
    if (!x) throw std::runtime_error(x.err().to_string());
  };
  auto ok = [](auto res) {
    if constexpr (std::is_same_v<decltype(res), error>) {
      if (res) throw std::runtime_error(res.to_string());
    } else {
      if (!res) throw std::runtime_error(res.err().to_string());
      return std::move(res).value();
    }
  };
  std::string uid = "u";
  uid += std::to_string(r(40));  // (not "u" + ...: GCC 12 -O3 warns falsely on that concatenation)
  int kind = static_cast<int>(r(14));
  auto tx = ok(db.begin());
  switch (kind) {
    case 0:  // insert a user and orders (multi-row)
      ok(tx.exec("INSERT OR IGNORE INTO users VALUES(?, ?, ?, ?)",
                 {uid, std::string("name") + std::to_string(seq), 100.0, bytes{1, 0, 2}}));
      ok(tx.exec("INSERT INTO orders(user_id, total, status) SELECT id, 9.5, 'new' FROM users WHERE id=? "
                 "UNION ALL SELECT id, 100, 'new' FROM users WHERE id=?", {uid, uid}));
      ledger(tx, "insert");
      break;
    case 1:  // update with a trigger
      ok(tx.exec("UPDATE orders SET status = ?, total = total + 1 WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT 2)",
                 {std::string(r(2) ? "paid" : "shipped")}));
      ledger(tx, "update");
      break;
    case 2:  // delete with cascade
      ok(tx.exec("DELETE FROM users WHERE id = ?", {uid}));
      ledger(tx, "cascade");
      break;
    case 3:  // REPLACE on PK and UNIQUE conflicts
      ok(tx.exec("REPLACE INTO kv VALUES(?, ?)", {std::string("k") + std::to_string(r(20)), seq}));
      ok(tx.exec("REPLACE INTO uniq VALUES(?, ?)", {r(30), std::string("c") + std::to_string(r(30))}));
      ledger(tx, "replace");
      break;
    case 4:  // UPSERT
      ok(tx.exec("INSERT INTO kv VALUES(?, 1) ON CONFLICT(k) DO UPDATE SET v = coalesce(v, 0) + 1",
                 {std::string("k") + std::to_string(r(20))}));
      ledger(tx, "upsert");
      break;
    case 5:  // primary-key change
      ok(tx.exec("UPDATE OR IGNORE orders SET id = id + 100000 WHERE id = (SELECT min(id) FROM orders)"));
      ledger(tx, "pk change");
      break;
    case 6: {  // a multi-row statement failing midway, then more work
      auto c = std::string("c") + std::to_string(r(30));
      ok(tx.exec("INSERT OR IGNORE INTO uniq(code) VALUES(?)", {c}));
      (void)tx.exec("INSERT INTO uniq(code) VALUES('fresh' || ?), (?)", {seq, c});  // fails on the duplicate
      ok(tx.exec("INSERT INTO events VALUES('after failure', ?)", {seq}));
      ledger(tx, "failed midway");
      break;
    }
    case 7:  // savepoints
      ok(tx.exec("SAVEPOINT a"));
      ok(tx.exec("INSERT INTO events VALUES('rolled back', ?)", {seq}));
      ok(tx.exec("ROLLBACK TO a"));
      ok(tx.exec("INSERT INTO events VALUES('kept', ?)", {seq}));
      ok(tx.exec("RELEASE a"));
      ledger(tx, "savepoint");
      break;
    case 8:  // key-less table: updates by rowid, rowid changes, DELETE without WHERE
      ok(tx.exec("INSERT INTO events VALUES(NULL, NULL), ('e', ?)", {seq}));
      ok(tx.exec("UPDATE events SET n = coalesce(n, 0) + 1 WHERE rowid % 3 = 0"));
      if (r(10) == 0) ok(tx.exec("UPDATE events SET rowid = rowid + 1000000 WHERE rowid = (SELECT max(rowid) FROM events)"));
      if (r(8) == 0) ok(tx.exec("DELETE FROM events"));
      ledger(tx, "keyless");
      break;
    case 9:  // REALs, NULLs, blobs
      ok(tx.exec("UPDATE users SET score = ?, avatar = ?, name = NULL WHERE id = ?", {1e300, bytes(64, 7), uid}));
      ok(tx.exec("INSERT INTO kv VALUES(?, ?) ON CONFLICT DO NOTHING", {std::string("r") + std::to_string(seq), 0.5}));
      ledger(tx, "values");
      break;
    case 10:  // rolled back: must leave nothing
      ok(tx.exec("INSERT INTO events VALUES('never', ?)", {seq}));
      ok(tx.rollback());
      return false;
    case 11:  // schema change (rarely)
      if (r(6) == 0) {
        ok(tx.exec("CREATE TABLE IF NOT EXISTS extra" + std::to_string(r(5)) + "(id INTEGER PRIMARY KEY, v TEXT)"));
      } else {
        ok(tx.exec("INSERT INTO users(id, name) VALUES(?, 'late') ON CONFLICT(id) DO UPDATE SET name = 'late'", {uid}));
      }
      ledger(tx, "ddl");
      break;
    default:  // a plain small transaction
      ok(tx.exec("INSERT INTO audit(what) VALUES(?)", {std::string("plain ") + std::to_string(seq)}));
      ledger(tx, "plain");
  }
  ok(tx.commit());
  return true;
}

[[noreturn]] void child(const std::string& dir, int out_fd, uint64_t seed, const std::string& trace) {
  // Power-loss simulation: the child records each fdatasync through the test's file_io.
  static test::fault_fs fs;
  if (!trace.empty()) {
    fs.trace_syncs(trace);
    wal::install_io(&fs);
  }
  try {
    runtime rt;
    // Odd seeds stream every statement's changes to the WAL before COMMIT (threshold 1
    // byte): kills then land inside half-written transactions and their ROLLBACKs too.
    database_options o;
    if (seed % 2) o.stream_threshold_bytes = 1;
    auto db = rt.open(dir, o);
    if (!db) throw std::runtime_error(db.err().to_string());
    if (auto s = (*db)->exec(schema); !s) throw std::runtime_error(s.err().to_string());
    auto q = (*db)->query("SELECT coalesce(max(seq), 0) FROM ledger");
    if (!q) throw std::runtime_error(q.err().to_string());
    int64_t seq = std::get<int64_t>(q->rows[0][0]);
    int64_t ready = -1;  // recovered and ready: the parent starts its kill timer
    if (::write(out_fd, &ready, sizeof ready) != sizeof ready) _exit(5);
    std::mt19937_64 rng(seed);
    for (;;) {
      ++seq;
      if (!one_txn(**db, rng, seq)) {
        --seq;
        continue;
      }
      if (::write(out_fd, &seq, sizeof seq) != sizeof seq) _exit(5);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash-test child: %s\n", e.what());
    _exit(2);
  }
}

struct checker {
  explicit checker(std::string d) : dir(std::move(d)) {}
  std::string dir;
  test::temp_dir rdir;
  std::unique_ptr<test::replica> rep;
  std::vector<uint32_t> hashes{0};  // crc of every recovered entry, by LSN
  int64_t acked = 0;

  void check(int64_t acked_now) {
    acked = std::max(acked, acked_now);
    {
      runtime rt;
      auto db = rt.open(dir);  // recovery
      if (!db) FAIL("reopen: " << db.err().to_string());
      int64_t count = 0, max = 0;
      auto q = (*db)->query("SELECT count(*), coalesce(max(seq), 0) FROM ledger");
      if (q) {
        count = std::get<int64_t>(q->rows[0][0]);
        max = std::get<int64_t>(q->rows[0][1]);
      } else {  // killed before the child created its tables
        INFO(q.err().to_string());
        REQUIRE(acked == 0);
      }
      INFO("acked " << acked << ", ledger max " << max << ", recovery: replayed " << (*db)->recovery().replayed_transactions
                    << ", discarded sqlite wal " << (*db)->recovery().discarded_sqlite_wal);
      REQUIRE(max >= acked);   // 1: nothing acknowledged is missing
      REQUIRE(count == max);   // gap-free ledger
    }
    // 3: LSNs recovered before keep their entries.
    auto entries = test::read_from(dir + "/wal", 1);
    for (auto& e : entries) {
      std::string rec;
      wal::append_record(rec, e.lsn, e);
      uint32_t h = wal::crc32c::value(rec.data(), rec.size());
      if (e.lsn < hashes.size()) {
        INFO("lsn " << e.lsn);
        REQUIRE(hashes[e.lsn] == h);
      } else {
        REQUIRE(e.lsn == hashes.size());
        hashes.push_back(h);
      }
    }
    // 2: SQLite == the replica built from the WAL alone.
    if (!rep) rep = std::make_unique<test::replica>(rdir / "replica.sqlite");
    rep->catch_up(dir + "/wal");
    auto mine = test::dump_tables(dir + "/db.sqlite");
    auto theirs = test::dump_tables(rep->db());
    REQUIRE(mine.size() == theirs.size());
    for (size_t i = 0; i < mine.size(); ++i) {
      INFO("row " << i);
      REQUIRE(mine[i] == theirs[i]);
    }
  }
};

int64_t run_round(const std::string& dir, std::mt19937_64& rng, const std::string& trace, const std::string& errfile) {
  uint64_t seed = rng();
  auto [pid, rfd] = test::fork_child([&](int out) {
    int fd = ::open(errfile.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) ::dup2(fd, 2);
    child(dir, out, seed, trace);
  });
  int64_t acked = 0;
  bool ready = false;
  // One round in four kills at a random moment after fork (often during recovery); the
  // others at a random moment after the child is ready (so slow builds still commit).
  bool from_fork = rng() % 4 == 0;
  auto delay = std::chrono::microseconds(from_fork ? 1000 + rng() % 80000 : 1000 + rng() % 50000);
  auto deadline = std::chrono::steady_clock::now() + (from_fork ? delay : std::chrono::seconds(30));
  pollfd pfd{rfd, POLLIN, 0};
  auto drain = [&](int timeout) {
    while (::poll(&pfd, 1, timeout) > 0) {
      int64_t v;
      if (::read(rfd, &v, sizeof v) != sizeof v) return;
      if (v < 0 && !ready) {
        ready = true;
        if (!from_fork) deadline = std::chrono::steady_clock::now() + delay;
      }
      acked = std::max(acked, v);
      if (timeout && std::chrono::steady_clock::now() >= deadline) return;
    }
  };
  while (std::chrono::steady_clock::now() < deadline) drain(1);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  drain(0);
  ::close(rfd);
  if (!WIFSIGNALED(status)) FAIL("the child exited by itself: " << test::read_file(errfile));
  return acked;
}

void cut_to_synced(const std::string& dir, const std::string& trace) {
  if (::access(trace.c_str(), R_OK) != 0) return;
  std::istringstream lines(test::read_file(trace));
  std::string name, last;
  uint64_t size = 0, last_size = 0;
  while (lines >> name >> size) last = name, last_size = size;
  if (last.empty()) return;
  auto path = dir + "/wal/" + last;
  if (test::file_size(path) > last_size) test::truncate_file(path, last_size);
}

}  // namespace

TEST_CASE("database: SIGKILL at random moments keeps the crash-safety contract", "[crash][database]") {
  test::temp_dir d;
  checker c(d.path() + "/data");
  std::mt19937_64 rng(2026);
  int n = rounds();
  for (int i = 0; i < n; ++i) c.check(run_round(c.dir, rng, "", d / "child.err"));
  INFO(n << " rounds, " << c.acked << " acknowledged transactions");
  CHECK(c.acked > n);  // the workload made progress
}

TEST_CASE("database: simulated power loss (WAL cut to its last fdatasync) keeps the contract",
          "[crash][database]") {
  test::temp_dir d;
  checker c(d.path() + "/data");
  std::string trace = d / "sync.trace";
  std::mt19937_64 rng(7);
  int n = rounds() / 2;
  for (int i = 0; i < n; ++i) {
    ::unlink(trace.c_str());
    auto acked = run_round(c.dir, rng, trace, d / "child.err");
    cut_to_synced(c.dir, trace);
    c.check(acked);
  }
  CHECK(c.acked > n);
}
