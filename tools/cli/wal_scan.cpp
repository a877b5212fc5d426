// Read-only listing of a WAL directory for `dosql wal info` (and the start tail of `tail`):
// plain file reads, no lock, safe beside the owning process.
#include <fcntl.h>

#include <algorithm>

#include "tools/cli/cli.hpp"
#include "wal/file.hpp"
#include "wal/format.hpp"

namespace dosql::cli {
namespace {

// Scans the records of the active segment: its last LSN and the bytes in use. Stops at the
// zero fill, the end of the file, or the first record that is not intact (noted).
error scan_active(const std::string& path, segment_stat& s) {
  auto fd = wal::open_file(path, O_RDONLY);
  if (!fd) return fd.err();
  auto size = wal::file_size(fd->get(), path);
  if (!size) return size.err();
  s.file_bytes = *size;
  std::string buf(std::max<size_t>(1 << 20, wal::segment_header_size), '\0');
  auto n = wal::pread_full(fd->get(), buf.data(), wal::segment_header_size, 0, path);
  if (!n) return n.err();
  wal::segment_header h;
  if (auto e = wal::decode_segment_header(std::string_view(buf.data(), *n), path, h)) return e;
  if (h.first_lsn != s.first_lsn)
    return error(ec::corruption, "segment " + path + ": header and file name disagree on its first lsn");
  uint64_t off = h.header_size;  // file offset of buf[0] (40 bytes in format version 1)
  size_t pos = 0, len = 0;
  uint64_t expect = s.first_lsn;
  for (;;) {
    auto r = wal::parse_record(buf.data() + pos, len - pos, true);
    if (r.status == wal::parse_status::ok) {
      if (r.lsn != expect) {
        s.note = "unexpected lsn " + std::to_string(r.lsn) + " at offset " + std::to_string(off + pos);
        break;
      }
      pos += r.size;
      ++expect;
      continue;
    }
    if (r.status == wal::parse_status::incomplete && off + len < *size) {
      // Refill from the parse position (growing the buffer for a record larger than it).
      off += pos;
      size_t have = len - pos;
      if (pos == 0 && have == buf.size()) buf.resize(buf.size() * 2);
      auto m = wal::pread_full(fd->get(), buf.data(), buf.size(), off, path);
      if (!m) return m.err();
      pos = 0;
      len = *m;
      if (len == have && have != buf.size()) break;  // nothing new (file shrank)
      continue;
    }
    if (r.status == wal::parse_status::bad)
      s.note = std::string(r.why) + " at offset " + std::to_string(off + pos);
    else if (r.status == wal::parse_status::incomplete && len > pos)
      s.note = "record cut short by the end of the file at offset " + std::to_string(off + pos);
    break;
  }
  s.bytes = off + pos;
  s.last_lsn = expect > s.first_lsn ? expect - 1 : 0;
  return {};
}

}  // namespace

result<wal_stat> scan_wal(const std::string& wal_dir) {
  auto names = wal::list_dir(wal_dir);
  if (!names) return names.err();
  wal_stat st;
  for (auto& n : *names)
    if (auto f = wal::parse_segment_file_name(n)) {
      segment_stat s;
      s.name = n;
      s.first_lsn = *f;
      st.segments.push_back(std::move(s));
    }
  std::sort(st.segments.begin(), st.segments.end(),
            [](const segment_stat& a, const segment_stat& b) { return a.first_lsn < b.first_lsn; });
  for (size_t i = 0; i < st.segments.size(); ++i) {
    auto& s = st.segments[i];
    auto path = wal::join(wal_dir, s.name);
    if (i + 1 == st.segments.size()) {
      s.active = true;
      if (auto e = scan_active(path, s)) return e;
    } else {
      // Sealed: truncated to its exact size; its entries end where the next segment begins.
      auto fd = wal::open_file(path, O_RDONLY);
      if (!fd) return fd.err();
      auto size = wal::file_size(fd->get(), path);
      if (!size) return size.err();
      s.bytes = s.file_bytes = *size;
      s.last_lsn = st.segments[i + 1].first_lsn - 1;
    }
    st.total_bytes += s.bytes;
  }
  if (!st.segments.empty()) {
    st.oldest_lsn = st.segments.front().first_lsn;
    auto& a = st.segments.back();
    st.last_lsn = a.last_lsn ? a.last_lsn : a.first_lsn - 1;
  }
  return st;
}

}  // namespace dosql::cli
