// Schema evolution end to end (docs/LAKEHOUSE.md, "Schema evolution"): a real database, the real
// streamer and the real receiver in this process, and npm icebird (check_evolution.mjs) reading
// the Iceberg tables by field id.
//  - ALTER TABLE ADD / RENAME / DROP COLUMN mid-stream: the metadata has a schema per change with
//    the expected field ids (a renamed column keeps its id, a dropped one's id is never reused);
//    icebird's read of the current snapshot equals the source's changes under the current
//    columns (rows written before the rename come back under the new name: read by id), and
//    time travel to the version before the first ALTER gives the old columns.
//  - An unsafe change (a table rebuilt with a column TEXT -> INTEGER under the same name): the
//    receiver refuses it naming table, column, types and LSN; with a dead-letter queue the
//    streamer puts the batch there and goes on (every change is in the lake or in the queue),
//    without one it stops `failed`; the receiver stays up either way.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <dosql/cdc.hpp>
#include <dosql/database.hpp>
#include <dosql/lakehouse/receiver.hpp>
#include <dosql/lakehouse/streamer.hpp>
#include <dosql/reliability/dead_letter_queue.hpp>

#include "cli/support.hpp"
#include "common/scratch.hpp"
#include "test_util.hpp"

using namespace dosql;
using json = nlohmann::json;
using test::must;
namespace lh = dosql::lakehouse;
namespace fs = std::filesystem;

namespace {

lh::streamer_config evo_config(uint16_t port) {
  lh::streamer_config c;
  c.url = "ws://127.0.0.1:" + std::to_string(port);
  c.source_id = "src";
  c.max_batch_size = 3;
  c.max_batch_age = std::chrono::milliseconds(20);
  c.retry.initial_delay_ms = 10;
  c.retry.max_delay_ms = 100;
  c.heartbeat_interval = std::chrono::milliseconds(100);
  c.io_timeout = std::chrono::seconds(5);
  return c;
}

std::unique_ptr<lh::receiver> evo_receiver(const std::string& dir, std::vector<std::string>* log = nullptr,
                                           std::mutex* mu = nullptr) {
  lh::receiver_options o;
  o.dir = dir;
  o.flush_ms = 20;
  if (log)
    o.log = [log, mu](const std::string& l) {
      std::lock_guard<std::mutex> g(*mu);
      log->push_back(l);
    };
  return must(lh::receiver::start(o));
}

// The database's last LSN (schema changes included).
uint64_t tail(database& db) {
  cdc::subscribe_options so;
  so.stop_at_tail = true;
  so.filter.operations = {op_type::insert, op_type::update, op_type::del, op_type::schema};
  auto sub = must(cdc::create_cdc(db.shared_from_this()).subscribe(so));
  uint64_t last = 0;
  for (auto& e : *sub) last = e.lsn;
  return last;
}

bool wait_for(const std::function<bool()>& f, std::chrono::seconds t = std::chrono::seconds(60)) {
  for (auto until = std::chrono::steady_clock::now() + t; std::chrono::steady_clock::now() < until;) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return f();
}

json latest_metadata(const std::string& table_dir) {
  int best = 0;
  for (const auto& f : fs::directory_iterator(table_dir + "/metadata")) {
    auto n = f.path().filename().string();
    if (n.starts_with("v") && n.ends_with(".metadata.json")) best = std::max(best, std::stoi(n.substr(1)));
  }
  REQUIRE(best > 0);
  return json::parse(test::read_file(table_dir + "/metadata/v" + std::to_string(best) + ".metadata.json"));
}

// name -> id of the schema `id` in `md`.
std::map<std::string, int> fields_of(const json& md, int id) {
  std::map<std::string, int> out;
  for (const auto& s : md["schemas"])
    if (s["schema-id"] == id)
      for (const auto& f : s["fields"]) out[f["name"].get<std::string>()] = f["id"].get<int>();
  return out;
}

std::string run_node(const std::string& args) {
  std::string cmd = "cd " + test::q(DOSQL_LH_TESTS) + " && node " + args + " 2>&1; echo \"rc=$?\"";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  while (size_t k = std::fread(buf, 1, sizeof buf, p)) out.append(buf, k);
  ::pclose(p);
  return out;
}

json image_json(const row& r) {
  json o = json::object();
  for (size_t i = 0; i < r.columns.size(); ++i) o[r.columns[i]] = json::parse(dosql::to_json(r.values[i]));
  return o;
}

}  // namespace

