// Adaptive batch size (the guide's "Adaptive Batch Processing"): `adaptive_batch_sizer`
// picks the next batch size from how long the last batch took per event.
//
// Invariants:
//  - The size always stays in [min, max] (min >= 1).
// Thread safety: an adaptive_batch_sizer may be used from any thread (record() is
// serialised; size() reads an atomic).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>

namespace dosql::reliability {

/// The guide's AdaptiveBatchProcessor: after each batch, grows the batch size by 1.5x (at
/// least +1, at most `max`) if the per-event time was below `target_per_event`, halves it
/// (at least `min`) if it was above. The size always stays in [min, max].
class adaptive_batch_sizer {
 public:
  /// `min` is raised to 1, `max` to `min`, and `initial` clamped to [min, max].
  adaptive_batch_sizer(size_t min, size_t max, size_t initial, std::chrono::microseconds target_per_event);
  size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }
  /// Reports that a batch of `batch_size` events took `elapsed`.
  void record(size_t batch_size, std::chrono::microseconds elapsed);

 private:
  std::mutex mu_;
  const size_t min_, max_;
  const std::chrono::microseconds target_;
  std::atomic<size_t> size_;
};

}  // namespace dosql::reliability
