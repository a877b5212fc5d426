#include "lakehouse/protocol.hpp"

#include <charconv>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include <dosql/json.hpp>

namespace dosql::lakehouse::protocol {

namespace {

// ordered_json: a row image's columns keep their order.
using json = nlohmann::ordered_json;

error bad(std::string_view type, std::string why) {
  return error(ec::invalid_argument, std::string(type) + ": " + std::move(why));
}

const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() ? nullptr : &*it;
}

error need(const json& j, std::string_view type, const char* name, const json*& out) {
  out = field(j, name);
  if (!out) return bad(type, std::string("field '") + name + "' is missing");
  return {};
}

error get_u64(const json& j, std::string_view type, const char* name, uint64_t& out, bool required = true) {
  const json* v = field(j, name);
  if (!v) return required ? bad(type, std::string("field '") + name + "' is missing") : error{};
  if (v->is_number_unsigned()) out = v->get<uint64_t>();
  else if (v->is_number_integer() && v->get<int64_t>() >= 0) out = static_cast<uint64_t>(v->get<int64_t>());
  else return bad(type, std::string("field '") + name + "' must be an unsigned integer");
  return {};
}

error get_i64(const json& j, std::string_view type, const char* name, int64_t& out, bool required = true) {
  const json* v = field(j, name);
  if (!v) return required ? bad(type, std::string("field '") + name + "' is missing") : error{};
  if (v->is_number_integer() && !v->is_number_unsigned()) out = v->get<int64_t>();
  else if (v->is_number_unsigned() && v->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    out = static_cast<int64_t>(v->get<uint64_t>());
  else return bad(type, std::string("field '") + name + "' must be an integer");
  return {};
}

error get_double(const json& j, std::string_view type, const char* name, double& out, bool required = true) {
  const json* v = field(j, name);
  if (!v) return required ? bad(type, std::string("field '") + name + "' is missing") : error{};
  if (!v->is_number()) return bad(type, std::string("field '") + name + "' must be a number");
  out = v->get<double>();
  return {};
}

error get_string(const json& j, std::string_view type, const char* name, std::string& out, bool required = true) {
  const json* v = field(j, name);
  if (!v) return required ? bad(type, std::string("field '") + name + "' is missing") : error{};
  if (!v->is_string()) return bad(type, std::string("field '") + name + "' must be a string");
  out = v->get<std::string>();
  return {};
}

error get_bool(const json& j, std::string_view type, const char* name, bool& out, bool required = true) {
  const json* v = field(j, name);
  if (!v) return required ? bad(type, std::string("field '") + name + "' is missing") : error{};
  if (!v->is_boolean()) return bad(type, std::string("field '") + name + "' must be true or false");
  out = v->get<bool>();
  return {};
}

int b64_digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with padding (what runtime/json.cpp writes); anything else is refused.
bool base64_decode(std::string_view in, std::string& out) {
  if (in.size() % 4) return false;
  out.clear();
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int d[4];
    for (int k = 0; k < 4; ++k) {
      char c = in[i + k];
      if (c == '=') {
        if (i + 4 != in.size() || k < 2 || (k == 2 && in[i + 3] != '=')) return false;
        d[k] = -2;
      } else if ((d[k] = b64_digit(c)) < 0) {
        return false;
      }
    }
    uint32_t n = static_cast<uint32_t>(d[0]) << 18 | static_cast<uint32_t>(d[1]) << 12 |
                 (d[2] >= 0 ? static_cast<uint32_t>(d[2]) << 6 : 0) | (d[3] >= 0 ? static_cast<uint32_t>(d[3]) : 0);
    out += static_cast<char>(n >> 16 & 255);
    if (d[2] >= 0) out += static_cast<char>(n >> 8 & 255);
    if (d[3] >= 0) out += static_cast<char>(n & 255);
  }
  return true;
}

result<value> value_from(const json& v, const std::string& what) {
  switch (v.type()) {
    case json::value_t::null: return value(nullptr);
    case json::value_t::number_integer: return value(v.get<int64_t>());
    case json::value_t::number_unsigned: {
      auto u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return error(ec::invalid_argument, what + ": integer " + std::to_string(u) + " is beyond INTEGER's range");
      return value(static_cast<int64_t>(u));
    }
    case json::value_t::number_float: return value(v.get<double>());
    case json::value_t::string: return value(v.get<std::string>());
    case json::value_t::object:
      if (v.size() == 1) {
        bool blob = v.begin().key() == "$base64";
        if ((blob || v.begin().key() == "$text_base64") && v.begin()->is_string()) {
          std::string raw;
          if (!base64_decode(v.begin()->get_ref<const std::string&>(), raw))
            return error(ec::invalid_argument, what + ": " + v.begin().key() + " is not valid base64");
          if (blob) return value(bytes(raw.begin(), raw.end()));
          return value(std::move(raw));
        }
      }
      return error(ec::invalid_argument, what + ": an object value must be {\"$base64\": ...} or {\"$text_base64\": ...}");
    default: return error(ec::invalid_argument, what + ": a value must be null, a number, a string or a base64 object");
  }
}

result<row> row_from(const json& j, const std::string& what) {
  if (!j.is_object()) return error(ec::invalid_argument, what + " must be an object");
  row r;
  r.columns.reserve(j.size());
  r.values.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    auto v = value_from(*it, what + " column '" + it.key() + "'");
    if (!v) return v.err();
    r.columns.push_back(it.key());
    r.values.push_back(std::move(*v));
  }
  return r;
}

