// Shared by the runtime test suites (must and temp_dir: tests/common/scratch.hpp): a
// fixture owning a scratch directory, a runtime and an open database.
#pragma once

#include <catch2/catch.hpp>

#include <memory>

#include <dosql/database.hpp>
#include "test_util.hpp"

namespace dosql::test {

struct db_fixture {
  temp_dir d;
  runtime rt;
  std::shared_ptr<database> db;
  explicit db_fixture(const database_options& opts = {}) { db = must(rt.open(d.path(), opts)); }
};

}  // namespace dosql::test
