// The Avro container writer, Iceberg manifests / manifest lists and the table commit, checked by
// real readers: Debian's avrocat (Avro C) and python3-avro (/usr/bin/python3) read every file
// and python3-avro shows the header schema, whose field ids must all be there.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "lakehouse/avro_writer.hpp"
#include "lakehouse/changelog.hpp"
#include "lakehouse/iceberg_manifest.hpp"
#include "lakehouse/iceberg_table.hpp"
#include "test_util.hpp"

using namespace dosql;
using namespace dosql::lakehouse;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct run_result {
  int rc = -1;
  std::string out;
};
run_result run(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p);
  run_result r;
  char buf[4096];
  while (size_t k = std::fread(buf, 1, sizeof buf, p)) r.out.append(buf, k);
  int st = ::pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string hex(const std::string& s) {
  std::string out;
  char b[3];
  for (unsigned char c : s) {
    std::snprintf(b, sizeof b, "%02x", c);
    out += b;
  }
  return out;
}

// python3-avro: the records as JSON lines, then the header metadata (every key but avro.sync).
const char* py_read = R"(
import sys, json, avro.datafile, avro.io
with open(sys.argv[1], 'rb') as f:
    r = avro.datafile.DataFileReader(f, avro.io.DatumReader())
    recs = [rec for rec in r]
    meta = {k: v.decode('utf-8', 'replace') for k, v in r.meta.items()}
    print(json.dumps({'records': recs, 'meta': meta}, default=lambda b: b.hex()))
)";

json read_with_python(const std::string& path) {
  auto r = run("/usr/bin/python3 -W ignore -c " + quote(py_read) + " " + quote(path));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  return json::parse(r.out);
}

// Every field (recursively) of an Avro schema JSON: name -> field-id (-1 when missing).
void collect_ids(const json& type, std::map<std::string, int>& out) {
  if (type.is_array()) {
    for (const auto& t : type) collect_ids(t, out);
  } else if (type.is_object()) {
    if (type.value("type", "") == "record")
      for (const auto& f : type.at("fields")) {
        out[type.at("name").get<std::string>() + "." + f.at("name").get<std::string>()] = f.value("field-id", -1);
        collect_ids(f.at("type"), out);
      }
    if (type.value("type", "") == "array") collect_ids(type.at("items"), out);
  }
}

schema sample_schema() {
  std::vector<source_column> cols{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "REAL"}, {"pic", "BLOB"}};
  auto s = changelog_schema(cols);
  REQUIRE(s.ok());
  return *s;
}

}  // namespace

TEST_CASE("avro encoder: zigzag varints, little-endian doubles, strings, blocks", "[iceberg][avro]") {
  avro_encoder e;
  for (int64_t v : {0ll, -1ll, 1ll, -64ll, 64ll, 8192ll, -8193ll}) e.put_long(v);
  CHECK(hex(e.take()) == "000102" "7f" "8001" "808001" "818001");
  e.put_long(INT64_MIN);
  CHECK(hex(e.take()) == "ffffffffffffffffff01");
  e.put_double(1.0);
  CHECK(hex(e.take()) == "000000000000f03f");
  e.put_float(1.0f);
  CHECK(hex(e.take()) == "0000803f");
  e.put_string("ab");
  e.put_boolean(true);
  e.begin_block(2);
  e.put_int(3);
  e.put_int(-3);
  e.end_blocks();
  CHECK(hex(e.take()) == "04616201" "04" "0605" "00");
}

