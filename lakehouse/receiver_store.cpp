#include "lakehouse/receiver_store.hpp"

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <filesystem>
#include <optional>
#include <tuple>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lakehouse/ids.hpp"
#include "lakehouse/parquet_reader.hpp"
#include "lakehouse/parquet_writer.hpp"

namespace dosql::lakehouse {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr std::string_view pending_suffix = ".pending";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

uint64_t value_bytes(const value& v) {
  if (auto* s = std::get_if<std::string>(&v)) return 16 + s->size();
  if (auto* b = std::get_if<bytes>(&v)) return 16 + b->size();
  return 16;
}

result<column_type> type_named(const std::string& s) {
  for (auto t : {column_type::boolean, column_type::int32, column_type::int64, column_type::float64, column_type::string,
                 column_type::binary, column_type::timestamp})
    if (to_string(t) == s) return t;
  return error(ec::corruption, "unknown column type '" + s + "'");
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  for (size_t b = 0; b < s.size();) {
    auto c = s.find(',', b);
    if (c == std::string::npos) c = s.size();
    out.push_back(s.substr(b, c - b));
    b = c + 1;
  }
  return out;
}

std::string_view op_name(cdc::change_type t) {
  switch (t) {
    case cdc::change_type::insert: return "INSERT";
    case cdc::change_type::update: return "UPDATE";
    default: return "DELETE";
  }
}

}  // namespace

bool safe_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  return true;
}

receiver_store::receiver_store(store_options o) : o_(std::move(o)) {}
receiver_store::~receiver_store() = default;

void receiver_store::log(const std::string& line) const {
  if (o_.log) o_.log(line);
}

std::string receiver_store::data_dir(const std::string& table) const { return table_dir(table) + "/data"; }

std::string receiver_store::table_dir(const std::string& table) const {
  return o_.dir + "/" + o_.namespace_name + "/" + table + "_changelog";
}

std::string receiver_store::current_dir(const std::string& table) const { return o_.dir + "/" + o_.namespace_name + "/" + table; }

result<iceberg::table*> receiver_store::current_table_for(const std::string& key) {
  if (auto it = current_tables_.find(key); it != current_tables_.end()) return &it->second;
  auto t = iceberg::table::load(o_.dir + "/" + key);
  if (!t) return t.err();
  t->set_max_manifests(o_.max_manifests);
  return &current_tables_.emplace(key, std::move(*t)).first->second;
}

uint64_t receiver_store::current_mark(const std::string& key, const std::string& source) const {
  auto t = current_marks_.find(key);
  if (t == current_marks_.end()) return 0;
  auto m = t->second.find(source);
  return m == t->second.end() ? 0 : m->second;
}

bool receiver_store::wants_current(const std::string& name, const std::vector<source_column>& columns) {
  const bool keyed = std::any_of(columns.begin(), columns.end(), [](const source_column& c) { return c.pk > 0; });
  const bool clash = ends_with(name, "_changelog");
  if (keyed && !clash) return true;
  if (logged_no_key_.insert(name).second)
    log(std::string("table ") + name + ": no current-state table (" +
        (clash ? "its name ends in _changelog, the changelog tables' suffix" : "it has no primary key") +
        "), only its changelog " + table_dir(name));
  return false;
}

result<iceberg::table*> receiver_store::table_for(const std::string& key) {
  if (auto it = tables_.find(key); it != tables_.end()) return &it->second;
  auto t = iceberg::table::load(o_.dir + "/" + key + "_changelog");
  if (!t) return t.err();
  t->set_max_manifests(o_.max_manifests);
  return &tables_.emplace(key, std::move(*t)).first->second;
}

result<const key_clocks*> receiver_store::clocks_for(const std::string& key, const current_shape& shape) {
  if (auto it = clocks_.find(key); it != clocks_.end()) return &it->second;
  // First use since the start: every live changelog file's rows with an _hlc, per key the
  // newest stamp (a DELETE's key from its before image, an INSERT's or UPDATE's from its after
  // image). Files written before _hlc existed have none: those changes count as older than any.
  key_clocks held;
  auto t = table_for(key);
  if (!t) return t.err();
  if ((*t)->version() > 0) {
    auto live = (*t)->live_entries();
    if (!live) return live.err();
    for (const auto& e : *live) {
      if (e.file.content != iceberg::file_content::data) continue;
      auto path = (*t)->local_file(e.file.path);
      auto f = read_parquet_file(path);
      if (!f) return f.err();
      const auto& cols = f->file_schema.columns;
      auto index_of = [&](int32_t id) {
        size_t i = 0;
        while (i < cols.size() && cols[i].field_id != id) ++i;
        return i;
      };
      const size_t h = changelog_prefix(f->file_schema) > changelog_cdc_columns ? changelog_cdc_columns : cols.size();
      std::vector<size_t> k;
      for (auto id : shape.key_ids) k.push_back(index_of(id));
      if (h == cols.size() || std::any_of(k.begin(), k.end(), [&](size_t i) { return i == cols.size(); })) continue;
      for (const auto& r : f->rows) {
        std::vector<value> kv;
        for (auto i : k) kv.push_back(r[i]);
        auto* text = std::get_if<std::string>(&r[h]);
        auto stamp = text ? protocol::parse_hlc(*text) : std::nullopt;
        if (!stamp) return error(ec::corruption, "the changelog file " + path + ": a row's _hlc is not an HLC");
        auto& x = held[key_text(kv)];
        x = std::max(x, *stamp);
      }
    }
  }
  if (!held.empty()) log("table " + key + ": " + std::to_string(held.size()) + " keys' HLCs read back from its changelog (last writer wins)");
  return &clocks_.emplace(key, std::move(held)).first->second;
}

