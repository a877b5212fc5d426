// The durable LSN of a WAL directory, published by its owner for readers in other processes
// (`dosql tail --follow`, `dosql serve`). Records a live owner has written but not yet
// fdatasync'd are in the files, readable, and still could be taken back by a power loss: a
// reader beside a live owner delivers only up to the published LSN.
//
// File `wal/DURABLE`, 4 KiB: u64 magic "DOSQLDUR", u64 lsn, u64 ~lsn, u64 synced, u64 ~synced
// (little-endian, as the host). The owner keeps it mapped (MAP_SHARED) and stores a value then
// its complement; a reader that sees a pair that does not match caught a store halfway and
// reads again. `lsn` is what readers may deliver (under sync_policy::none: what is written);
// `synced` is the last LSN the owner fdatasync'd, which recovery must not go below (the
// durable-mark rule, docs/ARCHITECTURE.md "Recovery"): the owner stores it only after the
// fdatasync returned (and after a test's tracing wal::file_io recorded that sync), so the value
// the file holds -- in the page cache or, after a power loss, whatever the kernel wrote back
// -- never claims more than is really durable.
// Invariants: the published LSNs only grow while one owner holds the directory; a new owner
// publishes what its recovery found. No file: a WAL no owner has published for (readers
// then read everything; recovery has no mark to respect).
// Thread safety: publish() may be called from several threads.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include <dosql/error.hpp>
#include "wal/file.hpp"

namespace dosql::wal {

class durable_mark {
 public:
  durable_mark() = default;
  ~durable_mark();
  durable_mark(const durable_mark&) = delete;
  durable_mark& operator=(const durable_mark&) = delete;

  /// Creates (or takes over) `wal_dir`/DURABLE and publishes `recovered` (readable and
  /// synced); the owner calls this under the WAL's lock once recovery has decided.
  error open(const std::string& wal_dir, uint64_t recovered);
  /// Publishes `lsn` for readers if it is above the last value published by this owner.
  void publish(uint64_t lsn) noexcept;
  /// Publishes `lsn` for readers and as synced (call only after its fdatasync returned).
  void publish_synced(uint64_t lsn) noexcept;

 private:
  void store(size_t word, uint64_t lsn) noexcept;
  unique_fd fd_;
  uint64_t* map_ = nullptr;
  std::mutex mu_;
  uint64_t published_ = 0, synced_ = 0;
};

/// What the owner of `wal_dir` published; nullopt when there is no DURABLE file.
result<std::optional<uint64_t>> read_durable_mark(const std::string& wal_dir);
/// The last LSN the owner of `wal_dir` recorded as fdatasync'd (what recovery must keep);
/// nullopt when there is no DURABLE file or it predates the synced field. Meant for a caller
/// that holds the WAL's lock (no owner is storing): a pair caught halfway by a crash gives
/// the smaller of its two values (both were durable).
result<std::optional<uint64_t>> read_synced_mark(const std::string& wal_dir);
/// The path of the DURABLE file in `wal_dir` (for messages).
std::string durable_mark_path(const std::string& wal_dir);

}  // namespace dosql::wal
