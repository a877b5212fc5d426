// The Iceberg REST catalog (include/dosql/lakehouse/catalog.hpp, docs/LAKEHOUSE.md "REST
// catalog"), as the real `dosql lakehouse catalog` process and embedded: authentication (401),
// the spec's error shapes (404, 400, 409), malformed requests (the server stays up), /metrics,
// tables the receiver wrote (listed, loaded with their snapshots), and an outside client (npm
// iceberg-js, tests/lakehouse/check_rest_catalog.mjs) whose commits npm icebird then reads from
// the file system.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <regex>

#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <dosql/lakehouse/catalog.hpp>
#include <dosql/lakehouse/receiver.hpp>

#include "cli/support.hpp"
#include "common/scratch.hpp"
#include "lakehouse/iceberg_manifest.hpp"
#include "lakehouse/iceberg_table.hpp"
#include "lakehouse/parquet_writer.hpp"
#include "lakehouse/receiver_support.hpp"
#include "test_util.hpp"

using namespace dosql;
using namespace dosql::test::lh;
using json = nlohmann::json;
namespace fs = std::filesystem;
using dosql::test::has;

namespace {

const std::string token = "cat-s3cret";

struct reply {
  unsigned status = 0;
  std::string content_type, www_authenticate, body;
  json j() const { return json::parse(body); }
};

// One HTTP/1.1 request on a new connection, with a deadline; `raw` (if not empty) is written
// as is instead of a request.
reply call(uint16_t port, const std::string& method, const std::string& target, const std::string& body = "",
           const std::string& bearer = token, const std::string& raw = "") {
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.expires_after(std::chrono::seconds(20));
  beast::error_code ec;
  s.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), [&](beast::error_code e) { ec = e; });
  ioc.run();
  REQUIRE_FALSE(ec);
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  ioc.restart();
  if (raw.empty())
    http::async_write(s, req, [&](beast::error_code e, size_t) { ec = e; });
  else
    net::async_write(s, net::buffer(raw), [&](beast::error_code e, size_t) { ec = e; });
  ioc.run();
  REQUIRE_FALSE(ec);
  beast::flat_buffer buf;
  http::response_parser<http::string_body> p;
  if (method == "HEAD") p.skip(true);
  ioc.restart();
  http::async_read(s, buf, p, [&](beast::error_code e, size_t) { ec = e; });
  ioc.run();
  INFO(method << " " << target << ": " << ec.message());
  REQUIRE_FALSE(ec);
  auto& res = p.get();
  return {res.result_int(), std::string(res[http::field::content_type]), std::string(res[http::field::www_authenticate]),
          res.body()};
}

// The spec's error body: {"error": {"message", "type", "code"}}.
void check_error(const reply& r, unsigned code, const std::string& type) {
  INFO(r.status << " " << r.body);
  REQUIRE(r.status == code);
  CHECK(r.content_type == "application/json");
  auto j = r.j();
  CHECK(j["error"]["code"] == code);
  CHECK(j["error"]["type"] == type);
  CHECK(j["error"]["message"].is_string());
  CHECK_FALSE(j["error"]["message"].get<std::string>().empty());
}

// A running `dosql lakehouse catalog --dir DIR --port 0 ARGS`; SIGKILLed on destruction unless stopped.
class catalog_process {
 public:
  catalog_process(const std::string& dir, std::vector<std::string> args = {}) {
    std::vector<std::string> a{"lakehouse", "catalog", "--dir", dir, "--port", "0"};
    a.insert(a.end(), args.begin(), args.end());
    child_ = test::spawn_dosql(a, {}, err_path_);
    std::string got;
    test::read_until(child_.out, got, [](const std::string& s) { return has(s, "\n"); }, std::chrono::seconds(20));
    std::smatch m;
    auto first = got.substr(0, got.find('\n'));
    INFO("first line: " << first << "\nstderr: " << test::read_file(err_path_));
    REQUIRE(std::regex_match(first, m, std::regex("listening on https?://127\\.0\\.0\\.1:([0-9]+)")));
    port_ = static_cast<uint16_t>(std::stoi(m[1]));
  }
  ~catalog_process() {
    if (child_.pid > 0) {
      ::kill(child_.pid, SIGKILL);
      test::wait_exit(child_.pid);
    }
    ::close(child_.out);
  }
  uint16_t port() const { return port_; }
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

const json schema = {{"type", "struct"},
                     {"schema-id", 0},
                     {"fields", {{{"id", 1}, {"name", "id"}, {"type", "long"}, {"required", true}},
                                 {{"id", 2}, {"name", "name"}, {"type", "string"}, {"required", false}}}}};

}  // namespace

