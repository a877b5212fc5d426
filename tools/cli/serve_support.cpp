// `dosql serve` without Beast: the client protocol's parser, the bearer token, the slot files and
// the Prometheus text (see serve.hpp).
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "actors/slot_manager.hpp"
#include "tools/cli/serve.hpp"
#include "wal/cursor.hpp"
#include "wal/file.hpp"

namespace dosql::cli::serve {
namespace {

using nlohmann::json;

error bad(std::string why) { return error(ec::invalid_argument, std::move(why)); }

result<std::vector<std::string>> string_list(const json& v, const char* field) {
  if (!v.is_array()) return bad(std::string(field) + " must be an array of strings");
  std::vector<std::string> out;
  for (auto& x : v) {
    if (!x.is_string() || x.get_ref<const std::string&>().empty())
      return bad(std::string(field) + " must be an array of non-empty strings");
    out.push_back(x.get<std::string>());
  }
  return out;
}

result<uint64_t> unsigned_field(const json& v, const char* field) {
  if (!v.is_number_unsigned()) return bad(std::string(field) + " must be a non-negative integer");
  return v.get<uint64_t>();
}

result<subscribe_request> parse_subscribe(const json& j) {
  subscribe_request r;
  for (auto& [k, v] : j.items()) {
    if (k == "type") continue;
    if (k == "from_lsn") {
      if (v.is_string() && v.get_ref<const std::string&>() == "oldest") {
        r.from_oldest = true;
        continue;
      }
      // The one LSN parser, on the number's own text (no double or sign can slip through).
      if (!v.is_number_integer()) return bad("from_lsn must be an LSN (a non-negative integer) or \"oldest\"");
      auto n = parse_lsn(v.dump(), "from_lsn");
      if (!n) return n.err();
      r.from_lsn = *n;
    } else if (k == "tables") {
      auto t = string_list(v, "tables");
      if (!t) return t.err();
      r.tables = std::move(*t);
    } else if (k == "operations") {
      auto ops = string_list(v, "operations");
      if (!ops) return ops.err();
      for (auto& s : *ops) {
        auto op = parse_op(s);
        if (!op || !is_row_change(*op)) return bad("operations: insert, update or delete, not \"" + s + "\"");
        r.operations.push_back(*op);
      }
    } else if (k == "where") {
      if (!v.is_object()) return bad("where must be an object {\"table\": \"SQL expression\"}");
      for (auto& [t, e] : v.items()) {
        if (!e.is_string() || e.get_ref<const std::string&>().empty())
          return bad("where." + t + " must be a SQL expression (a non-empty string)");
        r.where[t] = e.get<std::string>();
      }
    } else if (k == "include_transactions") {
      if (!v.is_boolean()) return bad("include_transactions must be true or false");
      r.include_transactions = v.get<bool>();
    } else if (k == "lossless_text") {
      if (!v.is_boolean()) return bad("lossless_text must be true or false");
      r.lossless_text = v.get<bool>();
    } else if (k == "format") {
      std::string f = v.is_string() ? v.get<std::string>() : "";
      if (f == "json") r.format = tail_format::json;
      else if (f == "wal2json") r.format = tail_format::wal2json;
      else if (f == "debezium") r.format = tail_format::debezium;
      else return bad("format must be \"json\", \"wal2json\" or \"debezium\"");
    } else if (k == "window") {
      auto n = unsigned_field(v, "window");
      if (!n) return n.err();
      if (*n > 1'000'000) return bad("window must be at most 1000000");
      r.window = static_cast<uint32_t>(*n);
    } else {
      return bad("unknown field \"" + k + "\" in subscribe");
    }
  }
  return r;
}

std::string sha256(std::string_view s) {
  std::string d(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), reinterpret_cast<unsigned char*>(d.data()));
  return d;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

result<std::string> read_small_file(const std::string& path, size_t limit) {
  auto fd = wal::open_file(path, O_RDONLY);
  if (!fd) return fd.err();
  auto size = wal::file_size(fd->get(), path);
  if (!size) return size.err();
  if (*size > limit) return error(ec::invalid_argument, path + " is larger than " + std::to_string(limit) + " bytes");
  std::string data(*size, '\0');
  auto n = wal::pread_full(fd->get(), data.data(), data.size(), 0, path);
  if (!n) return n.err();
  data.resize(*n);
  return data;
}

// Prometheus label values escape \, " and newline.
std::string label(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const char* name, uint64_t v, const std::string& labels = {}) {
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += " " + std::to_string(v) + "\n";
}

}  // namespace

result<client_message> parse_client_message(std::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("malformed JSON");
  if (!j.is_object()) return bad("a message must be a JSON object");
  auto t = j.find("type");
  if (t == j.end() || !t->is_string()) return bad("a message needs a \"type\"");
  client_message m;
  const auto& type = t->get_ref<const std::string&>();
  if (type == "subscribe") {
    m.type = client_message::kind::subscribe;
    auto r = parse_subscribe(j);
    if (!r) return r.err();
    m.subscribe = std::move(*r);
    return m;
  }
  if (type == "ack") {
    m.type = client_message::kind::ack;
    for (auto& [k, v] : j.items()) {
      if (k == "type") continue;
      if (k != "lsn") return bad("unknown field \"" + k + "\" in ack");
      auto n = unsigned_field(v, "lsn");
      if (!n) return n.err();
      m.ack_lsn = *n;
    }
    if (!j.contains("lsn")) return bad("ack needs \"lsn\"");
    return m;
  }
  return bad("unknown message type \"" + type + "\"");
}

const char* format_name(tail_format f) {
  return f == tail_format::wal2json ? "wal2json" : f == tail_format::debezium ? "debezium" : "json";
}

std::string subscribed_message(uint64_t id, const subscribe_request& r, uint64_t last_lsn) {
  return "{\"type\":\"subscribed\",\"subscription\":\"" + std::to_string(id) + "\",\"from_lsn\":" +
         std::to_string(r.from_lsn) + ",\"last_lsn\":" + std::to_string(last_lsn) + ",\"format\":\"" +
         format_name(r.format) + "\",\"window\":" + std::to_string(r.window) + "}";
}

std::string error_message(const error& e) { return error_message(to_string(e.code()), e.message()); }

std::string error_message(std::string_view code, std::string_view message) {
  return "{\"type\":\"error\",\"code\":" + json_string(code) + ",\"message\":" + json_string(message) + "}";
}

// ---- bearer_tokens ----

namespace {

std::array<unsigned char, 32> digest_of(std::string_view token) {
  auto d = sha256(token);
  std::array<unsigned char, 32> out{};
  std::copy(d.begin(), d.end(), out.begin());
  return out;
}

error check_token(const std::string& token, const std::string& from) {
  if (token.empty()) return bad("the token from " + from + " is empty");
  if (!std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
    return bad("the token from " + from + " must be printable ASCII without spaces");
  return {};
}

result<token_scope> parse_scope(const json& j, const std::string& where) {
  token_scope sc;
  bool limited = false;
  std::optional<bool> metrics;
  for (auto& [k, v] : j.items()) {
    if (k == "token") continue;
    if (k == "tables") {
      if (!v.is_array()) return bad(where + ": \"tables\" must be an array of table names");
      std::vector<std::string> t;
      for (auto& x : v) {
        if (!x.is_string() || x.get_ref<const std::string&>().empty())
          return bad(where + ": \"tables\" must be an array of non-empty table names");
        t.push_back(x.get<std::string>());
      }
      sc.tables = std::move(t);
      limited = true;
    } else if (k == "columns") {
      if (!v.is_object()) return bad(where + ": \"columns\" must map a table to {\"include\":[..],\"exclude\":[..]}");
      for (auto& [table, m] : v.items()) {
        if (!m.is_object()) return bad(where + ": the columns of " + table + " must be {\"include\":[..],\"exclude\":[..]}");
        cdc::column_mask mask;
        for (auto& [mk, mv] : m.items()) {
          if (mk != "include" && mk != "exclude")
            return bad(where + ": unknown field \"" + mk + "\" in the columns of " + table + " (include, exclude)");
          auto l = string_list(mv, mk.c_str());
          if (!l) return bad(where + ": the columns of " + table + ": " + l.err().message());
          (mk == "include" ? mask.include : mask.exclude) = std::move(*l);
        }
        sc.columns[table] = std::move(mask);
      }
      limited = limited || !sc.columns.empty();
    } else if (k == "metrics") {
      if (!v.is_boolean()) return bad(where + ": \"metrics\" must be true or false");
      metrics = v.get<bool>();
    } else {
      return bad(where + ": unknown field \"" + k + "\" (token, tables, columns, metrics)");
    }
  }
  if (sc.tables)
    for (auto& [table, m] : sc.columns)
      if (!sc.may_read(table)) return bad(where + ": \"columns\" names " + table + ", which is not in \"tables\"");
  sc.metrics = metrics.value_or(!limited);
  return sc;
}

}  // namespace

bool token_scope::may_read(const std::string& table) const {
  return !tables || std::find(tables->begin(), tables->end(), table) != tables->end();
}

bearer_tokens::bearer_tokens(std::string_view token) { tokens_.push_back({digest_of(token), token_scope{}}); }

result<bearer_tokens> bearer_tokens::parse_lines(std::string_view text, const std::string& from) {
  bearer_tokens out;
  size_t line_no = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (line.empty()) continue;
    const std::string where = from + " line " + std::to_string(line_no);
    json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return bad(where + ": not a JSON object");
    auto t = j.find("token");
    if (t == j.end() || !t->is_string()) return bad(where + ": \"token\" (a string) is required");
    const auto& token = t->get_ref<const std::string&>();
    if (auto e = check_token(token, where)) return e;
    auto sc = parse_scope(j, where);
    if (!sc) return sc.err();
    auto d = digest_of(token);
    for (auto& e : out.tokens_)
      if (e.digest == d) return bad(where + ": the same token is on an earlier line");
    out.tokens_.push_back({d, std::move(*sc)});
  }
  if (out.tokens_.empty()) return bad(from + " holds no token");
  return out;
}

result<std::optional<bearer_tokens>> bearer_tokens::load(const serve_options& o) {
  if (o.token && o.token_file) return bad("give one of --token and --token-file");
  if (o.no_auth) {
    if (o.token || o.token_file) return bad("--no-auth cannot be combined with --token or --token-file");
    return std::optional<bearer_tokens>{};
  }
  std::string token;
  std::string from;
  if (o.token) {
    token = *o.token, from = "--token";
  } else if (o.token_file) {
    auto data = read_small_file(*o.token_file, 1 << 20);
    if (!data) return data.err();
    auto text = trim(*data);
    if (text.starts_with('{')) {
      auto set = parse_lines(*data, *o.token_file);
      if (!set) return set.err();
      return std::optional<bearer_tokens>(std::move(*set));
    }
    token = std::string(text), from = *o.token_file;
  } else if (const char* env = std::getenv("DOSQL_SERVE_TOKEN")) {
    token = env, from = "DOSQL_SERVE_TOKEN";
  } else {
    return bad("a bearer token is required: --token T, --token-file F or DOSQL_SERVE_TOKEN (or --no-auth to serve "
               "without one)");
  }
  if (auto e = check_token(token, from)) return e;
  return std::optional<bearer_tokens>(bearer_tokens(token));
}

const token_scope* bearer_tokens::scope_of(std::string_view authorization) const {
  auto h = trim(authorization);
  auto sp = h.find(' ');
  if (sp != 6) return nullptr;
  std::string scheme(h.substr(0, 6));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  if (scheme != "bearer") return nullptr;
  auto d = sha256(trim(h.substr(sp)));
  const token_scope* found = nullptr;
  for (auto& e : tokens_)  // every one, whether or not an earlier one matched
    if (CRYPTO_memcmp(d.data(), e.digest.data(), e.digest.size()) == 0) found = &e.scope;
  return found;
}

// ---- registry ----

std::shared_ptr<subscription_stats> registry::add_subscription(cdc::slot_filter filter) {
  auto s = std::make_shared<subscription_stats>();
  s->filter = std::move(filter);
  std::lock_guard<std::mutex> lock(mu_);
  s->id = ++next_id_;
  subs_[s->id] = s;
  return s;
}

bool registry::try_add_stream() {
  int64_t n = streams.load();
  while (n < max_streams)
    if (streams.compare_exchange_weak(n, n + 1)) return true;
  return false;
}

void registry::remove_subscription(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  subs_.erase(id);
}

std::vector<std::shared_ptr<subscription_stats>> registry::subscriptions() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<subscription_stats>> out;
  for (auto& [id, s] : subs_) out.push_back(s);
  return out;
}