TEST_CASE("avro container: avrocat and python3-avro read it; the schema is kept verbatim (extra attributes too)",
          "[iceberg][avro]") {
  test::temp_dir d;
  const std::string schema =
      R"({"type":"record","name":"r","fields":[{"name":"a","type":"long","field-id":7},)"
      R"({"name":"b","type":["null","string"],"default":null,"field-id":8},{"name":"c","type":"double","field-id":9},)"
      R"({"name":"d","type":{"type":"array","items":"int","element-id":11},"field-id":10},{"name":"e","type":"boolean","field-id":12},)"
      R"({"name":"f","type":"bytes","field-id":13}]})";
  avro_container c(schema, {{"k1", "v1"}, {"format-version", "2"}});
  avro_encoder e;
  for (int i = 0; i < 300; ++i) {
    e.clear();
    e.put_long(i * 1'000'000'007ll - 5);
    if (i % 3 == 0) {
      e.put_union_index(0);
    } else {
      e.put_union_index(1);
      e.put_string("s" + std::to_string(i));
    }
    e.put_double(i / 4.0);
    e.begin_block(i % 4);
    for (int k = 0; k < i % 4; ++k) e.put_int(-k);
    e.end_blocks();
    e.put_boolean(i % 2 == 1);
    e.put_bytes(std::string(static_cast<size_t>(i % 5), '\x01'));
    c.add_record(e.data());
  }
  auto path = d.path() + "/x.avro";
  test::write_file(path, c.finish());
  auto cat = run("avrocat " + quote(path));
  INFO(cat.out);
  REQUIRE(cat.rc == 0);
  CHECK(std::count(cat.out.begin(), cat.out.end(), '\n') == 300);
  auto py = read_with_python(path);
  REQUIRE(py["records"].size() == 300);
  for (int i : {0, 1, 2, 3, 299}) {
    auto& r = py["records"][i];
    CHECK(r["a"].get<int64_t>() == i * 1'000'000'007ll - 5);
    if (i % 3 == 0) CHECK(r["b"].is_null());
    else CHECK(r["b"] == "s" + std::to_string(i));
    CHECK(r["c"].get<double>() == i / 4.0);
    CHECK(r["d"].size() == static_cast<size_t>(i % 4));
    CHECK(r["e"].get<bool>() == (i % 2 == 1));
    CHECK(r["f"].get<std::string>().size() == static_cast<size_t>(2 * (i % 5)));
  }
  CHECK(py["meta"]["avro.schema"] == schema);  // byte for byte
  CHECK(py["meta"]["avro.codec"] == "null");
  CHECK(py["meta"]["k1"] == "v1");
  // An empty container is valid too.
  test::write_file(d.path() + "/empty.avro", avro_container(schema).finish());
  CHECK(run("avrocat " + quote(d.path() + "/empty.avro")).rc == 0);
  CHECK(read_with_python(d.path() + "/empty.avro")["records"].empty());
}

TEST_CASE("iceberg manifest and manifest list: the spec's schemas with every field id, read by avrocat and python3-avro",
          "[iceberg]") {
  test::temp_dir d;
  auto s = sample_schema();
  auto table_schema = iceberg::schema_json(s, 3).dump();
  std::vector<iceberg::manifest_entry> entries;
  for (int i = 0; i < 3; ++i) {
    iceberg::manifest_entry m;
    m.file.path = "file:///lake/t/data/f" + std::to_string(i) + ".parquet";
    m.file.record_count = 10 + i;
    m.file.file_size_in_bytes = 1000 + i;
    entries.push_back(m);
  }
  iceberg::manifest_entry old;
  old.status = iceberg::entry_status::existing;
  old.snapshot_id = 77;
  old.sequence_number = old.file_sequence_number = 2;
  old.file.path = "file:///lake/t/data/old.parquet";
  old.file.record_count = 5;
  entries.push_back(old);
  auto mpath = d.path() + "/m.avro";
  test::write_file(mpath, iceberg::write_manifest(table_schema, 3, entries));
  std::vector<iceberg::manifest_file> list(2);
  list[0].path = "file:///lake/t/metadata/m.avro";
  list[0].length = 4242;
  list[0].sequence_number = list[0].min_sequence_number = 4;
  list[0].added_snapshot_id = 99;
  list[0].added_files = 3;
  list[0].added_rows = 33;
  list[1].path = "file:///lake/t/metadata/m0.avro";
  list[1].sequence_number = list[1].min_sequence_number = 2;
  list[1].added_snapshot_id = 77;
  auto lpath = d.path() + "/l.avro";
  test::write_file(lpath, iceberg::write_manifest_list(99, 77, 4, list));

  for (const auto& p : {mpath, lpath}) {
    auto cat = run("avrocat " + quote(p));
    INFO(p << ": " << cat.out);
    CHECK(cat.rc == 0);
  }
  auto m = read_with_python(mpath);
  REQUIRE(m["records"].size() == 4);
  CHECK(m["records"][0]["status"] == 1);
  CHECK(m["records"][0]["snapshot_id"].is_null());
  CHECK(m["records"][0]["sequence_number"].is_null());
  CHECK(m["records"][0]["data_file"]["file_path"] == "file:///lake/t/data/f0.parquet");
  CHECK(m["records"][0]["data_file"]["file_format"] == "PARQUET");
  CHECK(m["records"][0]["data_file"]["content"] == 0);
  CHECK(m["records"][2]["data_file"]["record_count"] == 12);
  CHECK(m["records"][2]["data_file"]["file_size_in_bytes"] == 1002);
  CHECK(m["records"][2]["data_file"]["partition"] == json::object());
  CHECK(m["records"][3]["status"] == 0);
  CHECK(m["records"][3]["snapshot_id"] == 77);
  CHECK(m["records"][3]["file_sequence_number"] == 2);
  CHECK(m["meta"]["schema"] == table_schema);
  CHECK(m["meta"]["schema-id"] == "3");
  CHECK(m["meta"]["partition-spec"] == "[]");
  CHECK(m["meta"]["partition-spec-id"] == "0");
  CHECK(m["meta"]["format-version"] == "2");
  CHECK(m["meta"]["content"] == "data");
  std::map<std::string, int> ids;
  collect_ids(json::parse(m["meta"]["avro.schema"].get<std::string>()), ids);
  const std::map<std::string, int> want{
      {"manifest_entry.status", 0}, {"manifest_entry.snapshot_id", 1}, {"manifest_entry.sequence_number", 3},
      {"manifest_entry.file_sequence_number", 4}, {"manifest_entry.data_file", 2}, {"r2.content", 134},
      {"r2.file_path", 100}, {"r2.file_format", 101}, {"r2.partition", 102}, {"r2.record_count", 103},
      {"r2.file_size_in_bytes", 104}, {"r2.column_sizes", 108}, {"r2.value_counts", 109}, {"r2.null_value_counts", 110},
      {"r2.nan_value_counts", 137}, {"r2.lower_bounds", 125}, {"r2.upper_bounds", 128}, {"r2.key_metadata", 131},
      {"r2.split_offsets", 132}, {"r2.equality_ids", 135}, {"r2.sort_order_id", 140}, {"k117_v118.key", 117},
      {"k117_v118.value", 118}, {"k126_v127.key", 126}, {"k126_v127.value", 127}, {"k129_v130.value", 130}};
  for (const auto& [k, v] : want) {
    INFO(k);
    CHECK(ids[k] == v);
  }
  for (const auto& [k, v] : ids) {
    INFO(k);
    CHECK(v >= 0);  // every field has its id
  }

  auto l = read_with_python(lpath);
  REQUIRE(l["records"].size() == 2);
  CHECK(l["records"][0]["manifest_path"] == "file:///lake/t/metadata/m.avro");
  CHECK(l["records"][0]["manifest_length"] == 4242);
  CHECK(l["records"][0]["sequence_number"] == 4);
  CHECK(l["records"][0]["added_snapshot_id"] == 99);
  CHECK(l["records"][0]["added_files_count"] == 3);
  CHECK(l["records"][0]["added_rows_count"] == 33);
  CHECK(l["records"][0]["partitions"] == json::array());
  CHECK(l["records"][1]["added_snapshot_id"] == 77);
  CHECK(l["meta"]["snapshot-id"] == "99");
  CHECK(l["meta"]["parent-snapshot-id"] == "77");
  CHECK(l["meta"]["sequence-number"] == "4");
  CHECK(l["meta"]["format-version"] == "2");
  ids.clear();
  collect_ids(json::parse(l["meta"]["avro.schema"].get<std::string>()), ids);
  const std::map<std::string, int> want_list{
      {"manifest_file.manifest_path", 500}, {"manifest_file.manifest_length", 501},
      {"manifest_file.partition_spec_id", 502}, {"manifest_file.content", 517},
      {"manifest_file.sequence_number", 515}, {"manifest_file.min_sequence_number", 516},
      {"manifest_file.added_snapshot_id", 503}, {"manifest_file.added_files_count", 504},
      {"manifest_file.existing_files_count", 505}, {"manifest_file.deleted_files_count", 506},
      {"manifest_file.added_rows_count", 512}, {"manifest_file.existing_rows_count", 513},
      {"manifest_file.deleted_rows_count", 514}, {"manifest_file.partitions", 507}, {"manifest_file.key_metadata", 519},
      {"r508.contains_null", 509}, {"r508.contains_nan", 518}, {"r508.lower_bound", 510}, {"r508.upper_bound", 511}};
  CHECK(ids == want_list);
}

TEST_CASE("iceberg table: commits are snapshots carrying every file forward; the metadata swap is a compare-and-swap",
          "[iceberg]") {
  test::temp_dir d;
  auto dir = d.path() + "/ns/t_changelog";
  auto s = sample_schema();
  auto t = iceberg::table::load(dir);
  REQUIRE(t.ok());
  CHECK(t->version() == 0);
  for (int i = 1; i <= 3; ++i) {
    auto p = t->prepare(s, {{"f" + std::to_string(i) + ".parquet", 10 * i, 100 * i}},
                        {{"dosql.source", "s1"}, {"dosql.last-lsn", std::to_string(i * 10)}}, 1000 + i);
    REQUIRE(p.ok());
    CHECK_FALSE(fs::exists(dir + "/metadata/v" + std::to_string(i) + ".metadata.json"));  // nothing visible yet
    REQUIRE_FALSE(t->commit(*p));
    REQUIRE_FALSE(t->write_hint());
  }
  CHECK(test::read_file(dir + "/metadata/version-hint.text") == "3");
  auto again = iceberg::table::load(dir);
  REQUIRE(again.ok());
  CHECK(again->version() == 3);
  REQUIRE(again->history().size() == 3);
  const auto& last = again->history().back();
  CHECK(last.sequence == 3);
  CHECK(last.summary.at("total-records") == "60");
  CHECK(last.summary.at("total-data-files") == "3");
  CHECK(last.summary.at("added-records") == "30");
  CHECK(last.summary.at("dosql.last-lsn") == "30");
  const auto& md = again->metadata();
  CHECK(md["format-version"] == 2);
  CHECK(md["last-sequence-number"] == 3);
  CHECK(md["last-column-id"] == 9);
  CHECK(md["schemas"].size() == 1);
  CHECK(md["refs"]["main"]["snapshot-id"] == last.id);
  CHECK(md["snapshot-log"].size() == 3);
  CHECK(md["metadata-log"].size() == 2);
  CHECK(md["schemas"][0]["fields"][3] == json({{"id", 4}, {"name", "_ts"}, {"required", true}, {"type", "timestamptz"}}));
  // The current manifest list names all three manifests, newest first, each with its own sequence number.
  auto l = read_with_python(dir + "/metadata/snap-" + std::to_string(last.id) + ".avro");
  REQUIRE(l["records"].size() == 3);
  CHECK(l["records"][0]["sequence_number"] == 3);
  CHECK(l["records"][2]["sequence_number"] == 1);
  CHECK(l["records"][2]["added_rows_count"] == 10);
  CHECK(l["records"][2]["manifest_length"] ==
        fs::file_size(dir + "/metadata/m-" + std::to_string(again->history().front().id) + ".avro"));

  // A writer working from a stale version loses the swap; what it prepared is discarded.
  auto stale = iceberg::table::load(dir);
  REQUIRE(stale.ok());
  auto p4 = again->prepare(s, {{"f4.parquet", 1, 1}}, {}, 2000);
  REQUIRE(p4.ok());
  REQUIRE_FALSE(again->commit(*p4));
  auto p4b = stale->prepare(s, {{"g4.parquet", 1, 1}}, {}, 2001);
  REQUIRE(p4b.ok());
  auto e = stale->commit(*p4b);
  CHECK(e.code() == ec::busy);
  stale->discard(*p4b);
  CHECK(json::parse(test::read_file(dir + "/metadata/v4.metadata.json"))["current-snapshot-id"] == p4->snapshot_id);
  CHECK_FALSE(fs::exists(p4b->manifest));
  CHECK_FALSE(fs::exists(p4b->metadata_tmp));
  // A revert takes the table back to the version before.
  REQUIRE_FALSE(again->revert(*p4));
  CHECK_FALSE(fs::exists(dir + "/metadata/v4.metadata.json"));
  CHECK(iceberg::table::load(dir)->version() == 3);
  CHECK(again->version() == 3);

  // A changed schema becomes a new schema id; last-column-id grows.
  std::vector<source_column> cols{{"id", "INTEGER"}, {"name", "TEXT"}, {"price", "REAL"}, {"pic", "BLOB"}, {"extra", "TEXT"}};
  auto s2 = changelog_schema(cols, &s);
  REQUIRE(s2.ok());
  auto p5 = again->prepare(*s2, {{"f5.parquet", 2, 2}}, {}, 3000);
  REQUIRE(p5.ok());
  REQUIRE_FALSE(again->commit(*p5));
  CHECK(again->metadata()["schemas"].size() == 2);
  CHECK(again->metadata()["current-schema-id"] == 1);
  CHECK(again->metadata()["last-column-id"] == 10);
}
