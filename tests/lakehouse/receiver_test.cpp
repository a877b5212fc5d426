// The lakehouse receiver (include/dosql/lakehouse/receiver.hpp, docs/LAKEHOUSE.md), embedded and
// as the real `dosql lakehouse serve` process: exactly-once (duplicates across restarts, gaps,
// nack then retry), refusals (malformed, oversized, unauthenticated), schema changes, injected
// I/O faults during a flush, recovery of an interrupted commit, and SIGKILL at random moments.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include <dosql/lakehouse/receiver.hpp>

#include "cli/support.hpp"
#include "common/scratch.hpp"
#include "fault_fs.hpp"
#include "lakehouse/receiver_support.hpp"
#include "test_util.hpp"

using namespace dosql;
using namespace dosql::test::lh;
namespace fs = std::filesystem;
using dosql::test::has;

namespace {

const std::string token = "lake-s3cret";

// Batch k of a source: LSNs 10k+1 .. 10k+5, one event each, alternating tables orders / users:
// inserts, then an update and a delete; every storage class, NULL, unicode and invalid UTF-8.
proto::batch make_batch(const std::string& source, uint64_t k, uint64_t lsn_base = 0) {
  proto::batch b;
  b.source_id = source;
  b.batch_id = source + ":" + std::to_string(k);
  b.sequence_number = k;
  b.previous_lsn = k == 1 ? lsn_base : lsn_base + 10 * (k - 1) + 5;
  b.first_lsn = lsn_base + 10 * k + 1;
  b.last_lsn = lsn_base + 10 * k + 5;
  b.created_at = 1733222400000;
  b.schemas["orders"] = {{"id", "INTEGER"}, {"total", "REAL"}, {"note", "TEXT"}, {"pic", "BLOB"}};
  b.schemas["users"] = {{"id", "INTEGER"}, {"name", "TEXT"}};
  for (uint64_t i = 1; i <= 5; ++i) {
    uint64_t lsn = b.first_lsn + i - 1;
    cdc::change_event<row> e;
    e.lsn = lsn;
    e.id = std::to_string(lsn);
    e.txn_id = "tx" + std::to_string(k);
    e.timestamp = 1733222400000 + static_cast<int64_t>(lsn);
    e.table = i % 2 ? "orders" : "users";
    row r;
    if (e.table == "orders")
      r = row{{"id", "total", "note", "pic"},
              {static_cast<int64_t>(lsn), static_cast<double>(lsn) * 0.5,
               lsn % 3 ? value(std::string("n\u00e9 \u2603 ") + std::to_string(lsn)) : value(nullptr),
               bytes{static_cast<uint8_t>(lsn & 255), 0, 255}}};
    else
      r = row{{"id", "name"}, {static_cast<int64_t>(lsn), std::string("user ") + std::to_string(lsn)}};
    if (i <= 3) {
      e.type = cdc::change_type::insert;
      e.data = r;
    } else if (i == 4) {
      e.type = cdc::change_type::update;
      e.old_data = r;
      e.data = r;
    } else {
      e.type = cdc::change_type::del;
      e.old_data = r;
    }
    b.events.push_back(std::move(e));
  }
  return b;
}

std::vector<std::string> parquet_files(const std::string& dir, const std::string& suffix = ".parquet") {
  std::vector<std::string> v;
  std::error_code ec;
  if (!fs::exists(dir)) return v;
  for (auto& f : fs::recursive_directory_iterator(dir, ec)) {
    auto n = f.path().filename().string();
    if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      v.push_back(fs::relative(f.path(), dir).string());
  }
  std::sort(v.begin(), v.end());
  return v;
}

// Per (table, source): the LSN ranges of its files (from their names), sorted.
std::map<std::pair<std::string, std::string>, std::vector<std::pair<uint64_t, uint64_t>>> ranges(const std::string& dir,
                                                                                                  const std::string& ns = "dosql") {
  std::map<std::pair<std::string, std::string>, std::vector<std::pair<uint64_t, uint64_t>>> out;
  static const std::regex name_re(R"(([A-Za-z0-9_.-]+)_changelog/data/([A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*?)-([0-9]+)-([0-9]+)-[0-9a-f]{32}\.parquet)");
  for (auto& f : parquet_files(dir + "/" + ns)) {
    std::smatch m;
    INFO(f);
    REQUIRE(std::regex_match(f, m, name_re));
    out[{m[1], m[2]}].push_back({std::stoull(m[3]), std::stoull(m[4])});
  }
  for (auto& [k, v] : out) std::sort(v.begin(), v.end());
  return out;
}

// The LSNs of make_batch(k) for `table`, k in [from, to].
std::vector<uint64_t> expected_lsns(const std::string& table, uint64_t from, uint64_t to, uint64_t base = 0) {
  std::vector<uint64_t> v;
  for (uint64_t k = from; k <= to; ++k)
    for (uint64_t i = 1; i <= 5; ++i)
      if ((i % 2 ? "orders" : "users") == table) v.push_back(base + 10 * k + i);
  return v;
}

// Every LSN of `want` lies in exactly one file range, and every range holds at least one of them
// (files are written from contiguous batches: a range covers exactly its batches' events).
void check_exactly_once(const std::vector<std::pair<uint64_t, uint64_t>>& files, const std::vector<uint64_t>& want) {
  for (size_t i = 1; i < files.size(); ++i) {
    INFO("file ranges overlap: [" << files[i - 1].first << "," << files[i - 1].second << "] and [" << files[i].first << ","
                                  << files[i].second << "]");
    REQUIRE(files[i - 1].second < files[i].first);
  }
  for (auto lsn : want) {
    size_t n = 0;
    for (auto& [a, b] : files) n += a <= lsn && lsn <= b;
    INFO("lsn " << lsn);
    REQUIRE(n == 1);
  }
  for (auto& [a, b] : files) {
    bool any = false;
    for (auto lsn : want) any = any || (a <= lsn && lsn <= b);
    INFO("file [" << a << "," << b << "] holds no expected LSN");
    REQUIRE(any);
  }
}

nlohmann::json state_of(const std::string& dir) {
  auto p = dir + "/_dosql/receiver.json";
  if (!fs::exists(p)) return nlohmann::json::object();
  return nlohmann::json::parse(test::read_file(p));
}

lakehouse::receiver_options options(const std::string& dir) {
  lakehouse::receiver_options o;
  o.dir = dir;
  o.flush_rows = 1000000;
  o.flush_bytes = 1ull << 30;
  o.flush_ms = 20;  // acks follow within a tick
  return o;
}

std::unique_ptr<lakehouse::receiver> start(const lakehouse::receiver_options& o) {
  auto r = lakehouse::receiver::start(o);
  INFO((r ? "" : r.err().to_string()));
  REQUIRE(r.ok());
  return std::move(*r);
}

}  // namespace