bool digits(std::string_view s, size_t at, size_t n, int& out) {
  out = 0;
  if (at + n > s.size()) return false;
  for (size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

// Days since 1970-01-01 of a civil date (H. Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// "YYYY-MM-DDTHH:MM:SS.mmmZ" (dosql::append_iso_time) -> Unix ms.
bool parse_iso_ms(std::string_view s, int64_t& out) {
  int y, mo, d, h, mi, se, ms;
  if (s.size() != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' ||
      s[23] != 'Z')
    return false;
  if (!digits(s, 0, 4, y) || !digits(s, 5, 2, mo) || !digits(s, 8, 2, d) || !digits(s, 11, 2, h) ||
      !digits(s, 14, 2, mi) || !digits(s, 17, 2, se) || !digits(s, 20, 3, ms))
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return false;
  out = ((days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 24 + h) * 60 + mi) * 60000 +
        int64_t{se} * 1000 + ms;
  return true;
}

// The event's "hlc" (to_string(hlc_stamp)); absent (a streamer from before issue 18): the default
// {timestamp, 0, 0}, what the WAL gives entries of format version 1.
error hlc_from(const json& j, const std::string& where, int64_t timestamp, hlc_stamp& out) {
  const json* v = field(j, "hlc");
  if (!v) {
    out = {timestamp, 0, 0};
    return {};
  }
  if (!v->is_string()) return bad(where, "field 'hlc' must be a string");
  auto h = parse_hlc(v->get_ref<const std::string&>());
  if (!h) return bad(where, "field 'hlc' is not an HLC \"<15 digits>.<5 digits>.<10 digits>\" (" + v->get<std::string>() + ")");
  out = *h;
  return {};
}

}  // namespace

std::optional<hlc_stamp> parse_hlc(std::string_view t) noexcept {
  if (t.size() != 15 + 1 + 5 + 1 + 10 || t[15] != '.' || t[21] != '.') return std::nullopt;
  auto digits = [&](size_t from, size_t n, uint64_t& out) {
    out = 0;
    for (size_t i = from; i < from + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      out = out * 10 + static_cast<uint64_t>(t[i] - '0');
    }
    return true;
  };
  uint64_t p = 0, l = 0, n = 0;
  if (!digits(0, 15, p) || !digits(16, 5, l) || !digits(22, 10, n)) return std::nullopt;
  if (p >= (uint64_t{1} << 48) || l > 0xffff || n > 0xffffffffu) return std::nullopt;
  return hlc_stamp{static_cast<int64_t>(p), static_cast<uint32_t>(l), static_cast<uint32_t>(n)};
}

namespace {

result<cdc::change_event<row>> event_from(const json& j, size_t index) {
  std::string where = "batch: event " + std::to_string(index);
  if (!j.is_object()) return bad(where, "must be an object");
  cdc::change_event<row> e;
  std::string type, ts;
  if (auto er = get_u64(j, where, "lsn", e.lsn)) return er;
  where += " (lsn " + std::to_string(e.lsn) + ")";
  if (auto er = get_string(j, where, "type", type)) return er;
  if (type == "insert") e.type = cdc::change_type::insert;
  else if (type == "update") e.type = cdc::change_type::update;
  else if (type == "delete") e.type = cdc::change_type::del;
  else return bad(where, "type '" + type + "' is not a row change (insert, update, delete)");
  if (auto er = get_string(j, where, "id", e.id, false)) return er;
  if (auto er = get_string(j, where, "table", e.table)) return er;
  if (e.table.empty()) return bad(where, "field 'table' is empty");
  if (auto er = get_string(j, where, "txnId", e.txn_id, false)) return er;
  if (auto er = get_string(j, where, "timestamp", ts)) return er;
  if (!parse_iso_ms(ts, e.timestamp)) return bad(where, "field 'timestamp' is not an ISO 8601 UTC time (" + ts + ")");
  if (auto er = hlc_from(j, where, e.timestamp, e.hlc)) return er;
  if (auto* d = field(j, "data")) {
    auto r = row_from(*d, where + " data");
    if (!r) return r.err();
    e.data = std::move(*r);
  }
  if (auto* d = field(j, "oldData")) {
    auto r = row_from(*d, where + " oldData");
    if (!r) return r.err();
    e.old_data = std::move(*r);
  }
  if (e.type != cdc::change_type::del && !e.data) return bad(where, "field 'data' is missing");
  if (e.type != cdc::change_type::insert && !e.old_data) return bad(where, "field 'oldData' is missing");
  if (auto* o = field(j, "origin")) {
    if (*o == "entered") e.origin = entry_origin::entered;
    else if (*o == "left") e.origin = entry_origin::left;
    else return bad(where, "field 'origin' must be \"entered\" or \"left\"");
  }
  return e;
}

result<std::vector<source_column>> columns_from(const json& arr, std::string_view t, const std::string& w) {
  if (!arr.is_array()) return bad(t, "field " + w + " must be an array of {name, type}");
  std::vector<source_column> cols;
  for (const auto& c : arr) {
    if (!c.is_object()) return bad(t, "field " + w + " must be an array of {name, type}");
    source_column sc;
    if (auto e = get_string(c, t, "name", sc.name)) return bad(t, w + ": " + e.message());
    if (auto e = get_string(c, t, "type", sc.declared_type, false)) return bad(t, w + ": " + e.message());
    sc.typed = field(c, "type") != nullptr;
    uint64_t pk = 0;
    if (auto e = get_u64(c, t, "pk", pk, false)) return bad(t, w + ": " + e.message());
    if (pk > 1000) return bad(t, w + ": field 'pk' must be a key position (1, 2, ...) or absent");
    sc.pk = static_cast<int>(pk);
    cols.push_back(std::move(sc));
  }
  return cols;
}

result<schema_event> schema_event_from(const json& j, const std::string& where_in) {
  std::string where = where_in;
  schema_event s;
  auto& e = s.event;
  if (auto er = get_u64(j, where, "lsn", e.lsn)) return er;
  where += " (lsn " + std::to_string(e.lsn) + ")";
  std::string ts;
  if (auto er = get_string(j, where, "table", e.table)) return er;
  if (e.table.empty()) return bad(where, "field 'table' is empty");
  if (auto er = get_string(j, where, "changeType", e.change_type)) return er;
  if (auto er = get_string(j, where, "txnId", e.txn_id, false)) return er;
  if (auto er = get_string(j, where, "timestamp", ts)) return er;
  if (!parse_iso_ms(ts, e.timestamp)) return bad(where, "field 'timestamp' is not an ISO 8601 UTC time (" + ts + ")");
  if (auto er = hlc_from(j, where, e.timestamp, e.hlc)) return er;
  for (auto [name, out] : {std::pair{"column", &e.column}, {"oldColumn", &e.old_column}, {"oldType", &e.old_type},
                           {"newType", &e.new_type}}) {
    if (!field(j, name)) continue;
    std::string v;
    if (auto er = get_string(j, where, name, v)) return er;
    *out = std::move(v);
  }
  if (auto* v = field(j, "schemaVersion")) {
    if (!v->is_number_integer()) return bad(where, "field 'schemaVersion' must be an integer");
    e.schema_version = v->get<int64_t>();
  }
  if (auto er = get_string(j, where, "sql", e.sql, false)) return er;
  if (auto* c = field(j, "columns")) {
    auto cols = columns_from(*c, where, "'columns'");
    if (!cols) return cols.err();
    s.columns = std::move(*cols);
  }
  return s;
}

result<batch> batch_from(const json& j) {
  const std::string_view t = "batch";
  batch b;
  if (auto e = get_string(j, t, "batchId", b.batch_id)) return e;
  if (auto e = get_string(j, t, "sourceId", b.source_id)) return e;
  if (auto e = get_u64(j, t, "sequenceNumber", b.sequence_number)) return e;
  if (auto e = get_u64(j, t, "previousLsn", b.previous_lsn)) return e;
  if (auto e = get_u64(j, t, "firstLsn", b.first_lsn)) return e;
  if (auto e = get_u64(j, t, "lastLsn", b.last_lsn)) return e;
  if (auto e = get_i64(j, t, "createdAt", b.created_at, false)) return e;
  if (auto e = get_u64(j, t, "sizeBytes", b.size_bytes, false)) return e;
  if (auto e = get_bool(j, t, "isRetry", b.is_retry, false)) return e;
  uint64_t rc = 0;
  if (auto e = get_u64(j, t, "retryCount", rc, false)) return e;
  b.retry_count = static_cast<uint32_t>(std::min<uint64_t>(rc, UINT32_MAX));
  const json* schemas = nullptr;
  if (auto e = need(j, t, "schemas", schemas)) return e;
  if (!schemas->is_object()) return bad(t, "field 'schemas' must be an object {table: [columns]}");
  for (auto it = schemas->begin(); it != schemas->end(); ++it) {
    auto cols = columns_from(*it, t, "schemas['" + it.key() + "']");
    if (!cols) return cols.err();
    b.schemas[it.key()] = std::move(*cols);
  }
  if (auto e = get_bool(j, t, "deadLettered", b.dead_lettered, false)) return e;
  const json* events = nullptr;
  if (auto e = need(j, t, "events", events)) return e;
  if (!events->is_array()) return bad(t, "field 'events' must be an array");
  b.events.reserve(events->size());
  for (size_t i = 0; i < events->size(); ++i) {
    const json& x = (*events)[i];
    if (auto* ty = x.is_object() ? field(x, "type") : nullptr; ty && *ty == "schema_change") {
      auto se = schema_event_from(x, "batch: event " + std::to_string(i));
      if (!se) return se.err();
      b.schema_changes.push_back(std::move(*se));
      continue;
    }
    auto ev = event_from(x, i);
    if (!ev) return ev.err();
    b.events.push_back(std::move(*ev));
  }
  return b;
}

void put_string(std::string& s, const char* name, std::string_view v) {
  s += ",\"";
  s += name;
  s += "\":";
  append_json_string(s, v);
}
void put_u64(std::string& s, const char* name, uint64_t v) {
  s += ",\"";
  s += name;
  s += "\":";
  s += std::to_string(v);
}
void put_i64(std::string& s, const char* name, int64_t v) {
  s += ",\"";
  s += name;
  s += "\":";
  s += std::to_string(v);
}
void put_bool(std::string& s, const char* name, bool v) {
  s += ",\"";
  s += name;
  s += "\":";
  s += v ? "true" : "false";
}
void put_double(std::string& s, const char* name, double v) {
  s += ",\"";
  s += name;
  s += "\":";
  if (!std::isfinite(v)) v = 0;
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}

// A column list: [{"name", "type" (absent when not typed), "pk" (key columns only)}, ...].
void append_columns(std::string& s, const std::vector<source_column>& cols) {
  s += '[';
  for (size_t i = 0; i < cols.size(); ++i) {
    if (i) s += ',';
    s += "{\"name\":";
    append_json_string(s, cols[i].name);
    if (cols[i].typed) {
      s += ",\"type\":";
      append_json_string(s, cols[i].declared_type);
    }
    if (cols[i].pk > 0) s += ",\"pk\":" + std::to_string(cols[i].pk);
    s += '}';
  }
  s += ']';
}

std::string head(const char* type) { return std::string("{\"type\":\"") + type + "\""; }

}  // namespace

std::string_view type_name(const message& m) noexcept {
  static constexpr std::string_view names[] = {"hello", "welcome", "batch", "ack", "nack", "heartbeat", "heartbeat_ack", "error"};
  return names[m.index()];
}

result<value> value_from_json_text(std::string_view text, const std::string& what) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return error(ec::invalid_argument, what + ": not JSON");
  return value_from(j, what);
}

