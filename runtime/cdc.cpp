#include <dosql/cdc.hpp>
#include "runtime/reader_setup.hpp"
#include <dosql/filter.hpp>
#include "wal/sql_predicate.hpp"
#include "wal/sqlite_util.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <mutex>

#include "actors/subscription_reader.hpp"
#include "actors/slot_manager.hpp"
#include <dosql/json.hpp>
#include "wal/msgpack_sink.hpp"
#include "wal/reader.hpp"

namespace dosql::cdc {

// ---- the consumer side of a blocking subscription ------------------------------------------
// A bridge actor receives batch requests and parks them (with their response promises) in a
// queue; the iterating thread takes a batch and only then acknowledges it, so the reader's
// credit window bounds the queue.
namespace {

using ack_atom = caf::atom_constant<caf::atom("d_ack")>;
using actors::watch_atom;
// A consumer that the iterating thread acknowledges through: (ack_atom, batch seq, lsn).
using bridge_actor = actors::consumer_actor::extend<caf::reacts_to<ack_atom, uint64_t, uint64_t>>;

struct shared_queue {
  std::mutex mu;
  std::condition_variable cv;
  struct item {
    actors::batch batch;
    uint64_t seq = 0;
    uint32_t count = 0;
  };
  std::deque<item> items;  // guarded by mu
  bool ended = false, stopped = false;
  error end_error;
  // settled_lsn(): the last entry processed (set when the next one is asked for), the
  // iterating thread waiting with nothing buffered, the reader's last heartbeat (all under mu).
  uint64_t processed = 0, heartbeat = 0;
  bool waiting = false;
};

struct bridge_state {
  std::shared_ptr<shared_queue> q;
  std::map<uint64_t, caf::typed_response_promise<uint64_t>> promises;
  uint64_t seq = 0;
  static inline const char* name = "dosql.subscription_bridge";
};

// Ends the queue once (the first ending wins) and wakes the iterating thread.
void end_queue(shared_queue& q, error e) {
  {
    std::lock_guard<std::mutex> g(q.mu);
    if (q.ended) return;
    q.ended = true;
    q.end_error = std::move(e);
  }
  q.cv.notify_all();
}

bridge_actor::behavior_type bridge(bridge_actor::stateful_pointer<bridge_state> self, std::shared_ptr<shared_queue> q) {
  self->state.q = q;
  // The iterating thread never waits on a dead peer: the reader stopping without ending the
  // range, or this actor stopping (the actor system going down), ends it.
  self->attach_functor([q] { end_queue(*q, error(ec::closed, "the subscription was shut down (its actor system stopped)")); });
  self->set_down_handler([=](caf::down_msg& dm) {
    end_queue(*self->state.q, error(ec::subscription_failed, "the subscription's reader stopped without ending it (" +
                                                                  self->system().render(dm.reason) + ")"));
  });
  return {
    [=](watch_atom, const actors::reader_control_actor& reader) { self->monitor(reader); },
    [=](actors::batch_atom, actors::batch& batch) -> caf::result<uint64_t> {
      auto& st = self->state;
      auto rp = self->make_response_promise<uint64_t>();
      uint64_t seq = ++st.seq;
      st.promises.emplace(seq, rp);
      uint32_t count = batch.count;
      {
        std::lock_guard<std::mutex> g(st.q->mu);
        st.q->items.push_back({std::move(batch), seq, count});
      }
      st.q->cv.notify_all();
      return rp;
    },
    [=](actors::heartbeat_atom, uint64_t lsn) {
      std::lock_guard<std::mutex> g(self->state.q->mu);
      self->state.q->heartbeat = std::max(self->state.q->heartbeat, lsn);
    },
    [=](ack_atom, uint64_t seq, uint64_t lsn) {
      auto& ps = self->state.promises;
      if (auto it = ps.find(seq); it != ps.end()) {
        it->second.deliver(lsn);
        ps.erase(it);
      }
    },
    [=](actors::end_atom, const actors::subscription_end& end) { end_queue(*self->state.q, end.to_error()); },
  };
}

}  // namespace

struct subscription::impl {
  std::shared_ptr<shared_queue> q;
  bridge_actor bridge;
  actors::subscription_reader_actor reader;
  std::shared_ptr<database> db;  // for status(): the durable tail and the WAL to measure lag
  subscribe_options selection;  // what it delivers (for the lag)
  std::vector<entry_view> views;
  ~impl() {
    if (reader) caf::anon_send_exit(reader, caf::exit_reason::user_shutdown);
    if (bridge) caf::anon_send_exit(bridge, caf::exit_reason::user_shutdown);
  }
};

subscription::subscription(std::unique_ptr<impl> p) : p_(std::move(p)) {}
subscription::~subscription() = default;

size_t subscription::buffered() const {
  size_t n = views_.size() - next_;
  std::lock_guard<std::mutex> g(p_->q->mu);
  for (auto& it : p_->q->items) n += it.count;
  return n;
}

subscription_status subscription::status() const {
  subscription_status st;
  st.current_lsn = handed_lsn_.load(std::memory_order_relaxed);
  st.entries_processed = handed_.load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> g(p_->q->mu);
    auto& q = *p_->q;
    st.active = !q.ended || !q.items.empty();
    for (auto& it : q.items) st.buffered_entries += it.count;
  }
  if (p_->db) fill_lag(*p_->db, p_->selection, st);
  return st;
}

