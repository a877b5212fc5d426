#include "cache_manager.hpp"

#include <cstdio>
#include <set>

namespace dosql_cache {

namespace cdc = dosql::cdc;
using dosql::ec;

dosql::row row_of(const dosql::query_result& q, size_t i) {
  dosql::row r;
  r.columns = q.columns;
  r.values = q.rows.at(i);
  return r;
}

// ---- cache_base ------------------------------------------------------------------------------

cache_base::~cache_base() { stop(); }

void cache_base::stop() {
  if (inv_) inv_->stop();
}

cache_stats cache_base::stats() const {
  return {hits_.load(), misses_.load(), stored_.load(), refused_.load(), bypassed_.load(), errors_.load()};
}

void cache_base::backend_failed(const error& e) {
  ++errors_;
  const int64_t now = steady_ms();
  int64_t last = last_report_.load();
  if (now - last >= 1000 && last_report_.compare_exchange_strong(last, now))
    std::fprintf(stderr, "dosql-cache: %s: %s (reading around the cache)\n", b_->name().c_str(), e.to_string().c_str());
}

result<std::optional<std::string>> cache_base::read_through(const std::string& key, const std::vector<std::string>& tags,
                                                            const fetcher& f, std::optional<ms> ttl) {
  auto fetch = [&]() -> result<std::pair<std::optional<std::string>, uint64_t>> {
    auto snap = db_->snapshot();
    if (!snap) return snap.err();
    auto v = f(*snap);
    if (!v) return v.err();
    return std::make_pair(std::move(*v), snap->lsn());
  };
  if (!inv_ || !inv_->caught_up()) {  // the cache may still hold what a missed commit changed
    ++bypassed_;
    auto v = fetch();
    if (!v) return v.err();
    return std::move(v->first);
  }
  auto c = b_->get(key);
  if (c && *c) {
    ++hits_;
    return std::optional<std::string>(std::move((*c)->value));
  }
  if (!c) {
    backend_failed(c.err());
    ++bypassed_;
    auto v = fetch();
    if (!v) return v.err();
    return std::move(v->first);
  }
  ++misses_;
  auto v = fetch();
  if (!v) return v.err();
  if (v->first) {
    auto r = b_->fill(key, *v->first, v->second, ttl.value_or(default_ttl_), tags);
    if (!r) {
      backend_failed(r.err());
    } else if (*r == fill_outcome::stored) {
      ++stored_;
    } else {
      ++refused_;
      // Redis came back empty, its markers lost: re-arm above every commit there is (one the
      // invalidator applied to the lost instance may not be in applied_lsn() yet).
      if (*r == fill_outcome::no_epoch) (void)b_->arm(db_->last_lsn());
    }
  }
  return std::move(v->first);
}

// ---- cache_manager -----------------------------------------------------------------------------

result<std::unique_ptr<cache_manager>> cache_manager::start(std::shared_ptr<dosql::database> db, std::shared_ptr<backend> b,
                                                            cache_config cfg) {
  for (auto& [table, t] : cfg.tables)
    if (t.key_pattern.empty()) return error(ec::invalid_argument, "cache config: table " + table + " has no key_pattern");
  cfg.invalidation.tables.clear();
  for (auto& [table, t] : cfg.tables) cfg.invalidation.tables.push_back(table);
  std::unique_ptr<cache_manager> m(new cache_manager(db, std::move(b), std::move(cfg)));
  const cache_manager* self = m.get();
  auto inv = invalidator::start(db, m->b_, [self](const cdc::change_event<dosql::row>& ev, std::vector<op>& out) {
    self->plan(ev, out);
  }, m->cfg_.invalidation);
  if (!inv) return inv.err();
  m->inv_ = std::move(*inv);
  return m;
}

void cache_manager::plan(const cdc::change_event<dosql::row>& ev, std::vector<op>& out) const {
  auto it = cfg_.tables.find(ev.table);
  if (it == cfg_.tables.end()) return;
  const table_config& t = it->second;
  const ms ttl = t.ttl.value_or(cfg_.default_ttl);
  std::set<std::string> seen;  // one op per key and change
  auto add = [&](const std::string& key, bool may_put) {
    if (!seen.insert(key).second) return;
    if (!key.empty() && key.back() == '*') {
      out.push_back(op{op::kind::del_prefix, key.substr(0, key.size() - 1), "", ms{0}});
    } else if (may_put) {
      out.push_back(op{op::kind::put, key, dosql::to_json(*ev.data), ttl});
    } else {
      out.push_back(op{op::kind::del_key, key, "", ms{0}});
    }
  };
  // The new image first: its primary key is written (update_on_change) or deleted; then every
  // other key either image names (an UPDATE that moved the key column, or a changed email,
  // invalidates the old key too).
  if (ev.data) {
    add(interpolate(t.key_pattern, *ev.data), t.update_on_change && ev.type != cdc::change_type::del);
    for (auto& p : t.invalidate_patterns) add(interpolate(p, *ev.data), false);
  }
  if (ev.old_data) {
    add(interpolate(t.key_pattern, *ev.old_data), false);
    for (auto& p : t.invalidate_patterns) add(interpolate(p, *ev.old_data), false);
  }
}

// ---- tagged_cache_manager ----------------------------------------------------------------------

result<bool> tagged_cache_manager::set(const std::string& key, const std::string& value, const std::vector<std::string>& tags,
                                       std::optional<ms> ttl, uint64_t as_of_lsn) {
  auto r = b_->fill(key, value, as_of_lsn, ttl.value_or(default_ttl_), tags);
  if (!r) return r.err();
  if (*r == fill_outcome::no_epoch) (void)b_->arm(db_->last_lsn());
  return *r == fill_outcome::stored;
}

result<std::optional<std::string>> tagged_cache_manager::get(const std::string& key) {
  if (inv_ && !inv_->caught_up()) return std::optional<std::string>();
  auto c = b_->get(key);
  if (!c) return c.err();
  if (!*c) {
    ++misses_;
    return std::optional<std::string>();
  }
  ++hits_;
  return std::optional<std::string>(std::move((*c)->value));
}

error tagged_cache_manager::invalidate_by_tag(const std::string& tag) {
  return b_->apply(db_->last_lsn(), {op{op::kind::del_tag, tag, "", ms{0}}});
}

error tagged_cache_manager::start_cdc_invalidation(std::map<std::string, tag_fn> mapping, invalidator_options o) {
  if (inv_) return error(ec::invalid_argument, "start_cdc_invalidation: already started");
  mapping_ = std::move(mapping);
  o.tables.clear();
  for (auto& [table, fn] : mapping_) o.tables.push_back(table);
  auto inv = invalidator::start(db_, b_, [this](const cdc::change_event<dosql::row>& ev, std::vector<op>& out) {
    auto it = mapping_.find(ev.table);
    if (it == mapping_.end()) return;
    for (auto& tag : it->second(ev)) out.push_back(op{op::kind::del_tag, tag, "", ms{0}});
  }, std::move(o));
  if (!inv) return inv.err();
  inv_ = std::move(*inv);
  return {};
}

}  // namespace dosql_cache
