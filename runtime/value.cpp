#include "runtime/value.hpp"

#include <bit>

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

// A reader of the msgpack subset SQL values use (nil, integers, floats, str, bin, maps of
// them): row images are decoded on every delivered event, and this avoids msgpack-c's zone
// allocation per image. Every read is bounds-checked; false = malformed.
struct mp_reader {
  const unsigned char* p;
  const unsigned char* end;

  explicit mp_reader(std::string_view s)
      : p(reinterpret_cast<const unsigned char*>(s.data())), end(p + s.size()) {}
  bool need(size_t n) const { return static_cast<size_t>(end - p) >= n; }
  uint64_t be(size_t n) {  // REQUIRES need(n)
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = v << 8 | p[i];
    p += n;
    return v;
  }
  bool sized(size_t width, uint64_t& n) {
    if (!need(width)) return false;
    n = be(width);
    return true;
  }
  bool bytes_of(uint64_t n, std::string_view& out) {
    if (!need(n)) return false;
    out = std::string_view(reinterpret_cast<const char*>(p), n);
    p += n;
    return true;
  }
  bool str(std::string_view& out) {
    if (!need(1)) return false;
    unsigned c = *p++;
    uint64_t n;
    if ((c & 0xe0) == 0xa0) n = c & 0x1f;
    else if (c == 0xd9) { if (!sized(1, n)) return false; }
    else if (c == 0xda) { if (!sized(2, n)) return false; }
    else if (c == 0xdb) { if (!sized(4, n)) return false; }
    else return false;
    return bytes_of(n, out);
  }
  bool map_header(uint64_t& n) {
    if (!need(1)) return false;
    unsigned c = *p++;
    if ((c & 0xf0) == 0x80) return n = c & 0x0f, true;
    if (c == 0xde) return sized(2, n);
    if (c == 0xdf) return sized(4, n);
    return false;
  }
  bool array_header(uint64_t& n) {
    if (!need(1)) return false;
    unsigned c = *p++;
    if ((c & 0xf0) == 0x90) return n = c & 0x0f, true;
    if (c == 0xdc) return sized(2, n);
    if (c == 0xdd) return sized(4, n);
    return false;
  }
  bool val(value& out) {
    if (!need(1)) return false;
    unsigned c = *p;
    if (c <= 0x7f || c >= 0xe0) {  // fixints
      ++p;
      out = static_cast<int64_t>(static_cast<int8_t>(c));
      return true;
    }
    if ((c & 0xe0) == 0xa0 || (c >= 0xd9 && c <= 0xdb)) {
      std::string_view s;
      if (!str(s)) return false;
      out = std::string(s);
      return true;
    }
    ++p;
    uint64_t n;
    std::string_view b;
    switch (c) {
      case 0xc0: out = nullptr; return true;
      case 0xc4: case 0xc5: case 0xc6:
        if (!sized(size_t{1} << (c - 0xc4), n) || !bytes_of(n, b)) return false;
        out = bytes(reinterpret_cast<const uint8_t*>(b.data()), reinterpret_cast<const uint8_t*>(b.data()) + b.size());
        return true;
      case 0xca:
        if (!sized(4, n)) return false;
        out = static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(n)));
        return true;
      case 0xcb:
        if (!sized(8, n)) return false;
        out = std::bit_cast<double>(n);
        return true;
      case 0xcc: case 0xcd: case 0xce: case 0xcf:
        if (!sized(size_t{1} << (c - 0xcc), n) || n > static_cast<uint64_t>(INT64_MAX)) return false;
        out = static_cast<int64_t>(n);
        return true;
      case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        size_t w = size_t{1} << (c - 0xd0);
        if (!sized(w, n)) return false;
        int shift = static_cast<int>(64 - 8 * w);  // sign-extend
        out = static_cast<int64_t>(n << shift) >> shift;
        return true;
      }
      default: return false;
    }
  }
};

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
    if (!rd.val(r.values.back()))
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
    if (!rd.val(v)) return error(ec::decode_error, "key holds a non-SQL value (or is truncated)");
  if (rd.p != rd.end) return error(ec::decode_error, "key: trailing bytes");
  return out;
}

}  // namespace codec
}  // namespace dosql