void fill_lag(database& db, const subscribe_options& selection, subscription_status& st) {
  uint64_t durable = db.durable_lsn();
  auto p = actors::pending_for(db.wal_dir(), st.current_lsn, durable, selection_of(selection));
  st.lag_entries = p ? p->entries : durable > st.current_lsn ? durable - st.current_lsn : 0;
  st.lag_ms = p && p->entries ? std::max<int64_t>(0, now_ms() - p->oldest_commit_ms) : 0;
}

uint64_t subscription::settled_lsn() const {
  std::lock_guard<std::mutex> g(p_->q->mu);
  auto& q = *p_->q;
  return q.waiting && q.items.empty() ? std::max(q.processed, q.heartbeat) : q.processed;
}

void subscription::stop() {
  {
    std::lock_guard<std::mutex> g(p_->q->mu);
    p_->q->stopped = true;
  }
  p_->q->cv.notify_all();
}

// Takes the next batch from the queue (blocking; until `deadline` if given) and acknowledges it.
subscription::fill_status subscription::fill(const std::chrono::steady_clock::time_point* deadline) {
  shared_queue::item it;
  {
    std::unique_lock<std::mutex> g(p_->q->mu);
    p_->q->processed = position_;  // the entries handed out before were processed
    p_->q->waiting = true;
    auto ready = [&] { return p_->q->stopped || !p_->q->items.empty() || p_->q->ended; };
    bool got = true;
    if (deadline)
      got = p_->q->cv.wait_until(g, *deadline, ready);
    else
      p_->q->cv.wait(g, ready);
    p_->q->waiting = false;
    if (!got) return fill_status::timeout;
    if (p_->q->stopped) return fill_status::ended;
    if (p_->q->items.empty()) {  // ended
      err_ = p_->q->end_error;
      return fill_status::ended;
    }
    it = std::move(p_->q->items.front());
    p_->q->items.pop_front();
  }
  batch_msg_ = std::move(it.batch.records);  // the WAL's records; views_ point into them
  if (auto e = actors::decode_records(batch_msg_, it.batch.count, views_)) {
    err_ = e;
    return fill_status::ended;
  }
  next_ = 0;
  uint64_t last = views_.empty() ? position_ : views_.back().lsn;
  caf::anon_send(p_->bridge, ack_atom::value, it.seq, last);
  return fill_status::got;
}

namespace {
// Copies a view into an entry, reusing the entry's buffers.
void assign(wal_entry& dst, const entry_view& v) {
  auto copy = [](std::optional<bytes>& d, bool has, std::string_view s) {
    if (!has) {
      d.reset();
      return;
    }
    if (!d) d.emplace();
    d->assign(s.begin(), s.end());
  };
  dst.lsn = v.lsn;
  dst.timestamp = v.timestamp;
  dst.hlc = v.hlc;
  dst.txn_id.assign(v.txn_id);
  dst.op = v.op;
  dst.table.assign(v.table);
  copy(dst.key, v.has_key, v.key);
  copy(dst.before, v.has_before, v.before);
  copy(dst.after, v.has_after, v.after);
  dst.origin = v.origin;
}
}  // namespace

