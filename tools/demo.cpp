// The quick-start demo (until the database lands): writes CDC entries to a WAL in a data
// directory, reopens it, and reads them back from an LSN, printing each one.
#include <cstdio>
#include <string>
#include <vector>

#include "wal/log.hpp"
#include "wal/reader.hpp"

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "dosql-data";
  std::string wal_dir = dir + "/wal";
  uint64_t from;
  {
    auto log = dosql::wal::log::open(wal_dir);
    if (!log) {
      std::fprintf(stderr, "dosql_demo: %s\n", log.err().to_string().c_str());
      return 1;
    }
    from = (*log)->next_lsn();
    std::vector<dosql::wal_entry> txn;
    std::string id = "txn_" + std::to_string(from);
    auto add = [&](dosql::op_type op, std::string table) {
      dosql::wal_entry e;
      e.timestamp = 1737542400000;
      e.txn_id = id;
      e.op = op;
      e.table = std::move(table);
      if (dosql::is_row_change(op)) e.after = dosql::bytes{'h', 'i'};
      txn.push_back(std::move(e));
    };
    add(dosql::op_type::begin, "");
    add(dosql::op_type::insert, "users");
    add(dosql::op_type::insert, "orders");
    add(dosql::op_type::commit, "");
    auto last = (*log)->append_batch(txn);
    if (!last) {
      std::fprintf(stderr, "dosql_demo: %s\n", last.err().to_string().c_str());
      return 1;
    }
    std::printf("appended lsn %llu..%llu (durable %llu) to %s\n", (unsigned long long)from,
                (unsigned long long)*last, (unsigned long long)(*log)->durable_lsn(), wal_dir.c_str());
  }
  auto r = dosql::wal::reader::open(wal_dir);
  if (!r || (*r)->seek(from)) {
    std::fprintf(stderr, "dosql_demo: cannot read %s\n", wal_dir.c_str());
    return 1;
  }
  dosql::entry_view v;
  while ((*r)->next(v) == dosql::wal::reader::status::entry)
    std::printf("  lsn %-6llu %-8s txn %-10.*s table %.*s\n", (unsigned long long)v.lsn,
                std::string(dosql::to_string(v.op)).c_str(), (int)v.txn_id.size(), v.txn_id.data(),
                (int)v.table.size(), v.table.data());
  if ((*r)->last_error()) {
    std::fprintf(stderr, "dosql_demo: %s\n", (*r)->last_error().to_string().c_str());
    return 1;
  }
  return 0;
}
