// The cache example on both backends (the in-memory KV and a real redis-server): the fill race
// forced deterministically, key-column changes, patterns and prefixes, update_on_change, TTLs,
// tags, bounded markers, and a randomized workload whose every read is checked.
#include "support.hpp"

#include <chrono>
#include <random>
#include <thread>

using namespace cache_test;
using namespace dosql_cache;
using namespace std::chrono_literals;
using opt_str = std::optional<std::string>;

namespace {

std::unique_ptr<redis_server> server_for(const std::string& which) {
  return which == "redis" ? std::make_unique<redis_server>() : nullptr;
}

std::unique_ptr<cache_manager> start(db_fixture& f, std::shared_ptr<backend> b, cache_config cfg = guide_config()) {
  auto cm = must(cache_manager::start(f.db, std::move(b), std::move(cfg)));
  REQUIRE(cm->wait_caught_up(60s));  // (a hang guard, not a timing)
  return cm;
}

uint64_t exec(db_fixture& f, const std::string& sql, const std::vector<dosql::value>& params = {}) {
  auto r = f.db->exec(sql, params);
  if (!r) FAIL(r.err().to_string());
  return r->commit_lsn;
}

opt_str row_json(db_fixture& f, const std::string& table, int64_t id) {
  auto s = must(f.db->snapshot());
  return must(workload::fetch_row(s, table, id));
}

bool holds(backend& b, const std::string& key) { return must(b.get(key)).has_value(); }

}  // namespace

TEST_CASE("a fill that read before a change and finishes after its invalidation is not stored", "[cache][race]") {
  const std::string which = GENERATE(as<std::string>{}, "memory", "redis");
  INFO("backend " << which);
  auto rs = server_for(which);
  db_fixture f;
  exec(f, "INSERT INTO products(id, name, category_id, price) VALUES(1, 'lamp', 3, 10.0)");
  exec(f, "INSERT INTO users(id, name, email) VALUES(1, 'ann', 'ann@example.com')");
  auto b = make_backend(which, rs.get());
  auto cm = start(f, b);

  // products: the change deletes the key; users (update_on_change): it writes the new row.
  for (std::string table : {"products", "users"}) {
    const std::string key = table == "users" ? "user:1" : "product:1";
    INFO("table " << table);
    opt_str read;
    const uint64_t refused = cm->stats().fills_refused;
    auto got = must(cm->get(key, [&](dosql::read_snapshot& s) -> dosql::result<opt_str> {
      auto r = workload::fetch_row(s, table, 1);  // the old row, as of the snapshot
      if (!r) return r;
      read = *r;
      // Before this fill is stored, a change commits and the invalidator applies it.
      const uint64_t c = exec(f, "UPDATE " + table + " SET name = name || '!', version = version + 1 WHERE id = 1");
      REQUIRE(cm->wait_for(c, 30s));
      return r;
    }));
    const opt_str now = row_json(f, table, 1);
    REQUIRE(read);
    CHECK(got == read);     // the reader gets what it read...
    CHECK(*read != *now);
    CHECK(cm->stats().fills_refused == refused + 1);  // ...but it was not stored
    auto in_cache = must(b->get(key));
    if (table == "users") {
      REQUIRE(in_cache);
      CHECK(in_cache->value == *now);  // the invalidator's new row, not the stale fill
    } else {
      CHECK_FALSE(in_cache);
    }
    CHECK(must(cm->get(key, [&](dosql::read_snapshot& s) { return workload::fetch_row(s, table, 1); })) == now);
  }

  SECTION("a prefix invalidation refuses a racing fill of a key it covers") {
    auto list = [&](dosql::read_snapshot& s) -> dosql::result<opt_str> {
      auto q = s.query("SELECT group_concat(name) FROM users");
      if (!q) return q.err();
      return opt_str(dosql::to_string(q->rows[0][0]));
    };
    const uint64_t refused = cm->stats().fills_refused;
    must(cm->get("users:list:all", [&](dosql::read_snapshot& s) -> dosql::result<opt_str> {
      auto r = list(s);
      const uint64_t c = exec(f, "INSERT INTO users(id, name, email) VALUES(2, 'bob', 'bob@example.com')");
      REQUIRE(cm->wait_for(c, 30s));  // users:list:* deleted at c
      return r;
    }));
    CHECK(cm->stats().fills_refused == refused + 1);
    CHECK_FALSE(holds(*b, "users:list:all"));
    // A fill that reads after the change is stored.
    auto fresh = must(cm->get("users:list:all", list));
    CHECK(fresh->find("bob") != std::string::npos);
    CHECK(holds(*b, "users:list:all"));
  }

  SECTION("a fill that finishes before the invalidation is deleted by it") {
    auto v = must(cm->get("product:1", [&](dosql::read_snapshot& s) { return workload::fetch_row(s, "products", 1); }));
    REQUIRE(holds(*b, "product:1"));
    const uint64_t c = exec(f, "UPDATE products SET price = 99 WHERE id = 1");
    REQUIRE(cm->wait_for(c, 30s));
    CHECK_FALSE(holds(*b, "product:1"));
  }
}

