#include "wal/hlc.hpp"

#include <cstdio>
#include <random>

namespace dosql {

std::string to_string(const hlc_stamp& h) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%015lld.%05u.%010u", static_cast<long long>(h.physical), h.logical, h.node);
  return buf;
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
