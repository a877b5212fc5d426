// Row filters written as SQL expressions (wal/sql_predicate.hpp): compile-time errors that
// name the expression, SQL truth, schema changes, and expressions that try to do more than read
// the row.
#include <catch2/catch.hpp>

#include "wal/sql_predicate.hpp"

using namespace dosql;
using cdc::sql_predicate;

namespace {

row make_row(std::vector<std::string> cols, std::vector<value> vals) { return row{std::move(cols), std::move(vals)}; }

const std::vector<std::string> order_cols{"id", "status", "total", "note"};

row order(int64_t id, value status, value total, value note = nullptr) {
  return make_row(order_cols, {id, std::move(status), std::move(total), std::move(note)});
}

}  // namespace

TEST_CASE("sql_predicate: SQL truth over the row's columns", "[predicate]") {
  auto p = sql_predicate::compile("orders", "status = 'shipped' AND total > 100", order_cols);
  REQUIRE(p);
  CHECK(p->expression() == "status = 'shipped' AND total > 100");
  CHECK(p->table() == "orders");
  CHECK(*p->matches(order(1, std::string("shipped"), int64_t{150})));
  CHECK_FALSE(*p->matches(order(2, std::string("shipped"), int64_t{50})));
  CHECK_FALSE(*p->matches(order(3, std::string("pending"), 150.5)));
  CHECK_FALSE(*p->matches(order(4, nullptr, int64_t{150})));          // NULL is not true
  CHECK(*p->matches(order(5, std::string("shipped"), 100.25)));        // REAL compares as a number
  auto truthy = sql_predicate::compile("orders", "total", order_cols);
  REQUIRE(truthy);
  CHECK(*truthy->matches(order(1, nullptr, int64_t{2})));
  CHECK_FALSE(*truthy->matches(order(1, nullptr, int64_t{0})));
  CHECK_FALSE(*truthy->matches(order(1, nullptr, nullptr)));
  auto fn = sql_predicate::compile("orders", "length(note) > 3 AND id IN (1, 2, 3) -- a trailing comment", order_cols);
  REQUIRE(fn);
  CHECK(*fn->matches(order(2, nullptr, nullptr, std::string("long note"))));
  CHECK_FALSE(*fn->matches(order(4, nullptr, nullptr, std::string("long note"))));
  CHECK_FALSE(*fn->matches(order(2, nullptr, nullptr, std::string("abc"))));
  auto blob = sql_predicate::compile("orders", "note = x'0001'", order_cols);
  REQUIRE(blob);
  CHECK(*blob->matches(order(1, nullptr, nullptr, bytes{0, 1})));
  CHECK_FALSE(*blob->matches(order(1, nullptr, nullptr, std::string("\x00\x01", 2))));  // TEXT is not a BLOB
  // Column names that need quoting.
  auto odd = sql_predicate::compile("t", "\"weird col\" = 1 AND \"a\"\"b\" IS NULL", {"weird col", "a\"b"});
  REQUIRE(odd);
  CHECK(*odd->matches(make_row({"weird col", "a\"b"}, {int64_t{1}, nullptr})));
  CHECK_FALSE(*odd->matches(make_row({"weird col", "a\"b"}, {int64_t{2}, nullptr})));
  // Copies evaluate on their own.
  sql_predicate copy = *p;
  CHECK(*copy.matches(order(1, std::string("shipped"), int64_t{150})));
  p = sql_predicate::compile("orders", "0", order_cols);
  CHECK(*copy.matches(order(1, std::string("shipped"), int64_t{150})));
}

TEST_CASE("sql_predicate: an invalid expression is an error at compile time naming it", "[predicate]") {
  struct bad_case {
    const char* expr;
    const char* why;
  };
  for (auto c : {bad_case{"stauts = 'x'", "no such column: stauts"}, bad_case{"total >", "syntax error"},
                 bad_case{"", "syntax error"}, bad_case{"1); DELETE FROM orders; --", ""},
                 bad_case{"total > ?", "parameters"}, bad_case{"total > :limit", "parameters"},
                 bad_case{"total > ?2", "parameters"}, bad_case{"total > @x", "parameters"},
                 bad_case{"1) THEN 1 ELSE 0 END FROM (SELECT 1); SELECT (1", "more than one statement"}}) {
    INFO(c.expr);
    auto p = sql_predicate::compile("orders", c.expr, order_cols);
    REQUIRE_FALSE(p);
    CHECK(p.err().code() == ec::invalid_argument);
    CHECK(p.err().message().find("'" + std::string(c.expr) + "'") != std::string::npos);
    CHECK(p.err().message().find("table 'orders'") != std::string::npos);
    CHECK(p.err().message().find(c.why) != std::string::npos);
  }
}

TEST_CASE("sql_predicate: the expression can only read the row", "[predicate]") {
  // No database to read, no PRAGMA (table-valued ones included), no extension loading.
  for (auto expr : {"(SELECT count(*) FROM orders) > 0", "EXISTS (SELECT 1 FROM pragma_table_list)",
                    "EXISTS (SELECT * FROM pragma_database_list)", "load_extension('x') IS NULL"}) {
    INFO(expr);
    auto p = sql_predicate::compile("orders", expr, order_cols);
    if (p) {
      auto m = p->matches(order(1, std::string("shipped"), int64_t{150}));
      REQUIRE_FALSE(m);  // load_extension compiles, and fails when called
      CHECK(m.err().message().find("not authorized") != std::string::npos);
    } else {
      CHECK(p.err().code() == ec::invalid_argument);
      CHECK((p.err().message().find("not authorized") != std::string::npos ||
             p.err().message().find("no such table") != std::string::npos));
    }
  }
}

TEST_CASE("sql_predicate: rows of another schema version are evaluated against their own columns", "[predicate]") {
  auto p = sql_predicate::compile("orders", "total > 100", order_cols);
  REQUIRE(p);
  // A column was added: the expression still compiles against the new column list.
  CHECK(*p->matches(make_row({"id", "status", "total", "note", "added"},
                             {int64_t{1}, nullptr, int64_t{500}, nullptr, int64_t{7}})));
  // The column it names was dropped: an error naming the expression, for that row.
  auto m = p->matches(make_row({"id", "status"}, {int64_t{1}, nullptr}));
  REQUIRE_FALSE(m);
  CHECK(m.err().message().find("'total > 100'") != std::string::npos);
  CHECK(m.err().message().find("no such column: total") != std::string::npos);
  // And back to the old shape: still fine.
  CHECK_FALSE(*p->matches(order(1, nullptr, int64_t{5})));
}
