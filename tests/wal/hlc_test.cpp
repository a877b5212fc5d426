// The hybrid logical clock (wal/hlc.hpp) and the WAL's HLC stamps (format version 2): never
// decreasing per node, distinct within a millisecond, monotonic when the clock steps back
// (also across a reopen), and format version 1 segments still read.
#include <catch2/catch.hpp>

#include "test_util.hpp"
#include "wal/crc32c.hpp"
#include "wal/endian.hpp"
#include "wal/format.hpp"
#include "wal/hlc.hpp"
#include "wal/reader.hpp"

#include <algorithm>
#include <atomic>
#include <thread>

using namespace dosql;

namespace {

// The fake wall clock (a plain function pointer is what the clock seam takes).
std::atomic<int64_t> fake_ms{1'000'000};
int64_t fake_clock() noexcept { return fake_ms.load(); }

uint64_t packed(const hlc_stamp& h) { return wal::pack_hlc(h.physical, h.logical); }

std::vector<entry_view> read_all(const std::string& dir, std::vector<wal_entry>& keep) {
  keep = test::read_from(dir, 0);
  std::vector<entry_view> out;
  for (auto& e : keep) out.push_back(view_of(e));
  return out;
}

void require_increasing(const std::vector<wal_entry>& es) {
  for (size_t i = 1; i < es.size(); ++i) {
    INFO("lsn " << es[i].lsn << ": " << to_string(es[i - 1].hlc) << " then " << to_string(es[i].hlc));
    REQUIRE(es[i - 1].hlc < es[i].hlc);
  }
}

// A format version 1 writer, written from wal/FORMAT.md as it stood at format version 1
// (commit 67b72ff): 40-byte header, 20-byte entry header without HLC.
std::string v1_entry(const wal_entry& e) {
  std::string p(20, '\0');
  uint8_t flags = (e.key ? 1 : 0) | (e.before ? 2 : 0) | (e.after ? 4 : 0);
  p[0] = 1;
  p[1] = static_cast<char>(e.op);
  p[2] = static_cast<char>(flags);
  p[3] = 0;
  wal::put_u64(p.data() + 4, static_cast<uint64_t>(e.timestamp));
  wal::put_u32(p.data() + 12, static_cast<uint32_t>(e.txn_id.size()));
  wal::put_u32(p.data() + 16, static_cast<uint32_t>(e.table.size()));
  const std::optional<bytes>* f[3] = {&e.key, &e.before, &e.after};
  for (auto* b : f)
    if (*b) {
      char l[4];
      wal::put_u32(l, static_cast<uint32_t>((*b)->size()));
      p.append(l, 4);
    }
  p += e.txn_id;
  p += e.table;
  for (auto* b : f)
    if (*b) p.append((*b)->begin(), (*b)->end());
  return p;
}

std::string v1_segment(uint64_t first_lsn, const std::vector<wal_entry>& es) {
  char h[wal::segment_header_size];
  wal::encode_segment_header({1, first_lsn, 1'000}, h);
  std::string s(h, wal::segment_header_v1_size);
  uint64_t lsn = first_lsn;
  for (auto& e : es) {
    std::string payload = v1_entry(e);
    char rh[16];
    wal::put_u32(rh + 4, static_cast<uint32_t>(payload.size()));
    wal::put_u64(rh + 8, lsn++);
    std::string framed = std::string(rh + 4, 12) + payload;
    wal::put_u32(rh, wal::crc32c::mask(wal::crc32c::value(framed.data(), framed.size())));
    s.append(rh, 4);
    s += framed;
  }
  return s;
}

}  // namespace

TEST_CASE("hlc: never decreasing per node, distinct across threads", "[hlc]") {
  wal::hlc clock(7);  // the real clock
  constexpr int threads = 4, per_thread = 50'000;
  std::vector<std::vector<uint64_t>> seen(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      seen[t].reserve(per_thread);
      for (int i = 0; i < per_thread; ++i) {
        auto s = i % 10 == 0 ? clock.update({0, 0, 9}) : clock.now();
        seen[t].push_back(packed(s));
      }
    });
  for (auto& t : ts) t.join();
  std::vector<uint64_t> all;
  for (auto& v : seen) {
    REQUIRE(std::is_sorted(v.begin(), v.end()));
    REQUIRE(std::adjacent_find(v.begin(), v.end()) == v.end());  // strictly increasing
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());  // no stamp handed out twice
  CHECK(clock.last() == all.back());
  // Physical time is the wall clock's (within this test's run), not a counter from 0.
  CHECK(wal::unpack_hlc(all.back(), 7).physical >= now_ms() - 60'000);
}

TEST_CASE("hlc: distinct within one millisecond, and a clock step back keeps it monotonic", "[hlc]") {
  fake_ms = 5'000;
  wal::hlc clock(3, &fake_clock);
  hlc_stamp prev = clock.now();
  CHECK(prev == hlc_stamp{5'000, 0, 3});
  for (uint32_t i = 1; i < 1'000; ++i) {  // frozen clock: the logical counter tells them apart
    auto s = clock.now();
    REQUIRE(s == hlc_stamp{5'000, i, 3});
    prev = s;
  }
  fake_ms = 4'000;  // the clock steps back by a second
  for (int i = 0; i < 100; ++i) {
    auto s = clock.now();
    REQUIRE(prev < s);
    REQUIRE(s.physical == 5'000);
    prev = s;
  }
  fake_ms = 5'001;  // the wall clock passes the stamps again: the counter restarts
  CHECK(clock.now() == hlc_stamp{5'001, 0, 3});
  SECTION("65,536 stamps in one millisecond carry into the physical part") {
    for (int i = 1; i < 65'536; ++i) (void)clock.now();
    CHECK(clock.now() == hlc_stamp{5'002, 0, 3});
    fake_ms = 5'002;
    CHECK(clock.now() == hlc_stamp{5'002, 1, 3});
  }
  SECTION("update() moves past a remote stamp (Kulkarni's receive rule)") {
    auto s = clock.update({9'000, 17, 8});
    CHECK(s == hlc_stamp{9'000, 18, 3});
    CHECK(clock.now() == hlc_stamp{9'000, 19, 3});
    fake_ms = 9'500;
    CHECK(clock.update({9'000, 40, 8}) == hlc_stamp{9'500, 0, 3});
  }
  SECTION("the string form sorts like the stamps") {
    hlc_stamp a{999, 65'535, 4'000'000'000u}, b{1'000, 0, 1}, c{1'000, 0, 2}, d{1'000, 10, 0};
    CHECK(to_string(a) == "000000000000999.65535.4000000000");
    CHECK(to_string(a) < to_string(b));
    CHECK(to_string(b) < to_string(c));
    CHECK(to_string(c) < to_string(d));
    CHECK((a < b && b < c && c < d));
  }
}

TEST_CASE("WAL entries carry increasing HLCs with the database's node id, across a reopen with the clock stepped back",
          "[hlc][log]") {
  test::temp_dir d;
  fake_ms = 2'000'000;
  uint32_t node = 0;
  {
    auto log = std::move(*wal::log::open(d.path(), {}, {}, &fake_clock));
    node = log->node_id();
    CHECK(node != 0);
    std::vector<wal_entry> batch;
    for (uint64_t i = 0; i < 500; ++i) batch.push_back(test::make_entry(i));
    REQUIRE(log->append_batch(batch));
    CHECK(batch[0].hlc == hlc_stamp{2'000'000, 0, node});  // set on the caller's entries too
    CHECK(batch[499].hlc == hlc_stamp{2'000'000, 499, node});
  }
  fake_ms = 1'000'000;  // stepped back by 1,000 s while the database was closed
  {
    auto log = std::move(*wal::log::open(d.path(), {}, {}, &fake_clock));
    CHECK(log->node_id() == node);  // stable: kept in the segment header
    std::vector<wal_entry> batch{test::make_entry(500), test::make_entry(501)};
    REQUIRE(log->append_batch(batch));
    CHECK(batch[0].hlc == hlc_stamp{2'000'000, 500, node});
  }
  std::vector<wal_entry> got;
  read_all(d.path(), got);
  REQUIRE(got.size() == 502);
  require_increasing(got);
  for (auto& e : got) REQUIRE(e.hlc.node == node);
}

TEST_CASE("after a reopen the HLC starts above an empty active segment's floor", "[hlc][log]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 10;
  fake_ms = 3'000'000;
  hlc_stamp last_kept;
  {
    auto log = std::move(*wal::log::open(d.path(), cfg, {}, &fake_clock));
    std::vector<wal_entry> batch;
    for (uint64_t i = 0; i < 11; ++i) batch.push_back(test::make_entry(i));  // entry 11 opens a segment
    REQUIRE(log->append_batch(batch));
    last_kept = batch[9].hlc;
  }
  // A torn tail takes the new segment's only entry: the segment is empty, its header remains
  // (the entry was synced, so only an operator's repair drops it, as `dosql wal repair` does).
  auto seg = d / wal::segment_file_name(11);
  test::truncate_file(seg, wal::segment_header_size + 5);
  fake_ms = 1'000;
  {
    wal::recovery_options ro;
    ro.accept_loss = true;
    auto opened = wal::log::open(d.path(), cfg, ro, &fake_clock);
    if (!opened) FAIL(opened.err().to_string());
    auto log = std::move(*opened);
    CHECK(log->report().torn_bytes == 5);
    CHECK(log->next_lsn() == 11);
    std::vector<wal_entry> batch{test::make_entry(10)};
    REQUIRE(log->append_batch(batch));
    CHECK(last_kept < batch[0].hlc);
  }
  std::vector<wal_entry> got;
  read_all(d.path(), got);
  REQUIRE(got.size() == 11);
  require_increasing(got);
}

TEST_CASE("a format version 1 WAL still reads, and appends go to a new version 2 segment", "[hlc][log][format]") {
  test::temp_dir d;
  std::vector<wal_entry> old;
  for (uint64_t i = 0; i < 20; ++i) old.push_back(test::make_entry(i));
  test::write_file(d / wal::segment_file_name(1), v1_segment(1, {old.begin(), old.begin() + 12}));
  test::write_file(d / wal::segment_file_name(13), v1_segment(13, {old.begin() + 12, old.end()}));
  SECTION("a reader reads it: HLC = {timestamp, 0, node 0}") {
    std::vector<wal_entry> got;
    read_all(d.path(), got);
    REQUIRE(got.size() == 20);
    for (uint64_t i = 0; i < 20; ++i) {
      auto want = old[i];
      want.lsn = i + 1;
      want.hlc = {want.timestamp, 0, 0};
      REQUIRE(got[i] == want);
    }
  }
  SECTION("the writer seals the version 1 segment and appends in a version 2 one") {
    fake_ms = 5;  // far behind the old entries' timestamps
    uint32_t node = 0;
    {
      auto log = std::move(*wal::log::open(d.path(), {}, {}, &fake_clock));
      CHECK(log->next_lsn() == 21);
      node = log->node_id();
      CHECK(node != 0);
      std::vector<wal_entry> batch{test::make_entry(20), test::make_entry(21)};
      REQUIRE(log->append_batch(batch));
      CHECK(batch[0].hlc == hlc_stamp{old.back().timestamp, 1, node});
    }
    auto names = test::list_files(d.path());
    CHECK(std::count(names.begin(), names.end(), wal::segment_file_name(21)) == 1);
    wal::segment_header h13, h21;
    REQUIRE_FALSE(wal::decode_segment_header(test::read_file(d / wal::segment_file_name(13)), "13", h13));
    REQUIRE_FALSE(wal::decode_segment_header(test::read_file(d / wal::segment_file_name(21)), "21", h21));
    CHECK(h13.format_version == 1);
    CHECK(h21.format_version == 2);
    CHECK(h21.node_id == node);
    CHECK(h21.header_size == wal::segment_header_size);
    std::vector<wal_entry> got;
    read_all(d.path(), got);
    REQUIRE(got.size() == 22);
    require_increasing(got);
    CHECK(got[20].hlc.node == node);
  }
  SECTION("an empty version 1 active segment is replaced by a version 2 one under its name") {
    test::write_file(d / wal::segment_file_name(21), v1_segment(21, {}));
    {
      auto log = std::move(*wal::log::open(d.path(), {}, {}, &fake_clock));
      CHECK(log->next_lsn() == 21);
      std::vector<wal_entry> batch{test::make_entry(20)};
      REQUIRE(log->append_batch(batch));
    }
    wal::segment_header h;
    REQUIRE_FALSE(wal::decode_segment_header(test::read_file(d / wal::segment_file_name(21)), "21", h));
    CHECK(h.format_version == 2);
    std::vector<wal_entry> got;
    read_all(d.path(), got);
    REQUIRE(got.size() == 21);
  }
}

TEST_CASE("version 2 segment header: both checksums are checked, and an older header size is refused", "[hlc][format]") {
  char h[wal::segment_header_size];
  wal::encode_segment_header({wal::format_version, 42, 7, 0x1234'5678'9abc'0001ull, 99}, h);
  wal::segment_header out;
  REQUIRE_FALSE(wal::decode_segment_header({h, sizeof h}, "x", out));
  CHECK(out.node_id == 99);
  CHECK(out.hlc_floor == 0x1234'5678'9abc'0001ull);
  CHECK(out.header_size == 52);
  for (size_t i : {size_t{32}, size_t{40}, size_t{47}, size_t{50}}) {
    char bad[sizeof h];
    std::copy(h, h + sizeof h, bad);
    bad[i] ^= 1;
    INFO("byte " << i);
    CHECK(wal::decode_segment_header({bad, sizeof bad}, "x", out).code() == ec::corruption);
  }
  CHECK(wal::decode_segment_header({h, 40}, "x", out).code() == ec::corruption);  // cut short
}
