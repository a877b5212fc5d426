// The fault-injecting wal::file_io of the fault and crash tests (see fault_fs.hpp).
#include "fault_fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "wal/format.hpp"

namespace dosql::test {
namespace {

// "NAME BYTES\n" for a WAL segment's path, "" for any other file.
std::string trace_line(const std::string& path, uint64_t used) {
  auto slash = path.rfind('/');
  auto base = path.substr(slash == std::string::npos ? 0 : slash + 1);
  if (!wal::parse_segment_file_name(base)) return {};
  return base + " " + std::to_string(used) + "\n";
}

void append_line(const std::string& file, const std::string& line) {
  if (file.empty() || line.empty()) return;
  int t = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (t < 0) return;
  (void)!::write(t, line.data(), line.size());
  ::close(t);
}

// The inode an open descriptor refers to (0 if it is closed).
uint64_t inode_of(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

// End of the last non-zero byte of an open file.
uint64_t used_bytes(int fd) {
  std::vector<char> buf(64 * 1024);
  uint64_t off = 0, used = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
    if (n <= 0) break;
    for (ssize_t i = n; i > 0; --i)
      if (buf[static_cast<size_t>(i - 1)] != 0) {
        used = off + static_cast<uint64_t>(i);
        break;
      }
    off += static_cast<uint64_t>(n);
  }
  return used;
}

}  // namespace

const char* fault_fs::name(op k) {
  static const char* names[] = {"open", "write", "allocate", "sync", "dir_sync", "truncate", "rename", "unlink", "mkdir"};
  return names[static_cast<int>(k)];
}

void fault_fs::arm(op k, uint64_t nth, int err, bool short_write) {
  std::lock_guard<std::mutex> g(mu_);
  armed_ = true;
  kind_ = k;
  nth_ = nth;
  seen_ = 0;
  err_ = err;
  short_ = short_write;
  enospc_next_write_ = false;
  hit_ = false;
}

void fault_fs::disarm() {
  std::lock_guard<std::mutex> g(mu_);
  armed_ = false;
  enospc_next_write_ = false;
}

void fault_fs::trace_syncs(const std::string& path) {
  std::lock_guard<std::mutex> g(mu_);
  trace_path_ = path;
}

bool fault_fs::fault(op k, bool* short_write) {
  total_[static_cast<int>(k)].fetch_add(1);
  std::lock_guard<std::mutex> g(mu_);
  if (k == op::write && enospc_next_write_) {
    enospc_next_write_ = false;
    errno = ENOSPC;
    return true;
  }
  if (!armed_ || k != kind_ || ++seen_ != nth_) return false;
  armed_ = false;
  hit_ = true;
  if (short_ && short_write) {
    *short_write = true;
    enospc_next_write_ = true;
    return false;
  }
  errno = err_;
  return true;
}

int fault_fs::open(const char* path, int flags, mode_t mode) {
  if (fault(op::open)) return -1;
  int fd = file_io::open(path, flags, mode);
  if (fd >= 0) {
    uint64_t used = (flags & O_TRUNC) || (flags & O_ACCMODE) == O_WRONLY ? 0 : used_bytes(fd);
    std::lock_guard<std::mutex> g(mu_);
    files_[fd] = {path, used, inode_of(fd)};
  }
  return fd;
}

ssize_t fault_fs::pwrite(int fd, const void* buf, size_t n, off_t off) {
  bool half = false;
  if (fault(op::write, &half)) return -1;
  if (half && n > 1) n /= 2;
  ssize_t r = file_io::pwrite(fd, buf, n, off);
  if (r > 0) {
    auto p = static_cast<const char*>(buf);
    if (std::any_of(p, p + r, [](char c) { return c != 0; })) {
      std::lock_guard<std::mutex> g(mu_);
      auto& f = files_[fd];
      f.used = std::max<uint64_t>(f.used, static_cast<uint64_t>(off) + static_cast<uint64_t>(r));
    }
  }
  return r;
}

int fault_fs::zero_fill(int fd, off_t off, uint64_t n) {
  if (fault(op::allocate)) return -1;
  return file_io::zero_fill(fd, off, n);
}

int fault_fs::fdatasync(int fd) {
  if (fault(op::sync)) return -1;
  std::string line;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = files_.find(fd);
    // What the sync covers: what was written before it began (an entry whose descriptor was
    // closed and reused by a plain read-only open is stale: its inode differs).
    if (!trace_path_.empty() && it != files_.end() && it->second.inode == inode_of(fd))
      line = trace_line(it->second.path, it->second.used);
  }
  int r = file_io::fdatasync(fd);
  if (r == 0 && !line.empty()) {
    std::lock_guard<std::mutex> g(mu_);
    append_line(trace_path_, line);
  }
  return r;
}

int fault_fs::fsync_dir(int fd) {
  if (fault(op::dir_sync)) return -1;
  return file_io::fsync_dir(fd);
}

int fault_fs::ftruncate(int fd, off_t len) {
  if (fault(op::truncate)) return -1;
  int r = file_io::ftruncate(fd, len);
  if (r == 0) {
    std::lock_guard<std::mutex> g(mu_);
    auto& f = files_[fd];
    f.used = std::min<uint64_t>(f.used, static_cast<uint64_t>(len));
  }
  return r;
}

int fault_fs::rename(const char* from, const char* to) {
  if (fault(op::rename)) return -1;
  int r = file_io::rename(from, to);
  if (r == 0) {  // descriptors open on `from` now name `to`; a synced size carries over
    std::lock_guard<std::mutex> g(mu_);
    struct stat st;
    uint64_t ino = ::stat(to, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
    for (auto it = files_.begin(); it != files_.end();) {
      auto& f = it->second;
      if (f.path != from) {
        ++it;
      } else if (f.inode != ino || inode_of(it->first) != ino) {  // a descriptor closed since
        it = files_.erase(it);
      } else {
        f.path = to;
        append_line(trace_path_, trace_line(f.path, f.used));
        ++it;
      }
    }
  }
  return r;
}

int fault_fs::unlink(const char* path) {
  if (fault(op::unlink)) return -1;
  return file_io::unlink(path);
}

int fault_fs::mkdir(const char* path, mode_t mode) {
  if (fault(op::mkdir)) return -1;
  return file_io::mkdir(path, mode);
}

}  // namespace dosql::test
