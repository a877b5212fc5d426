// `dosql sql DIR [-e SQL]`: runs a script (from -e or stdin) and prints the rows of its last
// statement as an aligned table or JSON lines.
#include <cstdio>
#include <iostream>
#include <iterator>

#include <dosql/database.hpp>
#include <dosql/json.hpp>
#include "tools/cli/cli.hpp"
#include "wal/reader.hpp"

namespace dosql::cli {
namespace {

// Row changes (INSERT/UPDATE/DELETE entries) the script wrote: the LSNs (from, to].
result<uint64_t> count_changes(const std::string& wal_dir, uint64_t from, uint64_t to) {
  auto r = wal::reader::open(wal_dir);
  if (!r) return r.err();
  if (auto e = (*r)->seek(from + 1)) return e;
  (*r)->set_limit(to);
  uint64_t n = 0;
  entry_view e;
  for (;;) {
    auto st = (*r)->next(e);
    if (st == wal::reader::status::error) return (*r)->last_error();
    if (st == wal::reader::status::tail) break;
    n += is_row_change(e.op);
  }
  return n;
}

}  // namespace

int run_sql(const sql_options& o) {
  std::string sql;
  if (o.sql) {
    sql = *o.sql;
  } else {
    sql.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  runtime rt;
  auto db = rt.open(o.dir);
  if (!db) return fail(db.err());
  if (sql.find_first_not_of(" \t\r\n;") == std::string::npos) {  // nothing to run
    if (auto e = (*db)->close()) return fail(e);
    return 0;
  }
  uint64_t before = (*db)->last_lsn();
  auto res = (*db)->query(sql);
  uint64_t after = (*db)->last_lsn();
  if (!res) {
    (void)(*db)->close();
    return fail(res.err());
  }
  std::string out;
  if (!res->columns.empty()) {
    if (o.json) {
      row r;
      r.columns = res->columns;
      for (auto& v : res->rows) {
        r.values = v;
        r.values.resize(r.columns.size());
        out += to_json(r) + "\n";
      }
    } else {
      out = render_table(res->columns, res->rows);
    }
  }
  if (o.verbose) {
    if (after > before) {
      auto n = count_changes((*db)->wal_dir(), before, after);
      if (!n) return fail(n.err());
      out += "changes: " + std::to_string(*n) + ", commit lsn: " + std::to_string(after) + "\n";
    } else {
      out += "changes: 0, nothing committed\n";
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (auto e = (*db)->close()) return fail(e);
  if (std::fflush(stdout) != 0) return fail("cannot write to stdout");
  return 0;
}

}  // namespace dosql::cli
