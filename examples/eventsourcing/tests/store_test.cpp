// The event store and the Order aggregate: optimistic concurrency under real threads, the
// append-only table, snapshots, and the change-stream subscription.
#include <atomic>
#include <barrier>
#include <future>
#include <map>
#include <thread>

#include "support.hpp"

using namespace es;
using namespace es::test;

namespace {

int64_t count_events(dosql::database& db) {
  auto q = must(db.query("SELECT count(*) FROM events"));
  return std::get<int64_t>(q.rows[0][0]);
}

new_event note(int thread, int64_t version) {
  return {"Noted", json{{"thread", thread}, {"tried", version}}, {"user-" + std::to_string(thread), "", ""}};
}

}  // namespace

TEST_CASE("many threads appending to one aggregate: one winner per version, the rest conflict, no gap",
          "[eventsourcing][store][concurrency]") {
  temp_dir d;
  store_fixture f(d.path());
  constexpr int threads = 8;
  constexpr int64_t versions = 40;
  std::barrier sync(threads);
  std::vector<std::map<int64_t, std::string>> won(threads);  // expected version -> outcome
  std::atomic<int> conflicts{0}, other{0};
  std::vector<std::string> bad_messages;
  std::mutex mu;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      sync.arrive_and_wait();
      // Every thread tries every version in turn: for each, exactly one must get in.
      for (int64_t v = 0; v < versions; ++v) {
        auto r = f.store->append({"agg-1", "Counter"}, v, {note(t, v)});
        if (r) {
          won[static_cast<size_t>(t)][v] = r->events.at(0).event_id;
          continue;
        }
        if (r.err().code() != errc::conflict) {
          ++other;
          std::lock_guard<std::mutex> g(mu);
          bad_messages.push_back(r.err().to_string());
          continue;
        }
        ++conflicts;
        const std::string& m = r.err().message();
        bool names_all = m.find("aggregate agg-1") != std::string::npos &&
                         m.find("expected version " + std::to_string(v) + ",") != std::string::npos &&
                         m.find("actual version ") != std::string::npos;
        if (!names_all) {
          std::lock_guard<std::mutex> g(mu);
          bad_messages.push_back(m);
        }
      }
    });
  for (auto& t : ts) t.join();
  INFO((bad_messages.empty() ? std::string() : bad_messages.front()));
  CHECK(other == 0);
  CHECK(bad_messages.empty());
  std::map<int64_t, int> winners;
  for (auto& w : won)
    for (auto& [v, id] : w) ++winners[v];
  REQUIRE(winners.size() == static_cast<size_t>(versions));
  for (auto& [v, n] : winners) {
    INFO("expected version " << v);
    CHECK(n == 1);
  }
  CHECK(conflicts == threads * versions - versions);
  // The stream: versions 1..N without a gap, each written by the thread that won it.
  auto h = must(f.store->history("agg-1"));
  REQUIRE(h.size() == static_cast<size_t>(versions));
  for (size_t i = 0; i < h.size(); ++i) {
    CHECK(h[i].version == static_cast<int64_t>(i + 1));
    int t = h[i].payload.at("thread").get<int>();
    CHECK(h[i].payload.at("tried").get<int64_t>() == h[i].version - 1);
    CHECK(won[static_cast<size_t>(t)].at(h[i].version - 1) == h[i].event_id);
    CHECK(h[i].metadata.at("userId") == "user-" + std::to_string(t));
  }
  CHECK(count_events(*f.db) == versions);
}

TEST_CASE("a conflict or a bad append writes nothing", "[eventsourcing][store]") {
  temp_dir d;
  store_fixture f(d.path());
  must(f.store->append({"a", "Counter"}, 0, {note(0, 0), note(0, 1)}));
  uint64_t lsn = f.db->last_lsn();
  auto r = f.store->append({"a", "Counter"}, 1, {note(0, 2)});
  REQUIRE_FALSE(r);
  CHECK(r.err().code() == errc::conflict);
  CHECK(r.err().message() == "concurrency conflict on aggregate a: expected version 1, actual version 2");
  r = f.store->append({"a", "Counter"}, 5, {note(0, 2)});
  REQUIRE_FALSE(r);
  CHECK(r.err().message() == "concurrency conflict on aggregate a: expected version 5, actual version 2");
  r = f.store->append({"a", "Other"}, 2, {note(0, 2)});
  REQUIRE_FALSE(r);
  CHECK(r.err().code() == errc::invalid_input);
  CHECK(r.err().message() == "append to a: it is a Counter, not a Other");
  r = f.store->append({"a", "Counter"}, 2, {});
  REQUIRE_FALSE(r);
  CHECK(r.err().code() == errc::invalid_input);
  r = f.store->append({"a", "Counter"}, 2, {new_event{"X", json::array(), {}}});
  REQUIRE_FALSE(r);
  CHECK(r.err().message() == "append to a: the payload of X is not a JSON object");
  CHECK(count_events(*f.db) == 2);
  CHECK(f.db->last_lsn() == lsn);  // nothing reached the WAL either
}

