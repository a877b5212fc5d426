// The embedded in-memory KV: one ordered map (prefix deletes are a range), TTLs checked on
// read and swept by maintain(), markers as described in backend.hpp, all under one mutex.
#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "backend.hpp"

namespace dosql_cache {

int64_t steady_ms() {
  return std::chrono::duration_cast<ms>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

class memory_backend final : public backend {
 public:
  explicit memory_backend(clock_fn clock) : clock_(clock ? std::move(clock) : clock_fn(steady_ms)) {}
  std::string name() const override { return "memory"; }

  result<std::optional<cached>> get(const std::string& key) override {
    std::lock_guard<std::mutex> g(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return std::optional<cached>();
    if (it->second.expires_at <= clock_() || it->second.c.lsn < flushed_) {
      erase(it);
      return std::optional<cached>();
    }
    return std::optional<cached>(it->second.c);
  }

  result<fill_outcome> fill(const std::string& key, const std::string& value, uint64_t lsn, ms ttl,
                            const std::vector<std::string>& tags) override {
    std::lock_guard<std::mutex> g(mu_);
    if (lsn < wm_ || lsn < flushed_) return fill_outcome::stale;
    if (auto m = key_markers_.find(key); m != key_markers_.end() && m->second > lsn) return fill_outcome::stale;
    for (auto& [p, l] : prefix_markers_)
      if (l > lsn && starts_with(key, p)) return fill_outcome::stale;
    for (auto& t : tags)
      if (auto m = tag_markers_.find(t); m != tag_markers_.end() && m->second > lsn) return fill_outcome::stale;
    const int64_t now = clock_();
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.expires_at > now && it->second.c.lsn > lsn) return fill_outcome::stale;
    store(key, value, lsn, now + ttl.count(), tags);
    return fill_outcome::stored;
  }

  error apply(uint64_t c, const std::vector<op>& ops) override {
    std::lock_guard<std::mutex> g(mu_);
    const int64_t now = clock_();
    for (const op& o : ops) {
      switch (o.k) {
        case op::kind::del_key:
          mark_key(o.key, c);
          if (auto it = entries_.find(o.key); it != entries_.end()) erase(it);
          break;
        case op::kind::put: {
          mark_key(o.key, c);
          auto it = entries_.find(o.key);
          if (it != entries_.end() && it->second.expires_at > now && it->second.c.lsn > c) break;  // newer
          std::vector<std::string> tags;
          if (it != entries_.end()) tags = it->second.tags;
          store(o.key, o.value, c, now + o.ttl.count(), tags);
          break;
        }
        case op::kind::del_prefix: {
          auto& m = prefix_markers_[o.key];
          m = std::max(m, c);
          for (auto it = entries_.lower_bound(o.key); it != entries_.end() && starts_with(it->first, o.key);)
            it = erase(it);
          break;
        }
        case op::kind::del_tag: {
          auto& m = tag_markers_[o.key];
          m = std::max(m, c);
          auto ts = tag_sets_.find(o.key);
          if (ts == tag_sets_.end()) break;
          auto keys = std::move(ts->second);
          tag_sets_.erase(ts);
          for (auto& k : keys)
            if (auto it = entries_.find(k); it != entries_.end()) erase(it);
          break;
        }
        case op::kind::flush:
          flushed_ = std::max(flushed_, c);
          wm_ = std::max(wm_, c);
          entries_.clear();
          tag_sets_.clear();
          key_markers_.clear();
          key_order_.clear();
          prefix_markers_.clear();
          tag_markers_.clear();
          break;
      }
    }
    return {};
  }

  result<uint64_t> prune(uint64_t w, size_t max_markers) override {
    std::lock_guard<std::mutex> g(mu_);
    wm_ = std::max(wm_, w);
    auto pop_front = [&] {
      auto [l, k] = std::move(key_order_.front());
      key_order_.pop_front();
      if (auto m = key_markers_.find(k); m != key_markers_.end() && m->second == l) key_markers_.erase(m);
    };
    while (!key_order_.empty() && key_order_.front().first <= wm_) pop_front();
    while (key_markers_.size() > max_markers && !key_order_.empty()) {
      wm_ = std::max(wm_, key_order_.front().first);
      pop_front();
    }
    while (!key_order_.empty() && key_order_.front().first <= wm_) pop_front();
    std::erase_if(prefix_markers_, [&](const auto& kv) { return kv.second <= wm_; });
    std::erase_if(tag_markers_, [&](const auto& kv) { return kv.second <= wm_; });
    return wm_;
  }

  error arm(uint64_t) override { return {}; }  // an embedded KV never loses its markers alone

  result<size_t> marker_count() override {
    std::lock_guard<std::mutex> g(mu_);
    return key_markers_.size() + prefix_markers_.size() + tag_markers_.size();
  }

  void maintain() override {
    std::lock_guard<std::mutex> g(mu_);
    const int64_t now = clock_();
    if (now - last_sweep_ < 1000) return;
    last_sweep_ = now;
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second.expires_at <= now)
        it = erase(it);
      else
        ++it;
    }
    std::erase_if(tag_sets_, [](const auto& kv) { return kv.second.empty(); });
  }

 private:
  struct entry {
    cached c;
    int64_t expires_at = 0;
    std::vector<std::string> tags;
  };
  using map_t = std::map<std::string, entry, std::less<>>;

  map_t::iterator erase(map_t::iterator it) {
    for (auto& t : it->second.tags)
      if (auto ts = tag_sets_.find(t); ts != tag_sets_.end()) ts->second.erase(it->first);
    return entries_.erase(it);
  }
  void store(const std::string& key, const std::string& value, uint64_t lsn, int64_t expires_at,
             const std::vector<std::string>& tags) {
    auto& e = entries_[key];
    for (auto& t : e.tags)
      if (std::find(tags.begin(), tags.end(), t) == tags.end())
        if (auto ts = tag_sets_.find(t); ts != tag_sets_.end()) ts->second.erase(key);
    e.c.value = value;
    e.c.lsn = lsn;
    e.expires_at = expires_at;
    e.tags = tags;
    for (auto& t : tags) tag_sets_[t].insert(key);
  }
  void mark_key(const std::string& key, uint64_t c) {
    auto& m = key_markers_[key];
    if (m >= c) return;
    m = c;
    key_order_.emplace_back(c, key);
  }

  clock_fn clock_;
  std::mutex mu_;
  map_t entries_;
  std::unordered_map<std::string, std::set<std::string>> tag_sets_;
  std::unordered_map<std::string, uint64_t> key_markers_;
  std::deque<std::pair<uint64_t, std::string>> key_order_;  // increasing LSNs: pruned from the front
  std::map<std::string, uint64_t> prefix_markers_, tag_markers_;
  uint64_t wm_ = 0, flushed_ = 0;
  int64_t last_sweep_ = 0;
};

}  // namespace

std::shared_ptr<backend> make_memory_backend(clock_fn clock) { return std::make_shared<memory_backend>(std::move(clock)); }

}  // namespace dosql_cache