result<message> parse(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return error(ec::invalid_argument, "the frame is not JSON");
  if (!j.is_object()) return error(ec::invalid_argument, "the frame is not a JSON object");
  auto t = field(j, "type");
  if (!t) return error(ec::invalid_argument, "the frame has no field 'type'");
  if (!t->is_string()) return error(ec::invalid_argument, "field 'type' must be a string");
  const auto& type = t->get_ref<const std::string&>();
  if (type == "hello") {
    hello m;
    uint64_t p = 0;
    if (auto e = get_u64(j, type, "protocol", p)) return e;
    if (p > 1000000) return bad(type, "field 'protocol' is out of range");
    m.protocol = static_cast<int>(p);
    if (auto e = get_string(j, type, "sourceId", m.source_id)) return e;
    if (m.source_id.empty()) return bad(type, "field 'sourceId' is empty");
    if (auto e = get_string(j, type, "shardName", m.shard_name, false)) return e;
    return message(std::move(m));
  }
  if (type == "welcome") {
    welcome m;
    uint64_t p = 0;
    if (auto e = get_u64(j, type, "protocol", p)) return e;
    if (p > 1000000) return bad(type, "field 'protocol' is out of range");
    m.protocol = static_cast<int>(p);
    if (auto e = get_string(j, type, "sourceId", m.source_id)) return e;
    if (auto e = get_u64(j, type, "watermark", m.watermark)) return e;
    if (auto e = get_u64(j, type, "nextSequence", m.next_sequence)) return e;
    if (auto e = get_u64(j, type, "maxFrameBytes", m.max_frame_bytes, false)) return e;
    return message(std::move(m));
  }
  if (type == "batch") {
    auto b = batch_from(j);
    if (!b) return b.err();
    return message(std::move(*b));
  }
  if (type == "ack") {
    ack m;
    if (auto e = get_string(j, type, "batchId", m.batch_id)) return e;
    if (auto e = get_u64(j, type, "sequenceNumber", m.sequence_number)) return e;
    if (auto e = get_u64(j, type, "lastLsn", m.last_lsn)) return e;
    if (auto e = get_bool(j, type, "duplicate", m.duplicate, false)) return e;
    if (auto e = get_u64(j, type, "watermark", m.watermark)) return e;
    if (auto e = get_double(j, type, "bufferUtilization", m.buffer_utilization, false)) return e;
    if (auto e = get_u64(j, type, "suggestedDelayMs", m.suggested_delay_ms, false)) return e;
    return message(std::move(m));
  }
  if (type == "nack") {
    nack m;
    if (auto e = get_string(j, type, "batchId", m.batch_id)) return e;
    if (auto e = get_u64(j, type, "sequenceNumber", m.sequence_number)) return e;
    if (auto e = get_bool(j, type, "retryable", m.retryable, false)) return e;
    if (auto e = get_string(j, type, "reason", m.reason)) return e;
    if (auto e = get_double(j, type, "bufferUtilization", m.buffer_utilization, false)) return e;
    if (auto e = get_u64(j, type, "suggestedDelayMs", m.suggested_delay_ms, false)) return e;
    return message(std::move(m));
  }
  if (type == "heartbeat") {
    heartbeat m;
    if (auto e = get_string(j, type, "sourceId", m.source_id)) return e;
    if (auto e = get_u64(j, type, "lsn", m.lsn)) return e;
    if (auto e = get_i64(j, type, "timestamp", m.timestamp, false)) return e;
    return message(std::move(m));
  }
  if (type == "heartbeat_ack") {
    heartbeat_ack m;
    if (auto e = get_string(j, type, "sourceId", m.source_id)) return e;
    if (auto e = get_u64(j, type, "watermark", m.watermark)) return e;
    if (auto e = get_double(j, type, "bufferUtilization", m.buffer_utilization, false)) return e;
    if (auto e = get_u64(j, type, "suggestedDelayMs", m.suggested_delay_ms, false)) return e;
    return message(std::move(m));
  }
  if (type == "error") {
    error_frame m;
    if (auto e = get_string(j, type, "code", m.code)) return e;
    if (auto e = get_string(j, type, "message", m.message)) return e;
    return message(std::move(m));
  }
  std::string shown = type.size() > 40 ? type.substr(0, 40) + "..." : type;
  return error(ec::invalid_argument, "unknown message type '" + shown + "'");
}

