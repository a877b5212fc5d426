// The changelog schema and rows (lakehouse/changelog.hpp): types from SQLite declared types,
// stable field ids, and storage-class mismatches stored exactly or refused naming LSN and column.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <tuple>

#include "lakehouse/changelog.hpp"
#include "lakehouse/current_state.hpp"

using namespace dosql;
using namespace dosql::lakehouse;

namespace {

std::vector<std::pair<std::string, int32_t>> ids(const schema& s) {
  std::vector<std::pair<std::string, int32_t>> out;
  for (const auto& c : s.columns) out.emplace_back(c.name, c.field_id);
  return out;
}

result<std::vector<value>> one(const schema& s, std::vector<std::string> cols, std::vector<value> vals,
                               uint64_t lsn = 42, std::string_view op = "INSERT") {
  static row img;
  img.columns = std::move(cols);
  img.values = std::move(vals);
  return changelog_row(s, change{op, lsn, "t1", 1700000000123, "src", &img});
}

}  // namespace

TEST_CASE("changelog: SQLite declared types map by affinity", "[lakehouse][changelog]") {
  CHECK(type_for_declared("INTEGER") == column_type::int64);
  CHECK(type_for_declared("bigint") == column_type::int64);
  CHECK(type_for_declared("UNSIGNED BIG INT") == column_type::int64);
  CHECK(type_for_declared("VARCHAR(20)") == column_type::string);
  CHECK(type_for_declared("text") == column_type::string);
  CHECK(type_for_declared("CLOB") == column_type::string);
  CHECK(type_for_declared("BLOB") == column_type::binary);
  CHECK(type_for_declared("REAL") == column_type::float64);
  CHECK(type_for_declared("DOUBLE PRECISION") == column_type::float64);
  CHECK(type_for_declared("FLOAT") == column_type::float64);
  CHECK(type_for_declared("") == column_type::string);           // no type: anything, kept as text
  CHECK(type_for_declared("NUMERIC") == column_type::string);    // NUMERIC affinity: exact as text
  CHECK(type_for_declared("DECIMAL(10,5)") == column_type::string);
  CHECK(type_for_declared("DATETIME") == column_type::string);
}

TEST_CASE("changelog: CDC columns first, field ids deterministic and stable across schema changes", "[lakehouse][changelog]") {
  std::vector<source_column> v1{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "REAL"}};
  auto s1 = changelog_schema(v1);
  REQUIRE(s1);
  using P = std::pair<std::string, int32_t>;
  CHECK(ids(*s1) == std::vector<P>{{"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5},
                                   {"id", 6}, {"name", 7}, {"price", 8}});
  CHECK(s1->columns[0].type == column_type::string);
  CHECK_FALSE(s1->columns[0].optional);
  CHECK(s1->columns[1].type == column_type::int64);
  CHECK(s1->columns[2].optional);
  CHECK(s1->columns[3].type == column_type::timestamp);
  CHECK(s1->columns[5].optional);
  auto again = changelog_schema(v1);
  REQUIRE(again);
  CHECK(*again == *s1);

  // name dropped, note added: id and kept columns keep their ids; no reuse.
  std::vector<source_column> v2{{"id", "INTEGER"}, {"price", "REAL"}, {"note", "TEXT"}};
  auto s2 = changelog_schema(v2, &*s1);
  REQUIRE(s2);
  CHECK(ids(*s2) == std::vector<P>{{"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5},
                                   {"id", 6}, {"price", 8}, {"note", 9}});
  std::vector<source_column> v3{{"id", "INTEGER"}, {"price", "REAL"}, {"note", "TEXT"}, {"name", "TEXT"}};
  auto s3 = changelog_schema(v3, &*s2);
  REQUIRE(s3);
  CHECK(s3->columns.back().field_id == 10);  // a re-added column is a new column
  // The table's last-column-id counts too: the id of a dropped last column is never reused.
  auto s4 = changelog_schema(std::vector<source_column>{{"id", "INTEGER"}, {"x", "TEXT"}}, &*s1, 20);
  REQUIRE(s4);
  CHECK(s4->columns.back().field_id == 21);
  // A declared type change that maps to the same Iceberg type is no change; another is refused.
  auto same = changelog_schema(std::vector<source_column>{{"id", "BIGINT"}, {"name", "VARCHAR(20)"}, {"price", "DOUBLE"}}, &*s1);
  REQUIRE(same);
  CHECK(*same == *s1);
  auto bad = changelog_schema(std::vector<source_column>{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "TEXT"}}, &*s1);
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.err().message(), Catch::Contains("column 'price': unsafe type change double -> string (declared 'TEXT')"));
  // An untyped column (the streamer does not know its type) keeps the one it has.
  auto untyped = changelog_schema(std::vector<source_column>{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "", false}}, &*s1);
  REQUIRE(untyped);
  CHECK(*untyped == *s1);

  CHECK_THAT(changelog_schema(std::vector<source_column>{{"_lsn", "INTEGER"}}).err().message(),
             Catch::Contains("'_lsn' clashes with a CDC column"));
  CHECK_THAT(changelog_schema(std::vector<source_column>{{"a", ""}, {"a", "TEXT"}}).err().message(),
             Catch::Contains("'a' appears twice"));
  schema not_changelog{{{"x", column_type::int64, true, 1}}};
  CHECK_FALSE(changelog_schema(v1, &not_changelog));
}