// ---- slots and metrics ----

result<slot_listing> read_slots(const std::string& dir) {
  slot_listing out;
  auto slots_dir = wal::join(dir, "slots");
  if (!wal::path_exists(slots_dir)) return out;
  auto names = wal::list_dir(slots_dir);
  if (!names) return names.err();
  for (auto& n : *names) {
    if (!n.ends_with(".slot")) continue;  // not NAME.slot.tmp, a replacement being written
    auto path = wal::join(slots_dir, n);
    auto s = actors::read_slot_file(path);
    if (s) {
      out.slots.push_back(std::move(*s));
    } else if (wal::path_exists(path)) {  // (not dropped meanwhile): damaged, its position unknown
      out.damaged.emplace_back(n.substr(0, n.size() - 5), s.err().message());
    }
  }
  std::sort(out.slots.begin(), out.slots.end(), [](auto& a, auto& b) { return a.name < b.name; });
  std::sort(out.damaged.begin(), out.damaged.end());
  return out;
}

result<std::string> metrics_text(const std::string& dir, const registry& reg) {
  auto wd = wal_dir_of(dir);
  if (!wd) return wd.err();
  auto st = scan_wal(*wd);
  if (!st) return st.err();
  auto listing = read_slots(dir);
  if (!listing) return listing.err();
  auto* slots = &listing->slots;
  const uint64_t last = st->last_lsn;
  std::string out;
  family(out, "dosql_wal_last_lsn", "gauge", "LSN of the newest entry in the WAL segment files.");
  sample(out, "dosql_wal_last_lsn", last);
  family(out, "dosql_wal_oldest_lsn", "gauge", "LSN of the oldest retained WAL entry (0: no segment).");
  sample(out, "dosql_wal_oldest_lsn", st->oldest_lsn);
  family(out, "dosql_wal_bytes", "gauge", "Bytes of WAL in use (segment headers and records, not the zero fill).");
  sample(out, "dosql_wal_bytes", st->total_bytes);
  family(out, "dosql_wal_segments", "gauge", "WAL segment files.");
  sample(out, "dosql_wal_segments", st->segments.size());
  family(out, "dosql_wal_entries_appended_total", "counter",
         "Entries ever appended to this WAL: LSNs start at 1 and have no gaps, so this is the last LSN.");
  sample(out, "dosql_wal_entries_appended_total", last);
  family(out, "dosql_serve_connections", "gauge", "Open client connections (HTTP and WebSocket).");
  sample(out, "dosql_serve_connections", static_cast<uint64_t>(std::max<int64_t>(0, reg.connections.load())));
  family(out, "dosql_serve_streams", "gauge", "Open WebSocket streams (/v1/stream).");
  sample(out, "dosql_serve_streams", static_cast<uint64_t>(std::max<int64_t>(0, reg.streams.load())));
  family(out, "dosql_serve_max_streams", "gauge", "WebSocket streams allowed at once (--max-connections).");
  sample(out, "dosql_serve_max_streams", static_cast<uint64_t>(reg.max_streams));
  family(out, "dosql_serve_refused_connections_total", "counter",
         "Connections refused: reason=\"max_connections\" (503 before the WebSocket upgrade) or "
         "\"headroom\" (closed when accepted, beyond --max-connections plus the HTTP headroom).");
  sample(out, "dosql_serve_refused_connections_total", reg.refused_streams.load(), "reason=\"max_connections\"");
  sample(out, "dosql_serve_refused_connections_total", reg.refused_connections.load(), "reason=\"headroom\"");

  auto subs = reg.subscriptions();
  family(out, "dosql_serve_subscriptions", "gauge", "Live CDC subscriptions.");
  sample(out, "dosql_serve_subscriptions", subs.size());
  family(out, "dosql_subscription_delivered_entries_total", "counter",
         "Events (one per WebSocket frame) written to the subscriber.");
  for (auto& s : subs)
    sample(out, "dosql_subscription_delivered_entries_total", s->delivered.load(),
           "subscription=\"" + std::to_string(s->id) + "\"");
  family(out, "dosql_subscription_position_lsn", "gauge",
         "Every event of the subscription up to this LSN was written (or filtered out).");
  for (auto& s : subs)
    sample(out, "dosql_subscription_position_lsn", s->position.load(), "subscription=\"" + std::to_string(s->id) + "\"");
  // Lag as the consumer sees it (as dosql slots list and stream_status): the events it would
  // still receive (its filter, committed transactions, no BEGIN/COMMIT) and the age of the
  // oldest commit among them; both 0 when caught up.
  const uint64_t readable = std::min(cdc::durable_limit(*wd), last);
  auto lag_of = [&](uint64_t pos, const cdc::slot_filter& f) {
    auto p = actors::pending_for(*wd, pos, readable, cdc::selection_of(f));
    return p ? *p : actors::pending_info{readable > pos ? readable - pos : 0, 0};
  };
  auto age = [](const actors::pending_info& p) -> uint64_t {
    int64_t now = now_ms();  // the one clock reading (dosql/entry.hpp)
    return p.entries && p.oldest_commit_ms ? static_cast<uint64_t>(std::max<int64_t>(0, now - p.oldest_commit_ms)) : 0;
  };
  std::vector<actors::pending_info> sub_lag, slot_lag;
  for (auto& s : subs) sub_lag.push_back(lag_of(s->position.load(), s->filter));
  for (auto& s : *slots) slot_lag.push_back(s.invalidated ? actors::pending_info{} : lag_of(s.acked_lsn, s.filter));
  family(out, "dosql_subscription_lag_entries", "gauge",
         "Events the subscription would still receive (its filter; no BEGIN/COMMIT; 0 when caught up).");
  for (size_t i = 0; i < subs.size(); ++i)
    sample(out, "dosql_subscription_lag_entries", sub_lag[i].entries, "subscription=\"" + std::to_string(subs[i]->id) + "\"");
  family(out, "dosql_subscription_lag_ms", "gauge",
         "Age of the oldest commit among those events, in milliseconds (grows while the client is stuck).");
  for (size_t i = 0; i < subs.size(); ++i)
    sample(out, "dosql_subscription_lag_ms", age(sub_lag[i]), "subscription=\"" + std::to_string(subs[i]->id) + "\"");
  family(out, "dosql_subscription_queued_events", "gauge", "Events waiting in the connection's outgoing queue.");
  for (auto& s : subs)
    sample(out, "dosql_subscription_queued_events", s->queued.load(), "subscription=\"" + std::to_string(s->id) + "\"");

  family(out, "dosql_subscription_queued_bytes", "gauge",
         "Bytes of the frames waiting in the connection's outgoing queue (bounded by --max-queue-bytes).");
  for (auto& s : subs)
    sample(out, "dosql_subscription_queued_bytes", s->queued_bytes.load(), "subscription=\"" + std::to_string(s->id) + "\"");

  family(out, "dosql_slot_confirmed_lsn", "gauge", "The replication slot's acknowledged LSN.");
  for (auto& s : *slots) sample(out, "dosql_slot_confirmed_lsn", s.acked_lsn, "slot=\"" + label(s.name) + "\"");
  family(out, "dosql_slot_lag_entries", "gauge",
         "Events the slot's consumer would still receive (the slot's filter; no BEGIN/COMMIT; as dosql slots list).");
  for (size_t i = 0; i < slots->size(); ++i)
    sample(out, "dosql_slot_lag_entries", slot_lag[i].entries, "slot=\"" + label((*slots)[i].name) + "\"");
  family(out, "dosql_slot_lag_ms", "gauge",
         "Age of the oldest commit the slot has not acknowledged among those events, in milliseconds.");
  for (size_t i = 0; i < slots->size(); ++i)
    sample(out, "dosql_slot_lag_ms", age(slot_lag[i]), "slot=\"" + label((*slots)[i].name) + "\"");
  family(out, "dosql_slot_lag_bytes", "gauge",
         "WAL bytes in use in the segments holding an entry after the slot's acknowledged LSN (as dosql slots list).");
  for (auto& s : *slots) {
    uint64_t bytes = 0;
    for (auto& seg : st->segments)  // bytes in use: not the active segment's preallocated zero fill
      if (last > s.acked_lsn && seg.last_lsn > s.acked_lsn) bytes += seg.bytes;
    sample(out, "dosql_slot_lag_bytes", bytes, "slot=\"" + label(s.name) + "\"");
  }
  family(out, "dosql_slot_invalidated", "gauge", "1 if the slot was invalidated (it no longer holds the WAL back).");
  for (auto& s : *slots) sample(out, "dosql_slot_invalidated", s.invalidated ? 1 : 0, "slot=\"" + label(s.name) + "\"");
  family(out, "dosql_slot_damaged", "gauge",
         "1 if the slot's file is damaged (checksum or length): its position is unknown, so no compaction runs "
         "and the slot cannot be used until it is dropped and re-created (dosql slots DIR list names the problem).");
  for (auto& s : *slots) sample(out, "dosql_slot_damaged", 0, "slot=\"" + label(s.name) + "\"");
  for (auto& [name, why] : listing->damaged) sample(out, "dosql_slot_damaged", 1, "slot=\"" + label(name) + "\"");
  return out;
}

}  // namespace dosql::cli::serve
