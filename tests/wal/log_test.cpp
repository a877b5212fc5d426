#include <catch2/catch.hpp>

#include "fault_fs.hpp"
#include "test_util.hpp"
#include "wal/durable_mark.hpp"
#include "wal/format.hpp"

#include <unistd.h>

using namespace dosql;
using test::make_entry;

namespace {
size_t count_segments(const std::string& dir) {
  size_t n = 0;
  for (auto& f : test::list_files(dir)) n += wal::parse_segment_file_name(f).has_value();
  return n;
}
}  // namespace

TEST_CASE("appended entries read back with every field, LSNs from 1", "[log]") {
  test::temp_dir d;
  auto log = test::open_log(d.path());
  CHECK(log->report().created);
  CHECK(log->next_lsn() == 1);
  test::append_n(*log, 0, 250, 64);
  CHECK(log->last_lsn() == 250);
  CHECK(log->durable_lsn() == 250);
  auto got = test::read_from(d.path(), 0);
  REQUIRE(got.size() == 250);
  for (uint64_t i = 0; i < 250; ++i) {
    auto want = make_entry(i);
    want.lsn = i + 1;
    want.hlc = got[i].hlc;  // assigned by the log (tests/wal/hlc_test.cpp checks them)
    REQUIRE(got[i] == want);
    REQUIRE(got[i].hlc.node == log->node_id());
    if (i > 0) REQUIRE(got[i - 1].hlc < got[i].hlc);
  }
}

TEST_CASE("segments roll by entry count and by size", "[log]") {
  test::temp_dir d;
  SECTION("by count") {
    wal_config cfg;
    cfg.max_entries_per_segment = 100;
    auto log = test::open_log(d.path(), cfg);
    test::append_n(*log, 0, 1000, 37);
    auto segs = log->segments();
    REQUIRE(segs.size() == 10);
    for (size_t i = 0; i < segs.size(); ++i) {
      CHECK(segs[i].first_lsn == 1 + 100 * i);
      CHECK(segs[i].last_lsn == 100 * (i + 1));
    }
    CHECK(count_segments(d.path()) == 10);
  }
  SECTION("by size") {
    wal_config cfg;
    cfg.target_segment_size = 16 * 1024;
    auto log = test::open_log(d.path(), cfg);
    test::append_n(*log, 0, 1000, 50);
    auto segs = log->segments();
    REQUIRE(segs.size() > 10);
    for (auto& s : segs) {
      if (!s.active) CHECK(s.bytes >= cfg.target_segment_size);
      CHECK(s.bytes < cfg.target_segment_size + 1024);  // one record over at most
      // sealed segments are cut to their exact size
      if (!s.active) CHECK(test::file_size(d / wal::segment_file_name(s.first_lsn)) == s.bytes);
    }
  }
  CHECK(test::read_from(d.path(), 0).size() == 1000);
}

TEST_CASE("reopen continues the LSN sequence", "[log]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 64;
  for (int round = 0; round < 5; ++round) {
    auto log = test::open_log(d.path(), cfg);
    CHECK_FALSE(log->report().created == (round > 0));
    CHECK(log->next_lsn() == 1 + 100u * round);
    CHECK(log->report().torn_bytes == 0);
    test::append_n(*log, 100u * round, 100, 30);
  }
  auto got = test::read_from(d.path(), 0);
  REQUIRE(got.size() == 500);
  for (uint64_t i = 0; i < got.size(); ++i) CHECK(got[i].lsn == i + 1);
}

TEST_CASE("unsynced policy also reopens at the right LSN", "[log]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.sync = wal_config::sync_policy::none;
  cfg.max_entries_per_segment = 50;
  {
    auto log = test::open_log(d.path(), cfg);
    test::append_n(*log, 0, 120, 7);
    CHECK(log->durable_lsn() == 100);  // rolling syncs the sealed segments
  }
  auto log = test::open_log(d.path(), cfg);
  CHECK(log->next_lsn() == 121);
}

