// Dead letter queue (the guide's "Dead Letter Queue" and retryDeadLetters): events whose
// handler kept failing, persisted in a SQLite file of their own (one record per LSN, the
// whole entry stored so it is rebuilt exactly).
//
// Invariants:
//  - A dead letter whose `add` returned success survives kill -9 and power loss (WAL mode,
//    synchronous=FULL); reopening the file gives back every field of the entry.
//  - One record per LSN: adding a queued LSN again updates that record.
// Thread safety: a dead_letter_queue may be used from any thread (it serialises its own
// state).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <dosql/entry.hpp>
#include <dosql/error.hpp>

struct sqlite3;  // sqlite3.h

namespace dosql::reliability {

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
  dead_letter_queue(::sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  error record_failure(uint64_t lsn, const std::string& error_text);

  mutable std::mutex mu_;
  ::sqlite3* db_;
  std::string path_;
};

}  // namespace dosql::reliability
