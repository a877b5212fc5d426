#include "wal/hlc.hpp"

#include <random>

namespace dosql {

// Fixed width, no locale, no snprintf: cdc::to_json renders one per event.
std::string to_string(const hlc_stamp& h) {
  std::string s(15 + 1 + 5 + 1 + 10, '.');
  auto digits = [&s](size_t end, size_t width, uint64_t v) {
    for (size_t i = 0; i < width; ++i, v /= 10) s[end - 1 - i] = static_cast<char>('0' + v % 10);
  };
  digits(15, 15, static_cast<uint64_t>(h.physical < 0 ? 0 : h.physical));  // < 2^48: 15 digits
  digits(21, 5, h.logical);
  digits(32, 10, h.node);
  return s;
}

namespace wal {

uint32_t new_node_id() {
  std::random_device rd;  // getrandom(2): once per new WAL
  uint32_t id = 0;
  while (id == 0) id = static_cast<uint32_t>(rd());
  return id;
}

}  // namespace wal
}  // namespace dosql
