// lakehouse/protocol.hpp: every message of docs/LAKEHOUSE.md renders and parses back exactly,
// batch events with every storage class included; malformed frames are refused naming the field.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "lakehouse/protocol.hpp"

using namespace dosql;
namespace proto = dosql::lakehouse::protocol;

namespace {

template <class T>
T round_trip(const T& m) {
  auto text = proto::render(m);
  INFO(text);
  REQUIRE(text.find('\n') == std::string::npos);
  auto back = proto::parse(text);
  INFO((back ? "" : back.err().to_string()));
  REQUIRE(back.ok());
  REQUIRE(std::holds_alternative<T>(*back));
  return std::get<T>(*back);
}

bool same_bits(const value& a, const value& b) {
  if (a.index() != b.index()) return false;
  if (auto* d = std::get_if<double>(&a)) {
    double e = std::get<double>(b);
    return std::memcmp(d, &e, sizeof e) == 0;
  }
  return a == b;
}

bool same_row(const row& a, const row& b) {
  if (a.columns != b.columns || a.values.size() != b.values.size()) return false;
  for (size_t i = 0; i < a.values.size(); ++i)
    if (!same_bits(a.values[i], b.values[i])) return false;
  return true;
}

cdc::change_event<row> event(cdc::change_type t, uint64_t lsn, std::optional<row> data, std::optional<row> old) {
  cdc::change_event<row> e;
  e.id = std::to_string(lsn);
  e.type = t;
  e.table = "orders";
  e.txn_id = "tx-" + std::to_string(lsn);
  e.timestamp = 1733222400123 + static_cast<int64_t>(lsn);
  e.lsn = lsn;
  e.data = std::move(data);
  e.old_data = std::move(old);
  return e;
}

}  // namespace

TEST_CASE("protocol: every small message round-trips", "[protocol]") {
  CHECK(round_trip(proto::hello{1, "shop-eu", "shard \"1\""}) == proto::hello{1, "shop-eu", "shard \"1\""});
  proto::welcome w{1, "shop-eu", 1200, 42, 16777216};
  CHECK(round_trip(w) == w);
  proto::ack a{"shop-eu:42", 42, 1290, true, 1290, 0.31, 7};
  CHECK(round_trip(a) == a);
  proto::nack n{"shop-eu:43", 43, false, "gap: expected sequence 42", 0.97, 250};
  CHECK(round_trip(n) == n);
  proto::heartbeat h{"shop-eu", 1290, 1733222400999};
  CHECK(round_trip(h) == h);
  proto::heartbeat_ack ha{"shop-eu", 1290, 0.1, 0};
  CHECK(round_trip(ha) == ha);
  proto::error_frame e{"MALFORMED", "frame 3: the frame is not JSON"};
  CHECK(round_trip(e) == e);
  CHECK(proto::type_name(proto::message(ha)) == "heartbeat_ack");
  CHECK(proto::type_name(proto::message(e)) == "error");
}

