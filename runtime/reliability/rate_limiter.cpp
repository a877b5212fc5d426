#include <dosql/reliability/rate_limiter.hpp>

#include <algorithm>
#include <cassert>
#include <thread>

namespace dosql::reliability {

rate_limiter::rate_limiter(double tokens_per_second, double burst, clock_fn clock)
    : clock_(clock ? std::move(clock) : clock_fn([] { return std::chrono::steady_clock::now(); })),
      rate_(tokens_per_second > 0 ? tokens_per_second : 1e-9),
      burst_(burst > 0 ? burst : 1e-9),
      tokens_(burst_),
      last_(clock_()) {
  assert(tokens_per_second > 0 && burst > 0);
}

void rate_limiter::refill_locked(std::chrono::steady_clock::time_point now) {
  std::chrono::duration<double> dt = now - last_;
  if (dt.count() > 0) tokens_ = std::min(burst_, tokens_ + dt.count() * rate_);
  last_ = now;
}

void rate_limiter::consume(double n) {
  if (!(n > 0)) return;
  double wait_s = 0;
  {
    std::lock_guard lock(mu_);
    refill_locked(clock_());
    tokens_ -= n;  // reserve now: later callers queue behind this debt
    if (tokens_ < 0) wait_s = -tokens_ / rate_;
  }
  if (wait_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
}

bool rate_limiter::try_consume(double n) {
  if (!(n > 0)) return true;
  std::lock_guard lock(mu_);
  refill_locked(clock_());
  if (tokens_ < n) return false;
  tokens_ -= n;
  return true;
}

double rate_limiter::available() {
  std::lock_guard lock(mu_);
  refill_locked(clock_());
  return tokens_;
}

}  // namespace dosql::reliability
