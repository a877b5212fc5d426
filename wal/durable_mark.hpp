// The durable LSN of a WAL directory, published by its owner for readers in other processes
// (`dosql tail --follow`, `dosql serve`). Records a live owner has written but not yet
// fdatasync'd are in the files, readable, and still could be taken back by a power loss: a
// reader beside a live owner delivers only up to the published LSN.
//
// File `wal/DURABLE`, 4 KiB: u64 magic "DOSQLDUR", u64 lsn, u64 ~lsn (little-endian, as the
// host). The owner keeps it mapped (MAP_SHARED) and stores lsn then ~lsn; a reader that sees
// a pair that does not match caught a store halfway and reads again.
// Invariants: the published LSN is always durable; it only grows while one owner holds the
// directory; a new owner publishes what its recovery found (which may be lower after a power
// loss). No file: a WAL no owner has published for (readers then read everything).
// Thread safety: publish() may be called from several threads.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "wal/error.hpp"
#include "wal/file.hpp"

namespace dosql::wal {

class durable_mark {
 public:
  durable_mark() = default;
  ~durable_mark();
  durable_mark(const durable_mark&) = delete;
  durable_mark& operator=(const durable_mark&) = delete;

  /// Creates (or takes over) `wal_dir`/DURABLE; the owner calls this under the WAL's lock.
  error open(const std::string& wal_dir);
  /// Publishes `lsn` if it is above the last value published by this owner.
  void publish(uint64_t lsn) noexcept;
  /// Publishes `lsn` even if lower (a new owner's recovered tail).
  void reset(uint64_t lsn) noexcept;

 private:
  void store(uint64_t lsn) noexcept;
  unique_fd fd_;
  uint64_t* map_ = nullptr;
  std::mutex mu_;
  uint64_t published_ = 0;
};

/// What the owner of `wal_dir` published; nullopt when there is no DURABLE file.
result<std::optional<uint64_t>> read_durable_mark(const std::string& wal_dir);

}  // namespace dosql::wal