TEST_CASE("receiver: two sources into one receiver, acked once durable, files per (source, table)", "[receiver]") {
  test::temp_dir d;
  auto r = start(options(d.path()));
  plain_client a(r->port(), ""), b(r->port(), "");
  REQUIRE(a.status() == 101);
  REQUIRE(b.status() == 101);
  auto wa = a.hello("shop-eu");
  CHECK(wa.watermark == 0);
  CHECK(wa.next_sequence == 1);
  CHECK(wa.max_frame_bytes == 16ull << 20);
  CHECK(b.hello("shop-us").next_sequence == 1);
  for (uint64_t k = 1; k <= 3; ++k) {
    REQUIRE(a.send(proto::render(make_batch("shop-eu", k))));
    REQUIRE(b.send(proto::render(make_batch("shop-us", k, 1000))));
  }
  for (uint64_t k = 1; k <= 3; ++k) {
    auto x = a.recv_as<proto::ack>();
    CHECK(x.sequence_number == k);
    CHECK(x.batch_id == "shop-eu:" + std::to_string(k));
    CHECK_FALSE(x.duplicate);
    CHECK(x.watermark >= x.last_lsn);
    CHECK(x.buffer_utilization >= 0);
    CHECK(x.buffer_utilization <= 1);
    auto y = b.recv_as<proto::ack>();
    CHECK(y.sequence_number == k);
    CHECK(y.last_lsn == 1000 + 10 * k + 5);
  }
  // Acked means committed: the state holds both watermarks, and the files are in place.
  auto st = state_of(d.path());
  CHECK(st["sources"]["shop-eu"]["watermark"] == 35);
  CHECK(st["sources"]["shop-eu"]["sequence"] == 3);
  CHECK(st["sources"]["shop-us"]["watermark"] == 1035);
  auto rg = ranges(d.path());
  check_exactly_once(rg[{"orders", "shop-eu"}], expected_lsns("orders", 1, 3));
  check_exactly_once(rg[{"users", "shop-eu"}], expected_lsns("users", 1, 3));
  check_exactly_once(rg[{"orders", "shop-us"}], expected_lsns("orders", 1, 3, 1000));
  check_exactly_once(rg[{"users", "shop-us"}], expected_lsns("users", 1, 3, 1000));
  CHECK(parquet_files(d.path(), ".pending").empty());
  // A heartbeat answers with the durable watermark.
  REQUIRE(a.send(proto::render(proto::heartbeat{"shop-eu", 35, 1})));
  auto hb = a.recv_as<proto::heartbeat_ack>();
  CHECK(hb.watermark == 35);
  a.close();
  b.close();
  CHECK_FALSE(r->stop());
  CHECK(r->stats().batches_accepted == 6);
}

TEST_CASE("receiver: a duplicate after a restart is still recognised; the welcome resumes the source", "[receiver]") {
  test::temp_dir d;
  {
    auto r = start(options(d.path()));
    plain_client a(r->port(), "");
    a.hello("s1");
    for (uint64_t k = 1; k <= 2; ++k) REQUIRE(a.send(proto::render(make_batch("s1", k))));
    CHECK(a.recv_as<proto::ack>().sequence_number == 1);
    CHECK(a.recv_as<proto::ack>().sequence_number == 2);
    a.close();
    CHECK_FALSE(r->stop());
  }
  auto before = parquet_files(d.path());
  auto r = start(options(d.path()));
  plain_client a(r->port(), "");
  auto w = a.hello("s1");
  CHECK(w.watermark == 25);
  CHECK(w.next_sequence == 3);
  // Batch 1 again, much later: acked as a duplicate, nothing written.
  auto again = make_batch("s1", 1);
  again.is_retry = true;
  again.retry_count = 1;
  REQUIRE(a.send(proto::render(again)));
  auto x = a.recv_as<proto::ack>();
  CHECK(x.duplicate);
  CHECK(x.sequence_number == 1);
  CHECK(x.watermark == 25);
  CHECK(parquet_files(d.path()) == before);
  // And it goes on from there.
  REQUIRE(a.send(proto::render(make_batch("s1", 3))));
  auto y = a.recv_as<proto::ack>();
  CHECK_FALSE(y.duplicate);
  CHECK(y.watermark == 35);
  check_exactly_once(ranges(d.path())[{"orders", "s1"}], expected_lsns("orders", 1, 3));
  a.close();
}

