#include "actors/durable_tail.hpp"


namespace dosql::actors {

void durable_tail::publish(uint64_t lsn) {
  if (advance(lsn)) wake();
}

bool durable_tail::advance(uint64_t lsn) {
  // Under the mutex: a waiter checks the value and sleeps under it, so none misses the wake().
  std::lock_guard<std::mutex> g(mu_);
  if (lsn <= durable_.load(std::memory_order_relaxed)) return false;
  durable_.store(lsn, std::memory_order_release);
  return true;
}

void durable_tail::fail(error e) {
  {
    std::lock_guard<std::mutex> g(mu_);
    err_ = std::move(e);
    failed_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

error durable_tail::failure() {
  std::lock_guard<std::mutex> g(mu_);
  return err_;
}

void durable_tail::publish_written(uint64_t lsn) {
  {
    std::lock_guard<std::mutex> g(mu_);
    written_.store(lsn, std::memory_order_release);
  }
  cv_.notify_all();
}

error durable_tail::wait_written(uint64_t lsn) {
  auto done = [&] { return written_.load(std::memory_order_acquire) >= lsn || durable_.load(std::memory_order_acquire) >= lsn; };
  if (done()) return {};
  std::unique_lock<std::mutex> g(mu_);
  cv_.wait(g, [&] { return done() || failed_.load(); });
  if (done()) return {};
  return err_;
}

error durable_tail::wait(uint64_t lsn) {
  if (value() >= lsn) return {};
  std::unique_lock<std::mutex> g(mu_);
  cv_.wait(g, [&] { return durable_.load(std::memory_order_relaxed) >= lsn || failed_.load(); });
  if (durable_.load(std::memory_order_relaxed) >= lsn) return {};
  return err_;
}

}  // namespace dosql::actors
