// A small Apache Parquet file writer for the lakehouse changelog files (issue 16).
//
// Why hand-written: Debian 12 packages no Parquet library (no libarrow/libparquet, no
// pyarrow), and the subset a flat CDC changelog needs is small. The footer is Thrift compact
// protocol, encoded by lakehouse/thrift_compact.hpp (libthrift is not needed). Format per
// apache/parquet-format (parquet.thrift, Encodings.md); outside readers (DuckDB, hyparquet) check
// every file in tests/lakehouse/.
//
// File layout:
//   "PAR1"
//   row group 1: column chunk 1 .. column chunk N      (each: one or more data pages v1)
//   ...
//   FileMetaData (Thrift compact)  footer length (u32, little endian)  "PAR1"
// A data page v1 is PageHeader (Thrift compact) + body; the body (compressed as a whole with the
// file's codec) is, for an OPTIONAL column, u32-LE length + definition levels (RLE/bit-packed
// hybrid, bit width 1) then the PLAIN values of the non-NULL rows; for a REQUIRED column only the
// PLAIN values. Encoding PLAIN only (no dictionary). Flat schema only (no nesting, no repetition).
//
// Invariants of every file written:
// - every SchemaElement carries a field_id (the caller's; unique, > 0); strings are BYTE_ARRAY +
//   LogicalType STRING + ConvertedType UTF8 (and must be valid UTF-8); timestamps are INT64 +
//   TIMESTAMP(isAdjustedToUTC=true, MICROS) (+ ConvertedType TIMESTAMP_MICROS).
// - every column chunk has Statistics with null_count and, when it has a non-NULL value,
//   min_value/max_value (PLAIN, byte arrays without length prefix, compared as unsigned bytes;
//   DOUBLE: nan_count always; a chunk holding a NaN has no min/max (readers that ignore
//   nan_count, DuckDB among them, would prune NaN rows), a zero min is written -0.0, a zero max +0.0;
//   byte arrays longer than max_stat_bytes leave min/max out rather than truncate them).
//   FileMetaData.column_orders is TypeDefinedOrder for every column, so readers trust min/max.
// - a NULL in a REQUIRED column, a value of the wrong kind or an out-of-range integer is refused
//   by append() with INVALID_ARGUMENT naming the column and the row; the row is not added and
//   the writer stays usable.
// - durability: rows go to "<path>.tmp"; finish() writes the footer, fdatasyncs the file, renames
//   it to <path> (atomically replacing a file there) and fsyncs the directory, all through
//   wal/file.hpp (wal::io(), the seam the fault tests inject at). Before finish() returns
//   success, <path> is absent or its previous version; a crash leaves at most "<path>.tmp"
//   (never a name ending in .parquet), which the caller may delete. A writer destroyed or
//   failed before finish() removes its temporary file.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <dosql/error.hpp>
#include <dosql/value.hpp>