TEST_CASE("receiver: a gap is nacked naming what was expected, nothing written; the nacked batch retried later lands once",
          "[receiver]") {
  test::temp_dir d;
  auto r = start(options(d.path()));
  plain_client a(r->port(), "");
  a.hello("s1");
  // Sequence 2 before 1: a gap.
  REQUIRE(a.send(proto::render(make_batch("s1", 2))));
  auto n = a.recv_as<proto::nack>();
  CHECK(n.sequence_number == 2);
  CHECK(n.retryable);
  CHECK(has(n.reason, "gap"));
  CHECK(has(n.reason, "expects sequence 1"));
  CHECK(parquet_files(d.path()).empty());
  CHECK_FALSE(fs::exists(d / "_dosql/receiver.json"));
  // 1 lands; 3 with a wrong previousLsn is a gap too.
  REQUIRE(a.send(proto::render(make_batch("s1", 1))));
  CHECK(a.recv_as<proto::ack>().sequence_number == 1);
  auto bad = make_batch("s1", 3);
  bad.sequence_number = 2;
  REQUIRE(a.send(proto::render(bad)));
  auto n2 = a.recv_as<proto::nack>();
  CHECK(has(n2.reason, "expects sequence 2 with previousLsn 15"));
  auto files = parquet_files(d.path());
  // The nacked batch 2, sent again (a retry), is accepted like any other: it lands once.
  auto retry = make_batch("s1", 2);
  retry.is_retry = true;
  retry.retry_count = 1;
  REQUIRE(a.send(proto::render(retry)));
  auto ok = a.recv_as<proto::ack>();
  CHECK(ok.sequence_number == 2);
  CHECK_FALSE(ok.duplicate);
  REQUIRE(a.send(proto::render(retry)));  // and once more: now a duplicate
  CHECK(a.recv_as<proto::ack>().duplicate);
  auto rg = ranges(d.path());
  check_exactly_once(rg[{"orders", "s1"}], expected_lsns("orders", 1, 2));
  check_exactly_once(rg[{"users", "s1"}], expected_lsns("users", 1, 2));
  a.close();
}

TEST_CASE("receiver: a reconnecting source replaces its older connection; the welcome covers what was buffered", "[receiver]") {
  test::temp_dir d;
  auto o = options(d.path());
  o.flush_ms = 3600 * 1000;  // nothing flushes by age: the batch stays buffered until the hello
  auto r = start(o);
  plain_client old(r->port(), "");
  old.hello("s1");
  bool sent = old.send(proto::render(make_batch("s1", 1)));
  INFO(old.error().message());
  REQUIRE(sent);
  REQUIRE(old.send(proto::render(proto::heartbeat{"s1", 15, 0})));
  CHECK(old.recv_as<proto::heartbeat_ack>().watermark == 0);  // handled, buffered, not durable
  CHECK(parquet_files(d.path()).empty());
  plain_client fresh(r->port(), "");
  auto w = fresh.hello("s1");
  CHECK(w.watermark == 15);
  CHECK(w.next_sequence == 2);
  CHECK(parquet_files(d.path()).size() == 2);
  // The older connection got its ack (sent before it was replaced), then a 1008 naming why.
  CHECK(old.recv_as<proto::ack>().sequence_number == 1);
  CHECK(old.closed_code() == 1008);
  CHECK(has(old.close_reason(), "replaced by a newer connection"));
  REQUIRE(fresh.send(proto::render(make_batch("s1", 2))));
  REQUIRE(fresh.send(proto::render(proto::heartbeat{"s1", 25, 0})));
  CHECK(fresh.recv_as<proto::heartbeat_ack>().watermark == 15);
  CHECK_FALSE(r->stop());  // flushes: the ack of batch 2 goes out before the close
  CHECK(fresh.recv_as<proto::ack>().sequence_number == 2);
  CHECK(fresh.closed_code() == 1001);
  check_exactly_once(ranges(d.path())[{"orders", "s1"}], expected_lsns("orders", 1, 2));
}

TEST_CASE("receiver: a batch with a row that cannot be stored is nacked whole, nothing written", "[receiver]") {
  test::temp_dir d;
  auto r = start(options(d.path()));
  plain_client a(r->port(), "");
  a.hello("s1");
  auto b = make_batch("s1", 1);
  b.events[2].data->values[0] = std::string("not an integer");  // orders.id INTEGER: lossy
  REQUIRE(a.send(proto::render(b)));
  auto n = a.recv_as<proto::nack>();
  CHECK_FALSE(n.retryable);
  CHECK(has(n.reason, "lsn 13"));
  CHECK(has(n.reason, "'id'"));
  CHECK(parquet_files(d.path()).empty());
  REQUIRE(a.send(proto::render(make_batch("s1", 1))));  // the sequence is still expected
  CHECK(a.recv_as<proto::ack>().sequence_number == 1);
  a.close();
}

TEST_CASE("receiver: malformed frames get error frames, write nothing, and the third closes the connection (1008)", "[receiver]") {
  test::temp_dir d;
  auto o = options(d.path());
  auto r = start(o);
  {
    plain_client a(r->port(), "");
    REQUIRE(a.send(proto::render(make_batch("s1", 1))));  // before hello
    auto e1 = a.recv_as<proto::error_frame>();
    CHECK(e1.code == "PROTOCOL");
    CHECK(has(e1.message, "before hello"));
    a.hello("s1");
    REQUIRE(a.send("{\"type\":\"batch\",\"batchId\":"));  // not JSON
    auto e2 = a.recv_as<proto::error_frame>();
    CHECK(e2.code == "MALFORMED");
    CHECK(has(e2.message, "not JSON"));
    auto text = proto::render(make_batch("s1", 1));
    text.replace(text.find("\"lastLsn\":15"), 12, "\"lastLsn\":\"15\"");
    REQUIRE(a.send(text));  // a field of the wrong type
    auto e3 = a.recv_as<proto::error_frame>();
    CHECK(e3.code == "MALFORMED");
    CHECK(has(e3.message, "'lastLsn'"));
    CHECK(a.closed_code() == 1008);
    CHECK(has(a.close_reason(), "3 protocol violations"));
  }
  {
    plain_client b(r->port(), "");
    b.hello("s2");
    REQUIRE(b.send("\x01\x02", true));  // a binary frame
    CHECK(b.recv_as<proto::error_frame>().code == "MALFORMED");
    auto other = make_batch("s3", 1);  // another source's batch on this connection
    REQUIRE(b.send(proto::render(other)));
    auto e = b.recv_as<proto::error_frame>();
    CHECK(e.code == "PROTOCOL");
    CHECK(has(e.message, "names source 's3'"));
    // Not violations: the connection still works.
    REQUIRE(b.send(proto::render(make_batch("s2", 1))));
    CHECK(b.recv_as<proto::ack>().sequence_number == 1);
    b.close();
  }
  CHECK(ranges(d.path()).size() == 2);  // s2's orders and users only
  CHECK(state_of(d.path())["sources"].size() == 1);
  CHECK(r->stats().violations == 5);
}