TEST_CASE("key-column changes, invalidate patterns, prefixes and update_on_change", "[cache][patterns]") {
  const std::string which = GENERATE(as<std::string>{}, "memory", "redis");
  INFO("backend " << which);
  auto rs = server_for(which);
  db_fixture f;
  exec(f, "INSERT INTO users(id, name, email) VALUES(1, 'ann', 'ann@example.com')");
  exec(f, "INSERT INTO products(id, name, category_id, price) VALUES(5, 'lamp', 2, 10.0)");
  exec(f, "INSERT INTO orders(id, user_id, total, status) VALUES(1, 1, 9.5, 'new')");
  auto b = make_backend(which, rs.get());
  auto cm = start(f, b);
  const uint64_t l = must(f.db->snapshot()).lsn();
  for (const char* k : {"product:5", "product:7", "products:category:2", "products:search:lamp", "products:searchable",
                        "user:1", "user:email:ann@example.com", "users:list:1", "users:list:2", "users:listing",
                        "user:1:orders", "orders:recent", "order:1"})
    REQUIRE(must(b->fill(k, "cached", l, 1h)) == fill_outcome::stored);

  // The key column moves: the old key and the new one go, with the row's patterns.
  uint64_t c = exec(f, "UPDATE products SET id = 7 WHERE id = 5");
  REQUIRE(cm->wait_for(c, 30s));
  CHECK_FALSE(holds(*b, "product:5"));
  CHECK_FALSE(holds(*b, "product:7"));
  CHECK_FALSE(holds(*b, "products:category:2"));
  CHECK_FALSE(holds(*b, "products:search:lamp"));  // products:search:* is a prefix
  CHECK(holds(*b, "products:searchable"));         // ... of "products:search:", not of this

  // update_on_change: user:1 now holds the new row; the old email's key and the list pages go.
  c = exec(f, "UPDATE users SET email = 'ann2@example.com', version = version + 1 WHERE id = 1");
  REQUIRE(cm->wait_for(c, 30s));
  auto u = must(b->get("user:1"));
  REQUIRE(u);
  CHECK(u->value == *row_json(f, "users", 1));
  CHECK(u->lsn == c);
  CHECK_FALSE(holds(*b, "user:email:ann@example.com"));
  CHECK_FALSE(holds(*b, "users:list:1"));
  CHECK_FALSE(holds(*b, "users:list:2"));
  CHECK(holds(*b, "users:listing"));
  CHECK(holds(*b, "order:1"));

  // An order insert: user:$user_id:orders and orders:recent go, other orders stay.
  c = exec(f, "INSERT INTO orders(id, user_id, total, status) VALUES(2, 1, 3.0, 'new')");
  REQUIRE(cm->wait_for(c, 30s));
  CHECK_FALSE(holds(*b, "user:1:orders"));
  CHECK_FALSE(holds(*b, "orders:recent"));
  CHECK(holds(*b, "order:1"));

  // A delete removes the row's key even with update_on_change.
  c = exec(f, "DELETE FROM users WHERE id = 1");
  REQUIRE(cm->wait_for(c, 30s));
  CHECK_FALSE(holds(*b, "user:1"));
  // A fill read before the delete is refused; one read after it is stored.
  CHECK(must(b->fill("user:1", "old", c - 1, 1h)) == fill_outcome::stale);
  CHECK(must(b->fill("user:1", "new", c, 1h)) == fill_outcome::stored);
}

