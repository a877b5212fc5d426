// libFuzzer target: arbitrary bytes as a WAL segment file, read by the real reader and by
// the writer's recovery. Must never crash or hang, and never return an entry whose record
// checksum fails.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "wal/crc32c.hpp"
#include "wal/endian.hpp"
#include "wal/format.hpp"
#include "wal/log.hpp"
#include "wal/reader.hpp"

namespace {

std::string scratch() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/dosql-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    return std::string(tmpl);
  }();
  return dir;
}

void write_file(const std::string& path, const uint8_t* data, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (n && std::fwrite(data, 1, n, f) != n) std::abort();
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dosql;
  // 1. The record parser over raw bytes: every ok record's CRC must check.
  for (size_t off = 0; off < size && off < 4096; off += 1 + off / 16) {
    auto r = wal::parse_record(reinterpret_cast<const char*>(data) + off, size - off, true);
    if (r.status == wal::parse_status::ok) {
      const char* p = reinterpret_cast<const char*>(data) + off;
      uint32_t len = wal::get_u32(p + 4);
      if (wal::crc32c::unmask(wal::get_u32(p)) != wal::crc32c::value(p + 4, 12 + size_t{len})) std::abort();
      if (r.size != wal::record_header_size + len) std::abort();
    }
  }
  // 2. The input as segment 1 of a WAL directory (with a valid header prepended half the
  //    time, so that the fuzzer reaches the records), read by the reader.
  std::string dir = scratch();
  std::string seg = dir + "/" + wal::segment_file_name(1);
  std::string bytes;
  if (size > 0 && (data[0] & 1)) {
    char h[wal::segment_header_size];
    wal::encode_segment_header({wal::format_version, 1, 0}, h);
    bytes.assign(h, sizeof h);
    bytes.append(reinterpret_cast<const char*>(data) + 1, size - 1);
  } else {
    bytes.assign(reinterpret_cast<const char*>(data), size);
  }
  write_file(seg, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (auto r = wal::reader::open(dir)) {
    entry_view v;
    uint64_t expect = 1;
    for (int i = 0; i < 100000; ++i) {
      auto s = (*r)->next(v);
      if (s != wal::reader::status::entry) break;
      if (v.lsn != expect++) std::abort();  // gap-free, in order
      (void)v.to_entry();
    }
  }
  // 3. Recovery by the writer on the same bytes (it may truncate the copy; never crash).
  wal_config cfg;
  cfg.preallocate = false;
  cfg.sync = wal_config::sync_policy::none;
  if (auto l = wal::log::open(dir, cfg)) {
    if ((*l)->next_lsn() == 0) std::abort();
  }
  ::unlink(seg.c_str());
  return 0;
}