TEST_CASE("the reader positions at any LSN and reports the tail", "[reader]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 100;
  auto log = test::open_log(d.path(), cfg);
  test::append_n(*log, 0, 1000, 100);
  auto r = std::move(*wal::reader::open(d.path()));
  entry_view v;
  for (uint64_t lsn : {1u, 2u, 99u, 100u, 101u, 555u, 1000u}) {
    REQUIRE_FALSE(r->seek(lsn));
    REQUIRE(r->next(v) == wal::reader::status::entry);
    CHECK(v.lsn == lsn);
    CHECK(v.to_entry().txn_id == make_entry(lsn - 1).txn_id);
  }
  REQUIRE_FALSE(r->seek(1001));
  CHECK(r->next(v) == wal::reader::status::tail);
  CHECK(r->next(v) == wal::reader::status::tail);
  // The live tail: the writer appends, the parked reader sees it, across a segment roll.
  test::append_n(*log, 1000, 150, 10);
  for (uint64_t lsn = 1001; lsn <= 1150; ++lsn) {
    REQUIRE(r->next(v) == wal::reader::status::entry);
    REQUIRE(v.lsn == lsn);
  }
  CHECK(r->next(v) == wal::reader::status::tail);
  // A limit (the durable tail) holds the reader back.
  REQUIRE_FALSE(r->seek(1100));
  r->set_limit(1120);
  uint64_t n = 0;
  while (r->next(v) == wal::reader::status::entry) ++n;
  CHECK(n == 21);
  CHECK(r->next_lsn() == 1121);
}

TEST_CASE("a reader sees entries written but not yet synced, and waits at zero fill", "[reader]") {
  test::temp_dir d;
  auto log = test::open_log(d.path());
  auto r = std::move(*wal::reader::open(d.path()));
  entry_view v;
  CHECK(r->next(v) == wal::reader::status::tail);
  std::vector<wal_entry> b{make_entry(0), make_entry(1)};
  REQUIRE(log->append(b));
  CHECK(log->durable_lsn() == 0);
  REQUIRE(r->next(v) == wal::reader::status::entry);
  CHECK(v.lsn == 1);
  REQUIRE(r->next(v) == wal::reader::status::entry);
  CHECK(r->next(v) == wal::reader::status::tail);
  REQUIRE_FALSE(log->sync());
  CHECK(log->durable_lsn() == 2);
}

TEST_CASE("compaction removes whole sealed segments, and below them is LSN_NOT_FOUND", "[log][compact]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 100;
  bool archive = GENERATE(false, true);
  cfg.auto_archive = archive;
  auto log = test::open_log(d.path(), cfg);
  test::append_n(*log, 0, 1000, 100);
  auto rep = log->compact(351);  // segments [1,100], [101,200], [201,300] go; [301,400] holds 350
  REQUIRE(rep);
  CHECK(rep->removed == std::vector<uint64_t>{1, 101, 201});
  CHECK(rep->oldest_lsn == 301);
  CHECK(log->oldest_lsn() == 301);
  CHECK(rep->archived == archive);
  if (archive) CHECK(test::list_files(d / "archive").size() == 3);
  auto r = std::move(*wal::reader::open(d.path()));
  auto err = r->seek(300);
  CHECK(err.code() == ec::lsn_not_found);
  CHECK(err.oldest_lsn == 301);
  CHECK(err.message().find("301") != std::string::npos);
  REQUIRE_FALSE(r->seek(301));
  CHECK(test::read_from(d.path(), 301).size() == 700);
  // Compacting everything keeps the active segment (rolling is lazy: [901, 1000] is still
  // active), so the LSN sequence survives.
  REQUIRE(log->compact(UINT64_MAX));
  CHECK(log->segments().size() == 1);
  log.reset();
  log = test::open_log(d.path(), cfg);
  CHECK(log->next_lsn() == 1001);
  CHECK(log->oldest_lsn() == 901);
  test::append_n(*log, 1000, 1, 1);  // rolls; the old active segment is now sealed
  REQUIRE(log->compact(UINT64_MAX));
  CHECK(log->oldest_lsn() == 1001);
  CHECK(test::read_from(d.path(), 1001).size() == 1);
}

TEST_CASE("a second writer on the same directory is refused with the owner's pid", "[log]") {
  test::temp_dir d;
  auto log = test::open_log(d.path());
  auto second = wal::log::open(d.path());
  REQUIRE_FALSE(second);
  CHECK(second.err().code() == ec::busy);
  CHECK(second.err().message().find(std::to_string(::getpid())) != std::string::npos);
}

TEST_CASE("bad configuration is refused", "[log]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 0;
  auto l = wal::log::open(d.path(), cfg);
  REQUIRE_FALSE(l);
  CHECK(l.err().code() == ec::invalid_argument);
}

