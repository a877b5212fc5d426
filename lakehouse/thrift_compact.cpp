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

}  // namespace dosql::lakehouse::thrift
