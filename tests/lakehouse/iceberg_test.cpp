// The Avro container writer, Iceberg manifests / manifest lists and the table commit, checked by
// real readers: Debian's avrocat (Avro C) and python3-avro (/usr/bin/python3) read every file
// and python3-avro shows the header schema, whose field ids must all be there. "[current]": the
// current-state tables (equality deletes) fed from a real SQLite source through the receiver's
// store, read back by npm icebird and DuckDB (tests/lakehouse/check_current.mjs, node).
#include <sqlite3.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "lakehouse/avro_writer.hpp"
#include "lakehouse/changelog.hpp"
#include "lakehouse/iceberg_manifest.hpp"
#include "lakehouse/iceberg_table.hpp"
#include "lakehouse/compaction.hpp"
#include "lakehouse/receiver_store.hpp"
#include "fault_fs.hpp"
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

// ---- current-state tables (docs/LAKEHOUSE.md, "Current-state tables") ---------------------------
// A real SQLite source database: each change is applied to it and sent to the receiver's store
// as the streamer would (full row images, PRAGMA table_info's columns with their pk positions);
// after each flush the source tables' rows are the expectation for that version of the
// current-state table. tests/lakehouse/check_current.mjs has icebird and DuckDB read the tables.

namespace {

struct source_db {
  sqlite3* db = nullptr;
  source_db() { REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK); }
  ~source_db() { sqlite3_close(db); }
  void exec(const std::string& sql) {
    char* msg = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg);
    INFO(sql << ": " << (msg ? msg : ""));
    sqlite3_free(msg);
    REQUIRE(rc == SQLITE_OK);
  }
  std::vector<row> select(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    INFO(sql);
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    std::vector<row> out;
    while (sqlite3_step(st) == SQLITE_ROW) {
      row r;
      for (int i = 0; i < sqlite3_column_count(st); ++i) {
        r.columns.push_back(sqlite3_column_name(st, i));
        switch (sqlite3_column_type(st, i)) {
          case SQLITE_INTEGER: r.values.emplace_back(std::in_place_type<int64_t>, sqlite3_column_int64(st, i)); break;
          case SQLITE_FLOAT: r.values.emplace_back(std::in_place_type<double>, sqlite3_column_double(st, i)); break;
          case SQLITE_TEXT:
            r.values.emplace_back(std::in_place_type<std::string>, reinterpret_cast<const char*>(sqlite3_column_text(st, i)),
                                  static_cast<size_t>(sqlite3_column_bytes(st, i)));
            break;
          default: r.values.emplace_back(std::in_place_type<std::nullptr_t>, nullptr);
        }
      }
      out.push_back(std::move(r));
    }
    sqlite3_finalize(st);
    return out;
  }
  // As the streamer reads them (lakehouse/streamer_source.cpp).
  std::vector<source_column> columns(const std::string& table) {
    std::vector<source_column> cols;
    for (auto& r : select("SELECT name, type, pk FROM pragma_table_info('" + table + "')"))
      cols.push_back({std::get<std::string>(r.values[0]), std::get<std::string>(r.values[1]), true,
                      static_cast<int>(std::get<int64_t>(r.values[2]))});
    return cols;
  }
};

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

std::string literal(const value& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&v)) return std::to_string(*d);
  if (auto* s = std::get_if<std::string>(&v)) {
    std::string out = "'";
    for (char c : *s) out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
  }
  return "NULL";
}

json to_json(const value& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  return nullptr;
}

// The source database and a receiver store fed with its changes, batch by batch.
struct feed {
  source_db src;
  std::string dir, source = "shop";
  std::unique_ptr<receiver_store> store;
  uint64_t lsn = 100, prev = 100, seq = 0;
  std::vector<cdc::change_event<row>> events;
  json expected = {{"namespace", "dosql"}, {"tables", json::object()}};
  std::vector<std::string> keyed;  // tables with a primary key
  size_t max_manifests = 16;