bool subscription::advance() {
  if (ended_) return false;
  while (next_ >= views_.size()) {
    if (fill(nullptr) != fill_status::got) {
      ended_ = true;
      return false;
    }
  }
  assign(current_, views_[next_++]);
  position_ = current_.lsn;
  handed_.store(handed_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // (one writer)
  handed_lsn_.store(position_, std::memory_order_relaxed);
  return true;
}

std::optional<wal_entry> subscription::next() {
  if (!advance()) return std::nullopt;
  return current_;
}

std::vector<wal_entry> subscription::next_batch() {
  if (batching_) return next_batch(*batching_);
  std::vector<wal_entry> out;
  if (ended_) return out;
  while (next_ >= views_.size()) {
    if (fill(nullptr) != fill_status::got) {
      ended_ = true;
      return out;
    }
  }
  take(out, views_.size() - next_);
  return out;
}

std::vector<wal_entry> subscription::next_batch(const batch_options& b) {
  std::vector<wal_entry> out;
  if (ended_) return out;
  const size_t max = std::max<uint32_t>(b.max_batch_size, 1);
  // The first entry may take as long as it takes; the batch's age counts from it.
  while (next_ >= views_.size()) {
    if (fill(nullptr) != fill_status::got) {
      ended_ = true;
      return out;
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + b.max_batch_age;
  out.reserve(std::min(max, size_t{4096}));
  for (;;) {
    take(out, std::min(max - out.size(), views_.size() - next_));
    if (out.size() >= max) break;
    // The batch has room: wait for more until its age is up (an ended range returns what was
    // gathered; the next call reports the end).
    auto st = fill(&deadline);
    if (st == fill_status::timeout) break;
    if (st == fill_status::ended) {
      ended_ = true;
      break;
    }
  }
  return out;
}

void subscription::take(std::vector<wal_entry>& out, size_t n) {
  if (n == 0) return;
  for (size_t i = 0; i < n; ++i) out.push_back(views_[next_++].to_entry());
  position_ = out.back().lsn;
  handed_.store(handed_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);  // (one writer)
  handed_lsn_.store(position_, std::memory_order_relaxed);
}

std::optional<capture_batch> wal_capturer::capture_next() {
  if (restart_) {
    restart_ = false;
    subscribe_options o;
    o.from_lsn = position_ ? position_ : opts_.from_lsn;
    position_ = o.from_lsn;
    o.filter = opts_.filter;
    o.include_transaction_control = opts_.include_transaction_control;
    o.batch_size = opts_.max_batch_size;
    o.max_buffer_size = std::max<uint32_t>(opts_.max_batch_size * 2, 64);
    o.stop_at_tail = opts_.stop_at_tail;
    auto s = cdc_handle(db_).subscribe(std::move(o));
    if (!s) {
      err_ = s.err();
      return std::nullopt;
    }
    sub_ = std::move(*s);
  }
  auto entries = sub_->next_batch(batch_options{opts_.max_batch_size, opts_.max_batch_age});
  if (entries.empty()) {
    err_ = sub_->err();
    return std::nullopt;
  }
  capture_batch b;
  b.batch_id = ++next_id_;
  b.start_lsn = entries.front().lsn;
  b.end_lsn = entries.back().lsn;
  b.entries = std::move(entries);
  return b;
}

void wal_capturer::set_position(uint64_t lsn) {
  if (lsn == position_) return;
  position_ = lsn;
  // A position other than where the stream is continues from there.
  if (sub_ && sub_->position() != lsn) {
    sub_->stop();
    restart_ = true;
  }
}

subscription_status wal_capturer::status() const {
  if (sub_) return sub_->status();
  subscription_status st;
  st.current_lsn = position_ ? position_ : opts_.from_lsn;
  return st;
}

void wal_capturer::stop() {
  if (sub_) sub_->stop();
}


namespace {

// The LSN after which a subscription starting at `from_time` begins: just before the BEGIN of
// the first transaction committed at or after it.
result<uint64_t> lsn_for_time(const std::string& wal_dir, int64_t t) {
  auto r = wal::reader::open(wal_dir);
  if (!r) return r.err();
  entry_view v;
  uint64_t begin = 0, last = 0;
  while ((*r)->next(v) == wal::reader::status::entry) {
    last = v.lsn;
    if (v.op == op_type::begin) begin = v.lsn;
    if (v.op == op_type::commit && v.timestamp >= t) return begin ? begin - 1 : v.lsn - 1;
  }
  if ((*r)->last_error()) return (*r)->last_error();
  return last;
}

}  // namespace

result<std::shared_ptr<actors::reader_config>> make_reader_config(cdc_handle& cdc, subscribe_options opts) {
  if (opts.max_buffer_size == 0 || opts.batch_size == 0)
    return error(ec::invalid_argument, "max_buffer_size and batch_size must be at least 1");
  auto cfg = std::make_shared<actors::reader_config>();
  cfg->wal_dir = cdc.db().wal_dir();
  // (database.hpp is public and untyped; the handle is the typed wal_writer_actor it spawned)
  cfg->writer = caf::actor_cast<actors::wal_tail_source_actor>(cdc.db().wal_writer());
  // (A close racing with this call is caught by the reader, which monitors the writer.)
  if (!cfg->writer) return error(ec::closed, "cannot subscribe: database " + cdc.db().dir() + " is closed");
  uint64_t from = opts.from_lsn;
  if (opts.from_time) {
    auto l = lsn_for_time(cfg->wal_dir, *opts.from_time);
    if (!l) return l.err();
    from = *l;
  }
  // An LSN that does not exist yet is an error (not a wait, not a wrap); LSN_NOT_FOUND up
  // front, with the oldest available LSN, unless from_oldest asks to skip what was compacted.
  if (auto e = check_lsn_not_beyond(from, cdc.db().durable_lsn(), "from_lsn")) return e;
  {
    auto r = wal::reader::open(cfg->wal_dir);
    if (!r) return r.err();
    auto oldest = (*r)->oldest_lsn();
    if (!oldest) return oldest.err();
    if (from + 1 < *oldest && opts.from_oldest) from = *oldest - 1;
    if (from + 1 < *oldest) {
      error e(ec::lsn_not_found, "cannot subscribe from lsn " + std::to_string(from) +
                                     ": the oldest lsn still in the WAL is " + std::to_string(*oldest));
      e.oldest_lsn = *oldest;
      return e;
    }
  }
  // An invalid row filter is an error now, not at the first event.
  if (auto e = check_where(cdc.db(), opts.where)) return e;
  cfg->start_lsn = from + 1;
  cfg->opts = std::move(opts);
  return cfg;
}

error check_where(database& db, const std::map<std::string, std::string>& where) {
  if (where.empty()) return {};
  filter_spec spec;
  spec.where = where;
  auto compiled = compile_where(spec, [&](const std::string& table) -> std::optional<std::vector<std::string>> {
    auto cols = db.query("SELECT * FROM " + detail::quote_ident(table) + " LIMIT 0");
    if (!cols) return std::nullopt;  // no such table (or view)
    return cols->columns;
  });
  return compiled ? error{} : compiled.err();
}

result<std::unique_ptr<subscription>> cdc_handle::subscribe(subscribe_options opts) {
  auto& sys = db_->owner().system();
  uint64_t from = opts.from_lsn;
  auto made = make_reader_config(*this, std::move(opts));
  if (!made) return made.err();
  auto cfg = *made;
  from = cfg->start_lsn - 1;
  auto p = std::make_unique<subscription::impl>();
  p->q = std::make_shared<shared_queue>();
  p->bridge = sys.spawn(bridge, p->q);
  cfg->consumer = p->bridge;
  p->reader = actors::spawn_subscription_reader(sys, cfg);
  caf::anon_send(p->bridge, watch_atom::value, actors::reader_control_actor{p->reader});
  p->db = db_;
  p->selection = cfg->opts;
  std::unique_ptr<subscription> s(new subscription(std::move(p)));
  s->position_ = from;
  s->handed_lsn_.store(from, std::memory_order_relaxed);
  s->p_->q->processed = s->p_->q->heartbeat = from;
  return s;
}

// ---- events ---------------------------------------------------------------------------------

std::string_view to_string(change_type t) noexcept {
  switch (t) {
    case change_type::insert: return "insert";
    case change_type::update: return "update";
    case change_type::del: return "delete";
  }
  return "unknown";
}

result<event<row>> to_event(const entry_view& e) {
  auto image = [&](bool present, std::string_view b) -> result<std::optional<row>> {
    if (!present) return std::optional<row>{};
    auto r = codec::decode_row(b);
    if (!r) {
      error err(ec::decode_error, "lsn " + std::to_string(e.lsn) + ": " + r.err().message());
      err.lsn = e.lsn;
      return err;
    }
    return std::optional<row>(std::move(*r));
  };
  switch (e.op) {
    case op_type::begin:
    case op_type::commit:
    case op_type::rollback: {
      transaction_event t;
      t.type = e.op == op_type::begin    ? transaction_event::kind::begin
               : e.op == op_type::commit ? transaction_event::kind::commit
                                         : transaction_event::kind::rollback;
      t.txn_id = e.txn_id;
      t.timestamp = e.timestamp;
      t.hlc = e.hlc;
      t.lsn = e.lsn;
      return event<row>(std::move(t));
    }
    case op_type::schema: {
      auto img = image(e.has_after, e.after);
      if (!img) return img.err();
      schema_change_event s;
      s.table = e.table;
      s.txn_id = e.txn_id;
      s.timestamp = e.timestamp;
      s.hlc = e.hlc;
      s.lsn = e.lsn;
      if (*img) {
        auto str = [&](const char* k) -> std::optional<std::string> {
          auto* v = (*img)->find(k);
          if (v && std::holds_alternative<std::string>(*v)) return std::get<std::string>(*v);
          return std::nullopt;
        };
        s.change_type = str("change_type").value_or("");
        s.column = str("column");
        s.old_column = str("old_column");
        s.old_type = str("old_type");
        s.new_type = str("new_type");
        s.sql = str("sql").value_or("");
        if (auto* v = (*img)->find("schema_version"); v && std::holds_alternative<int64_t>(*v))
          s.schema_version = std::get<int64_t>(*v);
      }
      return event<row>(std::move(s));
    }
    default: {
      change_event<row> c;
      c.id = std::to_string(e.lsn);
      c.type = e.op == op_type::insert ? change_type::insert : e.op == op_type::update ? change_type::update : change_type::del;
      c.table = e.table;
      c.txn_id = e.txn_id;
      c.timestamp = e.timestamp;
      c.hlc = e.hlc;
      c.lsn = e.lsn;
      if (e.has_key) c.key = bytes(e.key.begin(), e.key.end());
      c.origin = e.origin;
      auto after = image(e.has_after, e.after);
      if (!after) return after.err();
      auto before = image(e.has_before, e.before);
      if (!before) return before.err();
      c.data = std::move(*after);
      c.old_data = std::move(*before);
      return event<row>(std::move(c));
    }
  }
}

namespace {
// {"id":"<lsn>","type":"<type>"[,"table":...],"txnId":...,"timestamp":"<ISO>","lsn":<lsn>,"hlc":"<hlc>"
// (no closing brace)
void append_head(std::string& s, std::string_view id, std::string_view type, const std::string* table,
                 std::string_view txn_id, int64_t timestamp, uint64_t lsn, const hlc_stamp& hlc) {
  s += "{\"id\":";
  append_json_string(s, id);
  s += ",\"type\":\"";
  s += type;
  s += '"';
  if (table) {
    s += ",\"table\":";
    append_json_string(s, *table);
  }
  s += ",\"txnId\":";
  append_json_string(s, txn_id);
  s += ",\"timestamp\":\"";
  append_iso_time(s, timestamp);
  s += "\",\"lsn\":";
  s += std::to_string(lsn);
  s += ",\"hlc\":\"";
  s += to_string(hlc);
  s += '"';
}
void append_field(std::string& s, const char* name, const std::optional<std::string>& v) {
  if (!v) return;
  s += ",\"";
  s += name;
  s += "\":";
  append_json_string(s, *v);
}
}  // namespace

std::string to_json(const change_event<row>& e, const json_options& o) {
  std::string s;
  s.reserve(160 + (e.data ? e.data->size() * 24 : 0) + (e.old_data ? e.old_data->size() * 24 : 0));
  append_head(s, e.id, to_string(e.type), &e.table, e.txn_id, e.timestamp, e.lsn, e.hlc);
  if (e.data) {
    s += ",\"data\":";
    append_json(s, *e.data, o);
  }
  if (e.old_data) {
    s += ",\"oldData\":";
    append_json(s, *e.old_data, o);
  }
  if (e.origin == entry_origin::entered) s += ",\"origin\":\"entered\"";
  if (e.origin == entry_origin::left) s += ",\"origin\":\"left\"";
  s += '}';
  return s;
}

std::string to_json(const transaction_event& e) {
  std::string s;
  const char* type = e.type == transaction_event::kind::begin    ? "begin"
                     : e.type == transaction_event::kind::commit ? "commit"
                                                                 : "rollback";
  append_head(s, std::to_string(e.lsn), type, nullptr, e.txn_id, e.timestamp, e.lsn, e.hlc);
  s += '}';
  return s;
}

std::string to_json(const schema_change_event& e) {
  std::string s;
  append_head(s, std::to_string(e.lsn), "schema_change", &e.table, e.txn_id, e.timestamp, e.lsn, e.hlc);
  s += ",\"changeType\":";
  append_json_string(s, e.change_type);
  append_field(s, "column", e.column);
  append_field(s, "oldColumn", e.old_column);
  append_field(s, "oldType", e.old_type);
  append_field(s, "newType", e.new_type);
  s += ",\"schemaVersion\":";
  s += std::to_string(e.schema_version);
  if (!e.sql.empty()) {  // (withheld by a column mask)
    s += ",\"sql\":";
    append_json_string(s, e.sql);
  }
  s += '}';
  return s;
}

std::string to_json(const event<row>& e, const json_options& o) {
  return std::visit([&](const auto& ev) -> std::string {
    if constexpr (std::is_same_v<std::decay_t<decltype(ev)>, change_event<row>>) return to_json(ev, o);
    else return to_json(ev);
  }, e);
}

}  // namespace dosql::cdc
