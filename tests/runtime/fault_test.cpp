// Injected I/O faults ([faults]): through tests/fault_fs.*, every write-side file operation of
// the WAL, slot files and the data directory fails in turn -- ENOSPC and EIO on write, a short
// write, a failed fdatasync, truncate, rename, unlink, directory fsync, preallocation -- at every
// step (call 1, then call 2, ... until the operation completes without meeting the fault) of a
// commit, a segment roll, a compaction (deleting and archiving) and a slot creation and ack.
// After each: nothing acknowledged is lost, nothing unacknowledged is visible (in SQLite or in
// the WAL), and the next open, with the fault gone, is clean (no error, no leftover .tmp, LSNs
// not reused). A failed fdatasync stops the WAL for good and ends live subscriptions.
#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "fault_fs.hpp"
#include <dosql/cdc.hpp>
#include <dosql/slots.hpp>
#include <dosql/value.hpp>
#include "support.hpp"
#include "wal/file.hpp"
#include "wal/reader.hpp"

using namespace dosql;
using test::must;
using op = test::fault_fs::op;

namespace {

struct fault_kind {
  op kind;
  int err;
  bool short_write;
  const char* what;
};

// Every kind of fault, with the errors a full or failing disk gives.
const std::vector<fault_kind>& all_faults() {
  static const std::vector<fault_kind> v = {
      {op::write, ENOSPC, false, "write ENOSPC"},   {op::write, EIO, false, "write EIO"},
      {op::write, 0, true, "short write"},          {op::sync, EIO, false, "fdatasync EIO"},
      {op::allocate, ENOSPC, false, "allocate ENOSPC"}, {op::truncate, EIO, false, "truncate EIO"},
      {op::rename, EIO, false, "rename EIO"},       {op::dir_sync, EIO, false, "directory fsync EIO"},
      {op::open, ENOSPC, false, "open/create ENOSPC"}, {op::unlink, EIO, false, "unlink EIO"},
      {op::mkdir, ENOSPC, false, "mkdir ENOSPC"},
  };
  return v;
}

bool has_tmp(const std::string& dir) {
  if (!wal::path_exists(dir)) return false;
  for (auto& [name, bytes] : test::dir_bytes(dir))
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) return true;
  return false;
}

// Rows of table t in committed WAL transactions (BEGIN ... COMMIT; a ROLLBACK or a missing
// COMMIT drops them), from the oldest retained LSN; also checks LSNs are gap-free.
std::set<int64_t> wal_rows(const std::string& wal_dir, uint64_t& last_lsn) {
  auto r = must(wal::reader::open(wal_dir));
  std::set<int64_t> out, pending;
  entry_view e;
  uint64_t prev = 0;
  for (;;) {
    auto st = r->next(e);
    if (st == wal::reader::status::error) FAIL(r->last_error().to_string());
    if (st != wal::reader::status::entry) break;
    if (prev) REQUIRE(e.lsn == prev + 1);
    prev = e.lsn;
    if (e.op == op_type::begin) pending.clear();
    if (e.op == op_type::insert && e.table == "t" && e.has_after) {
      auto row = must(codec::decode_row(e.after));
      pending.insert(std::get<int64_t>(row.values.at(0)));
    }
    if (e.op == op_type::commit) out.insert(pending.begin(), pending.end()), pending.clear();
    if (e.op == op_type::rollback) pending.clear();
  }
  last_lsn = prev;
  return out;
}

std::set<int64_t> sqlite_rows(database& db) {
  std::set<int64_t> out;
  auto q = must(db.query("SELECT id FROM t"));
  for (auto& row : q.rows) out.insert(std::get<int64_t>(row.at(0)));
  return out;
}

// What a scenario knows about its commits.
struct ledger {
  std::set<int64_t> acked, failed;
  uint64_t max_acked_lsn = 0;
  int64_t next_id = 1;
  // One INSERT as its own commit; remembers whether it was acknowledged.
  bool insert(database& db, size_t bytes = 40) {
    int64_t id = next_id++;
    auto r = db.exec("INSERT INTO t VALUES(?, ?)", {id, std::string(bytes, 'x')});
    if (r) {
      acked.insert(id);
      max_acked_lsn = std::max(max_acked_lsn, r->commit_lsn);
    } else {
      failed.insert(id);
    }
    return static_cast<bool>(r);
  }
};

