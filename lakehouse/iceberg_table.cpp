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
#include "lakehouse/iceberg_manifest_reader.hpp"
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

json schema_json(const schema& s, int32_t schema_id, const std::vector<int32_t>& identifier_ids) {
  json fields = json::array();
  for (const auto& c : s.columns)
    fields.push_back({{"id", c.field_id}, {"name", c.name}, {"required", !c.optional}, {"type", std::string(type_name(c.type))}});
  json j = {{"type", "struct"}, {"schema-id", schema_id}, {"fields", std::move(fields)}};
  if (!identifier_ids.empty()) j["identifier-field-ids"] = identifier_ids;
  return j;
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
      if (it == by_id.end()) {
        // The current snapshot must exist; a missing ancestor was expired (history starts after it).
        if (history_.empty()) return error(ec::corruption, "snapshot " + std::to_string(*id) + " is not in snapshots");
        break;
      }
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
                                       const std::map<std::string, std::string>& extra_summary, int64_t now_ms,
                                       const std::vector<schema>& earlier) {
  return prepare(s, {}, snapshot_files{files, {}}, extra_summary, now_ms, earlier);
}

result<table::prepared> table::prepare(const schema& s, const std::vector<int32_t>& identifier_ids,
                                       const snapshot_files& added, const std::map<std::string, std::string>& extra_summary,
                                       int64_t now_ms, const std::vector<schema>& earlier) {
  const auto& files = added.data;
  const auto& deletes = added.equality_deletes;
  if (!deletes.empty() && identifier_ids.empty())
    return error(ec::invalid_argument, "the Iceberg table " + dir_ + ": equality deletes need identifier fields");
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
  // Each schema: the current one if equal, else an earlier equal one, else a new one.
  const json identifiers = identifier_ids.empty() ? json() : json(identifier_ids);
  int32_t schema_id = -1;
  int32_t last_column = m["last-column-id"].get<int32_t>();
  auto add_schema = [&](const schema& x) {
    auto fields = schema_json(x, 0)["fields"];
    int32_t id_of = -1, max_schema_id = -1;
    for (const auto& sc : m["schemas"]) {
      auto id = sc.at("schema-id").get<int32_t>();
      max_schema_id = std::max(max_schema_id, id);
      if (sc.at("fields") == fields && sc.value("identifier-field-ids", json()) == identifiers &&
          (id_of < 0 || id == m["current-schema-id"].get<int32_t>()))
        id_of = id;
    }
    if (id_of < 0) {
      id_of = max_schema_id + 1;
      m["schemas"].push_back(schema_json(x, id_of, identifier_ids));
    }
    m["current-schema-id"] = id_of;
    for (const auto& c : x.columns) last_column = std::max(last_column, c.field_id);
    return id_of;
  };
  for (const auto& x : earlier) add_schema(x);
  schema_id = add_schema(s);
  m["last-column-id"] = last_column;
  // The sort order the added data files follow (sort_by()): declared once, the default.
  int32_t sort_order = 0;
  if (sort_field_ > 0) {
    const json fields = json::array(
        {{{"transform", "identity"}, {"source-id", sort_field_}, {"direction", "asc"}, {"null-order", "nulls-first"}}});
    int32_t max_order = 0;
    for (const auto& o : m["sort-orders"]) {
      max_order = std::max(max_order, o.at("order-id").get<int32_t>());
      if (o.at("fields") == fields) sort_order = o.at("order-id").get<int32_t>();
    }
    if (sort_order == 0) {
      sort_order = max_order + 1;
      m["sort-orders"].push_back({{"order-id", sort_order}, {"fields", fields}});
    }
    m["default-sort-order-id"] = sort_order;
  }

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
    me.file.metrics = f.metrics;
    me.file.sort_order_id = sort_order;
    added_records += f.records;
    added_bytes += f.bytes;
    entries.push_back(std::move(me));
  }
  std::vector<manifest_entry> delete_entries;
  int64_t delete_records = 0, delete_bytes = 0;
  for (const auto& f : deletes) {
    manifest_entry me;
    me.file.content = file_content::equality_deletes;
    me.file.path = location + "/data/" + f.name;
    me.file.record_count = f.records;
    me.file.file_size_in_bytes = f.bytes;
    me.file.equality_ids = identifier_ids;
    me.file.metrics = f.metrics;
    delete_records += f.records;
    delete_bytes += f.bytes;
    delete_entries.push_back(std::move(me));
  }
  auto schema_text = schema_json(s, schema_id, identifier_ids).dump();
  const bool data_manifest = !files.empty() || deletes.empty();
  if (data_manifest) p.manifest = meta_dir + "/m-" + std::to_string(p.snapshot_id) + ".avro";
  if (!deletes.empty()) p.delete_manifest = meta_dir + "/del-" + std::to_string(p.snapshot_id) + ".avro";
  p.manifest_list = meta_dir + "/snap-" + std::to_string(p.snapshot_id) + ".avro";
  auto cleanup = [&](error e) -> result<prepared> {
    discard(p);
    return e;
  };
  std::vector<manifest_file> list;
  if (data_manifest) {
    auto manifest_bytes = write_manifest(schema_text, schema_id, entries);
    if (auto e = write_new_file(p.manifest, manifest_bytes)) return cleanup(e);
    manifest_file mine;
    mine.path = location + "/metadata/m-" + std::to_string(p.snapshot_id) + ".avro";
    mine.length = static_cast<int64_t>(manifest_bytes.size());
    mine.sequence_number = mine.min_sequence_number = seq;
    mine.added_snapshot_id = p.snapshot_id;
    mine.added_files = static_cast<int32_t>(files.size());
    mine.added_rows = added_records;
    list.push_back(mine);
  }
  if (!deletes.empty()) {
    auto manifest_bytes = write_manifest(schema_text, schema_id, delete_entries, true);
    if (auto e = write_new_file(p.delete_manifest, manifest_bytes)) return cleanup(e);
    manifest_file mine;
    mine.path = location + "/metadata/del-" + std::to_string(p.snapshot_id) + ".avro";
    mine.length = static_cast<int64_t>(manifest_bytes.size());
    mine.content = 1;
    mine.sequence_number = mine.min_sequence_number = seq;
    mine.added_snapshot_id = p.snapshot_id;
    mine.added_files = static_cast<int32_t>(deletes.size());
    mine.added_rows = delete_records;
    list.push_back(mine);
  }

  // ... then the parent's list. When the list would exceed max_manifests_, the parent's data
  // manifests are merged into one (and its delete manifests into one): EXISTING entries with
  // their original snapshot ids, sequence numbers and metrics.
  auto carried = manifests();
  if (!carried) return cleanup(carried.err());
  if (list.size() + carried->size() <= max_manifests_) {
    for (auto& mf : *carried) list.push_back(std::move(mf));
  } else {
    for (int32_t content : {0, 1}) {
      std::vector<manifest_file> of;
      for (const auto& mf : *carried)
        if (mf.content == content) of.push_back(mf);
      if (of.size() < 2) {
        for (auto& mf : of) list.push_back(std::move(mf));
        continue;
      }
      std::vector<manifest_entry> existing;
      manifest_file merged;
      auto name = std::string(content ? "del-" : "m-") + std::to_string(p.snapshot_id) + "-merged.avro";
      merged.path = location + "/metadata/" + name;
      merged.content = content;
      merged.sequence_number = merged.min_sequence_number = seq;
      merged.added_snapshot_id = p.snapshot_id;
      for (const auto& mf : of) {
        auto es = read_manifest(local_file(mf.path), mf);
        if (!es) return cleanup(es.err());
        for (auto& e : *es) {
          if (e.status == entry_status::deleted) continue;
          e.status = entry_status::existing;
          merged.min_sequence_number = std::min(merged.min_sequence_number, *e.sequence_number);
          ++merged.existing_files;
          merged.existing_rows += e.file.record_count;
          existing.push_back(std::move(e));
        }
      }
      auto bytes = write_manifest(schema_text, schema_id, existing, content == 1);
      p.merged_manifests.push_back(meta_dir + "/" + name);
      if (auto e = write_new_file(p.merged_manifests.back(), bytes)) return cleanup(e);
      merged.length = static_cast<int64_t>(bytes.size());
      list.push_back(std::move(merged));
    }
  }
  if (auto e = write_new_file(p.manifest_list, write_manifest_list(p.snapshot_id, parent, seq, list))) return cleanup(e);

  // The snapshot and the next metadata.
  std::map<std::string, std::string> prev;
  if (!history_.empty()) prev = history_.back().summary;
  json summary = {{"operation", deletes.empty() ? "append" : files.empty() ? "delete" : "overwrite"},
                  {"added-data-files", std::to_string(files.size())},
                  {"added-records", std::to_string(added_records)},
                  {"added-files-size", std::to_string(added_bytes + delete_bytes)},
                  {"total-data-files", std::to_string(summary_int(prev, "total-data-files") + static_cast<int64_t>(files.size()))},
                  {"total-records", std::to_string(summary_int(prev, "total-records") + added_records)},
                  {"total-files-size", std::to_string(summary_int(prev, "total-files-size") + added_bytes + delete_bytes)},
                  {"total-delete-files", std::to_string(summary_int(prev, "total-delete-files") + static_cast<int64_t>(deletes.size()))},
                  {"total-position-deletes", "0"},
                  {"total-equality-deletes", std::to_string(summary_int(prev, "total-equality-deletes") + delete_records)}};
  if (!deletes.empty()) {
    summary["added-delete-files"] = std::to_string(deletes.size());
    summary["added-equality-delete-files"] = std::to_string(deletes.size());
    summary["added-equality-deletes"] = std::to_string(delete_records);
  }
  for (const auto& [k, v] : extra_summary) summary[k] = v;
  json snap = {{"snapshot-id", p.snapshot_id},
               {"sequence-number", seq},
               {"timestamp-ms", now_ms},
               {"manifest-list", location + "/metadata/snap-" + std::to_string(p.snapshot_id) + ".avro"},
               {"summary", summary},
               {"schema-id", schema_id}};
  if (parent) snap["parent-snapshot-id"] = *parent;
  if (auto e = write_metadata(p, std::move(m), std::move(snap), now_ms)) return cleanup(e);
  return p;
}

