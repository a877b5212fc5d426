// The one filter spec (issue 12): what a subscription may see, as data. Serialisable, so a slot
// persists it whole, `dosql tail` and WebSocket clients send it, and a remote subscriber can
// carry it. It holds the guide's CDCFilter (tables, operations, txn ids), the per-table column
// masks, and per-table row filters written as SQL expressions over the row's columns
// (sql_predicate: `status = 'shipped' AND total > 100`).
//
// Invariants:
//  - JSON form (camelCase, as the events): {"tables":[...],"operations":["insert",...],
//    "txnIds":[...],"columns":{"t":{"include":[...],"exclude":[...]}},"where":{"t":"expr"}};
//    empty members are left out, so {} is "everything". parse(to_json(f)) == f.
//  - Parsing refuses what it does not know (a field, an operation name, a wrong type) with
//    INVALID_ARGUMENT naming the field ("filter.operations[1]: ..."); nothing is ignored.
//  - validate() checks the spec against the tables as they are now: every `where` compiles
//    against its table's columns (an invalid expression is an error naming it at subscribe
//    time, never at the first event), and names a table that exists.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <algorithm>

#include <dosql/entry.hpp>

namespace dosql::cdc {

/// The guide's CDCFilter. Empty lists match everything.
struct filter {
  std::vector<std::string> tables;
  std::vector<op_type> operations;  ///< e.g. {op_type::insert, op_type::update}
  std::vector<std::string> txn_ids;
  /// A predicate over the raw entry (row changes and SCHEMA entries only).
  std::function<bool(const entry_view&)> predicate;

  /// True if the row change or SCHEMA entry `e` passes every criterion.
  bool matches(const entry_view& e) const;
};

/// Which columns of a table a subscription may see: only `include` (if not empty), never
/// `exclude`. Masked columns never leave the reader actor; when a mask removes any column,
/// the entry's key is withheld too (it may hold a masked primary-key column).
struct column_mask {
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool operator==(const column_mask&) const = default;
  /// True if the mask lets `column` through.
  bool visible(std::string_view column) const {
    if (!include.empty() && std::find(include.begin(), include.end(), column) == include.end()) return false;
    return std::find(exclude.begin(), exclude.end(), column) == exclude.end();
  }
};


struct filter_spec {
  std::vector<std::string> tables;          ///< empty: every table
  std::vector<op_type> operations;          ///< insert, update, delete, schema; empty: all
  std::vector<std::string> txn_ids;         ///< empty: every transaction
  std::map<std::string, column_mask> columns;  ///< per table: the columns it may see
  std::map<std::string, std::string> where;    ///< per table: a SQL expression over the row
  bool operator==(const filter_spec&) const = default;
};

/// The spec's entry filter (tables, operations, txn ids); its columns and where are applied by
/// a subscription's column masks and row filters.
inline filter to_filter(const filter_spec& f) { return filter{f.tables, f.operations, f.txn_ids, {}}; }

std::string to_json(const filter_spec& f);
/// `what` names the spec in errors ("filter", "slot 's' filter", "--where").
result<filter_spec> parse_filter_spec(std::string_view json, std::string_view what = "filter");

}  // namespace dosql::cdc
