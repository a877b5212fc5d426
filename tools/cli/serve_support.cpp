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

std::string error_message(const error& e) {
  return "{\"type\":\"error\",\"code\":" + json_string(to_string(e.code())) + ",\"message\":" +
         json_string(e.message()) + "}";
}

// ---- bearer_token ----

bearer_token::bearer_token(std::string_view token) {
  auto d = sha256(token);
  std::copy(d.begin(), d.end(), digest_.begin());
}

result<std::optional<bearer_token>> bearer_token::load(const serve_options& o) {
  if (o.token && o.token_file) return bad("give one of --token and --token-file");
  if (o.no_auth) {
    if (o.token || o.token_file) return bad("--no-auth cannot be combined with --token or --token-file");
    return std::optional<bearer_token>{};
  }
  std::string token;
  std::string from;
  if (o.token) {
    token = *o.token, from = "--token";
  } else if (o.token_file) {
    auto data = read_small_file(*o.token_file, 4096);
    if (!data) return data.err();
    token = std::string(trim(*data)), from = *o.token_file;
  } else if (const char* env = std::getenv("DOSQL_SERVE_TOKEN")) {
    token = env, from = "DOSQL_SERVE_TOKEN";
  } else {
    return bad("a bearer token is required: --token T, --token-file F or DOSQL_SERVE_TOKEN (or --no-auth to serve "
               "without one)");
  }
  if (token.empty()) return bad("the token from " + from + " is empty");
  if (!std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
    return bad("the token from " + from + " must be printable ASCII without spaces");
  return std::optional<bearer_token>(bearer_token(token));
}

bool bearer_token::accepts(std::string_view authorization) const {
  auto h = trim(authorization);
  auto sp = h.find(' ');
  if (sp != 6) return false;
  std::string scheme(h.substr(0, 6));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  if (scheme != "bearer") return false;
  auto d = sha256(trim(h.substr(sp)));
  return CRYPTO_memcmp(d.data(), digest_.data(), digest_.size()) == 0;
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

result<std::vector<cdc::slot_info>> read_slots(const std::string& dir) {
  std::vector<cdc::slot_info> out;
  auto slots_dir = wal::join(dir, "slots");
  if (!wal::path_exists(slots_dir)) return out;
  auto names = wal::list_dir(slots_dir);
  if (!names) return names.err();
  for (auto& n : *names) {
    if (!n.ends_with(".slot")) continue;  // not NAME.slot.tmp, a replacement being written
    // Dropped meanwhile, or damaged (the owner reports that when it loads the slots).
    if (auto s = actors::read_slot_file(wal::join(slots_dir, n))) out.push_back(std::move(*s));
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

result<std::string> metrics_text(const std::string& dir, const registry& reg) {
  auto wd = wal_dir_of(dir);
  if (!wd) return wd.err();
  auto st = scan_wal(*wd);
  if (!st) return st.err();
  auto slots = read_slots(dir);
  if (!slots) return slots.err();
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
  const uint64_t readable = std::min(readable_limit(*wd), last);
  auto lag_of = [&](uint64_t pos, const cdc::slot_filter& f) {
    auto p = actors::pending_for(*wd, pos, readable, [&](const entry_view& e) { return actors::slot_matches(f, e); });
    return p ? *p : actors::pending_info{readable > pos ? readable - pos : 0, 0};
  };
  auto age = [](const actors::pending_info& p) -> uint64_t {
    using namespace std::chrono;
    int64_t now = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
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
  return out;
}

}  // namespace dosql::cli::serve
