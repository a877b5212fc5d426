// cdc::cursor, the one delivery engine, over WALs crafted with wal::log: committed-only
// delivery, transaction framing, resuming inside a transaction, the one filter (SCHEMA
// semantics), column masks, SQL row predicates with enter/leave, limits, damage.
#include <catch2/catch.hpp>

#include "test_util.hpp"
#include "wal/cursor.hpp"
#include "wal/format.hpp"

using namespace dosql;
using cdc::cursor;

namespace {

// Writes transactions into a WAL directory, entry by entry.
struct wal_writer {
  explicit wal_writer(const std::string& dir, const wal_config& cfg = {}) : log(test::open_log(dir, cfg)) {}
  std::unique_ptr<wal::log> log;
  uint64_t last = 0;

  uint64_t put(wal_entry e) {
    std::vector<wal_entry> v{std::move(e)};
    auto r = log->append(v);
    REQUIRE(r);
    REQUIRE(!log->sync());
    return last = *r;
  }
  uint64_t ctl(op_type op, const std::string& txn) {
    wal_entry e;
    e.op = op;
    e.txn_id = txn;
    e.timestamp = 1000;
    return put(e);
  }
  static bytes image(const row& r) {
    std::string s;
    codec::encode_row(r, s);
    return bytes(s.begin(), s.end());
  }
  // A row change of table `t` whose rows are {id, status, secret}.
  uint64_t change(op_type op, const std::string& txn, const std::string& t, int64_t id,
                  const std::string& before_status = "", const std::string& after_status = "") {
    wal_entry e;
    e.op = op;
    e.txn_id = txn;
    e.table = t;
    e.timestamp = 1000;
    e.key = bytes{static_cast<uint8_t>(id)};
    auto mk = [&](const std::string& st) { return row{{"id", "status", "secret"}, {value(id), value(st), value(std::string("pw"))}}; };
    if (op != op_type::insert) e.before = image(mk(before_status));
    if (op != op_type::del) e.after = image(mk(after_status));
    return put(e);
  }
  uint64_t schema(const std::string& txn, const std::string& t, const std::string& column) {
    wal_entry e;
    e.op = op_type::schema;
    e.txn_id = txn;
    e.table = t;
    e.timestamp = 1000;
    row r{{"change_type", "table", "column", "schema_version", "sql"},
          {value(std::string("add_column")), value(t), value(column), value(int64_t(2)),
           value("ALTER TABLE " + t + " ADD COLUMN " + column)}};
    e.after = image(r);
    return put(e);
  }
  // BEGIN, `n` inserts into t, COMMIT; returns the BEGIN's LSN.
  uint64_t txn(const std::string& t, int n, op_type end = op_type::commit) {
    std::string id = "txn_" + std::to_string(last + 1);
    uint64_t b = ctl(op_type::begin, id);
    for (int i = 0; i < n; ++i) change(op_type::insert, id, t, i, "", "new");
    ctl(end, id);
    return b;
  }
};

std::unique_ptr<cursor> open(const std::string& dir, cdc::cursor_options o = {}) {
  auto c = cursor::open(dir, std::move(o));
  REQUIRE(c);
  return std::move(*c);
}

// Everything the cursor hands out up to the tail (following `more`).
std::vector<wal_entry> drain(cursor& c, size_t* mores = nullptr) {
  std::vector<wal_entry> out;
  entry_view v;
  for (;;) {
    auto s = c.next(v);
    if (s == cursor::status::entry) {
      out.push_back(v.to_entry());
    } else if (s == cursor::status::more) {
      if (mores) ++*mores;
    } else {
      REQUIRE(s == cursor::status::tail);
      return out;
    }
  }
}

std::vector<uint64_t> lsns(const std::vector<wal_entry>& v) {
  std::vector<uint64_t> out;
  for (auto& e : v) out.push_back(e.lsn);
  return out;
}

std::string ops(const std::vector<wal_entry>& v) {
  std::string s;
  for (auto& e : v) s += std::string(s.empty() ? "" : " ") + std::string(to_string(e.op));
  return s;
}

row image_of(const std::optional<bytes>& b) {
  REQUIRE(b);
  auto r = codec::decode_row(std::string_view(reinterpret_cast<const char*>(b->data()), b->size()));
  REQUIRE(r);
  return *r;
}

}  // namespace

