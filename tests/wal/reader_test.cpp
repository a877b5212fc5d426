// The reader beside a live writer: bytes it read before the writer finished a record must
// never be handed out as that record (issue 20: the in-process subscription's delivering
// cursor, which skips checksums, returned zero-filled images, cut txn ids and lost entries).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "test_util.hpp"
#include "wal/format.hpp"

using namespace dosql;
using test::make_entry;

namespace {
// Offset just past the last record of the (only) segment in `dir`.
uint64_t end_of_records(const std::string& dir, const std::string& seg) {
  auto bytes = test::read_file(dir + "/" + seg);
  size_t off = wal::segment_header_size;
  for (;;) {
    auto r = wal::parse_record(bytes.data() + off, bytes.size() - off, true);
    if (r.status != wal::parse_status::ok) return off;
    off += r.size;
  }
}

void pwrite_at(const std::string& path, const std::string& data, uint64_t off) {
  int fd = ::open(path.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)) == static_cast<ssize_t>(data.size()));
  ::close(fd);
}
}  // namespace

TEST_CASE("a record the reader saw half-written is read again once the limit covers it", "[reader]") {
  // Record 11 is being written while the reader, held at limit 10, fills its buffer: the
  // buffer holds record 11 with its last bytes still zero (the preallocated fill). Then the
  // writer finishes, and the limit moves to 11. What the reader returns must be record 11 as
  // the WAL now holds it, with or without checksum verification.
  auto verify = GENERATE(false, true);
  CAPTURE(verify);
  test::temp_dir d;
  auto log = test::open_log(d.path());
  test::append_n(*log, 0, 10, 10);
  auto segs = test::list_files(d.path());
  std::string seg;
  for (auto& f : segs)
    if (wal::parse_segment_file_name(f)) seg = f;
  REQUIRE(!seg.empty());
  const uint64_t off = end_of_records(d.path(), seg);

  auto want = make_entry(10, 300);
  want.op = op_type::update;
  want.before = bytes(300, 7);
  want.after = bytes(300, 9);
  std::string rec;
  wal::append_record(rec, 11, want);
  // The first write of record 11: all but its last 64 bytes (the after image's tail).
  pwrite_at(d.path() + "/" + seg, rec.substr(0, rec.size() - 64), off);

  auto r = std::move(*wal::reader::open(d.path(), wal::reader_options{.verify_checksums = verify}));
  r->set_limit(10);
  entry_view v;
  for (uint64_t lsn = 1; lsn <= 10; ++lsn) {
    REQUIRE(r->next(v) == wal::reader::status::entry);
    REQUIRE(v.lsn == lsn);
  }
  REQUIRE(r->next(v) == wal::reader::status::tail);

  // The writer finishes record 11 and makes it durable; the limit follows.
  pwrite_at(d.path() + "/" + seg, rec.substr(rec.size() - 64), off + rec.size() - 64);
  r->set_limit(11);
  REQUIRE(r->next(v) == wal::reader::status::entry);
  REQUIRE(v.lsn == 11);
  auto got = v.to_entry();
  want.lsn = 11;
  CHECK(got == want);
  CHECK(r->next(v) == wal::reader::status::tail);
}

TEST_CASE("a reader following a live writer's durable LSN returns exactly what was written", "[reader][live]") {
  // The race of the test above, with real threads: the writer appends batches (some synced
  // in the background) while a reader, limited to the durable LSN, follows it and checks
  // every entry. Runs without CAF, so it also runs under TSan.
  auto verify = GENERATE(false, true);
  CAPTURE(verify);
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 700;  // rolls, too
  auto log = test::open_log(d.path(), cfg);
  const uint64_t total = 8000;
  std::atomic<bool> writer_done{false};
  std::string writer_error;
  std::thread writer([&] {
    uint64_t i = 0;
    while (i < total) {
      std::vector<wal_entry> b;
      size_t n = 1 + (i * 7) % 13;
      for (size_t k = 0; k < n && i < total; ++k, ++i) b.push_back(make_entry(i, 50 + (i * 31) % 400));
      auto r = log->append(b);
      if (!r) {
        writer_error = r.err().to_string();
        break;
      }
      if (i % 3) {
        log->sync_async();
      } else if (auto e = log->sync()) {
        writer_error = e.to_string();
        break;
      }
    }
    if (writer_error.empty())
      if (auto e = log->sync()) writer_error = e.to_string();
    writer_done = true;
  });
  auto r = std::move(*wal::reader::open(d.path(), wal::reader_options{.verify_checksums = verify, .buffer_size = 4096}));
  entry_view v;
  uint64_t next = 1, wrong = 0;
  hlc_stamp prev_hlc;
  std::string first_wrong;
  while (next <= total) {
    bool done = writer_done.load();
    r->set_limit(log->durable_lsn());
    auto s = r->next(v);
    if (s == wal::reader::status::error) FAIL(r->last_error().to_string());
    if (s == wal::reader::status::tail) {
      if (done && log->durable_lsn() < next) break;  // the writer failed
      std::this_thread::yield();
      continue;
    }
    auto want = make_entry(next - 1, 50 + ((next - 1) * 31) % 400);
    want.lsn = next;
    want.hlc = v.hlc;  // the writer's stamps: increasing, with the log's node id
    bool hlc_ok = v.hlc.node == log->node_id() && prev_hlc < v.hlc;
    prev_hlc = v.hlc;
    if ((!hlc_ok || !(v.to_entry() == want)) && wrong++ == 0) first_wrong = "lsn " + std::to_string(next);
    ++next;
  }
  writer.join();
  CHECK(writer_error == "");
  CHECK(next == total + 1);
  INFO("first wrong entry: " << first_wrong);
  CHECK(wrong == 0);
}
