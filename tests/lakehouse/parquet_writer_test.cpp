// The Parquet writer (lakehouse/parquet_writer.hpp): its refusals, its durability, its bytes;
// and the [outside] generator whose files DuckDB and hyparquet read (check_parquet.mjs).
#include <catch2/catch.hpp>

// GCC 12 at -O2 reports moves of a std::variant holding a vector (dosql::value) as
// maybe-uninitialized (a false positive, GCC PR 105562-like); the rows built below do many.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "fault_fs.hpp"
#include "lakehouse/changelog.hpp"
#include "lakehouse/parquet_writer.hpp"
#include "lakehouse/thrift_compact.hpp"
#include "test_util.hpp"

using namespace dosql;
using namespace dosql::lakehouse;
using dosql::test::temp_dir;

namespace {

schema all_types_schema() {
  return schema{{
      {"id", column_type::int64, false, 1},
      {"b", column_type::boolean, true, 2},
      {"i32", column_type::int32, true, 3},
      {"i64", column_type::int64, true, 4},
      {"d", column_type::float64, true, 5},
      {"s", column_type::string, true, 6},
      {"bin", column_type::binary, true, 7},
      {"ts", column_type::timestamp, true, 8},
  }};
}

bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

// Rows covering every type's edge values, NULLs in every optional column, unicode and empty text.
std::vector<std::vector<value>> all_types_rows(int n) {
  const double doubles[] = {-1.5, -0.0, 0.0, 1e308, -1e308, 5e-324, 3.141592653589793, -2.5e-300, 1e15 + 0.5,
                            std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                            std::numeric_limits<double>::quiet_NaN()};
  const std::string strings[] = {"", "plain", "héllo wörld", "日本語のテキスト", "emoji 😀🎉", "Ω≈ç√∫", "\x7f",
                                 "zzzz", "A", std::string(3000, 'x')};
  const int64_t ints[] = {0, -1, 1, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                          1234567890123456789LL, -987654321};
  std::vector<std::vector<value>> rows;
  for (int i = 0; i < n; ++i) {
    std::vector<value> r;
    r.emplace_back(int64_t{i});
    r.push_back(i % 7 == 3 ? value(nullptr) : value(int64_t{i % 3 == 0}));
    r.push_back(i % 5 == 1 ? value(nullptr)
                           : value(int64_t{i % 11 == 0   ? std::numeric_limits<int32_t>::min()
                                           : i % 13 == 0 ? std::numeric_limits<int32_t>::max()
                                                         : (i * 37) % 2001 - 1000}));
    r.push_back(i % 6 == 2 ? value(nullptr) : value(ints[i % 7] + (i % 7 >= 3 ? 0 : i)));
    r.push_back(i % 4 == 3 ? value(nullptr) : value(doubles[i % 12]));
    r.push_back(i % 9 == 4 ? value(nullptr) : value(strings[i % 10] + (i % 10 == 0 ? "" : std::to_string(i % 17))));
    if (i % 8 == 5) r.push_back(value(nullptr));
    else {
      bytes b;
      for (int k = 0; k < i % 40; ++k) b.push_back(static_cast<uint8_t>((i * 31 + k * 7) & 0xff));
      r.push_back(value(b));
    }
    r.push_back(i % 10 == 7 ? value(nullptr) : value(int64_t{1700000000000000LL + i * 1000003LL - 5000000000LL}));
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string hex(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}

// The expected JSON the outside checker compares readers against (see check_parquet.mjs):
// integers as decimal strings, doubles as the hex of their bits, blobs as hex, NULL as null.
nlohmann::json expected_json(const schema& s, const std::vector<std::vector<value>>& rows,
                             const std::vector<uint64_t>& row_groups, std::string_view codec_name) {
  nlohmann::json j;
  j["codec"] = codec_name;
  j["row_groups"] = row_groups;
  for (const auto& c : s.columns)
    j["columns"].push_back({{"name", c.name}, {"type", std::string(to_string(c.type))}, {"optional", c.optional},
                            {"field_id", c.field_id}});
  j["rows"] = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json jr = nlohmann::json::array();
    for (size_t i = 0; i < r.size(); ++i) {
      const auto& v = r[i];
      if (is_null(v)) {
        jr.push_back(nullptr);
        continue;
      }
      switch (s.columns[i].type) {
        case column_type::boolean: jr.push_back(std::get<int64_t>(v) != 0); break;
        case column_type::int32:
        case column_type::int64:
        case column_type::timestamp: jr.push_back(std::to_string(std::get<int64_t>(v))); break;
        case column_type::float64: {
          double d = std::get<double>(v);
          std::string b(8, '\0');
          std::memcpy(b.data(), &d, 8);
          std::reverse(b.begin(), b.end());  // big-endian hex: JS reads it with getBigUint64
          jr.push_back(hex(b));
          break;
        }
        case column_type::string: jr.push_back(std::get<std::string>(v)); break;
        case column_type::binary: {
          const auto& b = std::get<bytes>(v);
          jr.push_back(hex(std::string_view(reinterpret_cast<const char*>(b.data()), b.size())));
          break;
        }
      }
    }
    j["rows"].push_back(std::move(jr));
  }
  return j;
}

std::vector<uint64_t> groups_of(uint64_t n, uint64_t per) {
  std::vector<uint64_t> g;
  for (uint64_t left = n; left > 0; left -= std::min(left, per)) g.push_back(std::min(left, per));
  return g;
}

// Writes DIR/NAME.parquet and DIR/NAME.expected.json.
void write_case(const std::string& dir, const std::string& name, const schema& s,
                const std::vector<std::vector<value>>& rows, const writer_options& o) {
  auto path = dir + "/" + name + ".parquet";
  auto e = write_parquet_file(path, s, rows, o);
  INFO(name << ": " << e.to_string());
  REQUIRE_FALSE(e);
  auto j = expected_json(s, rows, groups_of(rows.size(), o.max_rows_per_row_group),
                         o.compression == compression_codec::zstd ? "ZSTD" : "UNCOMPRESSED");
  dosql::test::write_file(dir + "/" + name + ".expected.json", j.dump());
}

std::string read_all(const std::string& path) { return dosql::test::read_file(path); }

}  // namespace

// ---- the Thrift compact encoder -------------------------------------------------------------

TEST_CASE("thrift compact: field deltas, long field ids, lists, bools, nested structs", "[lakehouse][thrift]") {
  std::string out;
  thrift::compact_encoder e(out);
  e.field_i32(1, 1);       // delta 1, i32 (5): 0x15, zigzag(1) = 2
  e.field_i64(3, -1);      // delta 2, i64 (6): 0x26, zigzag(-1) = 1
  e.field_bool(4, true);   // delta 1, true (1): 0x11
  e.field_bool(5, false);  // 0x12
  e.field_binary(40, "ab");  // delta 35 > 15: 0x08, zigzag(40) = 80 (0x50), len 2, "ab"
  e.begin_struct_field(41);  // 0x1c
  e.empty_struct_field(1);   // 0x1c 0x00
  e.end_struct();            // 0x00
  e.begin_list_field(42, thrift::ctype::i32, 16);  // 0x19, 0xf5, varint 16
  for (int i = 0; i < 16; ++i) e.list_i32(i == 0 ? 300 : 0);  // zigzag(300) = 600 = 0xd8 0x04
  e.end_struct();
  CHECK(e.depth() == 0);
  std::string want = std::string("\x15\x02\x26\x01\x11\x12\x08\x50\x02", 9) + "ab" + std::string("\x1c\x1c\x00\x00\x19\xf5\x10\xd8\x04", 9) +
         std::string(15, '\0') + std::string(1, '\0');
  CHECK(hex(out) == hex(want));
}

// ---- refusals -------------------------------------------------------------------------------

TEST_CASE("parquet writer: a bad schema is refused with the reason", "[lakehouse][parquet]") {
  temp_dir dir;
  auto try_schema = [&](schema s) { return parquet_writer::create(dir / "x.parquet", std::move(s)).err().message(); };
  CHECK_THAT(try_schema(schema{}), Catch::Contains("no columns"));
  CHECK_THAT(try_schema(schema{{{"a", column_type::int64, true, 1}, {"a", column_type::int64, true, 2}}}),
             Catch::Contains("'a' appears twice"));
  CHECK_THAT(try_schema(schema{{{"a", column_type::int64, true, 0}}}), Catch::Contains("field id 0"));
  CHECK_THAT(try_schema(schema{{{"a", column_type::int64, true, 3}, {"b", column_type::int64, true, 3}}}),
             Catch::Contains("field id 3 of column 'b' appears twice"));
  CHECK(dosql::test::list_files(dir.path()).empty());
}

TEST_CASE("parquet writer: bad values are refused naming column and row; the row is not added", "[lakehouse][parquet]") {
  temp_dir dir;
  auto w = parquet_writer::create(dir / "t.parquet", all_types_schema(), {});
  REQUIRE(w);
  auto good = all_types_rows(3);
  REQUIRE_FALSE(w->append(good[0]));
  auto bad_row = good[1];
  bad_row[0] = nullptr;
  auto e = w->append(bad_row);
  CHECK(e.code() == ec::invalid_argument);
  CHECK_THAT(e.message(), Catch::Contains("column 'id'") && Catch::Contains("row 1") && Catch::Contains("NULL in a REQUIRED"));
  bad_row = good[1];
  bad_row[2] = int64_t{1} << 40;
  CHECK_THAT(w->append(bad_row).message(), Catch::Contains("column 'i32'") && Catch::Contains("out of INT32 range"));
  bad_row = good[1];
  bad_row[1] = int64_t{2};
  CHECK_THAT(w->append(bad_row).message(), Catch::Contains("column 'b'") && Catch::Contains("expected 0 or 1"));
  bad_row = good[1];
  bad_row[5] = std::string("\xff\xfe");
  CHECK_THAT(w->append(bad_row).message(), Catch::Contains("column 's'") && Catch::Contains("not valid UTF-8"));
  bad_row = good[1];
  bad_row[4] = std::string("1.5");
  CHECK_THAT(w->append(bad_row).message(), Catch::Contains("column 'd'") && Catch::Contains("expected a REAL, got a TEXT"));
  bad_row = good[1];
  bad_row.pop_back();
  CHECK_THAT(w->append(bad_row).message(), Catch::Contains("row 1 has 7 values, the schema 8 columns"));
  REQUIRE_FALSE(w->append(good[1]));  // still usable
  CHECK(w->rows() == 2);
  REQUIRE_FALSE(w->finish());
  CHECK(w->append(good[2]).code() == ec::closed);
}

// ---- durability -----------------------------------------------------------------------------

TEST_CASE("parquet writer: the file appears under its name only at finish(); no temporary is left", "[lakehouse][parquet]") {
  temp_dir dir;
  auto path = dir / "t.parquet";
  {
    auto w = parquet_writer::create(path, all_types_schema(), {});
    REQUIRE(w);
    for (auto& r : all_types_rows(100)) REQUIRE_FALSE(w->append(r));
    CHECK(dosql::test::list_files(dir.path()) == std::vector<std::string>{"t.parquet.tmp"});
    REQUIRE_FALSE(w->finish());
    CHECK(dosql::test::list_files(dir.path()) == std::vector<std::string>{"t.parquet"});
    CHECK(w->bytes_written() == dosql::test::file_size(path));
  }
  auto bytes = read_all(path);
  REQUIRE(bytes.size() > 12);
  CHECK(bytes.substr(0, 4) == "PAR1");
  CHECK(bytes.substr(bytes.size() - 4) == "PAR1");
  uint32_t footer = 0;
  std::memcpy(&footer, bytes.data() + bytes.size() - 8, 4);
  CHECK(footer > 0);
  CHECK(footer < bytes.size() - 12);
  CHECK(bytes.find("dosql version") != std::string::npos);  // created_by is in the footer

  SECTION("an abandoned writer removes its temporary file and leaves the old file as it was") {
    {
      auto w = parquet_writer::create(path, all_types_schema(), {});
      REQUIRE(w);
      for (auto& r : all_types_rows(10)) REQUIRE_FALSE(w->append(r));
    }
    CHECK(dosql::test::list_files(dir.path()) == std::vector<std::string>{"t.parquet"});
    CHECK(read_all(path) == bytes);
  }
  SECTION("write_parquet_file with a bad row writes nothing") {
    auto rows = all_types_rows(10);
    rows[7][0] = nullptr;
    auto e = write_parquet_file(dir / "u.parquet", all_types_schema(), rows);
    CHECK_THAT(e.message(), Catch::Contains("row 7"));
    CHECK(dosql::test::list_files(dir.path()) == std::vector<std::string>{"t.parquet"});
  }
}

TEST_CASE("parquet writer: an I/O failure at any step fails cleanly: no file, no temporary", "[lakehouse][parquet][fault]") {
  using op = wal::file_io::op;
  struct step {
    op kind;
    uint64_t nth;
  };
  // write 1 = "PAR1", write 2.. = row groups and footer; sync; rename.
  auto s = GENERATE(step{op::open, 1}, step{op::write, 1}, step{op::write, 3}, step{op::sync, 1}, step{op::rename, 1});
  temp_dir dir;
  dosql::test::fault_fs fs;
  dosql::test::fault_fs::scope scope(fs);
  fs.arm(s.kind, s.nth, ENOSPC);
  writer_options o;
  o.max_rows_per_row_group = 10;
  auto rows = all_types_rows(50);
  auto e = write_parquet_file(dir / "f.parquet", all_types_schema(), rows, o);
  INFO("fault at " << dosql::test::fault_fs::name(s.kind) << " #" << s.nth);
  CHECK(fs.hit());
  CHECK(e.code() == ec::io_error);
  CHECK_THAT(e.message(), Catch::Contains("f.parquet"));
  CHECK(dosql::test::list_files(dir.path()).empty());
}

TEST_CASE("parquet writer: a directory sync failure is reported (the file is complete)", "[lakehouse][parquet][fault]") {
  temp_dir dir;
  dosql::test::fault_fs fs;
  dosql::test::fault_fs::scope scope(fs);
  fs.arm(wal::file_io::op::dir_sync, 1, EIO);
  auto e = write_parquet_file(dir / "f.parquet", all_types_schema(), all_types_rows(5));
  CHECK(fs.hit());
  CHECK(e.code() == ec::io_error);
}

// ---- statistics and layout, checked on the bytes ------------------------------------------

TEST_CASE("parquet writer: row groups, pages and codecs change the layout as asked", "[lakehouse][parquet]") {
  temp_dir dir;
  auto rows = all_types_rows(5000);
  writer_options small;
  small.max_rows_per_row_group = 1000;
  small.max_page_rows = 300;
  small.compression = compression_codec::uncompressed;
  REQUIRE_FALSE(write_parquet_file(dir / "a.parquet", all_types_schema(), rows, small));
  writer_options zstd = small;
  zstd.compression = compression_codec::zstd;
  REQUIRE_FALSE(write_parquet_file(dir / "b.parquet", all_types_schema(), rows, zstd));
  // Same rows: ZSTD is smaller; the uncompressed file holds the raw text.
  auto a = read_all(dir / "a.parquet"), b = read_all(dir / "b.parquet");
  CHECK(b.size() < a.size());
  CHECK(a.find("emoji 😀🎉") != std::string::npos);
}

// ---- the files outside readers check (tests/lakehouse/check_parquet.mjs) --------------------

TEST_CASE("parquet writer: per-file column metrics merge every row group's statistics", "[lakehouse][parquet]") {
  temp_dir d;
  schema s{{{"i", column_type::int64, true, 1}, {"d", column_type::float64, true, 2}, {"s", column_type::string, true, 3},
            {"n", column_type::int32, true, 4}, {"nan", column_type::float64, false, 5}}};
  writer_options o;
  o.max_rows_per_row_group = 3;  // 4 row groups: the file's bounds span them
  std::vector<std::vector<value>> rows;
  for (int64_t k = 0; k < 10; ++k)
    rows.push_back({k == 4 ? value(nullptr) : value((k * 7) % 10 - 3), static_cast<double>(k) - 2.5,
                    std::string(1, static_cast<char>('m' + (k * 3) % 10)), nullptr,
                    k == 8 ? std::numeric_limits<double>::quiet_NaN() : 1.0});
  std::vector<column_metrics> m;
  REQUIRE_FALSE(write_parquet_file(d.path() + "/m.parquet", s, rows, o, &m));
  REQUIRE(m.size() == 5);
  auto le64 = [](auto v) { return std::string(reinterpret_cast<const char*>(&v), 8); };
  CHECK(m[0].field_id == 1);
  CHECK(m[0].values == 10);
  CHECK(m[0].nulls == 1);
  CHECK_FALSE(m[0].nans);
  CHECK(m[0].lower == le64(int64_t{-3}));  // (k*7)%10-3 over k != 4: min -3 (k=0), max 6 (k=9)
  CHECK(m[0].upper == le64(int64_t{6}));
  CHECK(m[0].bytes > 0);
  CHECK(m[1].lower == le64(-2.5));
  CHECK(m[1].upper == le64(6.5));
  CHECK(m[1].nans == 0);
  CHECK(m[2].lower == "m");
  CHECK(m[2].upper == "v");
  CHECK(m[3].nulls == 10);  // all NULL: no bounds
  CHECK_FALSE(m[3].lower);
  CHECK(m[4].nans == 1);  // a NaN: no bounds (as in the chunk statistics)
  CHECK_FALSE(m[4].upper);
}

TEST_CASE("parquet files for the outside readers", "[.][outside]") {
  const char* env = std::getenv("DOSQL_LAKEHOUSE_OUT");
  std::string dir = env && *env ? env : "lakehouse-files";
  std::filesystem::create_directories(dir);

  writer_options zstd;
  writer_options plain;
  plain.compression = compression_codec::uncompressed;

  auto rows = all_types_rows(2000);
  write_case(dir, "all_types_zstd", all_types_schema(), rows, zstd);
  write_case(dir, "all_types_uncompressed", all_types_schema(), rows, plain);

  // Several row groups with disjoint id ranges (statistics prune) and small pages.
  writer_options groups = zstd;
  groups.max_rows_per_row_group = 700;
  groups.max_page_rows = 128;
  write_case(dir, "row_groups", all_types_schema(), all_types_rows(5000), groups);

  // REQUIRED columns only (no definition levels), and an all-NULL optional column.
  {
    schema s{{{"k", column_type::int64, false, 10},
              {"name", column_type::string, false, 11},
              {"flag", column_type::boolean, false, 12},
              {"x", column_type::float64, false, 13},
              {"nothing", column_type::string, true, 14}}};
    std::vector<std::vector<value>> r;
    for (int i = 0; i < 3000; ++i)
      r.push_back({int64_t{i * 3 - 4000}, "name-" + std::to_string(i % 97), int64_t{i % 5 == 0}, i * 0.25 - 100, nullptr});
    write_case(dir, "required_and_all_null", s, r, zstd);
  }

  // Many rows: several row groups and many pages per chunk.
  {
    schema s{{{"id", column_type::int64, false, 1},
              {"v", column_type::float64, true, 2},
              {"s", column_type::string, true, 3},
              {"ts", column_type::timestamp, false, 4}}};
    std::vector<std::vector<value>> r;
    r.reserve(120000);
    for (int64_t i = 0; i < 120000; ++i)
      r.push_back({i, i % 10 == 0 ? value(nullptr) : value(static_cast<double>(i) / 7.0),
                   i % 13 == 0 ? value(nullptr) : value("row " + std::to_string(i * 7919 % 100003)),
                   int64_t{1600000000000000LL + i * 1000}});
    writer_options many = zstd;
    many.max_rows_per_row_group = 50000;
    write_case(dir, "many_rows", s, r, many);
  }

  // Large strings and blobs: pages split by bytes; values above max_stat_bytes leave min/max out.
  {
    schema s{{{"id", column_type::int64, false, 1},
              {"big", column_type::string, true, 2},
              {"blob", column_type::binary, true, 3}}};
    std::vector<std::vector<value>> r;
    for (int i = 0; i < 40; ++i) {
      std::string big;
      for (int k = 0; k < (i + 1) * 15000; ++k) big.push_back(static_cast<char>('a' + (k * 7 + i) % 26));
      if (i % 3 == 0) big += "ü€😀";
      bytes blob(static_cast<size_t>(i) * 6000);
      for (size_t k = 0; k < blob.size(); ++k) blob[k] = static_cast<uint8_t>(k * 131 + i);
      r.push_back({int64_t{i}, i == 5 ? value(nullptr) : value(big), value(blob)});
    }
    writer_options big = zstd;
    big.target_page_bytes = 256 * 1024;
    big.max_rows_per_row_group = 25;
    write_case(dir, "large_values", s, r, big);
  }

  // Doubles at the edges of the statistics rules: a zero min is written -0.0, a zero max +0.0,
  // NaN is left out of min/max (and counted), an all-NaN row group has no min/max.
  {
    schema s{{{"g", column_type::int64, false, 1}, {"d", column_type::float64, true, 2}}};
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::vector<std::vector<value>> r{{int64_t{0}, 0.0},  {int64_t{0}, 1.5},  {int64_t{0}, nan},
                                      {int64_t{1}, -2.0}, {int64_t{1}, -0.0}, {int64_t{1}, nan},
                                      {int64_t{2}, nan},  {int64_t{2}, nan},  {int64_t{2}, nullptr},
                                      {int64_t{3}, -0.0}, {int64_t{3}, 0.0},  {int64_t{3}, -0.0}};
    writer_options three = zstd;
    three.max_rows_per_row_group = 3;
    write_case(dir, "double_edges", s, r, three);
  }

  // No rows at all.
  write_case(dir, "empty", all_types_schema(), {}, zstd);

  // A CDC changelog as the receiver writes it.
  {
    std::vector<source_column> cols{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "REAL"}, {"photo", "BLOB"},
                                    {"note", ""},      {"amount", "DECIMAL(10,2)"}};
    auto s = changelog_schema(cols);
    REQUIRE(s);
    std::vector<std::vector<value>> r;
    const char* ops[] = {"INSERT", "UPDATE", "DELETE"};
    for (int i = 0; i < 500; ++i) {
      row img;
      img.columns = {"id", "name", "price", "photo", "note", "amount"};
      img.values = {int64_t{i % 50}, i % 7 == 0 ? value(nullptr) : value("名前 " + std::to_string(i)),
                    i % 4 == 0 ? value(int64_t{i}) : value(i * 1.25),  // an INTEGER in a REAL column
                    i % 5 == 0 ? value(nullptr) : value(to_bytes("img" + std::to_string(i))),
                    i % 3 == 0 ? value(int64_t{i}) : value("note " + std::to_string(i)),
                    i % 2 == 0 ? value(i + 0.5) : value(int64_t{i})};
      std::string txn = i % 9 == 0 ? "" : "txn-" + std::to_string(i / 3);
      change c{ops[i % 3], static_cast<uint64_t>(100 + i), txn, 1700000000000 + i, "src-a", &img};
      auto row = changelog_row(*s, c);
      REQUIRE(row);
      r.push_back(std::move(*row));
    }
    write_case(dir, "changelog", *s, r, zstd);
  }
}