TEST_CASE("large entries that exceed the reader's buffer read back", "[reader]") {
  test::temp_dir d;
  auto log = test::open_log(d.path());
  std::vector<wal_entry> b{make_entry(1, 3 << 20), make_entry(2, 10), make_entry(8, 5 << 20)};
  REQUIRE(log->append_batch(b));
  auto got = test::read_from(d.path(), 0);
  REQUIRE(got.size() == 3);
  CHECK(got[0].after->size() == (3u << 20));
  CHECK(got[2].after->size() == (5u << 20));
  log.reset();
  CHECK(test::open_log(d.path())->next_lsn() == 4);
}

TEST_CASE("pipelined syncs: durable_lsn catches up, across segment rolls", "[log]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 64;
  auto log = test::open_log(d.path(), cfg);
  for (uint64_t i = 0; i < 2000; i += 50) {
    std::vector<wal_entry> b;
    for (uint64_t k = 0; k < 50; ++k) b.push_back(make_entry(i + k));
    REQUIRE(log->append(b));
    log->sync_async();
    CHECK(log->durable_lsn() <= log->last_lsn());
  }
  REQUIRE_FALSE(log->sync());
  CHECK(log->durable_lsn() == 2000);
  CHECK(log->syncs() >= 1);
  CHECK(log->segments().size() > 20);
  log.reset();
  auto got = test::read_from(d.path(), 0);
  REQUIRE(got.size() == 2000);
  for (uint64_t i = 0; i < got.size(); ++i) REQUIRE(got[i].lsn == i + 1);
}

TEST_CASE("the owner publishes its durable LSN in wal/DURABLE for readers in other processes", "[log][durable]") {
  test::temp_dir d;
  auto mark = [&] {
    auto m = wal::read_durable_mark(d.path());
    REQUIRE(m);
    REQUIRE(m->has_value());
    return **m;
  };
  CHECK_FALSE(wal::read_durable_mark(d.path())->has_value());  // no owner ever: no file
  {
    auto log = test::open_log(d.path());
    CHECK(mark() == 0);
    std::vector<wal_entry> es;
    for (uint64_t i = 0; i < 10; ++i) es.push_back(make_entry(i));
    REQUIRE(log->append(es));
    CHECK(mark() == 0);  // written, readable, not durable
    REQUIRE_FALSE(log->sync());
    CHECK(mark() == 10);
    std::vector<wal_entry> more;
    for (uint64_t i = 10; i < 15; ++i) more.push_back(make_entry(i));
    REQUIRE(log->append(more));
    log->sync_async();
    REQUIRE_FALSE(log->sync());  // waits for the pipelined sync
    CHECK(mark() == 15);
    REQUIRE(log->append(es));  // 16..25, never synced by this owner
    CHECK(mark() == 15);
  }
  // A new owner publishes what its recovery made durable.
  {
    auto log = test::open_log(d.path());
    CHECK(mark() == 25);
  }
  // Under sync_policy::none, what is written is all it gets.
  test::temp_dir n;
  wal_config cfg;
  cfg.sync = wal_config::sync_policy::none;
  auto log = test::open_log(n.path(), cfg);
  std::vector<wal_entry> es;
  for (uint64_t i = 0; i < 3; ++i) es.push_back(make_entry(i));
  REQUIRE(log->append(es));
  CHECK(**wal::read_durable_mark(n.path()) == 3);
}

TEST_CASE("retention_point: sealed segments past the age or beyond the newest bytes; never the active one", "[log][retention]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 100;
  auto log = test::open_log(d.path(), cfg);
  test::append_n(*log, 0, 1000, 37);  // 10 segments: 9 sealed, lsn 901.. active
  auto segs = log->segments();
  REQUIRE(segs.size() == 10);
  using namespace std::chrono;
  auto now = system_clock::now();
  wal_config::retention_policy p;  // the default: automatic, 7 days, no size limit
  CHECK(p.automatic);
  CHECK(p.max_age_ms == 7ull * 24 * 3600 * 1000);
  CHECK(p.max_bytes == 0);
  CHECK(*wal::retention_point(d.path(), p, now) == 0);                  // all sealed just now
  CHECK(*wal::retention_point(d.path(), p, now + hours(24 * 8)) == 901);  // all old: up to the active one
  p.max_age_ms = 0;
  CHECK(*wal::retention_point(d.path(), p, now + hours(24 * 8)) == 0);  // no limit at all
  p.max_bytes = segs[8].bytes + segs[7].bytes;  // the two newest sealed segments fit exactly
  CHECK(*wal::retention_point(d.path(), p, now) == 701);
  p.max_bytes = segs[8].bytes + segs[7].bytes - 1;
  CHECK(*wal::retention_point(d.path(), p, now) == 801);
  p.max_bytes = 1;  // none fits
  CHECK(*wal::retention_point(d.path(), p, now) == 901);
  // Both limits: a segment goes when either says so (Kafka's retention.ms / retention.bytes).
  p.max_bytes = segs[8].bytes + segs[7].bytes;
  p.max_age_ms = 1000;
  CHECK(*wal::retention_point(d.path(), p, now) == 701);
  CHECK(*wal::retention_point(d.path(), p, now + seconds(2)) == 901);
  p.automatic = false;  // the opt-out: nothing, whatever the limits
  CHECK(*wal::retention_point(d.path(), p, now + seconds(2)) == 0);
  // The active segment alone is never removable.
  test::temp_dir e;
  auto one = test::open_log(e.path(), cfg);
  test::append_n(*one, 0, 10, 10);
  CHECK(*wal::retention_point(e.path(), wal_config::retention_policy{true, 1, 1}, now + hours(1)) == 0);
}

