#include "wal/file.hpp"

#include "wal/file_io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace dosql::wal {

unique_fd& unique_fd::operator=(unique_fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.release();
  }
  return *this;
}
unique_fd::~unique_fd() { reset(); }
void unique_fd::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

error io_error(std::string_view what, const std::string& path, int err) {
  return error(ec::io_error, std::string(what) + " " + path + ": " + std::strerror(err));
}

result<unique_fd> open_file(const std::string& path, int flags, int mode) {
  int fd;
  bool writes = (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) != 0;
  do fd = writes ? io().open(path.c_str(), flags | O_CLOEXEC, static_cast<mode_t>(mode))
                 : ::open(path.c_str(), flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return io_error("cannot open", path, errno);
  return unique_fd(fd);
}

result<size_t> pread_full(int fd, void* buf, size_t n, uint64_t off, const std::string& path) {
  size_t done = 0;
  auto p = static_cast<char*>(buf);
  while (done < n) {
    ssize_t r = ::pread(fd, p + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot read", path, errno);
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

error pwrite_full(int fd, const void* buf, size_t n, uint64_t off, const std::string& path) {
  size_t done = 0;
  auto p = static_cast<const char*>(buf);
  while (done < n) {
    ssize_t r = io().pwrite(fd, p + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot write", path, errno);
    }
    if (r == 0) return io_error("cannot write", path, EIO);  // (never loop on a write that makes no progress)
    done += static_cast<size_t>(r);
  }
  return {};
}

error sync_data(int fd, const std::string& path) {
  if (io().fdatasync(fd) != 0) return io_error("cannot fdatasync", path, errno);
  return {};
}

error zero_fill(int fd, uint64_t off, uint64_t n, const std::string& path) {
  if (n && io().zero_fill(fd, static_cast<off_t>(off), n) != 0) return io_error("cannot zero-fill", path, errno);
  return {};
}

error truncate_file(int fd, uint64_t len, const std::string& path) {
  if (io().ftruncate(fd, static_cast<off_t>(len)) != 0) return io_error("cannot truncate", path, errno);
  return {};
}

error rename_file(const std::string& from, const std::string& to) {
  if (io().rename(from.c_str(), to.c_str()) != 0) return io_error("cannot rename", from + " to " + to, errno);
  return {};
}

error remove_file(const std::string& path) {
  if (io().unlink(path.c_str()) != 0) return io_error("cannot remove", path, errno);
  return {};
}

error sync_dir(const std::string& dir) {
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY);
  if (!fd) return fd.err();
  if (io().fsync_dir(fd->get()) != 0) return io_error("cannot fsync directory", dir, errno);
  return {};
}

error replace_file(const std::string& path, std::string_view data) {
  auto tmp = path + ".tmp";
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  error e;
  {
    auto fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC);
    if (!fd) return fd.err();
    e = pwrite_full(fd->get(), data.data(), data.size(), 0, tmp);
    if (!e) e = sync_data(fd->get(), tmp);
  }
  if (!e) e = rename_file(tmp, path);
  if (e) {
    (void)io().unlink(tmp.c_str());
    return e;
  }
  return sync_dir(dir);
}

result<uint64_t> file_size(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return io_error("cannot stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

error make_dirs(const std::string& dir) {
  if (dir.empty()) return {};
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    cur = dir.substr(0, pos);
    if (cur.empty()) continue;
    if (path_exists(cur)) continue;  // (a read-only open creates nothing)
    if (io().mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      return io_error("cannot create directory", cur, errno);
  }
  return {};
}

result<std::vector<std::string>> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return io_error("cannot list directory", dir, errno);
  std::vector<std::string> names;
  while (auto* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(d);
  return names;
}

bool path_exists(const std::string& path) noexcept {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string join(const std::string& dir, std::string_view name) {
  std::string s = dir;
  if (!s.empty() && s.back() != '/') s += '/';
  s += name;
  return s;
}

result<unique_fd> lock_dir(const std::string& dir, std::string_view who) {
  auto path = join(dir, "LOCK");
  auto fd = open_file(path, O_RDWR | O_CREAT);
  if (!fd) return fd.err();
  if (::flock(fd->get(), LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    (void)pread_full(fd->get(), pid, sizeof pid - 1, 0, path);
    return error(ec::busy, std::string(who) + " is open by pid " + std::string(pid[0] ? pid : "?"));
  }
  return fd;
}

error record_lock_owner(const unique_fd& lock, const std::string& dir) {
  auto path = join(dir, "LOCK");
  auto pid = std::to_string(::getpid());
  if (auto e = truncate_file(lock.get(), 0, path)) return e;
  return pwrite_full(lock.get(), pid.data(), pid.size(), 0, path);
}

}  // namespace dosql::wal
