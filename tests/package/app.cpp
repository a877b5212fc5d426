// Uses the installed headers and library, public API only: write, then read the change stream back.
#include <dosql/dosql.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  dosql::runtime rt;
  auto db = rt.open(argv[1]);
  if (!db) return std::fprintf(stderr, "%s\n", db.err().to_string().c_str()), 1;
  if (!(*db)->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES(1, 'installed')")) return 1;
  dosql::cdc::subscribe_options o;
  o.stop_at_tail = true;
  auto sub = dosql::cdc::create_cdc(*db).subscribe(o);
  if (!sub) return 1;
  int n = 0;
  for (auto& e : **sub) n += e.op == dosql::op_type::insert;
  std::printf("package test: %d insert(s) streamed\n", n);
  return n == 1 ? 0 : 1;
}
