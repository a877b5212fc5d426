#include "workload.hpp"

#include <algorithm>
#include <functional>
#include <thread>

namespace dosql_cache {

using dosql::ec;
using effects = std::vector<std::pair<std::string, std::optional<std::string>>>;

const char* demo_schema = R"(
CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT, email TEXT, version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS products(id INTEGER PRIMARY KEY, name TEXT, category_id INTEGER, price REAL,
                                    version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, user_id INTEGER, total REAL, status TEXT,
                                  version INTEGER NOT NULL DEFAULT 0);
)";

cache_config guide_config() {
  cache_config c;
  c.default_ttl = std::chrono::hours(1);
  c.tables["users"] = table_config{"user:$id", std::nullopt, {"user:email:$email", "users:list:*"}, true};
  c.tables["products"] = table_config{"product:$id", ms(300000), {"products:category:$category_id", "products:search:*"}, false};
  c.tables["orders"] = table_config{"order:$id", std::nullopt, {"user:$user_id:orders", "orders:recent"}, false};
  return c;
}

// ---- history -----------------------------------------------------------------------------------

namespace {
uint64_t hash_of(const std::optional<std::string>& v) { return v ? (std::hash<std::string>{}(*v) | 1) : 0; }
}  // namespace

void history::begin_write(int writer, uint64_t floor) {
  std::lock_guard<std::mutex> g(mu_);
  inflight_[writer] = floor;
}

void history::end_write(int writer, uint64_t lsn, const effects& e) {
  std::lock_guard<std::mutex> g(mu_);
  if (lsn)
    for (auto& [key, v] : e) {
      auto& vec = h_[key];
      auto at = std::upper_bound(vec.begin(), vec.end(), std::make_pair(lsn, uint64_t{0}),
                                 [](auto& a, auto& b) { return a.first < b.first; });
      vec.insert(at, {lsn, hash_of(v)});
    }
  inflight_.erase(writer);
}

void history::record_state(uint64_t lsn, const effects& state) {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [key, v] : state) {
    auto& vec = h_[key];
    auto at = std::upper_bound(vec.begin(), vec.end(), std::make_pair(lsn, uint64_t{0}),
                               [](auto& a, auto& b) { return a.first < b.first; });
    vec.insert(at, {lsn, hash_of(v)});
  }
}

void history::record_read(const std::string& key, uint64_t applied_before, const std::optional<std::string>& value,
                          uint64_t horizon) {
  std::lock_guard<std::mutex> g(mu_);
  reads_.push_back({key, applied_before, hash_of(value), horizon});
}

void history::check_one(const read_rec& r) {
  ++checked_;
  auto it = h_.find(r.key);
  if (it == h_.end()) return;
  const auto& vec = it->second;
  auto up = std::upper_bound(vec.begin(), vec.end(), r.p, [](uint64_t p, auto& e) { return p < e.first; });
  if (up == vec.begin()) return;  // nothing known at or before P
  auto from = std::prev(up);
  for (auto j = from; j != vec.end(); ++j)
    if (j->second == r.h) return;
  ++stale_;
  if (examples_.size() < 10) {
    std::string what = "a value unknown to the history";
    for (auto j = vec.begin(); j != from; ++j)
      if (j->second == r.h) what = "the value of lsn " + std::to_string(j->first);
    examples_.push_back("key " + r.key + ": read after the invalidator applied lsn " + std::to_string(r.p) + " returned " +
                        what + ", which lsn " + std::to_string(from->first) + " had replaced");
  }
}

void history::check() {
  std::lock_guard<std::mutex> g(mu_);
  uint64_t safe = UINT64_MAX;
  for (auto& [w, f] : inflight_) safe = std::min(safe, f);
  std::deque<read_rec> keep;
  for (auto& r : reads_) {
    if (r.horizon <= safe)
      check_one(r);
    else
      keep.push_back(std::move(r));
  }
  reads_.swap(keep);
}

uint64_t history::reads_checked() const {
  std::lock_guard<std::mutex> g(mu_);
  return checked_;
}
uint64_t history::stale_reads() const {
  std::lock_guard<std::mutex> g(mu_);
  return stale_;
}
std::vector<std::string> history::stale_examples() const {
  std::lock_guard<std::mutex> g(mu_);
  return examples_;
}

// ---- workload ----------------------------------------------------------------------------------

namespace {
const char* key_prefix(const std::string& table) {
  return table == "users" ? "user:" : table == "products" ? "product:" : "order:";
}
}  // namespace

result<std::optional<std::string>> workload::fetch_row(dosql::read_snapshot& s, const std::string& table, int64_t id) {
  auto q = s.query("SELECT * FROM " + table + " WHERE id = ?", {id});
  if (!q) return q.err();
  if (q->rows.empty()) return std::optional<std::string>();
  return std::optional<std::string>(dosql::to_json(row_of(*q, 0)));
}