TEST_CASE("cursor: committed transactions only, framed with BEGIN/COMMIT on request", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.txn("t", 2);                       // 1..4
  w.txn("t", 2, op_type::rollback);    // 5..8
  w.txn("t", 1);                       // 9..11
  SECTION("changes only") {
    auto c = open(d.path());
    auto got = drain(*c);
    CHECK(lsns(got) == std::vector<uint64_t>{2, 3, 10});
    CHECK(c->settled_lsn() == 11);
  }
  SECTION("with transaction control") {
    cdc::cursor_options o;
    o.include_transaction_control = true;
    auto c = open(d.path(), o);
    auto got = drain(*c);
    CHECK(ops(got) == "BEGIN INSERT INSERT COMMIT BEGIN INSERT COMMIT");
    CHECK(lsns(got) == std::vector<uint64_t>{1, 2, 3, 4, 9, 10, 11});
  }
  SECTION("include_uncommitted hands out the rolled-back one too") {
    cdc::cursor_options o;
    o.include_uncommitted = true;
    o.include_transaction_control = true;
    auto c = open(d.path(), o);
    CHECK(lsns(drain(*c)) == std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  }
}

TEST_CASE("cursor: an undecided transaction is held until its COMMIT or ROLLBACK", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.txn("t", 1);  // 1..3
  uint64_t b = w.ctl(op_type::begin, "txn_4");
  w.change(op_type::insert, "txn_4", "t", 1, "", "x");
  w.change(op_type::insert, "txn_4", "t", 2, "", "x");
  cdc::cursor_options o;
  o.include_transaction_control = true;
  auto c = open(d.path(), o);
  CHECK(lsns(drain(*c)) == std::vector<uint64_t>{1, 2, 3});
  CHECK(c->settled_lsn() == b - 1);
  // Still undecided: nothing more, however often asked.
  CHECK(drain(*c).empty());
  w.ctl(op_type::commit, "txn_4");
  CHECK(lsns(drain(*c)) == std::vector<uint64_t>{4, 5, 6, 7});
  CHECK(c->settled_lsn() == 7);
  // The next one rolls back: never delivered, but passed over (settled moves past it).
  w.txn("t", 3, op_type::rollback);
  CHECK(drain(*c).empty());
  CHECK(c->settled_lsn() == w.last);
}

TEST_CASE("cursor: a transaction cut without an ending (a BEGIN follows) is never delivered", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.ctl(op_type::begin, "txn_1");
  w.change(op_type::insert, "txn_1", "t", 1, "", "torn");
  w.txn("t", 1);  // 3..5
  auto c = open(d.path());
  auto got = drain(*c);
  CHECK(lsns(got) == std::vector<uint64_t>{4});
  CHECK(c->settled_lsn() == 5);
}

TEST_CASE("cursor: long and back-to-back transactions, bounded work per call", "[cursor]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 50;  // the transactions span segments
  wal_writer w(d.path(), cfg);
  w.txn("t", 300);                     // 1..302
  w.txn("t", 5, op_type::rollback);    // 303..309
  w.txn("u", 120);                     // 310..431
  cdc::cursor_options o;
  o.include_transaction_control = true;
  o.step = 16;  // a long transaction takes many calls to decide
  o.reader_buffer_bytes = 4096;
  auto c = open(d.path(), o);
  size_t mores = 0;
  auto got = drain(*c, &mores);
  CHECK(mores > 10);
  REQUIRE(got.size() == 302 + 122);
  for (size_t i = 1; i < got.size(); ++i) REQUIRE(got[i].lsn > got[i - 1].lsn);
  CHECK(got[0].op == op_type::begin);
  CHECK(got[301].op == op_type::commit);
  CHECK(got[302].lsn == 310);
  CHECK(got.back().lsn == 431);
  for (auto& e : got)
    if (is_row_change(e.op)) REQUIRE(image_of(e.after).values[1] == value(std::string("new")));
}

TEST_CASE("cursor: resuming inside a transaction delivers its rest and COMMIT, not its BEGIN", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.txn("t", 3);                      // 1..5
  w.txn("t", 3, op_type::rollback);   // 6..10
  w.txn("t", 1);                      // 11..13
  cdc::cursor_options o;
  o.include_transaction_control = true;
  SECTION("a committed one") {
    o.start_lsn = 3;
    auto c = open(d.path(), o);
    CHECK(c->settled_lsn() == 2);
    CHECK(ops(drain(*c)) == "INSERT INSERT COMMIT BEGIN INSERT COMMIT");
  }
  SECTION("a rolled-back one: nothing of it") {
    o.start_lsn = 8;
    auto c = open(d.path(), o);
    auto got = drain(*c);
    CHECK(lsns(got) == std::vector<uint64_t>{11, 12, 13});
  }
  SECTION("at its COMMIT") {
    o.start_lsn = 5;
    auto c = open(d.path(), o);
    CHECK(lsns(drain(*c)) == std::vector<uint64_t>{5, 11, 12, 13});
  }
  SECTION("undecided at first: held until the COMMIT") {
    test::temp_dir d2;
    wal_writer w2(d2.path());
    w2.ctl(op_type::begin, "txn_1");
    w2.change(op_type::insert, "txn_1", "t", 1, "", "a");
    w2.change(op_type::insert, "txn_1", "t", 2, "", "b");
    o.start_lsn = 3;
    auto c = open(d2.path(), o);
    CHECK(drain(*c).empty());
    CHECK(c->settled_lsn() == 2);
    w2.ctl(op_type::commit, "txn_1");
    CHECK(lsns(drain(*c)) == std::vector<uint64_t>{3, 4});
    CHECK(c->settled_lsn() == 4);
  }
}

TEST_CASE("cursor: the one filter; a SCHEMA entry passes an operation list only if it names schema", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.ctl(op_type::begin, "txn_1");                                // 1
  w.change(op_type::insert, "txn_1", "a", 1, "", "x");           // 2
  w.change(op_type::update, "txn_1", "b", 1, "x", "y");          // 3
  w.schema("txn_1", "a", "c");                                   // 4
  w.ctl(op_type::commit, "txn_1");                               // 5
  w.ctl(op_type::begin, "txn_6");                                // 6
  w.change(op_type::del, "txn_6", "b", 1, "y", "");              // 7
  w.ctl(op_type::commit, "txn_6");                               // 8
  cdc::cursor_options o;
  o.include_transaction_control = true;
  SECTION("no operation list: SCHEMA passes") {
    o.filter.tables = {"a"};
    CHECK(lsns(drain(*open(d.path(), o))) == std::vector<uint64_t>{1, 2, 4, 5});
  }
  SECTION("a list without schema: SCHEMA does not pass") {
    o.filter.operations = {op_type::insert, op_type::del};
    CHECK(lsns(drain(*open(d.path(), o))) == std::vector<uint64_t>{1, 2, 5, 6, 7, 8});
  }
  SECTION("a list naming schema") {
    o.filter.operations = {op_type::schema};
    CHECK(lsns(drain(*open(d.path(), o))) == std::vector<uint64_t>{1, 4, 5});
    wal_entry schema;
    schema.op = op_type::schema;
    CHECK(cdc::filter{{}, {op_type::schema}, {}, {}}.matches(view_of(schema)));
    CHECK(cdc::filter{}.matches(view_of(schema)));
    CHECK_FALSE(cdc::filter{{}, {op_type::insert}, {}, {}}.matches(view_of(schema)));
  }
  SECTION("txn ids; a transaction none of whose changes pass yields no BEGIN/COMMIT") {
    o.filter.txn_ids = {"txn_6"};
    auto c = open(d.path(), o);
    CHECK(lsns(drain(*c)) == std::vector<uint64_t>{6, 7, 8});
  }
  SECTION("an entry predicate; settled moves past what it drops") {
    o.filter.predicate = [](const entry_view& e) { return e.table == "b"; };
    o.filter.tables = {"a", "b"};
    auto c = open(d.path(), o);
    CHECK(lsns(drain(*c)) == std::vector<uint64_t>{1, 3, 5, 6, 7, 8});
    CHECK(c->settled_lsn() == 8);
  }
  SECTION("nothing passes: settled reaches the end") {
    o.filter.tables = {"zzz"};
    auto c = open(d.path(), o);
    CHECK(drain(*c).empty());
    CHECK(c->settled_lsn() == 8);
  }
}

TEST_CASE("cursor: column masks cut images, withhold the key, and mask SCHEMA entries", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.ctl(op_type::begin, "txn_1");                        // 1
  w.change(op_type::update, "txn_1", "a", 1, "x", "y");  // 2
  w.schema("txn_1", "a", "secret");                      // 3: about a hidden column
  w.schema("txn_1", "a", "status");                      // 4
  w.change(op_type::insert, "txn_1", "b", 2, "", "z");   // 5: no mask for b
  w.ctl(op_type::commit, "txn_1");                       // 6
  cdc::cursor_options o;
  o.columns["a"].exclude = {"secret"};
  auto got = drain(*open(d.path(), o));
  REQUIRE(lsns(got) == std::vector<uint64_t>{2, 4, 5});
  CHECK(image_of(got[0].before).columns == std::vector<std::string>{"id", "status"});
  CHECK(image_of(got[0].after).columns == std::vector<std::string>{"id", "status"});
  CHECK_FALSE(got[0].key);
  auto s = image_of(got[1].after);
  CHECK(std::find(s.columns.begin(), s.columns.end(), "sql") == s.columns.end());
  CHECK(std::find(s.columns.begin(), s.columns.end(), "column") != s.columns.end());
  CHECK(image_of(got[2].after).columns.size() == 3);
  CHECK(got[2].key);
}

TEST_CASE("cursor: a SQL row predicate with enter/leave", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.ctl(op_type::begin, "txn_1");                                 // 1
  w.change(op_type::insert, "txn_1", "t", 1, "", "open");         // 2: not in the set
  w.change(op_type::update, "txn_1", "t", 1, "open", "shipped");  // 3: enters
  w.change(op_type::update, "txn_1", "t", 1, "shipped", "shipped");  // 4: stays
  w.change(op_type::update, "txn_1", "t", 1, "shipped", "open");  // 5: leaves
  w.change(op_type::del, "txn_1", "t", 1, "open", "");            // 6: not in the set
  w.change(op_type::insert, "txn_1", "t", 2, "", "shipped");      // 7
  w.ctl(op_type::commit, "txn_1");                                // 8
  auto use_sql = GENERATE(true, false);
  CAPTURE(use_sql);
  cdc::cursor_options o;
  if (use_sql)
    o.where["t"] = "status = 'shipped'";
  else
    o.row_filters["t"] = [](const row& r) { return r.values[1] == value(std::string("shipped")); };
  auto got = drain(*open(d.path(), o));
  REQUIRE(lsns(got) == std::vector<uint64_t>{3, 4, 5, 7});
  CHECK(got[0].op == op_type::insert);
  CHECK(got[0].origin == entry_origin::entered);
  CHECK_FALSE(got[0].before);
  CHECK(got[1].op == op_type::update);
  CHECK(got[1].origin == entry_origin::wal);
  CHECK(got[2].op == op_type::del);
  CHECK(got[2].origin == entry_origin::left);
  CHECK_FALSE(got[2].after);
  CHECK(got[3].op == op_type::insert);
}

TEST_CASE("cursor: a row the SQL predicate can no longer judge is an error at its LSN", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.txn("t", 1);  // 1..3
  cdc::cursor_options o;
  o.where["t"] = "gone = 1";  // (callers check against the table first; the rows lack it)
  auto c = open(d.path(), o);
  entry_view v;
  REQUIRE(c->next(v) == cursor::status::error);
  CHECK(c->last_error().lsn == 2);
  CHECK(c->last_error().message().find("lsn 2") != std::string::npos);
  CHECK(c->next(v) == cursor::status::error);  // sticky
}

TEST_CASE("cursor: nothing past the limit; moving it delivers the rest", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.txn("t", 2);  // 1..4
  w.txn("t", 2);  // 5..8
  cdc::cursor_options o;
  o.include_transaction_control = true;
  auto c = open(d.path(), o);
  c->set_limit(6);  // inside the second transaction: its outcome is not readable yet
  CHECK(lsns(drain(*c)) == std::vector<uint64_t>{1, 2, 3, 4});
  CHECK(c->settled_lsn() == 4);
  c->set_limit(8);
  CHECK(lsns(drain(*c)) == std::vector<uint64_t>{5, 6, 7, 8});
  SECTION("uncommitted mode stops at the limit too") {
    cdc::cursor_options u;
    u.include_uncommitted = true;
    auto cu = open(d.path(), u);
    cu->set_limit(6);
    CHECK(lsns(drain(*cu)) == std::vector<uint64_t>{2, 3, 6});
    CHECK(cu->settled_lsn() == 4);  // never inside the open transaction
  }
}

TEST_CASE("cursor: release() frees the readers; the next call goes on where it was", "[cursor]") {
  test::temp_dir d;
  wal_writer w(d.path());
  w.txn("t", 3);  // 1..5
  w.txn("t", 3);  // 6..10
  cdc::cursor_options o;
  o.include_transaction_control = true;
  auto c = open(d.path(), o);
  std::vector<uint64_t> got;
  entry_view v;
  for (;;) {
    auto s = c->next(v);
    if (s == cursor::status::tail) break;
    REQUIRE(s != cursor::status::error);
    if (s == cursor::status::entry) got.push_back(v.lsn);
    c->release();  // after every call, also between a BEGIN and the change held behind it
  }
  CHECK(got == std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
}

TEST_CASE("cursor: a damaged record is an error naming its LSN, after what was decided before it", "[cursor]") {
  test::temp_dir d;
  wal_config cfg;
  cfg.max_entries_per_segment = 4;  // lsn 1..4 sealed in the first segment, 5..8 in the active one
  {
    wal_writer w(d.path(), cfg);
    w.txn("t", 2);  // 1..4
    w.txn("t", 2);  // 5..8
  }
  auto damaged = GENERATE(3, 7);  // a change in the first transaction, or in the second
  auto include_uncommitted = GENERATE(false, true);
  CAPTURE(damaged, include_uncommitted);
  auto path = d / wal::segment_file_name(damaged < 5 ? 1 : 5);
  std::string data = test::read_file(path);
  auto offs = test::record_offsets(data);
  data[offs[(damaged - 1) % 4] + 30] ^= 1;
  test::write_file(path, data);
  cdc::cursor_options o;
  o.include_uncommitted = include_uncommitted;
  auto c = open(d.path(), o);
  entry_view v;
  cursor::status s;
  std::vector<uint64_t> got;
  while ((s = c->next(v)) == cursor::status::entry || s == cursor::status::more)
    if (s == cursor::status::entry) got.push_back(v.lsn);
  REQUIRE(s == cursor::status::error);
  CHECK(c->last_error().code() == ec::corruption);
  CHECK(c->last_error().message().find("lsn " + std::to_string(damaged)) != std::string::npos);
  // Committed-only: nothing of the damaged transaction, everything decided before it.
  std::vector<uint64_t> want = damaged == 3 ? std::vector<uint64_t>{} : std::vector<uint64_t>{2, 3};
  if (include_uncommitted) want = damaged == 3 ? std::vector<uint64_t>{2} : std::vector<uint64_t>{2, 3, 6};
  CHECK(got == want);
  CHECK(c->next(v) == cursor::status::error);  // sticky
}

TEST_CASE("cursor: durable_limit reads wal/DURABLE (none published: no limit)", "[cursor]") {
  test::temp_dir d;
  CHECK(cdc::durable_limit(d.path()) == UINT64_MAX);
  wal::durable_mark m;
  REQUIRE(!m.open(d.path(), 7));
  CHECK(cdc::durable_limit(d.path()) == 7);
  m.publish(9);
  CHECK(cdc::durable_limit(d.path()) == 9);
}
