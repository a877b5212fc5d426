// The POSIX file_io and the process-wide pointer to the implementation in use.
#include "wal/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

namespace dosql::wal {

int file_io::open(const char* path, int flags, mode_t mode) { return ::open(path, flags, mode); }
ssize_t file_io::pwrite(int fd, const void* buf, size_t n, off_t off) { return ::pwrite(fd, buf, n, off); }
int file_io::zero_fill(int fd, off_t off, uint64_t n) {
  static const char zeros[64 * 1024] = {};
  for (uint64_t done = 0; done < n;) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(sizeof zeros, n - done));
    ssize_t r = ::pwrite(fd, zeros, len, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += static_cast<uint64_t>(r);
  }
  return 0;
}
int file_io::fdatasync(int fd) { return ::fdatasync(fd); }
int file_io::fsync_dir(int fd) { return ::fsync(fd); }
int file_io::ftruncate(int fd, off_t len) { return ::ftruncate(fd, len); }
int file_io::rename(const char* from, const char* to) { return ::rename(from, to); }
int file_io::unlink(const char* path) { return ::unlink(path); }
int file_io::mkdir(const char* path, mode_t mode) { return ::mkdir(path, mode); }

namespace {
file_io posix_io;
std::atomic<file_io*> current{&posix_io};
}  // namespace

file_io& io() noexcept { return *current.load(std::memory_order_relaxed); }

file_io* install_io(file_io* impl) noexcept {
  file_io* prev = current.exchange(impl ? impl : &posix_io, std::memory_order_acq_rel);
  return prev == &posix_io ? nullptr : prev;
}

}  // namespace dosql::wal
