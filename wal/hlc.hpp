// wal::hlc, the hybrid logical clock each WAL entry is stamped with (dosql::hlc_stamp in
// <dosql/entry.hpp>): Kulkarni, Demirbas et al., "Logical Physical Clocks and Consistent
// Snapshots in Globally Distributed Databases" (2014), so that changes of several databases
// (shards) can be put in one order that respects each database's own order.
//
// The state is one 64-bit word, physical ms << 16 | logical (the packed form the WAL stores,
// wal/FORMAT.md), so that both rules are one max() and one compare-and-swap:
//   local event / send: next = max(wall << 16, last + 1)
//   receive (update):   next = max(wall << 16, last + 1, remote + 1)
// last + 1 carries a logical overflow (65,536 stamps in one ms) into the physical part.
//
// Invariants:
//  - now() and update() return strictly increasing stamps across all threads (never decreasing
//    per node, distinct even when the wall clock stands still or steps back);
//  - a stamp's physical part is >= the wall clock read for it, and exceeds it only by as much
//    as the clock stepped back (or by overflowing logical counters);
//  - observe(s) makes every later stamp > s (recovery seeds it with the WAL's last stamp).
// Thread safety: all members may be called from any thread (a lock-free CAS loop).
// Hand-written: no packaged C++ HLC exists in Debian; it is a dozen lines.
#pragma once

#include <atomic>
#include <cstdint>

#include <dosql/entry.hpp>

namespace dosql::wal {

/// physical << 16 | logical. Physical ms must be in [0, 2^48) (until the year 10889).
constexpr uint64_t pack_hlc(int64_t physical, uint32_t logical) noexcept {
  return (static_cast<uint64_t>(physical) << 16) | (logical & 0xffffu);
}
constexpr hlc_stamp unpack_hlc(uint64_t packed, uint32_t node) noexcept {
  return {static_cast<int64_t>(packed >> 16), static_cast<uint32_t>(packed & 0xffffu), node};
}

class hlc {
 public:
  using clock_fn = int64_t (*)() noexcept;  ///< Unix ms; injectable for tests

  explicit hlc(uint32_t node, clock_fn clock = &now_ms) noexcept : node_(node), clock_(clock) {}

  uint32_t node() const noexcept { return node_; }

  /// Local event (an entry appended): reads the clock.
  hlc_stamp now() noexcept { return unpack_hlc(tick(clock_()), node_); }
  /// Local event with a clock reading taken by the caller (one reading for a batch).
  uint64_t tick(int64_t wall_ms) noexcept { return advance(pack_hlc(clamp(wall_ms), 0), 0); }
  /// Receive: a stamp from another node (or this one) moves this clock past it.
  hlc_stamp update(const hlc_stamp& remote) noexcept {
    return unpack_hlc(advance(pack_hlc(clamp(clock_()), 0), pack_hlc(clamp(remote.physical), remote.logical) + 1), node_);
  }
  /// Every later stamp is greater than `packed` (no clock reading; recovery).
  void observe(uint64_t packed) noexcept {
    uint64_t cur = last_.load(std::memory_order_relaxed);
    while (cur < packed && !last_.compare_exchange_weak(cur, packed, std::memory_order_relaxed)) {
    }
  }
  /// The last stamp handed out (or observed), packed; 0 before any.
  uint64_t last() const noexcept { return last_.load(std::memory_order_relaxed); }

 private:
  static int64_t clamp(int64_t ms) noexcept { return ms < 0 ? 0 : ms >= (int64_t{1} << 48) ? (int64_t{1} << 48) - 1 : ms; }
  uint64_t advance(uint64_t wall, uint64_t floor) noexcept {
    uint64_t cur = last_.load(std::memory_order_relaxed), next;
    do {
      next = cur + 1;
      if (wall > next) next = wall;
      if (floor > next) next = floor;
    } while (!last_.compare_exchange_weak(cur, next, std::memory_order_relaxed));
    return next;
  }

  uint32_t node_;
  clock_fn clock_;
  std::atomic<uint64_t> last_{0};
};

/// A new random database (node) id, never 0.
uint32_t new_node_id();

}  // namespace dosql::wal