TEST_CASE("changelog: rows carry the CDC columns and the image by name", "[lakehouse][changelog]") {
  std::vector<source_column> cols{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "REAL"}, {"photo", "BLOB"}};
  auto s = changelog_schema(cols);
  REQUIRE(s);
  auto r = one(*s, {"name", "id"}, {std::string("x"), int64_t{7}}, 42, "DELETE");
  REQUIRE(r);
  CHECK((*r)[0] == value(std::string("DELETE")));
  CHECK((*r)[1] == value(int64_t{42}));
  CHECK((*r)[2] == value(std::string("t1")));
  CHECK((*r)[3] == value(int64_t{1700000000123000}));
  CHECK((*r)[4] == value(std::string("src")));
  CHECK((*r)[5] == value(int64_t{7}));
  CHECK((*r)[6] == value(std::string("x")));
  CHECK(is_null((*r)[7]));  // not in the image
  CHECK(is_null((*r)[8]));

  row img;
  auto no_txn = changelog_row(*s, change{"INSERT", 1, "", 0, "src", &img});
  REQUIRE(no_txn);
  CHECK(is_null((*no_txn)[2]));

  CHECK_THAT(one(*s, {"id"}, {int64_t{1}}, 5, "BEGIN").err().message(), Catch::Contains("lsn 5") && Catch::Contains("'BEGIN'"));
  auto unknown = one(*s, {"idx"}, {int64_t{1}}, 77);
  CHECK(unknown.err().lsn == 77);
  CHECK_THAT(unknown.err().message(), Catch::Contains("lsn 77") && Catch::Contains("'idx' is not in the changelog schema"));
  CHECK_THAT(changelog_row(*s, change{"INSERT", uint64_t{1} << 63, "", 0, "src", &img}).err().message(),
             Catch::Contains("above INT64_MAX"));
}

TEST_CASE("changelog: a value of another storage class is stored exactly, or refused naming LSN and column", "[lakehouse][changelog]") {
  std::vector<source_column> cols{{"i", "INTEGER"}, {"r", "REAL"}, {"t", "TEXT"}, {"b", "BLOB"}};
  auto s = changelog_schema(cols);
  REQUIRE(s);
  auto at = [&](const char* col, value v) { return one(*s, {col}, {std::move(v)}, 9); };
  auto idx = [&](const char* col) {
    for (size_t k = 0; k < s->columns.size(); ++k)
      if (s->columns[k].name == col) return k;
    return size_t{0};
  };
  auto stored = [&](const char* col, value v) {
    auto r = at(col, std::move(v));
    INFO(col);
    REQUIRE(r);
    return (*r)[idx(col)];
  };
  auto refused = [&](const char* col, value v) {
    auto r = at(col, std::move(v));
    REQUIRE_FALSE(r);
    CHECK(r.err().code() == ec::invalid_argument);
    CHECK(r.err().lsn == 9);
    CHECK_THAT(r.err().message(), Catch::Contains("lsn 9") && Catch::Contains(std::string("column '") + col + "'"));
    return r.err().message();
  };
  // INT64
  CHECK(stored("i", 3.0) == value(int64_t{3}));
  CHECK(stored("i", -9223372036854775808.0) == value(std::numeric_limits<int64_t>::min()));
  refused("i", 3.5);
  refused("i", 9223372036854775808.0);
  CHECK_THAT(refused("i", std::string("abc")), Catch::Contains("TEXT 'abc'"));
  refused("i", bytes{1, 2});
  // DOUBLE
  CHECK(stored("r", int64_t{1} << 53) == value(9007199254740992.0));
  CHECK(stored("r", int64_t{-5}) == value(-5.0));
  CHECK_THAT(refused("r", (int64_t{1} << 53) + 1), Catch::Contains("2^53"));
  refused("r", std::string("1.5"));
  // STRING
  CHECK(stored("t", int64_t{-12}) == value(std::string("-12")));
  CHECK(stored("t", 0.1) == value(std::string("0.1")));
  CHECK(stored("t", 1e300) == value(std::string("1e+300")));
  refused("t", bytes{0x61});
  CHECK_THAT(refused("t", std::string("\xc3\x28")), Catch::Contains("not valid UTF-8"));
  // BINARY
  CHECK(stored("b", std::string("hi")) == value(bytes{'h', 'i'}));
  refused("b", int64_t{1});
  refused("b", 1.5);
  // NULL is NULL everywhere
  CHECK(is_null(stored("i", nullptr)));
}

