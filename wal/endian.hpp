// Little-endian fixed-width integer coding for the WAL's on-disk formats (internal).
#pragma once

#include <cstdint>
#include <cstring>

namespace dosql::wal {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "dosql's WAL coding assumes a little-endian host");

inline void put_u32(char* p, uint32_t v) noexcept { std::memcpy(p, &v, 4); }
inline void put_u64(char* p, uint64_t v) noexcept { std::memcpy(p, &v, 8); }
inline uint32_t get_u32(const char* p) noexcept {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t get_u64(const char* p) noexcept {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace dosql::wal
