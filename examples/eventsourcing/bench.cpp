// dosql-eventsourcing-bench: the event store's cost and the projector's lag (docs/BENCHMARKS.md,
// "Event sourcing").
//   appends/s: event_store::append (the optimistic-concurrency check + the insert, one
//   transaction each) with 1 and 4 writers, each on its own aggregates, beside plain autocommit
//   INSERTs of the same rows into the same table;
//   projection lag: one writer appends at a fixed rate (default 1000 events/s) with the
//   projector running; per event, the time from append() returning to the projector's commit
//   covering it; p50/p99.
// Usage: dosql-eventsourcing-bench DIR [--seconds N] [--rate R]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "order.hpp"
#include "projector.hpp"

using namespace es;
using clk = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "dosql-eventsourcing-bench: %s\n", what.c_str());
  std::exit(1);
}

double run_writers(int writers, double seconds, const std::function<void(int, int64_t)>& one) {
  std::atomic<int64_t> total{0};
  auto end = clk::now() + std::chrono::duration<double>(seconds);
  auto t0 = clk::now();
  std::vector<std::thread> ts;
  for (int w = 0; w < writers; ++w)
    ts.emplace_back([&, w] {
      int64_t n = 0;
      while (clk::now() < end) one(w, n++);
      total += n;
    });
  for (auto& t : ts) t.join();
  return static_cast<double>(total.load()) / std::chrono::duration<double>(clk::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: dosql-eventsourcing-bench DIR [--seconds N] [--rate R]");
  std::string dir = argv[1];
  double seconds = 5;
  int rate = 1000;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (a == "--rate") rate = std::atoi(argv[i + 1]);
    else die("unknown option " + a);
  }
  std::filesystem::remove_all(dir);
  dosql::runtime rt;
  auto db = rt.open(dir);
  if (!db) die(db.err().to_string());
  auto store = event_store::open(*db);
  if (!store) die(store.err().to_string());
  json payload{{"productId", "sku-1"}, {"quantity", 2}, {"price", 9.5}};
  std::string payload_s = payload.dump();
  std::printf("{\"bench\":\"eventsourcing\",\"seconds\":%g,\"results\":[\n", seconds);
  for (int writers : {1, 4}) {
    // Each writer appends to its own aggregates, 20 events each: no conflicts, the check's cost.
    std::vector<int64_t> version(static_cast<size_t>(writers), 0);
    double a = run_writers(writers, seconds, [&](int w, int64_t n) {
      std::string agg = "a" + std::to_string(writers) + "-" + std::to_string(w) + "-" + std::to_string(n / 20);
      auto r = (*store)->append({agg, "Bench"}, n % 20, {new_event{"ItemAdded", payload, {}}});
      if (!r) die(r.err().to_string());
    });
    double p = run_writers(writers, seconds, [&](int w, int64_t n) {
      std::string agg = "p" + std::to_string(writers) + "-" + std::to_string(w) + "-" + std::to_string(n / 20);
      auto r = (*db)->exec("INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, version, timestamp, payload, metadata) "
                           "VALUES (?, ?, 'Bench', 'ItemAdded', ?, ?, ?, '{}')",
                           {new_uuid(), agg, n % 20 + 1, dosql::now_ms(), payload_s});
      if (!r) die(r.err().to_string());
    });
    std::printf("{\"writers\":%d,\"append_per_s\":%.0f,\"plain_insert_per_s\":%.0f},\n", writers, a, p);
    std::fflush(stdout);
  }
  // Projection lag at a fixed rate.
  std::mutex mu;
  std::vector<std::pair<uint64_t, clk::time_point>> sent;  // commit LSN, when append returned
  std::vector<double> lags_ms;
  size_t next = 0;
  projector_options po;
  po.on_applied = [&](uint64_t lsn) {
    auto now = clk::now();
    std::lock_guard<std::mutex> g(mu);
    // The position is the last event's LSN; its commit LSN is the next one.
    while (next < sent.size() && sent[next].first <= lsn + 1) {
      lags_ms.push_back(std::chrono::duration<double, std::milli>(now - sent[next].second).count());
      ++next;
    }
  };
  order_service svc(**store, 0);
  auto p = projector::start(*db, po);
  if (!p) die(p.err().to_string());
  if (auto e = (*p)->wait_caught_up(std::chrono::seconds(120))) die(e.to_string());
  {
    std::lock_guard<std::mutex> g(mu);
    lags_ms.clear();
  }
  auto t0 = clk::now();
  auto period = std::chrono::nanoseconds(1'000'000'000LL / rate);
  int64_t n = static_cast<int64_t>(seconds * rate);
  for (int64_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(t0 + i * period);
    std::string id = "lag-" + std::to_string(i / 4);
    auto r = svc.execute(id, [&](const order_state& s) -> result<std::vector<new_event>> {
      if (s.status == order_status::none) return create_order(s, "c", {{"p", 1, 1.0}}, "addr");
      return add_items(s, {{"p", 1, 1.0}});
    });
    if (!r) die(r.err().to_string());
    auto now = clk::now();
    std::lock_guard<std::mutex> g(mu);
    sent.emplace_back(r->commit_lsn, now);
  }
  if (auto e = (*p)->wait_caught_up(std::chrono::seconds(120))) die(e.to_string());
  (*p)->stop();
  double achieved = static_cast<double>(n) / std::chrono::duration<double>(clk::now() - t0).count();
  std::lock_guard<std::mutex> g(mu);
  std::sort(lags_ms.begin(), lags_ms.end());
  auto pct = [&](double q) { return lags_ms.empty() ? 0.0 : lags_ms[std::min(lags_ms.size() - 1, static_cast<size_t>(q * static_cast<double>(lags_ms.size())))]; };
  std::printf("{\"projection_lag\":{\"rate_per_s\":%d,\"achieved_per_s\":%.0f,\"events\":%zu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}}\n]}\n",
              rate, achieved, lags_ms.size(), pct(0.5), pct(0.99), lags_ms.empty() ? 0.0 : lags_ms.back());
  return 0;
}