// With the fault gone: the directory opens, holds exactly the acknowledged rows in SQLite and in
// the WAL (unless `compacted`: rows may then have left the WAL), no .tmp file, and the next
// commit gets a fresh LSN.
void check_reopen(const std::string& dir, const database_options& o, ledger& l, bool compacted = false) {
  runtime rt;
  auto db = rt.open(dir, o);
  if (!db) FAIL("reopen after the fault: " << db.err().to_string());
  CHECK_FALSE(has_tmp(dir));
  CHECK(sqlite_rows(**db) == l.acked);
  uint64_t last = 0;
  auto in_wal = wal_rows((*db)->wal_dir(), last);
  if (compacted) {
    for (auto id : in_wal) CHECK(l.acked.count(id));
  } else {
    CHECK(in_wal == l.acked);
  }
  CHECK(last >= l.max_acked_lsn);
  // The change stream (committed entries only) carries the same rows.
  cdc::subscribe_options so;
  so.from_oldest = true;
  so.stop_at_tail = true;
  auto sub = must(cdc::create_cdc(*db).subscribe(so));
  std::set<int64_t> streamed;
  while (auto e = sub->next())
    if (e->op == op_type::insert && e->table == "t" && e->after) {
      std::string_view img(reinterpret_cast<const char*>(e->after->data()), e->after->size());
      streamed.insert(std::get<int64_t>(must(codec::decode_row(img)).values.at(0)));
    }
  CHECK_FALSE(sub->err());
  sub.reset();
  CHECK(streamed == in_wal);
  int64_t id = l.next_id++;
  auto r = (*db)->exec("INSERT INTO t VALUES(?, 'after')", {id});
  if (!r) FAIL("a commit after the reopen: " << r.err().to_string());
  CHECK(r->commit_lsn > last);  // LSNs never reused
  l.acked.insert(id);
  l.max_acked_lsn = r->commit_lsn;
  REQUIRE_FALSE((*db)->close());
}

database_options small_segments(bool prealloc) {
  database_options o;
  o.wal.target_segment_size = 2048;  // a roll every dozen commits
  o.wal.max_entries_per_segment = 1000;
  o.wal.preallocate = prealloc;
  return o;
}

// Runs `step` with the fault armed at call 1, 2, ... of its kind until a run meets no fault.
// `step` gets a fresh directory each time, sets it up (faults disarmed), arms, acts, checks.
template <class Step>
void every_call(const fault_kind& f, Step step) {
  int runs = 0;
  for (uint64_t n = 1;; ++n) {
    INFO(f.what << " at call " << n);
    bool hit = step(n);
    ++runs;
    if (!hit) break;
    REQUIRE(n < 200);  // an operation of bounded size
  }
  SUCCEED(f.what << ": " << runs << " runs");
}

// The writer logs every injected failure as an error: quiet while a suite runs them by the
// hundred (the checks say what went wrong).
struct quiet_log {
  spdlog::level::level_enum prev = spdlog::get_level();
  quiet_log() { spdlog::set_level(spdlog::level::off); }
  ~quiet_log() { spdlog::set_level(prev); }
};

}  // namespace

TEST_CASE("faults: a commit, at every write-side call, loses nothing acknowledged and shows nothing else",
          "[faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  quiet_log quiet;
  auto prealloc = GENERATE(true, false);
  for (auto& f : all_faults()) {
    every_call(f, [&](uint64_t n) {
      test::temp_dir d;
      auto o = small_segments(prealloc);
      o.wal.target_segment_size = 64 * 1024;  // no roll: the commit alone
      ledger l;
      bool hit;
      {
        runtime rt;
        auto db = must(rt.open(d.path(), o));
        must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
        l.insert(*db);
        fs.arm(f.kind, n, f.err, f.short_write);
        bool ok = l.insert(*db);
        hit = fs.hit();
        fs.disarm();
        if (!ok) {
          // The WAL stopped: it accepts nothing more and says why.
          auto again = db->exec("INSERT INTO t VALUES(1000, 'refused')");
          REQUIRE_FALSE(again);
          CHECK_THAT(again.err().message(), Catch::Contains("WAL"));
        }
        (void)db->close();
      }
      check_reopen(d.path(), o, l);
      return hit;
    });
  }
}

