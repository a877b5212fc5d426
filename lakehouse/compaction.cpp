#include "lakehouse/compaction.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "lakehouse/current_state.hpp"
#include "lakehouse/ids.hpp"
#include "lakehouse/iceberg_manifest_reader.hpp"
#include "lakehouse/parquet_reader.hpp"
#include "lakehouse/parquet_writer.hpp"
#include "wal/file.hpp"

namespace dosql::lakehouse {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Per source, the newest {last-lsn, sequence, flush-tables, flush-current} over a history (the snapshots' own
// dosql.* keys and earlier compactions' dosql.marks).
json marks_of(const std::vector<iceberg::snapshot_info>& history) {
  json marks = json::object();
  auto take = [&](const std::string& src, const json& m) {
    auto lsn = [](const json& x) {
      try {
        return std::stoull(x.at("last-lsn").get<std::string>());
      } catch (...) {
        return 0ull;
      }
    };
    if (!marks.contains(src) || lsn(marks[src]) < lsn(m)) marks[src] = m;
  };
  for (const auto& sn : history) {
    if (auto it = sn.summary.find("dosql.marks"); it != sn.summary.end()) {
      auto j = json::parse(it->second, nullptr, false);
      if (j.is_object())
        for (auto& [src, m] : j.items()) take(src, m);
    }
    auto get = [&](const char* k) {
      auto it = sn.summary.find(k);
      return it == sn.summary.end() ? std::string() : it->second;
    };
    if (auto src = get("dosql.source"); !src.empty())
      take(src, {{"last-lsn", get("dosql.last-lsn")},
                 {"sequence", get("dosql.sequence")},
                 {"flush-tables", get("dosql.flush-tables")},
                 {"flush-current", get("dosql.flush-current")}});
  }
  return marks;
}

}  // namespace

result<compact_report> compact_table(const std::string& table_dir, const compact_options& o) {
  auto log = [&](const std::string& s) {
    if (o.log) o.log(s);
  };
  compact_report rep;
  rep.table = table_dir;
  auto t = iceberg::table::load(table_dir);
  if (!t) return t.err();
  if (t->version() == 0 || t->history().empty()) {
    log(table_dir + ": no snapshot, nothing to compact");
    return rep;
  }
  auto list = t->manifests();
  if (!list) return list.err();
  auto live = t->live_entries();
  if (!live) return live.err();
  rep.files_before = live->size();
  rep.snapshots_before = t->metadata().at("snapshots").size();

  // A table with equality deletes (a current-state table): every data file is rewritten without
  // the rows its deletes remove (a delete applies to the data of lower sequence numbers whose
  // key columns, by field id, are equal), and the delete files leave in the same commit.
  struct delete_set {
    int64_t sequence = 0;
    std::vector<int32_t> ids;
    std::set<std::string> keys;
  };
  std::vector<delete_set> deletes;
  std::vector<iceberg::manifest_entry> delete_entries;
  for (const auto& e : *live) {
    if (e.file.content == iceberg::file_content::data) continue;
    if (e.file.content != iceberg::file_content::equality_deletes)
      return error(ec::invalid_argument, "the Iceberg table " + table_dir + " has position deletes (" + e.file.path +
                                             "), which dosql lakehouse compact does not apply");
    auto c = read_parquet_file(t->local_file(e.file.path));
    if (!c) return c.err();
    delete_set d{*e.sequence_number, e.file.equality_ids, {}};
    std::vector<size_t> at;
    for (auto id : d.ids) {
      size_t i = 0;
      while (i < c->file_schema.columns.size() && c->file_schema.columns[i].field_id != id) ++i;
      if (i == c->file_schema.columns.size())
        return error(ec::corruption, "the delete file " + e.file.path + " lacks its equality field " + std::to_string(id));
      at.push_back(i);
    }
    for (const auto& r : c->rows) {
      std::vector<value> k;
      for (auto i : at) k.push_back(r[i]);
      d.keys.insert(key_text(k));
    }
    deletes.push_back(std::move(d));
    delete_entries.push_back(e);
  }
  const bool apply = !delete_entries.empty();
  int64_t applied = 0;

  // 1. Small files, by schema, in sequence order; bins of about target_file_bytes.
  struct input {
    iceberg::manifest_entry entry;
    parquet_contents contents;
  };
  std::vector<iceberg::manifest_entry> small;  // (applying deletes: every data file)
  for (const auto& e : *live)
    if (e.file.content == iceberg::file_content::data &&
        (apply || static_cast<uint64_t>(e.file.file_size_in_bytes) < o.target_file_bytes))
      small.push_back(e);
  std::stable_sort(small.begin(), small.end(), [](const auto& a, const auto& b) { return *a.sequence_number < *b.sequence_number; });
  std::map<std::string, std::vector<input>> groups;  // by the schema's JSON
  for (auto& e : small) {
    auto c = read_parquet_file(t->local_file(e.file.path));
    if (!c) return c.err();
    if (static_cast<int64_t>(c->rows.size()) != e.file.record_count)
      return error(ec::corruption, "the data file " + e.file.path + " holds " + std::to_string(c->rows.size()) +
                                       " rows, its manifest entry says " + std::to_string(e.file.record_count));
    if (apply) {  // drop the rows a later delete removes
      const int64_t seq = *e.sequence_number;
      std::vector<std::vector<value>> kept;
      for (auto& r : c->rows) {
        bool gone = false;
        for (const auto& d : deletes) {
          if (d.sequence <= seq) continue;
          std::vector<value> k;
          for (auto id : d.ids) {
            size_t i = 0;
            while (i < c->file_schema.columns.size() && c->file_schema.columns[i].field_id != id) ++i;
            if (i == c->file_schema.columns.size())
              return error(ec::corruption, "the data file " + e.file.path + " lacks the equality field " + std::to_string(id));
            k.push_back(r[i]);
          }
          if (d.keys.count(key_text(k))) {
            gone = true;
            break;
          }
        }
        if (gone) ++applied;
        else kept.push_back(std::move(r));
      }
      c->rows = std::move(kept);
    }
    auto key = iceberg::schema_json(c->file_schema, 0).dump();
    groups[key].push_back({std::move(e), std::move(*c)});
  }

  // 2. The new files.
  std::vector<iceberg::manifest_entry> removed;
  std::vector<iceberg::added_file> added;
  std::vector<std::string> written;
  auto undo = [&] {
    for (const auto& w : written)
      if (wal::path_exists(w)) (void)wal::remove_file(w);
  };
  for (auto& [key, files] : groups) {
    if (!apply && files.size() < std::max<size_t>(o.min_input_files, 2)) continue;
    std::vector<std::vector<input*>> bins(1);
    uint64_t bytes = 0;
    for (auto& f : files) {
      if (!bins.back().empty() && bytes + static_cast<uint64_t>(f.entry.file.file_size_in_bytes) > o.target_file_bytes) {
        bins.emplace_back();
        bytes = 0;
      }
      bins.back().push_back(&f);
      bytes += static_cast<uint64_t>(f.entry.file.file_size_in_bytes);
    }
    for (const auto& bin : bins) {
      if (!apply && bin.size() < 2) continue;
      size_t bin_rows = 0;
      for (auto* f : bin) bin_rows += f->contents.rows.size();
      if (bin_rows == 0) {  // (applying deletes: every row of the bin is deleted) no file
        for (auto* f : bin) removed.push_back(f->entry);
        log(table_dir + ": " + std::to_string(bin.size()) + " files, every row deleted");
        continue;
      }
      const schema& sc = bin.front()->contents.file_schema;
      auto name = "compact-" + random_hex32() + ".parquet";
      auto path = table_dir + "/data/" + name;
      writer_options wo;
      for (const auto& [k, v] : bin.front()->contents.key_value_metadata)
        if (k == "iceberg.schema" || k == "dosql.source" || k == "dosql.table") wo.key_value_metadata.emplace_back(k, v);
      wo.key_value_metadata.emplace_back("dosql.compacted-files", std::to_string(bin.size()));
      auto w = parquet_writer::create(path, sc, wo);
      if (!w) {
        undo();
        return w.err();
      }
      int64_t rows = 0;
      for (auto* f : bin) {
        for (const auto& r : f->contents.rows)
          if (auto e = w->append(r)) {
            undo();
            return error(e.code(), "compacting " + f->entry.file.path + ": " + e.message());
          }
        rows += static_cast<int64_t>(f->contents.rows.size());
        removed.push_back(f->entry);
        f->contents.rows.clear();
        f->contents.rows.shrink_to_fit();
      }
      if (auto e = w->finish()) {
        undo();
        return e;
      }
      written.push_back(path);
      added.push_back({name, rows, static_cast<int64_t>(w->bytes_written()), w->metrics()});
      log(table_dir + ": " + std::to_string(bin.size()) + " files (" + std::to_string(rows) + " rows) -> data/" + name);
    }
  }

  // 3. One commit: the replace snapshot and the expiry.
  auto marks = marks_of(t->history());
  std::map<std::string, std::string> extra;
  for (const auto& [k, v] : t->history().back().summary)
    if (k.starts_with("dosql.") && k != "dosql.files" && k != "dosql.marks") extra[k] = v;
  for (const auto& d : delete_entries) removed.push_back(d);  // applied: they leave with the rewritten data
  std::string names;
  for (const auto& a : added) names += (names.empty() ? "" : ",") + a.name;
  extra["dosql.files"] = names;
  extra["dosql.operation"] = "compact";
  if (!marks.empty()) extra["dosql.marks"] = marks.dump();
  bool expires = rep.snapshots_before > std::max<size_t>(o.expire.retain_last, 1);
  if (added.empty() && removed.empty() && !expires) {
    log(table_dir + ": nothing to rewrite or expire");
  } else {
    auto p = t->prepare_replace(removed, added, extra, o.expire, now_ms(), applied);
    if (!p) {
      undo();
      return p.err();
    }
    if (auto e = t->commit(*p)) {
      t->discard(*p);
      undo();
      return e;
    }
    rep.committed = true;
    if (auto e = t->write_hint()) log(table_dir + ": " + e.to_string() + " (version-hint.text is rewritten at the next commit)");
    log(table_dir + ": committed version " + std::to_string(t->version()) + " (replace: " + std::to_string(removed.size()) +
        " files -> " + std::to_string(added.size()) + ", " + std::to_string(p->expired.size()) + " snapshots expired)");
  }
  rep.rewritten = removed.size() - delete_entries.size();
  rep.applied_delete_files = delete_entries.size();
  rep.applied_rows = static_cast<size_t>(applied);
  rep.written = added.size();
  rep.files_after = rep.files_before - removed.size() + added.size();
  rep.snapshots_after = t->metadata().at("snapshots").size();

  // 4. The sweep.
  auto gone = t->sweep(true);
  if (!gone) return gone.err();
  rep.removed_files = gone->size();
  if (!gone->empty()) log(table_dir + ": removed " + std::to_string(gone->size()) + " unreferenced files");
  return rep;
}

result<std::vector<compact_report>> compact(const compact_options& o) {
  if (o.dir.empty()) return error(ec::invalid_argument, "no lakehouse directory given");
  if (o.target_file_bytes == 0) return error(ec::invalid_argument, "the target file size must be > 0");
  if (!wal::path_exists(o.dir + "/_dosql") && !wal::path_exists(o.dir))
    return error(ec::invalid_argument, "the lakehouse directory " + o.dir + " does not exist");
  auto meta = o.dir + "/_dosql";
  if (auto e = wal::make_dirs(meta)) return e;
  auto lock = wal::lock_dir(meta, "the lakehouse directory " + o.dir + " (a running receiver)");
  if (!lock) return lock.err();
  if (auto e = wal::record_lock_owner(*lock, meta)) return e;

  std::vector<std::string> dirs;
  if (o.table) {
    auto d = o.dir + "/" + *o.table;
    if (!wal::path_exists(d + "/metadata") && wal::path_exists(d + "_changelog/metadata")) d += "_changelog";
    if (!wal::path_exists(d + "/metadata"))
      return error(ec::invalid_argument, "no Iceberg table " + *o.table + " in the lakehouse directory " + o.dir);
    dirs.push_back(d);
  } else {
    std::error_code ec;
    for (const auto& ns : fs::directory_iterator(o.dir, ec)) {
      if (!ns.is_directory() || ns.path().filename() == "_dosql") continue;
      for (const auto& tbl : fs::directory_iterator(ns.path(), ec))
        if (tbl.is_directory() && fs::is_directory(tbl.path() / "metadata")) dirs.push_back(tbl.path().string());
    }
    if (ec) return error(ec::io_error, "cannot list " + o.dir + ": " + ec.message());
    std::sort(dirs.begin(), dirs.end());
  }
  std::vector<compact_report> out;
  for (const auto& d : dirs) {
    auto r = compact_table(d, o);
    if (!r && !o.table && r.err().code() == ec::invalid_argument && r.err().message().find("has position deletes") != std::string::npos) {
      if (o.log) o.log(r.err().message() + ": skipped");
      compact_report skipped;
      skipped.table = d;
      skipped.skipped = r.err().message();
      out.push_back(std::move(skipped));
      continue;
    }
    if (!r) return r.err();
    out.push_back(std::move(*r));
  }
  return out;
}

}  // namespace dosql::lakehouse
