// Replication slots: the API and its errors, durability (kill -9 right after an ack),
// resuming with the slot's filter, compaction bounded by the slowest slot, the retention
// guard, idle detection, lag, and snapshot-then-stream with no gap and no duplicate.
#include <catch2/catch.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msgpack.hpp>

#include <optional>
#include <sstream>
#include <random>
#include <thread>

#include "actors/messages.hpp"
#include "actors/slot_manager.hpp"
#include "wal/format.hpp"
#include "wal/file.hpp"

#include <caf/all.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <dosql/reliability.hpp>
#include <dosql/slots.hpp>
#include "wal/sqlite_util.hpp"
#include "runtime/support.hpp"
#include "wal/reader.hpp"

#include <atomic>
#include <map>

using namespace dosql;
using test::must;

namespace {

struct fixture : test::db_fixture {
  explicit fixture(const database_options& o = {}) : test::db_fixture(o) {
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE u(id INTEGER PRIMARY KEY)"));
  }
  void insert(int n) {
    for (int i = 0; i < n; ++i) must(db->exec("INSERT INTO t(v) VALUES('x')"));
  }
};

cdc::slot_config manual() {
  cdc::slot_config c;
  c.check_interval = std::chrono::milliseconds(0);  // checks only when the test asks
  return c;
}

}  // namespace

TEST_CASE("slots: create, get, list, acknowledge forward only, delete, and the error codes", "[slots]") {
  fixture f;
  auto slots = cdc::create_slot_manager(f.db, manual());
  auto s = must(slots->create_slot("orders_sync"));
  CHECK(s.acked_lsn == f.db->durable_lsn());
  CHECK(slots->create_slot("orders_sync").err().code() == ec::slot_exists);
  CHECK(slots->create_slot("../etc").err().code() == ec::invalid_argument);
  CHECK(slots->create_slot("").err().code() == ec::invalid_argument);
  CHECK(slots->get_slot("nope").err().code() == ec::slot_not_found);
  CHECK(slots->update_slot("nope", 1).code() == ec::slot_not_found);
  f.insert(3);
  auto lag = must(slots->get_slot("orders_sync"));
  CHECK(lag.lag_entries == 3);  // the three row changes, not BEGIN/COMMIT
  CHECK(lag.lag_bytes > 0);
  // The bytes in use, not the active segment's preallocated zero fill.
  CHECK(lag.lag_bytes < 64 * 1024);
  CHECK(lag.lag_bytes <= f.db->wal_active_segment().bytes);
  REQUIRE_FALSE(slots->update_slot("orders_sync", s.acked_lsn + 6));
  auto back = slots->update_slot("orders_sync", s.acked_lsn + 1);
  CHECK(back.code() == ec::invalid_argument);
  CHECK(back.message().find("never moves it back") != std::string::npos);
  CHECK(must(slots->get_slot("orders_sync")).acked_lsn == s.acked_lsn + 6);
  must(slots->create_slot("b"));
  CHECK(slots->list_slots().size() == 2);
  REQUIRE_FALSE(slots->delete_slot("b"));
  CHECK(slots->delete_slot("b").code() == ec::slot_not_found);
  CHECK(slots->list_slots().size() == 1);
}

TEST_CASE("slots survive kill -9 right after an acknowledgement returned", "[slots]") {
  test::temp_dir d;
  int p[2];
  REQUIRE(::pipe(p) == 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    runtime rt;
    auto db = rt.open(d.path());
    if (!db) _exit(2);
    if (!(*db)->exec("CREATE TABLE t(id INTEGER PRIMARY KEY)")) _exit(3);
    auto slots = cdc::create_slot_manager(*db, manual());
    if (!slots->create_slot("s")) _exit(4);
    for (uint64_t i = 1;; ++i) {
      if (!(*db)->exec("INSERT INTO t VALUES(?)", {int64_t(i)})) _exit(5);
      uint64_t lsn = (*db)->last_lsn();
      if (slots->update_slot("s", lsn)) _exit(6);
      if (::write(p[1], &lsn, sizeof lsn) != sizeof lsn) _exit(7);
    }
  }
  ::close(p[1]);
  uint64_t acked = 0, v;
  pollfd pfd{p[0], POLLIN, 0};
  // The first acknowledgement (start-up may be slow on a loaded machine: bounded, not timed),
  // then whatever comes within 300 ms.
  if (::poll(&pfd, 1, 20000) > 0 && ::read(p[0], &v, sizeof v) == sizeof v) acked = v;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (acked && std::chrono::steady_clock::now() < until && ::poll(&pfd, 1, 100) > 0 &&
         ::read(p[0], &v, sizeof v) == sizeof v)
    acked = v;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  while (::read(p[0], &v, sizeof v) == sizeof v) acked = v;
  ::close(p[0]);
  REQUIRE(acked > 0);
  runtime rt;
  auto db = must(rt.open(d.path()));
  auto slots = cdc::create_slot_manager(db, manual());
  CHECK(must(slots->get_slot("s")).acked_lsn >= acked);
}