  explicit feed(std::string d) : dir(std::move(d)) { open(); }
  void open() {
    store_options o;
    o.dir = dir;
    o.max_manifests = max_manifests;
    o.flush_rows = 1000000;
    o.flush_bytes = 1ull << 30;
    o.flush_ms = 1000000;
    auto s = receiver_store::open(o);
    INFO((s ? "" : s.err().to_string()));
    REQUIRE(s.ok());
    store = std::move(*s);
  }
  // The row of `table` where `where` holds (must exist).
  row get(const std::string& table, const std::string& where) {
    auto rows = src.select("SELECT * FROM " + table + " WHERE " + where);
    INFO(table << " " << where);
    REQUIRE(rows.size() == 1);
    return rows[0];
  }
  // Per table, its columns before its first event of the pending batch (the batch's `schemas`).
  std::map<std::string, std::vector<source_column>> columns_before;
  std::vector<protocol::schema_event> changes;  // the pending batch's schema changes
  // Runs a DDL statement on the source and records its schema-change event (as the streamer sends it).
  void schema_change(const std::string& table, const std::string& sql, const std::string& type,
                     std::optional<std::string> column, std::optional<std::string> old_column = std::nullopt) {
    if (!columns_before.count(table)) columns_before[table] = src.columns(table);
    src.exec(sql);
    protocol::schema_event x;
    x.event.table = table;
    x.event.change_type = type;
    x.event.column = std::move(column);
    x.event.old_column = std::move(old_column);
    x.event.sql = sql;
    x.event.lsn = ++lsn;
    x.event.txn_id = "tx" + std::to_string(x.event.lsn);
    x.event.timestamp = 1733222400000 + static_cast<int64_t>(x.event.lsn);
    x.columns = src.columns(table);
    changes.push_back(std::move(x));
  }
  void event(cdc::change_type t, const std::string& table, std::optional<row> before, std::optional<row> after) {
    if (!columns_before.count(table)) columns_before[table] = src.columns(table);
    cdc::change_event<row> e;
    e.type = t;
    e.table = table;
    e.lsn = ++lsn;
    e.id = std::to_string(e.lsn);
    e.txn_id = "tx" + std::to_string(e.lsn);
    e.timestamp = 1733222400000 + static_cast<int64_t>(e.lsn);
    e.old_data = std::move(before);
    e.data = std::move(after);
    events.push_back(std::move(e));
  }
  void insert(const std::string& table, const std::string& cols, const std::string& vals, const std::string& where) {
    src.exec("INSERT INTO " + table + "(" + cols + ") VALUES (" + vals + ")");
    event(cdc::change_type::insert, table, std::nullopt, get(table, where));
  }
  void update(const std::string& table, const std::string& set, const std::string& where, const std::string& where_after) {
    auto before = get(table, where);
    src.exec("UPDATE " + table + " SET " + set + " WHERE " + where);
    event(cdc::change_type::update, table, before, get(table, where_after));
  }
  void remove(const std::string& table, const std::string& where) {
    auto before = get(table, where);
    src.exec("DELETE FROM " + table + " WHERE " + where);
    event(cdc::change_type::del, table, before, std::nullopt);
  }
  protocol::batch batch() {
    protocol::batch b;
    b.source_id = source;
    b.sequence_number = ++seq;
    b.batch_id = source + ":" + std::to_string(seq);
    b.previous_lsn = prev;
    b.first_lsn = std::min(events.empty() ? UINT64_MAX : events.front().lsn,
                           changes.empty() ? UINT64_MAX : changes.front().event.lsn);
    b.last_lsn = std::max(events.empty() ? 0 : events.back().lsn, changes.empty() ? 0 : changes.back().event.lsn);
    b.created_at = 1733222400000;
    b.schemas = std::move(columns_before);
    b.events = events;
    b.schema_changes = std::move(changes);
    prev = b.last_lsn;
    events.clear();
    columns_before.clear();
    changes.clear();
    return b;
  }
  protocol::batch last;  // the last batch sent
  // Sends what was recorded as one batch (buffered, not yet acked).
  void send() {
    std::vector<reply> out;
    last = batch();
    store->offer(last, out);
    for (auto& r : out) INFO(r.text);
    REQUIRE(out.empty());
  }
  // Flushes: every batch acked; then the expectation of each keyed table's new version.
  void flush() {
    if (!events.empty() || !changes.empty()) send();
    std::vector<reply> out;
    REQUIRE_FALSE(store->flush_all(out));
    REQUIRE_FALSE(out.empty());
    for (auto& r : out) {
      INFO(r.text);
      CHECK(has(r.text, "\"type\":\"ack\""));
    }
    record();
  }
  void record() {
    for (const auto& t : keyed) {
      auto cols = src.columns(t);
      json& e = expected["tables"][t];
      e["columns"] = json::array();
      std::vector<std::pair<int, std::string>> key;
      for (const auto& c : cols) {
        e["columns"].push_back(c.name);
        if (c.pk) key.push_back({c.pk, c.name});
      }
      std::sort(key.begin(), key.end());
      e["key"] = json::array();
      for (auto& [i, n] : key) e["key"].push_back(n);
      json rows = json::array();
      for (auto& r : src.select("SELECT * FROM " + t)) {
        json o = json::object();
        for (size_t i = 0; i < r.columns.size(); ++i) o[r.columns[i]] = to_json(r.values[i]);
        rows.push_back(o);
      }
      e["current"] = rows;
      auto table = iceberg::table::load(dir + "/dosql/" + t);
      REQUIRE(table.ok());
      if (table->version() > 0) e["versions"][std::to_string(table->version())] = rows;
    }
    test::write_file(dir + "/expected_current.json", expected.dump(1));
  }
};

run_result check_current(const std::vector<std::string>& lakes) {
  std::string cmd = "cd " + quote(DOSQL_LH_TESTS) + " && node check_current.mjs";
  for (const auto& l : lakes) cmd += " " + quote(l);
  return run(cmd);
}

