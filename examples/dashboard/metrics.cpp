// The dashboard's metrics state and its consumer actor (see metrics.hpp).
#include "metrics.hpp"

#include <caf/all.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace dashboard {

namespace cdc = dosql::cdc;
using dosql::error;
using dosql::value;

namespace {

int type_rank(const value& v) {
  switch (v.index()) {
    case 0: return 0;           // NULL
    case 1: case 2: return 1;   // INTEGER, REAL
    case 3: return 2;           // TEXT
    default: return 3;          // BLOB
  }
}

template <class T>
int three_way(const T& a, const T& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

const value* column(const dosql::row& r, std::string_view name) { return r.find(name); }

dosql::result<order> order_of(std::string_view image, uint64_t lsn) {
  auto r = dosql::codec::decode_row(image);
  if (!r) return error(dosql::ec::decode_error, "orders row image at lsn " + std::to_string(lsn) + ": " + r.err().message()).at(lsn);
  order o;
  auto take = [&](const char* name, value& out) {
    if (const value* v = column(*r, name)) out = *v;
  };
  take("id", o.id);
  take("user_id", o.user_id);
  take("total", o.total);
  take("status", o.status);
  take("created_at", o.created_at);
  return o;
}

}  // namespace

std::string status_key(const value& v) {
  if (dosql::is_null(v)) return null_status;
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  return dosql::to_string(v);
}

int compare_sql(const value& a, const value& b) {
  int ra = type_rank(a), rb = type_rank(b);
  if (ra != rb) return three_way(ra, rb);
  switch (ra) {
    case 0: return 0;
    case 1: {
      if (a.index() == 1 && b.index() == 1) return three_way(std::get<int64_t>(a), std::get<int64_t>(b));
      auto num = [](const value& v) {
        return v.index() == 1 ? static_cast<long double>(std::get<int64_t>(v)) : static_cast<long double>(std::get<double>(v));
      };
      return three_way(num(a), num(b));
    }
    case 2: {
      int c = std::get<std::string>(a).compare(std::get<std::string>(b));
      return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    default: {
      const auto& x = std::get<dosql::bytes>(a);
      const auto& y = std::get<dosql::bytes>(b);
      size_t n = std::min(x.size(), y.size());
      int c = n ? std::memcmp(x.data(), y.data(), n) : 0;
      if (c != 0) return c < 0 ? -1 : 1;
      return three_way(x.size(), y.size());
    }
  }
}

int64_t micro_units(const value& total) {
  // (beyond +-9.2e12 a micro-unit count overflows int64: such totals count as 0)
  auto of_double = [](double d) -> int64_t { return std::isfinite(d) && std::fabs(d) < 9.2e12 ? std::llround(d * 1e6) : 0; };
  int64_t units = 0;
  switch (total.index()) {
    case 1: return __builtin_mul_overflow(std::get<int64_t>(total), int64_t{1000000}, &units) ? 0 : units;
    case 2: return of_double(std::get<double>(total));
    case 3: return of_double(std::strtod(std::get<std::string>(total).c_str(), nullptr));
    default: return 0;
  }
}

bool metrics_state::newer_first::operator()(const key& a, const key& b) const {
  int c = compare_sql(a.created_at, b.created_at);
  if (c != 0) return c > 0;
  return compare_sql(a.id, b.id) > 0;
}

void metrics_state::count(const order& o, int sign) {
  total_ += sign;
  revenue_units_ += static_cast<__int128>(sign) * micro_units(o.total);
  auto k = status_key(o.status);
  auto& n = by_status_[k];
  n += sign;
  if (n == 0) by_status_.erase(k);
}

void metrics_state::remove(const order& o) {
  count(o, -1);
  top_.erase(key{o.created_at, o.id});  // still a prefix: the rows above the removed one
}

void metrics_state::add(order o) {
  const bool complete = top_.size() == static_cast<size_t>(total_);  // the prefix holds every row
  count(o, +1);
  key k{o.created_at, o.id};
  if (complete || (!top_.empty() && newer_first{}(k, std::prev(top_.end())->first))) {
    top_.emplace(std::move(k), std::move(o));  // sorts above the prefix's last: prefix + 1
    while (top_.size() > keep_) top_.erase(std::prev(top_.end()));
  }
}

error metrics_state::apply(const dosql::entry_view& e) {
  auto image = [&](bool has, std::string_view bytes, const char* what) -> dosql::result<order> {
    if (!has)
      return error(dosql::ec::decode_error, "orders " + std::string(dosql::to_string(e.op)) + " at lsn " +
                                                std::to_string(e.lsn) + " has no " + what + " image")
          .at(e.lsn);
    return order_of(bytes, e.lsn);
  };
  switch (e.op) {
    case dosql::op_type::insert: {
      auto o = image(e.has_after, e.after, "after");
      if (!o) return o.err();
      add(std::move(*o));
      ++inserts_;
      return {};
    }
    case dosql::op_type::update: {
      auto before = image(e.has_before, e.before, "before");
      if (!before) return before.err();
      auto after = image(e.has_after, e.after, "after");
      if (!after) return after.err();
      remove(*before);
      add(std::move(*after));
      ++updates_;
      return {};
    }
    case dosql::op_type::del: {
      auto before = image(e.has_before, e.before, "before");
      if (!before) return before.err();
      remove(*before);
      ++deletes_;
      return {};
    }
    default: return {};
  }
}

bool metrics_state::needs_reload() const {
  return stale_ || (top_.size() < recent_ && top_.size() < static_cast<size_t>(total_));
}

error metrics_state::load(dosql::read_snapshot& snap) {
  auto groups = snap.query("SELECT status, COUNT(*), TOTAL(total) FROM orders GROUP BY status");
  if (!groups) return groups.err();
  auto newest = snap.query("SELECT id, user_id, total, status, created_at FROM orders ORDER BY created_at DESC, id DESC LIMIT ?",
                           {static_cast<int64_t>(keep_)});
  if (!newest) return newest.err();
  total_ = 0;
  revenue_units_ = 0;
  by_status_.clear();
  top_.clear();
  for (auto& r : groups->rows) {
    int64_t n = std::get<int64_t>(r[1]);
    total_ += n;
    revenue_units_ += micro_units(r[2]);
    by_status_[status_key(r[0])] = n;
  }
  for (auto& r : newest->rows) {
    order o{r[0], r[1], r[2], r[3], r[4]};
    key k{o.created_at, o.id};
    top_.emplace(std::move(k), std::move(o));
  }
  lsn_ = snap.lsn();
  commit_time_ = 0;
  stale_ = false;
  ++reloads_;
  return {};
}

std::shared_ptr<const metrics> metrics_state::publish() const {
  auto m = std::make_shared<metrics>();
  m->total_orders = total_;
  m->total_revenue = static_cast<double>(revenue_units_) / 1e6;
  m->orders_by_status = by_status_;
  for (auto it = top_.begin(); it != top_.end() && m->recent_orders.size() < recent_; ++it)
    m->recent_orders.push_back(it->second);
  m->lsn = lsn_;
  m->commit_time = commit_time_;
  m->inserts_seen = inserts_;
  m->updates_seen = updates_;
  m->deletes_seen = deletes_;
  m->reloads = reloads_;
  return m;
}

int64_t commit_time_of(const std::shared_ptr<dosql::database>& db, uint64_t lsn) {
  if (lsn == 0) return 0;
  cdc::subscribe_options o;
  o.from_lsn = lsn - 1;
  o.include_uncommitted = true;  // the entry at `lsn` itself, whatever precedes it
  o.include_transaction_control = true;
  o.stop_at_tail = true;
  o.batch_size = 16;
  o.max_buffer_size = 16;
  auto sub = cdc::create_cdc(db).subscribe(o);
  if (!sub) return 0;
  int64_t t = 0;
  while (auto e = (*sub)->next()) {
    if (e->lsn == lsn) t = e->timestamp;
    if (e->lsn >= lsn) break;
  }
  (*sub)->stop();
  return t;
}

// ---- the consumer actor ---------------------------------------------------------------------

namespace {

struct feed_ctx {
  std::shared_ptr<dosql::database> db;
  metrics_feed::publish_fn publish;
  metrics_state initial;
};

struct consumer_state {
  metrics_state m;
  std::vector<dosql::entry_view> views;
  static inline const char* name = "dashboard_metrics";
};

// At a COMMIT: re-read the state if the recent list is unknown (the snapshot is at or past
// this commit; what it holds is skipped below), then publish.
error publish_at(consumer_state& st, feed_ctx& ctx, const dosql::entry_view& commit) {
  st.m.commit(commit.lsn, commit.timestamp);
  if (st.m.needs_reload()) {
    uint64_t at = 0;
    {
      auto snap = ctx.db->snapshot();
      if (!snap) return snap.err();
      if (snap->lsn() < commit.lsn)
        return error(dosql::ec::invalid_argument, "snapshot at lsn " + std::to_string(snap->lsn()) +
                                                      " is behind the delivered commit " + std::to_string(commit.lsn))
            .at(commit.lsn);
      if (auto e = st.m.load(*snap)) return e.at(commit.lsn);
      at = snap->lsn();
    }  // (the read transaction ends before the WAL is read)
    st.m.set_commit_time(at == commit.lsn ? commit.timestamp : commit_time_of(ctx.db, at));
  }
  ctx.publish(st.m.publish());
  return {};
}

cdc::consumer_actor::behavior_type consumer_fn(cdc::consumer_actor::stateful_pointer<consumer_state> self,
                                               std::shared_ptr<feed_ctx> ctx) {
  self->state.m = std::move(ctx->initial);
  self->set_down_handler([=](caf::down_msg&) { self->quit(); });  // the reader stopped
  return {
      [=](cdc::batch_atom, const cdc::batch& b) -> caf::result<uint64_t> {
        auto& st = self->state;
        if (auto e = cdc::decode_batch(b, st.views)) return cdc::to_caf(e);
        // Publish once per batch, at its last COMMIT (a consistent point); entries after it
        // belong to a transaction whose COMMIT comes in the next batch.
        size_t last_commit = st.views.size();
        for (size_t i = st.views.size(); i-- > 0;)
          if (st.views[i].op == dosql::op_type::commit) {
            last_commit = i;
            break;
          }
        for (size_t i = 0; i < st.views.size(); ++i) {
          const auto& v = st.views[i];
          if (v.lsn <= st.m.lsn()) continue;  // the state's snapshot holds it already
          error e;
          if (dosql::is_row_change(v.op)) {
            e = st.m.apply(v);
          } else if (v.op == dosql::op_type::schema) {
            st.m.invalidate();
          } else if (v.op == dosql::op_type::commit) {
            if (i == last_commit)
              e = publish_at(st, *ctx, v);
            else
              st.m.commit(v.lsn, v.timestamp);
          }
          if (e) return cdc::to_caf(e);
        }
        return b.last_lsn;
      },
      [=](cdc::end_atom, const cdc::subscription_end&) { self->quit(); },
      [=](cdc::heartbeat_atom, uint64_t) {},
      [=](cdc::watch_atom, const cdc::reader_control_actor& reader) { self->monitor(reader); },
  };
}

}  // namespace

dosql::result<std::unique_ptr<metrics_feed>> metrics_feed::start(std::shared_ptr<dosql::database> db, publish_fn publish,
                                                                options opts) {
  metrics_state st(opts.recent, opts.keep);
  uint64_t from = 0;
  {
    auto snap = db->snapshot();
    if (!snap) return snap.err();
    if (auto e = st.load(*snap)) return e;
    from = snap->lsn();
  }
  st.set_commit_time(commit_time_of(db, from));
  publish(st.publish());
  auto ctx = std::make_shared<feed_ctx>(feed_ctx{db, std::move(publish), std::move(st)});
  std::unique_ptr<metrics_feed> f(new metrics_feed());
  f->actor_ = db->owner().system().spawn<caf::detached>(consumer_fn, ctx);
  cdc::subscribe_options o;
  o.from_lsn = from;
  o.filter.tables = {"orders"};
  o.include_transaction_control = true;
  o.max_buffer_size = opts.max_buffer_size;
  o.batch_size = opts.batch_size;
  auto h = cdc::create_cdc(db);
  auto sub = cdc::subscribe_actor(h, f->actor_, o);
  if (!sub) {
    caf::anon_send_exit(f->actor_, caf::exit_reason::user_shutdown);
    return sub.err();
  }
  f->sub_ = std::move(*sub);
  caf::anon_send(f->actor_, cdc::watch_atom::value, f->sub_.reader());
  f->system_ = &db->owner().system();
  return f;
}

void metrics_feed::stop() {
  if (!actor_) return;
  sub_.stop();
  // Wait for the actor to end: `publish` is never called after stop() returns.
  caf::scoped_actor self{*system_};
  self->monitor(actor_);
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  self->receive([](const caf::down_msg&) {}, caf::after(std::chrono::seconds(30)) >> [] {});
  actor_ = nullptr;
}

metrics_feed::~metrics_feed() { stop(); }

}  // namespace dashboard