uint64_t receiver_store::mark(const std::string& key, const std::string& source) const {
  auto t = marks_.find(key);
  if (t == marks_.end()) return 0;
  auto m = t->second.find(source);
  return m == t->second.end() ? 0 : m->second;
}

result<std::unique_ptr<receiver_store>> receiver_store::open(store_options o) {
  if (o.dir.empty()) return error(ec::invalid_argument, "lakehouse receiver: no directory given");
  if (!safe_name(o.namespace_name) || o.namespace_name == "_dosql")
    return error(ec::invalid_argument, "lakehouse receiver: namespace '" + o.namespace_name +
                                           "' must be 1-128 of [A-Za-z0-9_.-], not starting with '.', and not _dosql");
  if (o.flush_rows == 0 || o.flush_bytes == 0 || o.max_buffer_bytes == 0)
    return error(ec::invalid_argument, "lakehouse receiver: flush rows, flush bytes and the buffer limit must be > 0");
  std::unique_ptr<receiver_store> s(new receiver_store(std::move(o)));
  if (auto e = s->recover()) return e;
  return s;
}

error receiver_store::recover() {
  auto meta = o_.dir + "/_dosql";
  if (auto e = wal::make_dirs(meta)) return e;
  auto lock = wal::lock_dir(meta, "the lakehouse directory " + o_.dir);
  if (!lock) return lock.err();
  lock_ = std::move(*lock);
  if (auto e = wal::record_lock_owner(lock_, meta)) return e;
  state_path_ = meta + "/receiver.json";
  std::vector<std::string> pending;
  bool legacy = false;  // a state file of the pre-Iceberg layout (version 1)
  if (wal::path_exists(state_path_)) {
    std::ifstream in(state_path_, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in && !in.eof()) return error(ec::io_error, "cannot read the receiver state " + state_path_);
    auto bad = [&](const std::string& why) { return error(ec::corruption, "the receiver state " + state_path_ + ": " + why); };
    auto j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    try {
      legacy = j.value("version", 0) == 1;
      if (!legacy && j.value("version", 0) != 2) return bad("unknown version");
      for (auto& [name, pos] : j.at("sources").items()) {
        auto& st = sources_[name];
        st.committed.watermark = pos.at("watermark").get<uint64_t>();
        st.committed.sequence = pos.at("sequence").get<uint64_t>();
        st.accepted_lsn = st.committed.watermark;
        st.accepted_sequence = st.committed.sequence;
      }
      for (auto& [key, cols] : j.at("schemas").items()) {
        schema sc;
        for (auto& c : cols) {
          auto t = type_named(c.at("type").get<std::string>());
          if (!t) return bad(t.err().message());
          sc.columns.push_back({c.at("name").get<std::string>(), *t, c.at("optional").get<bool>(), c.at("id").get<int32_t>()});
        }
        if (auto e = validate(sc)) return bad("schema of " + key + ": " + e.message());
        schemas_[key] = std::move(sc);
      }
      for (auto& p : j.at("pending")) pending.push_back(p.get<std::string>());
    } catch (const json::exception& e) {
      return bad(e.what());
    }
  }
  // Redo the renames of the last commit (idempotent: a file already renamed is skipped).
  std::set<std::string> dirs;
  for (const auto& rel : pending) {
    if (!ends_with(rel, pending_suffix) || rel.find("..") != std::string::npos)
      return error(ec::corruption, "the receiver state " + state_path_ + ": bad pending file name '" + rel + "'");
    auto from = o_.dir + "/" + rel;
    auto to = from.substr(0, from.size() - pending_suffix.size());
    if (wal::path_exists(from)) {
      if (auto e = wal::rename_file(from, to)) return e;
      log("recovery: committed " + to);
    }
    dirs.insert(parent_of(to));
  }
  for (const auto& d : dirs)
    if (wal::path_exists(d))
      if (auto e = wal::sync_dir(d)) return e;
  // Every other .pending or .tmp file is an uncommitted flush.
  std::error_code ec;
  for (const auto& ns : fs::directory_iterator(o_.dir, ec)) {
    if (!ns.is_directory() || ns.path().filename() == "_dosql") continue;
    for (const auto& tbl : fs::directory_iterator(ns.path(), ec)) {
      auto data = tbl.path() / "data";
      if (!tbl.is_directory() || !fs::is_directory(data, ec)) continue;  // (changelog and current-state tables)
      for (const auto& f : fs::directory_iterator(data, ec)) {
        auto name = f.path().filename().string();
        if (ends_with(name, pending_suffix) || ends_with(name, ".tmp")) {
          if (auto e = wal::remove_file(f.path().string())) return e;
          log("recovery: removed the uncommitted " + f.path().string());
        }
      }
    }
  }
  if (ec) return error(ec::io_error, "cannot list " + o_.dir + ": " + ec.message());
  if (wal::path_exists(state_path_ + ".tmp"))
    if (auto e = wal::remove_file(state_path_ + ".tmp")) return e;
  unfinished_.clear();
  return recover_tables(legacy);
}