TEST_CASE("faults: commits across a segment roll, at every write-side call", "[faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  quiet_log quiet;
  auto prealloc = GENERATE(true, false);
  auto by_count = GENERATE(false, true);  // a full segment, or one that still has zero fill to cut
  for (auto& f : all_faults()) {
    every_call(f, [&](uint64_t n) {
      test::temp_dir d;
      auto o = small_segments(prealloc);
      if (by_count) {
        o.wal.target_segment_size = 64 * 1024;
        o.wal.max_entries_per_segment = 12;  // BEGIN, INSERT, COMMIT: four commits a segment
      }
      ledger l;
      bool hit;
      {
        runtime rt;
        auto db = must(rt.open(d.path(), o));
        must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
        fs.arm(f.kind, n, f.err, f.short_write);
        bool failed = false;
        for (int i = 0; i < 30; ++i) {  // about three rolls
          bool ok = l.insert(*db, 100);
          if (failed) CHECK_FALSE(ok);  // once stopped, the WAL stays stopped
          failed |= !ok;
        }
        hit = fs.hit();
        fs.disarm();
        (void)db->close();
      }
      check_reopen(d.path(), o, l);
      return hit;
    });
  }
}

TEST_CASE("faults: concurrent commits (group commit) across segment rolls, at every write-side call", "[faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  quiet_log quiet;
  for (auto& f : all_faults()) {
    every_call(f, [&](uint64_t n) {
      test::temp_dir d;
      auto o = small_segments(true);
      o.wal.max_entries_per_segment = 12;
      ledger l;
      std::mutex mu;
      bool hit;
      {
        runtime rt;
        auto db = must(rt.open(d.path(), o));
        must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
        fs.arm(f.kind, n, f.err, f.short_write);
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
          threads.emplace_back([&, t] {
            for (int i = 0; i < 8; ++i) {
              int64_t id = 1 + t * 100 + i;
              auto r = db->exec("INSERT INTO t VALUES(?, 'x')", {id});
              std::lock_guard<std::mutex> g(mu);
              if (r) {
                l.acked.insert(id);
                l.max_acked_lsn = std::max(l.max_acked_lsn, r->commit_lsn);
              } else {
                l.failed.insert(id);
              }
            }
          });
        for (auto& t : threads) t.join();
        l.next_id = 1000;
        hit = fs.hit();
        fs.disarm();
        (void)db->close();
      }
      check_reopen(d.path(), o, l);
      return hit;
    });
  }
}