TEST_CASE("TTLs: per fill, per table (update_on_change) and the default", "[cache][ttl]") {
  SECTION("in-memory, with its clock") {
    std::atomic<int64_t> now{1000};  // (the invalidator's thread reads it too)
    auto b = make_memory_backend([&] { return now.load(); });
    REQUIRE(must(b->fill("k", "v", 1, 100ms)) == fill_outcome::stored);
    now += 99;
    CHECK(holds(*b, "k"));
    now += 2;
    CHECK_FALSE(holds(*b, "k"));

    db_fixture f;
    exec(f, "INSERT INTO users(id, name, email) VALUES(1, 'ann', 'a@x')");
    auto cfg = guide_config();
    cfg.tables["users"].ttl = 500ms;
    auto cm = start(f, b, cfg);
    const uint64_t c = exec(f, "UPDATE users SET name = 'anne' WHERE id = 1");
    REQUIRE(cm->wait_for(c, 30s));
    CHECK(holds(*b, "user:1"));  // written by the invalidator with the table's TTL
    now += 499;
    CHECK(holds(*b, "user:1"));
    now += 2;
    CHECK_FALSE(holds(*b, "user:1"));
    // The default TTL applies to read-through fills.
    REQUIRE(must(cm->get("user:1", [&](dosql::read_snapshot& s) { return workload::fetch_row(s, "users", 1); })));
    now += 3600 * 1000 - 1;
    CHECK(holds(*b, "user:1"));
    now += 2;
    CHECK_FALSE(holds(*b, "user:1"));
  }
  SECTION("redis") {
    redis_server rs;
    auto b = make_backend("redis", &rs);
    must(b->apply(1, {}));  // arms it, as an invalidator's first transaction does
    REQUIRE(must(b->fill("k", "v", 1, 100ms)) == fill_outcome::stored);
    REQUIRE(must(b->fill("long", "v", 1, 1h)) == fill_outcome::stored);
    std::this_thread::sleep_for(300ms);  // past the TTL: Redis never returns an expired key
    CHECK_FALSE(holds(*b, "k"));
    CHECK(holds(*b, "long"));
  }
}

TEST_CASE("tags: set, invalidate_by_tag, and CDC-driven tag invalidation", "[cache][tags]") {
  const std::string which = GENERATE(as<std::string>{}, "memory", "redis");
  INFO("backend " << which);
  auto rs = server_for(which);
  db_fixture f;
  auto b = make_backend(which, rs.get());
  tagged_cache_manager t(f.db, b);
  invalidator_options o;
  o.slot = "tags";
  must(t.start_cdc_invalidation(
      {{"products",
        [](const dosql::cdc::change_event<dosql::row>& ev) {
          const dosql::row& d = ev.data ? *ev.data : *ev.old_data;
          return std::vector<std::string>{"products", "category:" + interpolate("$category_id", d)};
        }}},
      o));
  REQUIRE(t.invalidation()->wait_caught_up(60s));
  const uint64_t l = must(f.db->snapshot()).lsn();
  CHECK(must(t.set("product:123", "{\"id\":123}", {"products", "category:electronics", "brand:acme"}, 1h, l)));
  CHECK(must(t.set("brand:acme:page", "x", {"brand:acme"}, std::nullopt, l)));
  CHECK(must(t.get("product:123")) == opt_str("{\"id\":123}"));

  must(t.invalidate_by_tag("category:electronics"));
  CHECK_FALSE(must(t.get("product:123")));
  CHECK(must(t.get("brand:acme:page")) == opt_str("x"));

  // CDC: a product change invalidates its category's tag, and "products".
  CHECK(must(t.set("cat2", "x", {"category:2"}, std::nullopt, l)));
  CHECK(must(t.set("cat3", "x", {"category:3"}, std::nullopt, l)));
  CHECK(must(t.set("all", "x", {"products"}, std::nullopt, l)));
  const uint64_t c = exec(f, "INSERT INTO products(id, name, category_id, price) VALUES(1, 'tv', 2, 300)");
  REQUIRE(t.wait_for(c, 30s));
  CHECK_FALSE(must(t.get("cat2")));
  CHECK_FALSE(must(t.get("all")));
  CHECK(must(t.get("cat3")) == opt_str("x"));
  // A value computed before that change is refused for its tags; one computed after is kept.
  CHECK_FALSE(must(t.set("cat2", "old", {"category:2"}, std::nullopt, c - 1)));
  CHECK(must(t.set("cat2", "new", {"category:2"}, std::nullopt, c)));

  SECTION("a tagged read-through fill racing the tag's invalidation is not stored") {
    must(t.get("cat2-list", {"category:2"}, [&](dosql::read_snapshot& s) -> dosql::result<opt_str> {
      auto q = s.query("SELECT count(*) FROM products WHERE category_id = 2");
      if (!q) return q.err();
      const uint64_t c2 = exec(f, "INSERT INTO products(id, name, category_id, price) VALUES(2, 'radio', 2, 30)");
      REQUIRE(t.wait_for(c2, 30s));
      return opt_str(dosql::to_string(q->rows[0][0]));
    }));
    CHECK_FALSE(must(t.get("cat2-list")));
    CHECK(t.stats().fills_refused == 1);
  }
}

