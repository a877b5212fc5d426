#include "event_store.hpp"

#include <algorithm>
#include <cstdio>
#include <random>

namespace es {

std::string_view to_string(errc c) noexcept {
  switch (c) {
    case errc::none: return "OK";
    case errc::conflict: return "CONFLICT";
    case errc::rule_violation: return "RULE_VIOLATION";
    case errc::not_found: return "NOT_FOUND";
    case errc::invalid_input: return "INVALID_INPUT";
    case errc::storage: return "STORAGE";
  }
  return "UNKNOWN";
}

std::string error::to_string() const { return std::string(es::to_string(code_)) + ": " + message_; }

std::string new_uuid() {
  thread_local std::mt19937_64 rng{std::random_device{}() ^ (static_cast<uint64_t>(dosql::now_ms()) << 20)};
  uint64_t hi = rng(), lo = rng();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0xffff),
                static_cast<unsigned>(lo >> 48), static_cast<unsigned long long>(lo & 0xffffffffffffULL));
  return buf;
}

json metadata::to_json() const {
  json j = json::object();
  if (!user_id.empty()) j["userId"] = user_id;
  if (!correlation_id.empty()) j["correlationId"] = correlation_id;
  if (!causation_id.empty()) j["causationId"] = causation_id;
  return j;
}

metadata metadata::from_json(const json& j) {
  metadata m;
  if (!j.is_object()) return m;
  if (auto it = j.find("userId"); it != j.end() && it->is_string()) m.user_id = *it;
  if (auto it = j.find("correlationId"); it != j.end() && it->is_string()) m.correlation_id = *it;
  if (auto it = j.find("causationId"); it != j.end() && it->is_string()) m.causation_id = *it;
  return m;
}

json stored_event::to_json() const {
  return json{{"eventId", event_id},     {"aggregateId", aggregate_id}, {"aggregateType", aggregate_type},
              {"eventType", event_type}, {"version", version},          {"timestamp", timestamp},
              {"payload", payload},      {"metadata", metadata}};
}

// ---- schema ---------------------------------------------------------------------------------

namespace {

// The guide's table, with the JSON columns checked, plus what makes it append-only. The guide's
// idx_events_aggregate(aggregate_id, version) is the index UNIQUE(aggregate_id, version) already
// creates, so it is left out (one index less to write per event).
const char* schema_sql = R"(
CREATE TABLE IF NOT EXISTS events (
  event_id TEXT PRIMARY KEY,
  aggregate_id TEXT NOT NULL,
  aggregate_type TEXT NOT NULL,
  event_type TEXT NOT NULL,
  version INTEGER NOT NULL CHECK (version >= 1),
  timestamp INTEGER NOT NULL,
  payload TEXT NOT NULL CHECK (json_valid(payload)),
  metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
  UNIQUE(aggregate_id, version)
);
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events is append-only: an UPDATE of an event is refused'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events is append-only: a DELETE of an event is refused'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_replace BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id)
  OR EXISTS (SELECT 1 FROM events WHERE aggregate_id = NEW.aggregate_id AND version = NEW.version)
BEGIN SELECT RAISE(ABORT, 'events is append-only: an event with this event_id or (aggregate_id, version) exists'); END;
CREATE TABLE IF NOT EXISTS snapshots (
  aggregate_id TEXT PRIMARY KEY,
  aggregate_type TEXT NOT NULL,
  version INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (json_valid(state)),
  taken_at INTEGER NOT NULL
);
)";

const char* select_events =
    "SELECT event_id, aggregate_id, aggregate_type, event_type, version, timestamp, payload, metadata FROM events ";

const std::string* text(const dosql::value& v) { return std::get_if<std::string>(&v); }
const int64_t* integer(const dosql::value& v) { return std::get_if<int64_t>(&v); }

