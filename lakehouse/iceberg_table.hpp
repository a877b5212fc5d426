// An Apache Iceberg v2 table on a local file system, written by one process (the lakehouse
// receiver): table metadata JSON, manifests, manifest lists (lakehouse/iceberg_manifest.hpp),
// and the commit (docs/LAKEHOUSE.md, "Iceberg tables").
//
// Layout of a table directory T:
//   T/data/<name>.parquet                    data files (written by the caller)
//   T/metadata/vN.metadata.json              table metadata version N (1, 2, ...)
//   T/metadata/version-hint.text             "N": the current version (file-system catalog)
//   T/metadata/m-<snapshot-id>.avro          the manifest of the data files a snapshot added
//   T/metadata/del-<snapshot-id>.avro        the delete manifest of the equality delete files it
//                                            added (only when it added some)
//   T/metadata/snap-<snapshot-id>.avro       a snapshot's manifest list
// Locations inside the metadata are file:// URIs of absolute paths.
//
// Commit, in two phases so that a caller can commit several tables all-or-nothing:
//   prepare(): writes the manifest (the added files, status ADDED), the manifest list (that
//     manifest first, then every earlier snapshot's manifest: each snapshot carries every live
//     file forward) and the next metadata file under a temporary name; each is fdatasynced.
//     Nothing is visible yet.
//   commit(): the compare-and-swap: link(2) of the temporary file to v(N+1).metadata.json, which
//     fails with BUSY if that version exists (another writer), then the directory fsync. This is
//     the table's commit point: readers that take the highest vN (Iceberg's Hadoop catalog) see
//     it at once; write_hint() then updates version-hint.text (a hint only: load() takes the
//     highest vN.metadata.json, whatever the hint says).
//   revert(): undoes this process's last commit (removes v(N+1)): used when a multi-table commit
//     fails halfway. discard(): removes what prepare() wrote.
// Manifest merging (Iceberg's MergeAppend): an append's manifest list is its new manifests plus
//   the parent snapshot's list, read back (lakehouse/iceberg_manifest_reader.hpp); when that
//   would exceed max_manifests() entries, the parent's data manifests are merged into one,
//   m-<snapshot-id>-merged.avro, and its delete manifests into del-<snapshot-id>-merged.avro,
//   whose entries are EXISTING with their original snapshot ids, sequence numbers and metrics
//   (DELETED entries dropped). So the list stays bounded whatever the history.
// Compaction (prepare_replace(), `dosql lakehouse compact`): one snapshot with operation
//   "replace": a single data manifest with the new files ADDED, the rewritten ones DELETED and
//   every other live data file EXISTING, and (for a table with equality deletes) a delete
//   manifest with the applied delete files DELETED and the others EXISTING; the same metadata
//   version expires old snapshots (expire_policy: never the current one; snapshot-log trimmed;
//   metadata-log kept to previous_versions_max entries). sweep() then deletes what no remaining
//   snapshot references.
// Invariants: version N+1 is based on version N (never skips, never overwrites); a snapshot
// adds a data manifest m-<id>.avro (when it adds data files, or adds no delete files) and a
// delete manifest del-<id>.avro (when it adds equality delete files); its manifest list is
// derived from its parent's manifest list (not from summaries), so expired snapshots lose
// nothing live. Snapshot summaries carry the cumulative totals (total-records,
// total-data-files, total-files-size) and the caller's extra keys (the receiver's dosql.*).
// A snapshot whose parent was expired is the oldest of history(). Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <dosql/error.hpp>

#include "lakehouse/iceberg_manifest.hpp"
#include "lakehouse/parquet_writer.hpp"