TEST_CASE("receiver: an oversized frame closes the connection (1009), nothing written", "[receiver]") {
  test::temp_dir d;
  auto o = options(d.path());
  o.max_frame_bytes = 4096;
  auto r = start(o);
  plain_client a(r->port(), "");
  CHECK(a.hello("s1").max_frame_bytes == 4096);
  auto b = make_batch("s1", 1);
  b.events[0].data->values[2] = std::string(5000, 'x');
  REQUIRE(a.send(proto::render(b)));
  CHECK(a.closed_code() == 1009);
  CHECK(parquet_files(d.path()).empty());
  CHECK_FALSE(fs::exists(d / "_dosql/receiver.json"));
}

TEST_CASE("receiver: a wrong or missing token is refused before the upgrade (401), nothing written", "[receiver]") {
  test::temp_dir d;
  auto o = options(d.path());
  o.token = token;
  auto r = start(o);
  for (std::string bearer : {std::string(), std::string("wrong"), token + "x"}) {
    plain_client c(r->port(), bearer);
    INFO("bearer '" << bearer << "'");
    CHECK(c.status() == 401);
    CHECK_FALSE(c.send(proto::render(proto::hello{1, "s1", ""})));
  }
  plain_client ok(r->port(), token);
  REQUIRE(ok.status() == 101);
  ok.hello("s1");
  REQUIRE(ok.send(proto::render(make_batch("s1", 1))));
  CHECK(ok.recv_as<proto::ack>().sequence_number == 1);
  ok.close();
  CHECK_FALSE(r->stop());
  CHECK(state_of(d.path())["sources"].size() == 1);
}

TEST_CASE("receiver: a table whose columns change gets a new schema, field ids stable across restarts; an unsafe type "
          "change is refused",
          "[receiver]") {
  test::temp_dir d;
  {
    auto r = start(options(d.path()));
    plain_client a(r->port(), "");
    a.hello("s1");
    REQUIRE(a.send(proto::render(make_batch("s1", 1))));
    CHECK(a.recv_as<proto::ack>().sequence_number == 1);
    a.close();
  }
  auto ids = [&](const std::string& table) {
    std::map<std::string, int> m;
    auto st = state_of(d.path());  // (kept: a range over a temporary's member would dangle)
    for (auto& c : st["schemas"]["dosql/" + table]) m[c["name"]] = c["id"];
    return m;
  };
  auto before = ids("orders");
  CHECK(before["id"] == 6);
  CHECK(before["pic"] == 9);
  auto r = start(options(d.path()));
  plain_client a(r->port(), "");
  a.hello("s1");
  // orders: "note" dropped, "extra" added; "total" REAL -> TEXT is an unsafe type change: refused
  // (not retryable, naming table, column, types and LSN), nothing written, the schema kept.
  auto changed = [&](const char* total_type, value total) {
    auto b = make_batch("s1", 2);
    b.schemas["orders"] = {{"id", "INTEGER"}, {"total", total_type}, {"pic", "BLOB"}, {"extra", "INTEGER"}};
    for (auto& e : b.events)
      if (e.table == "orders")
        for (auto* img : {&e.data, &e.old_data})
          if (*img) **img = row{{"id", "total", "pic", "extra"}, {int64_t(e.lsn), total, bytes{1}, int64_t(7)}};
    return b;
  };
  REQUIRE(a.send(proto::render(changed("TEXT", std::string("t")))));
  auto refused = a.recv_as<proto::nack>();
  CHECK_FALSE(refused.retryable);
  CHECK_THAT(refused.reason, Catch::Contains("table 'orders' at LSN ") &&
                                 Catch::Contains("column 'total': unsafe type change double -> string (declared 'TEXT')"));
  CHECK(ids("orders") == before);
  REQUIRE(a.send(proto::render(changed("REAL", 2.5))));
  CHECK(a.recv_as<proto::ack>().sequence_number == 2);
  auto after = ids("orders");
  CHECK(after["id"] == 6);
  CHECK(after["pic"] == 9);
  CHECK(after["total"] == 7);
  CHECK(after["_hlc"] == 10);  // (the id after the table's first columns)
  CHECK(after["extra"] == 11);
  CHECK(after.count("note") == 0);
  CHECK(ids("users")["name"] == 7);
  a.close();
}