error receiver_store::recover_tables(bool legacy) {
  // Every <ns>/<table>_changelog: its Iceberg history gives the marks, the live files and the
  // sources' positions; whatever no committed snapshot names is an orphan of an unfinished flush.
  struct flush_seen {
    uint64_t lsn = 0, sequence = 0;
    std::string ns;
    std::vector<std::string> tables, current;  // dosql.flush-tables, dosql.flush-current
  };
  std::map<std::string, std::vector<flush_seen>> flushes;  // per source
  constexpr std::string_view suffix = "_changelog";
  std::error_code ec;
  for (const auto& ns : fs::directory_iterator(o_.dir, ec)) {
    if (!ns.is_directory() || ns.path().filename() == "_dosql") continue;
    for (const auto& tbl : fs::directory_iterator(ns.path(), ec)) {
      auto dname = tbl.path().filename().string();
      if (!tbl.is_directory()) continue;
      // A changelog (<table>_changelog) or a current-state table (<table>, with metadata/).
      const bool current = !ends_with(dname, suffix);
      if (current && !fs::is_directory(tbl.path() / "metadata", ec) && !fs::is_directory(tbl.path() / "data", ec)) continue;
      auto key = ns.path().filename().string() + "/" + (current ? dname : dname.substr(0, dname.size() - suffix.size()));
      auto t = current ? current_table_for(key) : table_for(key);
      if (!t) return t.err();
      iceberg::table& table = **t;
      for (const auto& snap : table.history()) {
        auto get = [&](const char* k) -> std::string {
          auto it = snap.summary.find(k);
          return it == snap.summary.end() ? std::string() : it->second;
        };
        auto bad = [&] {
          return error(ec::corruption, "the Iceberg table " + table.dir() + ": snapshot " + std::to_string(snap.id) +
                                           " has a bad dosql.last-lsn, dosql.sequence or dosql.marks");
        };
        // A flush's own keys, and a compaction's dosql.marks: per source the newest flush of the
        // history it replaced (expired snapshots take their keys with them).
        struct seen_flush {
          std::string source, lsn, sequence, tables, current;
        };
        std::vector<seen_flush> seen;
        if (auto src = get("dosql.source"); !src.empty())
          seen.push_back({src, get("dosql.last-lsn"), get("dosql.sequence"), get("dosql.flush-tables"), get("dosql.flush-current")});
        if (auto marks = get("dosql.marks"); !marks.empty()) {
          auto j = json::parse(marks, nullptr, false);
          if (!j.is_object()) return bad();
          try {
            for (auto& [src, m] : j.items())
              seen.push_back({src, m.at("last-lsn").get<std::string>(), m.at("sequence").get<std::string>(),
                              m.value("flush-tables", std::string()), m.value("flush-current", std::string())});
          } catch (const json::exception&) {
            return bad();
          }
        }
        for (const auto& f : seen) {
          uint64_t lsn = 0, seq = 0;
          try {
            lsn = std::stoull(f.lsn);
            seq = std::stoull(f.sequence);
          } catch (...) {
            return bad();
          }
          auto& m = (current ? current_marks_ : marks_)[key][f.source];
          m = std::max(m, lsn);
          flushes[f.source].push_back({lsn, seq, ns.path().filename().string(), split_commas(f.tables),
                                       f.current.empty() ? std::vector<std::string>{} : split_commas(f.current)});
        }
      }
      // The sweep: what no snapshot of the table references (data files of a flush that did not
      // commit, its manifests and list, temporary files). A pre-Iceberg lake's table without
      // metadata keeps its files.
      if (table.version() == 0 && legacy) continue;
      auto gone = table.sweep(true);
      if (!gone) return gone.err();
      for (const auto& g : *gone) log("recovery: removed " + g + " (no snapshot references it: an unfinished flush or compaction)");
      auto meta = tbl.path().string() + "/metadata";
      if (fs::is_directory(meta, ec)) {
        if (table.version() > 0) {
          auto hint = meta + "/version-hint.text";
          std::ifstream in(hint);
          std::string text;
          std::getline(in, text);
          if (text != std::to_string(table.version()))
            if (auto e = table.write_hint()) return e;
        }
      }
      // The changelog's current schema is the `previous` of the next changelog_schema() (a
      // current-state table's schema derives from it).
      if (table.version() > 0 && !current) {
        try {
          const auto& md = table.metadata();
          for (const auto& sc : md.at("schemas")) {
            if (sc.at("schema-id") != md.at("current-schema-id")) continue;
            schema x;
            for (const auto& f : sc.at("fields")) {
              auto tn = f.at("type").get<std::string>();
              column_type ct = column_type::binary;
              bool known = false;
              for (auto c : {column_type::boolean, column_type::int32, column_type::int64, column_type::float64,
                             column_type::string, column_type::binary, column_type::timestamp})
                if (iceberg::type_name(c) == tn) ct = c, known = true;
              if (!known) return error(ec::corruption, "the Iceberg table " + table.dir() + ": unknown type " + tn);
              x.columns.push_back({f.at("name").get<std::string>(), ct, !f.at("required").get<bool>(), f.at("id").get<int32_t>()});
            }
            schemas_[key] = std::move(x);
          }
        } catch (const nlohmann::json::exception& e) {
          return error(ec::corruption, "the Iceberg table " + table.dir() + ": " + e.what());
        }
      }
    }
  }
  if (ec) return error(ec::io_error, "cannot list " + o_.dir + ": " + ec.message());
  // A source's position: its newest flush that every table of that flush holds.
  for (auto& [src, fl] : flushes) {
    std::sort(fl.begin(), fl.end(), [](const flush_seen& a, const flush_seen& b) { return a.lsn > b.lsn; });
    for (const auto& f : fl) {
      bool complete = true;
      for (const auto& t : f.tables) complete = complete && mark(f.ns + "/" + t, src) >= f.lsn;
      for (const auto& t : f.current) complete = complete && current_mark(f.ns + "/" + t, src) >= f.lsn;
      if (!complete) continue;
      auto& st = sources_[src];
      if (f.lsn > st.committed.watermark) {
        log("recovery: source " + src + " is at LSN " + std::to_string(f.lsn) + " (sequence " + std::to_string(f.sequence) +
            ") in its tables, past the state file's " + std::to_string(st.committed.watermark));
        st.committed = {f.lsn, f.sequence};
        st.accepted_lsn = f.lsn;
        st.accepted_sequence = f.sequence;
      }
      break;
    }
  }
  return {};
}