TEST_CASE("schema evolution: ADD, RENAME and DROP COLUMN mid-stream keep Iceberg field ids; icebird reads every "
          "change, and the version before the ALTER with the old columns",
          "[lakehouse][evolution]") {
  test::temp_dir d;
  runtime rt;
  auto db = must(rt.open(d / "src"));
  auto recv = evo_receiver(d / "lake");
  must(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, price REAL)"));
  for (int i = 1; i <= 3; ++i)
    must(db->exec("INSERT INTO t VALUES(?, ?, ?)", {value(int64_t{i}), value("n" + std::to_string(i)), value(i * 1.5)}));
  auto st = must(lh::streamer::create(db, evo_config(recv->port())));
  REQUIRE_FALSE(st->connect());
  REQUIRE_FALSE(st->start(0));
  auto landed = [&] {
    uint64_t at = tail(*db);
    return wait_for([&] { return st->checkpoint().committed_lsn >= at; });
  };
  REQUIRE(landed());  // the old schema is committed on its own

  // ADD COLUMN, rows with it, then in one go (one batch, likely) RENAME and rows under the new name.
  must(db->exec("ALTER TABLE t ADD COLUMN note TEXT"));
  must(db->exec("INSERT INTO t VALUES(4, 'n4', 6.0, 'hello')"));
  must(db->exec("UPDATE t SET note = 'first' WHERE id = 1"));
  REQUIRE(landed());
  must(db->exec("ALTER TABLE t RENAME COLUMN name TO title"));
  must(db->exec("INSERT INTO t VALUES(5, 't5', 7.5, 'x')"));
  must(db->exec("UPDATE t SET title = 'T2' WHERE id = 2"));
  must(db->exec("ALTER TABLE t DROP COLUMN price"));
  must(db->exec("INSERT INTO t VALUES(6, 't6', 'y')"));
  must(db->exec("DELETE FROM t WHERE id = 3"));
  REQUIRE(landed());
  // A column added after a drop gets a new id (never the dropped one's), and a type given by
  // its declared name.
  must(db->exec("ALTER TABLE t ADD COLUMN qty INTEGER"));
  must(db->exec("INSERT INTO t VALUES(7, 't7', 'z', 3)"));
  REQUIRE(landed());
  st->stop();
  REQUIRE_FALSE(recv->stop());

  const std::string tdir = d / "lake/dosql/t_changelog";
  auto md = latest_metadata(tdir);
  INFO(md.dump(1));
  auto cur = fields_of(md, md["current-schema-id"].get<int>());
  // (_hlc: 9, the id after the columns of the table's CREATE TABLE)
  CHECK(cur == std::map<std::string, int>{{"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5}, {"_hlc", 9},
                                          {"id", 6}, {"title", 7}, {"note", 10}, {"qty", 11}});
  CHECK(md["last-column-id"] == 11);
  // Every schema the table went through, old ones kept: [name, price], + note, name -> title,
  // - price, + qty.
  std::vector<std::map<std::string, int>> seen;
  for (const auto& s : md["schemas"]) seen.push_back(fields_of(md, s["schema-id"].get<int>()));
  auto has = [&](std::map<std::string, int> user) {
    std::map<std::string, int> f{{"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5}, {"_hlc", 9}};
    f.insert(user.begin(), user.end());
    return std::find(seen.begin(), seen.end(), f) != seen.end();
  };
  CHECK(has({{"id", 6}, {"name", 7}, {"price", 8}}));
  CHECK(has({{"id", 6}, {"name", 7}, {"price", 8}, {"note", 10}}));
  CHECK(has({{"id", 6}, {"title", 7}, {"price", 8}, {"note", 10}}));
  CHECK(has({{"id", 6}, {"title", 7}, {"note", 10}}));
  CHECK(has({{"id", 6}, {"title", 7}, {"note", 10}, {"qty", 11}}));
  CHECK(md["schemas"].size() == 5);
  CHECK(md["current-schema-id"] == 4);

  // The source's changes, under the current columns (name is title: same id; price is gone).
  json expected = json::object();
  expected["current"] = json::array();
  expected["before"] = json::array();
  {
    cdc::subscribe_options so;
    so.stop_at_tail = true;
    so.filter.operations = {op_type::insert, op_type::update, op_type::del};
    auto sub = must(cdc::create_cdc(db).subscribe(so));
    for (auto& e : *sub) {
      auto ev = must(cdc::to_event(e));
      auto& c = std::get<cdc::change_event<row>>(ev);
      auto img = image_json(c.type == cdc::change_type::del ? *c.old_data : *c.data);
      std::string op = c.type == cdc::change_type::insert ? "INSERT" : c.type == cdc::change_type::update ? "UPDATE" : "DELETE";
      json now = {{"_op", op}, {"_lsn", std::to_string(c.lsn)}, {"id", nullptr}, {"title", nullptr}, {"note", nullptr},
                  {"qty", nullptr}};
      for (auto& [k, v] : img.items()) {
        auto name = k == "name" ? std::string("title") : k;
        if (now.contains(name)) now[name] = v.is_number_integer() ? json(std::to_string(v.get<int64_t>())) : v;
      }
      expected["current"].push_back(now);
      if (!img.contains("note"))  // before the first ALTER
        expected["before"].push_back({{"_op", op}, {"_lsn", std::to_string(c.lsn)}, {"id", std::to_string(img["id"].get<int64_t>())},
                                      {"name", img["name"]}, {"price", img["price"]}});
    }
  }
  REQUIRE(expected["current"].size() == 10);
  REQUIRE(expected["before"].size() == 3);
  test::write_file(d / "expected.json", expected.dump());
  auto out = run_node("check_evolution.mjs " + test::q(tdir) + " " + test::q(d / "expected.json"));
  INFO(out);
  CHECK(out.find("rc=0") != std::string::npos);
  REQUIRE_FALSE(db->close());
}

TEST_CASE("schema evolution: an unsafe type change is refused naming table, column, types and LSN; with a "
          "dead-letter queue the batch goes there and the stream goes on, without one the streamer stops",
          "[lakehouse][evolution][dlq]") {
  test::temp_dir d;
  runtime rt;
  auto db = must(rt.open(d / "src"));
  std::vector<std::string> log;
  std::mutex mu;
  auto recv = evo_receiver(d / "lake", &log, &mu);
  must(db->exec("CREATE TABLE u(id INTEGER PRIMARY KEY, code TEXT)"));
  must(db->exec("CREATE TABLE ok(id INTEGER PRIMARY KEY)"));
  must(db->exec("INSERT INTO u VALUES(1, '10'), (2, '20')"));
  auto dlq = std::shared_ptr<reliability::dead_letter_queue>(must(reliability::dead_letter_queue::open(d / "dlq.sqlite")));
  auto cfg = evo_config(recv->port());
  cfg.dead_letters = dlq;
  auto st = must(lh::streamer::create(db, cfg));
  REQUIRE_FALSE(st->connect());
  REQUIRE_FALSE(st->start(0));
  uint64_t before = tail(*db);
  REQUIRE(wait_for([&] { return st->checkpoint().committed_lsn >= before; }));

  // SQLite changes a type only by rebuilding the table: code TEXT -> INTEGER under the same name.
  must(db->exec("CREATE TABLE u_new(id INTEGER PRIMARY KEY, code INTEGER)"));
  must(db->exec("INSERT INTO u_new SELECT id, CAST(code AS INTEGER) FROM u"));
  must(db->exec("DROP TABLE u"));
  must(db->exec("ALTER TABLE u_new RENAME TO u"));
  must(db->exec("INSERT INTO u VALUES(3, 30)"));
  // The stream goes on: the receiver takes what follows.
  must(db->exec("INSERT INTO ok VALUES(1), (2)"));
  uint64_t end = tail(*db);
  REQUIRE(wait_for([&] { return st->checkpoint().committed_lsn >= end; }));
  auto status = st->status();
  INFO(status.last_error);
  CHECK(status.state == lh::streamer_state::streaming);
  CHECK(status.dead_lettered_batches >= 1);
  CHECK_THAT(status.last_error, Catch::Contains("table 'u' at LSN") && Catch::Contains("column 'code': unsafe type change string -> long") &&
                                    Catch::Contains("declared 'INTEGER'") && Catch::Contains("dead-letter queue"));
  st->stop();
  {
    std::lock_guard<std::mutex> g(mu);
    bool logged = false;
    for (auto& l : log) logged = logged || (l.find("nack") != std::string::npos && l.find("unsafe type change") != std::string::npos);
    CHECK(logged);
  }

  // Nothing lost: every change after `before` is in the lake (icebird) or in the queue.
  auto letters = must(dlq->list());
  CHECK(letters.size() == status.dead_lettered_entries);
  std::set<uint64_t> in_dlq;
  bool rebuild_in_dlq = false;
  for (auto& l : letters) {
    in_dlq.insert(l.entry.lsn);
    CHECK_THAT(l.last_error, Catch::Contains("unsafe type change"));
    if (l.entry.op == op_type::insert && l.entry.table == "u") rebuild_in_dlq = true;
  }
  CHECK(rebuild_in_dlq);  // the row under the new type is held there
  auto out = run_node("check_evolution.mjs --lsns " + test::q(d / "lake/dosql"));
  INFO(out);
  REQUIRE(out.find("rc=0") != std::string::npos);
  auto lake = json::parse(out.substr(0, out.find('\n')));
  std::set<uint64_t> in_lake;
  for (auto& [table, lsns] : lake.items())
    for (auto& l : lsns) CHECK(in_lake.insert(std::stoull(l.template get<std::string>())).second);  // once
  {
    cdc::subscribe_options so;
    so.stop_at_tail = true;
    so.filter.operations = {op_type::insert, op_type::update, op_type::del, op_type::schema};
    auto sub = must(cdc::create_cdc(db).subscribe(so));
    size_t changes = 0;
    for (auto& e : *sub) {
      if (e.op == op_type::schema) continue;
      ++changes;
      INFO("lsn " << e.lsn << " table " << e.table);
      CHECK(in_lake.count(e.lsn) + in_dlq.count(e.lsn) == 1);  // exactly one of them
    }
    CHECK(changes == 7);
  }
  // The table u kept its schema (code: string, same id): nothing unsafe was committed.
  auto md = latest_metadata(d / "lake/dosql/u_changelog");
  CHECK(fields_of(md, md["current-schema-id"].get<int>())["code"] == 7);
  CHECK(fields_of(md, md["current-schema-id"].get<int>())["_hlc"] == 8);  // the id after the CREATE's columns
  for (const auto& f : md["schemas"].back()["fields"])
    if (f["name"] == "code") CHECK(f["type"] == "string");

  // Without a dead-letter queue the streamer stops, failed, with the reason; the receiver stays up.
  {
    must(db->exec("INSERT INTO u VALUES(4, 40)"));
    auto c2 = evo_config(recv->port());
    auto s2 = must(lh::streamer::create(db, c2));
    REQUIRE_FALSE(s2->connect());
    REQUIRE_FALSE(s2->start(0));
    auto done = s2->wait(std::chrono::seconds(60));
    REQUIRE(done);
    CHECK_THAT(done->message(), Catch::Contains("column 'code': unsafe type change string -> long"));
    CHECK(s2->status().state == lh::streamer_state::failed);
  }
  must(db->exec("INSERT INTO ok VALUES(3)"));
  {
    auto c3 = evo_config(recv->port());
    c3.source_id = "other";
    c3.tables = {"ok"};
    auto s3 = must(lh::streamer::create(db, c3));
    REQUIRE_FALSE(s3->connect());
    REQUIRE_FALSE(s3->start(0, true));
    auto done = s3->wait(std::chrono::seconds(60));
    REQUIRE(done);
    CHECK_FALSE(*done);
  }
  REQUIRE_FALSE(recv->stop());
  REQUIRE_FALSE(db->close());
}
