// The WAL's durable tail, published by the WAL-writer actor and waited on by committing
// threads (a mutex + condition variable: a blocking CAF round trip costs ~100 us, a
// condition-variable wake a few us). Subscription readers get the same news as messages.
//
// Invariant: the published LSN only grows; once failed, it stays failed (the WAL's state
// after a failed write or fsync is unknown: the database must be reopened).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "wal/error.hpp"

namespace dosql::actors {

class durable_tail {
 public:
  explicit durable_tail(uint64_t durable = 0) : durable_(durable) {}

  uint64_t value() const noexcept { return durable_.load(std::memory_order_acquire); }
  void publish(uint64_t lsn);
  void fail(error e);
  /// Blocks until every LSN <= `lsn` is durable; the WAL's error if it failed.
  error wait(uint64_t lsn);
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }

 private:
  std::atomic<uint64_t> durable_;
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  error err_;  // guarded by mu_
};

}  // namespace dosql::actors
