// CRC-32C (Castagnoli), the checksum of every WAL record and segment header.
// Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at run time),
// else a slicing-by-8 table. Both give crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dosql::wal::crc32c {

/// Extends `crc` (the CRC of some earlier bytes, 0 to start) with `n` bytes at `data`.
uint32_t extend(uint32_t crc, const void* data, size_t n) noexcept;

inline uint32_t value(const void* data, size_t n) noexcept { return extend(0, data, n); }

/// The table-driven implementation alone (tests compare it with the hardware path).
uint32_t extend_portable(uint32_t crc, const void* data, size_t n) noexcept;

constexpr uint32_t mask_delta = 0xa282ead8u;

/// Masked form stored on disk: a CRC over bytes that contain CRCs stays strong.
constexpr uint32_t mask(uint32_t crc) noexcept { return ((crc >> 15) | (crc << 17)) + mask_delta; }
constexpr uint32_t unmask(uint32_t masked) noexcept {
  uint32_t rot = masked - mask_delta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace dosql::wal::crc32c