std::string receiver_store::state_json(const std::map<std::string, source_position>& positions,
                                       const std::map<std::string, schema>& schemas,
                                       const std::vector<std::string>& pending) const {
  json j;
  j["version"] = 2;
  j["sources"] = json::object();
  for (const auto& [name, p] : positions) j["sources"][name] = {{"watermark", p.watermark}, {"sequence", p.sequence}};
  j["schemas"] = json::object();
  for (const auto& [key, s] : schemas) {
    json cols = json::array();
    for (const auto& c : s.columns)
      cols.push_back({{"name", c.name}, {"type", std::string(to_string(c.type))}, {"optional", c.optional}, {"id", c.field_id}});
    j["schemas"][key] = std::move(cols);
  }
  j["pending"] = pending;
  return j.dump() + "\n";
}

receiver_store::source_position receiver_store::committed(const std::string& source) const {
  auto it = sources_.find(source);
  return it == sources_.end() ? source_position{} : it->second.committed;
}

double receiver_store::buffer_utilization() const noexcept {
  return std::min(1.0, static_cast<double>(buffered_bytes_) / static_cast<double>(o_.max_buffer_bytes));
}

uint64_t receiver_store::suggested_delay_ms() const noexcept {
  double u = buffer_utilization();
  if (u < 0.8) return 0;
  return static_cast<uint64_t>(static_cast<double>(std::max<uint64_t>(o_.flush_ms, 10)) * std::min(1.0, (u - 0.8) / 0.2));
}

void receiver_store::nack_batch(const protocol::batch& b, bool retryable, const std::string& reason, std::vector<reply>& out) {
  ++stats_.nacks;
  log("nack " + b.batch_id + ": " + reason);
  out.push_back({b.source_id, protocol::render(protocol::nack{b.batch_id, b.sequence_number, retryable, reason,
                                                              buffer_utilization(), suggested_delay_ms()})});
}

receiver_store::source_position receiver_store::hello(const std::string& source, std::vector<reply>& out) {
  auto& s = sources_[source];
  (void)flush_source(source, s, out);
  return s.committed;
}

protocol::heartbeat_ack receiver_store::heartbeat(const std::string& source) const {
  return {source, committed(source).watermark, buffer_utilization(), suggested_delay_ms()};
}

