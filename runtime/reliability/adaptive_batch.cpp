#include <dosql/reliability/adaptive_batch.hpp>

#include <algorithm>

namespace dosql::reliability {

adaptive_batch_sizer::adaptive_batch_sizer(size_t min, size_t max, size_t initial,
                                           std::chrono::microseconds target_per_event)
    : min_(std::max<size_t>(min, 1)),
      max_(std::max(max, min_)),
      target_(target_per_event),
      size_(std::clamp(initial, min_, max_)) {}

void adaptive_batch_sizer::record(size_t batch_size, std::chrono::microseconds elapsed) {
  if (batch_size == 0) return;
  const double per_event = static_cast<double>(elapsed.count()) / static_cast<double>(batch_size);
  const double target = static_cast<double>(target_.count());
  std::lock_guard lock(mu_);
  size_t cur = size_.load(std::memory_order_relaxed);
  size_t next = cur;
  if (per_event < target) {
    next = std::min(max_, std::max(cur + 1, cur + cur / 2));
  } else if (per_event > target) {
    next = std::max(min_, cur / 2);
  }
  size_.store(next, std::memory_order_relaxed);
}

}  // namespace dosql::reliability