TEST_CASE("changelog: schema evolution from schema-change events keeps field ids (Iceberg's rules)", "[lakehouse][changelog]") {
  using P = std::pair<std::string, int32_t>;
  auto s1 = changelog_schema(std::vector<source_column>{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "REAL"}});
  REQUIRE(s1);
  int32_t last = 0;
  // ADD COLUMN: a new id above every id; the event applied again is no change.
  auto s2 = evolve_schema(*s1, {"add_column", "note", "", "", "TEXT"}, last);
  REQUIRE(s2);
  CHECK(last == 9);
  CHECK(ids(*s2).back() == P{"note", 9});
  CHECK(s2->columns.back().type == column_type::string);
  auto again = evolve_schema(*s2, {"add_column", "note", "", "", "VARCHAR(5)"}, last);
  REQUIRE(again);
  CHECK(*again == *s2);
  CHECK(last == 9);
  // RENAME COLUMN (alter_column old -> new): same id, same place; applied again: no change.
  auto s3 = evolve_schema(*s2, {"alter_column", "title", "name", "TEXT", "TEXT"}, last);
  REQUIRE(s3);
  CHECK(ids(*s3) == std::vector<P>{{"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5},
                                   {"id", 6}, {"title", 7}, {"price", 8}, {"note", 9}});
  auto s3b = evolve_schema(*s3, {"alter_column", "title", "name", "TEXT", "TEXT"}, last);
  REQUIRE(s3b);
  CHECK(*s3b == *s3);
  // ... where a column list alone would have been a drop and an add (a new id): the bug fixed.
  auto by_list = changelog_schema(std::vector<source_column>{{"id", "INTEGER"}, {"title", "TEXT"}, {"price", "REAL"}, {"note", "TEXT"}},
                                  &*s2, last);
  REQUIRE(by_list);
  CHECK(ids(*by_list)[6] == P{"title", 10});
  // DROP COLUMN: gone; its id is never reused.
  auto s4 = evolve_schema(*s3, {"drop_column", "note", "", "TEXT", ""}, last);
  REQUIRE(s4);
  CHECK(ids(*s4).back() == P{"price", 8});
  auto s5 = evolve_schema(*s4, {"add_column", "note", "", "", "TEXT"}, last);
  REQUIRE(s5);
  CHECK(ids(*s5).back() == P{"note", 10});
  // Dropping the column with the highest id: last-column-id still says 10 (a fresh counter
  // would hand out 10 again).
  auto s6 = evolve_schema(*s5, {"drop_column", "note", "", "", ""}, last);
  REQUIRE(s6);
  auto s7 = evolve_schema(*s6, {"add_column", "other", "", "", "BLOB"}, last);
  REQUIRE(s7);
  CHECK(ids(*s7).back() == P{"other", 11});
  CHECK(s7->columns.back().type == column_type::binary);
  // Type changes: a declared change to the same Iceberg type keeps everything; promotions keep
  // the id (int -> long: a schema written by others); the rest is unsafe, naming column and types.
  auto s8 = evolve_schema(*s7, {"alter_column", "id", "id", "INTEGER", "BIGINT"}, last);
  REQUIRE(s8);
  CHECK(*s8 == *s7);
  schema narrow = *s7;
  narrow.columns[5].type = column_type::int32;
  auto promoted = evolve_schema(narrow, {"alter_column", "id", "id", "INT", "BIGINT"}, last);
  REQUIRE(promoted);
  CHECK(promoted->columns[5].field_id == 6);
  CHECK(promoted->columns[5].type == column_type::int64);
  CHECK(promotable(column_type::int32, column_type::int64));
  CHECK_FALSE(promotable(column_type::int64, column_type::int32));
  CHECK_FALSE(promotable(column_type::int64, column_type::float64));
  CHECK_FALSE(promotable(column_type::string, column_type::binary));
  CHECK_FALSE(promotable(column_type::binary, column_type::string));
  CHECK_FALSE(promotable(column_type::string, column_type::int64));
  for (auto [from, to, text] : {std::tuple{"title", "INTEGER", "string -> long"}, {"price", "TEXT", "double -> string"},
                                {"id", "REAL", "long -> double"}, {"other", "TEXT", "binary -> string"}}) {
    auto r = evolve_schema(*s7, {"alter_column", from, from, "", to}, last);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.err().message(), Catch::Contains(std::string("column '") + from + "': unsafe type change " + text));
  }
  auto add_other = evolve_schema(*s7, {"add_column", "price", "", "", "TEXT"}, last);  // re-add under a new type
  REQUIRE_FALSE(add_other);
  // Renaming onto an existing column, or a column that is not there: refused.
  CHECK_FALSE(evolve_schema(*s7, {"alter_column", "price", "title", "TEXT", "TEXT"}, last));
  CHECK_FALSE(evolve_schema(*s7, {"alter_column", "zz", "nope", "TEXT", "TEXT"}, last));
  // Changes of tables, indexes, ...: no change; the CDC columns stay 1-5 throughout.
  auto s9 = evolve_schema(*s7, {"create_index", "", "", "", ""}, last);
  REQUIRE(s9);
  CHECK(*s9 == *s7);
  auto all = ids(*s7);
  CHECK(std::vector<P>(all.begin(), all.begin() + 5) ==
        std::vector<P>{{"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5}});
  CHECK_FALSE(evolve_schema(*s7, {"add_column", "_lsn", "", "", "TEXT"}, last));
  // A schema without the CDC columns (the current-state table's) evolves alike.
  schema plain{{{"id", column_type::int64, false, 6}, {"name", column_type::string, true, 7}}};
  int32_t plain_last = 8;  // (8 was assigned once and dropped)
  auto p1 = evolve_schema(plain, {"alter_column", "title", "name", "TEXT", "TEXT"}, plain_last);
  REQUIRE(p1);
  auto p2 = evolve_schema(*p1, {"add_column", "qty", "", "", "INTEGER"}, plain_last);
  REQUIRE(p2);
  CHECK(ids(*p2) == std::vector<P>{{"id", 6}, {"title", 7}, {"qty", 9}});
  CHECK_FALSE(p2->columns[0].optional);
}

TEST_CASE("changelog: _hlc after _source, an id of its own, kept through evolution; rows carry the stamp as text",
          "[changelog][hlc]") {
  using P = std::pair<std::string, int32_t>;
  const std::vector<source_column> cols{{"id", "INTEGER", true, 1}, {"name", "TEXT"}};
  // A new table: the table's columns get 6, 7; _hlc the next id, placed after _source.
  auto plain = changelog_schema(cols);
  REQUIRE(plain);
  CHECK(changelog_prefix(*plain) == 5);
  CHECK(hlc_field_id(*plain) == 0);
  int32_t last = 0;
  auto s = with_hlc(*plain, last);
  CHECK(last == 8);
  CHECK(ids(s) == std::vector<P>{{"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5}, {"_hlc", 8}, {"id", 6}, {"name", 7}});
  CHECK(changelog_prefix(s) == 6);
  CHECK(hlc_field_id(s) == 8);
  CHECK(with_hlc(s, last) == s);  // once
  // A table written before _hlc, whose last-column-id is 11 (dropped columns): _hlc gets 12.
  int32_t old_last = 11;
  auto evolved = with_hlc(*plain, old_last);
  CHECK(hlc_field_id(evolved) == 12);
  // Evolution keeps it: a column list and an ADD COLUMN.
  auto s2 = changelog_schema(std::vector<source_column>{{"id", "INTEGER", true, 1}, {"name", "TEXT"}, {"x", "REAL"}}, &s, last);
  REQUIRE(s2);
  CHECK(ids(*s2) == std::vector<P>{{"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5}, {"_hlc", 8}, {"id", 6}, {"name", 7}, {"x", 9}});
  auto s3 = evolve_schema(*s2, {"add_column", "y", "", "", "TEXT"}, last);
  REQUIRE(s3);
  CHECK(s3->columns.back().field_id == 10);
  CHECK(hlc_field_id(*s3) == 8);
  // The current-state shape leaves _hlc out.
  auto shape = current_shape_of(*s3, cols);
  REQUIRE(shape);
  CHECK(shape->table_schema.columns.front().name == "id");
  CHECK(shape->table_schema.columns.size() == 4);
  // A source column may not be called _hlc.
  CHECK_THAT(changelog_schema(std::vector<source_column>{{"_hlc", "TEXT"}}).err().message(), Catch::Contains("clashes"));
  // The row: to_string(hlc) in _hlc, the image after it.
  row img{{"name", "id"}, {std::string("a"), int64_t{3}}};
  auto r = changelog_row(s, change{"INSERT", 9, "", 1700000000123, "src", &img, hlc_stamp{1700000000123, 4, 77}});
  REQUIRE(r);
  CHECK(std::get<std::string>((*r)[5]) == "001700000000123.00004.0000000077");
  CHECK(std::get<int64_t>((*r)[6]) == 3);
  CHECK(std::get<std::string>((*r)[7]) == "a");
  CHECK(state_row(s, *r) == std::vector<value>{int64_t{3}, std::string("a")});
  // Without _hlc (a table before it) the row has none.
  auto r0 = changelog_row(*plain, change{"INSERT", 9, "", 1700000000123, "src", &img, hlc_stamp{1, 2, 3}});
  REQUIRE(r0);
  CHECK(r0->size() == 7);
  CHECK(state_row(*plain, *r0) == std::vector<value>{int64_t{3}, std::string("a")});
}

TEST_CASE("current state: last writer wins by HLC, within a flush and against what the table holds", "[current][hlc]") {
  const std::vector<source_column> cols{{"id", "INTEGER", true, 1}, {"v", "TEXT"}};
  int32_t last = 0;
  auto s = with_hlc(*changelog_schema(cols), last);
  auto shape = current_shape_of(s, cols);
  REQUIRE(shape);
  auto key = [](int64_t k) { return std::vector<value>{k}; };
  auto row_of = [](int64_t k, std::string v) { return std::vector<value>{k, std::move(v)}; };
  const hlc_stamp t10{10, 0, 1}, t20{20, 0, 2}, t30{30, 0, 1};
  // A key moved between shards: B's INSERT (t20) is in the table; A's DELETE (t10) lands later.
  key_clocks held{{key_text(key(1)), t20}};
  std::vector<state_change> late{{5, t10, key(1), std::nullopt}};
  auto c = collapse(*shape, late, &held);
  CHECK(c.deletes.empty());  // the row stays
  CHECK(c.rows.empty());
  CHECK(c.clocks.empty());
  // ... and a newer change of the same key does apply, and reports its clock.
  std::vector<state_change> newer{{6, t30, std::nullopt, row_of(1, "a-again")}};
  auto c2 = collapse(*shape, newer, &held);
  CHECK(c2.deletes == std::vector<std::vector<value>>{key(1)});
  CHECK(c2.rows == std::vector<std::vector<value>>{row_of(1, "a-again")});
  CHECK(c2.clocks.at(key_text(key(1))) == t30);
  // A DELETE that wins leaves a tombstone clock: a later-arriving older INSERT is skipped.
  key_clocks tomb{{key_text(key(2)), t30}};
  std::vector<state_change> old_insert{{7, t20, std::nullopt, row_of(2, "old")}};
  CHECK(collapse(*shape, old_insert, &tomb).rows.empty());
  // Other keys are untouched by the clocks; without clocks the last change in LSN order wins.
  std::vector<state_change> both{{8, t10, std::nullopt, row_of(3, "x")}, {9, t20, std::nullopt, row_of(3, "y")}};
  auto c3 = collapse(*shape, both, &held);
  CHECK(c3.rows == std::vector<std::vector<value>>{row_of(3, "y")});
  auto c4 = collapse(*shape, both);
  CHECK(c4.rows == std::vector<std::vector<value>>{row_of(3, "y")});
}
