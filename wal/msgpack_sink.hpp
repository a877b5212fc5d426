// Internal msgpack helpers shared by the capture, the row codec and the actor messages:
// a packer writing into a std::string, and an exact float64 writer (msgpack-c's
// pack_double() writes integral doubles as integers, which would turn REAL 100.0 into
// INTEGER 100 in a row image).
#pragma once

#include <msgpack.hpp>

#include <cstring>
#include <string>

namespace dosql::detail {

struct string_sink {
  std::string& out;
  void write(const char* p, size_t n) { out.append(p, n); }
};
using string_packer = msgpack::packer<string_sink>;

/// Appends a msgpack float64 (0xcb + big-endian IEEE 754) for `d`, whatever its value.
inline void pack_float64(std::string& out, double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  char buf[9];
  buf[0] = static_cast<char>(0xcb);
  for (int i = 0; i < 8; ++i) buf[1 + i] = static_cast<char>(bits >> (56 - 8 * i));
  out.append(buf, 9);
}

/// msgpack unpack reference function: strings and blobs point into the input (no copy).
inline bool reference_all(msgpack::type::object_type, std::size_t, void*) { return true; }

}  // namespace dosql::detail
