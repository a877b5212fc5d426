// Iceberg v2 manifests and manifest lists (Apache Iceberg table spec, "Manifests" and "Manifest
// Lists"), written as Avro object-container files by lakehouse/avro_writer.hpp.
//
// The Avro schemas are the spec's: records `manifest_entry` (its `data_file` is record `r2`, the
// empty unpartitioned partition tuple record `r102`) and `manifest_file`, with the spec's
// `field-id` on every field (and `element-id` on list elements); optional fields are unions
// ["null", T] with default null. Column metrics (column_sizes, value/null/nan counts, lower and
// upper bounds in Iceberg's single-value serialization) are written from the Parquet writer's
// per-file statistics when the entry has them (else null: readers then scan the file; a column
// without bounds is simply left out of the bounds maps); key_metadata and split_offsets are null. Header metadata: a manifest carries `schema` (the table schema JSON), `schema-id`,
// `partition-spec` ("[]": unpartitioned), `partition-spec-id` ("0"), `format-version` ("2") and
// `content` ("data" or "deletes"); a manifest list carries `snapshot-id`, `parent-snapshot-id`,
// `sequence-number` and `format-version`.
//
// Invariants: ADDED entries leave snapshot_id, sequence_number and file_sequence_number null
// (inherited from the manifest list at read time, as the spec's "sequence number inheritance"
// wants: a manifest is written before its snapshot's sequence number is final); EXISTING and
// DELETED entries must carry them (the caller's job; asserted here).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lakehouse/parquet_writer.hpp"

namespace dosql::lakehouse::iceberg {

enum class entry_status : int32_t { existing = 0, added = 1, deleted = 2 };
enum class file_content : int32_t { data = 0, position_deletes = 1, equality_deletes = 2 };

struct data_file {
  file_content content = file_content::data;
  std::string path;  ///< full URI (file:///...)
  int64_t record_count = 0;
  int64_t file_size_in_bytes = 0;
  std::vector<int32_t> equality_ids;  ///< only for equality deletes
  std::vector<column_metrics> metrics;  ///< per column (parquet_writer::metrics()); empty: none
  int32_t sort_order_id = 0;  ///< the table sort order the file's rows follow (0: unsorted)
};

struct manifest_entry {
  entry_status status = entry_status::added;
  std::optional<int64_t> snapshot_id, sequence_number, file_sequence_number;
  data_file file;
};

/// The spec's Avro schemas (JSON text, as written into the files' avro.schema).
const std::string& manifest_entry_avro_schema();
const std::string& manifest_file_avro_schema();

/// A manifest file's bytes. `table_schema_json` is the Iceberg schema object (with its
/// schema-id); `deletes` selects content "deletes" (else "data").
std::string write_manifest(const std::string& table_schema_json, int32_t schema_id,
                           const std::vector<manifest_entry>& entries, bool deletes = false);

/// One entry of a manifest list.
struct manifest_file {
  std::string path;  ///< full URI
  int64_t length = 0;
  int32_t partition_spec_id = 0;
  int32_t content = 0;  ///< 0 data, 1 deletes
  int64_t sequence_number = 0, min_sequence_number = 0;
  int64_t added_snapshot_id = 0;
  int32_t added_files = 0, existing_files = 0, deleted_files = 0;
  int64_t added_rows = 0, existing_rows = 0, deleted_rows = 0;
};

/// A manifest list's bytes (`parent_snapshot_id` nullopt for a table's first snapshot).
std::string write_manifest_list(int64_t snapshot_id, std::optional<int64_t> parent_snapshot_id,
                                int64_t sequence_number, const std::vector<manifest_file>& manifests);

}  // namespace dosql::lakehouse::iceberg
