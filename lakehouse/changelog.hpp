// The CDC changelog's Parquet schema and rows (issue 16): what a receiver writes per
// (source, table) into D/<namespace>/<table>_changelog/data/*.parquet.
//
// Columns, in this order:
//   _op      STRING     REQUIRED  field id 1   "INSERT" | "UPDATE" | "DELETE"
//   _lsn     INT64      REQUIRED  field id 2   the entry's LSN in its source
//   _txn_id  STRING     OPTIONAL  field id 3   (NULL when the entry has none)
//   _ts      TIMESTAMP  REQUIRED  field id 4   commit time, micros since the epoch, UTC
//   _source  STRING     REQUIRED  field id 5   the source's name
//   _hlc     STRING     REQUIRED  field id: see below   the change's hybrid logical clock, as
//            to_string(hlc_stamp) (<dosql/entry.hpp>, cdc::to_json's "hlc": zero-padded
//            "<physical ms>.<logical>.<node>", so that string order is HLC order)
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
// Field ids (stable, deterministic; Iceberg's schema evolution rules): 1-5 are the CDC columns
// above. Without a previous schema the table's columns get 6, 7, ... in table order. `_hlc` came
// later (issue 18) and has no fixed id: with_hlc() gives it last_column_id + 1 when the table
// first gets it (for a new table: the id after its first columns; for a table written before
// `_hlc` existed: schema evolution, an added column), and it keeps that id for life. A changelog
// schema has the CDC prefix _op.._source, then `_hlc` when it has one (changelog_prefix():
// 6 columns, or 5 for a schema written before), then the table's columns. After that a
// column keeps its id for life, whatever happens around it:
//  - an added column gets last_column_id + 1 (Iceberg's `last-column-id`: the highest id the
//    table ever assigned, so the id of a dropped column is never reused);
//  - a renamed column keeps its id: only an explicit rename (evolve_schema() with the stream's
//    alter_column event, old -> new name) says so; a column list alone cannot tell a rename from
//    a drop and an add, and changelog_schema() treats it as one;
//  - a dropped column leaves the schema (files written before keep it under its id);
//  - a type change keeps the id when it is a safe promotion (promotable(): the same Iceberg type,
//    int -> long, float -> double); anything else (string <-> long, long -> double, binary <->
//    string, ...) is INVALID_ARGUMENT "unsafe type change" naming the column and both types:
//    readers of the files written before would misread them.
// Declared types that map to the same Iceberg type (INT -> BIGINT, VARCHAR(10) -> TEXT) are no
// change. With this project's mapping every integer is a long and every real a double, so the
// promotions int -> long and float -> double cannot arise from a SQLite table; they are kept for
// schemas written by others.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/entry.hpp>
#include <dosql/error.hpp>
#include <dosql/value.hpp>

#include "lakehouse/parquet_writer.hpp"

