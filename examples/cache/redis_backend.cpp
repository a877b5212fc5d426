// Redis through hiredis. A value is a hash {v: its JSON text, l: its version LSN} with a TTL;
// markers are three sorted sets (keys, prefixes, tags; score = commit LSN) and the watermark,
// flush point and tag sets are keys under KEY_PREFIX "__dosql_cache:". Every check-and-write
// is one Lua script, so it is atomic against the invalidator's scripts. Prefix deletes SCAN
// (never KEYS) after the prefix marker is set. LSNs travel as Lua numbers and sorted-set
// scores (doubles): exact up to 2^53.
//
// Redis restarted empty: the watermark key is gone, so fill() answers no_epoch and stores
// nothing until it is re-armed (arm() with the database's last LSN, by the manager that saw
// no_epoch; or the invalidator's next transaction's script, at its commit LSN). A Redis restored from an older snapshot is not
// detected (run the cache's Redis without persistence, as the tests do).
#include <hiredis/hiredis.h>

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

#include "backend.hpp"

namespace dosql_cache {

namespace {

const char* get_script = R"lua(
local r = redis.call('HMGET', KEYS[1], 'v', 'l')
if not r[1] then return false end
local f = redis.call('GET', KEYS[2])
if f and tonumber(r[2]) < tonumber(f) then return false end
return {r[1], r[2]}
)lua";

// KEYS: key, wm, flushed, km, pm, tm. ARGV: value, lsn, ttl ms, tag-set prefix, tags...
const char* fill_script = R"lua(
local lsn = tonumber(ARGV[2])
local wm = redis.call('GET', KEYS[2])
if not wm then return -1 end
if lsn < tonumber(wm) then return 0 end
local f = redis.call('GET', KEYS[3])
if f and lsn < tonumber(f) then return 0 end
local m = redis.call('ZSCORE', KEYS[4], KEYS[1])
if m and tonumber(m) > lsn then return 0 end
local ps = redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. ARGV[2], '+inf')
for _, p in ipairs(ps) do
  if string.sub(KEYS[1], 1, #p) == p then return 0 end
end
for i = 5, #ARGV do
  local t = redis.call('ZSCORE', KEYS[6], ARGV[i])
  if t and tonumber(t) > lsn then return 0 end
end
local cur = redis.call('HGET', KEYS[1], 'l')
if cur and tonumber(cur) > lsn then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'l', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local ttl = tonumber(ARGV[3])
for i = 5, #ARGV do
  local ts = ARGV[4] .. ARGV[i]
  redis.call('SADD', ts, KEYS[1])
  if redis.call('PTTL', ts) < ttl then redis.call('PEXPIRE', ts, ttl) end
end
return 1
)lua";

// KEYS: wm, flushed, km, pm, tm. ARGV: commit lsn, tag-set prefix, then (kind, key, value, ttl)*.
const char* apply_script = R"lua(
local c = tonumber(ARGV[1])
if not redis.call('GET', KEYS[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
local function mark(z, m)
  local s = redis.call('ZSCORE', z, m)
  if not s or tonumber(s) < c then redis.call('ZADD', z, c, m) end
end
local i = 3
while i <= #ARGV do
  local k, key = ARGV[i], ARGV[i + 1]
  if k == 'd' then
    mark(KEYS[3], key)
    redis.call('DEL', key)
  elseif k == 'p' then
    mark(KEYS[3], key)
    local cur = redis.call('HGET', key, 'l')
    if not cur or tonumber(cur) <= c then
      redis.call('HSET', key, 'v', ARGV[i + 2], 'l', ARGV[1])
      redis.call('PEXPIRE', key, ARGV[i + 3])
    end
  elseif k == 'x' then
    mark(KEYS[4], key)
  elseif k == 't' then
    mark(KEYS[5], key)
    local ts = ARGV[2] .. key
    for _, mk in ipairs(redis.call('SMEMBERS', ts)) do redis.call('DEL', mk) end
    redis.call('DEL', ts)
  elseif k == 'f' then
    local f = redis.call('GET', KEYS[2])
    if not f or tonumber(f) < c then redis.call('SET', KEYS[2], ARGV[1]) end
    if tonumber(redis.call('GET', KEYS[1])) < c then redis.call('SET', KEYS[1], ARGV[1]) end
  end
  i = i + 4
end
return 1
)lua";

// KEYS: wm, km, pm, tm. ARGV: w, max key markers. -1 when not armed (nothing changes).
const char* prune_script = R"lua(
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
local w = math.max(tonumber(cur), tonumber(ARGV[1]))
local n = redis.call('ZCARD', KEYS[2])
local max = tonumber(ARGV[2])
if n > max then
  local r = redis.call('ZRANGE', KEYS[2], n - max - 1, n - max - 1, 'WITHSCORES')
  w = math.max(w, tonumber(r[2]))
end
local ws = string.format('%.0f', w)
redis.call('SET', KEYS[1], ws)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ws)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ws)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ws)
return w
)lua";