std::vector<std::string> avro_files(const std::string& dir) {
  std::vector<std::string> v;
  for (auto& f : fs::directory_iterator(dir + "/metadata"))
    if (f.path().extension() == ".avro") v.push_back(f.path().string());
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST_CASE("current-state table: equality deletes on the primary key; icebird and DuckDB read the source's rows, "
          "with time travel", "[iceberg][current]") {
  test::temp_dir d;
  feed f(d.path());
  f.src.exec("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty REAL)");
  f.src.exec("CREATE TABLE pairs(a TEXT NOT NULL, b INTEGER NOT NULL, v TEXT, PRIMARY KEY(b, a))");  // key order: b, a
  f.src.exec("CREATE TABLE logs(msg TEXT)");  // no key: its changelog only
  f.keyed = {"items", "pairs"};
  // Flush 1: inserts, over two batches.
  for (int i = 1; i <= 5; ++i)
    f.insert("items", "id, name, qty", std::to_string(i) + ", 'item " + std::to_string(i) + "', " + std::to_string(i) + ".5",
             "id = " + std::to_string(i));
  f.insert("logs", "msg", "'one'", "msg = 'one'");
  f.send();
  f.insert("pairs", "a, b, v", "'x', 1, 'x1'", "a = 'x' AND b = 1");
  f.insert("pairs", "a, b, v", "'y', 1, NULL", "a = 'y' AND b = 1");
  f.insert("pairs", "a, b, v", "'x', 2, 'it''s'", "a = 'x' AND b = 2");
  f.flush();
  // Flush 2: updates (one changing the key), a delete.
  f.update("items", "name = 'renamed'", "id = 2", "id = 2");
  f.update("items", "id = 30", "id = 3", "id = 30");
  f.remove("items", "id = 4");
  f.update("pairs", "v = 'x1 again'", "a = 'x' AND b = 1", "a = 'x' AND b = 1");
  f.update("pairs", "b = 7", "a = 'y' AND b = 1", "a = 'y' AND b = 7");
  f.insert("logs", "msg", "'two'", "msg = 'two'");
  f.flush();
  // Flush 3: many changes to one key in one flush; a re-insert of a deleted key; a key that
  // comes and goes; a key moved twice.
  f.update("items", "qty = 10", "id = 1", "id = 1");
  f.update("items", "qty = 11", "id = 1", "id = 1");
  f.remove("items", "id = 1");
  f.send();
  f.insert("items", "id, name, qty", "1, 'back', NULL", "id = 1");
  f.update("items", "name = 'back again'", "id = 1", "id = 1");
  f.insert("items", "id, name, qty", "4, 'four again', 4", "id = 4");
  f.insert("items", "id, name, qty", "6, 'gone soon', 6", "id = 6");
  f.remove("items", "id = 6");
  f.insert("items", "id, name, qty", "7, 'seven', 7", "id = 7");
  f.update("items", "id = 8", "id = 7", "id = 8");
  f.update("items", "id = 9, name = 'nine'", "id = 8", "id = 9");
  f.remove("pairs", "a = 'x' AND b = 2");
  f.insert("pairs", "a, b, v", "'x', 2, 'new x2'", "a = 'x' AND b = 2");
  f.flush();
  // A restart: the store recovers the current-state tables (marks, versions) from the tables.
  f.store.reset();
  f.open();
  // Flush 4 and 5: a delete, a key moved back, a re-insert across flushes; every pairs row deleted.
  f.remove("items", "id = 5");
  f.update("items", "id = 3", "id = 30", "id = 3");
  f.flush();
  f.insert("items", "id, name, qty", "5, 'five is back', 5.25", "id = 5");
  for (auto& r : f.src.select("SELECT a, b FROM pairs"))
    f.remove("pairs", "a = " + literal(r.values[0]) + " AND b = " + literal(r.values[1]));
  f.flush();

  const std::string items = d.path() + "/dosql/items", pairs = d.path() + "/dosql/pairs";
  CHECK_FALSE(fs::exists(d.path() + "/dosql/logs"));  // no key: no current-state table
  CHECK(fs::exists(d.path() + "/dosql/logs_changelog/metadata/v2.metadata.json"));
  CHECK(test::read_file(items + "/metadata/version-hint.text") == "5");
  CHECK(test::read_file(pairs + "/metadata/version-hint.text") == "4");  // (not in flush 4)

  // The metadata: identifier fields, snapshot summaries.
  auto md = json::parse(test::read_file(items + "/metadata/v5.metadata.json"));
  const auto& sc = md["schemas"].back();
  CHECK(sc["identifier-field-ids"] == json::array({6}));
  CHECK(sc["fields"][0] == json({{"id", 6}, {"name", "id"}, {"required", true}, {"type", "long"}}));
  CHECK(sc["fields"][1]["required"] == false);
  auto& s3 = md["snapshots"][2]["summary"];
  CHECK(s3["operation"] == "overwrite");
  CHECK(s3["added-delete-files"] == "1");
  CHECK(s3["added-equality-delete-files"] == "1");
  CHECK(s3["added-equality-deletes"] == "6");  // keys 1, 4, 6, 7, 8, 9
  CHECK(s3["added-records"] == "3");           // 1, 4, 9
  CHECK(s3["dosql.flush-tables"] == "items,pairs");
  CHECK(s3["dosql.flush-current"] == "items,pairs");
  CHECK(s3["dosql.source"] == "shop");
  auto& s5 = md["snapshots"][4]["summary"];
  CHECK(s5["total-delete-files"] == "5");
  CHECK(s5["dosql.last-lsn"] == std::to_string(f.lsn));
  auto pmd = json::parse(test::read_file(pairs + "/metadata/v4.metadata.json"));
  CHECK(pmd["schemas"].back()["identifier-field-ids"] == json::array({7, 6}));  // b, a
  CHECK(pmd["snapshots"][3]["summary"]["operation"] == "delete");  // every row deleted, no data file
  CHECK(pmd["snapshots"][3]["summary"]["added-data-files"] == "0");

  // Every manifest and manifest list: avrocat and python3-avro; delete manifests, equality_ids,
  // column metrics.
  int deletes_seen = 0;
  for (const auto& p : avro_files(items)) {
    auto cat = run("avrocat " + quote(p));
    INFO(p << ": " << cat.out);
    CHECK(cat.rc == 0);
    auto m = read_with_python(p);
    auto name = fs::path(p).filename().string();
    std::map<std::string, int> ids;
    collect_ids(json::parse(m["meta"]["avro.schema"].get<std::string>()), ids);
    for (const auto& [k, v] : ids) {
      INFO(k);
      CHECK(v >= 0);
    }
    if (name.starts_with("snap-")) {
      for (auto& r : m["records"]) {
        auto path = r["manifest_path"].get<std::string>();
        CHECK(r["content"] == (has(path, "/del-") ? 1 : 0));
      }
      continue;
    }
    CHECK(ids["r2.equality_ids"] == 135);
    CHECK(m["meta"]["content"] == (name.starts_with("del-") ? "deletes" : "data"));
    CHECK(json::parse(m["meta"]["schema"].get<std::string>())["identifier-field-ids"] == json::array({6}));
    REQUIRE(m["records"].size() == 1);
    auto& df = m["records"][0]["data_file"];
    auto metric = [&](const char* map, int id) {
      for (auto& kv : df[map])
        if (kv["key"] == id) return kv["value"];
      return json();
    };
    if (name.starts_with("del-")) {
      ++deletes_seen;
      CHECK(df["content"] == 2);
      CHECK(df["equality_ids"] == json::array({6}));
      CHECK(metric("value_counts", 6) == df["record_count"]);
      CHECK(metric("null_value_counts", 6) == 0);
      CHECK(df["value_counts"].size() == 1);  // the key column only
    } else {
      CHECK(df["content"] == 0);
      CHECK(df["equality_ids"].is_null());
      CHECK(metric("value_counts", 8) == df["record_count"]);
      CHECK(metric("nan_value_counts", 8) == 0);
      CHECK(metric("column_sizes", 7).get<int64_t>() > 0);
    }
  }
  CHECK(deletes_seen == 5);
  // The first snapshot's data file: ids 1..5, bounds as Iceberg's single-value serialization.
  auto first = read_with_python(items + "/metadata/m-" + std::to_string(md["snapshots"][0]["snapshot-id"].get<int64_t>()) + ".avro");
  auto& df = first["records"][0]["data_file"];
  auto bound = [&](const char* map, int id) {
    for (auto& kv : df[map])
      if (kv["key"] == id) return kv["value"].get<std::string>();
    return std::string();
  };
  CHECK(bound("lower_bounds", 6) == "0100000000000000");
  CHECK(bound("upper_bounds", 6) == "0500000000000000");
  CHECK(bound("lower_bounds", 7) == hex("item 1"));
  CHECK(bound("upper_bounds", 7) == hex("item 5"));
  double lo = 1.5;
  CHECK(bound("lower_bounds", 8) == hex(std::string(reinterpret_cast<const char*>(&lo), 8)));
  // The changelog's manifests carry metrics too.
  auto cl = avro_files(d.path() + "/dosql/items_changelog");
  auto clm = read_with_python(cl.front());
  CHECK(clm["records"][0]["data_file"]["value_counts"].size() == 9);  // 5 CDC columns, _hlc, 3 of the table

  auto r = check_current({d.path()});
  INFO(r.out);
  CHECK(r.rc == 0);
  CHECK(has(r.out, "check_current: 2 current-state tables equal their source"));
}

TEST_CASE("current-state table: a flush failing or crashing between the changelog's commit and the current-state "
          "table's is completed by the resend, each change once", "[iceberg][current][fault]") {
  test::temp_dir root;
  std::vector<std::string> lakes;
  auto changes_1 = [](feed& f) {
    f.src.exec("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty REAL)");
    f.keyed = {"items"};
    for (int i = 1; i <= 3; ++i)
      f.insert("items", "id, name", std::to_string(i) + ", 'item " + std::to_string(i) + "'", "id = " + std::to_string(i));
    f.flush();
  };
  auto changes_2 = [](feed& f) {
    f.update("items", "qty = 1", "id = 1", "id = 1");
    f.remove("items", "id = 2");
    f.insert("items", "id, name", "4, 'four'", "id = 4");
    f.update("items", "id = 5", "id = 3", "id = 5");
    f.send();
  };
  auto changelog_records = [](const std::string& dir) {
    auto t = iceberg::table::load(dir + "/dosql/items_changelog");
    REQUIRE(t.ok());
    return t->history().back().summary.at("total-records");
  };

  SECTION("a crash after the changelog's commit: recovery takes the flush before; the resend lands in the "
          "current-state table only") {
    auto dir = root.path() + "/crash";
    lakes.push_back(dir);
    feed f(dir);
    changes_1(f);
    changes_2(f);
    const uint64_t first_watermark = f.last.previous_lsn;
    f.flush();
    // As if the process died between the two commits: the current-state table loses its version
    // 2 (its files stay: orphans), the state file is gone (the tables must be enough).
    const std::string items = dir + "/dosql/items";
    auto v2 = json::parse(test::read_file(items + "/metadata/v2.metadata.json"));
    auto orphan = v2["snapshots"][1]["summary"]["dosql.files"].get<std::string>();
    auto orphan_id = std::to_string(v2["snapshots"][1]["snapshot-id"].get<int64_t>());
    fs::remove(items + "/metadata/v2.metadata.json");
    test::write_file(items + "/metadata/version-hint.text", "1");
    fs::remove(dir + "/_dosql/receiver.json");
    f.store.reset();
    f.open();
    CHECK(f.store->committed("shop").watermark == first_watermark);
    CHECK(f.store->committed("shop").sequence == 1);
    for (auto& n : {items + "/metadata/m-" + orphan_id + ".avro", items + "/metadata/del-" + orphan_id + ".avro",
                    items + "/metadata/snap-" + orphan_id + ".avro"})
      CHECK_FALSE(fs::exists(n));
    CHECK_FALSE(fs::exists(items + "/data/" + orphan.substr(0, orphan.find(','))));
    // The streamer resends batch 2.
    std::vector<reply> out;
    f.store->offer(f.last, out);
    REQUIRE(out.empty());
    REQUIRE_FALSE(f.store->flush_all(out));
    REQUIRE(out.size() == 1);
    CHECK(has(out[0].text, "\"type\":\"ack\""));
    CHECK(has(out[0].text, "\"duplicate\":false"));
    f.record();
    CHECK(changelog_records(dir) == "7");  // 3 + 4: nothing twice
    CHECK_FALSE(fs::exists(dir + "/dosql/items_changelog/metadata/v3.metadata.json"));  // its mark held it all
    CHECK(fs::exists(items + "/metadata/v2.metadata.json"));
  }

  SECTION("an I/O fault in any step of the flush: nothing half-committed; the resend lands once") {
    using op = test::fault_fs::op;
    int hits = 0;
    for (op kind : {op::open, op::write, op::sync, op::dir_sync, op::rename, op::mkdir}) {
      for (uint64_t nth : {1, 2, 3, 4, 6, 9}) {
        auto dir = root.path() + "/" + test::fault_fs::name(kind) + "-" + std::to_string(nth);
        feed f(dir);
        changes_1(f);
        changes_2(f);
        std::vector<reply> out;
        test::fault_fs ffs;
        {
          test::fault_fs::scope scope(ffs);
          ffs.arm(kind, nth, EIO);
          (void)f.store->flush_all(out);
        }
        INFO("fault at " << test::fault_fs::name(kind) << " #" << nth << " (hit: " << ffs.hit() << ")");
        REQUIRE(out.size() == 1);
        if (has(out[0].text, "\"type\":\"nack\"")) {
          ++hits;
          CHECK(ffs.hit());
          CHECK(changelog_records(dir) == "3");  // nothing of the failed flush is visible
          CHECK(iceberg::table::load(dir + "/dosql/items")->version() == 1);
          out.clear();
          f.store->offer(f.last, out);
          REQUIRE(out.empty());
          REQUIRE_FALSE(f.store->flush_all(out));
          REQUIRE(out.size() == 1);
        }
        CHECK(has(out[0].text, "\"type\":\"ack\""));
        f.record();
        CHECK(changelog_records(dir) == "7");
        CHECK(iceberg::table::load(dir + "/dosql/items")->version() == 2);
        // And after a restart, nothing changes.
        f.store.reset();
        f.open();
        CHECK(f.store->committed("shop").sequence == 2);
        lakes.push_back(dir);
      }
    }
    CHECK(hits > 10);
  }
  auto r = check_current(lakes);
  INFO(r.out);
  CHECK(r.rc == 0);
  CHECK(has(r.out, "check_current: " + std::to_string(lakes.size()) + " current-state tables equal their source"));
}

TEST_CASE("current-state table: manifest merging (data and delete manifests) over 40 flushes; icebird and DuckDB still "
          "read the source's rows; compaction applies the deletes (no delete file left, the same rows) and the "
          "receiver goes on after it",
          "[iceberg][current][compaction]") {
  test::temp_dir d;
  feed f(d.path());
  f.max_manifests = 4;
  f.store.reset();
  f.open();
  f.src.exec("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty REAL)");
  f.keyed = {"items"};
  for (int k = 1; k <= 40; ++k) {
    f.insert("items", "id, name, qty", std::to_string(k) + ", 'item " + std::to_string(k) + "', " + std::to_string(k), "id = " + std::to_string(k));
    if (k % 3 == 0) f.update("items", "name = 'upd'", "id = " + std::to_string(k - 1), "id = " + std::to_string(k - 1));
    if (k % 4 == 0) f.remove("items", "id = " + std::to_string(k - 2));
    f.flush();
  }
  const std::string items = d.path() + "/dosql/items";
  auto t = iceberg::table::load(items);
  REQUIRE(t.ok());
  auto list = t->manifests();
  REQUIRE(list.ok());
  CHECK(list->size() <= 4);
  bool deletes = false;
  for (const auto& m : *list) deletes = deletes || m.content == 1;
  CHECK(deletes);
  f.store.reset();
  auto r = check_current({d.path()});
  INFO(r.out);
  CHECK(r.rc == 0);
  // Compaction of the current-state table: the deletes are applied, every data file rewritten.
  compact_options o;
  o.dir = d.path();
  o.table = "dosql/items";
  auto one = compact(o);
  INFO((one ? "" : one.err().to_string()));
  REQUIRE(one.ok());
  REQUIRE(one->size() == 1);
  const auto& rep = one->front();
  CHECK(rep.table == items);
  CHECK(rep.committed);
  CHECK(rep.applied_delete_files == 40);  // one per flush
  CHECK(rep.applied_rows > 0);
  CHECK(rep.files_before == 80);  // 40 data + 40 delete files
  CHECK(rep.written == 1);
  CHECK(rep.files_after == 1);
  {
    auto t2 = iceberg::table::load(items);
    REQUIRE(t2.ok());
    auto live = t2->live_entries();
    REQUIRE(live.ok());
    REQUIRE(live->size() == 1);
    CHECK(live->front().file.content == iceberg::file_content::data);
    CHECK(live->front().file.record_count == static_cast<int64_t>(f.src.select("SELECT id FROM items").size()));
    const auto& sum = t2->history().back().summary;
    CHECK(sum.at("operation") == "replace");
    CHECK(sum.at("total-delete-files") == "0");
    CHECK(sum.at("total-equality-deletes") == "0");
    CHECK(sum.at("total-records") == std::to_string(live->front().file.record_count));
    CHECK(sum.at("removed-delete-files") == "40");
  }
  auto r2 = check_current({d.path()});
  INFO(r2.out);
  CHECK(r2.rc == 0);
  // The changelog of every table, without --table.
  o.table.reset();
  auto all = compact(o);
  INFO((all ? "" : all.err().to_string()));
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);
  for (const auto& x : *all) {
    CHECK(x.skipped.empty());
    if (x.table != items) {
      CHECK(x.files_before == 40);
      CHECK(x.files_after == 1);
    }
  }
  // The receiver goes on: more changes (to compacted keys too) land on the compacted table.
  f.open();
  f.update("items", "name = 'after'", "id = 1", "id = 1");
  f.remove("items", "id = 3");
  f.insert("items", "id, name, qty", "41, 'item 41', 41", "id = 41");
  f.flush();
  f.store.reset();
  auto r3 = check_current({d.path()});
  INFO(r3.out);
  CHECK(r3.rc == 0);
}