namespace {

// A batch of source s1 on table "items": `rows` inserts (id = LSN, the image's columns `cols`) and
// schema changes, each at its LSN.
struct evo_event {
  uint64_t lsn;
  std::optional<proto::schema_event> change;  // else an insert
};
proto::batch items_batch(uint64_t seq, uint64_t prev, uint64_t first, uint64_t last,
                         std::vector<lakehouse::source_column> cols, const std::vector<evo_event>& evs) {
  proto::batch b;
  b.source_id = "s1";
  b.batch_id = "s1:" + std::to_string(seq);
  b.sequence_number = seq;
  b.previous_lsn = prev;
  b.first_lsn = first;
  b.last_lsn = last;
  b.schemas["items"] = cols;
  auto current = cols;
  for (const auto& x : evs) {
    if (x.change) {
      b.schema_changes.push_back(*x.change);
      if (x.change->columns) current = *x.change->columns;
      continue;
    }
    cdc::change_event<row> e;
    e.type = cdc::change_type::insert;
    e.lsn = x.lsn;
    e.table = "items";
    e.timestamp = 1733222400000;
    row r;
    for (const auto& c : current) {
      r.columns.push_back(c.name);
      r.values.push_back(c.name == "id" ? value(static_cast<int64_t>(x.lsn)) : value(c.name + std::to_string(x.lsn)));
    }
    e.data = r;
    b.events.push_back(e);
  }
  return b;
}
proto::schema_event change_at(uint64_t lsn, std::string type, std::string column, std::string old_column,
                              std::string new_type, std::vector<lakehouse::source_column> after) {
  proto::schema_event s;
  s.event.lsn = lsn;
  s.event.table = "items";
  s.event.change_type = std::move(type);
  s.event.column = std::move(column);
  if (!old_column.empty()) s.event.old_column = std::move(old_column);
  if (!new_type.empty()) s.event.new_type = std::move(new_type);
  s.event.timestamp = 1733222400000;
  s.columns = std::move(after);
  return s;
}
nlohmann::json items_metadata(const std::string& dir) {
  auto meta = dir + "/dosql/items_changelog/metadata";
  int v = std::stoi(test::read_file(meta + "/version-hint.text"));
  return nlohmann::json::parse(test::read_file(meta + "/v" + std::to_string(v) + ".metadata.json"));
}
std::map<std::string, int> current_fields(const nlohmann::json& md) {
  std::map<std::string, int> m;
  for (const auto& sc : md["schemas"])
    if (sc["schema-id"] == md["current-schema-id"])
      for (const auto& f : sc["fields"])
        if (f["id"].get<int>() > 5 && f["name"] != "_hlc") m[f["name"].get<std::string>()] = f["id"].get<int>();
  return m;
}

}  // namespace

TEST_CASE("receiver: schema changes in a batch: a rename keeps its field id across restarts, a schema-only change "
          "is committed, ids are never reused, a dead-lettered batch moves the watermark",
          "[receiver][evolution]") {
  test::temp_dir d;
  using C = std::vector<lakehouse::source_column>;
  using M = std::map<std::string, int>;
  {
    auto r = start(options(d.path()));
    plain_client a(r->port(), "");
    a.hello("s1");
    // A row, then RENAME COLUMN name TO title with no row after it in the batch.
    REQUIRE(a.send(proto::render(items_batch(1, 0, 1, 2, C{{"id", "INTEGER"}, {"name", "TEXT"}},
                                             {{1, {}}, {2, change_at(2, "alter_column", "title", "name", "TEXT",
                                                                     C{{"id", "INTEGER"}, {"title", "TEXT"}})}}))));
    CHECK(a.recv_as<proto::ack>().sequence_number == 1);
    a.close();
    CHECK_FALSE(r->stop());
  }
  auto md = items_metadata(d.path());
  CHECK(current_fields(md) == M{{"id", 6}, {"title", 7}});
  CHECK(md["schemas"].size() == 2);  // the row's schema (name) and the renamed one
  CHECK(md["last-column-id"] == 8);  // _hlc: 8, the id after the table's first columns
  {
    // After a restart the ids come from the table: a row under the new name keeps id 7.
    auto r = start(options(d.path()));
    plain_client a(r->port(), "");
    CHECK(a.hello("s1").watermark == 2);
    REQUIRE(a.send(proto::render(items_batch(2, 2, 3, 3, C{{"id", "INTEGER"}, {"title", "TEXT"}}, {{3, {}}}))));
    CHECK(a.recv_as<proto::ack>().sequence_number == 2);
    // A dead-lettered batch: no events, the watermark moves past it.
    auto dl = items_batch(3, 3, 4, 6, C{}, {});
    dl.schemas.clear();
    dl.dead_lettered = true;
    REQUIRE(a.send(proto::render(dl)));
    auto ack3 = a.recv_as<proto::ack>();
    CHECK(ack3.sequence_number == 3);
    CHECK(ack3.watermark == 6);
    // ADD COLUMN extra, DROP COLUMN title, ADD COLUMN title again: schema-only, committed; the
    // re-added title is a new column (id 10), never 7 again.
    REQUIRE(a.send(proto::render(items_batch(
        4, 6, 7, 9, C{{"id", "INTEGER"}, {"title", "TEXT"}},
        {{7, change_at(7, "add_column", "extra", "", "INTEGER", C{{"id", "INTEGER"}, {"title", "TEXT"}, {"extra", "INTEGER"}})},
         {8, change_at(8, "drop_column", "title", "", "", C{{"id", "INTEGER"}, {"extra", "INTEGER"}})},
         {9, change_at(9, "add_column", "title", "", "BLOB", C{{"id", "INTEGER"}, {"extra", "INTEGER"}, {"title", "BLOB"}})}}))));
    CHECK(a.recv_as<proto::ack>().sequence_number == 4);
    a.close();
    CHECK_FALSE(r->stop());
  }
  md = items_metadata(d.path());
  CHECK(current_fields(md) == M{{"id", 6}, {"extra", 9}, {"title", 10}});
  CHECK(md["last-column-id"] == 10);
  const auto& last = md["snapshots"].back()["summary"];
  CHECK(last["added-data-files"] == "0");  // schema only
  CHECK(last["dosql.last-lsn"] == "9");
  CHECK(last["total-records"] == "2");
  CHECK(state_of(d.path())["sources"]["s1"]["watermark"] == 9);
}

