// The one seam for file writes: every write-side operation of the WAL (segment creation and
// preallocation, record writes, fdatasync, truncation, renames, compaction, directory fsync,
// the durable mark), of slot files and of the data directory's metadata (DOSQL marker,
// dosql.conf, LOCK) goes through wal::io(). The default is POSIX; tests install a
// fault-injecting implementation (tests/fault_fs.*) that fails the Nth call of a kind with
// ENOSPC or EIO, makes a write short, or records each fdatasync for power-loss simulation.
// Reads stay plain POSIX (damage on disk is the corruption tests' business).
//
// Cost on the commit path: one relaxed atomic load and one virtual call per operation; no
// allocation. Contract of every call: the POSIX function's (a result < 0, or a short count,
// with errno set); retrying on EINTR is the caller's (the helpers in wal/file.hpp do it).
// Thread safety: install_io() only while no database or log is open (tests, at start-up); the
// calls themselves may come from any thread (the WAL's syncer and preparer threads included).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace dosql::wal {

class file_io {
 public:
  /// The kinds of call, for fault injection and counting.
  enum class op : uint8_t { open, write, allocate, sync, dir_sync, truncate, rename, unlink, mkdir };
  static constexpr int op_count = 9;

  virtual ~file_io() = default;
  /// open(2) for writing or creating (read-only opens do not come here).
  virtual int open(const char* path, int flags, mode_t mode);
  virtual ssize_t pwrite(int fd, const void* buf, size_t n, off_t off);
  /// Writes `n` zero bytes at `off` (segment preallocation and zero fill); returns 0 or -1.
  virtual int zero_fill(int fd, off_t off, uint64_t n);
  virtual int fdatasync(int fd);
  /// fsync(2) of an open directory (after a create, rename or unlink in it).
  virtual int fsync_dir(int fd);
  virtual int ftruncate(int fd, off_t len);
  virtual int rename(const char* from, const char* to);
  virtual int unlink(const char* path);
  virtual int mkdir(const char* path, mode_t mode);
};

/// The implementation in use (POSIX unless a test installed another).
file_io& io() noexcept;
/// Installs `impl` for the whole process (nullptr: POSIX again); returns the previous one.
file_io* install_io(file_io* impl) noexcept;

}  // namespace dosql::wal
