// The cache's storage: one interface, two implementations (an embedded in-memory KV with TTL,
// the default, and Redis through hiredis).
//
// Every cached value carries the LSN of the database state it reflects (its version). The
// backend keeps, beside the values, invalidation markers: for a key, a key prefix or a tag,
// the commit LSN of the last change that invalidated it. Both sides are atomic per call (the
// in-memory KV under one mutex, Redis in Lua scripts), which is what rules out stale fills:
//
//  - fill(key, value, lsn): stores the value read at `lsn` unless a newer change already
//    invalidated the key (a key marker, a prefix marker covering the key, or a tag marker of
//    one of its tags above `lsn`), the entry present is newer, `lsn` is below the low
//    watermark (markers at or below it were pruned), or below the last flush.
//  - apply(commit_lsn, ops): the invalidator's side, in commit order: records the markers and
//    deletes (or, update_on_change, writes) in one atomic step; a prefix is then deleted by
//    SCAN (Redis: never KEYS), after its marker is in place, so a fill racing the scan is
//    either refused (read before) or fresh (read after).
//  - get(key): a value whose version is below the last flush is a miss.
//
// Bounded memory: markers are kept only above a low watermark W. A fill read below W is
// refused whatever its key (a missed caching, never a stale value), so every marker <= W is
// redundant and is removed when W rises (prune()). The invalidator raises W to the commit it
// applied `marker_max_age` ago and far enough that at most `max_markers` remain.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <dosql/error.hpp>

namespace dosql_cache {

using dosql::error;
using dosql::result;
using ms = std::chrono::milliseconds;

/// One effect of a committed transaction on the cache.
struct op {
  enum class kind : uint8_t {
    del_key,     ///< delete `key`; fills read before the commit are refused
    put,         ///< update_on_change: write `value` at the commit's LSN (unless a newer one is there)
    del_prefix,  ///< delete every key starting with `key` (a pattern's trailing `*`)
    del_tag,     ///< delete every key stored with tag `key`
    flush,       ///< everything older than the commit is void (schema change, lost history)
  } k = kind::del_key;
  std::string key;
  std::string value;  ///< put
  ms ttl{0};          ///< put
};

struct cached {
  std::string value;
  uint64_t lsn = 0;  ///< the version: the commit LSN of the state it reflects
};

enum class fill_outcome : uint8_t {
  stored,
  stale,     ///< a change after the read already invalidated the key (or a newer value is there)
  no_epoch,  ///< the backend lost its markers (Redis restarted empty): refused until re-armed
};

class backend {
 public:
  virtual ~backend() = default;
  virtual std::string name() const = 0;
  /// The value, or nullopt (absent, expired, or older than the last flush).
  virtual result<std::optional<cached>> get(const std::string& key) = 0;
  /// See the header comment. `tags`: the key joins each tag's set (del_tag deletes it).
  virtual result<fill_outcome> fill(const std::string& key, const std::string& value, uint64_t lsn, ms ttl,
                                    const std::vector<std::string>& tags = {}) = 0;
  /// Applies one committed transaction's ops at `commit_lsn` (increasing from call to call;
  /// re-applying an old one after a restart is harmless).
  virtual error apply(uint64_t commit_lsn, const std::vector<op>& ops) = 0;
  /// Raises the low watermark to `w` (never lowers it) and drops the markers at or below it;
  /// then, if more than `max_markers` key markers remain, raises it further until they fit.
  /// Returns the watermark now in force.
  virtual result<uint64_t> prune(uint64_t w, size_t max_markers) = 0;
  /// Sets the watermark to `w` if the backend has none (a fresh or restarted-empty Redis):
  /// fills are refused (no_epoch) until this ran. `w` must be at or above every commit whose
  /// markers may have been lost (the managers use the database's last LSN; the invalidator's
  /// next transaction re-arms at its commit LSN).
  virtual error arm(uint64_t w) = 0;
  /// Markers currently kept (key + prefix + tag), for tests and stats.
  virtual result<size_t> marker_count() = 0;
  /// Housekeeping (the in-memory KV drops expired entries); cheap when called often.
  virtual void maintain() {}
};

/// A clock in milliseconds (steady); tests inject their own to expire TTLs exactly.
using clock_fn = std::function<int64_t()>;
int64_t steady_ms();

std::shared_ptr<backend> make_memory_backend(clock_fn clock = {});

struct redis_options {
  std::string host = "127.0.0.1";
  int port = 6379;
  /// Prepended to every key this cache writes (values, tag sets, metadata).
  std::string key_prefix;
  ms connect_timeout{1000};
  ms command_timeout{2000};
  size_t pool_size = 8;  ///< connections kept open (one per concurrent caller)
};
/// Connects lazily: a Redis that is down makes calls fail with IO_ERROR naming host:port, and
/// the next call reconnects.
std::shared_ptr<backend> make_redis_backend(redis_options o);
/// "HOST:PORT" (PORT optional) -> options; INVALID_ARGUMENT naming the text otherwise.
result<redis_options> parse_redis_address(const std::string& text);

}  // namespace dosql_cache
