// Rate limiting (the guide's "Rate Limiting Consumer" and, with consume() blocking, a way to
// honour backpressure): `rate_limiter` is a token bucket.
//
// Invariants:
//  - The bucket never holds more than `burst` tokens; over any long run, no more than
//    `tokens_per_second` are taken per second (a request larger than the burst puts the
//    bucket into debt that later callers wait out).
// Thread safety: a rate_limiter may be used from any thread (it serialises its own state).
#pragma once

#include <chrono>
#include <functional>
#include <mutex>

namespace dosql::reliability {

/// A token bucket (the guide's RateLimitedConsumer): holds at most `burst` tokens, starts
/// full, refills at `tokens_per_second`. Requests larger than the burst are allowed: the
/// bucket goes into debt and later callers wait for it to be repaid, so the long-run rate
/// never exceeds `tokens_per_second`.
class rate_limiter {
 public:
  /// The time source (steady_clock::now by default; a test passes its own to step time).
  using clock_fn = std::function<std::chrono::steady_clock::time_point()>;
  /// Both rates must be > 0.
  rate_limiter(double tokens_per_second, double burst, clock_fn clock = {});
  /// Takes `n` tokens, sleeping until they have accrued.
  void consume(double n = 1);
  /// Takes `n` tokens if they are available now; false (nothing taken) if not.
  bool try_consume(double n = 1);
  /// Tokens available now (negative while in debt).
  double available();

 private:
  void refill_locked(std::chrono::steady_clock::time_point now);

  std::mutex mu_;
  clock_fn clock_;
  const double rate_;
  const double burst_;
  double tokens_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace dosql::reliability