struct reply_free {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_free>;

timeval to_tv(ms d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

// SCAN MATCH pattern for "every key starting with p": glob characters escaped.
std::string glob_prefix(const std::string& p) {
  std::string out;
  for (char ch : p) {
    if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "*";
}

class redis_backend final : public backend {
 public:
  explicit redis_backend(redis_options o)
      : o_(std::move(o)), meta_(o_.key_prefix + "__dosql_cache:"), wm_(meta_ + "wm"), flushed_(meta_ + "flushed"),
        km_(meta_ + "km"), pm_(meta_ + "pm"), tm_(meta_ + "tm"), tags_(meta_ + "tag:") {}
  ~redis_backend() override {
    for (auto* c : pool_) redisFree(c);
  }
  std::string name() const override { return "redis " + o_.host + ":" + std::to_string(o_.port); }

  result<std::optional<cached>> get(const std::string& key) override {
    auto r = script(s_get, {o_.key_prefix + key, flushed_}, {});
    if (!r) return r.err();
    const redisReply* x = r->get();
    if (x->type == REDIS_REPLY_NIL) return std::optional<cached>();
    if (x->type != REDIS_REPLY_ARRAY || x->elements != 2 || x->element[0]->type != REDIS_REPLY_STRING ||
        x->element[1]->type != REDIS_REPLY_STRING)
      return error(dosql::ec::decode_error, name() + ": unexpected reply to GET of " + key);
    cached c;
    c.value.assign(x->element[0]->str, x->element[0]->len);
    c.lsn = std::stoull(std::string(x->element[1]->str, x->element[1]->len));
    return std::optional<cached>(std::move(c));
  }

  result<fill_outcome> fill(const std::string& key, const std::string& value, uint64_t lsn, ms ttl,
                            const std::vector<std::string>& tags) override {
    std::vector<std::string> argv{value, std::to_string(lsn), std::to_string(std::max<int64_t>(1, ttl.count())), tags_};
    argv.insert(argv.end(), tags.begin(), tags.end());
    auto r = script(s_fill, {o_.key_prefix + key, wm_, flushed_, km_, pm_, tm_}, argv);
    if (!r) return r.err();
    if ((*r)->type != REDIS_REPLY_INTEGER) return error(dosql::ec::decode_error, name() + ": unexpected reply to a fill");
    return (*r)->integer == 1 ? fill_outcome::stored : (*r)->integer == 0 ? fill_outcome::stale : fill_outcome::no_epoch;
  }

  error apply(uint64_t c, const std::vector<op>& ops) override {
    std::vector<std::string> argv{std::to_string(c), tags_};
    std::vector<std::string> prefixes;
    for (const op& o : ops) {
      static const char* kinds[] = {"d", "p", "x", "t", "f"};
      argv.emplace_back(kinds[static_cast<int>(o.k)]);
      argv.push_back(o.k == op::kind::del_tag || o.k == op::kind::flush ? o.key : o_.key_prefix + o.key);
      argv.push_back(o.value);
      argv.push_back(std::to_string(std::max<int64_t>(1, o.ttl.count())));
      if (o.k == op::kind::del_prefix) prefixes.push_back(o_.key_prefix + o.key);
    }
    auto r = script(s_apply, {wm_, flushed_, km_, pm_, tm_}, argv);
    if (!r) return r.err();
    // The prefixes' markers are in place: now delete what they cover (SCAN, never KEYS).
    for (auto& p : prefixes)
      if (auto e = delete_prefix(p)) return e;
    return {};
  }

  result<uint64_t> prune(uint64_t w, size_t max_markers) override {
    auto r = script(s_prune, {wm_, km_, pm_, tm_}, {std::to_string(w), std::to_string(max_markers)});
    if (!r) return r.err();
    if ((*r)->type != REDIS_REPLY_INTEGER) return error(dosql::ec::decode_error, name() + ": unexpected reply to prune");
    if ((*r)->integer < 0) return uint64_t{0};
    return static_cast<uint64_t>((*r)->integer);
  }

  error arm(uint64_t w) override {
    auto r = command({"SET", wm_, std::to_string(w), "NX"});
    return r ? error{} : r.err();
  }

  result<size_t> marker_count() override {
    size_t n = 0;
    for (auto* z : {&km_, &pm_, &tm_}) {
      auto r = command({"ZCARD", *z});
      if (!r) return r.err();
      n += static_cast<size_t>((*r)->integer);
    }
    return n;
  }

 private:
  enum script_id { s_get, s_fill, s_apply, s_prune, s_count };

  // A pooled connection: taken for one call, returned unless it broke.
  struct lease {
    redis_backend* b = nullptr;
    redisContext* c = nullptr;
    lease(redis_backend* owner, redisContext* ctx) : b(owner), c(ctx) {}
    lease(lease&& o) noexcept : b(o.b), c(std::exchange(o.c, nullptr)) {}
    lease& operator=(lease&&) = delete;
    ~lease() {
      if (!c) return;
      std::lock_guard<std::mutex> g(b->mu_);
      if (b->pool_.size() < b->o_.pool_size) b->pool_.push_back(c);
      else redisFree(c);
    }
    void broken() {
      redisFree(c);
      c = nullptr;
    }
  };

  error io_error(const std::string& what) const {
    return error(dosql::ec::io_error, "redis " + o_.host + ":" + std::to_string(o_.port) + ": " + what);
  }

  result<redisContext*> connect() {
    redisContext* c = redisConnectWithTimeout(o_.host.c_str(), o_.port, to_tv(o_.connect_timeout));
    if (!c) return io_error("cannot allocate a connection");
    if (c->err) {
      auto e = io_error(c->errstr);
      redisFree(c);
      return e;
    }
    redisSetTimeout(c, to_tv(o_.command_timeout));
    return c;
  }

  result<reply_ptr> on(lease& l, const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(l.c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (!r) {
      auto e = io_error(l.c->errstr[0] ? l.c->errstr : "connection lost");
      l.broken();
      return e;
    }
    return reply_ptr(r);
  }

  result<lease> take() {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!pool_.empty()) {
        auto* c = pool_.back();
        pool_.pop_back();
        return lease(this, c);
      }
    }
    auto c = connect();
    if (!c) return c.err();
    return lease(this, *c);
  }

  result<reply_ptr> command(const std::vector<std::string>& args) {
    auto l = take();
    if (!l) return l.err();
    auto r = on(*l, args);
    if (r && (*r)->type == REDIS_REPLY_ERROR) return io_error(std::string((*r)->str, (*r)->len));
    return r;
  }

  result<reply_ptr> script(script_id id, const std::vector<std::string>& keys, const std::vector<std::string>& argv) {
    static const char* texts[] = {get_script, fill_script, apply_script, prune_script};
    auto l = take();
    if (!l) return l.err();
    std::string sha;
    {
      std::lock_guard<std::mutex> g(mu_);
      sha = sha_[id];
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (sha.empty()) {
        auto r = on(*l, {"SCRIPT", "LOAD", texts[id]});
        if (!r) return r.err();
        if ((*r)->type != REDIS_REPLY_STRING) return io_error("SCRIPT LOAD failed");
        sha.assign((*r)->str, (*r)->len);
        std::lock_guard<std::mutex> g(mu_);
        sha_[id] = sha;
      }
      std::vector<std::string> args{"EVALSHA", sha, std::to_string(keys.size())};
      args.insert(args.end(), keys.begin(), keys.end());
      args.insert(args.end(), argv.begin(), argv.end());
      auto r = on(*l, args);
      if (!r) return r.err();
      if ((*r)->type == REDIS_REPLY_ERROR) {
        std::string msg((*r)->str, (*r)->len);
        if (msg.rfind("NOSCRIPT", 0) == 0 && attempt == 0) {  // a restarted Redis: load again
          sha.clear();
          continue;
        }
        return io_error(msg);
      }
      return r;
    }
    return io_error("script not loaded");
  }

  error delete_prefix(const std::string& prefix) {
    auto l = take();
    if (!l) return l.err();
    const std::string match = glob_prefix(prefix);
    std::string cursor = "0";
    do {
      auto r = on(*l, {"SCAN", cursor, "MATCH", match, "COUNT", "1000"});
      if (!r) return r.err();
      const redisReply* x = r->get();
      if (x->type != REDIS_REPLY_ARRAY || x->elements != 2) return io_error("unexpected reply to SCAN");
      cursor.assign(x->element[0]->str, x->element[0]->len);
      std::vector<std::string> del{"UNLINK"};
      for (size_t i = 0; i < x->element[1]->elements; ++i) {
        std::string k(x->element[1]->element[i]->str, x->element[1]->element[i]->len);
        if (k.compare(0, meta_.size(), meta_) != 0) del.push_back(std::move(k));  // never the metadata
      }
      if (del.size() > 1) {
        auto d = on(*l, del);
        if (!d) return d.err();
      }
    } while (cursor != "0");
    return {};
  }

  redis_options o_;
  const std::string meta_, wm_, flushed_, km_, pm_, tm_, tags_;
  std::mutex mu_;
  std::vector<redisContext*> pool_;  // guarded by mu_
  std::string sha_[s_count];         // guarded by mu_
};

}  // namespace

std::shared_ptr<backend> make_redis_backend(redis_options o) { return std::make_shared<redis_backend>(std::move(o)); }

result<redis_options> parse_redis_address(const std::string& text) {
  redis_options o;
  auto colon = text.rfind(':');
  o.host = text.substr(0, colon);
  if (colon != std::string::npos) {
    const std::string p = text.substr(colon + 1);
    int port = 0;
    bool ok = !p.empty() && p.size() <= 5 && std::all_of(p.begin(), p.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    if (ok) port = std::stoi(p);
    if (!ok || port < 1 || port > 65535)
      return error(dosql::ec::invalid_argument, "--redis: '" + text + "' is not HOST:PORT (port 1-65535)");
    o.port = port;
  }
  if (o.host.empty()) return error(dosql::ec::invalid_argument, "--redis: '" + text + "' names no host");
  return o;
}

}  // namespace dosql_cache