void receiver_store::offer(const protocol::batch& b, std::vector<reply>& out) {
  if (broken_) return nack_batch(b, true, "the receiver's store failed; it must be restarted", out);
  if (auto e = protocol::check_batch(b)) return nack_batch(b, false, e.message(), out);
  auto& s = sources_[b.source_id];
  if (b.last_lsn <= s.committed.watermark) {
    ++stats_.duplicates;
    out.push_back({b.source_id, protocol::render(protocol::ack{b.batch_id, b.sequence_number, b.last_lsn, true,
                                                              s.committed.watermark, buffer_utilization(),
                                                              suggested_delay_ms()})});
    return;
  }
  if (b.sequence_number <= s.accepted_sequence && b.last_lsn <= s.accepted_lsn) {
    // Already buffered (a retry before its ack): acked as a duplicate with the next commit.
    ++stats_.duplicates;
    s.waiting.push_back({b.batch_id, b.sequence_number, b.last_lsn, true});
    return;
  }
  const bool fresh = s.accepted_sequence == 0;
  if (b.sequence_number != s.accepted_sequence + 1 || (!fresh && b.previous_lsn != s.accepted_lsn))
    return nack_batch(b, true,
                      "gap: source " + b.source_id + " expects sequence " + std::to_string(s.accepted_sequence + 1) +
                          (fresh ? "" : " with previousLsn " + std::to_string(s.accepted_lsn)) + ", got sequence " +
                          std::to_string(b.sequence_number) + " with previousLsn " + std::to_string(b.previous_lsn),
                      out);
  // Schemas and rows, all or nothing: per table, the schema at its first event (its buffered
  // one, reconciled with `schemas`), evolved by the schema changes in LSN order; rows under the
  // schema of their LSN.
  struct staged {
    std::vector<segment> segs;  // segs[0] continues the buffer's last segment when its schema is the same
    std::vector<source_column> columns;
    std::vector<int32_t> key_ids;  // the primary key's field ids ({}: no current-state table)
    int32_t last_id = 0;
    bool changed = false;
    uint64_t bytes = 0, rows = 0, changes = 0, current_first = 0;
    std::optional<current_shape> shape;  // of segs.back() with key_ids (a current-state table's)
  };
  std::map<std::string, staged> st;
  auto refuse = [&](const std::string& table, uint64_t lsn, const std::string& why) {
    nack_batch(b, false, "table '" + table + "' at LSN " + std::to_string(lsn) + ": " + why, out);
  };
  // The key of `table` from its declared columns (when known), else the one it had.
  auto rekey = [&](const std::string& table, staged& x) {
    if (!x.columns.empty()) x.key_ids = wants_current(table, x.columns) ? key_ids_of(x.segs.back().file_schema, x.columns)
                                                                        : std::vector<int32_t>{};
    x.shape = current_shape_for(x.segs.back().file_schema, x.key_ids);
    if (!x.shape) x.key_ids.clear();
  };
  // The staged state of `table` (nullptr: refused, the nack is in `out`).
  auto stage = [&](const std::string& table, uint64_t lsn) -> staged* {
    if (auto it = st.find(table); it != st.end()) return &it->second;
    if (!safe_name(table)) {
      nack_batch(b, false, "table '" + table + "' is not usable as a directory name ([A-Za-z0-9_.-])", out);
      return nullptr;
    }
    const auto key = o_.namespace_name + "/" + table;
    staged x;
    const schema* prev = nullptr;
    auto buf = s.tables.find(table);
    if (buf != s.tables.end() && !buf->second.segments.empty()) {
      prev = &buf->second.segments.back().file_schema;
      x.last_id = buf->second.last_column_id;
      x.columns = buf->second.columns;
      x.key_ids = buf->second.key_ids;
    } else if (auto p = schemas_.find(key); p != schemas_.end()) {
      prev = &p->second;
      // The key the current-state table has (its identifier fields), if it exists.
      if (auto c = current_table_for(key); c && (*c)->metadata().is_object()) {
        const auto& m = (*c)->metadata();
        for (const auto& sc : m.value("schemas", nlohmann::json::array()))
          if (sc.value("schema-id", -1) == m.value("current-schema-id", -2))
            x.key_ids = sc.value("identifier-field-ids", std::vector<int32_t>{});
      }
    }
    if (auto t = table_for(key); t && (*t)->metadata().is_object())
      x.last_id = std::max(x.last_id, (*t)->metadata().value("last-column-id", 0));
    auto cols = b.schemas.find(table);
    schema sc;
    // No columns before the table's first event: the source sees it first at its CREATE TABLE
    // (the streamer has not seen it exist). When the lake has the table already (another source,
    // e.g. a shard, created it there), its schema stays: the CREATE's columns are then matched
    // by name against it and keep their ids, instead of being dropped and added back new.
    const bool before_create = cols != b.schemas.end() && cols->second.empty();
    if (prev && (cols == b.schemas.end() || before_create || (!x.columns.empty() && x.columns == cols->second))) {
      sc = *prev;
    } else {
      static const std::vector<source_column> none;
      auto r = changelog_schema(cols == b.schemas.end() ? none : cols->second, prev, x.last_id);
      if (!r) {
        refuse(table, lsn, r.err().message());
        return nullptr;
      }
      sc = std::move(*r);
      // (A table new to the lake is created by its first rows, or by a schema change that gives it
      // columns: not by a lone event such as the DROP TABLE of a table never streamed.)
      x.changed = prev && !(sc == *prev);
    }
    // Every changelog with columns has `_hlc`: a table written before it gets it by schema
    // evolution (last-column-id + 1), a new one the id after its first columns (a table created
    // by a CREATE TABLE in the stream: when that gives it its columns, below).
    if (auto up = sc.columns.size() > changelog_cdc_columns ? with_hlc(sc, x.last_id) : sc; !(up == sc)) {
      x.changed = x.changed || prev != nullptr;
      sc = std::move(up);
    }
    if (cols != b.schemas.end()) x.columns = cols->second;
    for (const auto& c : sc.columns) x.last_id = std::max(x.last_id, c.field_id);
    x.segs.push_back({std::move(sc), {}, 0, 0, {}});
    rekey(table, x);
    return &st.emplace(table, std::move(x)).first->second;
  };
  size_t k = 0;  // the next schema change
  auto apply_schema_changes = [&](uint64_t up_to) -> bool {
    for (; k < b.schema_changes.size() && b.schema_changes[k].event.lsn <= up_to; ++k) {
      const auto& ev = b.schema_changes[k].event;
      if (ev.lsn <= mark(o_.namespace_name + "/" + ev.table, b.source_id)) continue;  // the table has it
      auto* x = stage(ev.table, ev.lsn);
      if (!x) return false;
      const schema& cur = x->segs.back().file_schema;
      auto next = evolve_schema(cur, {ev.change_type, ev.column.value_or(""), ev.old_column.value_or(""),
                                      ev.old_type.value_or(""), ev.new_type.value_or("")},
                                x->last_id);
      if (next && b.schema_changes[k].columns) {  // the columns after it, as the streamer knows them
        next = changelog_schema(*b.schema_changes[k].columns, &*next, x->last_id);
        if (next) x->columns = *b.schema_changes[k].columns;
      }
      if (!next) {
        refuse(ev.table, ev.lsn, ev.change_type + ": " + next.err().message());
        return false;
      }
      if (next->columns.size() > changelog_cdc_columns) next = with_hlc(*next, x->last_id);
      if (!b.schema_changes[k].columns) x->columns.clear();
      for (const auto& c : next->columns) x->last_id = std::max(x->last_id, c.field_id);
      if (*next == cur) continue;
      log("source " + b.source_id + ", table '" + ev.table + "' at LSN " + std::to_string(ev.lsn) + ": " + ev.change_type +
          (ev.column ? " '" + *ev.column + "'" : std::string()) + ": new schema");
      x->changed = true;
      if (x->segs.back().rows.empty() && x->segs.back().changes.empty()) x->segs.back().file_schema = std::move(*next);
      else x->segs.push_back({std::move(*next), {}, 0, 0, {}});
      auto keys = x->key_ids;
      rekey(ev.table, *x);
      if (!keys.empty() && keys != x->key_ids) {
        refuse(ev.table, ev.lsn, ev.change_type + ": the primary key changed: the current-state table cannot follow");
        return false;
      }
    }
    return true;
  };
  for (const auto& e : b.events) {
    if (!apply_schema_changes(e.lsn)) return;
    const std::string key = o_.namespace_name + "/" + e.table;
    // Already in a table (a flush that committed some of its tables, but not all, before a
    // crash): each table skips what its mark holds. (Events come in LSN order: once one is above
    // a mark, all the rest are.)
    const bool to_log = e.lsn > mark(key, b.source_id);
    if (!to_log && e.lsn <= current_mark(key, b.source_id)) continue;
    auto* x = stage(e.table, e.lsn);
    if (!x) return;
    const bool to_current = x->shape && e.lsn > current_mark(key, b.source_id);
    if (!to_log && !to_current) continue;
    auto& seg = x->segs.back();
    const row* image = e.type == cdc::change_type::del ? (e.old_data ? &*e.old_data : nullptr) : (e.data ? &*e.data : nullptr);
    change c{op_name(e.type), e.lsn, e.txn_id, e.timestamp, b.source_id, image, e.hlc};
    auto r = changelog_row(seg.file_schema, c);
    if (!r) return nack_batch(b, false, "table '" + e.table + "': " + r.err().message(), out);
    uint64_t n = 16;
    for (const auto& v : *r) n += value_bytes(v);
    if (to_current) {
      state_change sc;
      sc.lsn = e.lsn;
      sc.hlc = e.hlc;
      if (e.type == cdc::change_type::update && e.old_data) {
        change before{op_name(e.type), e.lsn, e.txn_id, e.timestamp, b.source_id, &*e.old_data, e.hlc};
        auto old = changelog_row(seg.file_schema, before);
        if (!old) return nack_batch(b, false, "table '" + e.table + "': " + old.err().message(), out);
        auto kv = key_of(*x->shape, state_row(seg.file_schema, std::move(*old)), e.lsn);
        if (!kv) return nack_batch(b, false, "table '" + e.table + "': " + kv.err().message(), out);
        sc.old_key = std::move(*kv);
      }
      auto row_now = state_row(seg.file_schema, *r);
      auto kv = key_of(*x->shape, row_now, e.lsn);
      if (!kv) return nack_batch(b, false, "table '" + e.table + "': " + kv.err().message(), out);
      if (e.type == cdc::change_type::del) sc.old_key = std::move(*kv);
      else sc.row = std::move(row_now);
      if (!x->changes) x->current_first = e.lsn;
      ++x->changes;
      seg.changes.push_back(std::move(sc));
      x->bytes += n;
    }
    if (to_log) {
      x->bytes += n;
      ++x->rows;
      if (seg.rows.empty()) seg.first_lsn = e.lsn;
      seg.last_lsn = e.lsn;
      seg.rows.push_back(std::move(*r));
    }
  }
  if (!apply_schema_changes(UINT64_MAX)) return;
  uint64_t incoming = 0;
  for (auto& [t, x] : st) incoming += x.bytes;
  if (buffered_bytes_ + incoming > o_.max_buffer_bytes) {
    if (auto e = flush_all(out)) return nack_batch(b, true, "the buffer is full and a flush failed: " + e.message(), out);
  }
  // Take it.
  bool due = false;
  for (auto& [table, x] : st) {
    auto& buf = s.tables[table];
    for (auto& seg : x.segs) {
      if (!buf.segments.empty() && buf.segments.back().file_schema == seg.file_schema) {
        auto& last = buf.segments.back();
        if (last.rows.empty()) last.first_lsn = seg.first_lsn;
        if (!seg.rows.empty()) last.last_lsn = seg.last_lsn;
        for (auto& r : seg.rows) last.rows.push_back(std::move(r));
        for (auto& c : seg.changes) last.changes.push_back(std::move(c));
      } else {
        buf.segments.push_back(std::move(seg));
      }
    }
    buf.columns = std::move(x.columns);
    buf.key_ids = std::move(x.key_ids);
    buf.last_column_id = std::max(buf.last_column_id, x.last_id);
    buf.schema_changed = buf.schema_changed || x.changed;
    buf.bytes += x.bytes;
    buf.rows += x.rows;
    if (!buf.changes && x.changes) buf.current_first_lsn = x.current_first;
    buf.changes += x.changes;
    if (std::max(buf.rows, buf.changes) >= o_.flush_rows || buf.bytes >= o_.flush_bytes) due = true;
  }
  if (b.dead_lettered) log("batch " + b.batch_id + ": dead-lettered by the streamer (LSN " + std::to_string(b.first_lsn) + "-" +
                           std::to_string(b.last_lsn) + "): the source moves past it");
  buffered_bytes_ += incoming;
  if (!s.has_buffer) s.oldest = clock::now();
  s.has_buffer = true;
  s.accepted_lsn = b.last_lsn;
  s.accepted_sequence = b.sequence_number;
  s.waiting.push_back({b.batch_id, b.sequence_number, b.last_lsn, false});
  ++stats_.batches_accepted;
  stats_.buffered_bytes = buffered_bytes_;
  if (due) (void)flush_source(b.source_id, s, out);
}

