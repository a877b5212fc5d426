// The Thrift compact protocol: what a Parquet footer and page headers need
// (structs, unions, lists, i8/i16/i32/i64 as zigzag varints, bool, binary). libthrift is not
// needed for that: the encoding is a few dozen lines (thrift's doc/specs/thrift-compact-protocol.md).
//
// Layout reminders (all multi-byte integers are ULEB128 varints, signed ones zigzag-encoded):
//   field header  := (delta << 4 | type) when 0 < delta <= 15, else  type, zigzag-varint(i16 id)
//                    (delta = this field id - the previous field id of the same struct)
//   bool field    := the header alone, type 1 (true) or 2 (false)
//   binary        := varint(length) bytes
//   list header   := (size << 4 | elem type) when size < 15, else  0xF0 | elem type, varint(size)
//   struct        := fields..., 0x00 (stop)
//
// Read side (lakehouse/parquet_reader.hpp): decode_struct() parses one struct into a generic tree
// (field id -> value), whatever its fields; the caller picks the ids it knows.
//
// Invariant: begin_struct / end_struct nest like parentheses; each struct starts its field-id
// deltas from 0 (a stack of the last field id per open struct). Not thread-safe; writes into a
// caller-owned string that must outlive the encoder.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dosql::lakehouse::thrift {

/// Compact protocol type ids (the 4-bit type nibble).
enum class ctype : uint8_t {
  bool_true = 1,
  bool_false = 2,
  i8 = 3,
  i16 = 4,
  i32 = 5,
  i64 = 6,
  dbl = 7,
  binary = 8,
  list = 9,
  set = 10,
  map = 11,
  structure = 12,
};

class compact_encoder {
 public:
  /// Appends to `out`; the top-level struct is open from the start (close it with end_struct()).
  explicit compact_encoder(std::string& out) : out_(out) { last_.push_back(0); }

  void field_i8(int16_t id, int8_t v);
  void field_i16(int16_t id, int16_t v);
  void field_i32(int16_t id, int32_t v);
  void field_i64(int16_t id, int64_t v);
  void field_bool(int16_t id, bool v);
  void field_binary(int16_t id, std::string_view v);
  /// Opens a struct (or union) valued field; close it with end_struct().
  void begin_struct_field(int16_t id);
  /// A struct with no fields (the marker structs of Parquet's unions: StringType, MICROS, ...).
  void empty_struct_field(int16_t id);
  /// A list field header; then write exactly `size` elements with the list_* calls.
  void begin_list_field(int16_t id, ctype elem, size_t size);
  void list_i32(int32_t v) { varint(zigzag(v)); }
  void list_i64(int64_t v) { varint(zigzag(v)); }
  void list_binary(std::string_view v);
  /// Opens one struct element of a list; close it with end_struct().
  void begin_list_struct() { last_.push_back(0); }
  /// Writes the stop byte of the innermost open struct.
  void end_struct();
  /// Open structs (1 after construction; 0 once the top level is closed).
  size_t depth() const noexcept { return last_.size(); }

 private:
  static uint64_t zigzag(int64_t v) noexcept {
    return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
  }
  void varint(uint64_t v);
  void header(int16_t id, ctype t);

  std::string& out_;
  std::vector<int16_t> last_;  // last field id written, per open struct
};

/// A decoded Thrift value: integers (and bools, 0/1) in `i`, binary in `bin`, lists/sets in
/// `list`, structs in `fields` (by field id); doubles and maps are skipped (kept empty).
struct tvalue {
  ctype type = ctype::structure;
  int64_t i = 0;
  std::string bin;
  std::vector<tvalue> list;
  std::map<int16_t, tvalue> fields;

  const tvalue* field(int16_t id) const {
    auto it = fields.find(id);
    return it == fields.end() ? nullptr : &it->second;
  }
  std::optional<int64_t> int_field(int16_t id) const {
    auto* f = field(id);
    return f ? std::optional<int64_t>(f->i) : std::nullopt;
  }
};

/// Decodes one struct from `in` starting at `pos` (advanced past it). Nothing on malformed input
/// (truncated, bad type, nesting deeper than 64).
std::optional<tvalue> decode_struct(std::string_view in, size_t& pos);

}  // namespace dosql::lakehouse::thrift
