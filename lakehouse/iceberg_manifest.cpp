#include "lakehouse/iceberg_manifest.hpp"

#include <cassert>

#include "lakehouse/avro_writer.hpp"

namespace dosql::lakehouse::iceberg {

namespace {

// An optional int -> T map: Iceberg writes maps with non-string keys as an array of key/value
// records with logicalType "map" (spec, Appendix A "Avro").
std::string int_map(const char* name, int id, int key_id, int value_id, const char* value_type) {
  auto k = std::to_string(key_id), v = std::to_string(value_id);
  return std::string(R"({"name":")") + name + R"(","type":["null",{"type":"array","logicalType":"map","items":{"type":"record","name":"k)" +
         k + "_v" + v + R"(","fields":[{"name":"key","type":"int","field-id":)" + k +
         R"(},{"name":"value","type":")" + value_type + R"(","field-id":)" + v + R"(}]}}],"default":null,"field-id":)" +
         std::to_string(id) + "}";
}

void put_optional_long(avro_encoder& e, const std::optional<int64_t>& v) {
  if (!v) {
    e.put_union_index(0);
  } else {
    e.put_union_index(1);
    e.put_long(*v);
  }
}

// One of data_file's optional int -> long / int -> bytes maps, from the file's column metrics.
template <class Get>
void put_metric_map(avro_encoder& e, const std::vector<column_metrics>& ms, Get get) {
  if (ms.empty()) {
    e.put_union_index(0);
    return;
  }
  e.put_union_index(1);
  int64_t n = 0;
  for (const auto& m : ms) n += get(m, nullptr) ? 1 : 0;
  e.begin_block(n);
  for (const auto& m : ms)
    if (get(m, nullptr)) {
      e.put_int(m.field_id);
      get(m, &e);
    }
  e.end_blocks();
}

void put_metrics(avro_encoder& e, const std::vector<column_metrics>& ms) {
  auto count = [](int64_t column_metrics::*f) {
    return [f](const column_metrics& m, avro_encoder* out) {
      if (out) out->put_long(m.*f);
      return true;
    };
  };
  put_metric_map(e, ms, count(&column_metrics::bytes));   // column_sizes (108)
  put_metric_map(e, ms, count(&column_metrics::values));  // value_counts (109)
  put_metric_map(e, ms, count(&column_metrics::nulls));   // null_value_counts (110)
  put_metric_map(e, ms, [](const column_metrics& m, avro_encoder* out) {  // nan_value_counts (137)
    if (m.nans && out) out->put_long(*m.nans);
    return m.nans.has_value();
  });
  put_metric_map(e, ms, [](const column_metrics& m, avro_encoder* out) {  // lower_bounds (125)
    if (m.lower && out) out->put_bytes(*m.lower);
    return m.lower.has_value();
  });
  put_metric_map(e, ms, [](const column_metrics& m, avro_encoder* out) {  // upper_bounds (128)
    if (m.upper && out) out->put_bytes(*m.upper);
    return m.upper.has_value();
  });
}

}  // namespace

const std::string& manifest_entry_avro_schema() {
  static const std::string s =
      R"({"type":"record","name":"manifest_entry","fields":[)"
      R"({"name":"status","type":"int","field-id":0},)"
      R"({"name":"snapshot_id","type":["null","long"],"default":null,"field-id":1},)"
      R"({"name":"sequence_number","type":["null","long"],"default":null,"field-id":3},)"
      R"({"name":"file_sequence_number","type":["null","long"],"default":null,"field-id":4},)"
      R"({"name":"data_file","type":{"type":"record","name":"r2","fields":[)"
      R"({"name":"content","type":"int","field-id":134},)"
      R"({"name":"file_path","type":"string","field-id":100},)"
      R"({"name":"file_format","type":"string","field-id":101},)"
      R"({"name":"partition","type":{"type":"record","name":"r102","fields":[]},"field-id":102},)"
      R"({"name":"record_count","type":"long","field-id":103},)"
      R"({"name":"file_size_in_bytes","type":"long","field-id":104},)" +
      int_map("column_sizes", 108, 117, 118, "long") + "," + int_map("value_counts", 109, 119, 120, "long") + "," +
      int_map("null_value_counts", 110, 121, 122, "long") + "," + int_map("nan_value_counts", 137, 138, 139, "long") + "," +
      int_map("lower_bounds", 125, 126, 127, "bytes") + "," + int_map("upper_bounds", 128, 129, 130, "bytes") + "," +
      R"({"name":"key_metadata","type":["null","bytes"],"default":null,"field-id":131},)"
      R"({"name":"split_offsets","type":["null",{"type":"array","items":"long","element-id":133}],"default":null,"field-id":132},)"
      R"({"name":"equality_ids","type":["null",{"type":"array","items":"int","element-id":136}],"default":null,"field-id":135},)"
      R"({"name":"sort_order_id","type":["null","int"],"default":null,"field-id":140})"
      R"(]},"field-id":2}]})";
  return s;
}

const std::string& manifest_file_avro_schema() {
  static const std::string s =
      R"({"type":"record","name":"manifest_file","fields":[)"
      R"({"name":"manifest_path","type":"string","field-id":500},)"
      R"({"name":"manifest_length","type":"long","field-id":501},)"
      R"({"name":"partition_spec_id","type":"int","field-id":502},)"
      R"({"name":"content","type":"int","field-id":517},)"
      R"({"name":"sequence_number","type":"long","field-id":515},)"
      R"({"name":"min_sequence_number","type":"long","field-id":516},)"
      R"({"name":"added_snapshot_id","type":"long","field-id":503},)"
      R"({"name":"added_files_count","type":"int","field-id":504},)"
      R"({"name":"existing_files_count","type":"int","field-id":505},)"
      R"({"name":"deleted_files_count","type":"int","field-id":506},)"
      R"({"name":"added_rows_count","type":"long","field-id":512},)"
      R"({"name":"existing_rows_count","type":"long","field-id":513},)"
      R"({"name":"deleted_rows_count","type":"long","field-id":514},)"
      R"({"name":"partitions","type":["null",{"type":"array","items":{"type":"record","name":"r508","fields":[)"
      R"({"name":"contains_null","type":"boolean","field-id":509},)"
      R"({"name":"contains_nan","type":["null","boolean"],"default":null,"field-id":518},)"
      R"({"name":"lower_bound","type":["null","bytes"],"default":null,"field-id":510},)"
      R"({"name":"upper_bound","type":["null","bytes"],"default":null,"field-id":511})"
      R"(]},"element-id":508}],"default":null,"field-id":507},)"
      R"({"name":"key_metadata","type":["null","bytes"],"default":null,"field-id":519})"
      R"(]})";
  return s;
}

std::string write_manifest(const std::string& table_schema_json, int32_t schema_id,
                           const std::vector<manifest_entry>& entries, bool deletes) {
  avro_container c(manifest_entry_avro_schema(), {{"schema", table_schema_json},
                                                  {"schema-id", std::to_string(schema_id)},
                                                  {"partition-spec", "[]"},
                                                  {"partition-spec-id", "0"},
                                                  {"format-version", "2"},
                                                  {"content", deletes ? "deletes" : "data"}});
  avro_encoder e;
  for (const auto& m : entries) {
    assert(m.status == entry_status::added || (m.snapshot_id && m.sequence_number && m.file_sequence_number));
    e.clear();
    e.put_int(static_cast<int32_t>(m.status));
    put_optional_long(e, m.snapshot_id);
    put_optional_long(e, m.sequence_number);
    put_optional_long(e, m.file_sequence_number);
    // data_file (r2)
    e.put_int(static_cast<int32_t>(m.file.content));
    e.put_string(m.file.path);
    e.put_string("PARQUET");
    // partition (r102): no fields, nothing to encode
    e.put_long(m.file.record_count);
    e.put_long(m.file.file_size_in_bytes);
    put_metrics(e, m.file.metrics);  // column_sizes .. upper_bounds
    e.put_union_index(0);                              // key_metadata
    e.put_union_index(0);                              // split_offsets
    if (m.file.equality_ids.empty()) {
      e.put_union_index(0);
    } else {
      e.put_union_index(1);
      e.begin_block(static_cast<int64_t>(m.file.equality_ids.size()));
      for (auto id : m.file.equality_ids) e.put_int(id);
      e.end_blocks();
    }
    e.put_union_index(1);  // sort_order_id
    e.put_int(m.file.sort_order_id);
    c.add_record(e.data());
  }
  return c.finish();
}

std::string write_manifest_list(int64_t snapshot_id, std::optional<int64_t> parent_snapshot_id,
                                int64_t sequence_number, const std::vector<manifest_file>& manifests) {
  avro_container c(manifest_file_avro_schema(),
                   {{"snapshot-id", std::to_string(snapshot_id)},
                    {"parent-snapshot-id", parent_snapshot_id ? std::to_string(*parent_snapshot_id) : "null"},
                    {"sequence-number", std::to_string(sequence_number)},
                    {"format-version", "2"}});
  avro_encoder e;
  for (const auto& m : manifests) {
    e.clear();
    e.put_string(m.path);
    e.put_long(m.length);
    e.put_int(m.partition_spec_id);
    e.put_int(m.content);
    e.put_long(m.sequence_number);
    e.put_long(m.min_sequence_number);
    e.put_long(m.added_snapshot_id);
    e.put_int(m.added_files);
    e.put_int(m.existing_files);
    e.put_int(m.deleted_files);
    e.put_long(m.added_rows);
    e.put_long(m.existing_rows);
    e.put_long(m.deleted_rows);
    e.put_union_index(1);  // partitions: an empty list (unpartitioned)
    e.end_blocks();
    e.put_union_index(0);  // key_metadata
    c.add_record(e.data());
  }
  return c.finish();
}

}  // namespace dosql::lakehouse::iceberg
