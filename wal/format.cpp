#include "wal/format.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "wal/crc32c.hpp"
#include "wal/file.hpp"
#include "wal/endian.hpp"

namespace dosql::wal {

// Version 2 keeps version 1's first 40 bytes and their checksum (so a version 1 build
// reports "newer format version", not damage) and appends the HLC floor and a second
// checksum over everything before it.
void encode_segment_header(const segment_header& h, char out[segment_header_size]) noexcept {
  bool v1 = h.format_version == 1;
  std::memset(out, 0, segment_header_size);
  std::memcpy(out, segment_magic, 8);
  put_u32(out + 8, h.format_version);
  put_u32(out + 12, static_cast<uint32_t>(v1 ? segment_header_v1_size : segment_header_size));
  put_u64(out + 16, h.first_lsn);
  put_u64(out + 24, static_cast<uint64_t>(h.created_ms));
  put_u32(out + 32, v1 ? 0 : h.node_id);  // reserved (0) in version 1
  put_u32(out + 36, crc32c::mask(crc32c::value(out, 36)));
  if (v1) return;
  put_u64(out + 40, h.hlc_floor);
  put_u32(out + 48, crc32c::mask(crc32c::value(out, 48)));
}

error decode_segment_header(std::string_view b, std::string_view where, segment_header& out) {
  auto bad = [&](const std::string& why) {
    return error(ec::corruption, "segment " + std::string(where) + ": " + why);
  };
  if (b.size() < segment_header_min_size) return bad("shorter than the 40-byte segment header");
  if (std::memcmp(b.data(), segment_magic, 8) != 0) return bad("not a dosql WAL segment (bad magic)");
  if (crc32c::unmask(get_u32(b.data() + 36)) != crc32c::value(b.data(), 36))
    return bad("segment header checksum mismatch");
  out.format_version = get_u32(b.data() + 8);
  if (out.format_version > format_version) {
    return error(ec::format_version, "segment " + std::string(where) + " has format version " +
                                         std::to_string(out.format_version) +
                                         ", newer than this build reads (" +
                                         std::to_string(format_version) + ")");
  }
  if (out.format_version == 0) return bad("format version 0");
  bool v1 = out.format_version == 1;
  size_t size = v1 ? segment_header_v1_size : segment_header_size;
  if (get_u32(b.data() + 12) != size) return bad("unexpected header size");
  if (!v1) {
    if (b.size() < size) return bad("shorter than its " + std::to_string(size) + "-byte segment header");
    if (crc32c::unmask(get_u32(b.data() + 48)) != crc32c::value(b.data(), 48))
      return bad("segment header checksum mismatch (bytes 40..51)");
  }
  out.header_size = static_cast<uint32_t>(size);
  out.first_lsn = get_u64(b.data() + 16);
  out.created_ms = static_cast<int64_t>(get_u64(b.data() + 24));
  out.node_id = v1 ? 0 : get_u32(b.data() + 32);
  out.hlc_floor = v1 ? 0 : get_u64(b.data() + 40);
  return {};
}

std::string segment_file_name(uint64_t first_lsn) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020llu.wal", static_cast<unsigned long long>(first_lsn));
  return buf;
}

std::optional<uint64_t> parse_segment_file_name(std::string_view name) noexcept {
  if (name.size() != segment_name_digits + 4 || name.substr(segment_name_digits) != ".wal")
    return std::nullopt;
  uint64_t v = 0;
  auto digits = name.substr(0, segment_name_digits);
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc{} || ptr != digits.data() + digits.size() || v == 0) return std::nullopt;
  return v;
}

result<std::vector<uint64_t>> segment_firsts(const std::string& dir) {
  auto names = list_dir(dir);
  if (!names) return names.err();
  std::vector<uint64_t> firsts;
  for (auto& n : *names)
    if (auto f = parse_segment_file_name(n)) firsts.push_back(*f);
  std::sort(firsts.begin(), firsts.end());
  return firsts;
}

void append_record(std::string& out, uint64_t lsn, const entry_view& e) {
  size_t start = out.size();
  size_t len = encoded_size(e);
  out.resize(start + record_header_size);
  encode(e, out);
  char* h = out.data() + start;
  put_u32(h + 4, static_cast<uint32_t>(len));
  put_u64(h + 8, lsn);
  put_u32(h, crc32c::mask(crc32c::value(h + 4, 12 + len)));
}

parsed_record parse_record(const char* p, size_t avail, bool verify_crc) noexcept {
  parsed_record r;
  if (avail < record_header_size) {
    // A short zero run at the very end of a file is still the clean end.
    bool zero = true;
    for (size_t i = 0; i < avail && zero; ++i) zero = p[i] == 0;
    r.status = (zero && avail > 0) ? parse_status::end : parse_status::incomplete;
    return r;
  }
  uint32_t len = get_u32(p + 4);
  if (len == 0) {
    bool zero = get_u32(p) == 0 && get_u64(p + 8) == 0;
    r.status = zero ? parse_status::end : parse_status::bad;
    r.why = "record length 0 in a non-zero header";
    return r;
  }
  if (len < entry_min_size || len > max_record_payload) {
    r.why = "record length out of range";
    return r;
  }
  if (avail - record_header_size < len) {
    r.status = parse_status::incomplete;
    return r;
  }
  if (verify_crc && crc32c::unmask(get_u32(p)) != crc32c::value(p + 4, 12 + size_t{len})) {
    r.why = "record checksum mismatch";
    return r;
  }
  r.lsn = get_u64(p + 8);
  if (decode(std::string_view(p + record_header_size, len), r.lsn, r.entry)) {
    r.why = "record payload does not decode as an entry";
    return r;
  }
  r.status = parse_status::ok;
  r.size = record_header_size + len;
  return r;
}

std::optional<size_t> find_later_record(const char* p, size_t avail, uint64_t after_lsn) noexcept {
  for (size_t off = 0; off + record_header_size <= avail; ++off) {
    uint32_t len = get_u32(p + off + 4);
    if (len < entry_min_size || len > avail - off - record_header_size) continue;
    if (get_u64(p + off + 8) <= after_lsn) continue;
    auto r = parse_record(p + off, avail - off, true);
    if (r.status == parse_status::ok) return off;
  }
  return std::nullopt;
}

}  // namespace dosql::wal