TEST_CASE("markers are bounded: pruning raises the watermark and refuses what it can no longer judge", "[cache][markers]") {
  const std::string which = GENERATE(as<std::string>{}, "memory", "redis");
  INFO("backend " << which);
  auto rs = server_for(which);
  auto b = make_backend(which, rs.get());
  for (uint64_t i = 1; i <= 1000; ++i) must(b->apply(i, {op{op::kind::del_key, "k" + std::to_string(i), "", 0ms}}));
  must(b->apply(1001, {op{op::kind::del_prefix, "p:", "", 0ms}, op{op::kind::del_tag, "t", "", 0ms}}));
  CHECK(must(b->marker_count()) == 1002);
  const uint64_t w = must(b->prune(0, 100));
  CHECK(w >= 900);
  CHECK(must(b->marker_count()) <= 102);
  CHECK(must(b->fill("k5", "v", 500, 1h)) == fill_outcome::stale);       // below the watermark
  CHECK(must(b->fill("k999", "v", 998, 1h)) == fill_outcome::stale);     // its marker is kept
  CHECK(must(b->fill("k999", "v", 999, 1h)) == fill_outcome::stored);
  CHECK(must(b->fill("p:x", "v", 1000, 1h)) == fill_outcome::stale);     // prefix marker 1001
  CHECK(must(b->fill("y", "v", 1000, 1h, {"t"})) == fill_outcome::stale);  // tag marker 1001
  CHECK(must(b->fill("y", "v", 1001, 1h, {"t"})) == fill_outcome::stored);
  // Raising it past everything drops every marker; older reads are refused by the watermark.
  CHECK(must(b->prune(2000, 100)) == 2000);
  CHECK(must(b->marker_count()) == 0);
  CHECK(must(b->fill("z", "v", 1999, 1h)) == fill_outcome::stale);
  CHECK(must(b->fill("z", "v", 2000, 1h)) == fill_outcome::stored);
}

TEST_CASE("randomized readers and writers: no read returns a value older than an applied commit", "[cache][workload]") {
  const std::string which = GENERATE(as<std::string>{}, "memory", "redis");
  const bool tight = GENERATE(false, true);  // tight: a tiny marker window, pruned all the time
  const uint64_t seed = std::random_device{}();
  INFO("backend " << which << ", tight markers " << tight << ", seed " << seed);
  auto rs = server_for(which);
  db_fixture f;
  auto b = make_backend(which, rs.get());
  auto cfg = guide_config();
  if (tight) {
    cfg.invalidation.marker_max_age = 20ms;
    cfg.invalidation.max_markers = 5;
  }
  auto cm = start(f, b, cfg);
  workload_options wo;
  wo.keys = 15;
  wo.writers = 2;
  wo.readers = 3;
  wo.seed = seed;
  wo.read_your_writes_every = 5;
  workload w(f.db, *cm, wo);
  must(w.prepare());
  std::atomic<bool> stop{false};
  dosql::error err;
  std::thread runner([&] { err = w.run(stop); });
  for (int i = 0; i < 6000 && w.writes() < 1500; ++i) std::this_thread::sleep_for(10ms);  // (hang guard)
  stop = true;
  runner.join();
  must(err);
  REQUIRE(cm->wait_for(f.db->last_lsn(), 60s));
  w.hist().check();
  for (auto& ex : w.hist().stale_examples()) UNSCOPED_INFO(ex);
  CHECK(w.hist().stale_reads() == 0);
  CHECK(w.hist().reads_checked() >= w.reads());
  CHECK(w.ryw_checks() > 0);
  CHECK(cm->stats().hits > 0);
  must(w.compare_cache_with_database());
}
