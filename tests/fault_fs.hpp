// A fault-injecting wal::file_io for the fault and crash tests: fails the Nth call of a kind
// (write, sync, truncate, rename, ...) with ENOSPC or EIO, or makes the Nth write short (half
// of it reaches the file, then the next write fails with ENOSPC, as a filling disk does), and
// can record every successful fdatasync of a WAL segment for power-loss simulation ("NAME
// BYTES" per line: what a power loss at that moment keeps of the file).
// Install with a scope: `test::fault_fs fs; test::fault_fs::scope s(fs);` (process-wide).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "wal/file_io.hpp"

namespace dosql::test {

class fault_fs : public wal::file_io {
 public:
  using op = wal::file_io::op;
  static const char* name(op k);

  /// Fails the `nth` call (1-based, counted from now) of kind `k` with `err`; with `short_write`
  /// (writes only) that call writes half its bytes and reports them, and the next write fails
  /// with ENOSPC. Replaces any armed fault.
  void arm(op k, uint64_t nth, int err, bool short_write = false);
  void disarm();
  /// Whether the armed fault was hit.
  bool hit() const noexcept { return hit_.load(); }
  /// Calls of kind `k` since construction.
  uint64_t calls(op k) const noexcept { return total_[static_cast<int>(k)].load(); }
  /// Appends "NAME BYTES" to `path` after every successful fdatasync of a file whose name
  /// ends in ".seg" (a WAL segment), before the WAL can publish its durable mark.
  void trace_syncs(const std::string& path);

  class scope {
   public:
    explicit scope(fault_fs& fs) : prev_(wal::install_io(&fs)) {}
    ~scope() { wal::install_io(prev_); }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    wal::file_io* prev_;
  };

  int open(const char* path, int flags, mode_t mode) override;
  ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) override;
  int zero_fill(int fd, off_t off, uint64_t n) override;
  int fdatasync(int fd) override;
  int fsync_dir(int fd) override;
  int ftruncate(int fd, off_t len) override;
  int rename(const char* from, const char* to) override;
  int unlink(const char* path) override;
  int mkdir(const char* path, mode_t mode) override;

 private:
  // Counts the call; true (errno set) if it is the one to fail.
  bool fault(op k, bool* short_write = nullptr);
  std::atomic<uint64_t> total_[wal::file_io::op_count] = {};
  mutable std::mutex mu_;
  bool armed_ = false, short_ = false, enospc_next_write_ = false;
  op kind_ = op::write;
  uint64_t nth_ = 0, seen_ = 0;
  int err_ = 0;
  std::atomic<bool> hit_{false};
  // Power-loss trace: per descriptor, its path and the end of the last non-zero write (the
  // bytes in use; zero fill is not content).
  std::string trace_path_;
  struct file_state {
    std::string path;
    uint64_t used = 0;
    uint64_t inode = 0;  // to tell a descriptor closed and reused from the one opened here
  };
  std::map<int, file_state> files_;
};

}  // namespace dosql::test
