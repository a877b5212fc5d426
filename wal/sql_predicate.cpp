#include "wal/sql_predicate.hpp"

#include <sqlite3.h>

#include <map>

#include "wal/sqlite_util.hpp"

namespace dosql::cdc {

namespace {

// Only what evaluating one expression over one row needs.
int authorize(void*, int action, const char*, const char*, const char*, const char*) {
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    default:
      return SQLITE_DENY;
  }
}

struct connection_deleter {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};

}  // namespace

struct sql_predicate::impl {
  std::string table, expr;
  std::unique_ptr<sqlite3, connection_deleter> db;
  std::map<std::vector<std::string>, detail::stmt_ptr> stmts;  // per column list

  error open() {
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(":memory:", &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    db.reset(raw);
    if (rc != SQLITE_OK) return detail::sql_error(raw, "open an in-memory connection for a row filter", rc);
    sqlite3_db_config(raw, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
    sqlite3_db_config(raw, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
    sqlite3_limit(raw, SQLITE_LIMIT_LENGTH, 1 << 24);
    sqlite3_set_authorizer(raw, authorize, nullptr);
    return {};
  }

  result<sqlite3_stmt*> statement(const std::vector<std::string>& columns) {
    if (auto it = stmts.find(columns); it != stmts.end()) return it->second.get();
    // The row is a one-row subquery whose columns are the row's; the expression is the only
    // text the user supplies, and the statement must end right after it.
    std::string sql = "SELECT CASE WHEN (" + expr + "\n) THEN 1 ELSE 0 END FROM (SELECT ";
    if (columns.empty()) sql += "NULL";
    for (size_t i = 0; i < columns.size(); ++i)
      sql += (i ? ", :dosql_col_" : ":dosql_col_") + std::to_string(i + 1) + " AS " + detail::quote_ident(columns[i]);
    sql += ")";
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v3(db.get(), sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &raw,
                                &tail);
    detail::stmt_ptr st(raw);
    auto bad = [&](const std::string& why) {
      return error(ec::invalid_argument, "row filter on table '" + table + "': '" + expr + "' is not a valid SQL "
                                         "expression over its columns: " + why);
    };
    if (rc != SQLITE_OK) return bad(sqlite3_errmsg(db.get()));
    if (!st) return bad("it is empty");
    for (; tail && *tail; ++tail)
      if (*tail != ' ' && *tail != '\n' && *tail != '\t' && *tail != '\r' && *tail != ';') return bad("more than one statement");
    // Only the row's values are bound: the expression may not add parameters (?, ?N, :x, @x, $x).
    if (sqlite3_bind_parameter_count(st.get()) != static_cast<int>(columns.size()))
      return bad("it has parameters of its own");
    for (int i = 1; i <= sqlite3_bind_parameter_count(st.get()); ++i)
      if (sqlite3_bind_parameter_index(st.get(), (":dosql_col_" + std::to_string(i)).c_str()) != i)
        return bad("it has parameters of its own");
    auto* p = st.get();
    stmts.emplace(columns, std::move(st));
    return p;
  }
};

sql_predicate::sql_predicate(std::unique_ptr<impl> p) : p_(std::move(p)) {}
sql_predicate::sql_predicate(sql_predicate&&) noexcept = default;
sql_predicate& sql_predicate::operator=(sql_predicate&&) noexcept = default;
sql_predicate::~sql_predicate() = default;

sql_predicate::sql_predicate(const sql_predicate& o) {
  auto c = compile(o.p_->table, o.p_->expr, {});  // the text compiled already: this cannot fail
  p_ = std::move(c->p_);
}

sql_predicate& sql_predicate::operator=(const sql_predicate& o) {
  if (this != &o) *this = sql_predicate(o);
  return *this;
}

result<sql_predicate> sql_predicate::compile(const std::string& table, const std::string& expr,
                                             const std::vector<std::string>& columns) {
  auto p = std::make_unique<impl>();
  p->table = table;
  p->expr = expr;
  if (auto e = p->open()) return e;
  if (!columns.empty()) {
    auto st = p->statement(columns);
    if (!st) return st.err();
  }
  return sql_predicate(std::move(p));
}

result<bool> sql_predicate::matches(const row& r) {
  auto st = p_->statement(r.columns);
  if (!st) return st.err();
  sqlite3_stmt* s = *st;
  for (size_t i = 0; i < r.values.size(); ++i)
    if (auto e = detail::bind_value(s, static_cast<int>(i + 1), r.values[i], false)) return e;
  int rc = sqlite3_step(s);
  bool match = rc == SQLITE_ROW && sqlite3_column_int(s, 0) != 0;
  error err;
  if (rc != SQLITE_ROW)
    err = error(ec::invalid_argument, "row filter on table '" + p_->table + "': '" + p_->expr +
                                          "' failed: " + sqlite3_errmsg(p_->db.get()));
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (err) return err;
  return match;
}

const std::string& sql_predicate::expression() const noexcept { return p_->expr; }
const std::string& sql_predicate::table() const noexcept { return p_->table; }

}  // namespace dosql::cdc
