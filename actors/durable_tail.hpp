// The WAL's durable tail, published by the WAL-writer actor and waited on by committing
// threads (a mutex + condition variable: a blocking CAF round trip costs ~100 us, a
// condition-variable wake a few us). Subscription readers get the same news as messages.
//
// Invariant: the published LSN only grows; once failed, it stays failed (the WAL's state
// after a failed write or fsync is unknown: the database must be reopened).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include <dosql/error.hpp>

namespace dosql::actors {

class durable_tail {
 public:
  explicit durable_tail(uint64_t durable = 0) : durable_(durable) {}

  uint64_t value() const noexcept { return durable_.load(std::memory_order_acquire); }
  void publish(uint64_t lsn);
  /// publish() in two steps, so that the new value is visible before anyone hears of it and the
  /// committers' wake-up (a futex call) comes after the readers' news: advance() stores `lsn`
  /// (true if it moved), wake() wakes the waiters.
  bool advance(uint64_t lsn);
  void wake() { cv_.notify_all(); }
  void fail(error e);
  /// Blocks until every LSN <= `lsn` is durable; the WAL's error if it failed.
  error wait(uint64_t lsn);
  /// The writer appended (not yet synced) everything up to `lsn`.
  void publish_written(uint64_t lsn);
  /// Blocks until everything up to `lsn` was appended (flow control for large transactions).
  error wait_written(uint64_t lsn);
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  /// Why it failed (empty while it has not).
  error failure();

  /// Threads between entering a write and handing their transaction to the writer.
  int committers() const noexcept { return committers_.load(std::memory_order_acquire); }
  /// Counts the calling thread as a committer until release() or destruction.
  class committer_scope {
   public:
    explicit committer_scope(durable_tail& t) : t_(&t) { t_->committers_.fetch_add(1); }
    ~committer_scope() { release(); }
    void release() noexcept {
      if (t_) t_->committers_.fetch_sub(1);
      t_ = nullptr;
    }
    committer_scope(const committer_scope&) = delete;
    committer_scope& operator=(const committer_scope&) = delete;

   private:
    durable_tail* t_;
  };
  /// How long the writer may hold a sync back for committers (set before the writer starts).
  std::chrono::microseconds group_commit_delay{200};

 private:
  std::atomic<uint64_t> durable_;
  std::atomic<uint64_t> written_{0};
  std::atomic<bool> failed_{false};
  std::atomic<int> committers_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  error err_;  // guarded by mu_
};

}  // namespace dosql::actors
