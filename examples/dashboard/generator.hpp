// The dashboard's load generator: writes realistic order traffic into `orders` at a steady rate
// of changes per second, on its own thread, through the public API. Inserts new pending orders;
// moves orders along pending -> paid -> shipped -> delivered (some cancelled on the way);
// corrects some totals; deletes some orders (cancelled recent ones, the oldest finished ones).
// When it falls behind (commits are durable, each costs an fdatasync) it puts the changes that
// are due into one transaction, so the rate holds up to what the disk can sync.
#pragma once

#include <dosql/dosql.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace dashboard {

class load_generator {
 public:
  /// `rate`: changes per second (> 0); `limit`: stop after this many changes (0: never).
  load_generator(std::shared_ptr<dosql::database> db, double rate, uint64_t limit = 0, uint64_t seed = 0);
  ~load_generator();
  /// Starts the thread (after reading the orders still in progress).
  dosql::error start();
  /// Stops and joins the thread; idempotent.
  void stop();
  uint64_t changes() const { return changes_.load(); }
  bool running() const { return running_.load(); }
  /// The error that stopped it, if any (read after running() turned false).
  const dosql::error& err() const { return err_; }

 private:
  void run();
  struct state;
  std::shared_ptr<dosql::database> db_;
  double rate_;
  uint64_t limit_;
  uint64_t seed_;
  std::unique_ptr<state> s_;
  std::thread thread_;
  std::atomic<bool> stop_{false}, running_{false};
  std::atomic<uint64_t> changes_{0};
  dosql::error err_;
};

}  // namespace dashboard
