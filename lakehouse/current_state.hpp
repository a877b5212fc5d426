// The current-state table of a source table with a primary key (docs/LAKEHOUSE.md, "Current-state
// tables"): L/<namespace>/<table>, an Iceberg v2 table holding the table's current rows, kept up
// to date by equality deletes on the primary-key columns. This module is its pure part: the
// table's schema derived from the changelog schema, and the collapse of a flush's changes to what
// one snapshot commits. The receiver (lakehouse/receiver_store.cpp) writes and commits the files.
//
// Invariants:
// - the schema is the source table's columns with the changelog's field ids (no CDC columns);
//   the primary-key columns are REQUIRED and are the identifier fields (identifier-field-ids, in
//   key order). A table without a key column has no current-state table.
// - collapse(): every key a change touches (an INSERT's and an UPDATE's new key, an UPDATE's and
//   a DELETE's old key) gets exactly one equality delete (upsert semantics: the row may exist
//   from an earlier snapshot, whatever the change's kind), and each key whose last change leaves
//   a row gets that row, exactly once. Iceberg applies an equality delete only to data files of
//   lower sequence numbers, so the deletes and rows of one snapshot never cancel each other: the
//   snapshot's result is "previous state minus touched keys plus final rows", which is the
//   source's state after the flush's changes.
// - last writer wins by HLC (several sources, e.g. shards, writing the same keys): with `held`
//   (per key the HLC of the newest change the table already holds, deletes included), a change
//   whose HLC is below the key's newest is skipped for that key: it deletes nothing and leaves
//   no row. So the table's row of a key is the one of its highest-HLC change, whatever the order
//   in which the sources' changes arrive (a key moved between shards: DELETE on A, then INSERT on
//   B, leaves the row even if A's DELETE lands last).
// - a NULL in a key column is refused (INVALID_ARGUMENT naming the LSN and the column): identifier
//   fields are required, and SQLite allows NULL in a non-INTEGER PRIMARY KEY column.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <dosql/entry.hpp>
#include <dosql/error.hpp>
#include <dosql/value.hpp>

#include "lakehouse/changelog.hpp"
#include "lakehouse/parquet_writer.hpp"

namespace dosql::lakehouse {

struct current_shape {
  schema table_schema;             ///< the table's columns, changelog field ids, key columns REQUIRED
  std::vector<int32_t> key_ids;    ///< identifier-field-ids, in key order
  std::vector<size_t> key_index;   ///< per key column (key order): its index in table_schema
  /// The equality delete files' schema: the key columns (as in table_schema), in key order.
  schema key_schema() const;
};

/// The current-state shape of a table whose changelog schema is `changelog` (a changelog_schema()
/// of `columns`); nullopt if no column is a primary-key column.
std::optional<current_shape> current_shape_of(const schema& changelog, std::span<const source_column> columns);

/// The primary key's field ids in `changelog` (a changelog_schema() of `columns`), in key order:
/// the columns with pk > 0, matched by name; empty if there is none or one is missing.
std::vector<int32_t> key_ids_of(const schema& changelog, std::span<const source_column> columns);

/// The current-state shape of a table whose changelog schema is `changelog` and whose key is the
/// fields `key_ids` (key order); nullopt if `key_ids` is empty or a key field is not in it.
std::optional<current_shape> current_shape_for(const schema& changelog, std::span<const int32_t> key_ids);

/// `row` (a table row of schema `from`) as a row of schema `to`, column by field id: a field
/// `from` lacks is NULL (an added column), one `to` lacks is dropped (a dropped column).
std::vector<value> project_row(const schema& from, const schema& to, const std::vector<value>& row);

/// One change of the current state: the key it removes (UPDATE, DELETE) and the row it leaves
/// (INSERT, UPDATE), both in the shape's column order (key: key order).
struct state_change {
  uint64_t lsn = 0;
  hlc_stamp hlc{};  ///< the change's hybrid logical clock (last-writer-wins across sources)
  std::optional<std::vector<value>> old_key;
  std::optional<std::vector<value>> row;
};

/// The table's row from a changelog_row() of the changelog schema `changelog` (drops the CDC
/// columns, `_hlc` included when the schema has it).
std::vector<value> state_row(const schema& changelog, std::vector<value> changelog_row);
/// The key of a table row; INVALID_ARGUMENT naming `lsn` and the column if a key value is NULL.
result<std::vector<value>> key_of(const current_shape& s, const std::vector<value>& row, uint64_t lsn);

/// A key as one string (each value's kind and length-prefixed bytes): equal keys, equal strings.
std::string key_text(const std::vector<value>& key);

/// Per key (key_text()) the HLC of the newest change a current-state table holds for it.
using key_clocks = std::map<std::string, hlc_stamp>;

struct collapsed {
  std::vector<std::vector<value>> deletes;  ///< one per key a winning change touches (key_schema() order)
  std::vector<std::vector<value>> rows;     ///< the final row of each such key that has one
  key_clocks clocks;                        ///< per key written: the HLC of its winning change
};
/// Collapses `changes` (in LSN order) to the winning change per key: the last one, unless a
/// change with a higher HLC came before it (or, with `held`, is in the table already; see the
/// invariants above).
collapsed collapse(const current_shape& s, std::span<const state_change> changes, const key_clocks* held = nullptr);

}  // namespace dosql::lakehouse
