// A row predicate written as a SQL expression over a row's columns (`status = 'shipped' AND
// total > 100`), evaluated by SQLite against a row image: the serialisable row filter that a
// slot can persist and a CLI or WebSocket client can send (issue 12), beside the in-process
// C++ predicates of subscribe_options::row_filters.
//
// Invariants:
//  - The expression is checked when compiled (at subscribe time), against the table's columns:
//    anything that is not one valid expression over them is INVALID_ARGUMENT naming the
//    expression, the table and SQLite's reason. It never reaches a first event.
//  - Truth is SQL's: NULL and 0 are false (CASE WHEN expr THEN 1 ELSE 0 END).
//  - The expression runs on a private in-memory connection with an authorizer that allows
//    reading the row and calling functions, nothing else: it cannot read the database, attach,
//    write or change settings, whatever its text.
//  - A row whose columns differ from the compiled set (after a schema change) is evaluated
//    against its own columns (statements are cached per column list); an expression that no
//    longer compiles against them (a dropped column) is an error for that row.
// Thread safety: none; one per consumer (copies share nothing but the text).
#pragma once

#include <memory>
#include <string>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include <dosql/filter.hpp>

#include <dosql/value.hpp>
#include <dosql/error.hpp>

namespace dosql::cdc {

class sql_predicate {
 public:
  /// Compiles `expr` for `table`, whose current columns are `columns`.
  static result<sql_predicate> compile(const std::string& table, const std::string& expr,
                                       const std::vector<std::string>& columns);
  sql_predicate(const sql_predicate& o);
  sql_predicate& operator=(const sql_predicate& o);
  sql_predicate(sql_predicate&&) noexcept;
  sql_predicate& operator=(sql_predicate&&) noexcept;
  ~sql_predicate();

  /// Whether `r` matches. INVALID_ARGUMENT if the expression does not compile against the
  /// row's columns (a schema change dropped one it names); DECODE_ERROR never.
  result<bool> matches(const row& r);
  const std::string& expression() const noexcept;
  const std::string& table() const noexcept;

 private:
  struct impl;
  explicit sql_predicate(std::unique_ptr<impl> p);
  std::unique_ptr<impl> p_;
};


/// A table's current column names, or nullopt if there is no such table.
using columns_lookup = std::function<std::optional<std::vector<std::string>>(const std::string& table)>;
/// Compiles every `where` against its table's current columns: INVALID_ARGUMENT naming the
/// table and the expression (no such table, or not a valid expression over its columns).
result<std::map<std::string, sql_predicate>> compile_where(const filter_spec& f, const columns_lookup& columns_of);

}  // namespace dosql::cdc
