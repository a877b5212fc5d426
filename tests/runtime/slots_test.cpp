// Replication slots: the API and its errors, durability (kill -9 right after an ack),
// resuming with the slot's filter, compaction bounded by the slowest slot, the retention
// guard, idle detection, lag, and snapshot-then-stream with no gap and no duplicate.
#include <catch2/catch.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <random>
#include <thread>

#include "runtime/reliability.hpp"
#include "runtime/slots.hpp"
#include "runtime/sqlite_util.hpp"
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
  CHECK(lag.lag_entries == 9);
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
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  pollfd pfd{p[0], POLLIN, 0};
  while (std::chrono::steady_clock::now() < until && ::poll(&pfd, 1, 100) > 0 && ::read(p[0], &v, sizeof v) == sizeof v)
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

TEST_CASE("compaction keeps exactly what the slowest slot needs, and the retention guard invalidates", "[slots]") {
  database_options o;
  o.wal.max_entries_per_segment = 30;
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

TEST_CASE("without slots, WAL retention by bytes and by age (archived with auto_archive)", "[slots]") {
  database_options o;
  o.wal.max_entries_per_segment = 30;
  o.wal.auto_archive = true;
  fixture f(o);
  f.insert(100);  // ~10 segments
  auto r = std::move(*wal::reader::open(f.db->wal_dir()));
  auto before = r->segment_firsts()->size();
  auto cfg = manual();
  cfg.retain_bytes = 3 * 30 * 150;  // about three segments' worth
  auto slots = cdc::create_slot_manager(f.db, cfg);
  REQUIRE_FALSE(slots->check());
  auto after = r->segment_firsts()->size();
  CHECK(after < before);
  CHECK(after >= 2);
  CHECK(test::list_files(f.d / "wal/archive").size() == before - after);
  cfg.retain_bytes = 0;
  cfg.retain_age = std::chrono::milliseconds(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // mtime has 1 s resolution here
  auto aged = cdc::create_slot_manager(f.db, cfg);
  REQUIRE_FALSE(aged->check());
  CHECK(r->segment_firsts()->size() == 1);  // only the active segment is left
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
