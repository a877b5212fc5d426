// Internal: a bounds-checked reader of the msgpack subset dosql writes (integers, floats, nil,
// str, bin, arrays, maps), for the hot decoding paths (row images and keys on every delivered
// event, transaction messages in the WAL writer): no allocation, views into the input.
// Every read checks the remaining length; false = malformed or truncated (the position is then
// unspecified). Invariant: p <= end.
#pragma once

#include <bit>
#include <cstdint>
#include <string_view>

namespace dosql::detail {

struct mp_reader {
  const unsigned char* p;
  const unsigned char* end;

  explicit mp_reader(std::string_view s)
      : p(reinterpret_cast<const unsigned char*>(s.data())), end(p + s.size()) {}
  bool at_end() const { return p == end; }
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
  /// bin (or nil: has = false).
  bool bin_or_nil(bool& has, std::string_view& out) {
    if (!need(1)) return false;
    unsigned c = *p++;
    has = c != 0xc0;
    if (!has) return true;
    uint64_t n;
    if (c < 0xc4 || c > 0xc6 || !sized(size_t{1} << (c - 0xc4), n)) return false;
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
  /// Any msgpack integer that fits an int64.
  bool int64(int64_t& out) {
    if (!need(1)) return false;
    unsigned c = *p++;
    if (c <= 0x7f || c >= 0xe0) return out = static_cast<int8_t>(c), true;
    uint64_t n;
    if (c >= 0xcc && c <= 0xcf) {
      if (!sized(size_t{1} << (c - 0xcc), n) || n > static_cast<uint64_t>(INT64_MAX)) return false;
      return out = static_cast<int64_t>(n), true;
    }
    if (c >= 0xd0 && c <= 0xd3) {
      size_t w = size_t{1} << (c - 0xd0);
      if (!sized(w, n)) return false;
      int shift = static_cast<int>(64 - 8 * w);  // sign-extend
      return out = static_cast<int64_t>(n << shift) >> shift, true;
    }
    return false;
  }
  /// A non-negative msgpack integer.
  bool uint(uint64_t& out) {
    if (!need(1)) return false;
    unsigned c = *p;
    if (c == 0xcf) {  // beyond INT64_MAX is fine here
      ++p;
      return sized(8, out);
    }
    int64_t v;
    if (!int64(v) || v < 0) return false;
    return out = static_cast<uint64_t>(v), true;
  }
  /// A float32 or float64.
  bool float64(double& out) {
    if (!need(1)) return false;
    unsigned c = *p++;
    uint64_t n;
    if (c == 0xca) {
      if (!sized(4, n)) return false;
      return out = static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(n))), true;
    }
    if (c == 0xcb) {
      if (!sized(8, n)) return false;
      return out = std::bit_cast<double>(n), true;
    }
    return false;
  }
};

}  // namespace dosql::detail