TEST_CASE("lakehouse catalog: bearer token, error shapes, malformed requests, metrics (the real process)", "[catalog][process]") {
  test::temp_dir d;
  catalog_process p(d / "lake", {"--token", token});
  // 401 without a token and with wrong ones; the error shape and the challenge.
  for (auto bearer : {std::string(), std::string("wrong"), token + "x"}) {
    auto r = call(p.port(), "GET", "/v1/config", "", bearer);
    check_error(r, 401, "NotAuthorizedException");
    CHECK(r.www_authenticate == "Bearer");
  }
  auto cfg = call(p.port(), "GET", "/v1/config");
  REQUIRE(cfg.status == 200);
  CHECK(cfg.j() == json::parse(R"({"defaults":{},"overrides":{}})"));

  check_error(call(p.port(), "GET", "/v1/namespaces/nope"), 404, "NoSuchNamespaceException");
  check_error(call(p.port(), "GET", "/v1/namespaces/nope/tables/t"), 404, "NoSuchNamespaceException");
  CHECK(call(p.port(), "HEAD", "/v1/namespaces/nope").status == 404);
  check_error(call(p.port(), "GET", "/v2/anything"), 404, "NoSuchRouteException");
  // Malformed bodies and names: 400, nothing created, the server keeps serving.
  check_error(call(p.port(), "POST", "/v1/namespaces", "{\"namespace\": [\"a\""), 400, "BadRequestException");
  check_error(call(p.port(), "POST", "/v1/namespaces", "[1,2]"), 400, "BadRequestException");
  check_error(call(p.port(), "POST", "/v1/namespaces", R"({"namespace": "flat"})"), 400, "BadRequestException");
  check_error(call(p.port(), "POST", "/v1/namespaces", R"({"namespace": [".."]})"), 400, "BadRequestException");
  check_error(call(p.port(), "POST", "/v1/namespaces", R"({"namespace": ["_dosql"]})"), 400, "BadRequestException");
  check_error(call(p.port(), "GET", "/v1/namespaces/a%1Fb"), 400, "BadRequestException");  // multi-level
  check_error(call(p.port(), "GET", "/v1/namespaces/%zz"), 400, "BadRequestException");
  // Not HTTP at all: 400 and the connection closes.
  check_error(call(p.port(), "GET", "/", "", token, "HELLO THERE\r\n\r\n"), 400, "BadRequestException");
  CHECK(call(p.port(), "GET", "/v1/namespaces").j() == json::parse(R"({"namespaces":[]})"));

  REQUIRE(call(p.port(), "POST", "/v1/namespaces", R"({"namespace": ["shop"], "properties": {"owner": "ops"}})").status == 200);
  check_error(call(p.port(), "POST", "/v1/namespaces", R"({"namespace": ["shop"]})"), 409, "AlreadyExistsException");
  CHECK(call(p.port(), "HEAD", "/v1/namespaces/shop").status == 204);
  CHECK(call(p.port(), "GET", "/v1/namespaces/shop").j()["properties"] == json{{"owner", "ops"}});
  auto props = call(p.port(), "POST", "/v1/namespaces/shop/properties", R"({"removals": ["owner", "none"], "updates": {"tier": "gold"}})");
  REQUIRE(props.status == 200);
  CHECK(props.j()["removed"] == json::array({"owner"}));
  CHECK(props.j()["missing"] == json::array({"none"}));
  CHECK(call(p.port(), "GET", "/v1/namespaces/shop").j()["properties"] == json{{"tier", "gold"}});

  // Tables: create, the metadata on disk, errors.
  check_error(call(p.port(), "GET", "/v1/namespaces/shop/tables/orders"), 404, "NoSuchTableException");
  check_error(call(p.port(), "POST", "/v1/namespaces/shop/tables", json{{"name", "orders"}}.dump()), 400, "BadRequestException");
  json bad_schema = schema;
  bad_schema["fields"][1]["id"] = 1;
  check_error(call(p.port(), "POST", "/v1/namespaces/shop/tables", json{{"name", "orders"}, {"schema", bad_schema}}.dump()), 400,
              "BadRequestException");
  auto cr = call(p.port(), "POST", "/v1/namespaces/shop/tables", json{{"name", "orders"}, {"schema", schema}}.dump());
  REQUIRE(cr.status == 200);
  auto tdir = d / "lake/shop/orders";
  CHECK(cr.j()["metadata-location"] == lakehouse::iceberg::file_uri(tdir + "/metadata/v1.metadata.json"));
  CHECK(test::read_file(tdir + "/metadata/version-hint.text") == "1");
  auto t = lakehouse::iceberg::table::load(tdir);  // the receiver's own loader accepts it
  REQUIRE(t.ok());
  CHECK(t->version() == 1);
  CHECK(t->metadata()["table-uuid"] == cr.j()["metadata"]["table-uuid"]);
  CHECK(t->metadata()["last-column-id"] == 2);
  check_error(call(p.port(), "POST", "/v1/namespaces/shop/tables", json{{"name", "orders"}, {"schema", schema}}.dump()), 409,
              "AlreadyExistsException");
  CHECK(call(p.port(), "HEAD", "/v1/namespaces/shop/tables/orders").status == 204);

  // Commits: a failed requirement is 409 and writes nothing; unknown types are 400.
  auto uuid = cr.j()["metadata"]["table-uuid"].get<std::string>();
  auto commit = [&](json req) { return call(p.port(), "POST", "/v1/namespaces/shop/tables/orders", req.dump()); };
  check_error(commit({{"requirements", {{{"type", "assert-ref-snapshot-id"}, {"ref", "main"}, {"snapshot-id", 5}}}}, {"updates", json::array()}}),
              409, "CommitFailedException");
  check_error(commit({{"requirements", {{{"type", "assert-current-schema-id"}, {"current-schema-id", 3}}}}, {"updates", json::array()}}),
              409, "CommitFailedException");
  check_error(commit({{"requirements", {{{"type", "assert-create"}}}}, {"updates", json::array()}}), 409, "CommitFailedException");
  check_error(commit({{"requirements", {{{"type", "assert-magic"}}}}, {"updates", json::array()}}), 400, "BadRequestException");
  check_error(commit({{"requirements", json::array()}, {"updates", {{{"action", "frobnicate"}}}}}), 400, "BadRequestException");
  check_error(commit({{"requirements", json::array()}, {"updates", {{{"action", "upgrade-format-version"}, {"format-version", 3}}}}}), 400,
              "BadRequestException");
  check_error(commit({{"requirements", json::array()}}), 400, "BadRequestException");
  CHECK(lakehouse::iceberg::table::load(tdir)->version() == 1);
  // Schema evolution and properties, guarded.
  json s2 = schema;
  s2["fields"].push_back({{"id", 3}, {"name", "note"}, {"type", "string"}, {"required", false}});
  auto ok = commit({{"requirements",
                     {{{"type", "assert-table-uuid"}, {"uuid", uuid}},
                      {{"type", "assert-current-schema-id"}, {"current-schema-id", 0}},
                      {{"type", "assert-last-assigned-field-id"}, {"last-assigned-field-id", 2}}}},
                    {"updates",
                     {{{"action", "add-schema"}, {"schema", s2}},
                      {{"action", "set-current-schema"}, {"schema-id", -1}},
                      {{"action", "set-properties"}, {"updates", {{"k", "v"}}}}}}});
  INFO(ok.body);
  REQUIRE(ok.status == 200);
  CHECK(ok.j()["metadata"]["current-schema-id"] == 1);
  CHECK(ok.j()["metadata"]["last-column-id"] == 3);
  CHECK(ok.j()["metadata"]["properties"]["k"] == "v");
  CHECK(ok.j()["metadata"]["metadata-log"].size() == 1);
  CHECK(lakehouse::iceberg::table::load(tdir)->version() == 2);
  // The same guard again is stale now.
  check_error(commit({{"requirements", {{{"type", "assert-current-schema-id"}, {"current-schema-id", 0}}}}, {"updates", json::array()}}),
              409, "CommitFailedException");
  // A lost compare-and-swap (another writer linked the version first) is BUSY in the function
  // the catalog commits with, which it answers 409 CommitFailedException.
  auto meta2 = lakehouse::iceberg::table::load(tdir)->metadata();
  REQUIRE(lakehouse::iceberg::commit_metadata(tdir, 2, meta2).ok());
  auto lost = lakehouse::iceberg::commit_metadata(tdir, 2, meta2);
  REQUIRE_FALSE(lost.ok());
  CHECK(lost.err().code() == ec::busy);

  check_error(call(p.port(), "DELETE", "/v1/namespaces/shop"), 409, "NamespaceNotEmptyException");
  CHECK(call(p.port(), "DELETE", "/v1/namespaces/shop/tables/orders").status == 204);  // no purge: data stays
  CHECK_FALSE(fs::exists(tdir + "/metadata"));
  check_error(call(p.port(), "GET", "/v1/namespaces/shop/tables/orders"), 404, "NoSuchTableException");

  // An invented method: 400, counted under "OTHER" (metrics labels stay few).
  check_error(call(p.port(), "GET", "/", "", token, "FROB /v1/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\n\r\n"),
              400, "BadRequestException");

  auto metrics = call(p.port(), "GET", "/metrics");
  REQUIRE(metrics.status == 200);
  CHECK(has(metrics.content_type, "text/plain"));
  INFO(metrics.body);
  CHECK(has(metrics.body, "# TYPE dosql_catalog_requests_total counter"));
  CHECK(has(metrics.body, "dosql_catalog_requests_total{route=\"GET /v1/config\",status=\"200\"} 1\n"));
  CHECK(has(metrics.body, "dosql_catalog_requests_total{route=\"(unauthorized)\",status=\"401\"} 3\n"));
  CHECK(has(metrics.body, "dosql_catalog_requests_total{route=\"POST /v1/namespaces/{namespace}/tables/{table}\",status=\"409\"} 4\n"));
  CHECK(has(metrics.body, "dosql_catalog_requests_total{route=\"OTHER /v1/config\",status=\"400\"} 1\n"));
  CHECK(has(metrics.body, "dosql_catalog_commits_total 9\n"));  // 1 create, 8 commits past their body check
  CHECK(has(metrics.body, "dosql_catalog_commit_conflicts_total 4\n"));
  check_error(call(p.port(), "GET", "/metrics", "", ""), 401, "NotAuthorizedException");

  CHECK(p.stop() == 0);
  CHECK(has(p.err(), "dosql lakehouse catalog: listening on http://127.0.0.1:"));
  CHECK(has(p.err(), "refused GET /v1/config: 401"));
  // Usage errors: exit 2, one line.
  auto x = test::dosql_run("lakehouse catalog --dir " + test::q(d / "x") + " --token a --token-file " + test::q(d / "f"));
  CHECK(x.code == 2);
  auto y = test::dosql_run("lakehouse catalog --dir " + test::q(d / "x") + " --token-file " + test::q(d / "missing"));
  CHECK(y.code == 2);
  CHECK(has(y.err, "cannot read the token file"));
}

