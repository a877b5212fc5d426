// Retry with exponential backoff (the guide's "Retry with Exponential Backoff"): `with_retry`
// re-runs an operation returning `error` / `result<T>` with capped, jittered exponential
// backoff; `retry_delays` computes the schedule without sleeping.
//
// Invariants:
//  - No delay is longer than max_delay_ms, jitter included; the operation is called at most
//    max_attempts times (at least once).
//  - A non-retryable error is returned at once and unchanged; giving up keeps the last
//    error's code.
// Thread safety: with_retry and the delay functions keep no shared state.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <vector>

#include <dosql/error.hpp>

namespace dosql::reliability {

/// The guide's RetryConfig, plus jitter and a retryable predicate.
struct retry_config {
  uint32_t max_attempts = 5;        ///< calls of the operation in all (0 is treated as 1)
  uint32_t initial_delay_ms = 100;  ///< delay after the first failure
  uint32_t max_delay_ms = 30000;    ///< no delay is longer than this (jitter included)
  double backoff_multiplier = 2.0;
  double jitter = 0.2;              ///< each delay is scaled by a random factor in [1-j, 1+j]
  /// Which errors are worth retrying; empty means all. A non-retryable error is returned
  /// at once, unchanged.
  std::function<bool(const error&)> retryable;
};

/// The delay after failed attempt `attempt` (1-based): min(max_delay, initial *
/// multiplier^(attempt-1)) scaled by (1 + jitter * u), then capped at max_delay again.
/// `u` in [-1, 1] is the random draw (0: no jitter).
std::chrono::microseconds retry_delay(const retry_config& cfg, uint32_t attempt, double u);

/// The whole schedule: the max_attempts - 1 delays `with_retry` would sleep, drawn
/// deterministically from `seed` (the same seed gives the same schedule).
std::vector<std::chrono::microseconds> retry_delays(const retry_config& cfg, uint64_t seed);

namespace detail {
inline const error* failure_of(const error& e) noexcept { return e ? &e : nullptr; }
template <class T>
const error* failure_of(const result<T>& r) noexcept {
  return r ? nullptr : &r.err();
}
/// Sleeps retry_delay(cfg, attempt, u) with u from a per-thread random generator.
void sleep_before_retry(const retry_config& cfg, uint32_t attempt);
/// `last` with its message prefixed by "gave up after N attempts: " (code kept).
error gave_up(const error& last, uint32_t attempts);
}  // namespace detail

/// Calls `op()` (returning `dosql::error` or `dosql::result<T>`) until it succeeds, it
/// fails with an error `cfg.retryable` rejects (returned unchanged), or it has failed
/// `cfg.max_attempts` times: then the last error, with the same code and a message that
/// starts "gave up after N attempts: ". Sleeps `retry_delay` between attempts.
template <class F>
auto with_retry(F&& op, const retry_config& cfg = {}) -> std::decay_t<std::invoke_result_t<F&>> {
  using R = std::decay_t<std::invoke_result_t<F&>>;
  const uint32_t attempts = std::max<uint32_t>(cfg.max_attempts, 1);
  for (uint32_t attempt = 1;; ++attempt) {
    R r = op();
    const error* e = detail::failure_of(r);
    if (!e) return r;
    if (cfg.retryable && !cfg.retryable(*e)) return r;
    if (attempt >= attempts) return R(detail::gave_up(*e, attempt));
    detail::sleep_before_retry(cfg, attempt);
  }
}

}  // namespace dosql::reliability