TEST_CASE("subscribe_from_slot resumes after the acknowledged LSN with the slot's filter", "[slots]") {
  fixture f;
  auto slots = cdc::create_slot_manager(f.db, manual());
  cdc::create_slot_options o;
  o.filter.tables = {"t"};
  must(slots->create_slot("s", o));
  f.insert(5);
  must(f.db->exec("INSERT INTO u VALUES(1)"));
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  std::vector<uint64_t> first;
  {
    auto sub = must(slots->subscribe_from_slot("s", so));
    for (auto& e : *sub) {
      CHECK(e.table == "t");
      first.push_back(e.lsn);
      if (first.size() == 2) break;
    }
  }
  REQUIRE_FALSE(slots->update_slot("s", first.back()));  // processed two
  auto sub = must(slots->subscribe_from_slot("s", so));
  std::vector<uint64_t> rest;
  for (auto& e : *sub) rest.push_back(e.lsn);
  CHECK(rest.size() == 3);
  CHECK(rest.front() > first.back());
}

TEST_CASE("subscribe_from_slot starts at extra.from_lsn when it is past the slot's acknowledged LSN", "[slots]") {
  // A consumer that knows more than the slot (the lakehouse streamer: its receiver's watermark)
  // resumes there; an extra.from_lsn below the slot's position is ignored (the slot wins).
  fixture f;
  auto slots = cdc::create_slot_manager(f.db, manual());
  cdc::create_slot_options o;
  o.start_lsn = 0;
  must(slots->create_slot("s", o));
  f.insert(6);
  std::vector<uint64_t> all;
  {
    cdc::subscribe_options so;
    so.stop_at_tail = true;
    auto sub = must(slots->subscribe_from_slot("s", so));
    for (auto& e : *sub)
      if (is_row_change(e.op)) all.push_back(e.lsn);
  }
  REQUIRE(all.size() == 6);
  REQUIRE_FALSE(slots->update_slot("s", all[1]));
  auto from = [&](uint64_t lsn) {
    cdc::subscribe_options so;
    so.stop_at_tail = true;
    so.from_lsn = lsn;
    std::vector<uint64_t> got;
    auto sub = must(slots->subscribe_from_slot("s", so));
    for (auto& e : *sub)
      if (is_row_change(e.op)) got.push_back(e.lsn);
    return got;
  };
  CHECK(from(all[3]) == std::vector<uint64_t>(all.begin() + 4, all.end()));
  CHECK(from(all[0]) == std::vector<uint64_t>(all.begin() + 2, all.end()));
  CHECK(from(0) == std::vector<uint64_t>(all.begin() + 2, all.end()));
}

TEST_CASE("compaction keeps exactly what the slowest slot needs, and the retention guard invalidates", "[slots]") {
  database_options o;
  o.wal.max_entries_per_segment = 30;
  o.wal.retention.max_bytes = 1;  // retention keeps nothing: the slots alone decide
  fixture f(o);
  auto slots = cdc::create_slot_manager(f.db, manual());
  must(slots->create_slot("fast"));
  auto slow = must(slots->create_slot("slow"));
  f.insert(100);
  REQUIRE_FALSE(slots->update_slot("fast", f.db->last_lsn()));
  REQUIRE_FALSE(slots->update_slot("slow", slow.acked_lsn + 60));
  REQUIRE_FALSE(slots->check());
  auto r = wal::reader::open(f.db->wal_dir());
  uint64_t oldest = *(*r)->oldest_lsn();
  CHECK(oldest <= slow.acked_lsn + 61);       // everything the slow slot still needs is there
  CHECK(oldest > slow.acked_lsn + 61 - 30);   // and no segment it does not need
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  auto sub = must(slots->subscribe_from_slot("slow", so));
  CHECK(sub->next().has_value());
  // The guard: a slot holding more than max_slot_retention_bytes is invalidated.
  auto guarded_cfg = manual();
  guarded_cfg.max_slot_retention_bytes = 1;
  auto guarded = cdc::create_slot_manager(f.db, guarded_cfg);  // the same slot files
  REQUIRE_FALSE(guarded->check());
  auto s = must(guarded->get_slot("slow"));
  CHECK(s.invalidated);
  CHECK(s.invalid_reason.find("max_slot_retention_bytes") != std::string::npos);
  auto gone = guarded->subscribe_from_slot("slow", so);
  REQUIRE_FALSE(gone);
  CHECK(gone.err().code() == ec::lsn_not_found);
}