result<stored_event> event_from_values(const std::vector<dosql::value>& v) {
  stored_event e;
  auto bad = [&](const char* col) {
    return error(errc::invalid_input, std::string("event row: column ") + col + " has the wrong type (" +
                                          (v.empty() ? "no columns" : dosql::to_string(v[0])) + ")");
  };
  if (v.size() != 8) return error(errc::invalid_input, "event row: expected 8 columns, got " + std::to_string(v.size()));
  if (!text(v[0])) return bad("event_id");
  if (!text(v[1])) return bad("aggregate_id");
  if (!text(v[2])) return bad("aggregate_type");
  if (!text(v[3])) return bad("event_type");
  if (!integer(v[4])) return bad("version");
  if (!integer(v[5])) return bad("timestamp");
  if (!text(v[6])) return bad("payload");
  e.event_id = *text(v[0]);
  e.aggregate_id = *text(v[1]);
  e.aggregate_type = *text(v[2]);
  e.event_type = *text(v[3]);
  e.version = *integer(v[4]);
  e.timestamp = *integer(v[5]);
  e.payload = json::parse(*text(v[6]), nullptr, false);
  if (e.payload.is_discarded()) return error(errc::invalid_input, "event " + e.event_id + ": payload is not JSON");
  if (text(v[7])) {
    e.metadata = json::parse(*text(v[7]), nullptr, false);
    if (e.metadata.is_discarded()) return error(errc::invalid_input, "event " + e.event_id + ": metadata is not JSON");
  } else {
    e.metadata = json::object();
  }
  return e;
}

}  // namespace

error initialize(dosql::database& db) {
  if (auto r = db.exec(schema_sql); !r) return error::of(r.err());
  return {};
}

result<stored_event> event_from_row(const dosql::row& r) {
  static const char* cols[] = {"event_id", "aggregate_id", "aggregate_type", "event_type",
                               "version",  "timestamp",    "payload",        "metadata"};
  std::vector<dosql::value> v;
  v.reserve(8);
  for (const char* c : cols) {
    const dosql::value* x = r.find(c);
    if (!x) return error(errc::invalid_input, std::string("event row image has no column ") + c);
    v.push_back(*x);
  }
  return event_from_values(v);
}

// ---- the change stream ----------------------------------------------------------------------

dosql::cdc::subscribe_options events_stream_options(uint64_t from_lsn, const std::vector<std::string>& aggregate_types) {
  dosql::cdc::subscribe_options o;
  o.from_lsn = from_lsn;
  o.filter.tables = {"events"};
  o.filter.operations = {dosql::op_type::insert};  // append-only: nothing else can appear
  if (!aggregate_types.empty()) {
    o.row_filters["events"] = [types = aggregate_types](const dosql::row& r) {
      const dosql::value* t = r.find("aggregate_type");
      const std::string* s = t ? std::get_if<std::string>(t) : nullptr;
      return s && std::find(types.begin(), types.end(), *s) != types.end();
    };
  }
  return o;
}

std::optional<positioned_event> event_subscription::next() {
  if (err_) return std::nullopt;
  for (;;) {
    auto e = sub_->next();
    if (!e) {
      if (sub_->err()) err_ = error::of(sub_->err());
      return std::nullopt;
    }
    if (e->op != dosql::op_type::insert || e->table != "events" || !e->after) continue;
    auto r = dosql::codec::decode_row(std::string_view(reinterpret_cast<const char*>(e->after->data()), e->after->size()));
    if (!r) {
      err_ = error::of(r.err());
      return std::nullopt;
    }
    auto ev = event_from_row(*r);
    if (!ev) {
      err_ = error(ev.err().code(), "lsn " + std::to_string(e->lsn) + ": " + ev.err().message());
      return std::nullopt;
    }
    return positioned_event{e->lsn, std::move(*ev)};
  }
}

void event_subscription::stop() { sub_->stop(); }

// ---- the store ------------------------------------------------------------------------------

result<std::unique_ptr<event_store>> event_store::open(std::shared_ptr<dosql::database> db) {
  if (auto e = initialize(*db)) return e;
  return std::unique_ptr<event_store>(new event_store(std::move(db)));
}

