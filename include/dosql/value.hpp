// SQL values and rows as dosql hands them to users: query results, statement parameters and
// decoded CDC row images. Also the msgpack encoding of row images and keys stored in the WAL
// (see wal/FORMAT.md, "Row images").
//
// Invariant: a row image round-trips exactly: every column name, in table order, with its
// value's storage class (NULL, INTEGER, REAL, TEXT, BLOB) and bits.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <dosql/entry.hpp>
#include <dosql/error.hpp>

namespace dosql {

/// NULL, INTEGER, REAL, TEXT, BLOB.
using value = std::variant<std::nullptr_t, int64_t, double, std::string, bytes>;

inline bool is_null(const value& v) noexcept { return std::holds_alternative<std::nullptr_t>(v); }
/// SQL-ish text for humans: NULL, 42, 1.5, abc, x'0102'.
std::string to_string(const value& v);

/// A row: column names with values, in table order.
struct row {
  std::vector<std::string> columns;
  std::vector<value> values;

  size_t size() const noexcept { return values.size(); }
  /// The value of `column`, or nullptr if the row has no such column.
  const value* find(std::string_view column) const noexcept;
  bool operator==(const row&) const = default;
};

namespace codec {

/// Appends the msgpack map {column: value, ...} (in the given order) to `out`.
void encode_row(const row& r, std::string& out);
/// Decodes a row image. DECODE_ERROR if `image` is not a msgpack map of name -> scalar.
result<row> decode_row(std::string_view image);
/// Appends the msgpack array [v1, v2, ...] (a primary key, or [rowid]) to `out`.
void encode_key(const std::vector<value>& key, std::string& out);
result<std::vector<value>> decode_key(std::string_view key);

}  // namespace codec
}  // namespace dosql