TEST_CASE("protocol: a batch's events parse back to the same values, bit for bit", "[protocol]") {
  proto::batch b;
  b.batch_id = "s:7";
  b.source_id = "s";
  b.sequence_number = 7;
  b.previous_lsn = 10;
  b.first_lsn = 11;
  b.last_lsn = 14;
  b.created_at = 1733222400123;
  b.size_bytes = 999;
  b.is_retry = true;
  b.retry_count = 2;
  b.schemas["orders"] = {{"id", "INTEGER", true, 1}, {"total", "REAL"}, {"note", "TEXT", true, 2}, {"pic", "BLOB"}, {"z", ""}};
  std::string bad_utf8 = "ok \xff\xfe \xc3";
  row r1{{"id", "total", "note", "pic", "z"},
         {int64_t{std::numeric_limits<int64_t>::min()}, 100.0, std::string("h\u00e9llo \"w\"\n\u2603"),
          bytes{0, 255, 16}, nullptr}};
  row r2{{"id", "total", "note", "pic", "z"},
         {int64_t{std::numeric_limits<int64_t>::max()}, -0.0, bad_utf8, bytes{}, 1e300}};
  row r3{{"z", "id"}, {0.1, int64_t{0}}};  // column order as sent, not sorted
  b.events.push_back(event(cdc::change_type::insert, 11, r1, std::nullopt));
  b.events.push_back(event(cdc::change_type::update, 12, r2, r1));
  b.events.push_back(event(cdc::change_type::del, 14, std::nullopt, r3));
  b.events.back().origin = entry_origin::left;
  b.events[0].hlc = {1733222400123, 0, 1};
  b.events[1].hlc = {1733222400123, 65535, 4294967295u};
  b.events[2].hlc = {(int64_t{1} << 48) - 1, 7, 0};
  auto got = round_trip(b);
  CHECK(got.batch_id == b.batch_id);
  CHECK(got.source_id == "s");
  CHECK(got.sequence_number == 7);
  CHECK(got.previous_lsn == 10);
  CHECK(got.first_lsn == 11);
  CHECK(got.last_lsn == 14);
  CHECK(got.created_at == b.created_at);
  CHECK(got.size_bytes == 999);
  CHECK(got.is_retry);
  CHECK(got.retry_count == 2);
  REQUIRE(got.schemas.size() == 1);
  REQUIRE(got.schemas["orders"].size() == 5);
  CHECK(got.schemas["orders"][1].name == "total");
  CHECK(got.schemas["orders"][1].declared_type == "REAL");
  CHECK(got.schemas["orders"][4].declared_type == "");
  CHECK(got.schemas["orders"][0].pk == 1);  // the primary-key positions
  CHECK(got.schemas["orders"][1].pk == 0);
  CHECK(got.schemas["orders"][2].pk == 2);
  REQUIRE(got.events.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    const auto &x = b.events[i], &y = got.events[i];
    CHECK(x.id == y.id);
    CHECK(x.type == y.type);
    CHECK(x.table == y.table);
    CHECK(x.txn_id == y.txn_id);
    CHECK(x.timestamp == y.timestamp);
    CHECK(x.lsn == y.lsn);
    CHECK(x.origin == y.origin);
    CHECK(x.hlc == y.hlc);  // the "hlc" of cdc::to_json, parsed back (issue 18)
    REQUIRE(x.data.has_value() == y.data.has_value());
    REQUIRE(x.old_data.has_value() == y.old_data.has_value());
    if (x.data) CHECK(same_row(*x.data, *y.data));
    if (x.old_data) CHECK(same_row(*x.old_data, *y.old_data));
  }
  CHECK(std::signbit(std::get<double>(got.events[1].data->values[1])));
  CHECK(std::get<std::string>(got.events[1].data->values[2]) == bad_utf8);
  CHECK(proto::check_batch(got).code() == ec::none);
}

TEST_CASE("protocol: timestamps before 1970 and at leap days parse back", "[protocol]") {
  for (int64_t ms : {int64_t{0}, int64_t{-1}, int64_t{-86400000LL * 365 - 5}, int64_t{951782400000}, int64_t{4102444799999}}) {
    proto::batch b;
    b.batch_id = "x";
    b.source_id = "x";
    b.first_lsn = b.last_lsn = 1;
    b.schemas["orders"] = {{"id", "INTEGER"}};
    b.events.push_back(event(cdc::change_type::insert, 1, row{{"id"}, {int64_t{1}}}, std::nullopt));
    b.events[0].timestamp = ms;
    INFO(ms);
    CHECK(round_trip(b).events[0].timestamp == ms);
  }
}