TEST_CASE("lakehouse catalog: --token-file, and tables the receiver wrote are listed and load with their snapshots", "[catalog]") {
  test::temp_dir d;
  auto lake = d / "lake";
  {
    lakehouse::receiver_options o;
    o.dir = lake;
    o.flush_ms = 20;
    auto r = lakehouse::receiver::start(o);
    REQUIRE(r.ok());
    plain_client c((*r)->port(), "");
    c.hello("src");
    for (uint64_t k = 1; k <= 3; ++k) {  // one flush (one snapshot) per batch
      proto::batch b;
      b.source_id = "src";
      b.batch_id = "src:" + std::to_string(k);
      b.sequence_number = k;
      b.previous_lsn = k - 1;
      b.first_lsn = b.last_lsn = k;
      b.created_at = 1733222400000;
      b.schemas["items"] = {{"id", "INTEGER"}, {"label", "TEXT"}};
      cdc::change_event<row> e;
      e.lsn = k;
      e.id = std::to_string(k);
      e.txn_id = "t" + std::to_string(k);
      e.timestamp = 1733222400000 + static_cast<int64_t>(k);
      e.table = "items";
      e.type = cdc::change_type::insert;
      e.data = row{{"id", "label"}, {static_cast<int64_t>(k), std::string("item ") + std::to_string(k)}};
      b.events.push_back(std::move(e));
      REQUIRE(c.send(proto::render(b)));
      CHECK(c.recv_as<proto::ack>().sequence_number == k);
    }
    c.close();
    REQUIRE_FALSE(static_cast<bool>((*r)->stop()));
  }
  auto want = lakehouse::iceberg::table::load(lake + "/dosql/items_changelog");
  REQUIRE(want.ok());
  REQUIRE(want->history().size() == 3);

  test::write_file(d / "token", "  " + token + "\n");
  catalog_process p(lake, {"--token-file", d / "token"});
  CHECK(call(p.port(), "GET", "/v1/config", "", "").status == 401);
  auto ns = call(p.port(), "GET", "/v1/namespaces");
  REQUIRE(ns.status == 200);
  CHECK(ns.j()["namespaces"] == json::parse(R"([["dosql"]])"));  // not _dosql, the receiver's state
  auto tables = call(p.port(), "GET", "/v1/namespaces/dosql/tables");
  REQUIRE(tables.status == 200);
  CHECK(tables.j()["identifiers"] == json::parse(R"([{"namespace":["dosql"],"name":"items_changelog"}])"));
  auto l = call(p.port(), "GET", "/v1/namespaces/dosql/tables/items_changelog");
  REQUIRE(l.status == 200);
  auto m = l.j()["metadata"];
  CHECK(m == want->metadata());
  CHECK(m["snapshots"].size() == 3);
  CHECK(m["current-snapshot-id"] == want->history().back().id);
  CHECK(m["snapshots"][2]["summary"]["dosql.last-lsn"] == "3");
  CHECK(l.j()["metadata-location"] == lakehouse::iceberg::file_uri(lakehouse::iceberg::metadata_path(lake + "/dosql/items_changelog", want->version())));
  // Dropping the namespace is refused while it holds the table.
  check_error(call(p.port(), "DELETE", "/v1/namespaces/dosql"), 409, "NamespaceNotEmptyException");
}

