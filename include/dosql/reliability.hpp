// Reliability helpers for change-stream consumers (the guide's "Retry with Exponential
// Backoff", "Dead Letter Queue", "Handling Backpressure Signals", "Adaptive Batch
// Processing" and "Rate Limiting Consumer", plus an exactly-once recipe):
//  - `with_retry`: re-runs an operation returning `error` / `result<T>` with capped,
//    jittered exponential backoff; `retry_delays` computes the schedule without sleeping.
//  - `dead_letter_queue`: events whose handler kept failing, persisted in a SQLite file of
//    their own (one record per LSN, the whole entry stored so it is rebuilt exactly).
//  - `rate_limiter` (token bucket) and `adaptive_batch_sizer` (batch size from per-event time).
//  - `exactly_once_sink`: applies a consumer's writes and the LSN they came from in one
//    SQLite transaction of the consumer's own database, skipping LSNs already applied.
//
// Invariants:
//  - A dead letter whose `add` returned success survives kill -9 and power loss (WAL mode,
//    synchronous=FULL); reopening the file gives back every field of the entry.
//  - In an exactly_once_sink, the consumer's writes for an LSN and the stored LSN commit
//    together or not at all; `apply` runs `work` at most once per (source, lsn) ever
//    committed, and never for an lsn <= the source's last applied one.
// Thread safety: dead_letter_queue, rate_limiter, adaptive_batch_sizer and
// exactly_once_sink may be used from any thread (each serialises its own state).
#pragma once

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <dosql/entry.hpp>
#include <dosql/error.hpp>

namespace dosql::reliability {

// ---- retry with exponential backoff ------------------------------------------------------

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

// ---- dead letter queue -------------------------------------------------------------------

/// One dead-lettered event (the guide's DeadLetterEvent).
struct dead_letter {
  wal_entry entry;             ///< exactly as added (lsn is the record's key)
  std::string last_error;      ///< the most recent failure's text
  uint32_t attempts = 0;       ///< handler attempts recorded so far (adds + failed retries)
  int64_t first_failure_ms = 0;  ///< Unix ms of the first add
  int64_t last_failure_ms = 0;   ///< Unix ms of the latest add or failed retry
};

/// What one `retry_dead_letters` pass did.
struct retry_summary {
  size_t succeeded = 0;      ///< handled and removed
  size_t still_failing = 0;  ///< kept, attempts + 1 and last failure updated
};

/// Events whose processing kept failing, in a SQLite database file of their own
/// (table `dead_letters`, keyed by LSN). Every change is committed with synchronous=FULL
/// before the call returns.
class dead_letter_queue {
 public:
  /// Opens (creating if missing) the queue file at `path`, e.g. DIR/dead_letters.sqlite.
  static result<std::unique_ptr<dead_letter_queue>> open(const std::string& path);
  ~dead_letter_queue();
  dead_letter_queue(const dead_letter_queue&) = delete;
  dead_letter_queue& operator=(const dead_letter_queue&) = delete;

  /// Stores `e` with the failure's text and how many attempts it took. Adding an LSN that
  /// is already queued replaces its entry and error, adds `attempts` to its count and sets
  /// its last failure time (the first failure time is kept).
  error add(const wal_entry& e, const std::string& error_text, uint32_t attempts);
  /// Every record, in LSN order.
  result<std::vector<dead_letter>> list() const;
  /// The record for `lsn`, or nullopt.
  result<std::optional<dead_letter>> get(uint64_t lsn) const;
  result<size_t> size() const;
  /// Removes the record for `lsn`; false if there was none.
  result<bool> remove(uint64_t lsn);
  /// Runs `handler` on each queued event in LSN order (without holding the queue's lock,
  /// so the handler may use the queue): removes those it succeeds on, and for the others
  /// adds one attempt and records the error and time. Fails only on a storage error.
  result<retry_summary> retry_dead_letters(const std::function<error(const wal_entry&)>& handler);
  const std::string& path() const noexcept { return path_; }

 private:
  dead_letter_queue(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  error record_failure(uint64_t lsn, const std::string& error_text);

  mutable std::mutex mu_;
  sqlite3* db_;
  std::string path_;
};

// ---- rate limiting -----------------------------------------------------------------------

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

// ---- adaptive batch size -----------------------------------------------------------------

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

// ---- exactly-once processing -------------------------------------------------------------

/// Exactly-once effects for a consumer writing to its own SQLite database: the consumer's
/// writes for an event and the event's LSN (per source, table `_dosql_applied`) commit in
/// one transaction, so after a crash the output holds exactly the events up to
/// `last_applied(source)`; redelivered events (lsn <= last applied) are skipped.
class exactly_once_sink {
 public:
  /// Opens (creating if missing) the consumer's database at `path` (WAL mode,
  /// synchronous=FULL) and creates `_dosql_applied(source TEXT PRIMARY KEY, lsn INTEGER)`.
  static result<std::unique_ptr<exactly_once_sink>> open(const std::string& path);
  ~exactly_once_sink();
  exactly_once_sink(const exactly_once_sink&) = delete;
  exactly_once_sink& operator=(const exactly_once_sink&) = delete;

  /// The last LSN applied for `source`; 0 if none.
  result<uint64_t> last_applied(const std::string& source) const;
  /// If lsn <= last_applied(source): returns success without running `work`. Otherwise,
  /// in one BEGIN IMMEDIATE transaction, runs `work(db())` and records lsn for source; if
  /// `work` fails (or throws) nothing it wrote is kept and the LSN is not recorded.
  /// `work` must not end the transaction itself (SAVEPOINTs are fine) nor call back into
  /// this sink (its lock is held). lsn must be > 0.
  error apply(const std::string& source, uint64_t lsn, const std::function<error(sqlite3*)>& work);
  /// The connection, for the consumer's queries (and its schema set-up). Do not use it
  /// from another thread while `apply` runs.
  sqlite3* db() const noexcept { return db_; }
  const std::string& path() const noexcept { return path_; }

 private:
  exactly_once_sink(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  mutable std::mutex mu_;
  sqlite3* db_;
  std::string path_;
};

}  // namespace dosql::reliability
