// The program, run for real: a session of every command, and every rule violation and malformed
// command: a clear error on stderr, a non-zero exit, nothing written.
#include "support.hpp"

using namespace es;
using namespace es::test;

namespace {

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// The events table as it is (the CLI has exited: its lock is free).
std::vector<std::vector<dosql::value>> events_of(const std::string& dir) {
  dosql::runtime rt;
  auto db = must(rt.open(dir));
  return must(db->query("SELECT * FROM events ORDER BY rowid")).rows;
}

}  // namespace

TEST_CASE("dosql-eventsourcing: a session of every command", "[eventsourcing][cli]") {
  temp_dir d;
  std::string D = "--dir " + q(d / "data") + " ";
  auto r = es_run(D + "create-order o-1 --customer alice --item sku-1:2:9.5 --item sku-2:1:5 --address '1 Main St' --user u1 --correlation-id c-7");
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto j = json::parse(r.out);
  CHECK(j["orderId"] == "o-1");
  CHECK(j["version"] == 1);
  CHECK(j["events"] == json::array({"OrderCreated"}));
  REQUIRE(es_run(D + "add-item o-1 --item sku-3:3:1.5 --item 'a:b:1:2'").code == 0);
  REQUIRE(es_run(D + "confirm o-1 --expected-version 3").code == 0);
  REQUIRE(es_run(D + "ship o-1 --tracking TRK1 --carrier UPS").code == 0);
  r = es_run(D + "show o-1");
  REQUIRE(r.code == 0);
  j = json::parse(r.out);
  CHECK(j["status"] == "shipped");
  CHECK(j["customerId"] == "alice");
  CHECK(j["items"].size() == 4);
  CHECK(j["items"][3]["productId"] == "a:b");
  CHECK(j["totalAmount"].get<double>() == Approx(2 * 9.5 + 5 + 4.5 + 2));
  CHECK(j["trackingNumber"] == "TRK1");
  CHECK(j["version"] == 5);
  r = es_run(D + "history o-1");
  REQUIRE(r.code == 0);
  std::vector<json> lines;
  for (size_t a = 0, b; (b = r.out.find('\n', a)) != std::string::npos; a = b + 1) lines.push_back(json::parse(r.out.substr(a, b - a)));
  REQUIRE(lines.size() == 5);
  CHECK(lines[0]["eventType"] == "OrderCreated");
  CHECK(lines[0]["payload"]["items"][0] == json({{"productId", "sku-1"}, {"quantity", 2}, {"price", 9.5}}));
  CHECK(lines[0]["payload"]["shippingAddress"] == "1 Main St");
  CHECK(lines[0]["metadata"] == json({{"userId", "u1"}, {"correlationId", "c-7"}}));
  CHECK(lines[4]["eventType"] == "OrderShipped");
  CHECK(lines[4]["payload"]["carrier"] == "UPS");
  CHECK(lines[4]["payload"].contains("shippedAt"));
  r = es_run(D + "status");
  INFO(r.err);
  REQUIRE(r.code == 0);
  j = json::parse(r.out);
  CHECK(j["lagEntries"] == 0);
  CHECK(j["orders"] == 1);
  CHECK(j["events"] == 5);
  CHECK(j["slot"]["name"] == "order-projector");
  CHECK(j["lsn"].get<uint64_t>() > 0);
  uint64_t lsn = j["lsn"];
  r = es_run(D + "rebuild");
  REQUIRE(r.code == 0);
  j = json::parse(r.out);
  CHECK(j["lsn"] == lsn);
  CHECK(j["orders"] == 1);
  r = es_run(D + "verify");
  REQUIRE(r.code == 0);
  CHECK(json::parse(r.out)["equal"] == true);
  REQUIRE(es_run(D + "create-order o-2 --customer bob --item x:1:1 --address a").code == 0);
  REQUIRE(es_run(D + "cancel o-2 --reason 'out of stock'").code == 0);
  r = es_run(D + "demo --seconds 1 --clients 2 --seed 5");
  INFO(r.err);
  REQUIRE(r.code == 0);
  j = json::parse(r.out);
  CHECK(j["consistent"] == true);
  CHECK(j["commands"].get<int>() > 0);
  r = es_run(D + "--help");
  CHECK(r.code == 0);
  CHECK(has(r.out, "create-order"));
}

