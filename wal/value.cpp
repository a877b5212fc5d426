#include <dosql/value.hpp>


#include "wal/msgpack_reader.hpp"
#include "wal/msgpack_sink.hpp"

namespace dosql {

std::string to_string(const value& v) {
  struct visitor {
    std::string operator()(std::nullptr_t) const { return "NULL"; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", d);
      return buf;
    }
    std::string operator()(const std::string& s) const { return s; }
    std::string operator()(const bytes& b) const {
      static const char* hex = "0123456789abcdef";
      std::string s = "x'";
      for (auto c : b) {
        s += hex[c >> 4];
        s += hex[c & 15];
      }
      return s + "'";
    }
  };
  return std::visit(visitor{}, v);
}

const value* row::find(std::string_view column) const noexcept {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == column) return &values[i];
  return nullptr;
}

namespace codec {
namespace {

using detail::string_sink;

// `out` is the string `pk` writes to (the packer does not buffer).
void pack_value(msgpack::packer<string_sink>& pk, std::string& out, const value& v) {
  switch (v.index()) {
    case 0: pk.pack_nil(); break;
    case 1: pk.pack_int64(std::get<int64_t>(v)); break;
    case 2: detail::pack_float64(out, std::get<double>(v)); break;
    case 3: {
      auto& s = std::get<std::string>(v);
      pk.pack_str(static_cast<uint32_t>(s.size()));
      pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
      break;
    }
    case 4: {
      auto& b = std::get<bytes>(v);
      pk.pack_bin(static_cast<uint32_t>(b.size()));
      pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
      break;
    }
  }
}

using detail::mp_reader;

// One SQL value: nil, an integer, a float, str or bin.
bool read_value(mp_reader& rd, value& out) {
  if (!rd.need(1)) return false;
  unsigned c = *rd.p;
  if (c == 0xc0) {
    ++rd.p;
    out = nullptr;
    return true;
  }
  if (c == 0xca || c == 0xcb) {
    double d;
    if (!rd.float64(d)) return false;
    out = d;
    return true;
  }
  if ((c & 0xe0) == 0xa0 || (c >= 0xd9 && c <= 0xdb)) {
    std::string_view sv;
    if (!rd.str(sv)) return false;
    out = std::string(sv);
    return true;
  }
  if (c >= 0xc4 && c <= 0xc6) {
    bool has;
    std::string_view b;
    if (!rd.bin_or_nil(has, b)) return false;
    out = bytes(reinterpret_cast<const uint8_t*>(b.data()), reinterpret_cast<const uint8_t*>(b.data()) + b.size());
    return true;
  }
  int64_t i;
  if (!rd.int64(i)) return false;
  out = i;
  return true;
}

}  // namespace

void encode_row(const row& r, std::string& out) {
  string_sink sink{out};
  msgpack::packer<string_sink> pk(sink);
  pk.pack_map(static_cast<uint32_t>(r.values.size()));
  for (size_t i = 0; i < r.values.size(); ++i) {
    pk.pack_str(static_cast<uint32_t>(r.columns[i].size()));
    pk.pack_str_body(r.columns[i].data(), static_cast<uint32_t>(r.columns[i].size()));
    pack_value(pk, out, r.values[i]);
  }
}

result<row> decode_row(std::string_view image) {
  mp_reader rd(image);
  uint64_t n = 0;
  if (!rd.map_header(n)) return error(ec::decode_error, "row image is not a map");
  if (n > image.size()) return error(ec::decode_error, "row image: truncated");
  row r;
  r.columns.reserve(n);
  r.values.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    std::string_view name;
    if (!rd.str(name)) return error(ec::decode_error, "row image: column " + std::to_string(i) + " has no string name (or is truncated)");
    r.columns.emplace_back(name);
    r.values.emplace_back();
    if (!read_value(rd, r.values.back()))
      return error(ec::decode_error, "row image: column " + r.columns.back() + " has a non-SQL value (or is truncated)");
  }
  if (rd.p != rd.end) return error(ec::decode_error, "row image: trailing bytes");
  return r;
}

void encode_key(const std::vector<value>& key, std::string& out) {
  string_sink sink{out};
  msgpack::packer<string_sink> pk(sink);
  pk.pack_array(static_cast<uint32_t>(key.size()));
  for (auto& v : key) pack_value(pk, out, v);
}

result<std::vector<value>> decode_key(std::string_view key) {
  mp_reader rd(key);
  uint64_t n = 0;
  if (!rd.array_header(n)) return error(ec::decode_error, "key is not an array");
  if (n > key.size()) return error(ec::decode_error, "key: truncated");
  std::vector<value> out(n);
  for (auto& v : out)
    if (!read_value(rd, v)) return error(ec::decode_error, "key holds a non-SQL value (or is truncated)");
  if (rd.p != rd.end) return error(ec::decode_error, "key: trailing bytes");
  return out;
}

}  // namespace codec
}  // namespace dosql
