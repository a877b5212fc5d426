// wal::log, the single writer of a WAL directory: assigns LSNs, frames and appends
// entries, rolls segments, syncs, recovers a torn tail on open, and compacts old segments.
//
// Invariants (see wal/FORMAT.md):
//  - LSNs start at 1, are gap-free and strictly increasing, and are never reused: the
//    next LSN after reopen is the last intact one + 1, also after compaction.
//  - Every appended entry gets an HLC (wal/hlc.hpp) greater than every HLC already in the
//    directory, also after a reopen with the wall clock stepped back (recovery starts the
//    clock above the last segment's header floor and its last entry); no segment mixes
//    format versions (a format version 1 active segment is sealed on open).
//  - An entry is durable once sync() (or append_batch under sync_policy::every_batch)
//    returned for it: it then survives kill -9 and power loss.
//  - Only one log object may own a directory at a time (an flock on wal/LOCK, released
//    by the kernel if the process dies); a second open fails with ec::busy naming the pid.
//  - The owner publishes its durable LSN in wal/DURABLE (see durable_mark.hpp) for
//    readers in other processes; under sync_policy::none, what is written counts.
// Thread safety: none. One owner (the WAL-writer actor) calls everything.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <span>
#include <string>
#include <vector>

#include <dosql/config.hpp>
#include "wal/durable_mark.hpp"
#include "wal/entry.hpp"
#include <dosql/error.hpp>
#include "wal/file.hpp"
#include "wal/hlc.hpp"