// The log's own failure rules, with faults injected through wal::file_io ([faults]; the
// database-level suite is tests/runtime/fault_test.cpp).
TEST_CASE("faults: after a failed write or fdatasync the log takes back what was not durable, never syncs "
          "again, and refuses everything saying why", "[log][faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  using op = test::fault_fs::op;
  struct c {
    op kind;
    int err;
    bool short_write;
  };
  auto f = GENERATE(c{op::sync, EIO, false}, c{op::write, ENOSPC, false}, c{op::write, 0, true});
  auto pipelined = GENERATE(false, true);
  auto prealloc = GENERATE(true, false);
  INFO("fault " << test::fault_fs::name(f.kind) << (f.short_write ? " (short)" : "") << ", pipelined " << pipelined
                << ", preallocate " << prealloc);
  test::temp_dir d;
  wal_config cfg;
  cfg.preallocate = prealloc;
  uint64_t durable = 0;
  {
    auto log = test::open_log(d.path(), cfg);
    test::append_n(*log, 0, 30, 10);
    durable = log->durable_lsn();
    REQUIRE(durable == 30);
    fs.arm(f.kind, 1, f.err, f.short_write);
    std::vector<wal_entry> b;
    for (uint64_t k = 0; k < 10; ++k) b.push_back(make_entry(30 + k));
    error first;
    if (pipelined) {
      auto r = log->append(b);
      if (!r) first = r.err();
      log->sync_async();
      if (auto e = log->sync()) first = first ? first : e;
    } else {
      auto r = log->append_batch(b);
      if (!r) first = r.err();
    }
    REQUIRE(fs.hit());
    fs.disarm();
    REQUIRE(first);
    CHECK(log->durable_lsn() == durable);
    uint64_t syncs = fs.calls(op::sync);
    // Refused for good, with the reason; no fdatasync is tried again.
    for (int i = 0; i < 3; ++i) {
      auto r = log->append_batch(b);
      REQUIRE_FALSE(r);
      CHECK_THAT(r.err().message(), Catch::Contains("stopped accepting writes"));
      CHECK_THAT(r.err().message(), Catch::Contains(f.kind == op::sync ? "fdatasync" : "write"));
      CHECK(log->sync());
    }
    CHECK(fs.calls(op::sync) == syncs);
  }
  // Reopened: exactly the durable entries, and the next LSN follows them.
  auto log = test::open_log(d.path(), cfg);
  CHECK(log->last_lsn() == durable);
  auto got = test::read_from(d.path(), 0);
  REQUIRE(got.size() == durable);
  for (uint64_t i = 0; i < got.size(); ++i) CHECK(got[i].lsn == i + 1);
}

TEST_CASE("faults: a background fdatasync that failed unasked still takes back what it did not make durable",
          "[log][faults]") {
  test::fault_fs fs;
  test::fault_fs::scope installed(fs);
  test::temp_dir d;
  {
    auto log = test::open_log(d.path());
    test::append_n(*log, 0, 20, 10);
    fs.arm(test::fault_fs::op::sync, 1, EIO);
    std::vector<wal_entry> b;
    for (uint64_t k = 0; k < 10; ++k) b.push_back(make_entry(20 + k));
    REQUIRE(log->append(b));
    log->sync_async();
    for (int i = 0; i < 10000 && !fs.hit(); ++i) ::usleep(1000);  // bounded: 10 s
    REQUIRE(fs.hit());
    fs.disarm();
    CHECK(log->durable_lsn() == 20);
  }  // closed without another call: the destructor takes back
  auto log = test::open_log(d.path());
  CHECK(log->last_lsn() == 20);
}
