#include "lakehouse/thrift_compact.hpp"

#include <cassert>

namespace dosql::lakehouse::thrift {

void compact_encoder::varint(uint64_t v) {
  while (v >= 0x80) {
    out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out_.push_back(static_cast<char>(v));
}

void compact_encoder::header(int16_t id, ctype t) {
  assert(!last_.empty());
  int delta = id - last_.back();
  if (delta > 0 && delta <= 15) {
    out_.push_back(static_cast<char>((delta << 4) | static_cast<int>(t)));
  } else {
    out_.push_back(static_cast<char>(t));
    varint(zigzag(id));
  }
  last_.back() = id;
}

void compact_encoder::field_i8(int16_t id, int8_t v) {
  header(id, ctype::i8);
  out_.push_back(static_cast<char>(v));
}

void compact_encoder::field_i16(int16_t id, int16_t v) {
  header(id, ctype::i16);
  varint(zigzag(v));
}

void compact_encoder::field_i32(int16_t id, int32_t v) {
  header(id, ctype::i32);
  varint(zigzag(v));
}

void compact_encoder::field_i64(int16_t id, int64_t v) {
  header(id, ctype::i64);
  varint(zigzag(v));
}

void compact_encoder::field_bool(int16_t id, bool v) { header(id, v ? ctype::bool_true : ctype::bool_false); }

void compact_encoder::field_binary(int16_t id, std::string_view v) {
  header(id, ctype::binary);
  list_binary(v);
}

void compact_encoder::list_binary(std::string_view v) {
  varint(v.size());
  out_.append(v);
}

void compact_encoder::begin_struct_field(int16_t id) {
  header(id, ctype::structure);
  last_.push_back(0);
}

void compact_encoder::empty_struct_field(int16_t id) {
  begin_struct_field(id);
  end_struct();
}

void compact_encoder::begin_list_field(int16_t id, ctype elem, size_t size) {
  header(id, ctype::list);
  if (size < 15) {
    out_.push_back(static_cast<char>((size << 4) | static_cast<size_t>(elem)));
  } else {
    out_.push_back(static_cast<char>(0xf0 | static_cast<int>(elem)));
    varint(size);
  }
}

void compact_encoder::end_struct() {
  assert(!last_.empty());
  out_.push_back(0);
  last_.pop_back();
}

namespace {

struct decoder {
  std::string_view in;
  size_t pos;
  bool ok = true;

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= in.size()) return ok = false, 0;
      auto b = static_cast<uint8_t>(in[pos++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    return ok = false, 0;
  }
  int64_t zigzag() {
    uint64_t v = varint();
    return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
  }
  void value(ctype t, tvalue& out, int depth) {
    out.type = t;
    if (depth > 64) return void(ok = false);
    switch (t) {
      case ctype::bool_true: out.i = 1; return;
      case ctype::bool_false: out.i = 0; return;
      case ctype::i8:
        if (pos >= in.size()) return void(ok = false);
        out.i = static_cast<int8_t>(in[pos++]);
        return;
      case ctype::i16:
      case ctype::i32:
      case ctype::i64: out.i = zigzag(); return;
      case ctype::dbl:
        if (pos + 8 > in.size()) return void(ok = false);
        pos += 8;
        return;
      case ctype::binary: {
        uint64_t n = varint();
        if (!ok || n > in.size() - pos) return void(ok = false);
        out.bin.assign(in.substr(pos, n));
        pos += n;
        return;
      }
      case ctype::list:
      case ctype::set: {
        if (pos >= in.size()) return void(ok = false);
        auto h = static_cast<uint8_t>(in[pos++]);
        uint64_t n = h >> 4;
        if (n == 15) n = varint();
        auto et = static_cast<ctype>(h & 0x0f);
        if (!ok || n > in.size()) return void(ok = false);
        for (uint64_t k = 0; k < n && ok; ++k) {
          tvalue el;
          // Inside lists, booleans are one byte each.
          if (et == ctype::bool_true || et == ctype::bool_false) {
            if (pos >= in.size()) return void(ok = false);
            el.type = et;
            el.i = in[pos++] == 1;
          } else {
            value(et, el, depth + 1);
          }
          out.list.push_back(std::move(el));
        }
        return;
      }
      case ctype::map: {
        uint64_t n = varint();
        if (n == 0 || !ok) return;
        if (pos >= in.size()) return void(ok = false);
        auto kv = static_cast<uint8_t>(in[pos++]);
        for (uint64_t k = 0; k < n && ok; ++k) {
          tvalue a, b;
          value(static_cast<ctype>(kv >> 4), a, depth + 1);
          value(static_cast<ctype>(kv & 0x0f), b, depth + 1);
        }
        return;
      }
      case ctype::structure: {
        int16_t last = 0;
        for (;;) {
          if (pos >= in.size()) return void(ok = false);
          auto h = static_cast<uint8_t>(in[pos++]);
          if (h == 0) return;
          auto ft = static_cast<ctype>(h & 0x0f);
          int16_t id = (h >> 4) ? static_cast<int16_t>(last + (h >> 4)) : static_cast<int16_t>(zigzag());
          last = id;
          tvalue f;
          value(ft, f, depth + 1);
          if (!ok) return;
          out.fields[id] = std::move(f);
        }
      }
    }
    ok = false;
  }
};

}  // namespace

std::optional<tvalue> decode_struct(std::string_view in, size_t& pos) {
  decoder d{in, pos};
  tvalue v;
  d.value(ctype::structure, v, 0);
  if (!d.ok) return std::nullopt;
  pos = d.pos;
  return v;
}

}  // namespace dosql::lakehouse::thrift