TEST_CASE("the events table is append-only: UPDATE, DELETE and REPLACE are refused", "[eventsourcing][store]") {
  temp_dir d;
  store_fixture f(d.path());
  auto a = must(f.store->append({"a", "Counter"}, 0, {note(0, 0)}));
  auto before = must(f.db->query("SELECT * FROM events"));
  auto upd = f.db->exec("UPDATE events SET payload = '{}'");
  REQUIRE_FALSE(upd);
  CHECK(upd.err().to_string().find("events is append-only: an UPDATE of an event is refused") != std::string::npos);
  auto del = f.db->exec("DELETE FROM events WHERE aggregate_id = 'a'");
  REQUIRE_FALSE(del);
  CHECK(del.err().to_string().find("events is append-only: a DELETE of an event is refused") != std::string::npos);
  auto rep = f.db->exec("INSERT OR REPLACE INTO events VALUES (?, 'a', 'Counter', 'X', 1, 0, '{}', NULL)",
                        {a.events[0].event_id});
  REQUIRE_FALSE(rep);
  CHECK(rep.err().to_string().find("events is append-only: an event with this event_id") != std::string::npos);
  auto rep2 = f.db->exec("REPLACE INTO events VALUES ('other-id', 'a', 'Counter', 'X', 1, 0, '{}', NULL)");
  REQUIRE_FALSE(rep2);
  auto after = must(f.db->query("SELECT * FROM events"));
  CHECK(after.rows == before.rows);
}

TEST_CASE("snapshots: load starts from the newest one and folds to the same state as a full replay",
          "[eventsourcing][store][snapshot]") {
  temp_dir d;
  store_fixture f(d.path());
  order_service svc(*f.store, 10);
  must(svc.execute("o1", [](const order_state& s) {
    return create_order(s, "c1", {{"p0", 1, 1.25}}, "1 Main St");
  }));
  for (int i = 1; i < 24; ++i)
    must(svc.execute("o1", [i](const order_state& s) {
      return add_items(s, {{"p" + std::to_string(i), i, 0.5 * i}});
    }));
  auto loaded = must(f.store->load("o1"));
  REQUIRE(loaded.snap);
  CHECK(loaded.snap->version == 20);
  CHECK(loaded.events.size() == 4);  // 21..24, not 24 events
  auto from_snapshot = must(fold("o1", loaded));
  loaded_stream all;
  all.events = must(f.store->history("o1"));
  auto replayed = must(fold("o1", all));
  CHECK(from_snapshot.to_json() == replayed.to_json());
  CHECK(replayed.version == 24);
  CHECK(replayed.items.size() == 24);
  // Several events in one append crossing a multiple: the snapshot is at the append's end.
  must(svc.execute("o1", [](const order_state& s) {
    return add_items(s, {{"x", 1, 1}, {"y", 1, 1}, {"z", 1, 1}, {"w", 1, 1}, {"v", 1, 1}, {"u", 1, 1}});
  }));
  loaded = must(f.store->load("o1"));
  REQUIRE(loaded.snap);
  CHECK(loaded.snap->version == 30);
  CHECK(loaded.events.empty());
  all.events = must(f.store->history("o1"));
  CHECK(must(fold("o1", loaded)).to_json() == must(fold("o1", all)).to_json());
}

