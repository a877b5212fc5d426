// Real bytes in real segment files: truncated tails, flipped bytes, missing segments.
#include <catch2/catch.hpp>
#include <filesystem>

#include "test_util.hpp"
#include "wal/format.hpp"

using namespace dosql;
namespace fs = std::filesystem;

namespace {

std::string seg(const test::temp_dir& d, uint64_t first) { return d / wal::segment_file_name(first); }


wal::recovery_options accepting_loss() {
  wal::recovery_options r;
  r.accept_loss = true;
  return r;
}

wal::recovery_options known_durable(uint64_t lsn, const std::string& source) {
  wal::recovery_options r;
  r.known_durable = lsn;
  r.known_durable_source = source;
  return r;
}

void copy_dir(const std::string& from, const std::string& to) {
  fs::remove_all(to);
  fs::create_directories(to);
  for (auto& e : fs::directory_iterator(from))
    if (e.path().filename() != "LOCK") fs::copy_file(e.path(), to + "/" + e.path().filename().string());
}

}  // namespace

TEST_CASE("truncating the last record at every byte offset recovers to the previous record",
          "[corruption]") {
  bool prealloc = GENERATE(true, false);
  test::temp_dir d, work;
  wal_config cfg;
  cfg.target_segment_size = 64 * 1024;
  cfg.sync = prealloc ? wal_config::sync_policy::every_batch : wal_config::sync_policy::none;
  {
    // Five durable records, then a sixth written but never synced: only it may be torn (the
    // durable-mark rule; below the mark, damage is corruption: see the tests at the end).
    auto log = test::open_log(d.path(), cfg);
    test::append_n(*log, 0, 5, 1);
    std::vector<wal_entry> last{test::make_entry(5)};
    REQUIRE(log->append(last));
  }
  std::string orig = test::read_file(seg(d, 1));
  auto offs = test::record_offsets(orig);
  REQUIRE(offs.size() == 7);
  size_t last = offs[5], end = offs[6];
  for (size_t cut = last; cut < end; ++cut) {
    copy_dir(d.path(), work.path());
    std::string data = orig;
    if (prealloc)
      std::fill(data.begin() + static_cast<long>(cut), data.begin() + static_cast<long>(end), '\0');
    else
      data.resize(cut);
    test::write_file(seg(work, 1), data);
    auto log = wal::log::open(work.path(), cfg);
    REQUIRE(log);
    INFO("cut at " << cut);
    CHECK((*log)->next_lsn() == 6);
    // Trailing zero bytes of a torn record cannot be told from the zero fill, so the report
    // counts up to the last non-zero byte left behind.
    bool left_nonzero = std::any_of(orig.begin() + static_cast<long>(last),
                                    orig.begin() + static_cast<long>(cut), [](char c) { return c != 0; });
    CHECK((*log)->report().torn_bytes <= cut - last);
    CHECK(((*log)->report().torn_bytes > 0) == left_nonzero);
    if (left_nonzero) CHECK((*log)->report().torn_offset == last);
    // The log goes on from the recovered point and reads back cleanly.
    test::append_n(**log, 100, 3, 3);
    auto got = test::read_from(work.path(), 0);
    REQUIRE(got.size() == 8);
    CHECK(got[5].lsn == 6);
    CHECK(got[5].txn_id == test::make_entry(100).txn_id);
  }
}

TEST_CASE("flipping any single byte of a sealed segment is detected by the reader", "[corruption]") {
  test::temp_dir d, work;
  wal_config cfg;
  cfg.max_entries_per_segment = 4;
  { test::append_n(*test::open_log(d.path(), cfg), 0, 10, 10, 40); }
  std::string orig = test::read_file(seg(d, 1));  // sealed: lsn 1..4
  auto golden = test::read_from(d.path(), 0);     // the HLCs the log assigned
  auto offs = test::record_offsets(orig);
  REQUIRE(offs.back() == orig.size());
  for (size_t i = 0; i < orig.size(); ++i) {
    copy_dir(d.path(), work.path());
    std::string data = orig;
    data[i] ^= 0x20;
    test::write_file(seg(work, 1), data);
    INFO("byte " << i);
    // The writer opens (it does not rescan sealed segments) unless the header is hit.
    auto log = wal::log::open(work.path(), cfg);
    if (i < wal::segment_header_size) {
      REQUIRE_FALSE(log);
      CHECK(log.err().code() == ec::corruption);
      continue;
    }
    REQUIRE(log);
    auto r = std::move(*wal::reader::open(work.path()));
    entry_view v;
    uint64_t good = 0;
    wal::reader::status s;
    while ((s = r->next(v)) == wal::reader::status::entry) {
      REQUIRE(v.lsn == good + 1);
      auto want = test::make_entry(good, 40);
      want.lsn = good + 1;
      want.hlc = golden[good].hlc;
      REQUIRE(v.to_entry() == want);  // never a damaged entry
      ++good;
    }
    REQUIRE(s == wal::reader::status::error);
    CHECK(r->last_error().code() == ec::corruption);
    CHECK(r->last_error().message().find(wal::segment_file_name(1)) != std::string::npos);
    size_t damaged = std::upper_bound(offs.begin(), offs.end(), i) - offs.begin();  // 1-based lsn
    CHECK(good == damaged - 1);
    CHECK(r->last_error().message().find("lsn " + std::to_string(damaged)) != std::string::npos);
  }
}