std::string render(const hello& m) {
  std::string s = head("hello");
  put_u64(s, "protocol", static_cast<uint64_t>(m.protocol));
  put_string(s, "sourceId", m.source_id);
  put_string(s, "shardName", m.shard_name);
  return s + '}';
}

std::string render(const welcome& m) {
  std::string s = head("welcome");
  put_u64(s, "protocol", static_cast<uint64_t>(m.protocol));
  put_string(s, "sourceId", m.source_id);
  put_u64(s, "watermark", m.watermark);
  put_u64(s, "nextSequence", m.next_sequence);
  put_u64(s, "maxFrameBytes", m.max_frame_bytes);
  return s + '}';
}

std::string render_batch(const batch& m, const std::vector<std::string>& event_json) {
  std::string s = head("batch");
  put_string(s, "batchId", m.batch_id);
  put_string(s, "sourceId", m.source_id);
  put_u64(s, "sequenceNumber", m.sequence_number);
  put_u64(s, "previousLsn", m.previous_lsn);
  put_u64(s, "firstLsn", m.first_lsn);
  put_u64(s, "lastLsn", m.last_lsn);
  put_i64(s, "createdAt", m.created_at);
  put_u64(s, "sizeBytes", m.size_bytes);
  put_bool(s, "isRetry", m.is_retry);
  put_u64(s, "retryCount", m.retry_count);
  if (m.dead_lettered) put_bool(s, "deadLettered", true);
  s += ",\"schemas\":{";
  bool first = true;
  for (const auto& [table, cols] : m.schemas) {
    if (!first) s += ',';
    first = false;
    append_json_string(s, table);
    s += ':';
    append_columns(s, cols);
  }
  s += "},\"events\":[";
  for (size_t i = 0; i < event_json.size(); ++i) {
    if (i) s += ',';
    s += event_json[i];
  }
  s += "]}";
  return s;
}

