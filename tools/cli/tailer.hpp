// The committed-only change-event tailer shared by `dosql tail` and `dosql serve`: fed the WAL's
// entries in LSN order (from a wal::reader), it renders the events of COMMITTED transactions only
// and hands them to a sink, one event at a time, with the LSN of the entry behind each.
//
// Invariants:
//  - A transaction's entries are held from BEGIN until its COMMIT and dropped on ROLLBACK (or when
//    another BEGIN shows it never committed); nothing of an undecided transaction reaches the sink.
//  - A transaction larger than max_buffer_bytes is not held: at its COMMIT it is read again from
//    the WAL, in steps (replaying() / replay()), so a caller can bound what it buffers downstream.
//  - settled_lsn() only grows and is never inside an open transaction: every event of the entries
//    up to it has been handed to the sink (or filtered out). It is the position a consumer may
//    acknowledge (a slot) or resume after without losing or splitting a transaction.
// Thread safety: none; one tailer per reader.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <dosql/cdc.hpp>
#include "tools/cli/cli.hpp"
#include "wal/entry.hpp"
#include <dosql/error.hpp>

namespace dosql::wal {
class reader;
}

namespace dosql::cli {

/// Which row changes (and SCHEMA entries) pass. Empty lists match everything; SCHEMA entries
/// pass only without an operation filter.
struct event_filter {
  std::vector<std::string> tables;
  std::vector<op_type> ops;
  bool matches(const entry_view& e) const;
};

struct tailer_options {
  tail_format format = tail_format::json;
  bool tx = false;                     ///< also BEGIN/COMMIT events around delivered changes
  std::vector<event_filter> filters;   ///< an entry must pass every one
  size_t max_buffer_bytes = 64 << 20;  ///< beyond this a transaction is re-read at its COMMIT
  json_options json;                   ///< value rendering (lossless_text)
  size_t reader_buffer_bytes = 1 << 20;  ///< the re-reading wal::reader's buffer
  /// Per table: the columns rendered (row images are cut to them; a SCHEMA entry loses its SQL
  /// text, and one about a hidden column is dropped).
  std::map<std::string, cdc::column_mask> columns;
};

class tailer {
 public:
  /// Receives each rendered event (no newline) and the LSN of its entry.
  using sink = std::function<void(uint64_t lsn, std::string event)>;

  /// `wal_dir` is read again for spilled transactions; `start` is the position fed from
  /// (entries with an LSN above it follow), the initial settled_lsn().
  tailer(tailer_options o, std::string wal_dir, sink out, uint64_t start = 0);
  ~tailer();
  tailer(const tailer&) = delete;
  tailer& operator=(const tailer&) = delete;

  /// Feeds the next entry. REQUIRES: !replaying().
  error on_entry(const entry_view& e);
  /// True while a spilled transaction's COMMIT was seen and its events are not all out.
  bool replaying() const noexcept { return replay_; }
  /// Re-reads up to `max_entries` entries of the spilled transaction (then its COMMIT event).
  error replay(size_t max_entries = SIZE_MAX);
  uint64_t settled_lsn() const noexcept;

 private:
  struct pending_txn {
    bool open = false;
    std::string txn_id;
    bool have_begin = false;
    wal_entry begin;
    std::vector<wal_entry> entries;
    size_t bytes = 0;
    bool spilled = false;    // too large to hold: re-read from first_lsn at COMMIT
    uint64_t start_lsn = 0;  // BEGIN (or the first entry seen of it)
    uint64_t first_lsn = 0;  // first change seen
  };

  bool wanted(const entry_view& e) const;
  result<bool> mask(entry_view& e);
  error print(const entry_view& e);
  void end_txn();

  tailer_options o_;
  std::string wal_dir_;
  sink out_;
  pending_txn p_;
  uint64_t last_ = 0;  // LSN of the last entry fed
  uint64_t printed_ = 0;
  std::vector<std::pair<std::string, uint64_t>> tables_;
  bool replay_ = false;
  wal_entry commit_;  // the COMMIT of the transaction being replayed
  std::unique_ptr<wal::reader> reread_;
  std::string masked_[2];  // the images mask() rewrote
};

}  // namespace dosql::cli
