// An Apache Iceberg v2 table on a local file system, written by one process (the lakehouse
// receiver): table metadata JSON, manifests, manifest lists (lakehouse/iceberg_manifest.hpp),
// and the commit (docs/LAKEHOUSE.md, "Iceberg tables").
//
// Layout of a table directory T:
//   T/data/<name>.parquet                    data files (written by the caller)
//   T/metadata/vN.metadata.json              table metadata version N (1, 2, ...)
//   T/metadata/version-hint.text             "N": the current version (file-system catalog)
//   T/metadata/m-<snapshot-id>.avro          the manifest of the files a snapshot added
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
// Invariants: version N+1 is based on version N (never skips, never overwrites); a snapshot
// adds exactly one manifest, named after its id, whose manifest-list entry is derived from the
// snapshot's summary (added-data-files, added-records) and sequence number: this writer must be
// the table's only writer. Snapshot summaries carry the cumulative totals (total-records,
// total-data-files, total-files-size) and the caller's extra keys (the receiver's dosql.*).
// Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <dosql/error.hpp>

#include "lakehouse/parquet_writer.hpp"

namespace dosql::lakehouse::iceberg {

/// Iceberg's type name for a column type: boolean, int, long, double, string, binary, timestamptz.
std::string_view type_name(column_type t) noexcept;
/// The Iceberg schema object of `s` (field ids = the Parquet field ids).
nlohmann::json schema_json(const schema& s, int32_t schema_id);
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
  std::string name;  ///< the file's name under T/data/
  int64_t records = 0;
  int64_t bytes = 0;
};

struct snapshot_info {
  int64_t id = 0;
  int64_t sequence = 0;
  int64_t timestamp_ms = 0;
  std::map<std::string, std::string> summary;
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
    nlohmann::json metadata;
    bool committed = false;
  };
  /// Phase 1 (see above): a snapshot appending `files` (under T/data/, durable) written with
  /// schema `s`; `extra_summary` is merged into the snapshot summary.
  result<prepared> prepare(const schema& s, const std::vector<added_file>& files,
                           const std::map<std::string, std::string>& extra_summary, int64_t now_ms);
  /// Phase 2: the compare-and-swap on v(N+1).metadata.json. On success the table is at N+1.
  error commit(prepared& p);
  /// Undoes commit(p) (this process's last commit): the table is at N again.
  error revert(prepared& p);
  /// Removes the files prepare() wrote (best effort; after a failure).
  void discard(const prepared& p) noexcept;
  /// Replaces metadata/version-hint.text with the current version.
  error write_hint() const;

 private:
  explicit table(std::string dir) : dir_(std::move(dir)) {}
  error parse();

  std::string dir_;
  int64_t version_ = 0;
  nlohmann::json meta_;  ///< null while version_ == 0
  std::vector<snapshot_info> history_;
  std::vector<std::pair<int64_t, nlohmann::json>> undo_;  ///< (version, metadata) before the last commit
};

}  // namespace dosql::lakehouse::iceberg
