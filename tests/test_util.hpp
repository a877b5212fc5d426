// Helpers shared by the test suites: scratch directories, deterministic entries, and
// byte-level file surgery for the corruption tests.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/scratch.hpp"  // temp_dir, must
#include "wal/entry.hpp"

namespace dosql::test {

/// A deterministic entry for index i with ~`image_bytes` row images; ops cycle.
wal_entry make_entry(uint64_t i, size_t image_bytes = 200);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);
uint64_t file_size(const std::string& path);
void truncate_file(const std::string& path, uint64_t size);
std::vector<std::string> list_files(const std::string& dir);  // sorted names
/// Every regular file under `dir` (recursively), by relative path, with its bytes: compare two
/// snapshots to prove that something left a directory exactly as it was.
std::map<std::string, std::string> dir_bytes(const std::string& dir);

}  // namespace dosql::test

#include <chrono>
#include <functional>
#include <memory>
#include <dosql/config.hpp>
#include "wal/log.hpp"
#include "wal/reader.hpp"

namespace dosql::test {

/// A forked child writing to a pipe: `body(write_fd)` runs in the child and must not return
/// (it loops until killed, or calls _exit). The parent gets the pid and the read end.
struct child_process {
  int pid = -1;
  int fd = -1;
};
child_process fork_child(const std::function<void(int)>& body);

/// Opens a log or fails the test with the error's text.
std::unique_ptr<wal::log> open_log(const std::string& dir, const wal_config& cfg = {});
/// Appends entries make_entry(from .. from+n-1) in batches of `batch`, syncing each batch.
void append_n(wal::log& log, uint64_t from, uint64_t n, size_t batch = 100, size_t image = 200);
/// Offsets of the intact records in a segment file's bytes (header excluded), then where they end.
std::vector<size_t> record_offsets(const std::string& segment_bytes);
/// Reads every entry from `lsn` to the tail; throws on a reader error.
std::vector<wal_entry> read_from(const std::string& dir, uint64_t lsn);
/// Sets the modification time (a sealed segment's seal time, which retention reads) of every
/// sealed segment of the WAL in `wal_dir` back by `age`, as if sealed that long ago.
void age_sealed_segments(const std::string& wal_dir, std::chrono::hours age);

}  // namespace dosql::test
