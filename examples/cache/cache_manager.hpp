// The guide's CacheManager and TaggedCacheManager on dosql, with one guarantee the guide's
// lacks: once the invalidator has applied a commit (applied_lsn() >= its LSN; wait_for(lsn)),
// no read through the manager returns a value older than that commit, including a value
// from a read-through fill that read the database before the commit and finished after its
// invalidation (the fill carries its snapshot's LSN and the backend refuses it; backend.hpp).
//
// Reads go around the cache (straight to a snapshot, nothing stored) while the invalidator
// has not applied the backlog it found at start (after a restart), and while the backend
// fails (Redis down): the reader gets the database's value and the failure is counted.
#pragma once

#include <atomic>
#include <map>
#include <optional>

#include "invalidator.hpp"

namespace dosql_cache {

/// The guide's TableCacheConfig.
struct table_config {
  std::string key_pattern;                       ///< `user:$id`
  std::optional<ms> ttl;                         ///< default: cache_config::default_ttl
  std::vector<std::string> invalidate_patterns;  ///< `user:email:$email`; trailing `*`: a prefix
  bool update_on_change = false;                 ///< write the new row's JSON instead of deleting
};

/// The guide's CacheConfig (the KV is the backend given to the manager).
struct cache_config {
  ms default_ttl{std::chrono::hours(1)};
  std::map<std::string, table_config> tables;
  invalidator_options invalidation;  ///< its `tables` is filled from `tables`
};

/// Reads the value from a snapshot of the database: the JSON text to cache, or nullopt (no
/// row: returned, not cached).
using fetcher = std::function<result<std::optional<std::string>>(dosql::read_snapshot&)>;

struct cache_stats {
  uint64_t hits = 0, misses = 0;
  uint64_t fills_stored = 0;
  uint64_t fills_refused = 0;   ///< stale fills the backend refused (or before it was re-armed)
  uint64_t bypassed = 0;        ///< reads around the cache (not caught up, backend failing)
  uint64_t backend_errors = 0;
};

/// What both managers share: the backend, the database, the read-through path.
class cache_base {
 public:
  cache_base(std::shared_ptr<dosql::database> db, std::shared_ptr<backend> b, ms default_ttl)
      : db_(std::move(db)), b_(std::move(b)), default_ttl_(default_ttl) {}
  virtual ~cache_base();
  cache_stats stats() const;
  backend& store() { return *b_; }
  /// The invalidator (null before it started).
  invalidator* invalidation() { return inv_.get(); }
  /// See invalidator::wait_for.
  bool wait_for(uint64_t lsn, ms timeout = ms(10000)) const { return inv_ && inv_->wait_for(lsn, timeout); }
  uint64_t applied_lsn() const { return inv_ ? inv_->applied_lsn() : 0; }
  bool caught_up() const { return inv_ && inv_->caught_up(); }
  /// Stops the invalidator (reads then go around the cache).
  void stop();

 protected:
  result<std::optional<std::string>> read_through(const std::string& key, const std::vector<std::string>& tags,
                                                  const fetcher& f, std::optional<ms> ttl);
  void backend_failed(const error& e);
  std::shared_ptr<dosql::database> db_;
  std::shared_ptr<backend> b_;
  ms default_ttl_;
  std::shared_ptr<invalidator> inv_;
  std::atomic<uint64_t> hits_{0}, misses_{0}, stored_{0}, refused_{0}, bypassed_{0}, errors_{0};
  std::atomic<int64_t> last_report_{0};
};

class cache_manager : public cache_base {
 public:
  /// Starts the invalidator (the guide's startInvalidationConsumer) on `cfg.tables`; reads are
  /// cached once it caught up (wait_caught_up()).
  ~cache_manager() override { stop(); }  // before cfg_ goes: the invalidator plans with it
  static result<std::unique_ptr<cache_manager>> start(std::shared_ptr<dosql::database> db, std::shared_ptr<backend> b,
                                                      cache_config cfg);
  /// Read-through (the guide's get(key, fetcher, ttl)).
  result<std::optional<std::string>> get(const std::string& key, const fetcher& f, std::optional<ms> ttl = {}) {
    return read_through(key, {}, f, ttl);
  }
  bool wait_caught_up(ms timeout) const { return inv_ && inv_->wait_caught_up(timeout); }
  /// The ops of one change under this configuration (what the invalidator applies).
  void plan(const dosql::cdc::change_event<dosql::row>& ev, std::vector<op>& out) const;
  const cache_config& config() const { return cfg_; }

 private:
  cache_manager(std::shared_ptr<dosql::database> db, std::shared_ptr<backend> b, cache_config cfg)
      : cache_base(std::move(db), std::move(b), cfg.default_ttl), cfg_(std::move(cfg)) {}
  cache_config cfg_;
};

class tagged_cache_manager : public cache_base {
 public:
  tagged_cache_manager(std::shared_ptr<dosql::database> db, std::shared_ptr<backend> b, ms default_ttl = std::chrono::hours(1))
      : cache_base(std::move(db), std::move(b), default_ttl) {}
  ~tagged_cache_manager() override { stop(); }  // before mapping_ goes
  /// Stores `value` computed from the database as of `as_of_lsn` (e.g. read_snapshot::lsn())
  /// with its tags: refused (false) if a tag or the key was invalidated after it.
  result<bool> set(const std::string& key, const std::string& value, const std::vector<std::string>& tags,
                   std::optional<ms> ttl, uint64_t as_of_lsn);
  result<std::optional<std::string>> get(const std::string& key);
  /// Read-through with tags.
  result<std::optional<std::string>> get(const std::string& key, const std::vector<std::string>& tags, const fetcher& f,
                                         std::optional<ms> ttl = {}) {
    return read_through(key, tags, f, ttl);
  }
  /// Deletes every key stored with `tag`; fills of it read before the database's current
  /// last LSN are refused.
  error invalidate_by_tag(const std::string& tag);
  /// The guide's startCDCInvalidation: per table, the tags a change invalidates.
  using tag_fn = std::function<std::vector<std::string>(const dosql::cdc::change_event<dosql::row>&)>;
  error start_cdc_invalidation(std::map<std::string, tag_fn> mapping, invalidator_options o = {});

 private:
  std::map<std::string, tag_fn> mapping_;
};

/// A query result row as a dosql::row (column names and values), for `to_json`.
dosql::row row_of(const dosql::query_result& q, size_t i);

}  // namespace dosql_cache
