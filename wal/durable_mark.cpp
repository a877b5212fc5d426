#include "wal/durable_mark.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <cerrno>
#include <thread>

namespace dosql::wal {
namespace {

constexpr const char* file_name = "DURABLE";
constexpr size_t file_size_bytes = 4096;
constexpr uint64_t magic = 0x5255444c51534f44ull;  // "DOSQLDUR" read as little-endian bytes

}  // namespace

durable_mark::~durable_mark() {
  if (map_) ::munmap(map_, file_size_bytes);
}

std::string durable_mark_path(const std::string& wal_dir) { return join(wal_dir, file_name); }

error durable_mark::open(const std::string& wal_dir, uint64_t recovered) {
  auto path = join(wal_dir, file_name);
  auto fd = open_file(path, O_RDWR | O_CREAT);
  if (!fd) return fd.err();
  auto size = file_size(fd->get(), path);
  if (!size) return size.err();
  if (*size != file_size_bytes)
    if (auto e = truncate_file(fd->get(), file_size_bytes, path)) return e;
  void* m = ::mmap(nullptr, file_size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
  if (m == MAP_FAILED) return io_error("cannot map", path, errno);
  map_ = static_cast<uint64_t*>(m);
  fd_ = std::move(*fd);
  // What this owner's recovery found (after `dosql wal repair`, possibly lower than before).
  published_ = synced_ = recovered;
  // Only what differs is stored: an open that changes nothing leaves the file (and its mtime)
  // as it was.
  auto same = [&](size_t w) { return map_[w] == recovered && map_[w + 1] == ~recovered; };
  if (!same(3)) store(3, recovered);
  if (!same(1)) store(1, recovered);
  if (map_[0] != magic) std::atomic_ref<uint64_t>(map_[0]).store(magic, std::memory_order_release);
  return {};
}

void durable_mark::store(size_t word, uint64_t lsn) noexcept {
  std::atomic_ref<uint64_t>(map_[word]).store(lsn, std::memory_order_release);
  std::atomic_ref<uint64_t>(map_[word + 1]).store(~lsn, std::memory_order_release);
}

void durable_mark::publish(uint64_t lsn) noexcept {
  if (!map_) return;
  std::lock_guard<std::mutex> g(mu_);
  if (lsn <= published_) return;
  published_ = lsn;
  store(1, lsn);
}

void durable_mark::publish_synced(uint64_t lsn) noexcept {
  if (!map_) return;
  std::lock_guard<std::mutex> g(mu_);
  if (lsn > synced_) {  // synced before readable: nothing is delivered that recovery may drop
    synced_ = lsn;
    store(3, lsn);
  }
  if (lsn > published_) {
    published_ = lsn;
    store(1, lsn);
  }
}

namespace {
// Opens wal_dir/DURABLE for reading; nullopt (no error) when there is none.
result<std::optional<unique_fd>> open_mark(const std::string& path) {
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw >= 0) return std::optional<unique_fd>(unique_fd(raw));
  if (errno == ENOENT) return std::optional<unique_fd>();
  return io_error("cannot open", path, errno);
}
}  // namespace

result<std::optional<uint64_t>> read_durable_mark(const std::string& wal_dir) {
  auto path = join(wal_dir, file_name);
  auto fd = open_mark(path);
  if (!fd) return fd.err();
  if (!*fd) return std::optional<uint64_t>();
  for (int attempt = 0; attempt < 1000; ++attempt) {
    uint64_t w[3] = {0, 0, 0};
    auto n = pread_full((*fd)->get(), w, sizeof w, 0, path);
    if (!n) return n.err();
    if (*n < sizeof w || w[0] == 0) return std::optional<uint64_t>();  // being created
    if (w[0] != magic) return error(ec::corruption, path + " is not a dosql durable-LSN file");
    if (w[2] == ~w[1]) return std::optional<uint64_t>(w[1]);
    std::this_thread::yield();  // a store was halfway
  }
  return error(ec::busy, path + " keeps changing under the reader");
}

result<std::optional<uint64_t>> read_synced_mark(const std::string& wal_dir) {
  auto path = join(wal_dir, file_name);
  auto fd = open_mark(path);
  if (!fd) return fd.err();
  if (!*fd) return std::optional<uint64_t>();
  uint64_t w[5] = {0, 0, 0, 0, 0};
  auto n = pread_full((*fd)->get(), w, sizeof w, 0, path);
  if (!n) return n.err();
  if (*n < sizeof w || w[0] == 0) return std::optional<uint64_t>();  // short: never published
  if (w[0] != magic) return error(ec::corruption, path + " is not a dosql durable-LSN file");
  if (w[3] == 0 && w[4] == 0) return std::optional<uint64_t>();  // written before the synced field
  return std::optional<uint64_t>(std::min(w[3], ~w[4]));
}

}  // namespace dosql::wal
