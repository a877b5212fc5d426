// The load generator (see generator.hpp).
#include "generator.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <random>
#include <vector>

namespace dashboard {

using dosql::value;

struct load_generator::state {
  struct open_order {
    std::string id;
    std::string status;
  };
  std::mt19937_64 rng;
  std::vector<open_order> open;  // pending, paid or shipped
  std::deque<std::string> recent_cancelled;
  uint64_t next_id = 0;
  std::string prefix;
};

load_generator::load_generator(std::shared_ptr<dosql::database> db, double rate, uint64_t limit, uint64_t seed)
    : db_(std::move(db)), rate_(rate), limit_(limit), seed_(seed), s_(std::make_unique<state>()) {}

load_generator::~load_generator() { stop(); }

dosql::error load_generator::start() {
  if (!(rate_ > 0)) return dosql::error(dosql::ec::invalid_argument, "--generate: the rate must be > 0 changes/s");
  s_->rng.seed(seed_ ? seed_ : std::random_device{}());
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06llx", static_cast<unsigned long long>(s_->rng() & 0xffffff));
  s_->prefix = std::string("ord-") + buf + "-";
  auto open = db_->query("SELECT id, status FROM orders WHERE status IN ('pending', 'paid', 'shipped') LIMIT 10000");
  if (!open) return open.err();
  for (auto& r : open->rows)
    if (auto* id = std::get_if<std::string>(&r[0]))
      if (auto* st = std::get_if<std::string>(&r[1])) s_->open.push_back({*id, *st});
  stop_ = false;
  running_ = true;
  thread_ = std::thread([this] { run(); });
  return {};
}

void load_generator::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void load_generator::run() {
  using clock = std::chrono::steady_clock;
  auto& s = *s_;
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(s.rng); };
  auto pick = [&](size_t n) { return static_cast<size_t>(std::uniform_int_distribution<size_t>(0, n - 1)(s.rng)); };
  auto cents = [](double x) { return std::round(x * 100) / 100; };

  // One change inside `tx`.
  auto change = [&](dosql::transaction& tx) -> dosql::error {
    // New orders while few are in progress; the rest split 76/12/12 into status moves, total
    // corrections and deletes, so the orders in progress stay around a few hundred.
    const double p = s.open.size() < 300 ? 0.34 : 0.12;
    double r = uniform(0, 1);
    if (s.open.empty() || r < p) {  // a new order
      std::string id = s.prefix + std::to_string(++s.next_id);
      auto res = tx.exec("INSERT INTO orders(id, user_id, total, status, created_at) VALUES(?, ?, ?, 'pending', ?)",
                         {id, "user-" + std::to_string(1 + pick(500)), cents(uniform(5, 500)), dosql::now_ms()});
      if (!res) return res.err();
      s.open.push_back({std::move(id), "pending"});
      return {};
    }
    r = (r - p) / (1 - p);
    if (r < 0.76) {  // the next status
      size_t i = pick(s.open.size());
      auto& o = s.open[i];
      std::string next;
      bool cancel = uniform(0, 1) < (o.status == "pending" ? 0.10 : o.status == "paid" ? 0.04 : 0.0);
      if (cancel) next = "cancelled";
      else if (o.status == "pending") next = "paid";
      else if (o.status == "paid") next = "shipped";
      else next = "delivered";
      auto res = tx.exec("UPDATE orders SET status = ? WHERE id = ?", {next, o.id});
      if (!res) return res.err();
      if (next == "cancelled") {
        s.recent_cancelled.push_back(o.id);
        if (s.recent_cancelled.size() > 100) s.recent_cancelled.pop_front();
      }
      if (next == "cancelled" || next == "delivered") {
        o = std::move(s.open.back());
        s.open.pop_back();
      } else {
        o.status = std::move(next);
      }
      return {};
    }
    if (r < 0.88) {  // a corrected total
      auto& o = s.open[pick(s.open.size())];
      auto res = tx.exec("UPDATE orders SET total = ROUND(total * ?, 2) WHERE id = ?", {uniform(0.8, 1.1), o.id});
      return res ? dosql::error{} : res.err();
    }
    // A delete: a recently cancelled order (often among the newest), else the oldest finished one.
    if (!s.recent_cancelled.empty() && uniform(0, 1) < 0.6) {
      std::string id = std::move(s.recent_cancelled.back());
      s.recent_cancelled.pop_back();
      auto res = tx.exec("DELETE FROM orders WHERE id = ?", {id});
      if (!res) return res.err();
      if (res->changes > 0) return {};
    }
    auto res = tx.exec(
        "DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE status IN ('delivered', 'cancelled') "
        "ORDER BY created_at, id LIMIT 1)");
    return res ? dosql::error{} : res.err();
  };

  const auto t0 = clock::now();
  uint64_t done = 0;
  while (!stop_ && (limit_ == 0 || done < limit_)) {
    double elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    uint64_t due = static_cast<uint64_t>(elapsed * rate_);
    if (limit_) due = std::min(due, limit_);
    if (due <= done) {
      auto at = t0 + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>((done + 1) / rate_));
      std::this_thread::sleep_until(std::min(at, clock::now() + std::chrono::milliseconds(50)));
      continue;
    }
    uint64_t n = std::min<uint64_t>(due - done, 500);
    auto tx = db_->begin();
    if (!tx) {
      err_ = tx.err();
      break;
    }
    dosql::error e;
    for (uint64_t i = 0; i < n && !e; ++i) e = change(*tx);
    if (!e) {
      auto c = tx->commit();
      if (!c) e = c.err();
    }
    if (e) {
      err_ = e;
      break;
    }
    done += n;
    changes_ = done;
  }
  if (err_ && err_.code() != dosql::ec::closed)
    std::fprintf(stderr, "dosql-dashboard: generator stopped: %s\n", err_.to_string().c_str());
  running_ = false;
}

}  // namespace dashboard
