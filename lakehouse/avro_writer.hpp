// A minimal Apache Avro object-container-file writer (Avro 1.11 spec, "Object Container Files"
// and "Binary Encoding"), for Iceberg manifests and manifest lists (lakehouse/iceberg_manifest.hpp).
//
// Why hand-written: Debian's Avro C (libavro 1.11) parses a schema with Iceberg's `field-id`
// attributes but drops them (and `logicalType`, `default`, `doc`) from the schema it writes into
// the file header, and it has no API for extra header metadata (Iceberg needs `schema`,
// `partition-spec`, `partition-spec-id`, `format-version`, `content`). Readers such as Spark and
// PyIceberg then fail with "missing field-id". Nothing else packaged writes Avro from C++.
//
// Two parts:
// - avro_encoder: appends values in Avro's binary encoding to a byte string (zigzag varints for
//   int/long, little-endian float/double, length-prefixed bytes/string, a union as its branch
//   index then the value, arrays and maps as one counted block then 0). A record is its fields'
//   encodings concatenated in schema order: the caller writes them in that order.
// - avro_container: the file: magic "Obj\x01", the header metadata map (avro.schema = the schema
//   JSON copied byte for byte, so every attribute such as field-id survives; avro.codec = null;
//   then the caller's keys), a 16-byte random sync marker, then blocks of records (count, byte
//   size, the records, the sync marker).
// Invariants: the encoder does not check values against the schema (the caller owns that; the
// tests read every file back with avrocat and python3-avro); a container with zero records is
// valid (header only).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dosql::lakehouse {

class avro_encoder {
 public:
  void put_null() {}
  void put_boolean(bool v) { out_.push_back(v ? '\1' : '\0'); }
  void put_int(int32_t v) { put_long(v); }
  void put_long(int64_t v);
  void put_float(float v);
  void put_double(double v);
  void put_bytes(std::string_view v);
  void put_string(std::string_view v) { put_bytes(v); }
  void put_fixed(std::string_view v) { out_.append(v); }
  /// A union's branch index (0-based, in the schema's order); the value follows.
  void put_union_index(int64_t i) { put_long(i); }
  /// An array or map of n items: call before the items (when n > 0), then end_blocks() after.
  void begin_block(int64_t n) {
    if (n > 0) put_long(n);
  }
  void end_blocks() { put_long(0); }

  const std::string& data() const noexcept { return out_; }
  std::string take() { return std::move(out_); }
  void clear() { out_.clear(); }

 private:
  std::string out_;
};

class avro_container {
 public:
  /// `schema_json` is written to avro.schema verbatim; `metadata` are further header keys.
  avro_container(std::string schema_json, std::vector<std::pair<std::string, std::string>> metadata = {});
  /// Appends one record (its binary encoding, from an avro_encoder).
  void add_record(std::string_view encoded);
  /// The whole file. The records go in one block (none: no block).
  std::string finish() const;
  size_t records() const noexcept { return count_; }

 private:
  std::string schema_;
  std::vector<std::pair<std::string, std::string>> meta_;
  std::array<char, 16> sync_{};
  std::string block_;
  size_t count_ = 0;
};

}  // namespace dosql::lakehouse
