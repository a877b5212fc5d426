// Replication slots (the guide's "Replication Slots" and "Resuming from LSN"): a named,
// durable position of one consumer in the change stream.
//
// A slot-manager actor owns the slots. Each slot's state is a small file DIR/slots/NAME.slot,
// replaced atomically (write, fdatasync, rename, fsync of the directory) on every change, so
// an acknowledgement that returned survives kill -9 and power loss.
// Invariants:
//  - A slot's acknowledged LSN only moves forward (an older LSN is INVALID_ARGUMENT).
//  - WAL compaction never removes entries a valid slot still needs (above its acknowledged LSN),
//    whoever compacts (database::compact, `dosql wal compact`, automatic retention): it reads the slot
//    files under the directory's lock and keeps from the lowest acked + 1; a damaged slot
//    file stops compaction (its position is unknown).
//  - A slot file carries a CRC-32C; a damaged one is a DECODE_ERROR naming the file (the slot
//    is neither dropped nor moved); drop and re-create it. Old unchecksummed files are read
//    and rewritten in the new format on their next change.
//  - A slot that would retain more than max_slot_retention_bytes of WAL, or (when configured)
//    has not acknowledged for slot_idle_timeout, is invalidated with a logged reason; it then
//    holds nothing back, and subscribing from it fails with LSN_NOT_FOUND once the entries it
//    needs are gone. Re-create it (optionally with a snapshot) to recover.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <dosql/slot_types.hpp>
#include <dosql/cdc.hpp>

namespace dosql::cdc {

struct create_slot_options {
  /// The slot's starting position (exclusive). UINT64_MAX (default): the current tail.
  uint64_t start_lsn = UINT64_MAX;
  slot_filter filter;
  /// Take a consistent copy of the current rows of `filter.tables` (all tables if empty) as of
  /// the slot's start LSN: the stream from the slot then continues exactly after it.
  bool snapshot = false;
};

/// Rows of the slot's tables as of `lsn` (create_slot with snapshot = true).
struct slot_snapshot {
  uint64_t lsn = 0;
  std::map<std::string, query_result> tables;
};

class slot_manager {
 public:
  slot_manager(std::shared_ptr<database> db, slot_config cfg = {});
  ~slot_manager();
  slot_manager(const slot_manager&) = delete;
  slot_manager& operator=(const slot_manager&) = delete;

  /// SLOT_EXISTS if the name is taken; INVALID_ARGUMENT for a bad name (letters, digits, _ and
  /// -, not starting with -) or a start LSN beyond the durable end; LSN_NOT_FOUND for a start
  /// LSN whose following entries were compacted away.
  result<slot_info> create_slot(const std::string& name, create_slot_options opts = {},
                                slot_snapshot* snapshot = nullptr);
  result<slot_info> get_slot(const std::string& name);
  /// Every readable slot. A damaged slot file is not listed; `problem` (if given) then gets
  /// the DECODE_ERROR naming it.
  std::vector<slot_info> list_slots(error* problem = nullptr);
  /// Acknowledges everything up to `lsn` (durable when it returns). SLOT_NOT_FOUND; an LSN
  /// below the acknowledged one or beyond the durable end of the WAL is INVALID_ARGUMENT.
  error update_slot(const std::string& name, uint64_t lsn);
  error delete_slot(const std::string& name);
  /// A subscription resuming after the slot's acknowledged LSN, with the slot's filter and
  /// heartbeats on: acknowledge its settled_lsn() (not only the last entry's LSN), so that a
  /// caught-up filtered consumer moves past the entries its filter skips (lag 0, WAL released).
  /// `extra.from_lsn` above the slot's acknowledged LSN starts there instead (a consumer that
  /// knows more than its slot, e.g. its sink's confirmed position); below it, it is ignored.
  result<std::unique_ptr<subscription>> subscribe_from_slot(const std::string& name, subscribe_options extra = {});
  /// Runs the idle and retention-guard checks now, then the database's retention
  /// (database::apply_retention: keeps what the policy and every valid slot need).
  error check();

  struct impl;

 private:
  friend struct slot_manager_access;  // internal (runtime/reader_setup.hpp)
  std::unique_ptr<impl> p_;
};

inline std::unique_ptr<slot_manager> create_slot_manager(std::shared_ptr<database> db, slot_config cfg = {}) {
  return std::make_unique<slot_manager>(std::move(db), cfg);
}

}  // namespace dosql::cdc