error table::write_metadata(prepared& p, json m, json snap, int64_t now_ms, size_t log_max) {
  const std::string location = file_uri(dir_);
  if (version_ > 0)
    m["metadata-log"].push_back(
        {{"timestamp-ms", m["last-updated-ms"]}, {"metadata-file", location + "/metadata/v" + std::to_string(version_) + ".metadata.json"}});
  auto& ml = m["metadata-log"];
  if (ml.size() > log_max) ml.erase(ml.begin(), ml.end() - static_cast<std::ptrdiff_t>(log_max));
  m["last-sequence-number"] = snap["sequence-number"];
  m["snapshots"].push_back(std::move(snap));
  m["snapshot-log"].push_back({{"timestamp-ms", now_ms}, {"snapshot-id", p.snapshot_id}});
  m["last-updated-ms"] = now_ms;
  m["current-snapshot-id"] = p.snapshot_id;
  m["refs"]["main"] = {{"snapshot-id", p.snapshot_id}, {"type", "branch"}};
  p.metadata_tmp = dir_ + "/metadata/v" + std::to_string(p.version) + ".metadata.json." + random_hex32() + ".tmp";
  if (auto e = write_new_file(p.metadata_tmp, m.dump(2) + "\n")) return e;
  p.metadata = std::move(m);
  return {};
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
  for (const auto* f : {&p.metadata_tmp, &p.manifest_list, &p.manifest, &p.delete_manifest})
    if (!f->empty() && wal::path_exists(*f)) (void)wal::remove_file(*f);
  for (const auto& f : p.merged_manifests)
    if (wal::path_exists(f)) (void)wal::remove_file(f);
}

