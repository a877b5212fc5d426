#include "lakehouse/iceberg_table.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "lakehouse/iceberg_manifest.hpp"
#include "lakehouse/ids.hpp"
#include "wal/file.hpp"

namespace dosql::lakehouse::iceberg {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

result<std::string> read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error(ec::io_error, "cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return error(ec::io_error, "cannot read " + path);
  return ss.str();
}

int64_t summary_int(const std::map<std::string, std::string>& s, const std::string& key) {
  auto it = s.find(key);
  if (it == s.end()) return 0;
  try {
    return std::stoll(it->second);
  } catch (...) {
    return 0;
  }
}

/// Writes `data` to a new file `path` (O_EXCL) and fdatasyncs it; no directory fsync.
error write_new_file(const std::string& path, std::string_view data) {
  auto fd = wal::open_file(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC);
  if (!fd) return fd.err();
  if (auto e = wal::pwrite_full(fd->get(), data.data(), data.size(), 0, path)) return e;
  return wal::sync_data(fd->get(), path);
}

std::optional<int64_t> version_of(const std::string& name) {
  // vN.metadata.json
  constexpr std::string_view suffix = ".metadata.json";
  if (name.size() <= 1 + suffix.size() || name[0] != 'v' || name.substr(name.size() - suffix.size()) != suffix)
    return std::nullopt;
  auto digits = name.substr(1, name.size() - 1 - suffix.size());
  if (digits.empty() || digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

/// The compare-and-swap of a commit: link(2) of the durable temporary file `tmp` to
/// vN.metadata.json fails if that version exists (BUSY); then the directory fsync. `tmp` is
/// removed on success (the link holds the data).
error link_version(const std::string& dir, const std::string& tmp, int64_t version) {
  auto meta_dir = dir + "/metadata";
  auto target = metadata_path(dir, version);
  if (::link(tmp.c_str(), target.c_str()) != 0) {
    int err = errno;
    if (err == EEXIST)
      return error(ec::busy, "the Iceberg table " + dir + ": version " + std::to_string(version) +
                                 " was committed by another writer");
    return wal::io_error("cannot commit the Iceberg table version", target, err);
  }
  if (auto e = wal::sync_dir(meta_dir)) {
    (void)wal::remove_file(target);
    return e;
  }
  (void)wal::remove_file(tmp);
  return {};
}

}  // namespace

std::string metadata_path(const std::string& dir, int64_t version) {
  return dir + "/metadata/v" + std::to_string(version) + ".metadata.json";
}

result<std::string> commit_metadata(const std::string& dir, int64_t base_version, const nlohmann::json& metadata) {
  auto meta_dir = dir + "/metadata";
  if (auto e = wal::make_dirs(meta_dir)) return e;
  const int64_t version = base_version + 1;
  auto tmp = metadata_path(dir, version) + "." + random_hex32() + ".tmp";
  if (auto e = write_new_file(tmp, metadata.dump(2) + "\n")) {
    (void)wal::remove_file(tmp);
    return e;
  }
  if (auto e = link_version(dir, tmp, version)) {
    (void)wal::remove_file(tmp);
    return e;
  }
  // Committed: the hint is only a hint (load() takes the highest version), its failure is not the commit's.
  (void)wal::replace_file(dir + "/metadata/version-hint.text", std::to_string(version));
  return metadata_path(dir, version);
}

std::string_view type_name(column_type t) noexcept {
  switch (t) {
    case column_type::boolean: return "boolean";
    case column_type::int32: return "int";
    case column_type::int64: return "long";
    case column_type::float64: return "double";
    case column_type::string: return "string";
    case column_type::binary: return "binary";
    case column_type::timestamp: return "timestamptz";
  }
  return "binary";
}

json schema_json(const schema& s, int32_t schema_id) {
  json fields = json::array();
  for (const auto& c : s.columns)
    fields.push_back({{"id", c.field_id}, {"name", c.name}, {"required", !c.optional}, {"type", std::string(type_name(c.type))}});
  return {{"type", "struct"}, {"schema-id", schema_id}, {"fields", std::move(fields)}};
}

std::string file_uri(const std::string& path) {
  std::error_code ec;
  auto abs = fs::absolute(path, ec);
  return "file://" + (ec ? path : abs.lexically_normal().string());
}

result<table> table::load(const std::string& dir) {
  table t(dir);
  auto meta_dir = dir + "/metadata";
  if (!wal::path_exists(meta_dir)) return t;
  auto names = wal::list_dir(meta_dir);
  if (!names) return names.err();
  for (const auto& n : *names)
    if (auto v = version_of(n)) t.version_ = std::max(t.version_, *v);
  if (t.version_ == 0) return t;
  auto path = meta_dir + "/v" + std::to_string(t.version_) + ".metadata.json";
  auto text = read_whole(path);
  if (!text) return text.err();
  t.meta_ = json::parse(*text, nullptr, false);
  if (auto e = t.parse()) return error(ec::corruption, "the Iceberg table metadata " + path + ": " + e.message());
  return t;
}

error table::parse() {
  history_.clear();
  if (!meta_.is_object()) return error(ec::corruption, "not a JSON object");
  try {
    if (meta_.at("format-version").get<int>() != 2) return error(ec::corruption, "format-version is not 2");
    auto cur = meta_.value("current-snapshot-id", json());
    if (cur.is_null() || cur.get<int64_t>() < 0) return {};
    std::map<int64_t, const json*> by_id;
    for (const auto& s : meta_.at("snapshots")) by_id[s.at("snapshot-id").get<int64_t>()] = &s;
    std::optional<int64_t> id = cur.get<int64_t>();
    while (id) {
      auto it = by_id.find(*id);
      if (it == by_id.end()) return error(ec::corruption, "snapshot " + std::to_string(*id) + " is not in snapshots");
      const json& s = *it->second;
      snapshot_info si;
      si.id = *id;
      si.sequence = s.at("sequence-number").get<int64_t>();
      si.timestamp_ms = s.at("timestamp-ms").get<int64_t>();
      for (auto& [k, v] : s.at("summary").items()) si.summary[k] = v.get<std::string>();
      history_.push_back(std::move(si));
      if (s.contains("parent-snapshot-id") && !s["parent-snapshot-id"].is_null())
        id = s["parent-snapshot-id"].get<int64_t>();
      else
        id.reset();
      if (history_.size() > by_id.size()) return error(ec::corruption, "the snapshot parents form a cycle");
    }
    std::reverse(history_.begin(), history_.end());
  } catch (const json::exception& e) {
    return error(ec::corruption, e.what());
  }
  return {};
}

result<table::prepared> table::prepare(const schema& s, const std::vector<added_file>& files,
                                       const std::map<std::string, std::string>& extra_summary, int64_t now_ms) {
  auto meta_dir = dir_ + "/metadata";
  if (auto e = wal::make_dirs(meta_dir)) return e;
  const std::string location = file_uri(dir_);
  prepared p;
  p.version = version_ + 1;
  json m = version_ == 0 ? json() : meta_;
  if (version_ == 0) {
    m = {{"format-version", 2},
         {"table-uuid", random_uuid()},
         {"location", location},
         {"last-sequence-number", 0},
         {"last-updated-ms", now_ms},
         {"last-column-id", 0},
         {"schemas", json::array()},
         {"current-schema-id", 0},
         {"partition-specs", json::array({{{"spec-id", 0}, {"fields", json::array()}}})},
         {"default-spec-id", 0},
         {"last-partition-id", 999},
         {"sort-orders", json::array({{{"order-id", 0}, {"fields", json::array()}}})},
         {"default-sort-order-id", 0},
         {"properties", {{"write.format.default", "parquet"}, {"dosql.writer", "dosql lakehouse receiver"}}},
         {"current-snapshot-id", -1},
         {"refs", json::object()},
         {"snapshots", json::array()},
         {"snapshot-log", json::array()},
         {"metadata-log", json::array()}};
  }
  // The schema: the current one if equal, else an earlier equal one, else a new one.
  auto fields = schema_json(s, 0)["fields"];
  int32_t schema_id = -1, max_schema_id = -1;
  for (const auto& sc : m["schemas"]) {
    auto id = sc.at("schema-id").get<int32_t>();
    max_schema_id = std::max(max_schema_id, id);
    if (sc.at("fields") == fields && (schema_id < 0 || id == m["current-schema-id"].get<int32_t>())) schema_id = id;
  }
  if (schema_id < 0) {
    schema_id = max_schema_id + 1;
    m["schemas"].push_back(schema_json(s, schema_id));
  }
  m["current-schema-id"] = schema_id;
  int32_t last_column = m["last-column-id"].get<int32_t>();
  for (const auto& c : s.columns) last_column = std::max(last_column, c.field_id);
  m["last-column-id"] = last_column;

  // Snapshot id (unique in the table), sequence number, parent.
  std::set<int64_t> ids;
  for (const auto& x : m["snapshots"]) ids.insert(x.at("snapshot-id").get<int64_t>());
  do p.snapshot_id = random_positive_id();
  while (ids.count(p.snapshot_id));
  const int64_t seq = m["last-sequence-number"].get<int64_t>() + 1;
  std::optional<int64_t> parent;
  if (!history_.empty()) parent = history_.back().id;

  // The manifest of the added files.
  std::vector<manifest_entry> entries;
  int64_t added_records = 0, added_bytes = 0;
  for (const auto& f : files) {
    manifest_entry me;
    me.file.path = location + "/data/" + f.name;
    me.file.record_count = f.records;
    me.file.file_size_in_bytes = f.bytes;
    added_records += f.records;
    added_bytes += f.bytes;
    entries.push_back(std::move(me));
  }
  auto schema_text = schema_json(s, schema_id).dump();
  p.manifest = meta_dir + "/m-" + std::to_string(p.snapshot_id) + ".avro";
  p.manifest_list = meta_dir + "/snap-" + std::to_string(p.snapshot_id) + ".avro";
  auto cleanup = [&](error e) -> result<prepared> {
    discard(p);
    return e;
  };
  auto manifest_bytes = write_manifest(schema_text, schema_id, entries);
  if (auto e = write_new_file(p.manifest, manifest_bytes)) return cleanup(e);

  // The manifest list: the new manifest, then each ancestor's.
  std::vector<manifest_file> list;
  manifest_file mine;
  mine.path = location + "/metadata/m-" + std::to_string(p.snapshot_id) + ".avro";
  mine.length = static_cast<int64_t>(manifest_bytes.size());
  mine.sequence_number = mine.min_sequence_number = seq;
  mine.added_snapshot_id = p.snapshot_id;
  mine.added_files = static_cast<int32_t>(files.size());
  mine.added_rows = added_records;
  list.push_back(mine);
  for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
    manifest_file mf;
    auto rel = "/metadata/m-" + std::to_string(it->id) + ".avro";
    mf.path = location + rel;
    struct stat st {};
    if (::stat((dir_ + rel).c_str(), &st) != 0)
      return cleanup(wal::io_error("the manifest of snapshot " + std::to_string(it->id) + " is missing:", dir_ + rel, errno));
    mf.length = st.st_size;
    mf.sequence_number = mf.min_sequence_number = it->sequence;
    mf.added_snapshot_id = it->id;
    mf.added_files = static_cast<int32_t>(summary_int(it->summary, "added-data-files"));
    mf.added_rows = summary_int(it->summary, "added-records");
    list.push_back(mf);
  }
  if (auto e = write_new_file(p.manifest_list, write_manifest_list(p.snapshot_id, parent, seq, list))) return cleanup(e);

  // The snapshot and the next metadata.
  std::map<std::string, std::string> prev;
  if (!history_.empty()) prev = history_.back().summary;
  json summary = {{"operation", "append"},
                  {"added-data-files", std::to_string(files.size())},
                  {"added-records", std::to_string(added_records)},
                  {"added-files-size", std::to_string(added_bytes)},
                  {"total-data-files", std::to_string(summary_int(prev, "total-data-files") + static_cast<int64_t>(files.size()))},
                  {"total-records", std::to_string(summary_int(prev, "total-records") + added_records)},
                  {"total-files-size", std::to_string(summary_int(prev, "total-files-size") + added_bytes)},
                  {"total-delete-files", "0"},
                  {"total-position-deletes", "0"},
                  {"total-equality-deletes", "0"}};
  for (const auto& [k, v] : extra_summary) summary[k] = v;
  json snap = {{"snapshot-id", p.snapshot_id},
               {"sequence-number", seq},
               {"timestamp-ms", now_ms},
               {"manifest-list", location + "/metadata/snap-" + std::to_string(p.snapshot_id) + ".avro"},
               {"summary", summary},
               {"schema-id", schema_id}};
  if (parent) snap["parent-snapshot-id"] = *parent;
  if (version_ > 0)
    m["metadata-log"].push_back(
        {{"timestamp-ms", m["last-updated-ms"]}, {"metadata-file", location + "/metadata/v" + std::to_string(version_) + ".metadata.json"}});
  m["snapshots"].push_back(std::move(snap));
  m["snapshot-log"].push_back({{"timestamp-ms", now_ms}, {"snapshot-id", p.snapshot_id}});
  m["last-sequence-number"] = seq;
  m["last-updated-ms"] = now_ms;
  m["current-snapshot-id"] = p.snapshot_id;
  m["refs"]["main"] = {{"snapshot-id", p.snapshot_id}, {"type", "branch"}};
  p.metadata_tmp = meta_dir + "/v" + std::to_string(p.version) + ".metadata.json." + random_hex32() + ".tmp";
  if (auto e = write_new_file(p.metadata_tmp, m.dump(2) + "\n")) return cleanup(e);
  p.metadata = std::move(m);
  return p;
}

error table::commit(prepared& p) {
  if (p.version != version_ + 1)
    return error(ec::invalid_argument, "the Iceberg table " + dir_ + " is at version " + std::to_string(version_) +
                                           ", the commit was prepared for version " + std::to_string(p.version - 1));
  if (auto e = link_version(dir_, p.metadata_tmp, p.version)) return e;
  undo_.clear();
  undo_.emplace_back(version_, std::move(meta_));
  version_ = p.version;
  meta_ = p.metadata;
  p.committed = true;
  if (auto e = parse()) return error(ec::corruption, "the Iceberg metadata just written for " + dir_ + ": " + e.message());
  return {};
}

error table::revert(prepared& p) {
  if (!p.committed || undo_.empty() || version_ != p.version)
    return error(ec::invalid_argument, "the Iceberg table " + dir_ + ": nothing to revert");
  auto meta_dir = dir_ + "/metadata";
  auto target = meta_dir + "/v" + std::to_string(p.version) + ".metadata.json";
  if (auto e = wal::remove_file(target)) return e;
  if (auto e = wal::sync_dir(meta_dir)) return e;
  version_ = undo_.back().first;
  meta_ = std::move(undo_.back().second);
  undo_.clear();
  p.committed = false;
  if (version_ == 0) {
    history_.clear();
    return {};
  }
  return parse();
}

void table::discard(const prepared& p) noexcept {
  for (const auto* f : {&p.metadata_tmp, &p.manifest_list, &p.manifest})
    if (!f->empty() && wal::path_exists(*f)) (void)wal::remove_file(*f);
}

error table::write_hint() const {
  return wal::replace_file(dir_ + "/metadata/version-hint.text", std::to_string(version_));
}

}  // namespace dosql::lakehouse::iceberg