std::string render(const schema_event& e) {
  std::string s = cdc::to_json(e.event);
  if (!e.columns) return s;
  s.pop_back();  // '}'
  s += ",\"columns\":";
  append_columns(s, *e.columns);
  return s + "}";
}

std::string render(const batch& m) {
  std::vector<std::string> ev;
  ev.reserve(m.events.size() + m.schema_changes.size());
  json_options o;
  o.lossless_text = true;
  size_t k = 0;  // schema changes merged in by LSN (one before a row change of the same LSN)
  for (const auto& e : m.events) {
    for (; k < m.schema_changes.size() && m.schema_changes[k].event.lsn <= e.lsn; ++k) ev.push_back(render(m.schema_changes[k]));
    ev.push_back(cdc::to_json(e, o));
  }
  for (; k < m.schema_changes.size(); ++k) ev.push_back(render(m.schema_changes[k]));
  return render_batch(m, ev);
}

std::string render(const ack& m) {
  std::string s = head("ack");
  put_string(s, "batchId", m.batch_id);
  put_u64(s, "sequenceNumber", m.sequence_number);
  put_u64(s, "lastLsn", m.last_lsn);
  put_bool(s, "duplicate", m.duplicate);
  put_u64(s, "watermark", m.watermark);
  put_double(s, "bufferUtilization", m.buffer_utilization);
  put_u64(s, "suggestedDelayMs", m.suggested_delay_ms);
  return s + '}';
}