TEST_CASE("damage in the last segment followed by intact records is corruption, not a torn tail",
          "[corruption]") {
  test::temp_dir d;
  wal_config cfg;
  { test::append_n(*test::open_log(d.path(), cfg), 0, 10, 10); }
  std::string orig = test::read_file(seg(d, 1));
  auto offs = test::record_offsets(orig);
  std::string data = orig;
  data[offs[3] + 30] ^= 1;  // lsn 4's payload
  test::write_file(seg(d, 1), data);
  auto log = wal::log::open(d.path(), cfg);
  REQUIRE_FALSE(log);
  CHECK(log.err().code() == ec::corruption);
  CHECK(log.err().message().find("offset " + std::to_string(offs[3])) != std::string::npos);
  CHECK(log.err().message().find("expected lsn 4") != std::string::npos);
  CHECK(test::read_file(seg(d, 1)) == data);  // nothing was changed
  // The reader reports it too.
  auto r = std::move(*wal::reader::open(d.path()));
  entry_view v;
  int n = 0;
  wal::reader::status s;
  while ((s = r->next(v)) == wal::reader::status::entry) ++n;
  CHECK(n == 3);
  CHECK(s == wal::reader::status::error);
  // Point-in-time recovery, when asked for, truncates there instead -- not below the durable
  // mark (lsn 10 was synced), unless the loss is accepted (what `dosql wal repair` does).
  cfg.recovery = wal_config::recovery_mode::point_in_time;
  auto refused = wal::log::open(d.path(), cfg);
  REQUIRE_FALSE(refused);
  CHECK(refused.err().code() == ec::corruption);
  CHECK(test::read_file(seg(d, 1)) == data);
  auto pit = wal::log::open(d.path(), cfg, accepting_loss());
  REQUIRE(pit);
  CHECK((*pit)->next_lsn() == 4);
  CHECK((*pit)->report().torn_bytes > 0);
}

TEST_CASE("a missing middle segment is an LSN gap, never skipped", "[corruption]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 10;
  { test::append_n(*test::open_log(d.path(), cfg), 0, 40, 10); }
  fs::remove(seg(d, 11));
  auto r = std::move(*wal::reader::open(d.path()));
  entry_view v;
  int n = 0;
  wal::reader::status s;
  while ((s = r->next(v)) == wal::reader::status::entry) ++n;
  CHECK(n == 10);
  REQUIRE(s == wal::reader::status::error);
  CHECK(r->last_error().message().find("lsn gap") != std::string::npos);
  CHECK(r->seek(15).code() == ec::none);  // positions in segment 1 (greatest first <= 15)...
  CHECK(r->next(v) == wal::reader::status::error);  // ...and finds the gap, not lsn 21
}

TEST_CASE("a segment written by a newer format version is refused", "[corruption]") {
  test::temp_dir d;
  { test::append_n(*test::open_log(d.path()), 0, 3, 3); }
  std::string data = test::read_file(seg(d, 1));
  char h[wal::segment_header_size];
  wal::encode_segment_header({wal::format_version + 1, 1, 0}, h);
  std::copy(h, h + sizeof h, data.begin());
  test::write_file(seg(d, 1), data);
  auto log = wal::log::open(d.path());
  REQUIRE_FALSE(log);
  CHECK(log.err().code() == ec::format_version);
  CHECK(test::read_file(seg(d, 1)) == data);
}