TEST_CASE("receiver: an I/O fault during a flush acks nothing, shows nothing, keeps the state; the resend lands once",
          "[receiver][fault]") {
  using op = test::fault_fs::op;
  for (op kind : {op::open, op::write, op::sync, op::dir_sync, op::rename, op::mkdir}) {
    for (uint64_t nth : {1, 2, 3, 5, 8}) {
      test::temp_dir d;
      auto r = start(options(d.path()));
      plain_client a(r->port(), "");
      a.hello("s1");
      REQUIRE(a.send(proto::render(make_batch("s1", 1))));
      REQUIRE(a.recv_as<proto::ack>().sequence_number == 1);
      auto state_before = test::read_file(d / "_dosql/receiver.json");
      auto files_before = parquet_files(d.path());
      test::fault_fs ffs;
      bool acked = false;
      {
        test::fault_fs::scope scope(ffs);
        ffs.arm(kind, nth, EIO);
        REQUIRE(a.send(proto::render(make_batch("s1", 2))));
        auto m = a.recv_msg();
        acked = std::holds_alternative<proto::ack>(m);
        INFO("fault at " << test::fault_fs::name(kind) << " #" << nth << " (hit: " << ffs.hit() << ")");
        if (!ffs.hit()) {
          CHECK(acked);
        } else if (!acked) {
          REQUIRE(std::holds_alternative<proto::nack>(m));
          CHECK(std::get<proto::nack>(m).retryable);
          CHECK(has(std::get<proto::nack>(m).reason, "flush failed"));
          CHECK(parquet_files(d.path()) == files_before);  // nothing visible
          CHECK(parquet_files(d.path(), ".pending").empty());
          CHECK(test::read_file(d / "_dosql/receiver.json") == state_before);  // state intact
        }
      }
      if (!acked) {  // the streamer resends; it lands
        REQUIRE(a.send(proto::render(make_batch("s1", 2))));
        REQUIRE(a.recv_as<proto::ack>().sequence_number == 2);
      }
      a.close();
      CHECK_FALSE(r->stop());
      // After a restart (which redoes a commit whose renames failed), every row is there once.
      auto r2 = start(options(d.path()));
      CHECK_FALSE(r2->stop());
      auto rg = ranges(d.path());
      check_exactly_once(rg[{"orders", "s1"}], expected_lsns("orders", 1, 2));
      check_exactly_once(rg[{"users", "s1"}], expected_lsns("users", 1, 2));
    }
  }
}

TEST_CASE("receiver: on start, a committed flush is finished and an uncommitted one discarded", "[receiver]") {
  test::temp_dir d;
  {
    auto r = start(options(d.path()));
    plain_client a(r->port(), "");
    a.hello("s1");
    REQUIRE(a.send(proto::render(make_batch("s1", 1))));
    REQUIRE(a.recv_as<proto::ack>().sequence_number == 1);
    a.close();
  }
  // Fake a crash between the commit point and the renames: move a committed file back to
  // .pending and name it in the state; and leave an uncommitted .pending and .tmp beside it.
  auto files = parquet_files(d.path());
  REQUIRE(files.size() == 2);
  auto committed = files[0];
  fs::rename(d / committed, d / (committed + ".pending"));
  auto st = state_of(d.path());
  st["pending"] = {committed + ".pending"};
  test::write_file(d / "_dosql/receiver.json", st.dump());
  auto data_dir = d.path() + "/" + fs::path(committed).parent_path().string();
  test::write_file(data_dir + "/s1-99-99-00000000000000000000000000000000.parquet.pending", "junk");
  test::write_file(data_dir + "/s1-99-99-00000000000000000000000000000001.parquet.pending.tmp", "junk");
  auto r = start(options(d.path()));
  CHECK(parquet_files(d.path()) == files);
  CHECK(parquet_files(d.path(), ".pending").empty());
  CHECK(parquet_files(d.path(), ".tmp").empty());
  // A second receiver on the same directory is refused.
  auto second = lakehouse::receiver::start(options(d.path()));
  REQUIRE_FALSE(second.ok());
  CHECK(second.err().code() == ec::busy);
}

