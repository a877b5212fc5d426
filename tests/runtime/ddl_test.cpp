// The DDL classification (runtime/ddl.hpp) as a pure function: every kind of statement, from
// the authorizer code and the catalog before and after, without a database.
#include <catch2/catch.hpp>
#include <sqlite3.h>

#include "runtime/ddl.hpp"

using namespace dosql;
using detail::classify_ddl;

TEST_CASE("DDL classification: create and drop name their kind; an index names its object", "[ddl]") {
  auto c = classify_ddl({SQLITE_CREATE_TABLE, "t", "t"}, {}, {"t"}, {}, {{"id", "INTEGER"}});
  CHECK(c.change_type == "create_table");
  CHECK(c.table == "t");
  CHECK_FALSE(c.object);
  c = classify_ddl({SQLITE_DROP_TABLE, "t", "t"}, {"t"}, {}, {{"id", "INTEGER"}}, {});
  CHECK(c.change_type == "drop_table");
  c = classify_ddl({SQLITE_CREATE_INDEX, "t", "t_by_name"}, {"t"}, {"t"}, {}, {});
  CHECK(c.change_type == "create_index");
  CHECK(c.object == "t_by_name");
  for (auto [code, name] : std::vector<std::pair<int, std::string>>{{SQLITE_DROP_INDEX, "drop_index"},
                                                                      {SQLITE_CREATE_TRIGGER, "create_trigger"},
                                                                      {SQLITE_DROP_TRIGGER, "drop_trigger"},
                                                                      {SQLITE_CREATE_VIEW, "create_view"},
                                                                      {SQLITE_DROP_VIEW, "drop_view"}})
    CHECK(classify_ddl({code, "t", "x"}, {"t"}, {"t"}, {}, {}).change_type == name);
}

TEST_CASE("DDL classification: ALTER TABLE is a rename, an added, dropped or renamed column", "[ddl]") {
  detail::column_list two{{"id", "INTEGER"}, {"name", "TEXT"}};
  SECTION("RENAME TO: the table that appeared, with the old name") {
    auto c = classify_ddl({SQLITE_ALTER_TABLE, "t", "t"}, {"a", "t"}, {"a", "t2"}, two, {});
    CHECK(c.change_type == "rename_table");
    CHECK(c.table == "t2");
    CHECK(c.old_table == "t");
  }
  SECTION("ADD COLUMN: the new last column and its type") {
    auto after = two;
    after.emplace_back("email", "TEXT");
    auto c = classify_ddl({SQLITE_ALTER_TABLE, "t", "t"}, {"t"}, {"t"}, two, after);
    CHECK(c.change_type == "add_column");
    CHECK(c.column == "email");
    CHECK(c.new_type == "TEXT");
    CHECK_FALSE(c.old_type);
  }
  SECTION("DROP COLUMN: the column that is gone, from the middle too") {
    detail::column_list three{{"id", "INTEGER"}, {"mid", "REAL"}, {"name", "TEXT"}};
    auto c = classify_ddl({SQLITE_ALTER_TABLE, "t", "t"}, {"t"}, {"t"}, three, two);
    CHECK(c.change_type == "drop_column");
    CHECK(c.column == "mid");
    CHECK(c.old_type == "REAL");
  }
  SECTION("RENAME COLUMN: old and new name with the type") {
    detail::column_list after{{"id", "INTEGER"}, {"full_name", "TEXT"}};
    auto c = classify_ddl({SQLITE_ALTER_TABLE, "t", "t"}, {"t"}, {"t"}, two, after);
    CHECK(c.change_type == "alter_column");
    CHECK(c.column == "full_name");
    CHECK(c.old_column == "name");
    CHECK(c.old_type == "TEXT");
    CHECK(c.new_type == "TEXT");
    auto r = detail::schema_change_row(c);
    CHECK(r.columns == std::vector<std::string>{"change_type", "table", "column", "old_column", "old_type", "new_type"});
  }
}