error table::write_hint() const {
  return wal::replace_file(dir_ + "/metadata/version-hint.text", std::to_string(version_));
}

std::string table::local_file(const std::string& uri) const {
  // A URI under the table's recorded location maps into dir_ (the lake may have moved since).
  if (meta_.is_object() && meta_.contains("location") && meta_["location"].is_string()) {
    const auto& loc = meta_["location"].get_ref<const std::string&>();
    if (!loc.empty() && uri.size() > loc.size() && uri.compare(0, loc.size(), loc) == 0 && uri[loc.size()] == '/')
      return dir_ + uri.substr(loc.size());
  }
  return local_path(uri);
}

result<std::vector<manifest_file>> table::manifests() const {
  if (history_.empty()) return std::vector<manifest_file>{};
  for (const auto& sn : meta_.at("snapshots"))
    if (sn.at("snapshot-id").get<int64_t>() == history_.back().id)
      return read_manifest_list(local_file(sn.at("manifest-list").get<std::string>()));
  return error(ec::corruption, "the Iceberg table " + dir_ + ": the current snapshot is not in snapshots");
}

result<std::vector<manifest_entry>> table::live_entries() const {
  auto list = manifests();
  if (!list) return list.err();
  std::vector<manifest_entry> out;
  for (const auto& mf : *list) {
    auto es = read_manifest(local_file(mf.path), mf);
    if (!es) return es.err();
    for (auto& e : *es)
      if (e.status != entry_status::deleted) out.push_back(std::move(e));
  }
  return out;
}

