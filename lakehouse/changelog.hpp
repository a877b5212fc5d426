// The CDC changelog's Parquet schema and rows (issue 16): what a receiver writes per
// (source, table) into D/<namespace>/<table>_changelog/data/*.parquet.
//
// Columns, in this order:
//   _op      STRING     REQUIRED  field id 1   "INSERT" | "UPDATE" | "DELETE"
//   _lsn     INT64      REQUIRED  field id 2   the entry's LSN in its source
//   _txn_id  STRING     OPTIONAL  field id 3   (NULL when the entry has none)
//   _ts      TIMESTAMP  REQUIRED  field id 4   commit time, micros since the epoch, UTC
//   _source  STRING     REQUIRED  field id 5   the source's name
//   then the table's columns, OPTIONAL, in table order (for a DELETE: the before image; for an
//   INSERT or UPDATE: the after image).
//
// Column types come from SQLite's declared type through its affinity rules (sqlite.org
// datatype3.html, section 3.1): INTEGER affinity -> INT64, REAL -> DOUBLE, TEXT -> STRING, a
// declared type containing "BLOB" -> BINARY; no declared type and NUMERIC affinity (NUMERIC,
// DECIMAL, BOOLEAN, DATE, ...) -> STRING, because such columns hold integers, reals and text
// alike and text keeps each exactly.
//
// SQLite is dynamically typed, so a value's storage class may differ from its column's. Rule:
// nothing is lost silently. A value is stored in the column's type only when the conversion is
// exact; otherwise changelog_row() fails with INVALID_ARGUMENT naming the LSN, the column and
// the value (the caller refuses the batch; nothing is written):
//   INT64  <- REAL if integral and within int64;            TEXT, BLOB: error
//   DOUBLE <- INTEGER if |v| <= 2^53 (exactly representable); TEXT, BLOB: error
//   STRING <- INTEGER as decimal text, REAL as its shortest round-trip text; TEXT must be UTF-8;
//             BLOB: error
//   BINARY <- TEXT as its UTF-8 bytes;                        INTEGER, REAL: error
//
// Field ids (stable, deterministic): 1-5 are the CDC columns above. Without a previous schema the
// table's columns get 6, 7, ... in table order. Given the schema of the table's earlier files
// (`previous`), a column keeps its id when its name and type are unchanged; a new column, or one
// whose type changed (Iceberg: a dropped and re-added column), gets max(ids in previous) + 1,
// + 2, ... in table order; ids of dropped columns are never reused.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/error.hpp>
#include <dosql/value.hpp>

#include "lakehouse/parquet_writer.hpp"

namespace dosql::lakehouse {

/// Number of CDC columns in front of the row's columns.
inline constexpr size_t changelog_cdc_columns = 5;

/// A source table's column: its name, SQLite declared type ("" when none) and its position in
/// the table's primary key (1, 2, ...; 0: not a key column; PRAGMA table_info's `pk`).
struct source_column {
  std::string name;
  std::string declared_type;
  int pk = 0;
};

/// The Parquet column type for a SQLite declared type (see the rules above).
column_type type_for_declared(std::string_view declared_type) noexcept;

/// The changelog schema of a table with `columns`. INVALID_ARGUMENT if a column name is empty,
/// repeated or one of the CDC names (_op, _lsn, _txn_id, _ts, _source), or if `previous` is not a
/// changelog schema.
result<schema> changelog_schema(std::span<const source_column> columns, const schema* previous = nullptr);

/// One change as the changelog stores it.
struct change {
  std::string_view op;  ///< "INSERT", "UPDATE" or "DELETE"
  uint64_t lsn = 0;
  std::string_view txn_id;  ///< "" is stored as NULL
  int64_t timestamp_ms = 0;  ///< Unix milliseconds (dosql's entry timestamps)
  std::string_view source;
  const row* image = nullptr;  ///< after image (INSERT, UPDATE) or before image (DELETE)
};

/// The Parquet row for `c` under `s` (a changelog_schema()). Image columns are matched by name;
/// a schema column absent from the image is NULL. INVALID_ARGUMENT (error.lsn = c.lsn) naming the
/// LSN and the column for: an unknown op, an LSN above INT64_MAX, an image column the schema does
/// not have (the table's schema changed: build a new schema with `previous`), or a value that
/// cannot be stored without loss (rules above).
result<std::vector<value>> changelog_row(const schema& s, const change& c);

}  // namespace dosql::lakehouse
