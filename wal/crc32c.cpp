#include "wal/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace dosql::wal::crc32c {
namespace {

constexpr uint32_t poly = 0x82f63b78u;  // reflected Castagnoli polynomial

struct tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  constexpr tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};
constexpr tables tbl{};

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t extend_sse42(uint32_t crc, const uint8_t* p,
                                                          size_t n) noexcept {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}

bool have_sse42() noexcept {
  static const bool yes = __builtin_cpu_supports("sse4.2");
  return yes;
}
#endif

}  // namespace

uint32_t extend_portable(uint32_t crc, const void* data, size_t n) noexcept {
  auto p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);  // little-endian host assumed (x86-64, aarch64)
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = tbl.t[7][lo & 0xff] ^ tbl.t[6][(lo >> 8) & 0xff] ^ tbl.t[5][(lo >> 16) & 0xff] ^
        tbl.t[4][lo >> 24] ^ tbl.t[3][hi & 0xff] ^ tbl.t[2][(hi >> 8) & 0xff] ^
        tbl.t[1][(hi >> 16) & 0xff] ^ tbl.t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = tbl.t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return ~c;
}

uint32_t extend(uint32_t crc, const void* data, size_t n) noexcept {
#if defined(__x86_64__)
  if (have_sse42()) return extend_sse42(crc, static_cast<const uint8_t*>(data), n);
#endif
  return extend_portable(crc, data, n);
}

}  // namespace dosql::wal::crc32c