std::vector<std::string> workload::key_space() const {
  std::vector<std::string> keys;
  for (int i = 1; i <= o_.keys; ++i) keys.push_back("user:" + std::to_string(i));
  for (int i = 1; i <= 2 * o_.keys; ++i) keys.push_back("product:" + std::to_string(i));
  for (int i = 1; i <= o_.keys; ++i) keys.push_back("order:" + std::to_string(i));
  return keys;
}

error workload::prepare() {
  {
    auto tx = db_->begin();
    if (!tx) return tx.err();
    for (int i = 1; i <= o_.keys; ++i) {
      const int64_t id = i;
      for (auto r : {tx->exec("INSERT OR IGNORE INTO users(id, name, email) VALUES(?, ?, ?)",
                              {id, "user " + std::to_string(i), "u" + std::to_string(i) + "@example.com"}),
                     tx->exec("INSERT OR IGNORE INTO products(id, name, category_id, price) VALUES(?, ?, ?, ?)",
                              {id, "product " + std::to_string(i), int64_t{i % 5}, 10.0 + i}),
                     tx->exec("INSERT OR IGNORE INTO orders(id, user_id, total, status) VALUES(?, ?, ?, 'new')",
                              {id, int64_t{1 + i % o_.keys}, 1.5 * i})})
        if (!r) return r.err();
    }
    auto c = tx->commit();
    if (!c) return c.err();
  }
  auto snap = db_->snapshot();
  if (!snap) return snap.err();
  effects state;
  for (auto& key : key_space()) {
    auto colon = key.find(':');
    const std::string p = key.substr(0, colon);
    const std::string table = p == "user" ? "users" : p == "product" ? "products" : "orders";
    auto v = fetch_row(*snap, table, std::stoll(key.substr(colon + 1)));
    if (!v) return v.err();
    state.emplace_back(key, std::move(*v));
  }
  h_.record_state(snap->lsn(), state);
  return {};
}

error workload::write_one(std::mt19937_64& rng, int writer) {
  auto r = [&](int n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); };
  const int64_t k = o_.keys;
  effects eff;
  h_.begin_write(writer, db_->last_lsn());
  uint64_t lsn = 0;
  error err = [&]() -> error {
    auto tx = db_->begin();
    if (!tx) return tx.err();
    auto touch = [&](const std::string& table, int64_t id) -> error {
      auto q = tx->query("SELECT * FROM " + table + " WHERE id = ?", {id});
      if (!q) return q.err();
      eff.emplace_back(key_prefix(table) + std::to_string(id),
                       q->rows.empty() ? std::nullopt : std::optional<std::string>(dosql::to_json(row_of(*q, 0))));
      return {};
    };
    auto run = [&](std::string_view sql, const std::vector<dosql::value>& params) -> error {
      auto x = tx->exec(sql, params);
      return x ? error{} : x.err();
    };
    const int kind = static_cast<int>(r(10));
    const std::string stamp = std::to_string(rng() % 1000000);
    if (kind <= 2 || kind == 9) {
      const int64_t id = 1 + r(k);
      if (auto e = run("UPDATE users SET name = ?, email = ?, version = version + 1 WHERE id = ?",
                       {"user " + stamp, "u" + std::to_string(id) + "-" + stamp + "@example.com", id}))
        return e;
      if (auto e = touch("users", id)) return e;
    }
    if (kind == 3 || kind == 4) {
      const int64_t id = 1 + r(2 * k);
      if (auto e = run("UPDATE products SET price = ?, version = version + 1 WHERE id = ?", {static_cast<double>(r(10000)) / 100, id}))
        return e;
      if (auto e = touch("products", id)) return e;
    }
    if (kind == 5) {  // the key column moves: product:from disappears, product:to appears
      const int64_t from = 1 + r(2 * k), to = 1 + r(2 * k);
      auto q = tx->query("SELECT (SELECT count(*) FROM products WHERE id = ?), (SELECT count(*) FROM products WHERE id = ?)", {from, to});
      if (!q) return q.err();
      if (std::get<int64_t>(q->rows[0][0]) == 1 && std::get<int64_t>(q->rows[0][1]) == 0) {
        if (auto e = run("UPDATE products SET id = ?, version = version + 1 WHERE id = ?", {to, from})) return e;
        if (auto e = touch("products", from)) return e;
        if (auto e = touch("products", to)) return e;
      }
    }
    if (kind >= 6) {
      const int64_t id = 1 + r(k);
      if (kind == 8) {
        auto x = tx->exec("DELETE FROM orders WHERE id = ?", {id});
        if (!x) return x.err();
        if (x->changes == 0)
          if (auto e = run("INSERT INTO orders(id, user_id, total, status) VALUES(?, ?, ?, 'new')", {id, 1 + r(k), 2.5}))
            return e;
      } else {
        if (auto e = run("UPDATE orders SET status = ?, total = total + 1, version = version + 1 WHERE id = ?",
                         {std::string(r(2) ? "paid" : "shipped"), id}))
          return e;
      }
      if (auto e = touch("orders", id)) return e;
      if (kind == 9) {  // a second order in the same transaction
        const int64_t id2 = 1 + r(k);
        if (auto e = run("UPDATE orders SET total = total + 2, version = version + 1 WHERE id = ?", {id2})) return e;
        if (auto e = touch("orders", id2)) return e;
      }
    }
    auto c = tx->commit();
    if (!c) return c.err();
    lsn = *c;
    return {};
  }();
  h_.end_write(writer, err ? 0 : lsn, eff);
  if (err) return err;
  const uint64_t n = ++writes_;
  if (o_.read_your_writes_every > 0 && lsn && n % static_cast<uint64_t>(o_.read_your_writes_every) == 0) {
    // Read-your-writes through the cache: wait until the invalidation passed the commit.
    if (!cm_.wait_for(lsn, ms(30000)))
      return error(ec::closed, "the invalidator did not apply lsn " + std::to_string(lsn) + " within 30 s");
    for (auto& [key, v] : eff) {
      const uint64_t p = cm_.applied_lsn();
      auto colon = key.find(':');
      const std::string pfx = key.substr(0, colon);
      const std::string table = pfx == "user" ? "users" : pfx == "product" ? "products" : "orders";
      const int64_t id = std::stoll(key.substr(colon + 1));
      auto got = cm_.get(key, [&](dosql::read_snapshot& s) { return fetch_row(s, table, id); });
      if (!got) return got.err();
      h_.record_read(key, p, *got, db_->last_lsn());
      ++ryw_;
    }
  }
  return {};
}

