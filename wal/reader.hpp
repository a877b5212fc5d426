// wal::reader: reads a WAL directory forward from any LSN, independently of the writer
// (its own file handles; safe beside a live writer in this or another process).
//
// Invariants:
//  - next() returns entries with strictly increasing, gap-free LSNs; a gap, a damaged
//    record in a sealed segment, or damage followed by intact records is reported as
//    ec::corruption naming the segment, offset and LSN, and is never skipped.
//  - next() never returns a record whose checksum failed (with verify_checksums on).
//  - At the end of what is written (or past `limit`), next() says `tail`: "no entry yet".
//    A partly written record at the end of the newest segment is the tail, not damage.
//  - With a limit, a record is parsed only from bytes read after the limit covered it: the
//    limit is an LSN the writer has finished writing, so those bytes are whole. Bytes read
//    earlier (the buffer reaches past the limit into records still being written) are read
//    again once the limit moves. Without a limit, only the checksum tells a whole record from
//    one being written: verify_checksums = false is safe only with a limit.
// Thread safety: none; one reader per thread or actor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "wal/entry.hpp"
#include <dosql/error.hpp>
#include "wal/file.hpp"

namespace dosql::wal {

struct reader_options {
  bool verify_checksums = true;
  size_t buffer_size = 1 << 20;  ///< bytes read from a segment at a time
};

class reader {
 public:
  enum class status : uint8_t { entry, tail, error };

  /// Opens the WAL in `dir` (which must exist) positioned at its oldest entry.
  static result<std::unique_ptr<reader>> open(const std::string& dir, reader_options opts = {});

  /// Positions so that next() returns the entry with LSN `lsn` (or waits for it at the
  /// tail). Fails with ec::lsn_not_found (carrying oldest_lsn) if `lsn` was compacted away.
  error seek(uint64_t lsn);

  /// The next entry; `out` stays valid until the next call to next() or seek().
  status next(entry_view& out);
  /// The error behind the last `status::error` (sticky until seek()).
  const error& last_error() const noexcept { return err_; }

  /// next() says `tail` rather than return an entry with an LSN above `lsn` (the durable
  /// tail, for in-process readers). REQUIRES: every record up to `lsn` is completely
  /// written. Default: no limit.
  void set_limit(uint64_t lsn) noexcept { limit_ = lsn; }
  uint64_t limit() const noexcept { return limit_; }

  uint64_t next_lsn() const noexcept { return next_lsn_; }  ///< LSN next() returns next
  /// Oldest LSN in the directory now (0 if the WAL has no segment).
  result<uint64_t> oldest_lsn() const;
  /// First LSNs of the segments now in the directory, oldest first.
  result<std::vector<uint64_t>> segment_firsts() const;

 private:
  reader(std::string dir, reader_options opts) : dir_(std::move(dir)), opts_(opts) {}
  enum class stop : uint8_t { switched, tail, error };
  error open_segment(uint64_t first_lsn);
  status fail(error e);
  stop on_stop(const char* why, bool bad);
  error reload();
  error damage(const std::string& why) const;

  std::string dir_;
  reader_options opts_;
  error err_;
  uint64_t limit_ = UINT64_MAX;
  uint64_t next_lsn_ = 1;       // LSN of the next entry to return
  uint64_t skip_below_ = 0;     // entries below this are being skipped after seek()
  unique_fd fd_;
  std::string path_;
  uint64_t seg_first_ = 0;
  uint64_t buf_file_off_ = 0;   // file offset of buf_[0]
  // Records in buf_ up to this LSN were whole when buf_ was read (the limit at that read);
  // a record above it may be half-written there and is read again before it is parsed.
  uint64_t trusted_lsn_ = 0;
  std::string buf_;
  size_t pos_ = 0, len_ = 0;    // parse position and valid bytes in buf_
  bool fresh_ = false;          // buf_[pos_..len_) was read since the last record was consumed
  static constexpr size_t tail_read_size = 16 * 1024;
  size_t read_size_ = SIZE_MAX;  // bytes the next reload() reads (capped by the buffer)
  size_t last_read_ = 0;         // bytes the last reload() asked for
};

}  // namespace dosql::wal
