// Reads back the Parquet files lakehouse/parquet_writer.hpp writes, for compaction
// (lakehouse/compaction.hpp): rows in, rows out, field ids and column types kept.
//
// Why hand-written: Debian 12 packages no Parquet library (no libarrow/libparquet, no pyarrow),
// and compaction only has to read our own files. The subset: a flat schema (no nesting, no
// repetition), data pages v1 (PageHeader type DATA_PAGE) with PLAIN values and RLE/bit-packed
// definition levels (bit width 1), codecs UNCOMPRESSED or ZSTD, physical types BOOLEAN, INT32,
// INT64, DOUBLE, BYTE_ARRAY. Anything else (dictionary pages, data page v2, other encodings or
// codecs, nested columns) is refused with INVALID_ARGUMENT naming the file and the column: never
// a silent misread. The footer is decoded by lakehouse/thrift_compact.hpp.
//
// Column types come back as the writer's column_type: INT64 + TIMESTAMP (or ConvertedType
// TIMESTAMP_MICROS) is timestamp, BYTE_ARRAY + STRING (or UTF8) is string, otherwise binary.
// Values: NULL as nullptr; boolean, int32, int64, timestamp as int64_t; double; string as
// std::string; binary as dosql::bytes.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <dosql/error.hpp>
#include <dosql/value.hpp>

#include "lakehouse/parquet_writer.hpp"

namespace dosql::lakehouse {

struct parquet_contents {
  schema file_schema;
  std::vector<std::vector<value>> rows;
  std::vector<std::pair<std::string, std::string>> key_value_metadata;
};

/// The whole file in memory (compaction reads small files). CORRUPTION for a damaged file,
/// INVALID_ARGUMENT for a feature outside the subset above, IO_ERROR if it cannot be read.
result<parquet_contents> read_parquet_file(const std::string& path);

}  // namespace dosql::lakehouse