namespace dosql::lakehouse::iceberg {

/// Iceberg's type name for a column type: boolean, int, long, double, string, binary, timestamptz.
std::string_view type_name(column_type t) noexcept;
/// The Iceberg schema object of `s` (field ids = the Parquet field ids); `identifier_ids`, when
/// not empty, is its identifier-field-ids (those fields must be required).
nlohmann::json schema_json(const schema& s, int32_t schema_id, const std::vector<int32_t>& identifier_ids = {});
/// "file://" + the absolute form of `path`.
std::string file_uri(const std::string& path);
/// T/metadata/vN.metadata.json for table directory `dir` and version `version`.
std::string metadata_path(const std::string& dir, int64_t version);

/// Commits `metadata` (complete Iceberg v2 table metadata, e.g. built by the REST catalog) as
/// version `base_version + 1` of the table in `dir`: written under a temporary name and
/// fdatasynced, then the same link(2) compare-and-swap as table::commit (BUSY if that version
/// exists: another writer won), the directory fsync, then version-hint.text (best effort: the
/// commit stands if only that fails). T/metadata/ is created for version 1. Returns the new
/// version's path.
result<std::string> commit_metadata(const std::string& dir, int64_t base_version, const nlohmann::json& metadata);

struct added_file {
  added_file() = default;
  added_file(std::string n, int64_t r, int64_t b, std::vector<column_metrics> m = {})
      : name(std::move(n)), records(r), bytes(b), metrics(std::move(m)) {}
  std::string name;  ///< the file's name under T/data/
  int64_t records = 0;
  int64_t bytes = 0;
  std::vector<column_metrics> metrics;  ///< per column (parquet_writer::metrics()); empty: none written
};

/// What one snapshot adds: data files and equality delete files (Parquet, whose columns are the
/// table's identifier fields, with their field ids; each row deletes the rows of data files of
/// lower sequence numbers whose identifier fields equal it).
struct snapshot_files {
  std::vector<added_file> data;
  std::vector<added_file> equality_deletes;
};

struct snapshot_info {
  int64_t id = 0;
  int64_t sequence = 0;
  int64_t timestamp_ms = 0;
  std::map<std::string, std::string> summary;
};

/// Which snapshots a compaction keeps (Iceberg's expireSnapshots + retainLast).
struct expire_policy {
  size_t retain_last = 1;               ///< the newest N snapshots stay (>= 1: the current one always)
  std::optional<int64_t> older_than_ms;  ///< ... and those younger than this (age at commit time)
  size_t previous_versions_max = 10;     ///< metadata-log entries kept (write.metadata.previous-versions-max)
};

/// The files a table's metadata references (local paths).
struct references {
  std::set<std::string> data, manifests, lists, metadata;
};

class table {
 public:
  /// Loads the highest T/metadata/vN.metadata.json (none: an empty table, version 0, created by
  /// the first commit). CORRUPTION naming the file if it is not Iceberg v2 metadata JSON.
  static result<table> load(const std::string& dir);

  const std::string& dir() const noexcept { return dir_; }
  int64_t version() const noexcept { return version_; }
  /// The current snapshot and its ancestors, oldest first (empty before the first commit).
  const std::vector<snapshot_info>& history() const noexcept { return history_; }
  const nlohmann::json& metadata() const noexcept { return meta_; }

  struct prepared {
    int64_t snapshot_id = 0;
    int64_t version = 0;  ///< the version it would become
    std::string metadata_tmp, manifest, manifest_list;  ///< absolute paths
    std::string delete_manifest;                        ///< absolute path; empty: none
    std::vector<std::string> merged_manifests;  ///< written when the parent's manifests were merged
    std::vector<int64_t> expired;  ///< snapshots this version drops (prepare_replace)
    nlohmann::json metadata;
    bool committed = false;
  };
  /// Phase 1 (see above): a snapshot appending `files` (under T/data/, durable; none: a
  /// snapshot that only changes the schema) whose current schema is `s`; `extra_summary` is
  /// merged into the snapshot summary. `earlier`: schemas the table went through before `s`
  /// since the last commit (schema evolution: files of this snapshot may have been written with
  /// them), added to `schemas` in order. A schema equal to one the table has keeps its id; a
  /// new one gets the next schema-id; `last-column-id` is the highest field id ever assigned.
  result<prepared> prepare(const schema& s, const std::vector<added_file>& files,
                           const std::map<std::string, std::string>& extra_summary, int64_t now_ms,
                           const std::vector<schema>& earlier = {});
  /// Phase 1 for a table with a row identity: the schema's identifier-field-ids are
  /// `identifier_ids` (equal to each delete file's equality_ids); the snapshot adds `files.data`
  /// and `files.equality_deletes`. Operation "append" (data only), "delete" (deletes only) or
  /// "overwrite" (both); the summary adds added-delete-files, added-equality-delete-files,
  /// added-equality-deletes and the cumulative total-delete-files, total-equality-deletes.
  result<prepared> prepare(const schema& s, const std::vector<int32_t>& identifier_ids, const snapshot_files& files,
                           const std::map<std::string, std::string>& extra_summary, int64_t now_ms,
                           const std::vector<schema>& earlier = {});
  /// Phase 2: the compare-and-swap on v(N+1).metadata.json. On success the table is at N+1.
  error commit(prepared& p);
  /// Undoes commit(p) (this process's last commit): the table is at N again.
  error revert(prepared& p);
  /// Removes the files prepare() wrote (best effort; after a failure).
  void discard(const prepared& p) noexcept;
  /// Replaces metadata/version-hint.text with the current version.
  error write_hint() const;