TEST_CASE("protocol: malformed frames are refused naming what is wrong", "[protocol]") {
  auto refused = [](const std::string& text, const std::string& needle) {
    auto r = proto::parse(text);
    INFO(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code() == ec::invalid_argument);
    INFO(r.err().message());
    CHECK(r.err().message().find(needle) != std::string::npos);
  };
  refused("{not json", "not JSON");
  refused("[1,2]", "not a JSON object");
  refused("{}", "'type'");
  refused(R"({"type":7})", "'type' must be a string");
  refused(R"({"type":"bogus"})", "unknown message type 'bogus'");
  refused(R"({"type":"hello","sourceId":"s"})", "hello: field 'protocol' is missing");
  refused(R"({"type":"hello","protocol":1,"sourceId":""})", "'sourceId' is empty");
  refused(R"({"type":"hello","protocol":1,"sourceId":5})", "'sourceId' must be a string");
  refused(R"({"type":"ack","batchId":"b","sequenceNumber":-1,"lastLsn":1,"watermark":1})", "'sequenceNumber' must be an unsigned integer");
  const std::string head = R"({"type":"batch","batchId":"b","sourceId":"s","sequenceNumber":1,"previousLsn":0,"firstLsn":1,"lastLsn":1,)";
  refused(R"({"type":"batch","batchId":"b","sourceId":"s","sequenceNumber":1,"previousLsn":0,"firstLsn":1,"schemas":{},"events":[]})",
          "batch: field 'lastLsn' is missing");
  refused(head + R"("events":[]})", "'schemas' is missing");
  refused(head + R"("schemas":{"t":[{"type":"INT"}]},"events":[]})", "schemas['t']: batch: field 'name' is missing");
  refused(head + R"("schemas":{},"events":{}})", "'events' must be an array");
  const std::string ev = R"(,"table":"t","txnId":"x","timestamp":"2024-12-03T10:40:00.123Z")";
  refused(head + R"("schemas":{},"events":[{"type":"insert","lsn":1)" + ev + "}]}", "event 0 (lsn 1): field 'data' is missing");
  refused(head + R"("schemas":{},"events":[{"type":"update","lsn":1)" + ev + R"(,"data":{}}]})", "'oldData' is missing");
  refused(head + R"("schemas":{},"events":[{"type":"begin","lsn":1)" + ev + "}]}", "type 'begin' is not a row change");
  refused(head + R"("schemas":{},"events":[{"type":"insert","lsn":1,"table":"t","timestamp":"yesterday","data":{}}]})",
          "'timestamp' is not an ISO 8601");
  refused(head + R"("schemas":{},"events":[{"type":"insert","lsn":1)" + ev + R"(,"data":{"a":[1]}}]})", "data column 'a'");
  refused(head + R"("schemas":{},"events":[{"type":"insert","lsn":1)" + ev + R"(,"data":{"a":{"$base64":"A"}}}]})",
          "not valid base64");
  refused(head + R"("schemas":{},"events":[{"type":"insert","lsn":1)" + ev + R"(,"data":{"a":{"x":"AA=="}}}]})",
          "{\"$base64\"");
  refused(head + R"("schemas":{},"events":[{"type":"insert","lsn":1)" + ev + R"(,"data":{"a":18446744073709551615}}]})",
          "beyond INTEGER's range");
}

TEST_CASE("protocol: check_batch enforces the LSN order and the schemas", "[protocol]") {
  proto::batch b;
  b.batch_id = "s:1";
  b.previous_lsn = 5;
  b.first_lsn = 6;
  b.last_lsn = 9;
  b.schemas["orders"] = {{"id", "INTEGER"}};
  b.events.push_back(event(cdc::change_type::insert, 6, row{{"id"}, {int64_t{1}}}, std::nullopt));
  b.events.push_back(event(cdc::change_type::insert, 9, row{{"id"}, {int64_t{2}}}, std::nullopt));
  CHECK(proto::check_batch(b).code() == ec::none);
  auto fails = [](proto::batch x, const std::string& needle) {
    auto e = proto::check_batch(x);
    INFO(e.message());
    CHECK(e.code() == ec::invalid_argument);
    CHECK(e.message().find(needle) != std::string::npos);
  };
  auto c = b;
  c.previous_lsn = 6;
  fails(c, "previousLsn 6 must be below firstLsn 6");
  c = b;
  c.last_lsn = 5;
  fails(c, "above lastLsn");
  c = b;
  c.events[1].lsn = 10;
  fails(c, "event 1 has lsn 10, outside");
  c = b;
  c.events[0].lsn = 8;
  c.events[1].lsn = 7;
  fails(c, "below the event before it");
  c = b;
  c.events[1].table = "other";
  fails(c, "table 'other', which 'schemas' does not describe");
}