namespace dosql::lakehouse {

/// A column's type as the writer knows it: physical type + logical annotation.
enum class column_type : uint8_t {
  boolean,    ///< BOOLEAN; value: int64_t 0 or 1
  int32,      ///< INT32; value: int64_t within int32
  int64,      ///< INT64; value: int64_t
  float64,    ///< DOUBLE; value: double
  string,     ///< BYTE_ARRAY + STRING (UTF8); value: std::string, valid UTF-8
  binary,     ///< BYTE_ARRAY; value: dosql::bytes (or std::string, taken as bytes)
  timestamp,  ///< INT64 + TIMESTAMP(UTC, MICROS); value: int64_t microseconds since the epoch
};

/// "BOOLEAN", "INT32", "INT64", "DOUBLE", "STRING", "BINARY", "TIMESTAMP".
std::string_view to_string(column_type t) noexcept;

struct column_spec {
  std::string name;
  column_type type = column_type::int64;
  bool optional = true;  ///< OPTIONAL (NULLs allowed) or REQUIRED
  int32_t field_id = 0;  ///< > 0, unique in the schema (the Iceberg field id)
  bool operator==(const column_spec&) const = default;
};

/// A flat schema: the columns in file order.
struct schema {
  std::vector<column_spec> columns;
  bool operator==(const schema&) const = default;
};

/// INVALID_ARGUMENT if the schema is empty, a name is empty or repeated, or a field id is <= 0 or
/// repeated.
error validate(const schema& s);

enum class compression_codec : uint8_t { uncompressed = 0, zstd = 6 };  // parquet CompressionCodec values

struct writer_options {
  compression_codec compression = compression_codec::zstd;
  int zstd_level = 3;
  /// A row group is written out once it holds this many rows (or max_row_group_bytes).
  uint64_t max_rows_per_row_group = 1'000'000;
  /// ... or once its encoded, uncompressed values reach this many bytes (bounds memory).
  uint64_t max_row_group_bytes = 128ull << 20;
  /// A data page is closed once its PLAIN values reach this many bytes.
  uint64_t target_page_bytes = 1ull << 20;
  /// ... or once it holds this many rows (NULLs included).
  uint64_t max_page_rows = 20'000;
  /// Byte-array min/max longer than this are left out of the statistics (null_count stays).
  uint64_t max_stat_bytes = 4096;
  /// FileMetaData.created_by ("<app> version <v> (build <b>)" as readers parse it).
  std::string created_by = "dosql version 0.1.0 (build lakehouse)";
  /// FileMetaData.key_value_metadata, written as given (e.g. source, first/last LSN).
  std::vector<std::pair<std::string, std::string>> key_value_metadata;
};

/// One column's statistics over a whole file, for Iceberg's data_file metrics: merged from the
/// column chunks' Statistics as they are written (nothing is computed twice). `lower`/`upper`
/// are the PLAIN min/max, which for these types is Iceberg's single-value serialization too
/// (little-endian int/long/double/micros, a byte for booleans, the bytes of strings and
/// binaries); absent when every value is NULL, a DOUBLE holds a NaN, or a byte array was longer
/// than max_stat_bytes.
struct column_metrics {
  int32_t field_id = 0;
  int64_t values = 0;  ///< rows, NULLs included
  int64_t nulls = 0;
  std::optional<int64_t> nans;  ///< DOUBLE columns only
  int64_t bytes = 0;            ///< the column chunks' compressed bytes (page headers included)
  std::optional<std::string> lower, upper;
};

/// Writes one Parquet file, streaming: rows are buffered per column until a row group is full,
/// then encoded, compressed and written to "<path>.tmp"; finish() makes the file durable and
/// visible under <path>. Memory is bounded by one row group. Single-owner, not thread-safe.
class parquet_writer {
 public:
  /// Validates the schema and options and creates "<path>.tmp" (truncating a leftover one).
  /// The directory must exist.
  static result<parquet_writer> create(std::string path, schema s, writer_options o = {});

  parquet_writer(parquet_writer&&) noexcept;
  parquet_writer& operator=(parquet_writer&&) noexcept;
  ~parquet_writer();  // not finished: removes "<path>.tmp"

  /// Appends one row (one value per column, in schema order). INVALID_ARGUMENT (the row is not
  /// added, the writer stays usable) if it has the wrong number of values, a NULL in a REQUIRED
  /// column, a value of the wrong kind, an INT32 or BOOLEAN out of range or a STRING that is
  /// not UTF-8: the message names the column and the row index (0-based, in this file). An
  /// IO_ERROR while writing a full row group fails the writer (every later call returns it).
  error append(std::span<const value> row);
  error append(const std::vector<value>& row) { return append(std::span<const value>(row)); }

  /// Writes the last row group and the footer, fdatasyncs, renames to <path>, fsyncs the
  /// directory. A file with zero rows is valid Parquet (no row groups). After finish() (success
  /// or not) the writer accepts nothing more.
  error finish();

  /// Rows appended so far.
  uint64_t rows() const noexcept;
  /// Bytes written to the file so far (after finish(): its size).
  uint64_t bytes_written() const noexcept;
  const std::string& path() const noexcept;
  const schema& file_schema() const noexcept;
  /// Per column (schema order), over the whole file: complete once finish() succeeded.
  const std::vector<column_metrics>& metrics() const noexcept;

 private:
  struct impl;
  explicit parquet_writer(std::unique_ptr<impl> p);
  std::unique_ptr<impl> p_;
};

/// One call: create, append every row, finish. The first bad row's error is returned (nothing is
/// written then: no file at <path>, no temporary file).
/// `metrics`, if given, receives parquet_writer::metrics() of the file.
error write_parquet_file(const std::string& path, const schema& s, std::span<const std::vector<value>> rows,
                         const writer_options& o = {}, std::vector<column_metrics>* metrics = nullptr);

/// True if `s` is well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF).
bool valid_utf8(std::string_view s) noexcept;

}  // namespace dosql::lakehouse