  /// Manifest merging: an append's manifest list holds at most this many entries (>= 2).
  void set_max_manifests(size_t n) noexcept { max_manifests_ = n < 2 ? 2 : n; }
  size_t max_manifests() const noexcept { return max_manifests_; }
  /// The data files prepare() adds are sorted by the field `field_id` ascending (0: unsorted,
  /// the default): prepare() then declares that sort order in the metadata (`sort-orders`, the
  /// next order-id unless an equal order exists; `default-sort-order-id`) and gives each added
  /// data file its order id (the manifest entry's `sort_order_id`). Delete files and
  /// prepare_replace()'s files stay unsorted (0).
  void sort_by(int32_t field_id) noexcept { sort_field_ = field_id; }
  /// The current snapshot's manifest list (empty before the first commit).
  result<std::vector<manifest_file>> manifests() const;
  /// The current snapshot's live entries (status ADDED or EXISTING; data and delete files) with
  /// their snapshot ids and sequence numbers resolved.
  result<std::vector<manifest_entry>> live_entries() const;
  /// A replace snapshot (compaction): `removed` (live entries, as live_entries() gives them)
  /// leave, `added` (under T/data/, durable, each written with one of the table's schemas) come
  /// in, in one manifest with every other live file as EXISTING; then the snapshots `expire`
  /// does not keep leave the metadata. `removed` may hold equality-delete files too (a rewrite
  /// that applied them: they leave in a new delete manifest, DELETED); `applied` is the number
  /// of data rows those deletes removed, so that records removed - applied == records added.
  /// INVALID_ARGUMENT if a removed file is not live or the records do not add up.
  result<prepared> prepare_replace(const std::vector<manifest_entry>& removed,
                                   const std::vector<added_file>& added,
                                   const std::map<std::string, std::string>& extra_summary, const expire_policy& expire,
                                   int64_t now_ms, int64_t applied = 0);
  /// The local path of a file URI of this table: under the metadata's `location`, mapped into
  /// dir() (a lake that was moved still reads); otherwise the URI's own path.
  std::string local_file(const std::string& uri) const;
  /// Every file the current metadata references: each snapshot's manifest list, their manifests
  /// and those manifests' live data/delete files, the metadata-log's versions and the current one.
  result<references> referenced() const;
  /// Deletes what referenced() does not name under T/data (*.parquet; only if `data`) and
  /// T/metadata (manifests, manifest lists, vN.metadata.json older than the metadata-log, *.tmp).
  /// The caller must hold the directory's lock (no writer running). Returns the removed paths.
  result<std::vector<std::string>> sweep(bool data);

 private:
  explicit table(std::string dir) : dir_(std::move(dir)) {}
  error parse();
  /// Writes the snapshot `snap` (its summary complete) into a copy of the metadata `m`, and the
  /// metadata file under a temporary name: the shared tail of prepare() and prepare_replace().
  /// The metadata-log keeps its newest `log_max` entries.
  error write_metadata(prepared& p, nlohmann::json m, nlohmann::json snap, int64_t now_ms,
                       size_t log_max = SIZE_MAX);

  size_t max_manifests_ = 16;
  int32_t sort_field_ = 0;  ///< sort_by()

  std::string dir_;
  int64_t version_ = 0;
  nlohmann::json meta_;  ///< null while version_ == 0
  std::vector<snapshot_info> history_;
  std::vector<std::pair<int64_t, nlohmann::json>> undo_;  ///< (version, metadata) before the last commit
};

}  // namespace dosql::lakehouse::iceberg
