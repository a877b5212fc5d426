#include "wal/reader.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include "wal/format.hpp"

namespace dosql::wal {

result<std::unique_ptr<reader>> reader::open(const std::string& dir, reader_options opts) {
  std::unique_ptr<reader> r(new reader(dir, opts));
  auto firsts = r->segment_firsts();
  if (!firsts) return firsts.err();
  if (firsts->empty()) return error(ec::io_error, "no WAL segment in " + dir);
  if (auto e = r->seek(firsts->front())) return e;
  return r;
}

result<std::vector<uint64_t>> reader::segment_firsts() const { return wal::segment_firsts(dir_); }

result<uint64_t> reader::oldest_lsn() const {
  auto f = segment_firsts();
  if (!f) return f.err();
  return f->empty() ? uint64_t{0} : f->front();
}

error reader::open_segment(uint64_t first_lsn) {
  path_ = join(dir_, segment_file_name(first_lsn));
  auto fd = open_file(path_, O_RDONLY);
  if (!fd) return fd.err();
  fd_ = std::move(*fd);
  seg_first_ = first_lsn;
  buf_.resize(std::max<size_t>(opts_.buffer_size, segment_header_size + record_header_size));
  auto n = pread_full(fd_.get(), buf_.data(), segment_header_size, 0, path_);
  if (!n) return n.err();
  segment_header h;
  if (auto e = decode_segment_header(std::string_view(buf_.data(), *n), path_, h)) return e;
  if (h.first_lsn != first_lsn)
    return error(ec::corruption, "segment " + path_ + ": header and file name disagree on its first lsn");
  buf_file_off_ = h.header_size;  // 40 bytes in format version 1
  pos_ = len_ = 0;
  fresh_ = false;
  trusted_lsn_ = 0;
  return {};
}

error reader::seek(uint64_t lsn) {
  err_ = {};
  if (lsn == 0) lsn = 1;
  auto firsts = segment_firsts();
  if (!firsts) return err_ = firsts.err();
  if (firsts->empty()) return err_ = error(ec::io_error, "no WAL segment in " + dir_);
  if (lsn < firsts->front()) {
    error e(ec::lsn_not_found, "lsn " + std::to_string(lsn) + " is no longer in the WAL; the oldest available lsn is " +
                                   std::to_string(firsts->front()));
    e.oldest_lsn = firsts->front();
    return err_ = e;
  }
  // The segment with the greatest first LSN <= lsn.
  auto it = std::upper_bound(firsts->begin(), firsts->end(), lsn);
  uint64_t first = *(it - 1);
  if (auto e = open_segment(first)) return err_ = e;
  next_lsn_ = first;
  skip_below_ = lsn;
  return {};
}

// Re-reads the current segment from the parse position: drops consumed bytes and stale
// bytes (zeros or a partial record read before the writer finished).
error reader::reload() {
  buf_file_off_ += pos_;
  pos_ = len_ = 0;
  // Invariant: every record up to the limit was whole before this read began.
  trusted_lsn_ = limit_;
  read_size_ = std::min(read_size_, buf_.size());
  auto n = pread_full(fd_.get(), buf_.data(), read_size_, buf_file_off_, path_);
  if (!n) return n.err();
  len_ = *n;
  fresh_ = true;
  last_read_ = read_size_;
  read_size_ = buf_.size();  // a small read after the tail; whole buffers while streaming
  return {};
}

reader::status reader::fail(error e) {
  err_ = std::move(e);
  return status::error;
}

error reader::damage(const std::string& why) const {
  return error(ec::corruption, "segment " + path_ + " offset " + std::to_string(buf_file_off_ + pos_) +
                                   " (lsn " + std::to_string(next_lsn_) + "): " + why);
}

// The current segment has no further intact record at the parse position: either it is
// complete (switch to the next segment), or this is the tail, or it is damaged.
reader::stop reader::on_stop(const char* why, bool bad) {
  // A newer segment starting at next_lsn_ means this one is sealed and complete.
  // (An empty segment cannot be followed by one starting at the same LSN.)
  if (next_lsn_ > seg_first_ && path_exists(join(dir_, segment_file_name(next_lsn_)))) {
    if (bad) return err_ = damage(std::string(why) + " in a sealed segment"), stop::error;
    if (auto e = open_segment(next_lsn_)) return err_ = e, stop::error;
    return stop::switched;
  }
  auto firsts = segment_firsts();
  if (!firsts) return err_ = firsts.err(), stop::error;
  bool newest = firsts->empty() || firsts->back() <= seg_first_;
  if (!newest) {
    if (bad) return err_ = damage(std::string(why) + " in a sealed segment"), stop::error;
    return err_ = damage("lsn gap: the segment ends here but no segment starts at lsn " +
                         std::to_string(next_lsn_)),
           stop::error;
  }
  if (bad) {
    // In the newest segment: a torn or in-progress write, unless intact records follow.
    auto size = file_size(fd_.get(), path_);
    if (!size) return err_ = size.err(), stop::error;
    uint64_t from = buf_file_off_ + pos_;
    if (*size > from) {
      std::string rest(*size - from, '\0');
      auto n = pread_full(fd_.get(), rest.data(), rest.size(), from, path_);
      if (!n) return err_ = n.err(), stop::error;
      if (find_later_record(rest.data(), *n, next_lsn_ - 1))
        return err_ = damage(std::string(why) + ", and intact records follow it"), stop::error;
    }
  }
  return stop::tail;
}

reader::status reader::next(entry_view& out) {
  if (err_) return status::error;
  for (;;) {
    if (next_lsn_ > limit_) {
      read_size_ = tail_read_size;  // held back at the durable tail: only a few records will follow
      return status::tail;
    }
    if (next_lsn_ > trusted_lsn_) {
      // The limit moved past what was whole when buf_ was read: the bytes buffered for this
      // record may be a half-written copy (zero-filled or cut short). Read them again.
      if (auto e = reload()) return fail(e);
      continue;
    }
    auto r = parse_record(buf_.data() + pos_, len_ - pos_, opts_.verify_checksums);
    if (r.status != parse_status::ok) {
      if (!fresh_) {  // judge only bytes read just now
        if (auto e = reload()) return fail(e);
        continue;
      }
      if (r.status == parse_status::incomplete && len_ == last_read_) {
        if (last_read_ == buf_.size()) buf_.resize(buf_.size() * 2);  // a record larger than the buffer
        if (auto e = reload()) return fail(e);
        continue;
      }
      bool bad = r.status != parse_status::end && !(r.status == parse_status::incomplete && len_ == pos_);
      auto s = on_stop(r.status == parse_status::bad ? r.why : "record cut short by the end of the file", bad);
      if (s == stop::switched) continue;
      if (s == stop::error) return status::error;
      fresh_ = false;  // the next call re-reads: the writer may have appended
      // Only a few new records are expected at the tail: don't copy a megabyte of zero fill.
      read_size_ = tail_read_size;
      return status::tail;
    }
    if (r.lsn != next_lsn_) {
      return fail(damage("expected lsn " + std::to_string(next_lsn_) + ", found " + std::to_string(r.lsn)));
    }
    pos_ += r.size;
    ++next_lsn_;
    fresh_ = false;
    if (r.lsn < skip_below_) continue;
    out = r.entry;
    return status::entry;
  }
}

}  // namespace dosql::wal
