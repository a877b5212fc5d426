// The dashboard's metrics equal the SQL aggregates over `orders` as of the LSN they say they are
// at: every published state is checked against COUNT(*), SUM(total), COUNT(*) GROUP BY status
// and the 10 newest rows read at that very commit, through a random workload of inserts,
// updates (status, total, created_at, NULLs) and deletes, many of them of the newest orders
// (the recent list must refill), and a restart of the consumer half-way.
#include <catch2/catch.hpp>

#include <dosql/dosql.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "metrics.hpp"
#include "common/scratch.hpp"

using namespace dashboard;
using dosql::value;

namespace {

struct sql_state {
  int64_t count = 0;
  double sum = 0;
  std::map<std::string, int64_t> by_status;
  std::vector<order> recent;
};

using dosql::test::must;

sql_state read_sql(dosql::read_snapshot& s) {
  sql_state out;
  auto a = must(s.query("SELECT COUNT(*), TOTAL(total) FROM orders"));
  out.count = std::get<int64_t>(a.rows[0][0]);
  out.sum = std::get<double>(a.rows[0][1]);
  for (auto& r : must(s.query("SELECT status, COUNT(*) FROM orders GROUP BY status")).rows)
    out.by_status[status_key(r[0])] = std::get<int64_t>(r[1]);
  for (auto& r : must(s.query("SELECT id, user_id, total, status, created_at FROM orders "
                              "ORDER BY created_at DESC, id DESC LIMIT 10")).rows)
    out.recent.push_back(order{r[0], r[1], r[2], r[3], r[4]});
  return out;
}

using dosql::test::temp_dir;

struct collector {
  std::mutex mu;
  std::vector<std::shared_ptr<const metrics>> states;
  void add(std::shared_ptr<const metrics> m) {
    std::lock_guard<std::mutex> g(mu);
    states.push_back(std::move(m));
  }
  std::shared_ptr<const metrics> last() {
    std::lock_guard<std::mutex> g(mu);
    return states.empty() ? nullptr : states.back();
  }
};

}  // namespace