TEST_CASE("receiver: positions come from the Iceberg tables; a flush committed in one table only is completed once; "
          "orphans are swept", "[receiver][iceberg]") {
  test::temp_dir d;
  {
    auto r = start(options(d.path()));
    plain_client a(r->port(), "");
    a.hello("s1");
    for (uint64_t k = 1; k <= 2; ++k) {
      REQUIRE(a.send(proto::render(make_batch("s1", k))));
      REQUIRE(a.recv_as<proto::ack>().sequence_number == k);
    }
    a.close();
    CHECK_FALSE(r->stop());
  }
  // Make it look as if batch 2's flush crashed after the orders table's commit and before the
  // users table's: users loses its version 2 (its data file stays, an orphan), and the state file
  // is gone (the tables must be enough). Plus orphans of a flush that never committed.
  const std::string users = d.path() + "/dosql/users_changelog", orders = d.path() + "/dosql/orders_changelog";
  REQUIRE(fs::exists(users + "/metadata/v2.metadata.json"));
  fs::remove(users + "/metadata/v2.metadata.json");
  test::write_file(users + "/metadata/version-hint.text", "1");
  fs::remove(d / "_dosql/receiver.json");
  test::write_file(orders + "/metadata/m-42.avro", "junk");
  test::write_file(orders + "/metadata/v3.metadata.json.0123.tmp", "junk");
  test::write_file(orders + "/data/s1-99-99-00000000000000000000000000000000.parquet", "junk");
  auto users_files = [&] { return test::list_files(users + "/data"); };
  REQUIRE(users_files().size() == 2);
  {
    auto r = start(options(d.path()));
    CHECK(users_files().size() == 1);  // batch 2's users file: no snapshot names it
    CHECK_FALSE(fs::exists(orders + "/metadata/m-42.avro"));
    CHECK_FALSE(fs::exists(orders + "/metadata/v3.metadata.json.0123.tmp"));
    CHECK_FALSE(fs::exists(orders + "/data/s1-99-99-00000000000000000000000000000000.parquet"));
    plain_client a(r->port(), "");
    auto w = a.hello("s1");
    CHECK(w.watermark == 15);  // batch 1: the newest flush both its tables hold
    CHECK(w.next_sequence == 2);
    REQUIRE(a.send(proto::render(make_batch("s1", 2))));
    auto ack = a.recv_as<proto::ack>();
    CHECK(ack.sequence_number == 2);
    CHECK_FALSE(ack.duplicate);
    CHECK(ack.watermark == 25);
    a.close();
    CHECK_FALSE(r->stop());
  }
  // Orders kept its batch-2 rows (its mark), users took them: each once.
  auto rg = ranges(d.path());
  check_exactly_once(rg[{"orders", "s1"}], expected_lsns("orders", 1, 2));
  check_exactly_once(rg[{"users", "s1"}], expected_lsns("users", 1, 2));
  CHECK(test::read_file(users + "/metadata/version-hint.text") == "2");
  CHECK(test::read_file(orders + "/metadata/version-hint.text") == "2");  // orders: nothing new to commit
  auto v2 = nlohmann::json::parse(test::read_file(users + "/metadata/v2.metadata.json"));
  auto& summary = v2["snapshots"][1]["summary"];
  CHECK(summary["dosql.flush-tables"] == "users");
  CHECK(summary["dosql.last-lsn"] == "25");
  CHECK(summary["dosql.sequence"] == "2");
  CHECK(summary["total-records"] == "4");
  // And from the tables alone again: the state file is a cache.
  fs::remove(d / "_dosql/receiver.json");
  auto r = start(options(d.path()));
  plain_client a(r->port(), "");
  auto w = a.hello("s1");
  CHECK(w.watermark == 25);
  CHECK(w.next_sequence == 3);
  a.close();
}

TEST_CASE("receiver: wss:// with a certificate", "[receiver]") {
  test::temp_dir d;
  auto cert = d / "cert.pem", key = d / "key.pem";
  REQUIRE(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 2 -keyout " + test::q(key) +
                       " -out " + test::q(cert) + " >/dev/null 2>&1")
                          .c_str()) == 0);
  auto o = options(d / "lake");
  o.cert_file = cert;
  o.key_file = key;
  auto r = start(o);
  CHECK(std::string(r->scheme()) == "wss");
  ssl::context ctx(ssl::context::tls_client);
  ctx.set_verify_mode(ssl::verify_none);
  tls_client a(r->port(), "", ctx);
  REQUIRE(a.status() == 101);
  a.hello("s1");
  REQUIRE(a.send(proto::render(make_batch("s1", 1))));
  CHECK(a.recv_as<proto::ack>().sequence_number == 1);
  a.close();
}

// ---- the real process ------------------------------------------------------------------------

namespace {

// A running `dosql lakehouse serve --dir DIR --port 0 ARGS`; SIGKILLed on destruction unless stopped.
class receiver_process {
 public:
  receiver_process(const std::string& dir, std::vector<std::string> args = {}) {
    std::vector<std::string> a{"lakehouse", "serve", "--dir", dir, "--port", "0"};
    a.insert(a.end(), args.begin(), args.end());
    child_ = test::spawn_dosql(a, {}, err_path_);
    std::string got;
    test::read_until(child_.out, got, [](const std::string& s) { return has(s, "\n"); }, std::chrono::seconds(20));
    std::smatch m;
    auto first = got.substr(0, got.find('\n'));
    INFO("first line: " << first << "\nstderr: " << test::read_file(err_path_));
    REQUIRE(std::regex_match(first, m, std::regex("listening on wss?://127\\.0\\.0\\.1:([0-9]+)")));
    port_ = static_cast<uint16_t>(std::stoi(m[1]));
  }
  ~receiver_process() {
    kill();
    ::close(child_.out);
  }
  uint16_t port() const { return port_; }
  void kill() {
    if (child_.pid > 0) {
      ::kill(child_.pid, SIGKILL);
      test::wait_exit(child_.pid);
      child_.pid = -1;
    }
  }
  int stop() {
    ::kill(child_.pid, SIGTERM);
    int code = test::wait_exit(child_.pid, std::chrono::seconds(20));
    child_.pid = -1;
    return code;
  }
  std::string err() const { return test::read_file(err_path_); }

 private:
  test::temp_dir scratch_;
  std::string err_path_ = scratch_ / "stderr";
  test::child child_;
  uint16_t port_ = 0;
};

}  // namespace