TEST_CASE("current-state table: schema changes inside a flush (ADD, RENAME, DROP COLUMN): its rows under the flush's "
          "last schema, the key's field id kept; icebird and DuckDB read the source's rows",
          "[iceberg][current][evolution]") {
  test::temp_dir d;
  feed f(d.path());
  f.src.exec("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)");
  f.keyed = {"items"};
  for (int k = 1; k <= 5; ++k)
    f.insert("items", "id, name, qty", std::to_string(k) + ", 'n" + std::to_string(k) + "', " + std::to_string(k), "id = " + std::to_string(k));
  f.flush();
  // One flush: rows before and after each change, to keys written before it and in it.
  f.insert("items", "id, name, qty", "6, 'n6', 6", "id = 6");
  f.update("items", "qty = 10", "id = 1", "id = 1");
  f.schema_change("items", "ALTER TABLE items ADD COLUMN color TEXT", "add_column", "color");
  f.insert("items", "id, name, qty, color", "7, 'n7', 7, 'blue'", "id = 7");
  f.update("items", "color = 'red'", "id = 2", "id = 2");
  f.update("items", "qty = 60", "id = 6", "id = 6");
  f.schema_change("items", "ALTER TABLE items RENAME COLUMN name TO title", "alter_column", "title", "name");
  f.update("items", "title = 't3'", "id = 3", "id = 3");
  f.remove("items", "id = 4");
  f.flush();
  const std::string items = d.path() + "/dosql/items";
  auto fields = [&](const std::string& dir, bool keyed = true) {
    auto t = iceberg::table::load(dir);
    REQUIRE(t.ok());
    const auto& md = t->metadata();
    std::map<std::string, int> out;
    for (const auto& sc : md["schemas"])
      if (sc["schema-id"] == md["current-schema-id"]) {
        for (const auto& x : sc["fields"]) out[x["name"].get<std::string>()] = x["id"].get<int>();
        if (keyed) CHECK(sc["identifier-field-ids"] == json::array({6}));
        else CHECK_FALSE(sc.contains("identifier-field-ids"));
      }
    return out;
  };
  auto cur = fields(items);
  auto log = fields(d.path() + "/dosql/items_changelog", false);
  // (_hlc took 9: the id after the table's first columns)
  CHECK(cur == std::map<std::string, int>{{"id", 6}, {"title", 7}, {"qty", 8}, {"color", 10}});  // title keeps name's id
  CHECK(log.at("title") == 7);
  CHECK(log.at("_hlc") == 9);
  CHECK(log.at("color") == 10);
  // Then a drop, and rows after it.
  f.schema_change("items", "ALTER TABLE items DROP COLUMN qty", "drop_column", "qty");
  f.insert("items", "id, title, color", "8, 't8', 'green'", "id = 8");
  f.update("items", "color = 'x'", "id = 5", "id = 5");
  f.flush();
  CHECK(fields(items) == std::map<std::string, int>{{"id", 6}, {"title", 7}, {"color", 10}});
  f.store.reset();
  auto r = check_current({d.path()});
  INFO(r.out);
  CHECK(r.rc == 0);
  CHECK(has(r.out, "check_current: 1 current-state tables equal their source"));
}

