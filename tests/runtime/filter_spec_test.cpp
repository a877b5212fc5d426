// The serialisable filter spec (wal/filter.hpp): its JSON both ways, errors that name
// the field, and row filters compiled against the tables at subscribe time.
#include <catch2/catch.hpp>

#include <dosql/filter.hpp>
#include "wal/sql_predicate.hpp"

using namespace dosql;
using cdc::filter_spec;

TEST_CASE("filter_spec: camelCase JSON both ways; {} is everything", "[filter]") {
  filter_spec f;
  CHECK(cdc::to_json(f) == "{}");
  CHECK(*cdc::parse_filter_spec("{}") == f);
  f.tables = {"orders", "users"};
  f.operations = {op_type::insert, op_type::del, op_type::schema};
  f.txn_ids = {"txn_7"};
  f.columns["users"].exclude = {"password"};
  f.columns["orders"].include = {"id", "status", "total"};
  f.where["orders"] = "status = 'shipped' AND total > 100";
  auto text = cdc::to_json(f);
  CHECK(text ==
        R"({"columns":{"orders":{"include":["id","status","total"]},"users":{"exclude":["password"]}},)"
        R"("operations":["insert","delete","schema"],"tables":["orders","users"],"txnIds":["txn_7"],)"
        R"("where":{"orders":"status = 'shipped' AND total > 100"}})");
  auto back = cdc::parse_filter_spec(text);
  REQUIRE(back);
  CHECK(*back == f);
}

TEST_CASE("filter_spec: anything it does not know is an error naming the field", "[filter]") {
  struct bad_case {
    const char* json;
    const char* says;
  };
  for (auto c : {bad_case{"[]", "slot 's' filter: expected a JSON object"},
                 bad_case{"{\"tables\":\"orders\"}", "slot 's' filter.tables: expected an array of strings"},
                 bad_case{"{\"tables\":[\"a\",1]}", "slot 's' filter.tables[1]: expected a string"},
                 bad_case{"{\"operations\":[\"insert\",\"upsert\"]}",
                          "slot 's' filter.operations[1]: \"upsert\" is not insert, update, delete or schema"},
                 bad_case{"{\"columns\":{\"t\":{\"hide\":[\"x\"]}}}", "slot 's' filter.columns.t.hide: unknown field"},
                 bad_case{"{\"columns\":{\"t\":[\"x\"]}}", "slot 's' filter.columns.t: expected an object"},
                 bad_case{"{\"where\":{\"t\":1}}", "slot 's' filter.where.t: expected a SQL expression as a string"},
                 bad_case{"{\"tabels\":[\"t\"]}", "slot 's' filter.tabels: unknown field"},
                 bad_case{"{\"tables\":[", "slot 's' filter: not JSON"}}) {
    INFO(c.json);
    auto r = cdc::parse_filter_spec(c.json, "slot 's' filter");
    REQUIRE_FALSE(r);
    CHECK(r.err().code() == ec::invalid_argument);
    CHECK(r.err().message().rfind(c.says, 0) == 0);
  }
}

TEST_CASE("filter_spec: row filters compile against the tables as they are, at subscribe time", "[filter]") {
  cdc::columns_lookup tables = [](const std::string& t) -> std::optional<std::vector<std::string>> {
    if (t == "orders") return std::vector<std::string>{"id", "status", "total"};
    return std::nullopt;
  };
  filter_spec f;
  f.where["orders"] = "status = 'shipped' AND total > 100";
  auto compiled = cdc::compile_where(f, tables);
  REQUIRE(compiled);
  REQUIRE(compiled->count("orders") == 1);
  CHECK(*compiled->at("orders").matches(row{{"id", "status", "total"}, {int64_t{1}, std::string("shipped"), int64_t{150}}}));
  f.where["orders"] = "stauts = 'shipped'";
  auto bad = cdc::compile_where(f, tables);
  REQUIRE_FALSE(bad);
  CHECK(bad.err().message().find("'stauts = 'shipped''") != std::string::npos);
  CHECK(bad.err().message().find("no such column: stauts") != std::string::npos);
  filter_spec g;
  g.where["ordrs"] = "1";
  auto missing = cdc::compile_where(g, tables);
  REQUIRE_FALSE(missing);
  CHECK(missing.err().message() == "row filter on table 'ordrs': '1': no such table");
}
