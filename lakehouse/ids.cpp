#include "lakehouse/ids.hpp"

#include <cstdio>
#include <random>

namespace dosql::lakehouse {

namespace {
std::mt19937_64& gen() {
  static thread_local std::mt19937_64 g{std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32)};
  return g;
}
}  // namespace

std::string random_hex32() {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(gen()()),
                static_cast<unsigned long long>(gen()()));
  return buf;
}

std::string random_uuid() {
  uint64_t hi = gen()(), lo = gen()();
  hi = (hi & ~0xf000ull) | 0x4000ull;                        // version 4
  lo = (lo & ~(0xcull << 60)) | (0x8ull << 60);              // variant 10xx
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx", static_cast<unsigned long long>(hi >> 32),
                static_cast<unsigned long long>((hi >> 16) & 0xffff), static_cast<unsigned long long>(hi & 0xffff),
                static_cast<unsigned long long>(lo >> 48), static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return buf;
}

int64_t random_positive_id() {
  for (;;) {
    auto v = static_cast<int64_t>(gen()() >> 1);
    if (v > 0) return v;
  }
}

uint64_t random_u64() { return gen()(); }

}  // namespace dosql::lakehouse