TEST_CASE("lakehouse catalog: npm iceberg-js creates, commits (409 when stale) and drops; npm icebird reads the commits",
          "[catalog][process][outside]") {
  test::temp_dir d;
  auto lake = d / "lake", staging = d / "staging";
  fs::create_directories(staging);
  // Two appends staged outside the table (Iceberg allows any file URI): a Parquet data file, its
  // manifest and a manifest list each; the second list carries the first manifest forward.
  lakehouse::schema ps{{{"id", lakehouse::column_type::int64, false, 1}, {"name", lakehouse::column_type::string, true, 2}}};
  namespace ib = lakehouse::iceberg;
  json snaps = json::array();
  std::vector<ib::manifest_file> carried;
  for (int64_t k = 1; k <= 2; ++k) {
    std::vector<std::vector<value>> rows;
    json jrows = json::array();
    for (int64_t i = 0; i < 3; ++i) {
      int64_t id = k * 10 + i;
      rows.push_back({id, std::string("row ") + std::to_string(id)});
      jrows.push_back({{"id", id}, {"name", "row " + std::to_string(id)}});
    }
    auto data = staging + "/data-" + std::to_string(k) + ".parquet";
    REQUIRE_FALSE(static_cast<bool>(lakehouse::write_parquet_file(data, ps, rows)));
    ib::manifest_entry me;
    me.file.path = ib::file_uri(data);
    me.file.record_count = 3;
    me.file.file_size_in_bytes = static_cast<int64_t>(fs::file_size(data));
    auto mpath = staging + "/m-" + std::to_string(k) + ".avro";
    auto mbytes = ib::write_manifest(schema.dump(), 0, {me});
    test::write_file(mpath, mbytes);
    int64_t sid = 1000 + k;
    ib::manifest_file mf;
    mf.path = ib::file_uri(mpath);
    mf.length = static_cast<int64_t>(mbytes.size());
    mf.sequence_number = mf.min_sequence_number = k;
    mf.added_snapshot_id = sid;
    mf.added_files = 1;
    mf.added_rows = 3;
    carried.insert(carried.begin(), mf);
    auto lpath = staging + "/snap-" + std::to_string(k) + ".avro";
    test::write_file(lpath, ib::write_manifest_list(sid, k == 1 ? std::nullopt : std::optional<int64_t>(sid - 1), k, carried));
    snaps.push_back({{"id", sid}, {"sequence", k}, {"manifestList", ib::file_uri(lpath)}, {"files", 1}, {"records", 3}, {"rows", jrows}});
  }
  test::write_file(staging + "/staging.json", json{{"schema", schema}, {"snapshots", snaps}}.dump());

  catalog_process p(lake, {"--token", token});
  auto url = "http://127.0.0.1:" + std::to_string(p.port());
  std::string cmd = "cd " + test::q(DOSQL_LH_TESTS) + " && node check_rest_catalog.mjs " + test::q(url) + " " + test::q(token) +
                    " " + test::q(lake) + " " + test::q(staging + "/staging.json") + " 2>&1";
  std::string out;
  int code = -1;
  {
    FILE* f = ::popen(cmd.c_str(), "r");
    REQUIRE(f);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    code = ::pclose(f);
  }
  INFO(out << "\ncatalog stderr:\n" << p.err());
  CHECK(code == 0);
  CHECK(has(out, "check_rest_catalog: iceberg-js created"));
  // The server counted the stale commit as a conflict.
  auto metrics = call(p.port(), "GET", "/metrics");
  CHECK(has(metrics.body, "dosql_catalog_commit_conflicts_total 2\n"));  // the stale append, the foreign uuid
  CHECK(p.stop() == 0);
}