TEST_CASE("current-state table: a NULL in a key column (SQLite allows it) is refused naming the LSN and column, "
          "nothing written", "[iceberg][current]") {
  test::temp_dir d;
  feed f(d.path());
  f.src.exec("CREATE TABLE nk(a TEXT PRIMARY KEY, v TEXT)");
  f.insert("nk", "a, v", "'k', 'fine'", "a = 'k'");
  f.insert("nk", "a, v", "NULL, 'null key'", "a IS NULL");
  std::vector<reply> out;
  f.store->offer(f.batch(), out);
  REQUIRE(out.size() == 1);
  INFO(out[0].text);
  CHECK(has(out[0].text, "\"type\":\"nack\""));
  CHECK(has(out[0].text, "\"retryable\":false"));
  CHECK(has(out[0].text, "lsn " + std::to_string(f.lsn) + ": primary-key column 'a' is NULL"));
  out.clear();
  REQUIRE_FALSE(f.store->flush_all(out));
  CHECK_FALSE(fs::exists(d.path() + "/dosql/nk"));
  CHECK_FALSE(fs::exists(d.path() + "/dosql/nk_changelog"));
}

TEST_CASE("_hlc: a changelog written before it gets it by schema evolution (last-column-id + 1); after a restart the "
          "key clocks come back from the changelog: a late DELETE with a lower HLC from another source leaves the row",
          "[iceberg][current][hlc]") {
  test::temp_dir d;
  const std::string log_dir = d.path() + "/dosql/items_changelog";
  // 1. A changelog as a receiver before issue 18 wrote it: the 5 CDC columns, id 6, name 7; one row.
  auto legacy = changelog_schema(std::vector<source_column>{{"id", "INTEGER", true, 1}, {"name", "TEXT"}});
  REQUIRE(legacy);
  REQUIRE(changelog_prefix(*legacy) == 5);
  {
    REQUIRE_FALSE(wal::make_dirs(log_dir + "/data"));
    const std::string name = "old-1-1-0123456789abcdef0123456789abcdef.parquet";
    row img{{"id", "name"}, {int64_t{100}, std::string("legacy")}};
    auto r = changelog_row(*legacy, change{"INSERT", 1, "", 1733222400000, "old", &img});
    REQUIRE(r);
    writer_options wo;
    auto sj = iceberg::schema_json(*legacy, 0);
    sj.erase("schema-id");
    wo.key_value_metadata = {{"iceberg.schema", sj.dump()}};
    std::vector<std::vector<value>> rows{*r};
    iceberg::added_file f{name, 1, 0, {}};
    REQUIRE_FALSE(write_parquet_file(log_dir + "/data/" + name, *legacy, rows, wo, &f.metrics));
    f.bytes = static_cast<int64_t>(std::filesystem::file_size(log_dir + "/data/" + name));
    auto t = iceberg::table::load(log_dir);
    REQUIRE(t);
    auto p = t->prepare(*legacy, {f},
                        {{"dosql.source", "old"}, {"dosql.first-lsn", "1"}, {"dosql.last-lsn", "1"}, {"dosql.sequence", "1"},
                         {"dosql.files", name}, {"dosql.flush-tables", "items"}},
                        1733222400000);
    REQUIRE(p);
    REQUIRE_FALSE(t->commit(*p));
    REQUIRE_FALSE(t->write_hint());
  }
  // 2. The receiver writes the table again: _hlc is added with id 8, right after _source.
  feed f(d.path());
  f.src.exec("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)");
  f.keyed = {"items"};
  f.insert("items", "id, name", "1, 'on shop'", "id = 1");
  f.events.back().hlc = {2000, 0, 2};
  f.flush();
  auto t = iceberg::table::load(log_dir);
  REQUIRE(t);
  const auto& md = t->metadata();
  REQUIRE(md["schemas"].size() == 2);
  CHECK(md["schemas"][0]["fields"].size() == 7);  // the old schema is kept as it was
  std::vector<std::pair<std::string, int>> fields;
  for (const auto& sc : md["schemas"])
    if (sc["schema-id"] == md["current-schema-id"])
      for (const auto& x : sc["fields"]) fields.emplace_back(x["name"].get<std::string>(), x["id"].get<int>());
  CHECK(fields == std::vector<std::pair<std::string, int>>{
                      {"_op", 1}, {"_lsn", 2}, {"_txn_id", 3}, {"_ts", 4}, {"_source", 5}, {"_hlc", 8}, {"id", 6}, {"name", 7}});
  CHECK(md["last-column-id"] == 8);
  CHECK(md["default-sort-order-id"] == 1);
  CHECK(md["sort-orders"].size() == 2);
  CHECK(md["sort-orders"][1]["fields"][0]["source-id"] == 8);
  auto live = t->live_entries();
  REQUIRE(live);
  std::map<std::string, int> sort_ids;
  for (const auto& e : *live) sort_ids[std::filesystem::path(e.file.path).filename().string().substr(0, 4)] = e.file.sort_order_id;
  CHECK(sort_ids == std::map<std::string, int>{{"old-", 0}, {"shop", 1}});  // the old file: unsorted
  // icebird reads both files through the current schema: the old row's _hlc is NULL.
  auto r = run("cd " + quote(DOSQL_LH_TESTS) + " && node read_iceberg.mjs " + quote(log_dir));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto got = json::parse(r.out);
  REQUIRE(got["rows"].size() == 2);
  std::set<std::string> hlcs;
  for (const auto& row : got["rows"]) hlcs.insert(json::parse(row.get<std::string>())["_hlc"].dump());
  CHECK(hlcs == std::set<std::string>{"null", "\"000000000002000.00000.0000000002\""});

  // 3. A restart, then another source's DELETE of key 1 stamped before shop's INSERT (the key
  // moved from it to shop): the key clocks, read back from the changelog, keep the row.
  f.store.reset();
  f.open();
  f.source = "other";
  f.seq = 0;
  f.prev = 10;
  f.lsn = 10;
  f.event(cdc::change_type::del, "items", f.get("items", "id = 1"), std::nullopt);
  f.events.back().hlc = {1000, 0, 1};
  f.flush();  // the source database keeps the row: that is the expectation
  auto cur = check_current({d.path()});
  INFO(cur.out);
  CHECK(cur.rc == 0);
  // The changelog has the DELETE all the same (history).
  auto after = run("cd " + quote(DOSQL_LH_TESTS) + " && node read_iceberg.mjs " + quote(log_dir));
  REQUIRE(after.rc == 0);
  CHECK(json::parse(after.out)["rows"].size() == 3);
}