TEST_CASE("the Order rules: each violation is a clear error and appends nothing", "[eventsourcing][order]") {
  temp_dir d;
  store_fixture f(d.path());
  order_service svc(*f.store, 3);
  auto expect = [&](const std::string& id, const order_service::decide_fn& fn, errc code, const std::string& msg) {
    int64_t n = count_events(*f.db);
    auto r = svc.execute(id, fn);
    REQUIRE_FALSE(r);
    CHECK(r.err().code() == code);
    CHECK(r.err().message() == msg);
    CHECK(count_events(*f.db) == n);
  };
  expect("o", [](auto& s) { return confirm_order(s); }, errc::not_found, "order o does not exist");
  expect("o", [](auto& s) { return create_order(s, "c", {}, "addr"); }, errc::invalid_input, "order o: an order needs at least one item");
  expect("o", [](auto& s) { return create_order(s, "c", {{"p", 0, 1}}, "addr"); }, errc::invalid_input,
         "order o: item p has quantity 0 (at least 1)");
  expect("o", [](auto& s) { return create_order(s, "c", {{"p", 1, -1}}, "addr"); }, errc::invalid_input,
         "order o: item p has price -1.000000 (a finite number >= 0)");
  expect("o", [](auto& s) { return create_order(s, "", {{"p", 1, 1}}, "addr"); }, errc::invalid_input, "order o: customerId is empty");
  must(svc.execute("o", [](auto& s) { return create_order(s, "c", {{"p", 1, 1}}, "addr"); }));
  expect("o", [](auto& s) { return create_order(s, "c", {{"p", 1, 1}}, "addr"); }, errc::rule_violation,
         "cannot create order o: it exists already (version 1)");
  expect("o", [](auto& s) { return ship_order(s, "T", "UPS"); }, errc::rule_violation, "cannot ship order o: it is pending (not confirmed)");
  must(svc.execute("o", [](auto& s) { return confirm_order(s); }));
  expect("o", [](auto& s) { return confirm_order(s); }, errc::rule_violation, "cannot confirm order o: it is confirmed");
  expect("o", [](auto& s) { return add_items(s, {{"q", 1, 1}}); }, errc::rule_violation, "cannot add items to order o: it is confirmed");
  expect("o", [](auto& s) { return ship_order(s, "", "UPS"); }, errc::invalid_input, "order o: trackingNumber is empty");
  must(svc.execute("o", [](auto& s) { return cancel_order(s, "changed my mind"); }));
  expect("o", [](auto& s) { return ship_order(s, "T", "UPS"); }, errc::rule_violation, "cannot ship order o: it is cancelled");
  expect("o", [](auto& s) { return cancel_order(s, "again"); }, errc::rule_violation, "cannot cancel order o: it is cancelled");
  must(svc.execute("s", [](auto& s) { return create_order(s, "c", {{"p", 1, 1}}, "addr"); }));
  must(svc.execute("s", [](auto& s) { return confirm_order(s); }));
  must(svc.execute("s", [](auto& s) { return ship_order(s, "T1", "DHL"); }));
  expect("s", [](auto& s) { return cancel_order(s, "late"); }, errc::rule_violation, "cannot cancel order s: it is shipped");
  expect("s", [](auto& s) { return ship_order(s, "T2", "DHL"); }, errc::rule_violation, "cannot ship order s: it is shipped");
  // A stale expected version is a conflict, also through the service.
  auto r = svc.execute("s", [](auto& s) { return cancel_order(s, "x"); }, {}, 1);
  REQUIRE_FALSE(r);
  CHECK(r.err().message() == "concurrency conflict on aggregate s: expected version 1, actual version 3");
}

TEST_CASE("subscribe_to_events follows the events table's change stream, filtered by aggregate type",
          "[eventsourcing][store][stream]") {
  temp_dir d;
  store_fixture f(d.path());
  uint64_t from = f.db->last_lsn();
  must(f.store->append({"o1", "Order"}, 0, {note(0, 0)}));
  must(f.store->append({"c1", "Counter"}, 0, {note(0, 0)}));
  auto sub = must(f.store->subscribe_to_events(from, {"Order"}));
  auto first = sub->next();
  REQUIRE(first);
  CHECK(first->event.aggregate_id == "o1");
  CHECK(first->lsn > from);
  // Live: the next event arrives when it commits (the subscription blocks, it does not poll).
  auto next = std::async(std::launch::async, [&] { return sub->next(); });
  must(f.store->append({"c1", "Counter"}, 1, {note(0, 1)}));  // filtered out
  auto a = must(f.store->append({"o1", "Order"}, 1, {note(0, 1), note(0, 2)}));
  REQUIRE(next.wait_for(std::chrono::seconds(30)) == std::future_status::ready);  // (a hang guard)
  auto second = next.get();
  REQUIRE(second);
  CHECK(second->event.event_id == a.events[0].event_id);
  CHECK(second->event.version == 2);
  CHECK(second->lsn > first->lsn);
  auto third = sub->next();
  REQUIRE(third);
  CHECK(third->event.version == 3);
  CHECK(third->event.payload == json({{"thread", 0}, {"tried", 2}}));
  sub->stop();
  CHECK_FALSE(sub->next());
}
