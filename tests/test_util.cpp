#include "test_util.hpp"

#include "wal/format.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace dosql::test {

wal_entry make_entry(uint64_t i, size_t image_bytes) {
  static const op_type ops[] = {op_type::begin, op_type::insert, op_type::update,
                                op_type::del, op_type::commit, op_type::schema, op_type::rollback};
  wal_entry e;
  e.timestamp = 1737542400000 + static_cast<int64_t>(i);
  e.txn_id = "txn_" + std::to_string(i / 5);
  e.op = ops[i % 7];
  e.table = (i % 2) ? "orders" : "users";
  if (is_row_change(e.op)) {
    e.key = bytes{static_cast<uint8_t>(i), static_cast<uint8_t>(i >> 8)};
    bytes img(image_bytes);
    for (size_t k = 0; k < img.size(); ++k) img[k] = static_cast<uint8_t>(i * 31 + k);
    if (e.op != op_type::insert) e.before = img;
    if (e.op != op_type::del) {
      if (!img.empty()) img[0] ^= 0xff;
      e.after = img;
    }
  }
  return e;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

uint64_t file_size(const std::string& path) { return std::filesystem::file_size(path); }

void truncate_file(const std::string& path, uint64_t size) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0)
    throw std::runtime_error("cannot truncate " + path);
}

std::vector<std::string> list_files(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

std::map<std::string, std::string> dir_bytes(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[std::filesystem::relative(e.path(), dir).string()] = read_file(e.path().string());
  return out;
}

}  // namespace dosql::test

namespace dosql::test {

child_process fork_child(const std::function<void(int)>& body) {
  int p[2];
  if (::pipe(p) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(p[0]);
    body(p[1]);
    _exit(111);  // the body must not return
  }
  ::close(p[1]);
  return {pid, p[0]};
}

std::unique_ptr<wal::log> open_log(const std::string& dir, const wal_config& cfg) {
  auto l = wal::log::open(dir, cfg);
  if (!l) throw std::runtime_error("open_log: " + l.err().to_string());
  return std::move(*l);
}

void append_n(wal::log& log, uint64_t from, uint64_t n, size_t batch, size_t image) {
  std::vector<wal_entry> b;
  for (uint64_t i = from; i < from + n; ++i) {
    b.push_back(make_entry(i, image));
    if (b.size() == batch || i + 1 == from + n) {
      auto r = log.append_batch(b);
      if (!r) throw std::runtime_error("append: " + r.err().to_string());
      b.clear();
    }
  }
}

std::vector<wal_entry> read_from(const std::string& dir, uint64_t lsn) {
  auto r = wal::reader::open(dir);
  if (!r) throw std::runtime_error("reader: " + r.err().to_string());
  if (auto e = (*r)->seek(lsn)) throw std::runtime_error("seek: " + e.to_string());
  std::vector<wal_entry> out;
  entry_view v;
  for (;;) {
    auto s = (*r)->next(v);
    if (s == wal::reader::status::tail) return out;
    if (s == wal::reader::status::error) throw std::runtime_error("next: " + (*r)->last_error().to_string());
    out.push_back(v.to_entry());
  }
}

std::vector<size_t> record_offsets(const std::string& data) {
  std::vector<size_t> offs;
  size_t off = wal::segment_header_size;
  while (off < data.size()) {
    auto r = wal::parse_record(data.data() + off, data.size() - off, true);
    if (r.status != wal::parse_status::ok) break;
    offs.push_back(off);
    off += r.size;
  }
  offs.push_back(off);  // end
  return offs;
}

void age_sealed_segments(const std::string& wal_dir, std::chrono::hours age) {
  auto firsts = wal::segment_firsts(wal_dir);
  if (!firsts || firsts->size() < 2) throw std::runtime_error("age_sealed_segments: no sealed segment in " + wal_dir);
  timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() - age);
  ts[0].tv_nsec = ts[1].tv_nsec = 0;
  for (size_t i = 0; i + 1 < firsts->size(); ++i) {
    auto path = wal::join(wal_dir, wal::segment_file_name((*firsts)[i]));
    if (::utimensat(AT_FDCWD, path.c_str(), ts, 0) != 0) throw std::runtime_error("utimensat " + path);
  }
}

}  // namespace dosql::test