void receiver_store::tick(clock::time_point now, std::vector<reply>& out) {
  for (auto& [name, s] : sources_)
    if (s.has_buffer && now - s.oldest >= std::chrono::milliseconds(o_.flush_ms)) (void)flush_source(name, s, out);
}

error receiver_store::flush_all(std::vector<reply>& out) {
  error first;
  for (auto& [name, s] : sources_)
    if (auto e = flush_source(name, s, out); e && !first) first = e;
  return first;
}

error receiver_store::flush_source(const std::string& name, source_state& s, std::vector<reply>& out) {
  if (!s.has_buffer && s.waiting.empty()) return {};
  uint64_t bytes = 0;
  for (auto& [t, buf] : s.tables) bytes += buf.bytes;
  auto reset = [&] {
    s.tables.clear();
    s.has_buffer = false;
    buffered_bytes_ -= std::min(buffered_bytes_, bytes);
    stats_.buffered_bytes = buffered_bytes_;
  };
  auto fail = [&](const error& e) {
    ++stats_.failed_flushes;
    log("flush of source " + name + " failed: " + e.to_string());
    reset();
    s.accepted_lsn = s.committed.watermark;
    s.accepted_sequence = s.committed.sequence;
    for (const auto& w : s.waiting) {
      ++stats_.nacks;
      out.push_back({name, protocol::render(protocol::nack{w.batch_id, w.sequence, true, "flush failed: " + e.to_string(),
                                                           buffer_utilization(), suggested_delay_ms()})});
    }
    s.waiting.clear();
    return e;
  };
  if (broken_) return fail(error(ec::io_error, "the receiver's store failed; it must be restarted"));

  // Phase 1: the data files and each table's prepared snapshot (nothing visible yet): per
  // table its changelog, then its current-state table (if it has one and changes for it).
  struct work {
    std::string key;
    std::vector<std::string> paths;  // the data (and delete) files written
    iceberg::table* t = nullptr;
    bool current = false;
    std::optional<iceberg::table::prepared> p;
    key_clocks clocks;  // a current-state table's: the HLC of each key it writes
  };
  std::vector<work> ws;
  auto schemas = schemas_;
  uint64_t rows = 0;
  error err;
  std::string flush_tables, flush_current;
  for (auto& [table, buf] : s.tables) {
    if (buf.rows > 0 || buf.schema_changed) flush_tables += (flush_tables.empty() ? "" : ",") + table;
    if (buf.changes > 0) flush_current += (flush_current.empty() ? "" : ",") + table;
  }
  const int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto undo_files = [&] {
    for (auto& w : ws) {
      if (w.t && w.p) w.t->discard(*w.p);
      for (const auto& f : w.paths)
        if (wal::path_exists(f)) (void)wal::remove_file(f);
    }
  };
  // Writes one Parquet file of the flush into `dir` (created if needed); its entry for the snapshot.
  auto write_file = [&](work& w, const std::string& dir, const std::string& file, const schema& sc,
                        std::span<const std::vector<value>> file_rows, const std::string& table, uint64_t first,
                        uint64_t last) -> result<iceberg::added_file> {
    if (auto e = wal::make_dirs(dir)) return e;
    writer_options wo;
    wo.key_value_metadata = {{"dosql.source", name},
                             {"dosql.table", table},
                             {"dosql.first_lsn", std::to_string(first)},
                             {"dosql.last_lsn", std::to_string(last)}};
    {  // as Iceberg's writers do: readers map the file's columns to the table's by these ids
      auto sj = iceberg::schema_json(sc, 0);
      sj.erase("schema-id");
      wo.key_value_metadata.push_back({"iceberg.schema", sj.dump()});
    }
    auto path = dir + "/" + file;
    w.paths.push_back(path);
    iceberg::added_file f{file, static_cast<int64_t>(file_rows.size()), 0, {}};
    if (auto e = write_parquet_file(path, sc, file_rows, wo, &f.metrics)) return e;
    std::error_code fec;
    auto size = fs::file_size(path, fec);
    if (fec) return error(ec::io_error, "cannot stat " + path + ": " + fec.message());
    f.bytes = static_cast<int64_t>(size);
    return f;
  };
  auto summary = [&](uint64_t first, const std::string& files) {
    std::map<std::string, std::string> m{{"dosql.source", name},
                                         {"dosql.first-lsn", std::to_string(first)},
                                         {"dosql.last-lsn", std::to_string(s.accepted_lsn)},
                                         {"dosql.sequence", std::to_string(s.accepted_sequence)},
                                         {"dosql.files", files},
                                         {"dosql.flush-tables", flush_tables}};
    if (!flush_current.empty()) m["dosql.flush-current"] = flush_current;
    return m;
  };
  for (auto& [table, buf] : s.tables) {
    const std::string key = o_.namespace_name + "/" + table;
    const std::string stem = name + "-";
    if (buf.rows > 0 || buf.schema_changed) {
      auto& w = ws.emplace_back();
      w.key = key;
      // One data file per schema (segment); every schema of the flush goes into the metadata.
      std::vector<iceberg::added_file> files;
      std::vector<schema> earlier;
      std::string names;
      uint64_t first_lsn = 0;
      for (auto& seg : buf.segments) {
        if (&seg != &buf.segments.back()) earlier.push_back(seg.file_schema);
        if (seg.rows.empty()) continue;
        if (!first_lsn) first_lsn = seg.first_lsn;
        // Each file's rows in _hlc order (the table's sort order). One source's HLCs rise with
        // its LSNs, so this keeps LSN order; it matters for stamps an old streamer left out.
        if (const size_t h = changelog_prefix(seg.file_schema) - 1; h == changelog_cdc_columns)
          std::stable_sort(seg.rows.begin(), seg.rows.end(), [h](const std::vector<value>& a, const std::vector<value>& b) {
            return std::get<std::string>(a[h]) < std::get<std::string>(b[h]);
          });
        auto file = stem + std::to_string(seg.first_lsn) + "-" + std::to_string(seg.last_lsn) + "-" + random_hex32() + ".parquet";
        auto f = write_file(w, data_dir(table), file, seg.file_schema, seg.rows, table, seg.first_lsn, seg.last_lsn);
        if (!f) {
          err = f.err();
          break;
        }
        files.push_back(std::move(*f));
        names += (names.empty() ? "" : ",") + file;
      }
      if (err) break;
      auto t = table_for(key);
      if (!t) {
        err = t.err();
        break;
      }
      w.t = *t;
      const schema& current = buf.segments.back().file_schema;
      w.t->sort_by(hlc_field_id(current));
      auto p = w.t->prepare(current, files, summary(first_lsn, names), now_ms, earlier);
      if (!p) {
        err = p.err();
        break;
      }
      w.p = std::move(*p);
      schemas[key] = current;
      rows += buf.rows;
    }
    if (buf.changes > 0) {
      // Under the last schema: earlier segments' rows mapped by field id (the key's ids stay).
      auto shape = current_shape_for(buf.segments.back().file_schema, buf.key_ids);
      if (!shape) {
        err = error(ec::invalid_argument, "table " + table + ": no primary key for its current-state table");
        break;
      }
      std::vector<state_change> changes;
      changes.reserve(buf.changes);
      for (auto& seg : buf.segments) {
        auto from = current_shape_for(seg.file_schema, buf.key_ids);
        for (auto& c : seg.changes) {
          if (c.row && from && !(from->table_schema == shape->table_schema))
            c.row = project_row(from->table_schema, shape->table_schema, *c.row);
          changes.push_back(std::move(c));
        }
      }
      auto& w = ws.emplace_back();
      w.key = key;
      w.current = true;
      const uint64_t first = buf.current_first_lsn, last = changes.back().lsn;
      auto held = clocks_for(key, *shape);
      if (!held) {
        err = held.err();
        break;
      }
      auto c = collapse(*shape, changes, *held);
      w.clocks = std::move(c.clocks);
      auto base = stem + std::to_string(first) + "-" + std::to_string(last) + "-" + random_hex32();
      iceberg::snapshot_files sf;
      std::string names;
      if (!c.rows.empty()) {
        auto f = write_file(w, current_dir(table) + "/data", base + ".parquet", shape->table_schema, c.rows, table, first, last);
        if (!f) {
          err = f.err();
          break;
        }
        names = f->name;
        sf.data.push_back(std::move(*f));
      }
      if (!c.deletes.empty()) {  // (none: every change lost to a newer one; the snapshot still moves the mark)
        auto f = write_file(w, current_dir(table) + "/data", base + "-deletes.parquet", shape->key_schema(), c.deletes, table,
                            first, last);
        if (!f) {
          err = f.err();
          break;
        }
        names += (names.empty() ? "" : ",") + f->name;
        sf.equality_deletes.push_back(std::move(*f));
      }
      auto t = current_table_for(key);
      if (!t) {
        err = t.err();
        break;
      }
      w.t = *t;
      auto p = w.t->prepare(shape->table_schema, shape->key_ids, sf, summary(first, names), now_ms);
      if (!p) {
        err = p.err();
        break;
      }
      w.p = std::move(*p);
    }
  }
  if (err) {
    undo_files();
    return fail(err);
  }
  // Phase 2: the commit of each table (compare-and-swap). A failure reverts the ones done.
  for (size_t i = 0; i < ws.size() && !err; ++i) {
    if ((err = ws[i].t->commit(*ws[i].p))) {
      for (size_t k = i; k-- > 0;)
        if (auto e2 = ws[k].t->revert(*ws[k].p)) {
          broken_ = true;
          log("the Iceberg table " + ws[k].t->dir() + " could not be reverted (" + e2.to_string() +
              "): refusing everything until restarted");
          return fail(err);  // its files stay: recovery decides from the tables
        }
    }
  }
  if (err) {
    undo_files();
    return fail(err);
  }
  // Committed. The hints and the state file follow; their failures cost nothing but a log line
  // (load() takes the highest version; recovery takes the positions from the tables).
  for (auto& w : ws) {
    if (auto e = w.t->write_hint()) log("commit: " + e.to_string() + " (version-hint.text is rewritten at the next commit or start)");
    (w.current ? current_marks_ : marks_)[w.key][name] = s.accepted_lsn;
    auto& held = clocks_[w.key];
    for (auto& [k, h] : w.clocks) held[k] = std::max(held[k], h);
  }
  schemas_ = std::move(schemas);
  std::map<std::string, source_position> positions;
  for (const auto& [n, x] : sources_)
    if (x.committed.sequence > 0) positions[n] = x.committed;  // (a source that never landed a batch: none)
  positions[name] = {s.accepted_lsn, s.accepted_sequence};
  if (auto e = wal::replace_file(state_path_, state_json(positions, schemas_, {})))
    log("commit: " + e.to_string() + " (the state file is a cache: the tables hold the positions)");
  s.committed = {s.accepted_lsn, s.accepted_sequence};
  reset();
  ++stats_.flushes;
  for (const auto& w : ws) stats_.files += w.paths.size();
  stats_.rows += rows;
  for (const auto& w : s.waiting)
    out.push_back({name, protocol::render(protocol::ack{w.batch_id, w.sequence, w.last_lsn, w.duplicate, s.committed.watermark,
                                                        buffer_utilization(), suggested_delay_ms()})});
  s.waiting.clear();
  return {};
}

}  // namespace dosql::lakehouse