result<table::prepared> table::prepare_replace(const std::vector<manifest_entry>& removed,
                                               const std::vector<added_file>& added,
                                               const std::map<std::string, std::string>& extra_summary,
                                               const expire_policy& expire, int64_t now_ms, int64_t applied) {
  if (version_ == 0 || history_.empty())
    return error(ec::invalid_argument, "the Iceberg table " + dir_ + " has no snapshot to compact");
  auto meta_dir = dir_ + "/metadata";
  const std::string location = file_uri(dir_);
  prepared p;
  p.version = version_ + 1;
  json m = meta_;
  // The manifest's header schema: the current one.
  const int32_t schema_id = m.at("current-schema-id").get<int32_t>();
  json current_schema;
  for (const auto& sc : m["schemas"])
    if (sc.at("schema-id").get<int32_t>() == schema_id) current_schema = sc;

  std::set<int64_t> ids;
  for (const auto& x : m["snapshots"]) ids.insert(x.at("snapshot-id").get<int64_t>());
  do p.snapshot_id = random_positive_id();
  while (ids.count(p.snapshot_id));
  const int64_t seq = m["last-sequence-number"].get<int64_t>() + 1;
  const int64_t parent = history_.back().id;

  auto list = manifests();
  if (!list) return list.err();
  std::set<std::string> gone;
  for (const auto& r : removed) gone.insert(r.file.path);
  std::vector<manifest_entry> entries;
  manifest_file mine;
  mine.path = location + "/metadata/m-" + std::to_string(p.snapshot_id) + ".avro";
  mine.sequence_number = mine.min_sequence_number = seq;
  mine.added_snapshot_id = p.snapshot_id;
  int64_t added_records = 0, added_bytes = 0, removed_records = 0, removed_bytes = 0;
  for (const auto& f : added) {
    manifest_entry me;
    me.file.path = location + "/data/" + f.name;
    me.file.record_count = f.records;
    me.file.file_size_in_bytes = f.bytes;
    me.file.metrics = f.metrics;
    added_records += f.records;
    added_bytes += f.bytes;
    ++mine.added_files;
    mine.added_rows += f.records;
    entries.push_back(std::move(me));
  }
  std::vector<manifest_file> other;  // delete manifests: carried as they are (unless one of their files leaves)
  std::vector<manifest_entry> delete_entries;  // ... else their entries, into one new delete manifest
  manifest_file dels;
  dels.path = location + "/metadata/del-" + std::to_string(p.snapshot_id) + ".avro";
  dels.content = 1;
  dels.sequence_number = dels.min_sequence_number = seq;
  dels.added_snapshot_id = p.snapshot_id;
  size_t found = 0;
  bool rewrite_deletes = false;
  for (const auto& r : removed) rewrite_deletes = rewrite_deletes || r.file.content != file_content::data;
  // Carries one manifest's live entries into `into` (its list entry `mf_out`): a removed file
  // DELETED by this snapshot (sequence numbers stay), every other EXISTING.
  struct tally {
    int64_t files = 0, records = 0, bytes = 0;
  };
  auto carry = [&](const manifest_file& mf, manifest_file& mf_out, std::vector<manifest_entry>& into,
                   tally& gone_tally) -> error {
    auto es = read_manifest(local_file(mf.path), mf);
    if (!es) return es.err();
    for (auto& e : *es) {
      if (e.status == entry_status::deleted) continue;
      if (gone.count(e.file.path)) {
        e.status = entry_status::deleted;
        e.snapshot_id = p.snapshot_id;
        ++gone_tally.files;
        gone_tally.records += e.file.record_count;
        gone_tally.bytes += e.file.file_size_in_bytes;
        ++mf_out.deleted_files;
        mf_out.deleted_rows += e.file.record_count;
        ++found;
      } else {
        e.status = entry_status::existing;
        ++mf_out.existing_files;
        mf_out.existing_rows += e.file.record_count;
      }
      mf_out.min_sequence_number = std::min(mf_out.min_sequence_number, *e.sequence_number);
      into.push_back(std::move(e));
    }
    return {};
  };
  tally removed_data, removed_del;
  for (const auto& mf : *list) {
    if (mf.content != 0 && !rewrite_deletes) {
      other.push_back(mf);
      continue;
    }
    const bool data = mf.content == 0;
    if (auto e = carry(mf, data ? mine : dels, data ? entries : delete_entries, data ? removed_data : removed_del)) return e;
  }
  removed_records = removed_data.records;
  removed_bytes = removed_data.bytes;
  const int64_t removed_deletes = removed_del.files, removed_delete_records = removed_del.records,
                removed_delete_bytes = removed_del.bytes;
  if (found != gone.size())
    return error(ec::invalid_argument, "the Iceberg table " + dir_ + ": a file to replace is not live in the current snapshot");
  if (applied < 0 || applied > removed_records || removed_records - applied != added_records || (applied && !rewrite_deletes))
    return error(ec::invalid_argument, "the Iceberg table " + dir_ + ": a replace must keep the records (" +
                                           std::to_string(removed_records) + " removed, " + std::to_string(applied) +
                                           " of them by the deletes it applies, " + std::to_string(added_records) + " added)");

  auto schema_text = current_schema.dump();
  p.manifest = meta_dir + "/m-" + std::to_string(p.snapshot_id) + ".avro";
  p.manifest_list = meta_dir + "/snap-" + std::to_string(p.snapshot_id) + ".avro";
  auto cleanup = [&](error e) -> result<prepared> {
    discard(p);
    return e;
  };
  auto manifest_bytes = write_manifest(schema_text, schema_id, entries);
  if (auto e = write_new_file(p.manifest, manifest_bytes)) return cleanup(e);
  mine.length = static_cast<int64_t>(manifest_bytes.size());
  std::vector<manifest_file> new_list{mine};
  if (rewrite_deletes) {
    p.delete_manifest = meta_dir + "/del-" + std::to_string(p.snapshot_id) + ".avro";
    auto bytes = write_manifest(schema_text, schema_id, delete_entries, true);
    if (auto e = write_new_file(p.delete_manifest, bytes)) return cleanup(e);
    dels.length = static_cast<int64_t>(bytes.size());
    new_list.push_back(std::move(dels));
  }
  for (auto& mf : other) new_list.push_back(std::move(mf));
  if (auto e = write_new_file(p.manifest_list, write_manifest_list(p.snapshot_id, parent, seq, new_list))) return cleanup(e);

  const auto& prev = history_.back().summary;
  const auto files_delta = static_cast<int64_t>(added.size()) - static_cast<int64_t>(removed.size()) + removed_deletes;
  json summary = {{"operation", "replace"},
                  {"added-data-files", std::to_string(added.size())},
                  {"deleted-data-files", std::to_string(static_cast<int64_t>(removed.size()) - removed_deletes)},
                  {"added-records", std::to_string(added_records)},
                  {"deleted-records", std::to_string(removed_records)},
                  {"added-files-size", std::to_string(added_bytes)},
                  {"removed-files-size", std::to_string(removed_bytes)},
                  {"total-data-files", std::to_string(summary_int(prev, "total-data-files") + files_delta)},
                  {"total-records", std::to_string(summary_int(prev, "total-records") - applied)},
                  {"total-files-size",
                   std::to_string(summary_int(prev, "total-files-size") + added_bytes - removed_bytes - removed_delete_bytes)},
                  {"total-delete-files", std::to_string(summary_int(prev, "total-delete-files") - removed_deletes)},
                  {"total-position-deletes", prev.count("total-position-deletes") ? prev.at("total-position-deletes") : "0"},
                  {"total-equality-deletes", std::to_string(summary_int(prev, "total-equality-deletes") - removed_delete_records)}};
  if (removed_deletes) {
    summary["removed-delete-files"] = std::to_string(removed_deletes);
    summary["removed-equality-delete-files"] = std::to_string(removed_deletes);
    summary["removed-equality-deletes"] = std::to_string(removed_delete_records);
    summary["removed-files-size"] = std::to_string(removed_bytes + removed_delete_bytes);
  }
  for (const auto& [k, v] : extra_summary) summary[k] = v;
  json snap = {{"snapshot-id", p.snapshot_id},
               {"parent-snapshot-id", parent},
               {"sequence-number", seq},
               {"timestamp-ms", now_ms},
               {"manifest-list", location + "/metadata/snap-" + std::to_string(p.snapshot_id) + ".avro"},
               {"summary", summary},
               {"schema-id", schema_id}};

  // Expiry: the new snapshot is the newest; keep retain_last - 1 more of the newest (by
  // sequence number) and those younger than older_than_ms.
  std::vector<std::pair<int64_t, int64_t>> by_seq;  // (sequence, id)
  std::map<int64_t, int64_t> ts;
  for (const auto& x : m["snapshots"]) {
    by_seq.emplace_back(x.at("sequence-number").get<int64_t>(), x.at("snapshot-id").get<int64_t>());
    ts[x.at("snapshot-id").get<int64_t>()] = x.at("timestamp-ms").get<int64_t>();
  }
  std::sort(by_seq.rbegin(), by_seq.rend());
  std::set<int64_t> keep;
  for (size_t i = 0; i < by_seq.size(); ++i) {
    int64_t id = by_seq[i].second;
    bool recent = i + 1 < std::max<size_t>(expire.retain_last, 1);
    bool young = expire.older_than_ms && now_ms - ts[id] < *expire.older_than_ms;
    if (recent || young) keep.insert(id);
    else p.expired.push_back(id);
  }
  json snaps = json::array(), log = json::array();
  for (auto& x : m["snapshots"])
    if (keep.count(x.at("snapshot-id").get<int64_t>())) snaps.push_back(x);
  for (auto& x : m["snapshot-log"])
    if (keep.count(x.at("snapshot-id").get<int64_t>())) log.push_back(x);
  m["snapshots"] = std::move(snaps);
  m["snapshot-log"] = std::move(log);
  if (auto e = write_metadata(p, std::move(m), std::move(snap), now_ms, expire.previous_versions_max)) return cleanup(e);
  return p;
}