namespace {

// Opens `dir` expecting the durable-mark refusal: ec::corruption naming `file` and `offset`,
// and every byte of the directory as it was.
void require_refused(const std::string& dir, const wal_config& cfg, const std::string& file, uint64_t offset) {
  auto before = test::dir_bytes(dir);
  auto log = wal::log::open(dir, cfg);
  REQUIRE_FALSE(log);
  INFO(log.err().to_string());
  CHECK(log.err().code() == ec::corruption);
  CHECK(log.err().message().find(file + " offset " + std::to_string(offset)) != std::string::npos);
  CHECK(log.err().message().find("is durable") != std::string::npos);
  CHECK(test::dir_bytes(dir) == before);  // no zeroing, no unlinking, not even the LOCK pid
  // The plan says the same, reading only.
  auto plan = wal::log::plan_recovery(dir, cfg);
  REQUIRE(plan);
  CHECK(plan->below_floor.code() == ec::corruption);
}

// Accepting the loss (`dosql wal repair`) opens at `next`, the mark follows, and LSNs go on
// from there.
void require_repairs_to(const std::string& dir, const wal_config& cfg, uint64_t next) {
  {
    auto log = wal::log::open(dir, cfg, accepting_loss());
    REQUIRE(log);
    CHECK((*log)->next_lsn() == next);
    test::append_n(**log, 500, 2, 2);
  }
  auto log = wal::log::open(dir, cfg);  // clean now
  REQUIRE(log);
  CHECK((*log)->next_lsn() == next + 2);
  CHECK(**wal::read_synced_mark(dir) == next + 1);
  auto got = test::read_from(dir, 0);
  REQUIRE(got.size() == next + 1);
  CHECK(got[next - 1].txn_id == test::make_entry(500).txn_id);
}

}  // namespace

TEST_CASE("a byte flipped in the last durable record is corruption, not a torn tail", "[corruption][durable]") {
  bool reopened = GENERATE(false, true);  // crashed owner, or after a clean close and reopen
  test::temp_dir d;
  wal_config cfg;
  {
    auto log = test::open_log(d.path(), cfg);
    test::append_n(*log, 0, 10, 1);
  }
  if (reopened) test::open_log(d.path(), cfg).reset();
  std::string data = test::read_file(seg(d, 1));
  auto offs = test::record_offsets(data);
  REQUIRE(offs.size() == 11);
  data[offs[9] + 30] ^= 1;  // inside lsn 10 (durable: synced before append_n returned)
  test::write_file(seg(d, 1), data);
  require_refused(d.path(), cfg, wal::segment_file_name(1), offs[9]);
  require_repairs_to(d.path(), cfg, 10);
}

TEST_CASE("a lost active segment is corruption below the durable mark", "[corruption][durable]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 10;
  { test::append_n(*test::open_log(d.path(), cfg), 0, 25, 5); }
  auto sealed = test::read_file(seg(d, 11));
  fs::remove(seg(d, 21));  // lsn 21..25, durable
  require_refused(d.path(), cfg, wal::segment_file_name(11), sealed.size());
  require_repairs_to(d.path(), cfg, 21);
}

TEST_CASE("a segment truncated below the durable mark is corruption", "[corruption][durable]") {
  bool prealloc = GENERATE(true, false);
  test::temp_dir d;
  wal_config cfg;
  cfg.preallocate = prealloc;
  { test::append_n(*test::open_log(d.path(), cfg), 0, 8, 2); }
  auto offs = test::record_offsets(test::read_file(seg(d, 1)));
  test::truncate_file(seg(d, 1), offs[5] + 7);  // mid lsn 6: lsn 6..8 were durable
  require_refused(d.path(), cfg, wal::segment_file_name(1), offs[5]);
  require_repairs_to(d.path(), cfg, 6);
}

TEST_CASE("SQLite's checkpointed LSN counts as durable even without a mark", "[corruption][durable]") {
  test::temp_dir d;
  wal_config cfg;
  { test::append_n(*test::open_log(d.path(), cfg), 0, 6, 1); }
  fs::remove(d / "DURABLE");  // e.g. lost with a power loss
  auto offs = test::record_offsets(test::read_file(seg(d, 1)));
  test::truncate_file(seg(d, 1), offs[4]);  // lsn 5 and 6 gone
  auto before = test::dir_bytes(d.path());
  auto log = wal::log::open(d.path(), cfg, known_durable(6, "db.sqlite"));
  REQUIRE_FALSE(log);
  CHECK(log.err().code() == ec::corruption);
  CHECK(log.err().message().find("db.sqlite") != std::string::npos);
  CHECK(test::dir_bytes(d.path()) == before);
  // Above every floor, a torn tail is still just dropped.
  auto ok = wal::log::open(d.path(), cfg, known_durable(4, "test"));
  REQUIRE(ok);
  CHECK((*ok)->next_lsn() == 5);
}