TEST_CASE("lakehouse catalog: https with --cert/--key (the real process, read by Node's fetch)", "[catalog][process][tls]") {
  test::temp_dir d;
  auto cert = d / "cert.pem", key = d / "key.pem";
  REQUIRE(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 2 -keyout " + test::q(key) +
                       " -out " + test::q(cert) + " >/dev/null 2>&1")
                          .c_str()) == 0);
  catalog_process p(d / "lake", {"--token", token, "--cert", cert, "--key", key});
  auto url = "https://127.0.0.1:" + std::to_string(p.port()) + "/v1/config";
  std::string js = "const r = await fetch(process.argv[1], {headers: {authorization: 'Bearer ' + process.argv[2]}}); "
                   "console.log(r.status + ' ' + await r.text());";
  auto run = [&](const std::string& bearer) {
    std::string cmd = "NODE_TLS_REJECT_UNAUTHORIZED=0 node --no-warnings --input-type=module -e " + test::q(js) + " " + test::q(url) +
                      " " + test::q(bearer) + " 2>&1";
    std::string out;
    FILE* f = ::popen(cmd.c_str(), "r");
    REQUIRE(f);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    ::pclose(f);
    return out;
  };
  CHECK(run(token) == "200 {\"defaults\":{},\"overrides\":{}}\n");
  CHECK(has(run("nope"), "401 {\"error\":"));
  // Plain HTTP to the TLS port is refused (the handshake fails), the server keeps serving.
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), p.port()));
  net::write(s.socket(), net::buffer(std::string("GET /v1/config HTTP/1.1\r\nHost: x\r\n\r\n")));
  s.close();
  CHECK(run(token) == "200 {\"defaults\":{},\"overrides\":{}}\n");
  CHECK(p.stop() == 0);
  CHECK(has(p.err(), "listening on https://127.0.0.1:"));
  auto bad = test::dosql_run("lakehouse catalog --dir " + test::q(d / "x") + " --cert " + test::q(d / "none.pem") + " --key " + test::q(key));
  CHECK(bad.code == 2);
  CHECK(has(bad.err, "none.pem"));
}
