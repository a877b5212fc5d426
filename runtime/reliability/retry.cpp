#include <dosql/reliability/retry.hpp>

#include <cmath>
#include <random>
#include <string>
#include <thread>

namespace dosql::reliability {

std::chrono::microseconds retry_delay(const retry_config& cfg, uint32_t attempt, double u) {
  const double max_us = 1000.0 * cfg.max_delay_ms;
  const double mult = std::max(cfg.backoff_multiplier, 0.0);
  double base = 1000.0 * cfg.initial_delay_ms * std::pow(mult, attempt > 0 ? attempt - 1.0 : 0.0);
  if (!(base <= max_us)) base = max_us;  // also catches inf and nan
  const double j = std::clamp(cfg.jitter, 0.0, 1.0);
  double d = std::min(max_us, base * (1.0 + j * std::clamp(u, -1.0, 1.0)));
  return std::chrono::microseconds(static_cast<int64_t>(std::max(d, 0.0)));
}

std::vector<std::chrono::microseconds> retry_delays(const retry_config& cfg, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<std::chrono::microseconds> out;
  const uint32_t attempts = std::max<uint32_t>(cfg.max_attempts, 1);
  for (uint32_t a = 1; a < attempts; ++a) out.push_back(retry_delay(cfg, a, dist(rng)));
  return out;
}

namespace detail {

void sleep_before_retry(const retry_config& cfg, uint32_t attempt) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  auto d = retry_delay(cfg, attempt, dist(rng));
  if (d.count() > 0) std::this_thread::sleep_for(d);
}

error gave_up(const error& last, uint32_t attempts) {
  error e(last.code(), "gave up after " + std::to_string(attempts) + (attempts == 1 ? " attempt: " : " attempts: ") +
                           last.message());
  e.oldest_lsn = last.oldest_lsn;
  e.lsn = last.lsn;
  return e;
}

}  // namespace detail

}  // namespace dosql::reliability
