// (Internal) What a DDL statement did to the schema, as a SCHEMA entry says it: a pure
// function of the statement's authorizer code and the catalog before and after it, so that
// every case is unit-tested without a database (tests/runtime/ddl_test.cpp).
//
// Invariants: create/drop of a table, index, trigger or view names its kind; ALTER TABLE is
// exactly one of rename_table (the table that appeared), add_column (the new last column),
// drop_column (the column that is gone), alter_column (a renamed column: old and new name and
// type). The fields are those of the guide's SchemaChangeEvent (cdc::schema_change_event).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <dosql/value.hpp>

namespace dosql::detail {

/// A table's columns in order: (name, declared type).
using column_list = std::vector<std::pair<std::string, std::string>>;

struct ddl_statement {
  int code = 0;            ///< SQLite authorizer code (SQLITE_CREATE_TABLE, SQLITE_ALTER_TABLE, ...)
  std::string table;       ///< the table the authorizer named
  std::string object;      ///< the index, trigger or view it named (= table for tables)
};

struct schema_change {
  std::string change_type;  ///< create_table, drop_table, rename_table, add_column, ...
  std::string table;        ///< the table it is about (after a rename: the new name)
  std::optional<std::string> old_table, object, column, old_column, old_type, new_type;
};

/// `tables_before` / `tables_after`: every table's name; `before` / `after`: the statement's
/// table's columns (after a rename, `after` is unused).
schema_change classify_ddl(const ddl_statement& s, const std::vector<std::string>& tables_before,
                           const std::vector<std::string>& tables_after, const column_list& before,
                           const column_list& after);

/// The SCHEMA entry's row image: change_type, table, then the fields that apply.
row schema_change_row(const schema_change& c);

}  // namespace dosql::detail