std::string render(const nack& m) {
  std::string s = head("nack");
  put_string(s, "batchId", m.batch_id);
  put_u64(s, "sequenceNumber", m.sequence_number);
  put_bool(s, "retryable", m.retryable);
  put_string(s, "reason", m.reason);
  put_double(s, "bufferUtilization", m.buffer_utilization);
  put_u64(s, "suggestedDelayMs", m.suggested_delay_ms);
  return s + '}';
}

std::string render(const heartbeat& m) {
  std::string s = head("heartbeat");
  put_string(s, "sourceId", m.source_id);
  put_u64(s, "lsn", m.lsn);
  put_i64(s, "timestamp", m.timestamp);
  return s + '}';
}

std::string render(const heartbeat_ack& m) {
  std::string s = head("heartbeat_ack");
  put_string(s, "sourceId", m.source_id);
  put_u64(s, "watermark", m.watermark);
  put_double(s, "bufferUtilization", m.buffer_utilization);
  put_u64(s, "suggestedDelayMs", m.suggested_delay_ms);
  return s + '}';
}

std::string render(const error_frame& m) {
  std::string s = head("error");
  put_string(s, "code", m.code);
  put_string(s, "message", m.message);
  return s + '}';
}

std::string render(const message& m) {
  return std::visit([](const auto& x) { return render(x); }, m);
}

