#include "lakehouse/parquet_reader.hpp"

#include <zstd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "lakehouse/thrift_compact.hpp"

namespace dosql::lakehouse {

namespace {

using thrift::tvalue;

constexpr int64_t type_boolean = 0, type_int32 = 1, type_int64 = 2, type_double = 5, type_byte_array = 6;
constexpr int64_t rep_required = 0, rep_optional = 1;
constexpr int64_t converted_utf8 = 0, converted_timestamp_micros = 10;
constexpr int64_t codec_uncompressed = 0, codec_zstd = 6;
constexpr int64_t page_data = 0, enc_plain = 0;

uint32_t le32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Definition levels (bit width 1, RLE / bit-packed hybrid) of `n` values.
bool decode_levels(std::string_view in, size_t n, std::vector<uint8_t>& out) {
  out.clear();
  size_t pos = 0;
  while (out.size() < n) {
    uint64_t h = 0;
    for (int shift = 0;; shift += 7) {
      if (pos >= in.size() || shift > 63) return false;
      auto b = static_cast<uint8_t>(in[pos++]);
      h |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
    if (h & 1) {  // bit-packed: (h >> 1) groups of 8 values, one byte each at width 1
      uint64_t groups = h >> 1;
      if (groups > in.size() - pos) return false;
      for (uint64_t g = 0; g < groups; ++g) {
        auto b = static_cast<uint8_t>(in[pos++]);
        for (int k = 0; k < 8 && out.size() < n; ++k) out.push_back((b >> k) & 1);
      }
    } else {  // RLE: count, then the value in one byte
      uint64_t count = h >> 1;
      if (pos >= in.size() || count == 0) return false;
      auto v = static_cast<uint8_t>(in[pos++]);
      if (v > 1) return false;
      for (uint64_t k = 0; k < count && out.size() < n; ++k) out.push_back(v);
    }
  }
  return true;
}

}  // namespace

result<parquet_contents> read_parquet_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return error(ec::io_error, "cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return error(ec::io_error, "cannot read " + path);
  const std::string data = ss.str();
  auto bad = [&](const std::string& why) { return error(ec::corruption, "the Parquet file " + path + ": " + why); };
  auto unsupported = [&](const std::string& why) {
    return error(ec::invalid_argument, "the Parquet file " + path + ": " + why + " (the reader knows the files dosql writes)");
  };
  if (data.size() < 12 || data.compare(0, 4, "PAR1") != 0 || data.compare(data.size() - 4, 4, "PAR1") != 0)
    return bad("no PAR1 magic");
  uint32_t footer_len = le32(data.data() + data.size() - 8);
  if (footer_len > data.size() - 12) return bad("footer length out of range");
  size_t pos = data.size() - 8 - footer_len;
  auto fmd = thrift::decode_struct(data, pos);
  if (!fmd) return bad("the footer does not decode");

  parquet_contents out;
  auto* sch = fmd->field(2);
  if (!sch || sch->list.empty()) return bad("no schema");
  std::vector<int64_t> physical;
  for (size_t i = 1; i < sch->list.size(); ++i) {
    const tvalue& se = sch->list[i];
    if (se.int_field(5).value_or(0) != 0) return unsupported("a nested column");
    column_spec c;
    auto* name = se.field(4);
    c.name = name ? name->bin : "";
    auto rep = se.int_field(3).value_or(rep_optional);
    if (rep != rep_required && rep != rep_optional) return unsupported("a repeated column '" + c.name + "'");
    c.optional = rep == rep_optional;
    c.field_id = static_cast<int32_t>(se.int_field(9).value_or(0));
    auto t = se.int_field(1);
    if (!t) return bad("column '" + c.name + "' has no type");
    auto conv = se.int_field(6);
    auto* logical = se.field(10);
    switch (*t) {
      case type_boolean: c.type = column_type::boolean; break;
      case type_int32: c.type = column_type::int32; break;
      case type_int64:
        c.type = (conv == converted_timestamp_micros || (logical && logical->field(8))) ? column_type::timestamp : column_type::int64;
        break;
      case type_double: c.type = column_type::float64; break;
      case type_byte_array:
        c.type = (conv == converted_utf8 || (logical && logical->field(1))) ? column_type::string : column_type::binary;
        break;
      default: return unsupported("column '" + c.name + "' has physical type " + std::to_string(*t));
    }
    physical.push_back(*t);
    out.file_schema.columns.push_back(std::move(c));
  }
  if (auto* kv = fmd->field(5))
    for (const auto& e : kv->list) {
      auto* k = e.field(1);
      auto* v = e.field(2);
      out.key_value_metadata.emplace_back(k ? k->bin : "", v ? v->bin : "");
    }

  const size_t ncol = out.file_schema.columns.size();
  std::vector<uint8_t> levels;
  std::string plain;
  if (auto* groups = fmd->field(4))
    for (const auto& g : groups->list) {
      auto* chunks = g.field(1);
      int64_t group_rows = g.int_field(3).value_or(-1);
      if (!chunks || chunks->list.size() != ncol || group_rows < 0) return bad("a row group does not match the schema");
      size_t base = out.rows.size();
      out.rows.resize(base + static_cast<size_t>(group_rows), std::vector<value>(ncol));
      for (size_t ci = 0; ci < ncol; ++ci) {
        const auto& col = out.file_schema.columns[ci];
        auto* md = chunks->list[ci].field(3);
        if (!md) return bad("column chunk without metadata");
        if (md->field(11)) return unsupported("column '" + col.name + "' has a dictionary page");
        auto codec = md->int_field(4).value_or(codec_uncompressed);
        if (codec != codec_uncompressed && codec != codec_zstd)
          return unsupported("column '" + col.name + "' uses codec " + std::to_string(codec));
        int64_t num_values = md->int_field(5).value_or(-1), total = md->int_field(7).value_or(-1);
        int64_t off = md->int_field(9).value_or(-1);
        if (num_values != group_rows || total < 0 || off < 4 || static_cast<uint64_t>(off + total) > data.size())
          return bad("column '" + col.name + "': bad chunk offsets");
        size_t p = static_cast<size_t>(off), end = static_cast<size_t>(off + total);
        size_t row = base;
        while (p < end) {
          auto ph = thrift::decode_struct(std::string_view(data).substr(0, end), p);
          if (!ph) return bad("column '" + col.name + "': a page header does not decode");
          if (ph->int_field(1).value_or(-1) != page_data) return unsupported("column '" + col.name + "' has a page that is not a data page v1");
          auto* dph = ph->field(5);
          int64_t usize = ph->int_field(2).value_or(-1), csize = ph->int_field(3).value_or(-1);
          if (!dph || usize < 0 || csize < 0 || static_cast<uint64_t>(csize) > end - p) return bad("column '" + col.name + "': bad page header");
          if (dph->int_field(2).value_or(-1) != enc_plain) return unsupported("column '" + col.name + "' is not PLAIN-encoded");
          int64_t n = dph->int_field(1).value_or(-1);
          if (n < 0 || row + static_cast<size_t>(n) > out.rows.size()) return bad("column '" + col.name + "': more values than rows");
          std::string_view body(data.data() + p, static_cast<size_t>(csize));
          p += static_cast<size_t>(csize);
          if (codec == codec_zstd) {
            plain.resize(static_cast<size_t>(usize));
            size_t got = ZSTD_decompress(plain.data(), plain.size(), body.data(), body.size());
            if (ZSTD_isError(got) || got != plain.size()) return bad("column '" + col.name + "': a page does not decompress");
            body = plain;
          }
          size_t vp = 0;
          if (col.optional) {
            if (body.size() < 4) return bad("column '" + col.name + "': a page is too short");
            uint32_t len = le32(body.data());
            if (len > body.size() - 4 || !decode_levels(body.substr(4, len), static_cast<size_t>(n), levels))
              return bad("column '" + col.name + "': bad definition levels");
            vp = 4 + len;
          } else {
            levels.assign(static_cast<size_t>(n), 1);
          }
          size_t bit = 0;  // BOOLEAN: bit-packed values
          for (int64_t k = 0; k < n; ++k, ++row) {
            value& v = out.rows[row][ci];
            if (!levels[static_cast<size_t>(k)]) {
              v = nullptr;
              continue;
            }
            auto need = [&](size_t x) { return body.size() - vp >= x; };
            switch (physical[ci]) {
              case type_boolean:
                if (vp + bit / 8 >= body.size()) return bad("column '" + col.name + "': values run short");
                v = static_cast<int64_t>((static_cast<uint8_t>(body[vp + bit / 8]) >> (bit % 8)) & 1);
                ++bit;
                break;
              case type_int32: {
                if (!need(4)) return bad("column '" + col.name + "': values run short");
                int32_t x;
                std::memcpy(&x, body.data() + vp, 4);
                vp += 4;
                v = static_cast<int64_t>(x);
                break;
              }
              case type_int64: {
                if (!need(8)) return bad("column '" + col.name + "': values run short");
                int64_t x;
                std::memcpy(&x, body.data() + vp, 8);
                vp += 8;
                v = x;
                break;
              }
              case type_double: {
                if (!need(8)) return bad("column '" + col.name + "': values run short");
                double x;
                std::memcpy(&x, body.data() + vp, 8);
                vp += 8;
                v = x;
                break;
              }
              default: {
                if (!need(4)) return bad("column '" + col.name + "': values run short");
                uint32_t len = le32(body.data() + vp);
                vp += 4;
                if (!need(len)) return bad("column '" + col.name + "': values run short");
                if (col.type == column_type::string) v = std::string(body.substr(vp, len));
                else v = bytes(body.begin() + static_cast<std::ptrdiff_t>(vp), body.begin() + static_cast<std::ptrdiff_t>(vp + len));
                vp += len;
              }
            }
          }
        }
        if (row != out.rows.size()) return bad("column '" + col.name + "': fewer values than rows");
      }
    }
  if (static_cast<int64_t>(out.rows.size()) != fmd->int_field(3).value_or(-1)) return bad("num_rows does not match the row groups");
  return out;
}

}  // namespace dosql::lakehouse
