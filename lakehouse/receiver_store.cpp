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

bool same_columns(const std::vector<source_column>& a, const std::vector<source_column>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].declared_type != b[i].declared_type || a[i].pk != b[i].pk) return false;
  return true;
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
  // Schemas and rows, all or nothing.
  struct staged {
    schema sc;
    const std::vector<source_column>* columns = nullptr;
    std::vector<std::vector<value>> rows;
    uint64_t bytes = 0, first = 0, last = 0;
    std::optional<current_shape> shape;  // a current-state table's
    std::vector<state_change> changes;
    uint64_t current_first = 0;
  };
  std::map<std::string, staged> st;
  bool reschema = false;
  for (const auto& e : b.events) {
    const std::string key = o_.namespace_name + "/" + e.table;
    auto it = st.find(e.table);
    if (it == st.end()) {
      if (!safe_name(e.table))
        return nack_batch(b, false, "table '" + e.table + "' is not usable as a directory name ([A-Za-z0-9_.-])", out);
      staged x;
      x.columns = &b.schemas.at(e.table);
      auto buf = s.tables.find(e.table);
      if (buf != s.tables.end() && same_columns(buf->second.columns, *x.columns)) {
        x.sc = buf->second.file_schema;
      } else {
        const schema* prev = nullptr;
        if (buf != s.tables.end()) prev = &buf->second.file_schema;
        else if (auto p = schemas_.find(key); p != schemas_.end()) prev = &p->second;
        auto sc = changelog_schema(*x.columns, prev);
        if (!sc) return nack_batch(b, false, "table '" + e.table + "': " + sc.err().message(), out);
        x.sc = std::move(*sc);
        if (buf != s.tables.end() && (!buf->second.rows.empty() || !buf->second.changes.empty())) reschema = true;
      }
      if (wants_current(e.table, *x.columns)) x.shape = current_shape_of(x.sc, *x.columns);
      it = st.emplace(e.table, std::move(x)).first;
    }
    auto& x = it->second;
    // Already in a table (a flush that committed some of its tables, but not all, before a
    // crash): each table skips what its mark holds.
    const bool to_log = e.lsn > mark(key, b.source_id);
    const bool to_current = x.shape && e.lsn > current_mark(key, b.source_id);
    if (!to_log && !to_current) continue;
    const row* image = e.type == cdc::change_type::del ? (e.old_data ? &*e.old_data : nullptr) : (e.data ? &*e.data : nullptr);
    change c{op_name(e.type), e.lsn, e.txn_id, e.timestamp, b.source_id, image};
    auto r = changelog_row(x.sc, c);
    if (!r) return nack_batch(b, false, "table '" + e.table + "': " + r.err().message(), out);
    uint64_t n = 16;
    for (const auto& v : *r) n += value_bytes(v);
    if (to_current) {
      state_change sc;
      sc.lsn = e.lsn;
      if (e.type == cdc::change_type::update && e.old_data) {
        change before{op_name(e.type), e.lsn, e.txn_id, e.timestamp, b.source_id, &*e.old_data};
        auto old = changelog_row(x.sc, before);
        if (!old) return nack_batch(b, false, "table '" + e.table + "': " + old.err().message(), out);
        auto k = key_of(*x.shape, state_row(std::move(*old)), e.lsn);
        if (!k) return nack_batch(b, false, "table '" + e.table + "': " + k.err().message(), out);
        sc.old_key = std::move(*k);
      }
      auto row_now = state_row(*r);
      auto k = key_of(*x.shape, row_now, e.lsn);
      if (!k) return nack_batch(b, false, "table '" + e.table + "': " + k.err().message(), out);
      if (e.type == cdc::change_type::del) sc.old_key = std::move(*k);
      else sc.row = std::move(row_now);
      if (x.changes.empty()) x.current_first = e.lsn;
      x.changes.push_back(std::move(sc));
      x.bytes += n;
    }
    if (to_log) {
      if (x.rows.empty()) x.first = e.lsn;
      x.bytes += n;
      x.last = e.lsn;
      x.rows.push_back(std::move(*r));
    }
  }
  uint64_t incoming = 0;
  for (auto& [t, x] : st) incoming += x.bytes;
  if (reschema) {  // the table's columns changed: its buffered rows go into files of their own first
    if (auto e = flush_source(b.source_id, s, out))
      return nack_batch(b, true, "flush before a schema change failed: " + e.message(), out);
  }
  if (buffered_bytes_ + incoming > o_.max_buffer_bytes) {
    if (auto e = flush_all(out)) return nack_batch(b, true, "the buffer is full and a flush failed: " + e.message(), out);
  }
  // Take it.
  bool due = false;
  for (auto& [table, x] : st) {
    if (x.rows.empty() && x.changes.empty()) continue;
    auto& buf = s.tables[table];
    if (buf.rows.empty() && buf.changes.empty()) {
      buf.file_schema = std::move(x.sc);
      buf.columns = *x.columns;
    }
    if (buf.rows.empty() && !x.rows.empty()) buf.first_lsn = x.first;
    if (buf.changes.empty() && !x.changes.empty()) buf.current_first_lsn = x.current_first;
    if (!x.rows.empty()) buf.last_lsn = x.last;
    buf.bytes += x.bytes;
    for (auto& r : x.rows) buf.rows.push_back(std::move(r));
    for (auto& c : x.changes) buf.changes.push_back(std::move(c));
    if (std::max(buf.rows.size(), buf.changes.size()) >= o_.flush_rows || buf.bytes >= o_.flush_bytes) due = true;
  }
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
  };
  std::vector<work> ws;
  auto schemas = schemas_;
  uint64_t rows = 0;
  error err;
  std::string flush_tables, flush_current;
  for (auto& [table, buf] : s.tables) {
    if (!buf.rows.empty()) flush_tables += (flush_tables.empty() ? "" : ",") + table;
    if (!buf.changes.empty()) flush_current += (flush_current.empty() ? "" : ",") + table;
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
    if (!buf.rows.empty()) {
      auto& w = ws.emplace_back();
      w.key = key;
      auto file = stem + std::to_string(buf.first_lsn) + "-" + std::to_string(buf.last_lsn) + "-" + random_hex32() + ".parquet";
      auto f = write_file(w, data_dir(table), file, buf.file_schema, buf.rows, table, buf.first_lsn, buf.last_lsn);
      if (!f) {
        err = f.err();
        break;
      }
      auto t = table_for(key);
      if (!t) {
        err = t.err();
        break;
      }
      w.t = *t;
      auto p = w.t->prepare(buf.file_schema, {std::move(*f)}, summary(buf.first_lsn, file), now_ms);
      if (!p) {
        err = p.err();
        break;
      }
      w.p = std::move(*p);
      schemas[key] = buf.file_schema;
      rows += buf.rows.size();
    }
    if (!buf.changes.empty()) {
      auto shape = current_shape_of(buf.file_schema, buf.columns);
      if (!shape) {
        err = error(ec::invalid_argument, "table " + table + ": no primary key for its current-state table");
        break;
      }
      auto& w = ws.emplace_back();
      w.key = key;
      w.current = true;
      const uint64_t first = buf.current_first_lsn, last = buf.changes.back().lsn;
      auto c = collapse(*shape, buf.changes);
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
      {
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
