#include "wal/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "wal/file_io.hpp"
#include "wal/format.hpp"

namespace dosql::wal {
namespace {

constexpr size_t write_chunk = 1 << 20;  // flush the record buffer at this size
constexpr const char* prepared_name = "next.prealloc";  // not a segment name: ignored by readers

}  // namespace

log::log(std::string dir, wal_config cfg, hlc::clock_fn clock) : dir_(std::move(dir)), cfg_(cfg), clock_(clock) {}

log::~log() {
  {
    std::unique_lock<std::mutex> g(sync_mu_);
    wait_sync_idle(g);  // a background sync in flight decides whether the log failed
  }
  if (!failed_ && active_fd_) {
    // Best effort: hand buffered records to the OS. Durability was the caller's to ask for.
    (void)flush_buffer();
  }
  if (failed_ && !fail_err_) (void)refusal();  // a failure nobody asked about: take back still
  if (prep_thread_.joinable()) {
    {
      std::lock_guard<std::mutex> g(prep_mu_);
      prep_stop_ = true;
    }
    prep_cv_.notify_all();
    prep_thread_.join();
  }
  if (sync_thread_.joinable()) {
    {
      std::lock_guard<std::mutex> g(sync_mu_);
      sync_stop_ = true;
    }
    sync_cv_.notify_all();
    sync_thread_.join();
  }
}

// Invariant: durable_lsn() never goes back (the owner and the syncer both raise it).
void log::raise_durable(uint64_t lsn) noexcept {
  uint64_t cur = durable_lsn_.load(std::memory_order_relaxed);
  while (cur < lsn && !durable_lsn_.compare_exchange_weak(cur, lsn, std::memory_order_release)) {
  }
  mark_.publish_synced(lsn);
}

void log::sync_async() {
  if (failed_) return;
  (void)flush_buffer();
  {
    std::lock_guard<std::mutex> g(sync_mu_);
    sync_target_ = next_lsn_ - 1;
    sync_bytes_ = active_.bytes;
  }
  if (!sync_thread_.joinable()) sync_thread_ = std::thread([this] { sync_loop(); });
  sync_cv_.notify_all();
}

void log::sync_loop() {
  std::unique_lock<std::mutex> g(sync_mu_);
  for (;;) {
    // After a failed fdatasync, never another: a retry could succeed on pages the kernel
    // dropped and claim durability the disk does not have (fsyncgate).
    // The owner's own sync() holds sync_running_ too: the two never overlap.
    sync_cv_.wait(g, [&] {
      return sync_stop_ || (sync_target_ > durable_lsn() && !sync_running_ && !sync_err_ && !failed_);
    });
    if (sync_stop_) return;
    uint64_t target = sync_target_, bytes = sync_bytes_;
    int fd = active_fd_.get();  // stable while sync_running_: roll() waits for us
    std::string path = active_path_;
    sync_running_ = true;
    g.unlock();
    auto e = sync_data(fd, path);
    g.lock();
    sync_running_ = false;
    if (e) {
      sync_err_ = e;
      failed_ = true;
    } else {
      syncs_.fetch_add(1, std::memory_order_relaxed);
      synced_bytes_.store(bytes, std::memory_order_relaxed);
      raise_durable(target);
    }
    sync_cv_.notify_all();
  }
}

void log::wait_sync_idle(std::unique_lock<std::mutex>& g) {
  sync_cv_.wait(g, [&] { return !sync_running_; });
}


void log::want_next_segment() {
  {
    std::lock_guard<std::mutex> g(prep_mu_);
    if (prep_wanted_ || prep_ready_) return;
    prep_wanted_ = true;
  }
  if (!prep_thread_.joinable()) prep_thread_ = std::thread([this] { prepare_loop(); });
  prep_cv_.notify_all();
}

void log::prepare_loop() {
  auto path = join(dir_, prepared_name);
  std::unique_lock<std::mutex> g(prep_mu_);
  for (;;) {
    prep_cv_.wait(g, [&] { return prep_wanted_ || prep_stop_; });
    if (prep_stop_) return;
    g.unlock();
    bool ok = false;
    if (auto fd = open_file(path, O_RDWR | O_CREAT | O_TRUNC))
      ok = !wal::zero_fill(fd->get(), 0, cfg_.target_segment_size, path) && !sync_data(fd->get(), path);
    // A half-filled file on a full disk would hold the space commits need: it goes.
    if (!ok) (void)io().unlink(path.c_str());
    g.lock();
    prep_wanted_ = false;
    prep_ready_ = ok;  // on failure, roll() creates the segment itself
  }
}

result<unique_fd> log::take_prepared() {
  {
    std::lock_guard<std::mutex> g(prep_mu_);
    if (!prep_ready_) return unique_fd();
    prep_ready_ = false;
  }
  return open_file(join(dir_, prepared_name), O_RDWR);
}

result<std::unique_ptr<log>> log::open(const std::string& dir, const wal_config& cfg, const recovery_options& ro,
                                       hlc::clock_fn clock) {
  constexpr size_t min_segment = segment_header_size + record_header_size + entry_fixed_size;
  if (cfg.target_segment_size < min_segment || cfg.max_entries_per_segment == 0) {
    return error(ec::invalid_argument, "wal_config: target_segment_size must be at least " +
                                           std::to_string(min_segment) +
                                           " bytes and max_entries_per_segment at least 1");
  }
  std::unique_ptr<log> l(new log(dir, cfg, clock ? clock : &now_ms));
  if (auto e = make_dirs(dir)) return e;
  // One writer per directory, across processes.
  auto lfd = lock_dir(dir, "WAL directory " + dir);
  if (!lfd) return lfd.err();
  // Recovery decides first, reading only; then it changes files (or refuses, changing none).
  auto plan = plan_recovery(dir, cfg, ro);
  if (!plan) return plan.err();
  if (plan->below_floor && !ro.accept_loss) return plan->below_floor;
  if (auto e = record_lock_owner(*lfd, dir)) return e;
  l->lock_fd_ = std::move(*lfd);
  if (auto e = l->recover(*plan)) return e;
  l->publish_usage();
  return l;
}

result<recovery_plan> log::plan_recovery(const std::string& dir, const wal_config& cfg, const recovery_options& ro) {
  recovery_plan p;
  auto mark = read_synced_mark(dir);
  if (!mark) return mark.err();
  if (mark->value_or(0) > 0) {
    p.floor = **mark;
    p.floor_source = durable_mark_path(dir) + " records it as fdatasync'd";
  }
  if (ro.known_durable > p.floor) {
    p.floor = ro.known_durable;
    p.floor_source = ro.known_durable_source;
  }
  std::vector<uint64_t> firsts;
  if (path_exists(dir)) {
    auto names = list_dir(dir);
    if (!names) return names.err();
    for (auto& n : *names) {
      if ((n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) || n == prepared_name) {
        p.leftovers.push_back(n);  // an unfinished segment creation
        continue;
      }
      if (auto f = parse_segment_file_name(n)) firsts.push_back(*f);
    }
  }
  std::sort(firsts.begin(), firsts.end());
  if (firsts.empty()) {
    if (p.floor > 0)
      p.below_floor = error(ec::corruption, "WAL " + dir + " holds no segment, but lsn " + std::to_string(p.floor) +
                                                " is durable (" + p.floor_source +
                                                "); refusing to start a new log (nothing was changed; "
                                                "`dosql wal DIR repair` accepts the loss)");
    return p;
  }
  p.oldest_lsn = firsts.front();
  std::string data;
  size_t data_off = segment_header_size;  // where the last segment's records start
  for (size_t i = 0; i < firsts.size(); ++i) {
    auto path = join(dir, segment_file_name(firsts[i]));
    auto fd = open_file(path, O_RDONLY);
    if (!fd) return fd.err();
    char hb[segment_header_size];
    auto n = pread_full(fd->get(), hb, sizeof hb, 0, path);
    if (!n) return n.err();
    segment_header h;
    if (auto e = decode_segment_header(std::string_view(hb, *n), path, h)) return e;
    if (h.first_lsn != firsts[i]) {
      return error(ec::corruption, "segment " + path + ": header says first lsn " +
                                       std::to_string(h.first_lsn) + ", name says " +
                                       std::to_string(firsts[i]));
    }
    if (i + 1 < firsts.size()) continue;
    p.format_version = h.format_version;
    p.node_id = h.node_id;
    p.hlc_floor = h.hlc_floor;
    data_off = h.header_size;
    auto size = file_size(fd->get(), path);
    if (!size) return size.err();
    data.assign(*size, '\0');
    auto got = pread_full(fd->get(), data.data(), data.size(), 0, path);
    if (!got) return got.err();
    data.resize(*got);
  }
  // Scan the last segment for the end of its intact records.
  auto path = join(dir, segment_file_name(firsts.back()));
  p.segment = segment_file_name(firsts.back());
  uint64_t expect = firsts.back();
  size_t off = data_off;
  const char* why = nullptr;
  while (off < data.size()) {
    auto r = parse_record(data.data() + off, data.size() - off, true);
    if (r.status == parse_status::end) break;
    if (r.status == parse_status::incomplete) {
      why = "record cut short by the end of the file";
      break;
    }
    if (r.status == parse_status::bad) {
      why = r.why;
      break;
    }
    if (r.lsn != expect) {
      why = "unexpected lsn (gap or reorder)";
      break;
    }
    p.hlc_floor = std::max(p.hlc_floor, pack_hlc(r.entry.hlc.physical, r.entry.hlc.logical));
    ++expect;
    off += r.size;
  }
  if (why && cfg.recovery == wal_config::recovery_mode::tolerate_torn_tail) {
    if (auto later = find_later_record(data.data() + off, data.size() - off, expect - 1)) {
      return error(ec::corruption,
                   "segment " + path + ": damaged record at offset " + std::to_string(off) + " (expected lsn " +
                       std::to_string(expect) + ": " + why + ") is followed by an intact record at offset " +
                       std::to_string(off + *later) +
                       "; refusing to drop acknowledged entries (the log was not changed)");
    }
  }
  // Anything non-zero past the clean end is a torn write, to be dropped.
  size_t dirty_end = data.size();
  while (dirty_end > off && data[dirty_end - 1] == 0) --dirty_end;
  p.last_lsn = expect - 1;
  p.end_offset = off;
  if (dirty_end > off) {
    p.torn_bytes = dirty_end - off;
    p.torn_reason = why ? why : "bytes after the end of the log";
  }
  if (p.last_lsn < p.floor) {
    std::string what = why ? std::string("a damaged record (") + why + ")" : std::string("the end of the file");
    if (!why && off < data.size()) what = "the end of the written records";
    p.below_floor = error(
        ec::corruption,
        "segment " + path + " offset " + std::to_string(off) + ": the WAL ends at lsn " + std::to_string(p.last_lsn) +
            " with " + what + ", but lsn " + std::to_string(p.floor) + " is durable (" + p.floor_source + "): " +
            std::to_string(p.floor - p.last_lsn) +
            " acknowledged entries are missing; refusing to open (nothing was changed; `dosql wal DIR repair` "
            "drops them knowingly)");
  }
  return p;
}

// Carries out what plan_recovery decided: removes unfinished segment creations, zeroes a torn
// tail, and sets the append position.
error log::recover(const recovery_plan& plan) {
  for (auto& n : plan.leftovers) (void)remove_file(join(dir_, n));
  // The node id lives in every version 2 segment header; a WAL without one gets a new id,
  // made durable by the segment created below (before any entry carries it).
  hlc_.emplace(plan.node_id ? plan.node_id : new_node_id(), clock_);
  hlc_->observe(plan.hlc_floor);
  if (plan.segment.empty()) {
    report_.created = true;
    if (auto e = create_segment(1)) return e;
    return mark_.open(dir_, 0);
  }
  auto firsts = segment_firsts(dir_);
  if (!firsts) return firsts.err();
  for (size_t i = 0; i + 1 < firsts->size(); ++i) {
    auto path = join(dir_, segment_file_name((*firsts)[i]));
    auto fd = open_file(path, O_RDONLY);
    if (!fd) return fd.err();
    auto size = file_size(fd->get(), path);
    if (!size) return size.err();
    sealed_.push_back({(*firsts)[i], *size});
  }
  active_path_ = join(dir_, plan.segment);
  auto fd = open_file(active_path_, O_RDWR);
  if (!fd) return fd.err();
  active_fd_ = std::move(*fd);
  auto size = file_size(active_fd_.get(), active_path_);
  if (!size) return size.err();
  active_alloc_ = *size;
  active_ = {firsts->back(), plan.end_offset};
  active_entries_ = plan.last_lsn + 1 - firsts->back();
  if (plan.torn_bytes) {
    report_.torn_bytes = plan.torn_bytes;
    report_.torn_offset = plan.end_offset;
    report_.torn_segment = plan.segment;
    report_.torn_reason = plan.torn_reason;
    if (auto e = zero_fill(plan.end_offset, plan.end_offset + plan.torn_bytes)) return e;
  }
  next_lsn_ = plan.last_lsn + 1;
  // What a crashed process left in the page cache is made durable before we build on it.
  if (auto e = sync_data(active_fd_.get(), active_path_)) return e;
  synced_bytes_.store(active_.bytes, std::memory_order_relaxed);
  durable_lsn_.store(next_lsn_ - 1, std::memory_order_release);
  if (auto e = mark_.open(dir_, next_lsn_ - 1)) return e;
  if (plan.format_version < format_version) {
    // An older build's active segment: version 2 entries never go into it (an older build
    // reading it would take them for damage). Seal it and start a version 2 segment, or,
    // when it holds no entry, replace it by one under the same name (an atomic rename).
    if (active_entries_ > 0) return roll();
    active_fd_.reset();
    return create_segment(active_.first_lsn);
  }
  return {};
}

error log::zero_fill(uint64_t from, uint64_t to) {
  return to > from ? wal::zero_fill(active_fd_.get(), from, to - from, active_path_) : error{};
}

error log::create_segment(uint64_t first_lsn) {
  auto name = segment_file_name(first_lsn);
  auto path = join(dir_, name);
  auto tmp = path + ".tmp";
  bool prealloc = cfg_.preallocate && cfg_.sync == wal_config::sync_policy::every_batch;
  // A file zero-filled in the background takes the place of the slow path below.
  auto prepared = prealloc ? take_prepared() : result<unique_fd>(unique_fd());
  if (!prepared) return prepared.err();
  bool have_prepared = static_cast<bool>(*prepared);
  if (have_prepared)
    if (auto e = rename_file(join(dir_, prepared_name), tmp)) return e;
  auto fd = have_prepared ? std::move(*prepared) : open_file(tmp, O_RDWR | O_CREAT | O_TRUNC);
  if (!fd) return fd.err();
  // Until it is complete, the new file is not the active segment (a failure leaves the log
  // pointing at the sealed one, and the .tmp file for the next recovery to remove).
  auto unfinished = [&](error e) {
    (void)io().unlink(tmp.c_str());
    return e;
  };
  char hb[segment_header_size];
  segment_header h;
  h.first_lsn = first_lsn;
  h.created_ms = now_ms();
  h.hlc_floor = hlc_->last();  // every entry of the segment exceeds it (recovery's floor)
  h.node_id = hlc_->node();
  encode_segment_header(h, hb);
  if (auto e = pwrite_full(fd->get(), hb, sizeof hb, 0, tmp)) return unfinished(e);
  uint64_t alloc = segment_header_size;
  if (prealloc) {
    alloc = std::max<uint64_t>(cfg_.target_segment_size, segment_header_size);
    if (!have_prepared)
      if (auto e = wal::zero_fill(fd->get(), segment_header_size, alloc - segment_header_size, tmp)) return unfinished(e);
  }
  // The header (and zero fill) are durable before the segment gets its real name.
  if (auto e = sync_data(fd->get(), tmp)) return unfinished(e);
  if (auto e = rename_file(tmp, path)) return unfinished(e);
  // From here the segment exists under its name (holding no record yet: harmless if the
  // directory's fsync fails and the log stops).
  active_fd_ = std::move(*fd);
  active_path_ = path;
  active_alloc_ = alloc;
  active_ = {first_lsn, segment_header_size};
  synced_bytes_.store(segment_header_size, std::memory_order_relaxed);
  active_entries_ = 0;
  behind_ = 0;
  publish_usage();
  prep_asked_ = false;
  return sync_dir(dir_);
}

error log::flush_buffer() {
  if (buf_.empty()) return {};
  if (auto e = pwrite_full(active_fd_.get(), buf_.data(), buf_.size(), active_.bytes, active_path_)) {
    failed_ = true;  // (what part of buf_ reached the file is unknown: take_back() clears it)
    return e;
  }
  active_.bytes += buf_.size();
  buf_.clear();
  publish_usage();
  if (cfg_.sync == wal_config::sync_policy::none) mark_.publish(next_lsn_ - 1);  // written is all it gets
  return {};
}

error log::roll() {
  // Seal: the old segment's records are durable and its zero fill is cut off before any
  // record of the new segment exists, so only the last segment can ever be torn.
  // Held for the whole roll: no background sync may run on the old descriptor meanwhile.
  std::unique_lock<std::mutex> g(sync_mu_);
  wait_sync_idle(g);
  if (auto e = flush_buffer()) return e;
  // Cut the zero fill first: one fdatasync then persists the records and the new size.
  if (active_alloc_ > active_.bytes)
    if (auto e = truncate_file(active_fd_.get(), active_.bytes, active_path_)) return failed_ = true, e;
  if (auto e = sync_data(active_fd_.get(), active_path_)) return failed_ = true, e;
  synced_bytes_.store(active_.bytes, std::memory_order_relaxed);
  raise_durable(next_lsn_ - 1);
  sealed_.push_back(active_);
  ++rolls_;
  if (auto e = create_segment(next_lsn_)) return failed_ = true, e;
  return {};
}

error log::append_one(entry_view e, int64_t wall_ms, uint64_t& lsn, hlc_stamp& stamp) {
  if (active_entries_ >= cfg_.max_entries_per_segment ||
      (active_entries_ > 0 && active_.bytes + buf_.size() >= cfg_.target_segment_size)) {
    if (auto err = roll()) return err;
  }
  size_t len = encoded_size(e);
  if (len > max_record_payload) {
    return error(ec::invalid_argument, "entry for table '" + std::string(e.table) + "' is " +
                                           std::to_string(len) + " bytes; the WAL limit is 1 GiB");
  }
  // Invariant: LSNs are assigned here only, consecutively, and HLCs increase with them.
  lsn = next_lsn_++;
  e.hlc = stamp = unpack_hlc(hlc_->tick(wall_ms), hlc_->node());
  append_record(buf_, lsn, e);
  ++active_entries_;
  if (!prep_asked_ && cfg_.preallocate && cfg_.sync == wal_config::sync_policy::every_batch &&
      active_.bytes + buf_.size() > cfg_.target_segment_size / 2) {
    prep_asked_ = true;
    want_next_segment();
  }
  if (buf_.size() >= write_chunk) return flush_buffer();
  return {};
}

result<uint64_t> log::append(std::span<wal_entry> entries) {
  if (failed_) return refusal();
  int64_t wall = clock_();
  for (auto& e : entries)
    if (auto err = append_one(view_of(e), wall, e.lsn, e.hlc)) return failed_ ? take_back(err) : err;
  if (auto err = flush_buffer()) return take_back(err);
  return next_lsn_ - 1;
}

result<uint64_t> log::append_views(std::span<const entry_view> entries) {
  if (failed_) return refusal();
  int64_t wall = clock_();
  uint64_t lsn;
  hlc_stamp stamp;
  for (auto& e : entries)
    if (auto err = append_one(e, wall, lsn, stamp)) return failed_ ? take_back(err) : err;
  if (auto err = flush_buffer()) return take_back(err);
  return next_lsn_ - 1;
}

error log::sync() {
  std::unique_lock<std::mutex> g(sync_mu_);
  wait_sync_idle(g);
  if (failed_) {
    g.unlock();
    return refusal();
  }
  if (durable_lsn() == next_lsn_ - 1) return {};
  // The owner's fdatasync takes the syncer's place (sync_running_): a background sync never
  // runs beside it, so none can succeed after this one failed and claim what it could not.
  sync_running_ = true;
  g.unlock();
  auto e = flush_buffer();
  uint64_t bytes = active_.bytes;
  if (!e) e = sync_data(active_fd_.get(), active_path_);
  g.lock();
  sync_running_ = false;
  if (e) {
    failed_ = true;  // after a failed fsync the page cache state is unknown (fsyncgate)
    if (!sync_err_) sync_err_ = e;
  }
  g.unlock();
  sync_cv_.notify_all();
  if (e) return take_back(e);
  syncs_.fetch_add(1, std::memory_order_relaxed);
  synced_bytes_.store(bytes, std::memory_order_relaxed);
  raise_durable(next_lsn_ - 1);
  return {};
}

// After a failed write or fdatasync the log accepts nothing more, for good: the kernel may
// have dropped the dirty pages while marking them clean, so a retried fdatasync could succeed
// and claim durability the disk does not have (PostgreSQL's fsyncgate, 2018). What was
// written after the last good fdatasync was never acknowledged: it is taken back (zeroed, or
// cut off, and synced) so that a reopen does not bring back commits whose callers were told
// they failed. If even that fails, the error says so: a reopen may then show them.
error log::take_back(error cause) {
  failed_ = true;
  if (fail_err_) return fail_err_;
  {
    std::unique_lock<std::mutex> g(sync_mu_);
    wait_sync_idle(g);
    if (sync_err_ && !cause) cause = sync_err_;
  }
  uint64_t from = cfg_.sync == wal_config::sync_policy::every_batch ? synced_bytes_.load(std::memory_order_relaxed)
                                                                    : active_.bytes;
  uint64_t to = active_.bytes + buf_.size();  // a failed write may have left part of buf_
  buf_.clear();
  std::string outcome;
  if (active_fd_ && to > from) {
    error e;
    if (active_alloc_ > from) {  // preallocated: zero the records, keep the allocation
      e = zero_fill(from, std::min(to, active_alloc_));
      if (!e && to > active_alloc_) e = truncate_file(active_fd_.get(), active_alloc_, active_path_);
    } else {
      e = truncate_file(active_fd_.get(), from, active_path_);
    }
    if (!e) e = sync_data(active_fd_.get(), active_path_);
    outcome = e ? "; the unacknowledged records after offset " + std::to_string(from) + " of " + active_path_ +
                      " could not be taken back (" + e.message() + "): a reopen may show them"
                : "; the unacknowledged records after offset " + std::to_string(from) + " of " + active_path_ +
                      " were taken back";
    active_.bytes = std::min(active_.bytes, from);
    publish_usage();
  }
  fail_err_ = error(cause.code() == ec::none ? ec::io_error : cause.code(),
                    "WAL " + dir_ + " stopped accepting writes after a failed write or fdatasync (" + cause.message() +
                        outcome + "); reopen the database to recover");
  return fail_err_;
}

error log::refusal() {
  error cause;
  {
    std::unique_lock<std::mutex> g(sync_mu_);
    wait_sync_idle(g);
    cause = sync_err_;
  }
  return take_back(cause ? cause : error(ec::io_error, "an earlier failure"));
}

void log::publish_usage() noexcept {
  std::lock_guard<std::mutex> g(usage_mu_);
  usage_ = {active_.first_lsn, active_.bytes};
}

log::active_usage log::active_segment_usage() const {
  std::lock_guard<std::mutex> g(usage_mu_);
  return usage_;
}

void log::write_behind() {
  if (failed_ || cfg_.sync == wal_config::sync_policy::none) return;
  if (flush_buffer()) return;  // failed_ is set: the next append or sync reports it
  if (active_.bytes <= behind_) return;
  // A hint: an error here changes nothing that sync() will not see and report.
  (void)::sync_file_range(active_fd_.get(), static_cast<off_t>(behind_), static_cast<off_t>(active_.bytes - behind_),
                          SYNC_FILE_RANGE_WRITE);
  behind_ = active_.bytes;
}

result<uint64_t> log::append_batch(std::span<wal_entry> entries) {
  auto last = append(entries);
  if (!last) return last;
  if (cfg_.sync == wal_config::sync_policy::every_batch) {
    if (auto e = sync()) return e;
  }
  return last;
}

uint64_t log::oldest_lsn() const noexcept {
  return sealed_.empty() ? active_.first_lsn : sealed_.front().first_lsn;
}

uint64_t log::total_bytes() const noexcept {
  uint64_t n = active_.bytes + buf_.size();
  for (auto& s : sealed_) n += s.bytes;
  return n;
}

std::vector<segment_info> log::segments() const {
  std::vector<segment_info> out;
  for (size_t i = 0; i < sealed_.size(); ++i) {
    uint64_t next = i + 1 < sealed_.size() ? sealed_[i + 1].first_lsn : active_.first_lsn;
    out.push_back({sealed_[i].first_lsn, next - 1, sealed_[i].bytes, false});
  }
  uint64_t last = next_lsn_ > active_.first_lsn ? next_lsn_ - 1 : 0;
  out.push_back({active_.first_lsn, last, active_.bytes + buf_.size(), true});
  return out;
}

result<compact_report> log::compact(uint64_t below_lsn) {
  compact_report rep;
  rep.archived = cfg_.auto_archive;
  std::string archive = join(dir_, "archive");
  if (cfg_.auto_archive) {
    if (auto e = make_dirs(archive)) return e;
  }
  size_t n = 0;
  // Whatever happens, the segments already gone leave the in-memory list, and the directory
  // entry changes made so far are synced (a failure loses nothing: the rest stays readable).
  auto finish = [&](error e) -> error {
    sealed_.erase(sealed_.begin(), sealed_.begin() + static_cast<std::ptrdiff_t>(n));
    if (n > 0) {
      if (auto se = sync_dir(dir_); se && !e) e = se;
      if (cfg_.auto_archive)
        if (auto se = sync_dir(archive); se && !e) e = se;
    }
    return e;
  };
  while (n < sealed_.size()) {
    uint64_t next_first = n + 1 < sealed_.size() ? sealed_[n + 1].first_lsn : active_.first_lsn;
    if (next_first > below_lsn) break;  // segment n holds an LSN >= below_lsn
    auto name = segment_file_name(sealed_[n].first_lsn);
    auto path = join(dir_, name);
    if (cfg_.auto_archive) {
      auto dst = join(archive, name);
      if (auto e = rename_file(path, dst)) return finish(error(e.code(), "cannot archive: " + e.message()));
    } else if (auto e = remove_file(path)) {
      return finish(e);
    }
    rep.removed.push_back(sealed_[n].first_lsn);
    rep.bytes += sealed_[n].bytes;
    ++n;
  }
  if (auto e = finish({})) return e;
  rep.oldest_lsn = oldest_lsn();
  return rep;
}

result<uint64_t> retention_point(const std::string& dir, const wal_config::retention_policy& policy,
                                 std::chrono::system_clock::time_point now) {
  if (!policy.automatic || (policy.max_age_ms == 0 && policy.max_bytes == 0)) return uint64_t{0};
  auto firsts = segment_firsts(dir);
  if (!firsts) return firsts.err();
  if (firsts->size() < 2) return uint64_t{0};  // only the active segment
  size_t sealed = firsts->size() - 1, keep = 0;  // sealed segments [0, keep) are removable
  struct stat st;
  if (policy.max_bytes) {  // from the newest sealed segment back: the first one over the limit and all older go
    uint64_t kept = 0;
    for (size_t i = sealed; i-- > 0;) {
      auto path = join(dir, segment_file_name((*firsts)[i]));
      if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) break;  // compacted meanwhile: older ones are gone too
        return io_error("cannot stat", path, errno);
      }
      kept += static_cast<uint64_t>(st.st_size);
      if (kept > policy.max_bytes) {
        keep = i + 1;
        break;
      }
    }
  }
  if (policy.max_age_ms) {  // from the oldest forward: segments sealed longer ago than the limit go
    auto limit = now - std::chrono::milliseconds(policy.max_age_ms);
    for (size_t i = keep; i < sealed; ++i) {
      auto path = join(dir, segment_file_name((*firsts)[i]));
      if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) continue;
        return io_error("cannot stat", path, errno);
      }
      auto sealed_at = std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
      if (sealed_at >= limit) break;
      keep = i + 1;
    }
  }
  return keep == 0 ? uint64_t{0} : (*firsts)[keep];
}

}  // namespace dosql::wal