namespace dosql::wal {

using open_report = dosql::wal_open_report;
using compact_report = dosql::compact_report;

struct segment_info {
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;  ///< 0 when the segment holds no entry yet
  uint64_t bytes = 0;     ///< bytes in use (header + records), not the zero fill
  bool active = false;    ///< the segment appends go to (never compacted)
};

/// What open() found and did.

/// What recovery must keep besides the WAL's own durable mark (wal/DURABLE), and whether
/// an operator accepted a loss.
struct recovery_options {
  uint64_t known_durable = 0;        ///< an LSN known durable elsewhere (SQLite's checkpointed LSN)
  std::string known_durable_source;  ///< what says so, for messages
  bool accept_loss = false;          ///< `dosql wal repair`: drop below the durable floor knowingly
};

/// What recovery of a WAL directory does, decided from the files before any is changed.
struct recovery_plan {
  uint64_t last_lsn = 0;        ///< last intact LSN recovery keeps (0: none)
  uint64_t oldest_lsn = 0;      ///< first LSN of the oldest segment (0: no segment)
  std::string segment;          ///< file name of the last segment ("" when there is none)
  uint64_t end_offset = 0;      ///< where its intact records end
  uint64_t torn_bytes = 0;      ///< non-zero bytes after that, to be zeroed
  std::string torn_reason;      ///< what was wrong with the first of them
  uint64_t floor = 0;           ///< the LSN recovery must keep: max(synced mark, known_durable)
  std::string floor_source;     ///< where the floor came from
  std::vector<std::string> leftovers;  ///< unfinished segment creations, to be removed
  uint32_t format_version = 0;  ///< of the last segment (0: none); below 2, open() rolls past it
  uint32_t node_id = 0;         ///< the database's HLC node id from the last segment (0: none yet)
  /// Packed HLC every new entry must exceed: the greater of the last segment's header floor
  /// and its last intact entry's stamp (a version 1 entry counts as its timestamp << 16).
  uint64_t hlc_floor = 0;
  /// Set when recovery would go below the floor (names the file and offset where the log
  /// ends); open() refuses with it unless recovery_options::accept_loss.
  error below_floor;
};


/// Retention's part of compaction (wal_config::retention_policy): the first LSN the policy
/// keeps in the WAL directory `dir`. Every sealed segment before it was sealed more than
/// max_age_ms before `now` or lies beyond the newest max_bytes of sealed segments; the active
/// (last) segment is always kept. A segment's seal time is its file's modification time (it
/// is never written after it seals). Reads the directory only (safe beside the owner). What
/// slots need is the caller's part: compact below min(this, the slots' floor). 0 (nothing
/// removable) when the policy is not automatic or sets no limit.
result<uint64_t> retention_point(const std::string& dir, const wal_config::retention_policy& policy,
                                 std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

class log {
 public:
  /// Opens (creating if needed) the WAL in `dir` and recovers it. Fails with
  /// ec::corruption (naming segment, offset and LSN), ec::format_version, ec::busy or
  /// ec::io_error, having changed nothing on disk.
  /// The durable-mark rule: a torn tail is dropped only above the last LSN known durable
  /// (recovery_plan::floor); a log that ends below it is ec::corruption and nothing changes.
  /// Every appended entry gets an HLC (hlc_stamp) from `clock` (Unix ms; injectable for
  /// tests), above every stamp already in the WAL, with the node id kept in the segment
  /// headers (generated with the first version 2 segment). A WAL whose last segment has an
  /// older format version gets a new segment first (so no segment mixes entry versions).
  static result<std::unique_ptr<log>> open(const std::string& dir, const wal_config& cfg = {},
                                           const recovery_options& ro = {}, hlc::clock_fn clock = &now_ms);
  /// Decides what open() would do to `dir`, reading only (no lock: call it while no owner
  /// runs, e.g. for `dosql wal repair`'s report). Errors are those open() would fail with,
  /// except the floor, which is reported in recovery_plan::below_floor.
  static result<recovery_plan> plan_recovery(const std::string& dir, const wal_config& cfg = {},
                                             const recovery_options& ro = {});

  log(const log&) = delete;
  log& operator=(const log&) = delete;
  ~log();

  const open_report& report() const noexcept { return report_; }
  const std::string& dir() const noexcept { return dir_; }
  const wal_config& config() const noexcept { return cfg_; }

  uint64_t next_lsn() const noexcept { return next_lsn_; }     ///< LSN the next entry gets
  uint64_t last_lsn() const noexcept { return next_lsn_ - 1; }  ///< 0 for an empty log
  uint64_t durable_lsn() const noexcept { return durable_lsn_.load(std::memory_order_acquire); }
  uint64_t oldest_lsn() const noexcept;  ///< first LSN still readable
  uint64_t total_bytes() const noexcept;  ///< bytes in use over all segments

  /// The WAL's hybrid logical clock: its node id, and update() for stamps received from
  /// other nodes (later entries then order after them).
  wal::hlc& clock() noexcept { return *hlc_; }
  uint32_t node_id() const noexcept { return hlc_->node(); }

  /// Assigns consecutive LSNs and increasing HLCs to `entries` (setting each `lsn` and
  /// `hlc`; the clock is read once per call), frames them and writes
  /// them to the OS. Returns the last LSN assigned. Survives a process crash once it
  /// returned; durable only after sync(). On a write error the log stops for good: it takes
  /// back what was written after the last good fdatasync (under sync_policy::every_batch) and
  /// refuses every later append and sync with an error saying why (reopen recovers).
  result<uint64_t> append(std::span<wal_entry> entries);
  /// Like append(), from views (zero-copy for callers that hold the bytes elsewhere); the
  /// entries get LSNs next_lsn(), next_lsn() + 1, ... in order and HLCs (their `lsn` and
  /// `hlc` are ignored).
  result<uint64_t> append_views(std::span<const entry_view> entries);
  /// fdatasync the active segment: everything appended so far becomes durable. A failed
  /// fdatasync is never retried (the kernel may have dropped the pages it could not write):
  /// the log stops as after a failed write, taking back what was not durable.
  error sync();
  /// Pipelined durability: asks a background thread to fdatasync everything appended so far
  /// and returns at once, so the next batch is encoded and written while the disk syncs.
  /// durable_lsn() advances when that sync completes; sync() waits for it. A sync requested
  /// while one runs is merged into the next (so at most one fdatasync per request).
  void sync_async();
  /// The active segment's first LSN and the bytes written to it (header and records, not
  /// its zero fill). Safe from any thread (a snapshot, for lag and retention figures).
  using active_usage = dosql::segment_usage;
  active_usage active_segment_usage() const;
  /// Starts the writeback of what was written since the last call (sync_file_range
  /// WRITE, no waiting), so that a later sync() has less left to do. Durability still
  /// comes from sync() only. No-op under sync_policy::none.
  void write_behind();
  /// Number of segments sealed (rolls) since open: a change tells the owner to apply retention.
  uint64_t rolls() const noexcept { return rolls_; }
  /// Number of fdatasync calls on active segments so far (for benchmarks and tests).
  uint64_t syncs() const noexcept { return syncs_.load(std::memory_order_relaxed); }
  /// append() then, under sync_policy::every_batch, sync().
  result<uint64_t> append_batch(std::span<wal_entry> entries);

  /// Removes (or, with auto_archive, moves to archive/) every sealed segment whose
  /// entries all have LSNs below `below_lsn`. The active segment always stays.
  result<compact_report> compact(uint64_t below_lsn);

  std::vector<segment_info> segments() const;

 private:
  struct segment {
    uint64_t first_lsn;
    uint64_t bytes;
  };
  log(std::string dir, wal_config cfg, hlc::clock_fn clock);
  error recover(const recovery_plan& plan);
  error create_segment(uint64_t first_lsn);
  error roll();
  error flush_buffer();
  error append_one(entry_view e, int64_t wall_ms, uint64_t& lsn, hlc_stamp& stamp);
  error zero_fill(uint64_t from, uint64_t to);
  error take_back(error cause);
  error refusal();
  // Background preparation of the next segment's zero-filled file (off the commit path).
  void want_next_segment();
  void prepare_loop();
  result<unique_fd> take_prepared();

  std::string dir_;
  wal_config cfg_;
  hlc::clock_fn clock_;
  std::optional<wal::hlc> hlc_;  // set by recover() (the node id comes from the segments)
  open_report report_;
  unique_fd lock_fd_;
  std::vector<segment> sealed_;  // oldest first
  segment active_{0, 0};
  unique_fd active_fd_;
  std::string active_path_;
  uint64_t active_alloc_ = 0;    // bytes allocated (zero-filled) in the active file
  uint64_t active_entries_ = 0;  // entries in the active segment (written or buffered)
  uint64_t behind_ = 0;          // active-segment offset up to which writeback was started
  void publish_usage() noexcept;
  mutable std::mutex usage_mu_;
  active_usage usage_;           // guarded by usage_mu_: what active_segment_usage() returns
  uint64_t next_lsn_ = 1;
  uint64_t rolls_ = 0;
  std::atomic<uint64_t> durable_lsn_{0};
  std::atomic<uint64_t> syncs_{0};
  // The background syncer (sync_async): guarded by sync_mu_. roll() and sync() wait for an
  // in-flight sync before touching the active file descriptor.
  void sync_loop();
  void raise_durable(uint64_t lsn) noexcept;
  void wait_sync_idle(std::unique_lock<std::mutex>& g);
  std::thread sync_thread_;
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  uint64_t sync_target_ = 0;  // last LSN a requested sync must cover
  uint64_t sync_bytes_ = 0;   // bytes written to the active segment at that request
  bool sync_running_ = false, sync_stop_ = false;
  error sync_err_;
  std::string buf_;  // framed records not yet written
  std::atomic<bool> failed_{false};
  durable_mark mark_;   // the durable LSN for readers in other processes (wal/DURABLE)
  // Bytes of the active segment known fdatasync'd: a failure takes back what lies beyond.
  std::atomic<uint64_t> synced_bytes_{0};
  error fail_err_;  // owner thread: why the log stopped accepting writes (set once)
  std::thread prep_thread_;
  std::mutex prep_mu_;
  std::condition_variable prep_cv_;
  bool prep_wanted_ = false, prep_ready_ = false, prep_stop_ = false;  // guarded by prep_mu_
  bool prep_asked_ = false;  // owner thread only: the next segment was asked for already
};

}  // namespace dosql::wal