error check_batch(const batch& b) {
  auto bad_batch = [&](std::string why) {
    return error(ec::invalid_argument, "batch " + b.batch_id + " (sequence " + std::to_string(b.sequence_number) + "): " + why);
  };
  if (!(b.previous_lsn < b.first_lsn))
    return bad_batch("previousLsn " + std::to_string(b.previous_lsn) + " must be below firstLsn " + std::to_string(b.first_lsn));
  if (!(b.first_lsn <= b.last_lsn))
    return bad_batch("firstLsn " + std::to_string(b.first_lsn) + " is above lastLsn " + std::to_string(b.last_lsn));
  uint64_t prev = b.first_lsn;
  for (size_t i = 0; i < b.events.size(); ++i) {
    const auto& e = b.events[i];
    if (e.lsn < b.first_lsn || e.lsn > b.last_lsn)
      return bad_batch("event " + std::to_string(i) + " has lsn " + std::to_string(e.lsn) + ", outside [firstLsn, lastLsn]");
    if (e.lsn < prev)
      return bad_batch("event " + std::to_string(i) + " has lsn " + std::to_string(e.lsn) + ", below the event before it");
    prev = e.lsn;
    if (!b.schemas.count(e.table))
      return bad_batch("event " + std::to_string(i) + " (lsn " + std::to_string(e.lsn) + ") is for table '" + e.table +
                       "', which 'schemas' does not describe");
  }
  prev = b.first_lsn;
  for (size_t i = 0; i < b.schema_changes.size(); ++i) {
    auto lsn = b.schema_changes[i].event.lsn;
    if (lsn < b.first_lsn || lsn > b.last_lsn)
      return bad_batch("schema change " + std::to_string(i) + " has lsn " + std::to_string(lsn) + ", outside [firstLsn, lastLsn]");
    if (lsn < prev)
      return bad_batch("schema change " + std::to_string(i) + " has lsn " + std::to_string(lsn) + ", below the one before it");
    prev = lsn;
  }
  if (b.dead_lettered && (!b.events.empty() || !b.schema_changes.empty()))
    return bad_batch("a dead-lettered batch carries no events");
  return {};
}

}  // namespace dosql::lakehouse::protocol