namespace dosql::lakehouse {

/// Number of fixed-id CDC columns in front of the row's columns (_op, _lsn, _txn_id, _ts, _source).
inline constexpr size_t changelog_cdc_columns = 5;
/// The name of the HLC column, right after the fixed CDC columns when a schema has it.
inline constexpr std::string_view hlc_column = "_hlc";

/// A source table's column: its name, SQLite declared type ("" when none) and its position in
/// the table's primary key (1, 2, ...; 0: not a key column; PRAGMA table_info's `pk`).
struct source_column {
  std::string name;
  std::string declared_type;
  /// false: the declared type is not known (a column of a row image that the table, read from
  /// the database later, no longer has): an existing column keeps its type, a new one is STRING.
  bool typed = true;
  int pk = 0;  ///< (after `typed`: an aggregate {name, type, pk} does not compile, int -> bool narrows)
  bool operator==(const source_column&) const = default;
};

/// The Parquet column type for a SQLite declared type (see the rules above).
column_type type_for_declared(std::string_view declared_type) noexcept;

/// True if a column of type `from` may become `to` under the same field id (Iceberg's type
/// promotions: the same type, int -> long, float -> double).
bool promotable(column_type from, column_type to) noexcept;

/// The number of CDC columns in front of the table's columns in `s`: 6 when it has `_hlc` (at
/// index 5), else 5 (a schema written before `_hlc` existed, or one without it yet).
size_t changelog_prefix(const schema& s) noexcept;

/// `s` (a changelog schema) with `_hlc` (STRING, required) at index 5: unchanged if it has it,
/// else with field id max(last_column_id, every id in s) + 1, and last_column_id raised to it.
schema with_hlc(const schema& s, int32_t& last_column_id);

/// The field id of `_hlc` in `s`; 0 if it has none.
int32_t hlc_field_id(const schema& s) noexcept;

/// The changelog schema of a table with `columns`, matched by name against `previous` (the
/// table's current schema: a column keeps its id when its type is the same or promotable; new
/// names get new ids above max(last_column_id, every id in previous); names not in `columns`
/// are dropped). `_hlc` is kept (same id) when `previous` has it; without `previous` the schema
/// has none (with_hlc() adds it). INVALID_ARGUMENT if a column name is empty, repeated or one of
/// the CDC names (_op, _lsn, _txn_id, _ts, _source, _hlc), if `previous` is not a changelog
/// schema, or for an unsafe type change ("column 'x': unsafe type change string -> long
/// (declared 'INTEGER')").
result<schema> changelog_schema(std::span<const source_column> columns, const schema* previous = nullptr,
                                int32_t last_column_id = 0);

/// One change of a source table's columns, as the stream reports it (cdc::schema_change_event:
/// the database's capture emits add_column, drop_column and alter_column, the last for RENAME
/// COLUMN, with the old and new name and type).
struct column_change {
  std::string change_type;  ///< "add_column", "drop_column", "alter_column"; others change no column
  std::string column;       ///< the column (after a rename: its new name)
  std::string old_column;   ///< alter_column: the name before ("" or = column: not renamed)
  std::string old_type;     ///< drop_column, alter_column: the declared type before
  std::string new_type;     ///< add_column, alter_column: the declared type after
};

/// `current` after `c`, the schema evolution the issue asks for. `current` is a changelog schema
/// (its CDC columns stay in front, untouched) or any other schema of the table's columns alone
/// (the current-state table's: every column is a source column):
///  - add_column: the column is appended with id ++last_column_id (a column of that name that is
///    already there with a promotable type is left as it is: the event was applied before);
///  - drop_column: the column leaves the schema (its id is retired; absent: no change);
///  - alter_column: the column `old_column` is renamed to `column` and keeps its id; its type
///    becomes new_type's if promotable, else INVALID_ARGUMENT (unsafe type change, naming the
///    column and both types). A rename already applied (old absent, new present) is no change;
///    renaming onto another existing column is INVALID_ARGUMENT;
///  - any other change_type (tables, indexes, triggers, views): no change.
/// `last_column_id` is the table's highest id ever assigned (Iceberg's last-column-id); it is
/// raised to every id of `current` first. The current-state table reuses this for its own schema.
result<schema> evolve_schema(const schema& current, const column_change& c, int32_t& last_column_id);

/// One change as the changelog stores it.
struct change {
  std::string_view op;  ///< "INSERT", "UPDATE" or "DELETE"
  uint64_t lsn = 0;
  std::string_view txn_id;  ///< "" is stored as NULL
  int64_t timestamp_ms = 0;  ///< Unix milliseconds (dosql's entry timestamps)
  std::string_view source;
  const row* image = nullptr;  ///< after image (INSERT, UPDATE) or before image (DELETE)
  hlc_stamp hlc{};  ///< stored as to_string(hlc) when the schema has `_hlc`
};

/// The Parquet row for `c` under `s` (a changelog_schema()). Image columns are matched by name;
/// a schema column absent from the image is NULL. INVALID_ARGUMENT (error.lsn = c.lsn) naming the
/// LSN and the column for: an unknown op, an LSN above INT64_MAX, an image column the schema does
/// not have (the table's schema changed: build a new schema with `previous`), or a value that
/// cannot be stored without loss (rules above).
result<std::vector<value>> changelog_row(const schema& s, const change& c);

}  // namespace dosql::lakehouse