result<references> table::referenced() const {
  references r;
  if (version_ == 0) return r;
  r.metadata.insert(dir_ + "/metadata/v" + std::to_string(version_) + ".metadata.json");
  try {
    for (const auto& x : meta_.at("metadata-log")) r.metadata.insert(local_file(x.at("metadata-file").get<std::string>()));
    for (const auto& sn : meta_.at("snapshots")) {
      auto lp = local_file(sn.at("manifest-list").get<std::string>());
      if (!r.lists.insert(lp).second) continue;
      auto list = read_manifest_list(lp);
      if (!list) return list.err();
      for (const auto& mf : *list) {
        auto mp = local_file(mf.path);
        if (!r.manifests.insert(mp).second) continue;
        auto es = read_manifest(mp, mf);
        if (!es) return es.err();
        for (const auto& e : *es)
          if (e.status != entry_status::deleted) r.data.insert(local_file(e.file.path));
      }
    }
  } catch (const json::exception& e) {
    return error(ec::corruption, "the Iceberg table " + dir_ + ": " + e.what());
  }
  return r;
}

result<std::vector<std::string>> table::sweep(bool data) {
  std::vector<std::string> removed;
  auto refs = referenced();
  if (!refs) return refs.err();
  // By file name: every referenced file lives in T/data or T/metadata (names are unique ids).
  auto base = [](const std::string& p) {
    auto slash = p.rfind('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
  };
  std::set<std::string> keep;
  for (const auto* set : {&refs->data, &refs->manifests, &refs->lists, &refs->metadata})
    for (const auto& f : *set) keep.insert(base(f));
  auto sweep_dir = [&](const std::string& d, auto&& candidate) -> error {
    if (!wal::path_exists(d)) return {};
    auto names = wal::list_dir(d);
    if (!names) return names.err();
    for (const auto& n : *names) {
      auto path = d + "/" + n;
      if (!candidate(n) || keep.count(n)) continue;
      if (auto e = wal::remove_file(path)) return e;
      removed.push_back(path);
    }
    return {};
  };
  auto ends = [](const std::string& s, std::string_view x) { return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0; };
  if (data)
    if (auto e = sweep_dir(dir_ + "/data", [&](const std::string& n) { return ends(n, ".parquet") || ends(n, ".tmp"); })) return e;
  if (auto e = sweep_dir(dir_ + "/metadata", [&](const std::string& n) {
        if (ends(n, ".tmp")) return true;
        if (ends(n, ".avro") && (n.starts_with("m-") || n.starts_with("del-") || n.starts_with("snap-"))) return true;
        auto v = version_of(n);
        return v && *v < version_;
      }))
    return e;
  if (!removed.empty())
    for (const auto* d : {"/data", "/metadata"})
      if (wal::path_exists(dir_ + d))
        if (auto e = wal::sync_dir(dir_ + d)) return e;
  return removed;
}

}  // namespace dosql::lakehouse::iceberg
