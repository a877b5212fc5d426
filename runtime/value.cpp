#include "runtime/value.hpp"

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
using detail::reference_all;

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

bool unpack_value(const msgpack::object& o, value& out) {
  switch (o.type) {
    case msgpack::type::NIL: out = nullptr; return true;
    case msgpack::type::POSITIVE_INTEGER:
      if (o.via.u64 > static_cast<uint64_t>(INT64_MAX)) return false;
      out = static_cast<int64_t>(o.via.u64);
      return true;
    case msgpack::type::NEGATIVE_INTEGER: out = o.via.i64; return true;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: out = o.via.f64; return true;
    case msgpack::type::STR: out = std::string(o.via.str.ptr, o.via.str.size); return true;
    case msgpack::type::BIN:
      out = bytes(reinterpret_cast<const uint8_t*>(o.via.bin.ptr),
                  reinterpret_cast<const uint8_t*>(o.via.bin.ptr) + o.via.bin.size);
      return true;
    default: return false;
  }
}

result<msgpack::object_handle> unpack(std::string_view data, const char* what) {
  try {
    size_t off = 0;
    auto oh = msgpack::unpack(data.data(), data.size(), off, reference_all);
    if (off != data.size()) return error(ec::decode_error, std::string(what) + ": trailing bytes");
    return oh;
  } catch (const std::exception& e) {
    return error(ec::decode_error, std::string(what) + ": " + e.what());
  }
}

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
  auto oh = unpack(image, "row image");
  if (!oh) return oh.err();
  const auto& o = oh->get();
  if (o.type != msgpack::type::MAP) return error(ec::decode_error, "row image is not a map");
  row r;
  r.columns.reserve(o.via.map.size);
  r.values.reserve(o.via.map.size);
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    auto& kv = o.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) return error(ec::decode_error, "row image: column name is not a string");
    r.columns.emplace_back(kv.key.via.str.ptr, kv.key.via.str.size);
    r.values.emplace_back();
    if (!unpack_value(kv.val, r.values.back()))
      return error(ec::decode_error, "row image: column " + r.columns.back() + " has a non-SQL value");
  }
  return r;
}

void encode_key(const std::vector<value>& key, std::string& out) {
  string_sink sink{out};
  msgpack::packer<string_sink> pk(sink);
  pk.pack_array(static_cast<uint32_t>(key.size()));
  for (auto& v : key) pack_value(pk, out, v);
}

result<std::vector<value>> decode_key(std::string_view key) {
  auto oh = unpack(key, "key");
  if (!oh) return oh.err();
  const auto& o = oh->get();
  if (o.type != msgpack::type::ARRAY) return error(ec::decode_error, "key is not an array");
  std::vector<value> out(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i)
    if (!unpack_value(o.via.array.ptr[i], out[i])) return error(ec::decode_error, "key holds a non-SQL value");
  return out;
}

}  // namespace codec
}  // namespace dosql