TEST_CASE("dosql-eventsourcing: every rule violation and malformed command is a clear error and writes nothing",
          "[eventsourcing][cli]") {
  temp_dir d;
  std::string dir = d / "data";
  std::string D = "--dir " + q(dir) + " ";
  REQUIRE(es_run(D + "create-order o --customer c --item p:1:2 --address a").code == 0);
  REQUIRE(es_run(D + "create-order s --customer c --item p:1:2 --address a").code == 0);
  REQUIRE(es_run(D + "confirm s").code == 0);
  REQUIRE(es_run(D + "ship s --tracking T --carrier C").code == 0);
  REQUIRE(es_run(D + "create-order x --customer c --item p:1:2 --address a").code == 0);
  REQUIRE(es_run(D + "cancel x --reason r").code == 0);
  auto before = events_of(dir);
  struct bad {
    std::string args;
    int code;
    std::string message;
  };
  std::vector<bad> cases = {
      // rules
      {"create-order o --customer c --item p:1:2 --address a", 4, "RULE_VIOLATION: cannot create order o: it exists already (version 1)"},
      {"ship o --tracking T --carrier C", 4, "RULE_VIOLATION: cannot ship order o: it is pending (not confirmed)"},
      {"ship x --tracking T --carrier C", 4, "RULE_VIOLATION: cannot ship order x: it is cancelled"},
      {"ship s --tracking T --carrier C", 4, "RULE_VIOLATION: cannot ship order s: it is shipped"},
      {"add-item s --item p:1:1", 4, "RULE_VIOLATION: cannot add items to order s: it is shipped"},
      {"confirm s", 4, "RULE_VIOLATION: cannot confirm order s: it is shipped"},
      {"cancel s --reason r", 4, "RULE_VIOLATION: cannot cancel order s: it is shipped"},
      {"cancel x --reason r", 4, "RULE_VIOLATION: cannot cancel order x: it is cancelled"},
      {"confirm nope", 5, "NOT_FOUND: order nope does not exist"},
      {"show nope", 5, "NOT_FOUND: order nope does not exist"},
      {"history nope", 5, "NOT_FOUND: order nope does not exist"},
      {"confirm o --expected-version 3", 3, "CONFLICT: concurrency conflict on aggregate o: expected version 3, actual version 1"},
      // malformed input
      {"add-item o --item p:0:1", 2, "INVALID_INPUT: order o: item p has quantity 0 (at least 1)"},
      {"add-item o --item p:1:-2", 2, "INVALID_INPUT: order o: item p has price -2.000000"},
      {"add-item o --item p:x:1", 2, "INVALID_INPUT: --item 'p:x:1': quantity 'x' is not an integer"},
      {"add-item o --item p:1:abc", 2, "INVALID_INPUT: --item 'p:1:abc': price 'abc' is not a number"},
      {"add-item o --item p:1:nan", 2, "price 'nan' is not a number"},
      {"add-item o --item p1", 2, "INVALID_INPUT: --item 'p1': missing fields"},
      {"add-item o --item :1:1", 2, "the product id is empty"},
      {"ship o --tracking '' --carrier C", 4, "cannot ship order o: it is pending"},
      {"cancel o --reason ''", 2, "INVALID_INPUT: order o: reason is empty"},
      {"create-order n --customer '' --item p:1:1 --address a", 2, "INVALID_INPUT: order n: customerId is empty"},
      {"create-order n --customer c --item p:1:1 --address ''", 2, "INVALID_INPUT: order n: shippingAddress is empty"},
      {"create-order n --customer c --address a", 2, "--item is required"},
      {"ship o --carrier C", 2, "--tracking is required"},
      {"confirm", 2, "ORDER is required"},
      {"confirm o --expected-version -1", 2, "usage"},
      {"frobnicate o", 2, "usage"},
      {"rebuild --from -1", 2, "--from: '-1' is not an LSN"},
      {"rebuild --from 99999999", 2, "--from"},
  };
  for (const auto& c : cases) {
    auto r = es_run(D + c.args);
    INFO(c.args << "\nstdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.code == c.code);
    CHECK(has(r.err, c.message));
    CHECK(r.out.empty());  // nothing but the error, and that on stderr
  }
  CHECK(events_of(dir) == before);
  auto r = es_run("confirm o");
  CHECK(r.code == 2);
  CHECK(has(r.err, "--dir is required"));
  r = es_run("--dir " + q(d / "missing") + " show o");
  CHECK(r.code != 0);
  CHECK_FALSE(r.err.empty());
}

TEST_CASE("dosql-eventsourcing: the events table refuses UPDATE and DELETE from any tool", "[eventsourcing][cli]") {
  temp_dir d;
  std::string dir = d / "data";
  REQUIRE(es_run("--dir " + q(dir) + " create-order o --customer c --item p:1:2 --address a").code == 0);
  auto before = events_of(dir);
  dosql::runtime rt;
  auto db = must(rt.open(dir));
  auto u = db->exec("UPDATE events SET event_type = 'OrderShipped'");
  REQUIRE_FALSE(u);
  CHECK(has(u.err().to_string(), "events is append-only"));
  auto x = db->exec("DELETE FROM events");
  REQUIRE_FALSE(x);
  CHECK(has(x.err().to_string(), "events is append-only"));
  CHECK(must(db->query("SELECT * FROM events ORDER BY rowid")).rows == before);
}