TEST_CASE("lakehouse serve: the real process acks, logs to stderr, flushes and exits 0 on SIGTERM", "[receiver][process]") {
  test::temp_dir d;
  receiver_process p(d / "lake", {"--token", token, "--flush-age", "1h", "--flush-rows", "1000000"});
  {
    plain_client bad(p.port(), "nope");
    CHECK(bad.status() == 401);
  }
  plain_client a(p.port(), token);
  a.hello("s1");
  REQUIRE(a.send(proto::render(make_batch("s1", 1))));
  // Frames are handled in order: once the heartbeat is answered, the batch is buffered (no flush
  // trigger yet, its watermark not durable): SIGTERM flushes it, then acks, then closes.
  REQUIRE(a.send(proto::render(proto::heartbeat{"s1", 15, 0})));
  CHECK(a.recv_as<proto::heartbeat_ack>().watermark == 0);
  auto code = p.stop();
  CHECK(code == 0);
  auto m = a.recv_as<proto::ack>();
  CHECK(m.sequence_number == 1);
  CHECK(a.closed_code() == 1001);
  check_exactly_once(ranges(d / "lake")[{"orders", "s1"}], expected_lsns("orders", 1, 1));
  auto err = p.err();
  CHECK(has(err, "dosql lakehouse: listening on ws://127.0.0.1:"));
  CHECK(has(err, "refused a connection: 401"));
  CHECK(has(err, "stopped: 1 batches, 5 rows in 2 files"));
  // Usage errors are one line.
  auto x = test::dosql_run("lakehouse serve --dir " + test::q(d / "lake2") + " --flush-bytes lots");
  CHECK(x.code == 2);
  CHECK(has(x.err, "--flush-bytes"));
  auto y = test::dosql_run("lakehouse serve --dir " + test::q(d / "lake3") + " --cert " + test::q(d / "none.pem"));
  CHECK(y.code == 2);
}

// SIGKILL of the receiver at random moments, >= 50 rounds, while a scripted streamer sends: after
// each restart it resumes from the welcome (resending what was not acked) and sometimes resends
// an acked batch; in the end every LSN is in exactly one file, and DuckDB (ctest
// lakehouse_receiver_duckdb) reads the changelog back equal to what was sent.
TEST_CASE("lakehouse serve: SIGKILL at random moments, every row lands exactly once", "[receiver][kill]") {
  const char* out_env = std::getenv("DOSQL_LAKEHOUSE_RECEIVER_OUT");
  test::temp_dir d;
  const std::string lake = out_env ? std::string(out_env) : d / "lake";
  fs::remove_all(lake);
  const uint64_t total = 800;  // batches (the rounds send about half; the rest goes after them)
  std::mt19937_64 rng(Catch::rngSeed() ? Catch::rngSeed() : 42);
  uint64_t rounds = 0, duplicates_sent = 0;
  for (; rounds < 60; ++rounds) {
    receiver_process p(lake, {"--flush-rows", std::to_string(3 + rounds % 7), "--flush-age", "5ms"});
    plain_client c(p.port(), "");
    REQUIRE(c.status() == 101);
    auto w = c.hello("killme");
    uint64_t next = w.next_sequence;
    REQUIRE(w.watermark == (next == 1 ? 0 : 10 * (next - 1) + 5));  // the welcome matches the batches
    if (next > 1 && rng() % 3 == 0) {  // an acked batch again: a duplicate
      REQUIRE(c.send(proto::render(make_batch("killme", 1 + rng() % (next - 1)))));
      ++duplicates_sent;
    }
    // Send up to a window of batches, then SIGKILL at a random point while acks come back.
    uint64_t burst = 1 + rng() % 12, kill_after = rng() % (burst + 2);
    uint64_t sent = 0, acks = 0;
    for (uint64_t k = next; k < next + burst && k <= total; ++k)
      if (c.send(proto::render(make_batch("killme", k)))) ++sent;
    const uint64_t wait_for = std::min(kill_after, sent);  // acks to see before the kill
    while (c.ok() && acks < wait_for) {
      auto m = c.recv(std::chrono::seconds(30));
      if (!m) break;
      auto msg = proto::parse(*m);
      REQUIRE(msg.ok());
      if (std::holds_alternative<proto::nack>(*msg)) FAIL("nack: " << std::get<proto::nack>(*msg).reason);
      if (auto* a = std::get_if<proto::ack>(&*msg); a && !a->duplicate) ++acks;
    }
    REQUIRE_FALSE(c.timed_out());
    if (rng() % 2) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    p.kill();
  }
  // Finish: send whatever is left, all acked, then stop cleanly.
  {
    receiver_process p(lake, {"--flush-rows", "50", "--flush-age", "5ms"});
    plain_client c(p.port(), "");
    auto w = c.hello("killme");
    for (uint64_t k = w.next_sequence; k <= total; ++k) REQUIRE(c.send(proto::render(make_batch("killme", k))));
    uint64_t want = total + 1 - w.next_sequence, got = 0;
    while (got < want) {
      auto a = c.recv_as<proto::ack>();
      if (!a.duplicate) ++got;
    }
    c.close();
    CHECK(p.stop() == 0);
  }
  INFO(rounds << " rounds, " << duplicates_sent << " duplicates sent");
  CHECK(rounds >= 50);
  auto rg = ranges(lake);
  check_exactly_once(rg[{"orders", "killme"}], expected_lsns("orders", 1, total));
  check_exactly_once(rg[{"users", "killme"}], expected_lsns("users", 1, total));
  CHECK(parquet_files(lake, ".pending").empty());
  if (out_env) {  // the expected changelog for the outside readers
    nlohmann::json rows = nlohmann::json::array();
    for (uint64_t k = 1; k <= total; ++k)
      for (auto& e : make_batch("killme", k).events) {
        const row& img = e.type == cdc::change_type::del ? *e.old_data : *e.data;
        nlohmann::json r;
        r["table"] = e.table;
        r["_op"] = e.type == cdc::change_type::insert ? "INSERT" : e.type == cdc::change_type::update ? "UPDATE" : "DELETE";
        r["_lsn"] = e.lsn;
        r["_txn_id"] = e.txn_id;
        r["_ts_ms"] = e.timestamp;
        r["_source"] = "killme";
        json_options jo;
        jo.lossless_text = true;
        r["row"] = nlohmann::json::parse(to_json(img, jo));
        rows.push_back(std::move(r));
      }
    std::ofstream(lake + "/expected.json") << rows.dump();
  }
}