error workload::read_one(std::mt19937_64& rng) {
  auto r = [&](int n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); };
  const int t = static_cast<int>(r(3));
  const std::string table = t == 0 ? "users" : t == 1 ? "products" : "orders";
  const int64_t id = 1 + r(t == 1 ? 2 * o_.keys : o_.keys);
  const std::string key = key_prefix(table) + std::to_string(id);
  const uint64_t p = cm_.applied_lsn();
  auto v = cm_.get(key, [&](dosql::read_snapshot& s) { return fetch_row(s, table, id); });
  if (!v) return v.err();
  h_.record_read(key, p, *v, db_->last_lsn());
  ++reads_;
  return {};
}

error workload::run(const std::atomic<bool>& stop) {
  std::mutex mu;
  error first;
  std::atomic<bool> failed{false};
  auto fail = [&](const error& e) {
    std::lock_guard<std::mutex> g(mu);
    if (!first) first = e;
    failed = true;
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < o_.writers; ++w)
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(o_.seed * 1000 + static_cast<uint64_t>(w));
      while (!stop && !failed)
        if (auto e = write_one(rng, w)) fail(e);
    });
  for (int i = 0; i < o_.readers; ++i)
    threads.emplace_back([&, i] {
      std::mt19937_64 rng(o_.seed * 1000 + 500 + static_cast<uint64_t>(i));
      while (!stop && !failed)
        if (auto e = read_one(rng)) fail(e);
    });
  threads.emplace_back([&] {
    while (!stop && !failed) {
      h_.check();
      std::this_thread::sleep_for(ms(100));
    }
  });
  for (auto& t : threads) t.join();
  h_.check();
  return first;
}

result<uint64_t> workload::compare_cache_with_database() {
  auto snap = db_->snapshot();
  if (!snap) return snap.err();
  uint64_t n = 0;
  for (auto& key : key_space()) {
    auto c = cm_.store().get(key);
    if (!c) return c.err();
    if (!*c) continue;
    auto colon = key.find(':');
    const std::string p = key.substr(0, colon);
    const std::string table = p == "user" ? "users" : p == "product" ? "products" : "orders";
    auto v = fetch_row(*snap, table, std::stoll(key.substr(colon + 1)));
    if (!v) return v.err();
    if (!*v || **v != (*c)->value)
      return error(ec::corruption, "cache key " + key + " holds " + (*c)->value + " (lsn " + std::to_string((*c)->lsn) +
                                       ") but the database has " + (*v ? **v : std::string("no row")) + " at lsn " +
                                       std::to_string(snap->lsn()));
    ++n;
  }
  return n;
}

}  // namespace dosql_cache