TEST_CASE("protocol: value_from_json_text inverts dosql::to_json with lossless_text", "[protocol]") {
  json_options o;
  o.lossless_text = true;
  for (const value& v : {value(nullptr), value(int64_t{-5}), value(2.5), value(100.0), value(1e-300),
                         value(std::string("\xc3\x28")), value(std::string("plain")), value(bytes{1, 2, 3, 4})}) {
    auto back = proto::value_from_json_text(to_json(v, o));
    REQUIRE(back.ok());
    CHECK(same_bits(*back, v));
  }
}

TEST_CASE("protocol: schema changes travel in `events` in LSN order with the rows, with their columns; "
          "deadLettered and untyped columns round-trip",
          "[protocol]") {
  proto::batch b;
  b.batch_id = "s:1";
  b.source_id = "s";
  b.sequence_number = 1;
  b.previous_lsn = 0;
  b.first_lsn = 1;
  b.last_lsn = 3;
  b.schemas["t"] = {{"id", "INTEGER"}, {"gone", "", false}};
  cdc::change_event<row> e;
  e.type = cdc::change_type::insert;
  e.lsn = 1;
  e.table = "t";
  e.timestamp = 1733222400000;
  e.data = row{{"id", "gone"}, {int64_t{1}, std::string("x")}};
  b.events.push_back(e);
  e.lsn = 3;
  e.data = row{{"id"}, {int64_t{2}}};
  b.events.push_back(e);
  proto::schema_event s;
  s.event.table = "t";
  s.event.change_type = "drop_column";
  s.event.column = "gone";
  s.event.old_type = "TEXT";
  s.event.schema_version = 4;
  s.event.sql = "ALTER TABLE t DROP COLUMN gone";
  s.event.lsn = 2;
  s.event.timestamp = 1733222400001;
  s.columns = std::vector<lakehouse::source_column>{{"id", "INTEGER"}};
  b.schema_changes.push_back(s);
  auto text = proto::render(b);
  auto j = nlohmann::json::parse(text);
  REQUIRE(j["events"].size() == 3);
  CHECK(j["events"][1]["type"] == "schema_change");  // between the rows, by LSN
  CHECK(j["events"][1]["changeType"] == "drop_column");
  CHECK(j["events"][1]["columns"] == nlohmann::json::parse(R"([{"name":"id","type":"INTEGER"}])"));
  CHECK(j["schemas"]["t"][1] == nlohmann::json::parse(R"({"name":"gone"})"));  // untyped: no "type"
  CHECK_FALSE(j.contains("deadLettered"));
  auto m = proto::parse(text);
  REQUIRE(m.ok());
  auto& back = std::get<proto::batch>(*m);
  REQUIRE(back.events.size() == 2);
  REQUIRE(back.schema_changes.size() == 1);
  const auto& got = back.schema_changes[0];
  CHECK(got.event.lsn == 2);
  CHECK(got.event.change_type == "drop_column");
  CHECK(got.event.column == std::optional<std::string>("gone"));
  CHECK(got.event.old_type == std::optional<std::string>("TEXT"));
  CHECK_FALSE(got.event.new_type);
  CHECK(got.event.schema_version == 4);
  CHECK(got.event.sql == s.event.sql);
  CHECK(got.event.timestamp == s.event.timestamp);
  CHECK(got.columns == s.columns);
  CHECK(back.schemas == b.schemas);
  CHECK_FALSE(back.schemas["t"][1].typed);
  CHECK(proto::render(back) == text);
  CHECK_FALSE(proto::check_batch(back));
  // A dead-lettered batch: the flag, and no events.
  proto::batch dl = b;
  dl.events.clear();
  dl.schema_changes.clear();
  dl.dead_lettered = true;
  auto dm = proto::parse(proto::render(dl));
  REQUIRE(dm.ok());
  CHECK(std::get<proto::batch>(*dm).dead_lettered);
  CHECK_FALSE(proto::check_batch(std::get<proto::batch>(*dm)));
  dl.events = b.events;
  CHECK_THAT(proto::check_batch(dl).message(), Catch::Contains("a dead-lettered batch carries no events"));
  // A schema change out of the batch's range, or a malformed one, is refused.
  auto out = b;
  out.schema_changes[0].event.lsn = 9;
  CHECK_THAT(proto::check_batch(out).message(), Catch::Contains("schema change 0 has lsn 9, outside"));
  auto bad = nlohmann::json::parse(text);
  bad["events"][1].erase("changeType");
  CHECK_THAT(proto::parse(bad.dump()).err().message(), Catch::Contains("field 'changeType' is missing"));
}