result<append_result> event_store::append(const aggregate_ref& agg, int64_t expected_version,
                                          const std::vector<new_event>& events, const snapshot_fn& snap_fn) {
  if (agg.id.empty()) return error(errc::invalid_input, "append: the aggregate id is empty");
  if (agg.type.empty()) return error(errc::invalid_input, "append to " + agg.id + ": the aggregate type is empty");
  if (expected_version < 0)
    return error(errc::invalid_input, "append to " + agg.id + ": expected version " + std::to_string(expected_version) + " is negative");
  if (events.empty()) return error(errc::invalid_input, "append to " + agg.id + ": no events");
  for (const auto& e : events) {
    if (e.event_type.empty()) return error(errc::invalid_input, "append to " + agg.id + ": an event has no type");
    if (!e.payload.is_object())
      return error(errc::invalid_input, "append to " + agg.id + ": the payload of " + e.event_type + " is not a JSON object");
  }
  auto tx = db_->begin();
  if (!tx) return error::of(tx.err());
  // The check and the inserts run under dosql's single writer: nobody appends in between.
  auto cur = tx->query("SELECT coalesce(max(version), 0), min(aggregate_type) FROM events WHERE aggregate_id = ?", {agg.id});
  if (!cur) return error::of(cur.err());
  int64_t actual = *integer(cur->rows.at(0).at(0));
  if (actual != expected_version)
    return error(errc::conflict, "concurrency conflict on aggregate " + agg.id + ": expected version " +
                                     std::to_string(expected_version) + ", actual version " + std::to_string(actual));
  if (const std::string* t = text(cur->rows[0][1]); t && *t != agg.type)
    return error(errc::invalid_input, "append to " + agg.id + ": it is a " + *t + ", not a " + agg.type);
  append_result out;
  int64_t now = dosql::now_ms();
  int64_t v = expected_version;
  for (const auto& e : events) {
    stored_event s{new_uuid(), agg.id, agg.type, e.event_type, ++v, now, e.payload, e.meta.to_json()};
    auto r = tx->exec("INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, version, timestamp, payload, metadata) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      {s.event_id, s.aggregate_id, s.aggregate_type, s.event_type, s.version, s.timestamp, s.payload.dump(),
                       s.metadata.dump()});
    if (!r) return error::of(r.err());
    out.events.push_back(std::move(s));
  }
  std::optional<json> snap;
  if (snap_fn) {
    auto sr = snap_fn(out.events);
    if (!sr) return sr.err();
    snap = std::move(*sr);
  }
  if (snap) {
    auto r = tx->exec("INSERT INTO snapshots (aggregate_id, aggregate_type, version, state, taken_at) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT(aggregate_id) DO UPDATE SET version = excluded.version, state = excluded.state, "
                      "taken_at = excluded.taken_at",
                      {agg.id, agg.type, v, snap->dump(), now});
    if (!r) return error::of(r.err());
  }
  auto lsn = tx->commit();
  if (!lsn) return error::of(lsn.err());
  out.version = v;
  out.commit_lsn = *lsn;
  return out;
}

result<loaded_stream> event_store::load(const std::string& aggregate_id) {
  loaded_stream out;
  // A snapshot is written with the event of its version, and events are append-only, so the
  // events read after the snapshot continue it without a gap.
  auto s = db_->query("SELECT version, state FROM snapshots WHERE aggregate_id = ?", {aggregate_id});
  if (!s) return error::of(s.err());
  int64_t from = 0;
  if (!s->rows.empty()) {
    const auto& r = s->rows[0];
    if (!integer(r[0]) || !text(r[1])) return error(errc::invalid_input, "snapshot of " + aggregate_id + " is malformed");
    snapshot snap{*integer(r[0]), json::parse(*text(r[1]), nullptr, false)};
    if (snap.state.is_discarded()) return error(errc::invalid_input, "snapshot of " + aggregate_id + " is not JSON");
    from = snap.version;
    out.snap = std::move(snap);
  }
  auto q = db_->query(std::string(select_events) + "WHERE aggregate_id = ? AND version > ? ORDER BY version", {aggregate_id, from});
  if (!q) return error::of(q.err());
  for (const auto& r : q->rows) {
    auto e = event_from_values(r);
    if (!e) return e.err();
    out.events.push_back(std::move(*e));
  }
  return out;
}

result<std::vector<stored_event>> event_store::history(const std::string& aggregate_id) {
  auto q = db_->query(std::string(select_events) + "WHERE aggregate_id = ? ORDER BY version", {aggregate_id});
  if (!q) return error::of(q.err());
  std::vector<stored_event> out;
  for (const auto& r : q->rows) {
    auto e = event_from_values(r);
    if (!e) return e.err();
    out.push_back(std::move(*e));
  }
  return out;
}

result<std::unique_ptr<event_subscription>> event_store::subscribe_to_events(uint64_t from_lsn,
                                                                             const std::vector<std::string>& aggregate_types,
                                                                             bool stop_at_tail) {
  auto o = events_stream_options(from_lsn, aggregate_types);
  o.stop_at_tail = stop_at_tail;
  auto s = dosql::cdc::create_cdc(db_).subscribe(std::move(o));
  if (!s) return error::of(s.err());
  return std::unique_ptr<event_subscription>(new event_subscription(std::move(*s)));
}

}  // namespace es
