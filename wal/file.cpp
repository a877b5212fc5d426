#include "wal/file.hpp"

#include <dirent.h>
#include <fcntl.h>
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
  do fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
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
    ssize_t r = ::pwrite(fd, p + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot write", path, errno);
    }
    done += static_cast<size_t>(r);
  }
  return {};
}

error sync_data(int fd, const std::string& path) {
  if (::fdatasync(fd) != 0) return io_error("cannot fdatasync", path, errno);
  return {};
}

error sync_dir(const std::string& dir) {
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY);
  if (!fd) return fd.err();
  if (::fsync(fd->get()) != 0) return io_error("cannot fsync directory", dir, errno);
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
  if (!e && ::rename(tmp.c_str(), path.c_str()) != 0) e = io_error("cannot rename", tmp, errno);
  if (e) {
    ::unlink(tmp.c_str());
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
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
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

}  // namespace dosql::wal
