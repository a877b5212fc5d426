#include "runtime/json.hpp"

#include <nlohmann/json.hpp>

namespace dosql {
namespace {

std::string base64(const bytes& b) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((b.size() + 2) / 3 * 4);
  for (size_t i = 0; i < b.size(); i += 3) {
    uint32_t n = uint32_t{b[i]} << 16 | (i + 1 < b.size() ? uint32_t{b[i + 1]} << 8 : 0) |
                 (i + 2 < b.size() ? uint32_t{b[i + 2]} : 0);
    out += tbl[n >> 18 & 63];
    out += tbl[n >> 12 & 63];
    out += i + 1 < b.size() ? tbl[n >> 6 & 63] : '=';
    out += i + 2 < b.size() ? tbl[n & 63] : '=';
  }
  return out;
}

nlohmann::ordered_json json_of(const value& v) {
  switch (v.index()) {
    case 1: return std::get<int64_t>(v);
    case 2: return std::get<double>(v);
    case 3: return std::get<std::string>(v);
    case 4: return nlohmann::ordered_json{{"$base64", base64(std::get<bytes>(v))}};
    default: return nullptr;
  }
}

}  // namespace

std::string to_json(const value& v) { return json_of(v).dump(); }

std::string to_json(const row& r) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  for (size_t i = 0; i < r.size(); ++i) o[r.columns[i]] = json_of(r.values[i]);
  return o.dump();
}

}  // namespace dosql