TEST_CASE("shards: a source whose stream begins with the CREATE TABLE of a table another source already wrote keeps "
          "the table's field ids (its columns are matched by name, not dropped and added anew)",
          "[iceberg][current][hlc]") {
  test::temp_dir d;
  feed f(d.path());
  f.keyed = {"items"};
  const std::string create = "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)";
  // Source "shop": the CREATE (no columns before it), then a row.
  f.schema_change("items", create, "create_table", std::nullopt);
  f.insert("items", "id, name", "1, 'a'", "id = 1");
  f.flush();
  const std::string log_dir = d.path() + "/dosql/items_changelog";
  auto fields = [&] {
    auto t = iceberg::table::load(log_dir);
    REQUIRE(t);
    std::map<std::string, int> out;
    for (const auto& sc : t->metadata()["schemas"])
      if (sc["schema-id"] == t->metadata()["current-schema-id"])
        for (const auto& x : sc["fields"]) out[x["name"].get<std::string>()] = x["id"].get<int>();
    return std::make_pair(out, t->metadata()["schemas"].size());
  };
  auto [first, n_first] = fields();
  CHECK(first.at("id") == 6);
  CHECK(first.at("name") == 7);
  CHECK(first.at("_hlc") == 8);
  CHECK(n_first == 1);
  // Source "shard2": its own CREATE of the same table first (as a new streamer sends it: no
  // columns before it), then a row.
  f.source = "shard2";
  f.seq = 0;
  f.prev = f.lsn = 500;
  protocol::schema_event x;
  x.event.table = "items";
  x.event.change_type = "create_table";
  x.event.sql = create;
  x.event.lsn = ++f.lsn;
  x.event.timestamp = 1733222400000 + static_cast<int64_t>(x.event.lsn);
  x.columns = f.src.columns("items");
  f.columns_before["items"] = {};
  f.changes.push_back(std::move(x));
  f.insert("items", "id, name", "2, 'b'", "id = 2");
  f.flush();
  auto [second, n_second] = fields();
  CHECK(second == first);
  CHECK(n_second == 1);  // no schema of its own
  auto cur = check_current({d.path()});
  INFO(cur.out);
  CHECK(cur.rc == 0);
}
