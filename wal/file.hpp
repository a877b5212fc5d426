// Thin file helpers for the WAL, slot files and the data directory (internal): every failure
// becomes a dosql::error naming the path and the OS's reason. RAII fd ownership. Every write-side
// operation goes through wal::io() (wal/file_io.hpp), the seam tests inject faults at.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <dosql/error.hpp>

namespace dosql::wal {

/// Owns a file descriptor; closes it on destruction.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(o.release()) {}
  unique_fd& operator=(unique_fd&& o) noexcept;
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd();
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

error io_error(std::string_view what, const std::string& path, int err);

/// Opens `path`; an open for writing or creating goes through wal::io().
result<unique_fd> open_file(const std::string& path, int flags, int mode = 0644);
/// Reads exactly n bytes at off, or fewer only at end of file; returns bytes read.
result<size_t> pread_full(int fd, void* buf, size_t n, uint64_t off, const std::string& path);
error pwrite_full(int fd, const void* buf, size_t n, uint64_t off, const std::string& path);
error sync_data(int fd, const std::string& path);
/// Writes n zero bytes at off (preallocation, zero fill of a torn tail).
error zero_fill(int fd, uint64_t off, uint64_t n, const std::string& path);
error truncate_file(int fd, uint64_t len, const std::string& path);
error rename_file(const std::string& from, const std::string& to);
error remove_file(const std::string& path);
error sync_dir(const std::string& dir);
/// Replaces `path` with `data` atomically and durably: writes `path`.tmp, fdatasyncs it,
/// renames it over `path` and fsyncs the directory. On failure the temporary file is removed
/// (no 0-byte leftovers) and `path` is as it was. The one implementation for dosql's small
/// metadata files (DOSQL marker, dosql.conf, slot files).
error replace_file(const std::string& path, std::string_view data);
/// The one directory lock: an flock on DIR/LOCK, one owner across processes (the kernel
/// releases it if the owner dies). Held: BUSY "<who> is open by pid N" (N read from the file).
/// The caller records its pid with record_lock_owner() once it keeps the lock (an open that
/// refuses writes nothing).
result<unique_fd> lock_dir(const std::string& dir, std::string_view who);
error record_lock_owner(const unique_fd& lock, const std::string& dir);
result<uint64_t> file_size(int fd, const std::string& path);
error make_dirs(const std::string& dir);
/// Names of the regular entries in `dir` (not . or ..).
result<std::vector<std::string>> list_dir(const std::string& dir);
bool path_exists(const std::string& path) noexcept;
std::string join(const std::string& dir, std::string_view name);

}  // namespace dosql::wal
