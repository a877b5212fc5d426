// Real bytes in real segment files: truncated tails, flipped bytes, missing segments.
#include <catch2/catch.hpp>
#include <filesystem>

#include "test_util.hpp"
#include "wal/format.hpp"

using namespace dosql;
namespace fs = std::filesystem;

namespace {

std::string seg(const test::temp_dir& d, uint64_t first) { return d / wal::segment_file_name(first); }

// Offsets of every record in a segment file (header excluded).
std::vector<size_t> record_offsets(const std::string& data) {
  std::vector<size_t> offs;
  size_t off = wal::segment_header_size;
  while (off < data.size()) {
    auto r = wal::parse_record(data.data() + off, data.size() - off, true);
    if (r.status != wal::parse_status::ok) break;
    offs.push_back(off);
    off += r.size;
  }
  offs.push_back(off);  // end
  return offs;
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
  { test::append_n(*test::open_log(d.path(), cfg), 0, 6, 1); }
  std::string orig = test::read_file(seg(d, 1));
  auto offs = record_offsets(orig);
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
  auto offs = record_offsets(orig);
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
  auto offs = record_offsets(orig);
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
  // Point-in-time recovery, when asked for, truncates there instead.
  cfg.recovery = wal_config::recovery_mode::point_in_time;
  auto pit = wal::log::open(d.path(), cfg);
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