TEST_CASE("an idle slot is reported stalled and, when configured, invalidated", "[slots]") {
  fixture f;
  auto cfg = manual();
  cfg.idle_timeout = std::chrono::milliseconds(50);
  auto slots = cdc::create_slot_manager(f.db, cfg);
  must(slots->create_slot("idle"));
  f.insert(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  auto s = must(slots->get_slot("idle"));
  CHECK(s.stalled);
  CHECK(s.lag_ms >= 100);
  cfg.invalidate_idle = true;
  slots.reset();
  auto strict = cdc::create_slot_manager(f.db, cfg);
  REQUIRE_FALSE(strict->check());
  CHECK(must(strict->get_slot("idle")).invalidated);
}

TEST_CASE("snapshot then stream: no gap and no duplicate at the hand-off, under concurrent writes", "[slots]") {
  fixture f;
  f.insert(200);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    int i = 0;
    while (!stop) {
      must(f.db->exec("INSERT INTO t(v) VALUES('w')"));
      if (++i % 3 == 0) must(f.db->exec("UPDATE t SET v = 'u' WHERE id = (SELECT max(id) FROM t)"));
      if (i % 5 == 0) must(f.db->exec("DELETE FROM t WHERE id = (SELECT min(id) FROM t)"));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  auto slots = cdc::create_slot_manager(f.db, manual());
  cdc::create_slot_options o;
  o.filter.tables = {"t"};
  o.snapshot = true;
  cdc::slot_snapshot snap;
  auto s = must(slots->create_slot("snap", o, &snap));
  CHECK(snap.lsn == s.acked_lsn);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  stop = true;
  writer.join();
  // Rebuild t from the snapshot plus the stream; it must equal the table.
  std::map<int64_t, std::string> copy;
  for (auto& r : snap.tables["t"].rows) copy[std::get<int64_t>(r[0])] = std::get<std::string>(r[1]);
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  auto sub = must(slots->subscribe_from_slot("snap", so));
  for (auto& e : *sub) {
    auto ev = std::get<cdc::change_event<row>>(must(cdc::to_event(e)));
    if (ev.type == cdc::change_type::del) {
      REQUIRE(copy.erase(std::get<int64_t>(*ev.old_data->find("id"))) == 1);  // no gap
    } else {
      auto id = std::get<int64_t>(*ev.data->find("id"));
      if (ev.type == cdc::change_type::insert) REQUIRE(copy.count(id) == 0);  // no duplicate
      copy[id] = std::get<std::string>(*ev.data->find("v"));
    }
  }
  auto now = must(f.db->query("SELECT id, v FROM t"));
  std::map<int64_t, std::string> table;
  for (auto& r : now.rows) table[std::get<int64_t>(r[0])] = std::get<std::string>(r[1]);
  CHECK(copy == table);
}

namespace {

// A round trip through the WAL writer: every message it had queued (retention after a seal
// included) has been handled when this returns.
void writer_round_trip(database& db) {
  caf::scoped_actor self{db.owner().system()};
  bool ok = false;
  self->request(db.wal_writer(), std::chrono::seconds(30), actors::sync_atom::value)
      .receive([&](uint64_t) { ok = true; }, [&](caf::error&) {});
  REQUIRE(ok);
}

std::vector<uint64_t> segments_of(const database& db) { return must(wal::segment_firsts(db.wal_dir())); }

}  // namespace

TEST_CASE("retention by default: after a seal, segments sealed over 7 days ago that no slot needs go, on their own",
          "[slots][retention]") {
  database_options o;
  o.wal.max_entries_per_segment = 30;  // 10 single-row transactions per segment
  REQUIRE(o.wal.retention.automatic);
  REQUIRE(o.wal.retention.max_age_ms == 7ull * 24 * 3600 * 1000);
  fixture f(o);
  f.insert(60);
  auto slots = cdc::create_slot_manager(f.db, manual());  // (no periodic check: the writer alone)
  auto s = must(slots->create_slot("s"));                  // needs everything after this
  f.insert(60);
  writer_round_trip(*f.db);
  auto young = segments_of(*f.db);
  CHECK(young.front() == 1);  // sealed just now: the 7 days keep them
  test::age_sealed_segments(f.db->wal_dir(), std::chrono::hours(24 * 8));
  CHECK(segments_of(*f.db) == young);  // nothing happens before a seal
  f.insert(20);                        // seals two more segments
  writer_round_trip(*f.db);
  auto after = segments_of(*f.db);
  CHECK(after.front() > 1);                       // old segments nobody needs are gone,
  CHECK(after.front() <= s.acked_lsn + 1);        // every entry the slot needs stays,
  CHECK(after.front() + 30 > s.acked_lsn + 1);    // and no segment it does not need
  CHECK(test::list_files(f.d / "wal").size() >= after.size());
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  auto sub = must(slots->subscribe_from_slot("s", so));
  size_t n = 0;
  for (auto& e : *sub) {
    CHECK(e.lsn > s.acked_lsn);
    ++n;
  }
  CHECK(sub->err().code() == ec::none);
  CHECK(n == 80);
  // Without a slot, a consumer from the start learns that history was compacted.
  cdc::subscribe_options from0;
  from0.from_lsn = 0;
  from0.stop_at_tail = true;
  auto gone = cdc::create_cdc(f.db).subscribe(from0);
  REQUIRE_FALSE(gone);
  CHECK(gone.err().code() == ec::lsn_not_found);
  CHECK(gone.err().oldest_lsn == after.front());
}

TEST_CASE("retention off keeps everything; the policy is recorded in dosql.conf and the next open uses it",
          "[slots][retention]") {
  test::temp_dir d;
  runtime rt;
  database_options o;
  o.wal.max_entries_per_segment = 30;
  o.wal.retention.automatic = false;
  {
    auto db = must(rt.open(d.path(), o));
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
    for (int i = 0; i < 60; ++i) must(db->exec("INSERT INTO t(v) VALUES('x')"));
    test::age_sealed_segments(db->wal_dir(), std::chrono::hours(24 * 365));
    for (int i = 0; i < 30; ++i) must(db->exec("INSERT INTO t(v) VALUES('x')"));
    writer_round_trip(*db);
    CHECK(segments_of(*db).front() == 1);
    auto rep = must(db->apply_retention());
    CHECK(rep.removed.empty());
    CHECK(rep.oldest_lsn == 1);
    REQUIRE_FALSE(db->close());
  }
  auto recorded = must(load_database_options(d.path()));
  CHECK_FALSE(recorded.wal.retention.automatic);
  auto db = must(rt.open(d.path()));  // no explicit settings: the recorded ones
  for (int i = 0; i < 30; ++i) must(db->exec("INSERT INTO t(v) VALUES('x')"));
  writer_round_trip(*db);
  CHECK(segments_of(*db).front() == 1);
  // Explicitly back to the defaults (wal_as_given): recorded as such.
  REQUIRE_FALSE(db->close());
  database_options defaults;
  defaults.wal_as_given = true;
  REQUIRE_FALSE(must(rt.open(d.path(), defaults))->close());
  CHECK(must(load_database_options(d.path())).wal.retention.automatic);
}

TEST_CASE("retention by size keeps the newest max_bytes of sealed segments, archived with auto_archive",
          "[slots][retention]") {
  database_options o;
  o.wal.max_entries_per_segment = 30;
  o.wal.auto_archive = true;
  o.wal.retention.max_age_ms = 0;             // size alone
  o.wal.retention.max_bytes = 3 * 30 * 100;   // about three segments' worth
  fixture f(o);
  f.insert(100);  // ~10 segments
  writer_round_trip(*f.db);
  auto firsts = segments_of(*f.db);
  uint64_t sealed = 0;
  for (size_t i = 0; i + 1 < firsts.size(); ++i)
    sealed += test::file_size(f.d / ("wal/" + wal::segment_file_name(firsts[i])));
  CHECK(sealed <= o.wal.retention.max_bytes);
  CHECK(sealed > o.wal.retention.max_bytes / 3);  // and not much less
  auto archived = test::list_files(f.d / "wal/archive");
  REQUIRE_FALSE(archived.empty());
  CHECK(archived.front() == wal::segment_file_name(1));  // moved, from the oldest on
  CHECK(archived.back() < wal::segment_file_name(firsts.front()));
}

namespace {

// One consumer process: resumes from slot "c", applies each insert to its own output database
// through the exactly-once sink, acknowledges the slot every few entries. Reports on `fd`:
// +lsn for an acknowledged LSN, -lsn for a duplicate the sink skipped.
[[noreturn]] void consumer_child(const std::string& dir, const std::string& out_path, int fd) {
  runtime rt;
  auto db = rt.open(dir);
  if (!db) _exit(2);
  auto slots = cdc::create_slot_manager(*db, manual());
  auto slot = slots->get_slot("c");
  if (!slot) _exit(3);
  uint64_t acked_at_start = slot->acked_lsn;
  auto sink = reliability::exactly_once_sink::open(out_path);
  if (!sink) _exit(4);
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  so.batch_size = 16;
  auto sub = slots->subscribe_from_slot("c", so);
  if (!sub) _exit(5);
  uint64_t n = 0;
  for (auto& e : **sub) {
    if (e.lsn <= acked_at_start) _exit(9);  // redelivered an acknowledged entry
    uint64_t before = *(*sink)->last_applied("c");
    auto img = codec::decode_row(std::string_view(reinterpret_cast<const char*>(e.after->data()), e.after->size()));
    int64_t id = std::get<int64_t>(*img->find("id"));
    if ((*sink)->apply("c", e.lsn, [&](sqlite3* out) {
          return detail::exec_simple(out, ("INSERT INTO out VALUES(" + std::to_string(id) + ")").c_str());
        }))
      _exit(6);
    if (e.lsn <= before) {
      int64_t dup = -static_cast<int64_t>(e.lsn);
      (void)!::write(fd, &dup, sizeof dup);
    }
    if (++n % 7 == 0) {
      if (slots->update_slot("c", e.lsn)) _exit(7);
      int64_t ack = static_cast<int64_t>(e.lsn);
      (void)!::write(fd, &ack, sizeof ack);
    }
  }
  _exit(sub->get()->err() ? 8 : 0);
}

}  // namespace

TEST_CASE("a consumer killed mid-batch resumes from its slot: nothing missing, duplicates removed", "[slots]") {
  test::temp_dir d;
  std::string dir = d / "data", out = d / "out.sqlite";
  {
    runtime rt;
    auto db = must(rt.open(dir));
    must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY)"));
    auto slots = cdc::create_slot_manager(db, manual());
    cdc::create_slot_options o;
    o.filter.tables = {"t"};
    o.filter.operations = {op_type::insert};
    must(slots->create_slot("c", o));
    for (int i = 1; i <= 1500; ++i) must(db->exec("INSERT INTO t VALUES(?)", {int64_t{i}}));
  }
  {
    auto sink = must(reliability::exactly_once_sink::open(out));
    REQUIRE_FALSE(detail::exec_simple(sink->db(), "CREATE TABLE out(id INTEGER)"));  // no key: duplicates would show
  }
  std::mt19937_64 rng(5);
  int64_t dups = 0, kills = 0;
  bool finished = false;
  // One consumer process; killed after `kill_after` unless null (then it runs to the tail).
  auto round = [&](std::optional<std::chrono::microseconds> kill_after) {
    auto [pid, fd] = test::fork_child([&](int w) { consumer_child(dir, out, w); });
    if (kill_after) {
      std::this_thread::sleep_for(*kill_after);
      ::kill(pid, SIGKILL);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    int64_t v;
    while (::read(fd, &v, sizeof v) == sizeof v) dups += v < 0;
    ::close(fd);
    if (WIFEXITED(status)) REQUIRE(WEXITSTATUS(status) == 0);  // 9: an acknowledged entry came back
    return WIFEXITED(status);
  };
  for (int i = 0; i < 40 && !finished; ++i) {
    finished = round(std::chrono::microseconds(5000 + rng() % 40000));
    kills += !finished;
  }
  if (!finished) REQUIRE(round(std::nullopt));  // the last consumer runs to the tail
  auto sink = must(reliability::exactly_once_sink::open(out));
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(sink->db(), "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM out", -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(sqlite3_column_int(s, 0) == 1500);  // nothing missing, nothing twice
  CHECK(sqlite3_column_int(s, 1) == 1500);
  CHECK(sqlite3_column_int(s, 2) == 1);
  CHECK(sqlite3_column_int(s, 3) == 1500);
  sqlite3_finalize(s);
  INFO(kills << " kills, " << dups << " redelivered entries skipped by the sink");
  CHECK(kills > 0);
}

TEST_CASE("a slot with a long table filter (a slot file over 4 KiB) survives reopening", "[slots]") {
  test::temp_dir d;
  std::vector<std::string> tables;
  for (int i = 0; i < 200; ++i) tables.push_back("a_rather_long_table_name_number_" + std::to_string(i));
  {
    runtime rt;
    auto db = must(rt.open(d.path()));
    auto slots = cdc::create_slot_manager(db, manual());
    cdc::create_slot_options o;
    o.filter.tables = tables;
    must(slots->create_slot("wide", o));
  }
  REQUIRE(test::file_size(d / "slots/wide.slot") > 4096);
  runtime rt;
  auto db = must(rt.open(d.path()));
  auto slots = cdc::create_slot_manager(db, manual());
  auto s = must(slots->get_slot("wide"));
  CHECK(s.filter.tables == tables);
}

// ---- issue 10 -------------------------------------------------------------------------------

TEST_CASE("database::compact never removes what a slot needs, whoever compacts", "[slots][retention]") {
  database_options o;
  o.wal.max_entries_per_segment = 30;
  fixture f(o);
  auto slots = cdc::create_slot_manager(f.db, manual());
  cdc::create_slot_options co;
  co.start_lsn = 3;
  must(slots->create_slot("s", co));
  f.insert(100);
  auto rep = must(f.db->compact(300));  // the API path, not the slot manager's check
  CHECK(rep.oldest_lsn <= 4);
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  auto sub = must(slots->subscribe_from_slot("s", so));
  auto first = sub->next();
  REQUIRE(first.has_value());
  CHECK(first->lsn <= 6);
  CHECK(sub->err().code() == ec::none);
  // Invalidated slots hold nothing back; valid ones moved on release the rest.
  REQUIRE_FALSE(slots->update_slot("s", f.db->durable_lsn()));
  rep = must(f.db->compact(300));
  CHECK(rep.oldest_lsn > 200);
}

TEST_CASE("slot positions must exist: acks within the durable WAL and forward, creations retained", "[slots]") {
  database_options o;
  o.wal.max_entries_per_segment = 30;
  fixture f(o);
  f.insert(30);
  uint64_t tail = f.db->durable_lsn();
  auto slots = cdc::create_slot_manager(f.db, manual());
  cdc::create_slot_options co;
  co.start_lsn = 10;
  must(slots->create_slot("s", co));
  for (uint64_t bad : {tail + 1, tail + 1000, UINT64_MAX}) {
    auto e = slots->update_slot("s", bad);
    CHECK(e.code() == ec::invalid_argument);
    CHECK(e.message().find("slot 's'") != std::string::npos);
    CHECK(e.message().find(std::to_string(bad)) != std::string::npos);
  }
  CHECK(must(slots->get_slot("s")).acked_lsn == 10);
  REQUIRE_FALSE(slots->update_slot("s", tail));
  co.start_lsn = tail + 1;
  auto late = slots->create_slot("late", co);
  CHECK(late.err().code() == ec::invalid_argument);
  CHECK(late.err().message().find("slot 'late'") != std::string::npos);
  co.start_lsn = UINT64_MAX - 1;
  CHECK(slots->create_slot("late", co).err().code() == ec::invalid_argument);
  must(f.db->compact(61));
  co.start_lsn = 5;
  auto early = slots->create_slot("early", co);
  CHECK(early.err().code() == ec::lsn_not_found);
  CHECK(early.err().message().find("slot 'early'") != std::string::npos);
  co.start_lsn = 60;
  must(slots->create_slot("edge", co));
  CHECK(slots->create_slot("-x").err().code() == ec::invalid_argument);
  CHECK(slots->list_slots().size() == 2);
}

TEST_CASE("slot files: checksummed, a damaged one is an error naming it, old-format files still read", "[slots]") {
  fixture f;
  f.insert(3);
  {
    auto slots = cdc::create_slot_manager(f.db, manual());
    must(slots->create_slot("a"));
    must(slots->create_slot("b"));
  }
  const std::string path = f.d / "slots/a.slot";
  auto good = test::read_file(path);
  CHECK(good.substr(0, 8) == "DSQSLOT1");
  // An old-format file (bare msgpack, before checksums) is read, and rewritten on its next change.
  // [name, acked, created_ms, last_ack_ms, [tables], [ops], invalidated, reason, stalled,
  //  lag_entries, lag_bytes, lag_ms]: 12 fields, no filter spec (written before issue 12).
  std::stringstream legacy;
  msgpack::packer<std::stringstream> pk(legacy);
  pk.pack_array(12);
  pk.pack(std::string("old"));
  pk.pack_uint64(2);
  pk.pack_int64(1);
  pk.pack_int64(1);
  pk.pack(std::vector<std::string>{"t"});
  pk.pack_array(1);
  pk.pack_uint8(static_cast<uint8_t>(op_type::insert));
  pk.pack(false);
  pk.pack(std::string());
  pk.pack(false);
  pk.pack_uint64(0);
  pk.pack_uint64(0);
  pk.pack_int64(0);
  test::write_file(f.d / "slots/old.slot", legacy.str());
  auto bad = good;
  bad[good.size() / 2] = static_cast<char>(bad[good.size() / 2] ^ 0x10);
  test::write_file(path, bad);
  auto slots = cdc::create_slot_manager(f.db, manual());
  auto old = must(slots->get_slot("old"));
  CHECK(old.acked_lsn == 2);
  CHECK(old.filter.tables == std::vector<std::string>{"t"});
  CHECK(old.filter.operations == std::vector<op_type>{op_type::insert});
  auto a = slots->get_slot("a");
  REQUIRE_FALSE(a);
  CHECK(a.err().code() == ec::decode_error);
  CHECK(a.err().message().find(path) != std::string::npos);
  error problem;
  auto all = slots->list_slots(&problem);
  CHECK(all.size() == 2);  // b and old
  CHECK(problem.code() == ec::decode_error);
  CHECK(problem.message().find(path) != std::string::npos);
  CHECK(slots->update_slot("a", 5).code() == ec::decode_error);
  CHECK(slots->create_slot("a").err().code() == ec::decode_error);
  auto c = f.db->compact(1000);
  REQUIRE_FALSE(c);
  CHECK(c.err().message().find(path) != std::string::npos);
  CHECK(test::read_file(path) == bad);  // nothing rewrote it
  REQUIRE_FALSE(slots->update_slot("old", 3));
  CHECK(test::read_file(f.d / "slots/old.slot").substr(0, 8) == "DSQSLOT1");
  REQUIRE_FALSE(slots->delete_slot("a"));
  CHECK(slots->list_slots(&problem).size() == 2);
  CHECK_FALSE(problem);
}

TEST_CASE("from_lsn: 0 after compaction is LSN_NOT_FOUND unless from_oldest; beyond the end is an error", "[slots][lsn]") {
  database_options o;
  o.wal.max_entries_per_segment = 30;
  fixture f(o);
  f.insert(30);
  cdc::cdc_handle cdc(f.db);
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  for (uint64_t bad : {f.db->durable_lsn() + 1, UINT64_MAX}) {
    so.from_lsn = bad;
    auto s = cdc.subscribe(so);
    REQUIRE_FALSE(s);
    CHECK(s.err().code() == ec::invalid_argument);
    CHECK(s.err().message().find(std::to_string(bad)) != std::string::npos);
  }
  auto rep = must(f.db->compact(61));
  REQUIRE(rep.oldest_lsn > 1);
  so.from_lsn = 0;
  auto s = cdc.subscribe(so);
  REQUIRE_FALSE(s);
  CHECK(s.err().code() == ec::lsn_not_found);
  so.from_oldest = true;
  auto all = must(cdc.subscribe(so));
  auto first = all->next();
  REQUIRE(first.has_value());
  CHECK(first->lsn >= rep.oldest_lsn);
}

TEST_CASE("slot lag counts the entries the consumer would receive and the age of the oldest commit", "[slots][lag]") {
  fixture f;
  auto cfg = manual();
  cfg.idle_timeout = std::chrono::milliseconds(50);
  cfg.invalidate_idle = true;
  auto slots = cdc::create_slot_manager(f.db, cfg);
  must(slots->create_slot("all"));
  cdc::create_slot_options only_u;
  only_u.filter.tables = {"u"};
  must(slots->create_slot("u_only", only_u));
  f.insert(3);  // 3 transactions: 9 entries, 3 row changes of t
  auto s = must(slots->get_slot("all"));
  CHECK(s.lag_entries == 3);
  auto u = must(slots->get_slot("u_only"));
  CHECK(u.lag_entries == 0);
  CHECK(u.lag_ms == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  s = must(slots->get_slot("all"));
  CHECK(s.lag_ms >= 100);  // the oldest unacknowledged commit's age: it grows while stuck
  CHECK(s.stalled);
  REQUIRE_FALSE(slots->check());
  CHECK(must(slots->get_slot("all")).invalidated);
  CHECK_FALSE(must(slots->get_slot("u_only")).invalidated);  // nothing to acknowledge is not idle
  must(f.db->exec("INSERT INTO u VALUES(1)"));
  u = must(slots->get_slot("u_only"));
  CHECK(u.lag_entries == 1);
  REQUIRE_FALSE(slots->update_slot("u_only", f.db->durable_lsn()));
  u = must(slots->get_slot("u_only"));
  CHECK(u.lag_entries == 0);
  CHECK(u.lag_ms == 0);
}

TEST_CASE("slot and subscription lag count only what the row filter (where) would deliver", "[slots][lag][where]") {
  fixture f;
  auto slots = cdc::create_slot_manager(f.db, manual());
  cdc::create_slot_options o;
  o.filter.tables = {"t"};
  o.filter.where["t"] = "v = 'hot'";
  const uint64_t start = must(slots->create_slot("hot", o)).acked_lsn;  // after the CREATE TABLEs
  f.insert(5);                                            // 5 rows outside the filter
  must(f.db->exec("INSERT INTO t(v) VALUES('hot')"));     // 1 inside
  must(f.db->exec("UPDATE t SET v = 'hot' WHERE id = 1")); // enters: delivered as an INSERT
  must(f.db->exec("UPDATE t SET v = 'y' WHERE id = 2"));   // stays outside: nothing
  auto s = must(slots->get_slot("hot"));
  CHECK(s.lag_entries == 2);
  // The same count for an iterator subscription with that where.
  cdc::subscribe_options so;
  so.from_lsn = start;
  so.filter.tables = {"t"};
  so.where["t"] = "v = 'hot'";
  auto sub = must(cdc::create_cdc(f.db).subscribe(so));
  CHECK(sub->status().lag_entries == 2);
  auto e = sub->next();
  REQUIRE(e.has_value());
  CHECK(sub->status().lag_entries == 1);
  sub->stop();
}

TEST_CASE("heartbeats: a caught-up filtered slot consumer moves past other tables' changes", "[slots][heartbeat]") {
  fixture f;
  auto slots = cdc::create_slot_manager(f.db, manual());
  cdc::create_slot_options o;
  o.filter.tables = {"u"};
  must(slots->create_slot("u_only", o));
  must(f.db->exec("INSERT INTO u VALUES(1)"));
  auto sub = must(slots->subscribe_from_slot("u_only"));
  auto first = sub->next();
  REQUIRE(first.has_value());
  CHECK(first->table == "u");
  f.insert(50);  // only t changes from here on
  const uint64_t tail = f.db->durable_lsn();
  // The consumer asks for the next entry (the first is processed); nothing of u comes, but
  // the reader's heartbeat tells it that everything up to the tail is settled.
  std::thread waiter([&] { (void)sub->next(); });
  for (int i = 0; i < 1000 && sub->settled_lsn() < tail; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(sub->settled_lsn() == tail);
  REQUIRE_FALSE(slots->update_slot("u_only", sub->settled_lsn()));
  auto s = must(slots->get_slot("u_only"));
  CHECK(s.acked_lsn == tail);
  CHECK(s.lag_entries == 0);
  sub->stop();
  waiter.join();
}

TEST_CASE("a slot keeps its whole filter spec: masks and SQL row filters survive reopening and shape its stream",
          "[slots][where]") {
  test::temp_dir d;
  cdc::filter_spec spec;
  spec.tables = {"orders"};
  spec.columns["orders"].exclude = {"secret"};
  spec.where["orders"] = "total > 100";
  {
    runtime rt;
    auto db = must(rt.open(d.path()));
    must(db->exec("CREATE TABLE orders(id INTEGER PRIMARY KEY, total REAL, secret TEXT)"));
    auto slots = cdc::create_slot_manager(db, manual());
    // An invalid expression is refused at create time, naming it; no slot is made.
    cdc::create_slot_options bad;
    bad.filter.where["orders"] = "no_such_column > 1";
    auto e = slots->create_slot("bad", bad).err();
    CHECK(e.code() == ec::invalid_argument);
    CHECK_THAT(e.message(), Catch::Contains("slot 'bad'") && Catch::Contains("no_such_column"));
    CHECK(slots->get_slot("bad").err().code() == ec::slot_not_found);
    cdc::create_slot_options o;
    o.filter = spec;
    must(slots->create_slot("big_orders", o));
  }
  runtime rt;
  auto db = must(rt.open(d.path()));
  auto slots = cdc::create_slot_manager(db, manual());
  auto s = must(slots->get_slot("big_orders"));
  CHECK(s.filter == spec);  // the whole spec, from the file
  must(db->exec("INSERT INTO orders VALUES(1, 50, 'x'); INSERT INTO orders VALUES(2, 500, 'y'); "
                "UPDATE orders SET total = 150 WHERE id = 1; UPDATE orders SET total = 10 WHERE id = 2"));
  cdc::subscribe_options extra;
  extra.stop_at_tail = true;
  auto sub = must(slots->subscribe_from_slot("big_orders", extra));
  std::vector<std::string> seen;
  for (auto& e : *sub) {
    auto r = must(codec::decode_row(e.after ? std::string_view(reinterpret_cast<const char*>(e.after->data()), e.after->size())
                                            : std::string_view(reinterpret_cast<const char*>(e.before->data()), e.before->size())));
    CHECK(r.find("secret") == nullptr);  // masked
    seen.push_back(std::string(to_string(e.op)) + " " + to_string(*r.find("id")));
  }
  REQUIRE_FALSE(sub->err());
  // Row 2 enters (insert), row 1 enters by its update (insert), row 2 leaves by its update (delete).
  CHECK(seen == std::vector<std::string>{"INSERT 2", "INSERT 1", "DELETE 2"});
}
