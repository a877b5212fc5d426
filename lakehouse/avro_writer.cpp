#include "lakehouse/avro_writer.hpp"

#include <bit>
#include <cstring>

#include "lakehouse/ids.hpp"

namespace dosql::lakehouse {

void avro_encoder::put_long(int64_t v) {
  uint64_t z = (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);  // zigzag
  while (z >= 0x80) {
    out_.push_back(static_cast<char>((z & 0x7f) | 0x80));
    z >>= 7;
  }
  out_.push_back(static_cast<char>(z));
}

void avro_encoder::put_float(float v) {
  auto u = std::bit_cast<uint32_t>(v);
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}

void avro_encoder::put_double(double v) {
  auto u = std::bit_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}

void avro_encoder::put_bytes(std::string_view v) {
  put_long(static_cast<int64_t>(v.size()));
  out_.append(v);
}

avro_container::avro_container(std::string schema_json, std::vector<std::pair<std::string, std::string>> metadata)
    : schema_(std::move(schema_json)), meta_(std::move(metadata)) {
  for (size_t i = 0; i < sync_.size(); i += 8) {
    uint64_t r = random_u64();
    std::memcpy(sync_.data() + i, &r, 8);
  }
}

void avro_container::add_record(std::string_view encoded) {
  block_.append(encoded);
  ++count_;
}

std::string avro_container::finish() const {
  avro_encoder e;
  e.put_fixed(std::string_view("Obj\x01", 4));
  // The header's metadata: a map<bytes> in one block.
  e.begin_block(static_cast<int64_t>(2 + meta_.size()));
  e.put_string("avro.schema");
  e.put_bytes(schema_);
  e.put_string("avro.codec");
  e.put_bytes("null");
  for (const auto& [k, v] : meta_) {
    e.put_string(k);
    e.put_bytes(v);
  }
  e.end_blocks();
  e.put_fixed(std::string_view(sync_.data(), sync_.size()));
  if (count_ > 0) {
    e.put_long(static_cast<int64_t>(count_));
    e.put_long(static_cast<int64_t>(block_.size()));
    e.put_fixed(block_);
    e.put_fixed(std::string_view(sync_.data(), sync_.size()));
  }
  return e.take();
}

}  // namespace dosql::lakehouse
