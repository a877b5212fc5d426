#include <catch2/catch.hpp>

#include "test_util.hpp"
#include "wal/endian.hpp"
#include "wal/format.hpp"

using namespace dosql;

TEST_CASE("every field of every op round-trips through the record format", "[entry]") {
  for (uint64_t i = 0; i < 14; ++i) {
    wal_entry e = test::make_entry(i);
    std::string rec;
    wal::append_record(rec, 1000 + i, e);
    auto r = wal::parse_record(rec.data(), rec.size(), true);
    REQUIRE(r.status == wal::parse_status::ok);
    CHECK(r.size == rec.size());
    CHECK(r.lsn == 1000 + i);
    auto back = r.entry.to_entry();
    e.lsn = 1000 + i;
    CHECK(back == e);
  }
}

TEST_CASE("absent and empty optional fields stay distinct", "[entry]") {
  wal_entry e;
  e.op = op_type::update;
  e.table = "t";
  e.txn_id = "";
  e.key = bytes{};
  e.after = bytes{};  // present but empty; before absent
  std::string rec;
  wal::append_record(rec, 5, e);
  auto r = wal::parse_record(rec.data(), rec.size(), true);
  REQUIRE(r.status == wal::parse_status::ok);
  auto back = r.entry.to_entry();
  CHECK(back.key.has_value());
  CHECK(back.key->empty());
  CHECK_FALSE(back.before.has_value());
  CHECK(back.after.has_value());
  CHECK(back.timestamp == 0);
}

TEST_CASE("a payload whose lengths do not add up is a decode error naming the lsn", "[entry]") {
  wal_entry e = test::make_entry(1);
  std::string payload;
  wal::encode(view_of(e), payload);
  entry_view v;
  CHECK_FALSE(wal::decode(payload, 9, v));
  auto err = wal::decode(payload.substr(0, payload.size() - 1), 9, v);
  CHECK(err.code() == ec::decode_error);
  CHECK(err.message().find("lsn 9") != std::string::npos);
  std::string bad_version = payload;
  bad_version[0] = 3;  // versions 1 and 2 are read
  CHECK(wal::decode(bad_version, 9, v).code() == ec::format_version);
  std::string bad_op = payload;
  bad_op[1] = 9;
  CHECK(wal::decode(bad_op, 9, v).code() == ec::decode_error);
}

TEST_CASE("op names parse and print", "[entry]") {
  CHECK(to_string(op_type::del) == "DELETE");
  CHECK(parse_op("update") == op_type::update);
  CHECK(parse_op("Schema") == op_type::schema);
  CHECK_FALSE(parse_op("upsert").has_value());
}

TEST_CASE("segment file names sort by lsn and parse back", "[format]") {
  CHECK(wal::segment_file_name(1) == "00000000000000000001.wal");
  CHECK(wal::parse_segment_file_name("00000000000000010001.wal") == 10001u);
  CHECK_FALSE(wal::parse_segment_file_name("00000000000000010001.wal.tmp"));
  CHECK_FALSE(wal::parse_segment_file_name("0000000000000001000x.wal"));
  CHECK_FALSE(wal::parse_segment_file_name("00000000000000000000.wal"));
}

TEST_CASE("segment header rejects bad magic, bad crc and newer versions", "[format]") {
  char h[wal::segment_header_size];
  wal::encode_segment_header({wal::format_version, 42, 7}, h);
  wal::segment_header out;
  REQUIRE_FALSE(wal::decode_segment_header({h, sizeof h}, "x", out));
  CHECK(out.first_lsn == 42);
  char bad[sizeof h];
  std::copy(h, h + sizeof h, bad);
  bad[0] = 'X';
  CHECK(wal::decode_segment_header({bad, sizeof bad}, "x", out).code() == ec::corruption);
  std::copy(h, h + sizeof h, bad);
  bad[20] ^= 1;
  CHECK(wal::decode_segment_header({bad, sizeof bad}, "x", out).code() == ec::corruption);
  wal::encode_segment_header({wal::format_version + 1, 42, 7}, bad);
  auto err = wal::decode_segment_header({bad, sizeof bad}, "x", out);
  CHECK(err.code() == ec::format_version);
  CHECK(err.message().find("newer") != std::string::npos);
}