TEST_CASE("protocol: an event's hlc parses back exactly; a batch without it gets {timestamp, 0, 0}; a bad one is refused",
          "[protocol][hlc]") {
  for (hlc_stamp h : {hlc_stamp{0, 0, 0}, hlc_stamp{1733328000000, 1, 12345678}, hlc_stamp{(int64_t{1} << 48) - 1, 65535, 4294967295u}})
    CHECK(proto::parse_hlc(to_string(h)) == h);
  for (const char* bad : {"", "1733328000000.1.1", "001733328000000.00001.001234567", "001733328000000.00001.00123456789",
                          "001733328000000-00001.0012345678", "00173332800000a.00001.0012345678",
                          "281474976710656.00000.0000000000" /* 2^48 */, "001733328000000.65536.0000000000",
                          "001733328000000.00000.4294967296"})
    CHECK_FALSE(proto::parse_hlc(bad));
  const std::string head = R"({"type":"batch","batchId":"s:1","sourceId":"s","sequenceNumber":1,"previousLsn":0,"firstLsn":5,)"
                           R"("lastLsn":5,"schemas":{"t":[{"name":"id","type":"INTEGER"}]},"events":[)";
  const std::string ev = R"({"id":"5","type":"insert","table":"t","txnId":"x","timestamp":"2024-12-03T10:40:00.123Z","lsn":5,)"
                         R"("data":{"id":1})";
  // A streamer from before the HLC: the default is the event's timestamp, logical 0, node 0.
  auto old = proto::parse(head + ev + "}]}");
  REQUIRE(old);
  auto& b = std::get<proto::batch>(*old);
  CHECK(b.events.at(0).hlc == hlc_stamp{1733222400123, 0, 0});
  auto with = proto::parse(head + ev + R"(,"hlc":"001733222400123.00002.0000000007"}]})");
  REQUIRE(with);
  CHECK(std::get<proto::batch>(*with).events.at(0).hlc == hlc_stamp{1733222400123, 2, 7});
  auto bad = proto::parse(head + ev + R"(,"hlc":"1733222400123.2.7"}]})");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.err().message(), Catch::Contains("event 0 (lsn 5)") && Catch::Contains("'hlc'"));
  auto not_string = proto::parse(head + ev + R"(,"hlc":12}]})");
  REQUIRE_FALSE(not_string);
  CHECK_THAT(not_string.err().message(), Catch::Contains("'hlc' must be a string"));
}