TEST_CASE("faults: creating a database and rewriting dosql.conf, at every write-side call", "[faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  quiet_log quiet;
  auto existing = GENERATE(false, true);  // a new directory, or new settings for an existing one
  for (auto& f : all_faults()) {
    every_call(f, [&](uint64_t n) {
      test::temp_dir d;
      std::string dir = d / "db";
      ledger l;
      if (existing) {
        runtime rt;
        auto db = must(rt.open(dir));
        must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
        REQUIRE(l.insert(*db));
        REQUIRE_FALSE(db->close());
      }
      auto o = small_segments(true);
      bool hit;
      {
        runtime rt;
        fs.arm(f.kind, n, f.err, f.short_write);
        auto db = rt.open(dir, o);
        hit = fs.hit();
        fs.disarm();
        if (db) {
          if (!existing) must((*db)->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
          CHECK_FALSE((*db)->close());
        } else {
          INFO(db.err().to_string());
          CHECK(db.err().code() == ec::io_error);  // a clear I/O error naming the file
        }
      }
      CHECK_FALSE(has_tmp(dir));
      if (!existing) {  // the failed creation may have left a directory: it opens as new
        runtime rt;
        auto db = rt.open(dir, o);
        if (!db) FAIL("reopen after a failed creation: " << db.err().to_string());
        REQUIRE((*db)->exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)"));
        REQUIRE_FALSE((*db)->close());
      }
      check_reopen(dir, o, l);
      return hit;
    });
  }
}

TEST_CASE("faults: compaction (deleting and archiving), at every write-side call", "[faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  quiet_log quiet;
  auto archive = GENERATE(false, true);
  for (auto& f : all_faults()) {
    every_call(f, [&](uint64_t n) {
      test::temp_dir d;
      auto o = small_segments(true);
      o.wal.auto_archive = archive;
      ledger l;
      bool hit;
      {
        runtime rt;
        auto db = must(rt.open(d.path(), o));
        must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
        for (int i = 0; i < 40; ++i) REQUIRE(l.insert(*db, 100));
        fs.arm(f.kind, n, f.err, f.short_write);
        auto r = db->compact(db->last_lsn());
        hit = fs.hit();
        fs.disarm();
        if (r) CHECK_FALSE(r->removed.empty());
        // A failed compaction loses nothing and does not stop the database.
        CHECK(l.insert(*db));
        CHECK_FALSE(db->close());
      }
      check_reopen(d.path(), o, l, true);
      if (archive && wal::path_exists(d / "wal/archive")) {  // every segment is in one of wal/, wal/archive/
        auto live = test::list_files(d / "wal"), old = test::list_files(d / "wal/archive");
        for (auto& name : old) CHECK(std::find(live.begin(), live.end(), name) == live.end());
      }
      return hit;
    });
  }
}

TEST_CASE("faults: slot creation and acknowledgement, at every write-side call", "[faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  quiet_log quiet;
  cdc::slot_config manual;
  manual.check_interval = std::chrono::milliseconds(0);
  for (auto& f : all_faults()) {
    every_call(f, [&](uint64_t n) {
      test::temp_dir d;
      database_options o;
      ledger l;
      bool hit;
      uint64_t acked_before = 0, acked_after = 0;
      bool ack_ok = false, create_ok = false;
      {
        runtime rt;
        auto db = must(rt.open(d.path(), o));
        must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
        auto slots = cdc::create_slot_manager(db, manual);
        must(slots->create_slot("keep"));
        for (int i = 0; i < 3; ++i) REQUIRE(l.insert(*db));
        acked_before = must(slots->get_slot("keep")).acked_lsn;
        acked_after = db->last_lsn();
        fs.arm(f.kind, n, f.err, f.short_write);
        ack_ok = !slots->update_slot("keep", acked_after);
        create_ok = static_cast<bool>(slots->create_slot("fresh"));
        hit = fs.hit();
        fs.disarm();
        slots.reset();
        CHECK_FALSE(db->close());
      }
      check_reopen(d.path(), o, l);
      runtime rt;
      auto db = must(rt.open(d.path(), o));
      auto slots = cdc::create_slot_manager(db, manual);
      auto keep = slots->get_slot("keep");
      REQUIRE(keep);  // never damaged: a slot file is replaced atomically
      if (ack_ok) CHECK(keep->acked_lsn == acked_after);  // an acknowledged ack is durable
      CHECK((keep->acked_lsn == acked_before || keep->acked_lsn == acked_after));
      auto fresh = slots->get_slot("fresh");
      if (create_ok) CHECK(fresh);
      if (!fresh) CHECK(fresh.err().code() == ec::slot_not_found);
      CHECK_FALSE(has_tmp(d.path()));
      slots.reset();
      CHECK_FALSE(db->close());
      return hit;
    });
  }
}

TEST_CASE("faults: after a failed fdatasync the WAL never retries, refuses writes saying why, and live "
          "subscriptions end with the writer's error", "[faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  quiet_log quiet;
  test::temp_dir d;
  ledger l;
  {
    runtime rt;
    auto db = must(rt.open(d.path()));
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
    REQUIRE(l.insert(*db));
    cdc::subscribe_options so;
    so.from_lsn = db->last_lsn();
    auto sub = must(cdc::create_cdc(db).subscribe(so));
    // The subscriber waits at the tail in another thread (bounded: stop() ends it).
    auto ended = std::async(std::launch::async, [&] {
      while (sub->next()) {
      }
      return sub->err();
    });
    uint64_t syncs = fs.calls(op::sync);
    fs.arm(op::sync, 1, EIO);
    REQUIRE_FALSE(l.insert(*db));
    CHECK(fs.hit());
    fs.disarm();
    // Refused, with the reason, and no fdatasync was tried again on the WAL.
    for (int i = 0; i < 3; ++i) {
      auto r = db->exec("INSERT INTO t VALUES(500, 'x')");
      REQUIRE_FALSE(r);
      CHECK_THAT(r.err().message(), Catch::Contains("fdatasync"));
    }
    CHECK(fs.calls(op::sync) <= syncs + 2);  // the failed one and the take-back's
    bool done = ended.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
    if (!done) sub->stop();
    CHECK(done);  // the subscription ended by itself
    auto why = ended.get();
    CHECK(why);
    CHECK_THAT(why.message(), Catch::Contains("WAL writer") && Catch::Contains("failed"));
    // A subscription opened after the failure ends at once too.
    auto late = cdc::create_cdc(db).subscribe(so);
    if (late) {
      auto f2 = std::async(std::launch::async, [&] {
        while ((*late)->next()) {
        }
        return (*late)->err();
      });
      bool done2 = f2.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
      if (!done2) (*late)->stop();
      CHECK(done2);
      CHECK(f2.get());
    }
    (void)db->close();
  }
  check_reopen(d.path(), {}, l);
}