TEST_CASE("dashboard metrics equal SQL aggregates at every LSN they publish, across a consumer restart",
          "[dashboard][metrics]") {
  temp_dir dir;
  dosql::runtime rt;
  auto db = must(rt.open(dir / "data"));
  must(db->exec(orders_schema));

  std::map<uint64_t, sql_state> expected;  // commit LSN -> SQL state as of that commit
  auto record = [&] {
    auto s = must(db->snapshot());
    expected[s.lsn()] = read_sql(s);
  };
  std::mt19937_64 rng(20261203);
  auto pick = [&](int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(rng); };
  int64_t next_id = 0;
  auto random_value = [&](int kind) -> value {
    if (pick(20) == 0) return nullptr;  // NULLs count too (COUNT(*), SUM skips them, GROUP BY keeps them)
    if (kind == 0) return static_cast<double>(pick(100000)) / 100;
    static const char* statuses[] = {"pending", "paid", "shipped", "delivered", "cancelled"};
    return std::string(statuses[pick(5)]);
  };
  // created_at from a small range: ties (ordered by id) and orders older than the newest.
  auto created = [&]() -> value { return pick(30) == 0 ? value(nullptr) : value(int64_t{1000 + pick(400)}); };

  auto one_change = [&](dosql::transaction& tx) {
    int64_t r = pick(100);
    if (r < 45 || next_id < 300) {
      auto id = "o" + std::to_string(++next_id);
      must(tx.exec("INSERT INTO orders VALUES(?, ?, ?, ?, ?)",
                   {id, "u" + std::to_string(pick(20)), random_value(0), random_value(1), created()}));
    } else if (r < 55) {
      must(tx.exec("UPDATE orders SET status = ? WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)",
                   {random_value(1)}));
    } else if (r < 62) {
      must(tx.exec("UPDATE orders SET total = ? WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)",
                   {random_value(0)}));
    } else if (r < 70) {  // a recent order gets older or newer: it leaves or enters the top 10
      must(tx.exec("UPDATE orders SET created_at = ? WHERE id = (SELECT id FROM orders ORDER BY created_at DESC, "
                   "id DESC LIMIT 1 OFFSET ?)",
                   {created(), pick(12)}));
    } else if (r < 75) {
      must(tx.exec("DELETE FROM orders WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)"));
    } else if (r < 93) {  // one of the newest
      must(tx.exec("DELETE FROM orders WHERE id = (SELECT id FROM orders ORDER BY created_at DESC, id DESC LIMIT 1 "
                   "OFFSET ?)",
                   {pick(10)}));
    } else if (r < 94) {  // many of the newest at once: beyond what the state keeps
      must(tx.exec("DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY created_at DESC, id DESC LIMIT ?)",
                   {int64_t{10 + pick(20)}}));
    } else {
      must(tx.exec("UPDATE orders SET id = id || 'x' WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)"));
    }
  };
  auto workload = [&](int transactions) {
    for (int t = 0; t < transactions; ++t) {
      auto tx = must(db->begin());
      int n = 1 + static_cast<int>(pick(t % 50 == 0 ? 120 : 5));
      for (int i = 0; i < n; ++i) one_change(tx);
      must(tx.commit());
      record();
    }
  };

  {
    auto tx = must(db->begin());
    for (int i = 0; i < 300; ++i) one_change(tx);
    must(tx.commit());
  }
  workload(40);  // rows before the consumer starts: its snapshot holds them
  collector published;
  // A small prefix (15 kept for 10 shown): deletes of the newest soon leave fewer than 10 known.
  metrics_feed::options small;
  small.keep = 15;
  auto feed = must(metrics_feed::start(db, [&](std::shared_ptr<const metrics> m) { published.add(std::move(m)); }, small));
  workload(300);
  feed->stop();  // the consumer goes away; writes go on
  size_t first_run = published.states.size();
  workload(60);
  auto feed2 =
      must(metrics_feed::start(db, [&](std::shared_ptr<const metrics> m) { published.add(std::move(m)); }, small));
  workload(300);

  const uint64_t last = expected.rbegin()->first;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);  // a hang guard
  while ((!published.last() || published.last()->lsn < last) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  feed2->stop();
  REQUIRE(published.last()->lsn == last);

  uint64_t reloads = 0, prev = 0;
  size_t i = 0;
  for (auto& m : published.states) {
    INFO("published state " << i << " at lsn " << m->lsn);
    auto it = expected.find(m->lsn);
    REQUIRE(it != expected.end());  // always at a commit
    const auto& want = it->second;
    CHECK(m->total_orders == want.count);
    CHECK(m->total_revenue == Approx(want.sum).margin(1e-4));
    CHECK(m->orders_by_status == want.by_status);
    REQUIRE(m->recent_orders.size() == want.recent.size());
    for (size_t k = 0; k < want.recent.size(); ++k) {
      INFO("recent order " << k);
      CHECK(m->recent_orders[k] == want.recent[k]);
    }
    if (i != first_run) CHECK(m->lsn >= prev);  // in commit order (a restart starts anew)
    prev = m->lsn;
    reloads = std::max(reloads, m->reloads);
    ++i;
  }
  INFO("reloads: " << reloads);
  CHECK(reloads > 5);  // the recent list did refill from the database (not only the start)
  CHECK(published.states.size() > 50);
  REQUIRE_FALSE(db->close());
}

TEST_CASE("the recent-orders prefix: deletes shrink it, newer rows join it, an unknown list asks for a reload",
          "[dashboard][metrics]") {
  temp_dir dir;
  dosql::runtime rt;
  auto db = must(rt.open(dir / "data"));
  must(db->exec(orders_schema));
  for (int i = 0; i < 30; ++i)
    must(db->exec("INSERT INTO orders VALUES(?, 'u', 1.5, 'paid', ?)", {"o" + std::to_string(i), int64_t{i}}));
  metrics_state st(10, 12);
  {
    auto s = must(db->snapshot());
    REQUIRE_FALSE(st.load(s));
  }
  CHECK(st.prefix_size() == 12);
  CHECK_FALSE(st.needs_reload());
  // Deleting the 3 newest leaves 9 known: a reload is needed (the 10th is not known).
  must(db->exec("DELETE FROM orders WHERE created_at >= 27"));
  auto sub = must(dosql::cdc::create_cdc(db).subscribe([&] {
    dosql::cdc::subscribe_options o;
    o.from_lsn = st.lsn();
    o.stop_at_tail = true;
    o.filter.tables = {"orders"};
    return o;
  }()));
  int n = 0;
  for (const auto& e : *sub) {
    REQUIRE_FALSE(st.apply(dosql::view_of(e)));
    ++n;
  }
  CHECK(n == 3);
  CHECK(st.prefix_size() == 9);
  CHECK(st.needs_reload());
  auto m = st.publish();
  CHECK(m->total_orders == 27);
  CHECK(m->total_revenue == Approx(27 * 1.5));
  CHECK(m->recent_orders.size() == 9);
}
