#include "wal/entry.hpp"

#include <chrono>
#include <cstring>

#include "wal/endian.hpp"
#include "wal/hlc.hpp"

namespace dosql {

int64_t now_ms() noexcept {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string_view to_string(op_type op) noexcept {
  switch (op) {
    case op_type::insert: return "INSERT";
    case op_type::update: return "UPDATE";
    case op_type::del: return "DELETE";
    case op_type::begin: return "BEGIN";
    case op_type::commit: return "COMMIT";
    case op_type::rollback: return "ROLLBACK";
    case op_type::schema: return "SCHEMA";
  }
  return "UNKNOWN";
}

std::optional<op_type> parse_op(std::string_view s) noexcept {
  std::string up(s);
  for (auto& c : up) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
  for (int i = 1; i <= 7; ++i) {
    auto op = static_cast<op_type>(i);
    if (up == to_string(op)) return op;
  }
  return std::nullopt;
}

result<uint64_t> parse_lsn(std::string_view text, std::string_view what) {
  auto bad = [&](const char* why) {
    return error(ec::invalid_argument, std::string(what) + ": '" + std::string(text) + "' is not an LSN (" + why + ")");
  };
  if (text.empty()) return bad("empty");
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return bad("use decimal digits only: 0 to 18446744073709551614");
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return bad("out of range: at most 18446744073709551614");
    v = v * 10 + d;
  }
  if (v == UINT64_MAX) return bad("out of range: at most 18446744073709551614");
  return v;
}

error check_lsn_not_beyond(uint64_t lsn, uint64_t last, std::string_view what) {
  if (lsn <= last) return {};
  return error(ec::invalid_argument, std::string(what) + " " + std::to_string(lsn) +
                                         " is beyond the end of the WAL (last durable lsn " + std::to_string(last) + ")");
}

namespace {
bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }
}  // namespace

wal_entry entry_view::to_entry() const {
  wal_entry e;
  e.lsn = lsn;
  e.timestamp = timestamp;
  e.hlc = hlc;
  e.txn_id = std::string(txn_id);
  e.op = op;
  e.table = std::string(table);
  if (has_key) e.key = to_bytes(key);
  if (has_before) e.before = to_bytes(before);
  if (has_after) e.after = to_bytes(after);
  e.origin = origin;
  return e;
}

entry_view view_of(const wal_entry& e) noexcept {
  auto sv = [](const std::optional<bytes>& b) {
    return b ? std::string_view(reinterpret_cast<const char*>(b->data()), b->size()) : std::string_view{};
  };
  entry_view v;
  v.lsn = e.lsn;
  v.timestamp = e.timestamp;
  v.hlc = e.hlc;
  v.txn_id = e.txn_id;
  v.op = e.op;
  v.table = e.table;
  v.has_key = e.key.has_value();
  v.has_before = e.before.has_value();
  v.has_after = e.after.has_value();
  v.key = sv(e.key);
  v.before = sv(e.before);
  v.after = sv(e.after);
  v.origin = e.origin;
  return v;
}

namespace wal {

size_t encoded_size(const entry_view& e) noexcept {
  size_t n = entry_fixed_size + e.txn_id.size() + e.table.size();
  if (e.has_key) n += 4 + e.key.size();
  if (e.has_before) n += 4 + e.before.size();
  if (e.has_after) n += 4 + e.after.size();
  return n;
}

void encode(const entry_view& e, std::string& out) {
  size_t start = out.size();
  out.resize(start + encoded_size(e));
  char* p = out.data() + start;
  uint8_t flags = (e.has_key ? 1 : 0) | (e.has_before ? 2 : 0) | (e.has_after ? 4 : 0);
  p[0] = static_cast<char>(entry_version);
  p[1] = static_cast<char>(e.op);
  p[2] = static_cast<char>(flags);
  p[3] = static_cast<char>(e.origin);
  put_u64(p + 4, static_cast<uint64_t>(e.timestamp));
  put_u64(p + 12, pack_hlc(e.hlc.physical, e.hlc.logical));
  put_u32(p + 20, e.hlc.node);
  put_u32(p + 24, static_cast<uint32_t>(e.txn_id.size()));
  put_u32(p + 28, static_cast<uint32_t>(e.table.size()));
  p += entry_fixed_size;
  const std::string_view* fields[3] = {&e.key, &e.before, &e.after};
  const bool has[3] = {e.has_key, e.has_before, e.has_after};
  for (int i = 0; i < 3; ++i)
    if (has[i]) {
      put_u32(p, static_cast<uint32_t>(fields[i]->size()));
      p += 4;
    }
  auto copy = [&p](const void* src, size_t n) {
    if (n) std::memcpy(p, src, n);
    p += n;
  };
  copy(e.txn_id.data(), e.txn_id.size());
  copy(e.table.data(), e.table.size());
  for (int i = 0; i < 3; ++i)
    if (has[i]) copy(fields[i]->data(), fields[i]->size());
}

error decode(std::string_view payload, uint64_t lsn, entry_view& out) {
  auto bad = [lsn](const char* why) {
    return error(ec::decode_error, "lsn " + std::to_string(lsn) + ": " + why).at(lsn);
  };
  if (payload.size() < entry_min_size) return bad("entry shorter than its fixed header");
  const char* p = payload.data();
  uint8_t version = static_cast<uint8_t>(p[0]);
  if (version != entry_version && version != 1) {
    return error(ec::format_version, "lsn " + std::to_string(lsn) + ": entry version " +
                                         std::to_string(version) +
                                         " is not supported (this build reads versions 1 and 2)")
        .at(lsn);
  }
  size_t fixed = version == 1 ? entry_v1_fixed_size : entry_fixed_size;
  if (payload.size() < fixed) return bad("entry shorter than its fixed header");
  uint8_t op = static_cast<uint8_t>(p[1]);
  uint8_t flags = static_cast<uint8_t>(p[2]);
  if (op < 1 || op > 7) return bad("unknown op code");
  if ((flags & ~7u) != 0 || static_cast<uint8_t>(p[3]) > 2) return bad("unknown flags");
  out.origin = static_cast<entry_origin>(p[3]);
  out.lsn = lsn;
  out.op = static_cast<op_type>(op);
  out.timestamp = static_cast<int64_t>(get_u64(p + 4));
  uint64_t lens[5] = {0, 0, 0, 0, 0};
  if (version == 1) {  // before the HLC: derived from the timestamp, node unknown
    out.hlc = {out.timestamp, 0, 0};
    lens[0] = get_u32(p + 12);
    lens[1] = get_u32(p + 16);
  } else {
    out.hlc = unpack_hlc(get_u64(p + 12), get_u32(p + 20));
    lens[0] = get_u32(p + 24);
    lens[1] = get_u32(p + 28);
  }
  bool has[3] = {(flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0};
  size_t off = fixed;
  for (int i = 0; i < 3; ++i)
    if (has[i]) {
      if (payload.size() < off + 4) return bad("entry truncated in its length fields");
      lens[2 + i] = get_u32(p + off);
      off += 4;
    }
  uint64_t total = off;
  for (auto l : lens) total += l;
  if (total != payload.size()) return bad("field lengths do not add up to the entry size");
  std::string_view* dst[5] = {&out.txn_id, &out.table, &out.key, &out.before, &out.after};
  for (int i = 0; i < 5; ++i) {
    *dst[i] = payload.substr(off, lens[i]);
    off += lens[i];
  }
  out.has_key = has[0];
  out.has_before = has[1];
  out.has_after = has[2];
  return {};
}

}  // namespace wal
}  // namespace dosql
